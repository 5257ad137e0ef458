"""Options and helpers shared by the commands."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from packager import __version__
from packager.errors import PackagerError, UsageError
from packager.repo.durations import parse_duration

if TYPE_CHECKING:
    from packager.fetch.http import HttpOptions

F = TypeVar("F", bound=Callable[..., Any])

# The library's values that option declarations show in --help. Copied, because the modules
# defining them import tuf, requests or cryptography, and `--help` must not pay for those
# (tests/test_startup.py checks that each copy equals the library's value).
FLEET_UPDATE_URL = "https://updates.fleetdm.com"  # packager.fetch.client
DEFAULT_TIMEOUT = "5m"  # format_seconds(packager.fetch.http.DEFAULT_TIMEOUT)
PACKAGE_TYPES = ("deb", "rpm", "pkg", "msi", "pkg.tar.zst")  # packager.options
ROLES = ("root", "targets", "snapshot", "timestamp")  # packager.repo.repository
TOOLING_MODES = ("auto", "native", "docker")  # packager.tooling
DEFAULT_IMAGE = f"orbit-packager:{__version__}"  # packager.tooling


def stack(options: Sequence[Callable[[Any], Any]], f: F) -> F:
    """Apply ``options`` to ``f`` so that they appear in ``--help`` in the order listed."""
    result: Any = f
    for option in reversed(options):
        result = option(result)
    return cast("F", result)


def duration_option_callback(
    role_or_name: str,
) -> Callable[[click.Context, click.Parameter, str], timedelta]:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
        try:
            return parse_duration(value, what=role_or_name)
        except PackagerError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


def warn_option(f: F) -> F:
    return click.option(
        "--warn",
        default="72h",
        show_default=True,
        callback=duration_option_callback("--warn"),
        help="Exit 1 when a role expires within this duration.",
    )(f)


def path_option(f: F) -> F:
    return click.option(
        "--path",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(),
        show_default=True,
        help="Path to the local repository (holds keys/, repository/, staged/).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def _timeout(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    if value.strip() == "0":
        return math.inf
    try:
        return parse_duration(value, what="--timeout").total_seconds()
    except PackagerError as exc:
        raise click.BadParameter(str(exc)) from None


def update_server_options(f: F) -> F:
    """The flags every command that talks to an update server shares (fleetctl's names)."""
    options = [
        click.option(
            "--update-url",
            default=FLEET_UPDATE_URL,
            show_default=True,
            envvar="ORBIT_PACKAGER_UPDATE_URL",
            help="URL of the TUF update server.",
        ),
        click.option(
            "--update-roots",
            help="Trusted root: the JSON `updates roots` prints, or a file holding it "
            "(default: Fleet's root for Fleet's server).",
        ),
        click.option(
            "--update-tls-certificate",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="CA bundle (PEM) to trust for the update server.",
        ),
        click.option(
            "--update-tls-client-certificate",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Client certificate (PEM) for an update server that requires one.",
        ),
        click.option(
            "--update-tls-client-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Private key (PEM) of the client certificate.",
        ),
        click.option(
            "--timeout",
            default=DEFAULT_TIMEOUT,
            show_default=True,
            envvar="ORBIT_PACKAGER_TIMEOUT",
            callback=_timeout,
            help="Give up when the downloads take longer than this in all (e.g. 10m; 0: no limit).",
        ),
    ]
    return stack(options, f)


def cache_options(f: F) -> F:
    options = [
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            envvar="ORBIT_PACKAGER_CACHE_DIR",
            help="Verified download cache (default: $XDG_CACHE_HOME/orbit-packager).",
        ),
        click.option("--no-cache", is_flag=True, help="Use a temporary cache, removed after."),
        click.option(
            "--offline",
            is_flag=True,
            help="Use only cached metadata and targets (still fully verified).",
        ),
    ]
    return stack(options, f)


def cache_dir_for(cache_dir: Path | None, no_cache: bool, offline: bool) -> Path | None:
    if no_cache and (cache_dir or offline):
        raise UsageError("--no-cache cannot be combined with --cache-dir or --offline")
    if no_cache:
        return None
    return cache_dir or default_cache()


def http_options(
    update_tls_certificate: Path | None,
    update_tls_client_certificate: Path | None,
    update_tls_client_key: Path | None,
    timeout: float | None = None,
) -> HttpOptions:
    if bool(update_tls_client_certificate) != bool(update_tls_client_key):
        raise UsageError("--update-tls-client-certificate and --update-tls-client-key go together")
    from packager.fetch.http import HttpOptions

    return HttpOptions(
        ca_bundle=update_tls_certificate,
        client_cert=update_tls_client_certificate,
        client_key=update_tls_client_key,
        timeout=timeout,
    )


def default_cache() -> Path:
    from packager.fetch.client import default_cache_dir

    try:
        return default_cache_dir()
    except RuntimeError:  # Path.home(): HOME unset and no passwd entry
        raise UsageError(
            "no home directory for the download cache (HOME is not set)",
            hint="pass --cache-dir DIR, set XDG_CACHE_HOME or HOME, or use --no-cache",
        ) from None


def is_within(filename: object, directory: Path) -> bool:
    """Whether ``filename`` (from an OSError) is ``directory``, inside it or one of its parents."""
    if not isinstance(filename, str | bytes | os.PathLike):
        return False
    path = Path(os.fsdecode(filename)).absolute()
    base = directory.absolute()
    return path == base or path in base.parents or base in path.parents


@contextlib.contextmanager
def cache_errors(cache: Path | None) -> Iterator[None]:
    """An OSError on the download cache (or on the directories above it, like an unwritable
    HOME) becomes one line naming the cache and how to choose another."""
    try:
        yield
    except OSError as exc:
        if cache is None or not is_within(exc.filename, cache):
            raise
        raise UsageError(
            f"cannot use the download cache {cache}: {exc.strerror or type(exc).__name__}: "
            f"{exc.filename}",
            hint="pass --cache-dir DIR (or set ORBIT_PACKAGER_CACHE_DIR or XDG_CACHE_HOME) "
            "to a writable directory, or use --no-cache",
        ) from None


class _TypeList(click.ParamType[tuple[str, ...]]):
    """``deb``, ``deb,rpm,msi`` or ``all``: the installer types of one run, in order."""

    name = "TYPE[,TYPE...]|all"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        from packager.options import parse_package_types

        try:
            return parse_package_types(str(value).split(","))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


def target_options(f: F, *, several: bool = False) -> F:
    """Which installer and which targets: shared by `fetch` and `package`."""
    options = [
        click.option(
            "--type",
            "package_type",
            required=not several,  # package: or --config
            type=_TypeList() if several else click.Choice(list(PACKAGE_TYPES)),
            help="Installer types, comma-separated, or all (one installer each, from one "
            "fetch). Required unless --config."
            if several
            else "Installer type.",
        ),
        click.option(
            "--arch",
            type=click.Choice(["amd64", "arm64", "universal"]),
            help="CPU architecture (default amd64; universal for pkg).",
        ),
        click.option("--fleet-desktop", is_flag=True, help="Include Fleet Desktop."),
        click.option(
            "--orbit-channel", default="stable", show_default=True, help="Update channel of orbit."
        ),
        click.option(
            "--osqueryd-channel",
            default="stable",
            show_default=True,
            help="Update channel of osqueryd.",
        ),
        click.option(
            "--desktop-channel",
            default="stable",
            show_default=True,
            help="Update channel of Fleet Desktop.",
        ),
    ]
    return stack(options, f)


def signing_key_options(*roles: str) -> Callable[[F], F]:
    """--<role>-key for the roles a command signs: keys on a token or in another key file."""

    def decorate(f: F) -> F:
        for role in reversed(roles):
            f = click.option(
                f"--{role}-key",
                f"{role}_key_refs",
                multiple=True,
                metavar="KEYFILE|URI",
                help=f"Sign {role}.json with this key instead of keys/{role}.json: a go-tuf key"
                f" file (FLEET_{role.upper()}_PASSPHRASE) or a pkcs11: URI"
                f" (FLEET_{role.upper()}_PIN), e.g. a releaser's own key (repeatable).",
            )(f)
        return f

    return decorate
