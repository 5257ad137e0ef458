"""Start-up cost (issue 18): `--help` loads no library, and each command loads only what it uses.

Each check runs the real command line in a child process under a tiny wrapper that runs
``python -m packager`` (runpy, as ``-m`` does) and writes ``sys.modules`` at exit. ``-X
importtime`` is not used: it also lists imports that failed, such as securesystemslib's attempt
at boto3 that packager/__init__.py makes fail on purpose. Timing is measured by hand (see the
issue), never asserted here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from tests.helpers import ROOT, TEST_PASSPHRASES

_WRAPPER = """
import atexit, os, runpy, sys

def dump():
    with open(os.environ["ORBIT_TEST_MODULES"], "w") as f:
        f.write("\\n".join(sorted(n for n, m in sys.modules.items() if m is not None)))

atexit.register(dump)
if sys.argv[1:] != ["--bare"]:
    runpy.run_module("packager", run_name="__main__", alter_sys=True)
"""

# What `--help` may load of ours: the command tree and the light modules its options use.
HELP_MODULES = {
    "packager",
    "packager.signals",
    "packager.errors",
    "packager.flagsyntax",
    "packager.repo",
    "packager.repo.durations",
    "packager.cli",
    "packager.cli.common",
    "packager.cli.ceremony",
    "packager.cli.fetch",
    "packager.cli.inspect",
    "packager.cli.package",
    "packager.cli.publish",
    "packager.cli.updates",
}
# Never needed to manage the repository: the installer builders', downloads' and publishing's.
NOT_FOR_UPDATES = {"lief", "jinja2", "rich", "obstore", "pkcs11", "boto3", "botocore"}


def _loaded(
    tmp_path: Path, *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the command line (or, for ``--bare``, nothing); its result and its sys.modules."""
    out = tmp_path / "modules.txt"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full_env.update(env or {})
    full_env["ORBIT_TEST_MODULES"] = str(out)
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *map(str, args)],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc, set(out.read_text().split("\n"))


def _top(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """What the interpreter and the wrapper load by themselves (site hooks included)."""
    return _loaded(tmp_path_factory.mktemp("bare"), "--bare")[1]


def _command_paths() -> list[list[str]]:
    from packager.cli import cli as root

    found: list[list[str]] = []

    def walk(path: list[str], cmd: click.Command) -> None:
        found.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk([*path, name], sub)

    walk([], root)
    return found


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "(top)")
def test_help_loads_no_library(path: list[str], tmp_path: Path, bare: set[str]) -> None:
    proc, modules = _loaded(tmp_path, *path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: orbit-packager"), proc.stdout
    ours = {m for m in modules if m == "packager" or m.startswith("packager.")}
    assert ours - HELP_MODULES == set()
    third_party = _top(modules) - _top(bare) - set(sys.stdlib_module_names)
    assert third_party <= {"click", "packager"}


def test_a_usage_error_loads_no_library(tmp_path: Path) -> None:
    """Flags are checked before anything is imported for the command."""
    proc, modules = _loaded(tmp_path, "updates", "add", "--name", "orbit")
    assert proc.returncode == 2
    assert "Missing option '--target'" in proc.stderr
    assert {m for m in modules if m.startswith("packager.")} <= HELP_MODULES
    assert "tuf" not in _top(modules)


def test_updates_add_loads_only_the_repository(
    tmp_path: Path, new_repo: Callable[..., Path]
) -> None:
    repo = new_repo()
    target = tmp_path / "orbit"
    target.write_bytes(b"orbit 1.0\n")
    proc, modules = _loaded(
        tmp_path,
        "updates", "add", "--path", repo, "--target", target, "--name", "orbit",
        "--platform", "linux", "--version", "1.0.0",
        env=TEST_PASSPHRASES,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Added orbit/linux/1.0.0/orbit")
    assert "packager.repo.repository" in modules  # the wrapper saw the command run
    assert _top(modules) & NOT_FOR_UPDATES == set()
    assert {"packager.build", "packager.render", "packager.fetch.client"} & modules == set()


def test_updates_status_loads_no_builder(tmp_path: Path, new_repo: Callable[..., Path]) -> None:
    proc, modules = _loaded(tmp_path, "updates", "status", "--path", new_repo())
    assert proc.returncode == 0, proc.stderr
    assert "packager.repo.status" in modules
    assert _top(modules) & NOT_FOR_UPDATES == set()


def test_option_values_match_the_library() -> None:
    """packager.cli.common copies what --help shows, so as not to import the library."""
    from packager.cli import common
    from packager.fetch.client import FLEET_UPDATE_URL
    from packager.fetch.http import DEFAULT_TIMEOUT, format_seconds
    from packager.options import PACKAGE_TYPES
    from packager.repo.repository import ROLES
    from packager.tooling import DEFAULT_IMAGE, TOOLING_MODES

    assert common.FLEET_UPDATE_URL == FLEET_UPDATE_URL
    assert format_seconds(DEFAULT_TIMEOUT) == common.DEFAULT_TIMEOUT
    assert common.PACKAGE_TYPES == PACKAGE_TYPES
    assert ROLES == common.ROLES
    assert common.TOOLING_MODES == TOOLING_MODES
    assert common.DEFAULT_IMAGE == DEFAULT_IMAGE


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(
    importlib.util.find_spec("boto3") is None or importlib.util.find_spec("pkcs11") is None,
    reason="needs boto3 (a test dependency, through moto) and python-pkcs11 installed",
)
def test_signer_sdks_are_hidden_from_securesystemslib_only() -> None:
    """tuf's import of securesystemslib.signer loads neither boto3 nor pkcs11, yet both import
    normally afterwards (the S3 tests use boto3, packager.repo.hsm pkcs11); an SDK imported
    before is left to securesystemslib."""
    proc = _python(
        "import sys\n"
        "import packager.repo.metadata\n"  # tuf, through packager (whose __init__ hides them)
        "from securesystemslib.signer import _aws_signer, _hsm_signer\n"
        "assert 'boto3' not in sys.modules and 'pkcs11' not in sys.modules, 'loaded'\n"
        "assert _aws_signer.AWS_IMPORT_ERROR is not None\n"
        "import boto3, pkcs11, botocore.exceptions\n"
        "print(boto3.__name__, pkcs11.__name__)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "boto3 pkcs11\n"
    proc = _python(
        "import boto3\n"
        "import packager, tuf.api.metadata\n"
        "from securesystemslib.signer import _aws_signer\n"
        "assert _aws_signer.AWS_IMPORT_ERROR is None\n"
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package_type", ["rpm", "msi"])
def test_a_build_loads_only_its_own_format(
    package_type: str, tmp_path: Path, served: tuple[Path, object]
) -> None:
    """A real build from the served demo repository: only the requested format's builder and
    writers are imported, and cryptography's x509 only for client certificates."""
    repo, server = served
    out = tmp_path / f"x.{package_type}"
    proc, modules = _loaded(
        tmp_path,
        "package", "--type", package_type, "--update-url", server.url,  # type: ignore[attr-defined]
        "--update-roots", repo / "repository/root.json", "--fleet-url", "https://f.example.com",
        "--no-cache", "--outfile", out,
        env={"ORBIT_PACKAGER_ENROLL_SECRET": "s", "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    formats = {m for m in modules if m.startswith("packager.formats.")}
    own = "packager.formats.linux" if package_type == "rpm" else "packager.formats.msi"
    assert formats == {"packager.formats.base", own}
    assert "cryptography.x509" not in modules
    assert "lief" not in _top(modules)
