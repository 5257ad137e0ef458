"""A booted Debian 12 with systemd as PID 1, in a Docker container, to install packages on.

Named capabilities instead of ``--privileged``: sandboxed engines refuse the full set ("unable
to apply caps"), and systemd needs only these plus the host's cgroup tree.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "systemd.Dockerfile"
RUN_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
    "--cap-add", "SYS_NICE", "--cap-add", "IPC_LOCK", "--security-opt", "seccomp=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
]  # fmt: skip
START_HINT = "start one as root: bash ../shared/tools/start-docker.sh"


def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None."""
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        return "the docker CLI is not installed"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (30 s)"
    if proc.returncode != 0:
        return f"no Docker engine answers ({proc.stderr.strip().splitlines()[-1:]})"
    return None


def image() -> str:
    """The systemd image, built when missing (tagged by the Dockerfile's hash, so an edited
    Dockerfile gives a new image)."""
    tag = "orbit-packager-systemd:" + hashlib.sha256(DOCKERFILE.read_bytes()).hexdigest()[:12]
    have = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if have.returncode != 0:
        built = subprocess.run(
            ["docker", "build", "-q", "--network", "host", "-f", str(DOCKERFILE), "-t", tag,
             str(HERE)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )  # fmt: skip
        if built.returncode != 0:
            tail = "\n".join(built.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"building the systemd image {tag} failed:\n{tail}")
    return tag


class Machine:
    """One booted container; ``/pkgs`` is ``packages`` mounted read-only."""

    def __init__(self, tag: str, packages: Path) -> None:
        self.id = subprocess.run(
            ["docker", "run", "-d", *RUN_FLAGS, "-v", f"{packages}:/pkgs:ro", tag],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            proc = self.run("systemctl is-system-running --wait", check=False, timeout=60)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        if state != "running":
            failed = self.run("systemctl --failed --no-legend", check=False).stdout
            self.close()
            raise AssertionError(f"systemd did not reach running: {state!r}; failed: {failed}")

    def run(
        self,
        script: str,
        *,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 180,
        detach: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with sh inside the machine, as root."""
        env_args = [arg for k, v in (env or {}).items() for arg in ("-e", f"{k}={v}")]
        flags = ["-d"] if detach else []
        proc = subprocess.run(
            ["docker", "exec", *flags, *env_args, self.id, "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in the machine: {script!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def read(self, path: str) -> bytes:
        return subprocess.run(
            ["docker", "exec", self.id, "cat", path], capture_output=True, check=True, timeout=60
        ).stdout

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}",
                        check=False).returncode == 0  # fmt: skip

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.id], capture_output=True, check=False)
