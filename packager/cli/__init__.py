"""Command line: parses flags, calls the library, prints results. No logic lives here.

One module per group of commands: ``updates`` (the TUF repository), ``fetch`` (``verify``
and ``fetch``), ``package`` (installers), ``inspect`` (built installers); ``common`` holds
the shared options.

Start-up cost: every command module is loaded to build the command tree (and `--help` lists
them all), so they import only click and light modules; the library (tuf, jinja2,
requests, ...) is imported inside the command that uses it. tests/test_startup.py checks this.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from packager import __version__, signals
from packager.cli.common import is_within
from packager.errors import PackagerError
from packager.flagsyntax import FleetctlGroup


@click.group(
    cls=FleetctlGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="orbit-packager")
def cli() -> None:
    """Build Fleet Orbit (fleetd) installers and manage their TUF update repository."""


from packager.cli import ceremony as _ceremony  # noqa: E402 - registered on the group above
from packager.cli import fetch as _fetch  # noqa: E402
from packager.cli import inspect as _inspect  # noqa: E402
from packager.cli import package as _package  # noqa: E402
from packager.cli import publish as _publish  # noqa: E402
from packager.cli import updates as _updates  # noqa: E402

_updates.updates.add_command(_publish.publish)
_updates.updates.add_command(_ceremony.keygen)
_updates.updates.add_command(_ceremony.root)
cli.add_command(_updates.updates)
cli.add_command(_fetch.verify)
cli.add_command(_fetch.fetch)
cli.add_command(_package.package)
cli.add_command(_inspect.inspect)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, exit codes as documented in packager.errors. SIGINT,
    SIGTERM and SIGHUP unwind like an error (every temporary file and directory is removed)
    and exit 128 + the signal number: 130, 143, 129 (see packager.signals)."""
    signals.install()
    try:
        signals.raise_pending()  # one that arrived while the modules were loading
        signals.prepare_modules()
        _main(argv)
    except signals.Interrupted as exc:
        click.echo(f"orbit-packager: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    finally:
        signals.finishing()  # exiting now: a late signal must not turn into a traceback


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="orbit-packager", standalone_mode=False)
    except PackagerError as exc:
        click.echo(f"orbit-packager: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("orbit-packager: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("orbit-packager: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        # Name the file and the reason, never a traceback for an environment problem.
        click.echo(f"orbit-packager: error: {_os_error_line(exc)}", err=True)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("ORBIT_PACKAGER_DEBUG"):
            import traceback  # only here: it costs start-up time for every command

            traceback.print_exc()
        click.echo(
            f"orbit-packager: internal error: {type(exc).__name__} "
            "(set ORBIT_PACKAGER_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(70)


def _os_error_line(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _no_space_line(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _no_space_line(exc: OSError) -> str:
    """A full disk, naming where: the temporary directory (TMPDIR) or the file being written
    (for a copy, the destination, never the source)."""
    reason = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    dest = exc.filename2 or exc.filename
    tmp = tempfile.gettempdir()
    try:
        free = shutil.disk_usage(tmp).free
    except OSError:
        free = None
    shown = f", {free // 1024} KiB free" if free is not None else ""
    in_tmp = dest is not None and is_within(dest, Path(tmp))
    if in_tmp or (dest is None and free is not None and free < 64 * 1024 * 1024):
        return (
            f"{reason} in the temporary directory {tmp} (TMPDIR{shown}): free space there or "
            "set TMPDIR to a directory on a larger file system"
        )
    if dest is not None:
        return f"{reason} writing {os.fsdecode(dest)}: free space on that file system"
    return (
        f"{reason} (the temporary directory {tmp} has room{shown}): free space where the "
        "output or the cache is written"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
