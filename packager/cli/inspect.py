"""`inspect FILE`: what a built installer (ours or fleetctl's) contains, optionally checked
against an update repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from packager.cli.common import http_options, json_option, update_server_options
from packager.errors import EXIT_CHECK_FAILED, EXIT_FETCH, EXIT_OK
from packager.flagsyntax import FleetctlCommand

if TYPE_CHECKING:
    from packager.installers.report import Report


@click.command(cls=FleetctlCommand)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@update_server_options
@json_option
@click.pass_context
def inspect(
    ctx: click.Context,
    file: Path,
    update_url: str,
    update_roots: str | None,
    update_tls_certificate: Path | None,
    update_tls_client_certificate: Path | None,
    update_tls_client_key: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Show what an installer (deb, rpm, pkg.tar.zst, pkg, msi) embeds: type, arch, version,
    every Orbit setting, whether an enroll secret is embedded (never its value), the TUF root
    and the targets (sha512, binary kind and CPU).

    With --update-url or --update-roots, also check the embedded targets, update URL and root
    against that repository, verified through TUF: exit 0 when they match, 4 when they do not
    (each difference named). Without, exit 1 when a target differs from the installer's own
    TUF metadata."""
    from packager.build import private_directory
    from packager.installers import read_installer
    from packager.installers.report import compare, describe

    given = {
        name
        for name in ("update_url", "update_roots")
        if ctx.get_parameter_source(name)
        in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    }
    with private_directory("orbit-packager-inspect-") as workdir:
        report = describe(read_installer(file, workdir))
        if given:
            from packager.fetch.client import UpdateClient, load_trusted_root

            http = http_options(
                update_tls_certificate,
                update_tls_client_certificate,
                update_tls_client_key,
                timeout,
            )
            root = load_trusted_root(update_url, update_roots)
            with UpdateClient(update_url, root, cache_dir=None, http=http) as client:
                compare(report, client, update_url)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_text(report))
    if report.differences:
        sys.exit(EXIT_FETCH)
    sys.exit(EXIT_CHECK_FAILED if report.problems else EXIT_OK)


def render_text(report: Report) -> str:
    c = report.contents
    lines = [
        f"{c.type} {c.name} {c.version} ({c.arch})",
        f"  Fleet URL:      {c.settings.get('ORBIT_FLEET_URL', '(none)')}",
        f"  update URL:     {c.settings.get('ORBIT_UPDATE_URL', '(none)')}",
        f"  enroll secret:  {'embedded' if c.enroll_secret else 'none'}",
        "  settings:",
        *(f"    {k}={v}" for k, v in sorted(c.settings.items())),
    ]
    if report.root is not None:
        r = report.root
        lines.append(f"  TUF root:       version {r.version}, expires {r.expires}")
        for role in sorted(r.key_ids):
            keys = ", ".join(k[:16] for k in r.key_ids[role])
            lines.append(f"    {role}: threshold {r.thresholds[role]}, keys {keys}")
    lines.append("  targets:")
    for t in report.targets:
        mark = "" if t.matches_embedded_metadata else "  (differs from embedded metadata)"
        version = f"  version {t.version}" if t.version else ""
        lines.append(
            f"    {t.name}{version}  {t.length} bytes  {t.binary}  sha512 {t.sha512[:16]}…{mark}"
        )
    lines += [f"  note: {n}" for n in c.notes]
    lines += [f"  problem: {p}" for p in report.problems]
    if report.compared_with is not None:
        if report.differences:
            lines.append(f"differs from {report.compared_with}:")
            lines += [f"  {d}" for d in report.differences]
        else:
            lines.append(f"matches {report.compared_with}")
    return "\n".join(lines)
