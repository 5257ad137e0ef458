"""`updates`: the TUF repository commands (compatible with `fleetctl updates`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager.cli.common import (
    ROLES,
    F,
    duration_option_callback,
    json_option,
    path_option,
    signing_key_options,
    warn_option,
)
from packager.cli.publish import destination_options, run_publish
from packager.cli.publish import summary as publish_summary
from packager.errors import EXIT_CHECK_FAILED, EXIT_OK, UsageError
from packager.flagsyntax import FleetctlGroup

if TYPE_CHECKING:
    from packager.repo.repository import PublishResult, UpdateRepository
    from packager.repo.signing import SigningKey

# The library (tuf, cryptography, ...) is imported inside the commands: `--help` and each
# command load only what they use.

_DEFAULTS = {"root": "87600h", "targets": "26280h", "snapshot": "26280h", "timestamp": "336h"}


def expiration_options(*roles: str) -> Callable[[F], F]:
    """--<role>-expiration flags for the roles a command signs."""

    def decorate(f: F) -> F:
        for role in reversed(roles):
            f = click.option(
                f"--{role}-expiration",
                f"{role}_expiration",
                default=_DEFAULTS[role],
                show_default=True,
                callback=duration_option_callback(f"--{role}-expiration"),
                help=f"How long the new {role}.json stays valid (e.g. 336h, 14d).",
            )(f)
        return f

    return decorate


def _repo(path: Path, **expirations: timedelta) -> UpdateRepository:
    from packager.repo.repository import Expirations, UpdateRepository

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


def _repo_with_keys(path: Path, options: dict[str, Any]) -> UpdateRepository:
    """The repository, with the keys given by --<role>-key (popped from ``options``)."""
    refs = {r: options.pop(f"{r}_key_refs", ()) for r in ROLES}
    repo = _repo(path, **options)
    repo.key_refs = {role: list(values) for role, values in refs.items() if values}
    return repo


def _open_refs(repo: UpdateRepository, role: str, refs: tuple[str, ...]) -> list[SigningKey]:
    from packager.repo.signing import open_key_ref

    keys: list[SigningKey] = []
    for ref in refs:
        keys += open_key_ref(ref, role, repo.passphrases)
    return keys


def _versions_text(result: PublishResult) -> str:
    return ", ".join(f"{role} v{version}" for role, version in result.versions.items())


@click.group(cls=FleetctlGroup)
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
@click.option(
    "--root-key",
    "root_key_refs",
    multiple=True,
    metavar="URI|KEYFILE",
    help="A root key on a PKCS#11 token (pkcs11:...; PIN from FLEET_ROOT_PIN or a prompt) or in"
    " a holder's key file (repeatable). Then no root key is generated and keys/ holds none.",
)
@click.option(
    "--root-threshold",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Root signatures every new root needs (at most the number of --root-key).",
)
@expiration_options("root", "targets", "snapshot", "timestamp")
@json_option
def init(
    path: Path,
    consistent_snapshot: bool,
    root_key_refs: tuple[str, ...],
    root_threshold: int,
    as_json: bool,
    **exp: timedelta,
) -> None:
    """Create keys and an empty repository (root, targets, snapshot, timestamp v1)."""
    repo = _repo(path, **exp)
    root_keys = _open_refs(repo, "root", root_key_refs)
    result = repo.init(
        consistent_snapshot=consistent_snapshot, root_keys=root_keys, root_threshold=root_threshold
    )
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
@signing_key_options("targets", "snapshot", "timestamp")
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
    **exp: Any,
) -> None:
    """Publish a target under its version and every tag; needs no root key."""
    repo = _repo_with_keys(path, exp)
    result = repo.add(target, name=name, platform=platform, version=version, tags=list(tags))
    text = "\n".join(f"Added {p}" for p in result.added) + f"\n({_versions_text(result)})"
    _emit(repo, as_json, {"added": result.added, "versions": result.versions}, text)


@updates.command()
@path_option
@click.argument("targets", nargs=-1, required=True)
@signing_key_options("targets", "snapshot", "timestamp")
@expiration_options("targets", "snapshot", "timestamp")
@json_option
def remove(path: Path, targets: tuple[str, ...], as_json: bool, **exp: Any) -> None:
    """Remove targets by exact path (orbit/linux/1.2.0/orbit) or NAME/PLATFORM/CHANNEL."""
    repo = _repo_with_keys(path, exp)
    result = repo.remove(list(targets))
    text = "\n".join(f"Removed {p}" for p in result.removed) + f"\n({_versions_text(result)})"
    _emit(repo, as_json, {"removed": result.removed, "versions": result.versions}, text)


def _window_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, timedelta] | None:
    """--if-expiring-within: the value as typed (repeated in the output) and as a duration."""
    if value is None:
        return None
    return value, duration_option_callback("--if-expiring-within")(ctx, param, value)


@updates.command()
@path_option
@expiration_options("timestamp")
@click.option(
    "--if-expiring-within",
    "if_expiring_within",
    metavar="DURATION",
    callback=_window_option,
    help="Re-sign only when timestamp.json expires within DURATION (e.g. 72h, 3d), has "
    "expired or does not match snapshot.json; else change nothing and ask no passphrase "
    "(for cron and systemd timers).",
)
@click.option(
    "--publish",
    "publish_to",
    metavar="URL",
    help="Then publish the repository there, as `updates publish --to URL` (every run, re-signed"
    " or not: a publish that failed last time is finished).",
)
@destination_options
@signing_key_options("timestamp")
@json_option
def timestamp(
    path: Path,
    if_expiring_within: tuple[str, timedelta] | None,
    publish_to: str | None,
    endpoint_url: str | None,
    timestamp_max_age: timedelta,
    immutable_max_age: timedelta,
    as_json: bool,
    **exp: Any,
) -> None:
    """Re-sign timestamp.json (run at least every --timestamp-expiration)."""
    from packager.repo import metadata as meta
    from packager.repo.publish import CachePolicy

    window = if_expiring_within[1] if if_expiring_within else None
    repo = _repo_with_keys(path, exp)
    result = repo.timestamp(if_expiring_within=window)
    expires = meta.utc_z(result.expires["timestamp"])
    data = {"versions": result.versions, "signed": result.signed, "expires": expires}
    if window is not None:
        data["reason"] = result.reason
    if not result.signed:
        left = f"{result.reason} ({expires})"
        typed = if_expiring_within[0] if if_expiring_within else ""
        text = f"{left}: not re-signed (--if-expiring-within {typed})"
    elif result.reason:
        text = f"Signed {_versions_text(result)} ({result.reason})"
    else:
        text = f"Signed {_versions_text(result)}"
    if publish_to is not None:
        plan = run_publish(
            repo,
            publish_to,
            endpoint_url=endpoint_url,
            policy=CachePolicy(timestamp_max_age, immutable_max_age),
            quiet=as_json,
        )
        data["published"] = plan.to_json()
        text += "\n" + publish_summary(plan)
    _emit(repo, as_json, data, text)


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
@click.option(
    "--root-key",
    "root_key_refs",
    multiple=True,
    metavar="URI|KEYFILE",
    help="Sign the new root with this root key (a token or a holder's key file; repeatable),"
    " with keys/root.json when there is one.",
)
@expiration_options("root", "targets", "snapshot", "timestamp")
@json_option
def rotate(
    path: Path, role: str, root_key_refs: tuple[str, ...], as_json: bool, **exp: timedelta
) -> None:
    """Replace ROLE's key: revoke the old one, add a new one, re-sign everything."""
    repo = _repo(path, **exp)
    repo.key_refs["root"] = list(root_key_refs)
    result = repo.rotate(role)
    text = (
        f"Generated new {role} key with ID: {result.new_key_ids[role]}\n({_versions_text(result)})"
    )
    _emit(repo, as_json, {"new_key_ids": result.new_key_ids, "versions": result.versions}, text)


@updates.command()
@path_option
@click.option(
    "--url",
    metavar="URL",
    help="Check the repository published at this URL (what clients see) instead of --path.",
)
@click.option(
    "--update-roots",
    metavar="FILE",
    help="With --url: trusted root.json (file or JSON) to walk the root chain from "
    "(default: the published root.json, trusted as it is).",
)
@warn_option
@click.option("--targets", "with_targets", is_flag=True, help="Also list every target path.")
@json_option
def status(
    path: Path,
    url: str | None,
    update_roots: str | None,
    warn: timedelta,
    with_targets: bool,
    as_json: bool,
) -> None:
    """Show each role's version, expiry and keys; exit 1 if one expires within --warn."""
    if url is None:
        if update_roots is not None:
            raise UsageError("--update-roots goes with --url (the published repository)")
        from packager.repo.repository import utcnow
        from packager.repo.status import render_text, repository_status

        repo = _repo(path)
        report = repository_status(repo, warn, utcnow(), with_targets=with_targets)
        _emit(repo, as_json, report.to_json(), render_text(report))
        sys.exit(EXIT_OK if report.ok else EXIT_CHECK_FAILED)
    source = click.get_current_context().get_parameter_source("path")
    if source not in (None, click.core.ParameterSource.DEFAULT):
        raise UsageError(
            "--path and --url are mutually exclusive",
            hint="--path reads the local repository, --url the published one",
        )
    from packager.fetch.client import load_trusted_root
    from packager.fetch.published import load_published
    from packager.repo.repository import utcnow
    from packager.repo.status import render_text, roles_status

    trusted = load_trusted_root(url, update_roots) if update_roots is not None else None
    published = load_published(url, trusted_root=trusted)
    chain = published.root_chain
    if published.trusted_from == "published":
        note = "root trusted as published (pass --update-roots to check the chain)"
    else:
        note = f"root chain walked from the --update-roots root v{chain[0]} to v{chain[-1]}"
    report = roles_status(
        published,
        published.url,
        warn,
        utcnow(),
        with_targets=with_targets,
        problems=published.problems,
        notes=[note],
    )
    if as_json:
        data = {**report.to_json(), "url": published.url, "root_chain": chain}
        data["trusted_root"] = published.trusted_from
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(render_text(report))
    sys.exit(EXIT_OK if report.ok else EXIT_CHECK_FAILED)
