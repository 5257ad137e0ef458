"""`package`: installers, one or many per run, with fleetctl's flags."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager import __version__
from packager.cli.common import (
    DEFAULT_IMAGE,
    TOOLING_MODES,
    F,
    cache_errors,
    cache_options,
    default_cache,
    duration_option_callback,
    json_option,
    target_options,
    update_server_options,
)
from packager.errors import UsageError
from packager.flagsyntax import FleetctlCommand

if TYPE_CHECKING:
    from packager.options import BuildRequest

# The builder (tuf, jinja2, cryptography...) is imported when `package` runs, not for
# `--help` or the other commands.


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


@click.command("package", cls=FleetctlCommand, sections=PACKAGE_SECTIONS)
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
    callback=duration_option_callback("--update-interval"),
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
    help="Email of the host's user, for Fleet's human-to-host mapping "
    "(deb, rpm, pkg.tar.zst, msi).",
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
    help="deb, rpm, pkg.tar.zst: Orbit signs its requests to Fleet with a TPM-backed key.",
)
@click.option(
    "--cpu-quota",
    type=int,
    default=0,
    help="deb, rpm, pkg.tar.zst: the orbit service's systemd CPUQuota, in percent of one CPU "
    "(0: 20).",
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
    help="Where nfpm (deb, rpm, pkg.tar.zst) runs: native, our Docker image, or auto (native when "
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
    from packager.build import build_packages
    from packager.fetch.http import command_timeout

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
    _forget_secret_variables(requests)
    with cache_errors(requests[0].cache_dir), command_timeout(timeout):
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


def _forget_secret_variables(requests: list[BuildRequest]) -> None:
    """Drop from this process's environment every variable holding an enroll secret of the run
    (ORBIT_PACKAGER_ENROLL_SECRET, a --config file's enroll-secret-env), now that the requests
    hold it: the build processes, nfpm and docker would otherwise inherit it, readable in
    /proc/PID/environ for as long as they run."""
    held = {r.enroll_secret for r in requests if r.enroll_secret}
    for name, value in list(os.environ.items()):
        if value in held:
            del os.environ[name]


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
    return load_matrix(config_file, given, default_cache)


def _command_line_requests(
    package_type: tuple[str, ...], flags: dict[str, Any]
) -> tuple[list[BuildRequest], list[str]]:
    from packager.options import BuildRequest, fleetctl_only_flags

    notes = fleetctl_only_flags(flags)
    if len(package_type) > 1 and flags["outfile"] is not None:
        raise UsageError(
            "--outfile names one installer; with several types use --outdir",
            hint="each installer gets fleetctl's file name there",
        )
    if not flags["no_cache"] and flags["cache_dir"] is None:
        flags["cache_dir"] = default_cache()  # a missing HOME is one clear line
    return [BuildRequest(type=kind, **flags) for kind in package_type], notes
