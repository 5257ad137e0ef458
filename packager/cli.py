"""Command line: parses flags, calls the library, prints results. No logic lives here."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from packager import __version__, signals
from packager.build import build_packages
from packager.errors import EXIT_CHECK_FAILED, EXIT_OK, PackagerError, UsageError
from packager.fetch.client import (
    EXIT_FETCH,
    FLEET_UPDATE_URL,
    UpdateClient,
    default_cache_dir,
    load_trusted_root,
)
from packager.fetch.http import DEFAULT_TIMEOUT, HttpOptions, command_timeout, format_seconds
from packager.fetch.progress import download_progress
from packager.fetch.targets import TargetSelection, fetch_into_directory, installer_version
from packager.fetch.verify import render_text as render_verify
from packager.fetch.verify import verify_repository
from packager.flagsyntax import FleetctlGroup
from packager.options import PACKAGE_TYPES, BuildRequest, fleetctl_only_flags
from packager.repo.durations import parse_duration
from packager.repo.repository import ROLES, Expirations, PublishResult, UpdateRepository, utcnow
from packager.repo.status import render_text, repository_status
from packager.tooling import DEFAULT_IMAGE, TOOLING_MODES

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULTS = {"root": "87600h", "targets": "26280h", "snapshot": "26280h", "timestamp": "336h"}


def _duration(role_or_name: str) -> Callable[[click.Context, click.Parameter, str], timedelta]:
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
        callback=_duration("--warn"),
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


def expiration_options(*roles: str) -> Callable[[F], F]:
    """--<role>-expiration flags for the roles a command signs."""

    def decorate(f: F) -> F:
        for role in reversed(roles):
            f = click.option(
                f"--{role}-expiration",
                f"{role}_expiration",
                default=_DEFAULTS[role],
                show_default=True,
                callback=_duration(f"--{role}-expiration"),
                help=f"How long the new {role}.json stays valid (e.g. 336h, 14d).",
            )(f)
        return f

    return decorate


def _repo(path: Path, **expirations: timedelta) -> UpdateRepository:
    defaults = Expirations()
    values = {role: expirations.get(f"{role}_expiration") or defaults.of(role) for role in ROLES}
    return UpdateRepository(path, expirations=Expirations(**values))


def _emit(repo: UpdateRepository, as_json: bool, data: dict[str, Any], text: str) -> None:
    for note in repo.recovery_notes:
        click.echo(f"orbit-packager: {note}", err=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif text:
        click.echo(text)


def _versions_text(result: PublishResult) -> str:
    return ", ".join(f"{role} v{version}" for role, version in result.versions.items())


@click.group(
    cls=FleetctlGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="orbit-packager")
def cli() -> None:
    """Build Fleet Orbit (fleetd) installers and manage their TUF update repository."""


@cli.group()
def updates() -> None:
    """Manage a TUF update repository for Orbit agents (compatible with `fleetctl updates`).

    Passphrases come from FLEET_ROOT_PASSPHRASE, FLEET_TARGETS_PASSPHRASE,
    FLEET_SNAPSHOT_PASSPHRASE and FLEET_TIMESTAMP_PASSPHRASE, or are asked on the terminal.
    """


@updates.command()
@path_option
@click.option(
    "--consistent-snapshot",
    is_flag=True,
    help="Publish versioned metadata and hash-prefixed targets (atomic updates for clients).",
)
@expiration_options("root", "targets", "snapshot", "timestamp")
@json_option
def init(path: Path, consistent_snapshot: bool, as_json: bool, **exp: timedelta) -> None:
    """Create keys and an empty repository (root, targets, snapshot, timestamp v1)."""
    repo = _repo(path, **exp)
    result = repo.init(consistent_snapshot=consistent_snapshot)
    text = "\n".join(f"Generated {role} key with ID: {kid}" for role, kid in result.key_ids.items())
    _emit(repo, as_json, {"path": str(path), "key_ids": result.key_ids}, text)


@updates.command()
@path_option
@click.option(
    "--target",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to publish.",
)
@click.option("--name", required=True, help="Target name (orbit, osqueryd, desktop, ...).")
@click.option("--platform", required=True, help="Platform (linux, linux-arm64, macos, windows...).")
@click.option("--version", "version", required=True, help="Version of the target.")
@click.option("--tag", "-t", "tags", multiple=True, help="Extra channel, e.g. stable (repeatable).")
@expiration_options("targets", "snapshot", "timestamp")
@json_option
def add(
    path: Path,
    target: Path,
    name: str,
    platform: str,
    version: str,
    tags: tuple[str, ...],
    as_json: bool,
    **exp: timedelta,
) -> None:
    """Publish a target under its version and every tag; needs no root key."""
    repo = _repo(path, **exp)
    result = repo.add(target, name=name, platform=platform, version=version, tags=list(tags))
    text = "\n".join(f"Added {p}" for p in result.added) + f"\n({_versions_text(result)})"
    _emit(repo, as_json, {"added": result.added, "versions": result.versions}, text)


@updates.command()
@path_option
@click.argument("targets", nargs=-1, required=True)
@expiration_options("targets", "snapshot", "timestamp")
@json_option
def remove(path: Path, targets: tuple[str, ...], as_json: bool, **exp: timedelta) -> None:
    """Remove targets by exact path (orbit/linux/1.2.0/orbit) or NAME/PLATFORM/CHANNEL."""
    repo = _repo(path, **exp)
    result = repo.remove(list(targets))
    text = "\n".join(f"Removed {p}" for p in result.removed) + f"\n({_versions_text(result)})"
    _emit(repo, as_json, {"removed": result.removed, "versions": result.versions}, text)


@updates.command()
@path_option
@expiration_options("timestamp")
@json_option
def timestamp(path: Path, as_json: bool, **exp: timedelta) -> None:
    """Re-sign timestamp.json (run at least every --timestamp-expiration)."""
    repo = _repo(path, **exp)
    result = repo.timestamp()
    _emit(repo, as_json, {"versions": result.versions}, f"Signed {_versions_text(result)}")


@updates.command()
@path_option
def roots(path: Path) -> None:
    """Print the signed root.json (the value for `package --update-roots`)."""
    data = _repo(path).roots()
    sys.stdout.write(data.decode())
    if not data.endswith(b"\n"):
        sys.stdout.write("\n")


@updates.command()
@path_option
@click.argument("role", type=click.Choice(ROLES))
@expiration_options("root", "targets", "snapshot", "timestamp")
@json_option
def rotate(path: Path, role: str, as_json: bool, **exp: timedelta) -> None:
    """Replace ROLE's key: revoke the old one, add a new one, re-sign everything."""
    repo = _repo(path, **exp)
    result = repo.rotate(role)
    text = (
        f"Generated new {role} key with ID: {result.new_key_ids[role]}\n({_versions_text(result)})"
    )
    _emit(repo, as_json, {"new_key_ids": result.new_key_ids, "versions": result.versions}, text)


@updates.command()
@path_option
@warn_option
@click.option("--targets", "with_targets", is_flag=True, help="Also list every target path.")
@json_option
def status(path: Path, warn: timedelta, with_targets: bool, as_json: bool) -> None:
    """Show each role's version, expiry and keys; exit 1 if one expires within --warn."""
    repo = _repo(path)
    report = repository_status(repo, warn, utcnow(), with_targets=with_targets)
    _emit(repo, as_json, report.to_json(), render_text(report))
    sys.exit(EXIT_OK if report.ok else EXIT_CHECK_FAILED)


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
            default=format_seconds(DEFAULT_TIMEOUT),
            show_default=True,
            envvar="ORBIT_PACKAGER_TIMEOUT",
            callback=_timeout,
            help="Give up when the downloads take longer than this in all (e.g. 10m; 0: no limit).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


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
    for option in reversed(options):
        f = option(f)
    return f


def _cache_dir(cache_dir: Path | None, no_cache: bool, offline: bool) -> Path | None:
    if no_cache and (cache_dir or offline):
        raise UsageError("--no-cache cannot be combined with --cache-dir or --offline")
    if no_cache:
        return None
    return cache_dir or _default_cache()


def _http_options(
    update_tls_certificate: Path | None,
    update_tls_client_certificate: Path | None,
    update_tls_client_key: Path | None,
    timeout: float | None = None,
) -> HttpOptions:
    if bool(update_tls_client_certificate) != bool(update_tls_client_key):
        raise UsageError("--update-tls-client-certificate and --update-tls-client-key go together")
    return HttpOptions(
        ca_bundle=update_tls_certificate,
        client_cert=update_tls_client_certificate,
        client_key=update_tls_client_key,
        timeout=timeout,
    )


def _default_cache() -> Path:
    try:
        return default_cache_dir()
    except RuntimeError:  # Path.home(): HOME unset and no passwd entry
        raise UsageError(
            "no home directory for the download cache (HOME is not set)",
            hint="pass --cache-dir DIR, set XDG_CACHE_HOME or HOME, or use --no-cache",
        ) from None


def _related(filename: object, directory: Path) -> bool:
    """Whether ``filename`` (from an OSError) is ``directory``, inside it or one of its parents."""
    if not isinstance(filename, str | bytes | os.PathLike):
        return False
    path = Path(os.fsdecode(filename)).absolute()
    base = directory.absolute()
    return path == base or path in base.parents or base in path.parents


@contextlib.contextmanager
def _cache_errors(cache: Path | None) -> Iterator[None]:
    """An OSError on the download cache (or on the directories above it, like an unwritable
    HOME) becomes one line naming the cache and how to choose another."""
    try:
        yield
    except OSError as exc:
        if cache is None or not _related(exc.filename, cache):
            raise
        raise UsageError(
            f"cannot use the download cache {cache}: {exc.strerror or type(exc).__name__}: "
            f"{exc.filename}",
            hint="pass --cache-dir DIR (or set ORBIT_PACKAGER_CACHE_DIR or XDG_CACHE_HOME) "
            "to a writable directory, or use --no-cache",
        ) from None


@cli.command()
@update_server_options
@click.option("--target", "patterns", multiple=True, help="Only targets matching this glob.")
@warn_option
@click.option(
    "--download-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the verified targets here (default: hash and discard).",
)
@json_option
def verify(
    update_url: str,
    update_roots: str | None,
    update_tls_certificate: Path | None,
    update_tls_client_certificate: Path | None,
    update_tls_client_key: Path | None,
    timeout: float,
    patterns: tuple[str, ...],
    warn: timedelta,
    download_dir: Path | None,
    as_json: bool,
) -> None:
    """Check a published update repository as an agent would: every signature, expiry and
    target hash, from the trusted root. Exit 4 on any failure, 1 on an expiry within --warn."""
    http = _http_options(
        update_tls_certificate, update_tls_client_certificate, update_tls_client_key, timeout
    )
    root = load_trusted_root(update_url, update_roots)
    with (
        UpdateClient(update_url, root, cache_dir=None, http=http) as client,
        download_progress(client.http),
    ):
        report = verify_repository(
            client,
            patterns=list(patterns),
            warn=warn,
            now=utcnow(),
            download_dir=download_dir,
        )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_verify(report))
    if report.failures:
        sys.exit(EXIT_FETCH)
    sys.exit(EXIT_OK if not report.problems else EXIT_CHECK_FAILED)


class _TypeList(click.ParamType[tuple[str, ...]]):
    """``deb``, ``deb,rpm,msi`` or ``all``: the installer types of one run, in order."""

    name = "TYPE[,TYPE...]|all"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        types = PACKAGE_TYPES if text == "all" else tuple(t.strip() for t in text.split(","))
        for kind in types:
            if kind not in PACKAGE_TYPES:
                self.fail(f"{kind!r} is not one of {', '.join(PACKAGE_TYPES)} (or all)", param, ctx)
        if len(set(types)) != len(types):
            self.fail(f"{text!r} names a type twice", param, ctx)
        return types


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
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@target_options
@update_server_options
@cache_options
@click.option(
    "--outdir",
    type=click.Path(file_okay=True, path_type=Path),
    default=Path("orbit-targets"),
    show_default=True,
    help="New directory to create (Orbit root layout: bin/<name>/<platform>/<channel>/<file>).",
)
@json_option
def fetch(
    package_type: str,
    arch: str | None,
    fleet_desktop: bool,
    orbit_channel: str,
    osqueryd_channel: str,
    desktop_channel: str,
    update_url: str,
    update_roots: str | None,
    update_tls_certificate: Path | None,
    update_tls_client_certificate: Path | None,
    update_tls_client_key: Path | None,
    timeout: float,
    cache_dir: Path | None,
    no_cache: bool,
    offline: bool,
    outdir: Path,
    as_json: bool,
) -> None:
    """Fetch and verify the agent targets an installer embeds, through TUF, without running
    them. Fills the cache, so a later build can run with --offline."""
    selection = TargetSelection(
        package_type,
        arch or ("universal" if package_type == "pkg" else "amd64"),
        orbit_channel,
        osqueryd_channel,
        desktop_channel,
        fleet_desktop,
    )
    http = _http_options(
        update_tls_certificate, update_tls_client_certificate, update_tls_client_key, timeout
    )
    root = load_trusted_root(update_url, update_roots)
    cache = _cache_dir(cache_dir, no_cache, offline)
    with (
        _cache_errors(cache),
        UpdateClient(update_url, root, cache_dir=cache, http=http, offline=offline) as client,
    ):
        with download_progress(client.http):
            fetched = fetch_into_directory(client, selection, outdir)
        version = installer_version(fetched)
    summary = {
        "outdir": str(outdir),
        "version": version,
        "targets": [
            {
                "path": f.spec.path,
                "file": str(f.local_path),
                "length": f.info.length,
                "hashes": f.info.hashes,
                "version": f.version,
                "binary": f.binary.describe(),
                "pe_version": f.binary.version,
            }
            for f in fetched
        ],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        for f in fetched:
            click.echo(f"{f.spec.path}  {f.version or '?'}  {f.binary.describe()}")
        click.echo(f"orbit version {version}; targets in {outdir}")


def _path_option(name: str, help_text: str) -> Callable[[F], F]:
    return click.option(
        name, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=help_text
    )


PACKAGE_SECTIONS = {
    **dict.fromkeys(
        ("package_type", "arch", "fleet_desktop", "orbit_channel", "osqueryd_channel",
         "desktop_channel", "identifier"),
        "Target",
    ),
    **dict.fromkeys(
        ("fleet_url", "enroll_secret", "enroll_secret_file", "fleet_certificate", "insecure",
         "fleet_tls_client_certificate", "fleet_tls_client_key",
         "fleet_desktop_alternative_browser_host", "service", "debug", "enable_scripts",
         "host_identifier", "end_user_email", "osquery_db", "osquery_flagfile",
         "disable_setup_experience", "bypass_end_user_auth", "use_system_configuration",
         "disable_keystore", "fleet_managed_host_identity_certificate", "cpu_quota"),
        "Fleet and Orbit settings",
    ),
    **dict.fromkeys(
        ("update_url", "update_roots", "update_tls_certificate", "update_tls_client_certificate",
         "update_tls_client_key", "update_interval", "disable_updates", "timeout"),
        "Updates",
    ),
    **dict.fromkeys(
        ("sign_pem", "sign_cert", "sign_key", "sign_timestamp_url", "macos_devid_pem_content",
         "sign_identity", "notarize", "app_store_connect_api_key_id",
         "app_store_connect_api_key_issuer", "app_store_connect_api_key_content"),
        "Signing (pkg)",
    ),
    **dict.fromkeys(
        ("outfile", "compression", "cache_dir", "no_cache", "offline", "tooling",
         "tooling_image", "verbose", "as_json", "outdir", "native_tooling",
         "disable_open_folder", "local_wix_dir", "config_file", "version", "help"),
        "Output and build",
    ),
}  # fmt: skip


@cli.command("package", sections=PACKAGE_SECTIONS)
@click.version_option(
    __version__, "--version", prog_name="orbit-packager", help="Show the version and exit."
)
@functools.partial(target_options, several=True)
@click.option(
    "--fleet-url",
    default="",
    envvar="ORBIT_PACKAGER_FLEET_URL",
    help="URL of the Fleet server; host[:port] alone means https://host[:port], as Orbit reads it.",
)
@click.option(
    "--enroll-secret",
    default="",
    envvar="ORBIT_PACKAGER_ENROLL_SECRET",
    help="Enroll secret Orbit enrolls with (never printed; prefer the variable or "
    "--enroll-secret-file: arguments are visible to other local users).",
)
@click.option(
    "--enroll-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ORBIT_PACKAGER_ENROLL_SECRET_FILE",
    help="Read the enroll secret from this file (one trailing newline is ignored).",
)
@_path_option("--fleet-certificate", "CA bundle (PEM) for the Fleet server.")
@click.option("--insecure", is_flag=True, help="Orbit skips TLS verification of Fleet.")
@update_server_options
@_path_option("--fleet-tls-client-certificate", "Client certificate (PEM) for Fleet.")
@_path_option("--fleet-tls-client-key", "Client key (PEM) for Fleet.")
@click.option(
    "--fleet-desktop-alternative-browser-host",
    default="",
    help="host:port Fleet Desktop opens in the browser instead of the Fleet URL.",
)
@click.option(
    "--update-interval",
    default="15m",
    show_default=True,
    callback=_duration("--update-interval"),
    help="How often Orbit checks for updates.",
)
@click.option("--disable-updates", is_flag=True, help="Orbit never updates itself.")
@click.option(
    "--service/--no-service", default=True, show_default=True, help="Start Orbit on install."
)
@click.option("--debug", is_flag=True, help="Orbit logs at debug level.")
@click.option(
    "--enable-scripts",
    is_flag=True,
    envvar="FLEETCTL_ENABLE_SCRIPTS",
    help="Orbit runs scripts sent by Fleet (ORBIT_ENABLE_SCRIPTS).",
)
@click.option(
    "--host-identifier",
    default="uuid",
    show_default=True,
    envvar="FLEETCTL_HOST_IDENTIFIER",
    help="uuid or instance.",
)
@click.option(
    "--end-user-email",
    default="",
    envvar="FLEETCTL_END_USER_EMAIL",
    help="Email of the host's user, for Fleet's human-to-host mapping (deb, rpm, msi).",
)
@click.option(
    "--osquery-db", default="", envvar="FLEETCTL_OSQUERY_DB", help="Absolute osquery DB path."
)
@_path_option("--osquery-flagfile", "osquery flags file to embed.")
@click.option(
    "--disable-setup-experience",
    is_flag=True,
    help="Skip Fleet's setup experience on Linux and Windows hosts.",
)
@click.option(
    "--bypass-end-user-auth",
    is_flag=True,
    help="Skip the end-user authentication prompt at enrollment (Linux and Windows).",
)
@click.option(
    "--identifier", default="com.fleetdm.orbit", show_default=True, help="pkg identifier."
)
@click.option(
    "--use-system-configuration",
    is_flag=True,
    envvar="FLEETCTL_USE_SYSTEM_CONFIGURATION",
    help="pkg: Orbit reads the Fleet URL and enroll secret from a configuration profile.",
)
@click.option(
    "--disable-keystore",
    is_flag=True,
    envvar="FLEETCTL_DISABLE_KEYSTORE",
    help="pkg: Orbit keeps its secrets out of the macOS keychain.",
)
@click.option(
    "--fleet-managed-host-identity-certificate",
    "--fleet-managed-client-certificate",
    "fleet_managed_host_identity_certificate",
    is_flag=True,
    envvar="FLEETCTL_FLEET_MANAGED_HOST_IDENTITY_CERTIFICATE",
    help="deb, rpm: Orbit signs its requests to Fleet with a TPM-backed key.",
)
@click.option(
    "--cpu-quota",
    type=int,
    default=0,
    help="deb, rpm: the orbit service's systemd CPUQuota, in percent of one CPU (0: 20).",
)
@_path_option("--sign-pem", "pkg: PEM holding the signing certificate and private key.")
@click.option(
    "--macos-devid-pem-content",
    default="",
    envvar="FLEETCTL_MACOS_DEVID_PEM_CONTENT",
    help="pkg: the Developer ID certificate and private key as PEM text (never printed).",
)
@click.option(
    "--sign-identity",
    default="",
    help="Refused: a macOS keychain identity needs productsign; use --sign-pem.",
)
@click.option(
    "--notarize",
    is_flag=True,
    help="Refused: notarize the signed pkg with rcodesign or notarytool afterwards.",
)
@click.option(
    "--app-store-connect-api-key-id",
    default="",
    envvar="FLEETCTL_APP_STORE_CONNECT_API_KEY_ID",
    help="For --notarize only (accepted, unused).",
)
@click.option(
    "--app-store-connect-api-key-issuer",
    default="",
    envvar="FLEETCTL_APP_STORE_CONNECT_API_KEY_ISSUER",
    help="For --notarize only (accepted, unused).",
)
@click.option(
    "--app-store-connect-api-key-content",
    default="",
    envvar="FLEETCTL_APP_STORE_CONNECT_API_KEY_CONTENT",
    help="For --notarize only (accepted, unused; never printed).",
)
@_path_option("--sign-cert", "pkg: signing certificate (PEM), with --sign-key.")
@_path_option("--sign-key", "pkg: signing private key (PEM), with --sign-cert.")
@click.option("--sign-timestamp-url", help="pkg: RFC 3161 timestamp server (default: none).")
@click.option(
    "--outfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output path (default: fleetctl's file name in --outdir).",
)
@click.option(
    "--outdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the installer under fleetctl's file name (default: the current "
    "directory; made private, 0700, when missing).",
)
@click.option(
    "--native-tooling",
    is_flag=True,
    envvar="FLEETCTL_NATIVE_TOOLING",
    help="As fleetctl: nfpm runs on this machine (--tooling native) and the installer goes "
    "to build/ unless --outfile or --outdir says otherwise.",
)
@click.option(
    "--disable-open-folder",
    is_flag=True,
    help="Accepted for fleetctl's scripts: orbit-packager never opens a folder.",
)
@click.option(
    "--local-wix-dir",
    type=click.Path(path_type=Path),
    help="Accepted for fleetctl's scripts and unused: MSIs are written without WiX.",
)
@click.option(
    "--compression",
    help="deb: gzip (default), xz, zstd, none; rpm: gzip (default), xz, zstd, lzma.",
)
@cache_options
@click.option(
    "--tooling",
    type=click.Choice(TOOLING_MODES),
    default="auto",
    show_default=True,
    envvar="ORBIT_PACKAGER_TOOLING",
    help="Where nfpm (deb, rpm) runs: native, our Docker image, or auto (native when "
    "installed, else Docker). pkg and msi need no external tool.",
)
@click.option(
    "--tooling-image",
    default=DEFAULT_IMAGE,
    show_default=True,
    envvar="ORBIT_PACKAGER_TOOLING_IMAGE",
    help="Docker image for --tooling docker/auto (build it with `make docker-image`).",
)
@click.option("--verbose", is_flag=True, help="Show the build steps on stderr.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Build every installer of a TOML matrix ([[build]] tables: type, arch, fleet-url, "
    "enroll-secret-env or enroll-secret-file, any flag) from one fetch.",
)
@json_option
def package(
    package_type: tuple[str, ...] | None,
    config_file: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Build fleetd (Orbit) installers, with targets fetched and verified through TUF."""
    timeout = flags.pop("timeout")
    if config_file is not None:
        requests = _matrix_requests(config_file, package_type, flags)
        notes: list[str] = []
    else:
        if not package_type:
            raise click.UsageError("Missing option '--type'.")
        requests, notes = _command_line_requests(package_type, flags)
    for note in dict.fromkeys([*notes, *(n for r in requests for n in r.notes)]):
        click.echo(f"orbit-packager: note: {note}", err=True)
    with _cache_errors(requests[0].cache_dir), command_timeout(timeout):
        results = build_packages(requests)
    if as_json:
        data = (
            results[0].to_json()
            if len(results) == 1 and config_file is None
            else {"installers": [r.to_json() for r in results]}
        )
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for result in results:
        click.echo(
            f"Generated {result.path} ({result.package_type}, fleet-osquery {result.version}, "
            f"{result.size} bytes, sha256 {result.sha256})"
        )


def _matrix_requests(
    config_file: Path, package_type: tuple[str, ...] | None, flags: dict[str, Any]
) -> list[BuildRequest]:
    """With --config the builds come from the file; the command line may only set what the
    whole run shares (update server, cache, tooling)."""
    from click.core import ParameterSource

    from packager.matrix import SHARED, load_matrix

    ctx = click.get_current_context()
    if package_type:
        raise UsageError("with --config, each [[build]] names its type: drop --type")
    given: dict[str, Any] = {}
    for name, value in flags.items():
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        if name not in SHARED:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"with --config, {flag} belongs in the file ([defaults] or a [[build]])"
            )
        given[name] = value
    return load_matrix(config_file, given, _default_cache)


def _command_line_requests(
    package_type: tuple[str, ...], flags: dict[str, Any]
) -> tuple[list[BuildRequest], list[str]]:
    notes = fleetctl_only_flags(flags)
    if len(package_type) > 1 and flags["outfile"] is not None:
        raise UsageError(
            "--outfile names one installer; with several types use --outdir",
            hint="each installer gets fleetctl's file name there",
        )
    if not flags["no_cache"] and flags["cache_dir"] is None:
        flags["cache_dir"] = _default_cache()  # a missing HOME is one clear line
    return [BuildRequest(type=kind, **flags) for kind in package_type], notes


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, exit codes as documented in packager.errors. SIGINT,
    SIGTERM and SIGHUP unwind like an error (every temporary file and directory is removed)
    and exit 128 + the signal number: 130, 143, 129 (see packager.signals)."""
    signals.install()
    try:
        signals.raise_pending()  # one that arrived while the modules were loading
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
    in_tmp = dest is not None and _related(dest, Path(tmp))
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
