"""`verify` and `fetch`: the agent targets through TUF, without building an installer."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click

from packager.cli.common import (
    cache_dir_for,
    cache_errors,
    cache_options,
    http_options,
    json_option,
    target_options,
    update_server_options,
    warn_option,
)
from packager.errors import EXIT_CHECK_FAILED, EXIT_FETCH, EXIT_OK
from packager.flagsyntax import FleetctlCommand


@click.command(cls=FleetctlCommand)
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
    http = http_options(
        update_tls_certificate, update_tls_client_certificate, update_tls_client_key, timeout
    )
    # Here, not at the top: `--help` and the other commands must not load tuf and requests.
    from packager.fetch.client import UpdateClient, load_trusted_root
    from packager.fetch.progress import download_progress
    from packager.fetch.verify import render_text as render_verify
    from packager.fetch.verify import verify_repository
    from packager.repo.repository import utcnow

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


@click.command(cls=FleetctlCommand)
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
    from packager.fetch.client import UpdateClient, load_trusted_root
    from packager.fetch.progress import download_progress
    from packager.fetch.targets import TargetSelection, fetch_into_directory, installer_version

    selection = TargetSelection(
        package_type,
        arch or ("universal" if package_type == "pkg" else "amd64"),
        orbit_channel,
        osqueryd_channel,
        desktop_channel,
        fleet_desktop,
    )
    http = http_options(
        update_tls_certificate, update_tls_client_certificate, update_tls_client_key, timeout
    )
    root = load_trusted_root(update_url, update_roots)
    cache = cache_dir_for(cache_dir, no_cache, offline)
    with (
        cache_errors(cache),
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
