"""The one small interface every installer format implements, and what a build hands it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packager.fetch.targets import FetchedTarget
from packager.options import BuildRequest
from packager.tooling import ToolError, Tooling, ToolStep

__all__ = ["BuildContext", "Builder", "ToolError", "run_tool"]


@dataclass
class BuildContext:
    request: BuildRequest
    version: str
    stage: Path  # private (0700) directory, removed after the build
    fetched: list[FetchedTarget]
    source_date_epoch: int | None
    tooling: Tooling
    verbose: bool = False

    def rel(self, path: Path) -> str:
        """``path`` relative to the stage, as tool arguments and tool configs name files (the
        stage is /build inside the Docker tooling)."""
        return path.relative_to(self.stage).as_posix()


class Builder(Protocol):
    package_type: str
    writes_secret_file: bool  # secret.txt in the Orbit root (pkg, msi) vs. config (Linux)
    external_tools: tuple[str, ...]  # run through the tooling (native or Docker)
    install_hint: str  # how to get those tools natively

    def orbit_root(self, stage: Path) -> Path:
        """Where the Orbit root goes inside the staged tree."""
        ...

    def default_filename(self, request: BuildRequest, version: str) -> str: ...

    def preflight(self, request: BuildRequest) -> None:
        """Fail before any download if the build cannot succeed (unsupported options)."""
        ...

    def build(self, ctx: BuildContext, output: Path) -> None:
        """Write the installer to ``output`` (inside the stage directory)."""
        ...


def run_tool(
    ctx: BuildContext, tool: str, args: list[str], *, what: str, cwd: Path | None = None
) -> None:
    """Run an external tool through the build's tooling with a minimal environment: no secrets,
    no stray settings.

    ``args`` are paths relative to ``cwd`` (default: the stage) and constants; the enroll secret
    is in files in the private stage, never on a command line or in a child's environment.
    """
    env = {"LC_ALL": "C", "HOME": str(ctx.stage), "TMPDIR": str(ctx.stage)}
    ctx.tooling.run(ToolStep(tool, args, ctx.stage, cwd or ctx.stage, env, what, ctx.verbose))
