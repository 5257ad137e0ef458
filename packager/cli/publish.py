"""`updates publish`: the repository to object storage or a directory, in client order."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from packager.cli.common import F, json_option, path_option, stack
from packager.errors import EXIT_CHECK_FAILED, PackagerError
from packager.flagsyntax import FleetctlCommand
from packager.repo.durations import parse_duration

if TYPE_CHECKING:
    from packager.repo.publish import CachePolicy, PublishPlan, Upload
    from packager.repo.repository import UpdateRepository

# The library (tuf, obstore, rich) is imported inside the functions: `--help` and the other
# commands must not load it.

DEFAULT_JOBS = 8


def _age(name: str) -> Callable[[click.Context, click.Parameter, str | None], timedelta | None]:
    def convert(
        _ctx: click.Context, _param: click.Parameter, value: str | None
    ) -> timedelta | None:
        if value is None:
            return None
        if value.strip() in ("0", "0s"):
            return timedelta(0)
        try:
            return parse_duration(value, what=name)
        except PackagerError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


def destination_options(f: F) -> F:
    """--endpoint-url and the Cache-Control flags (shared with `timestamp --publish`)."""
    return stack(
        [
            click.option(
                "--endpoint-url",
                envvar=["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
                metavar="URL",
                help="S3-compatible endpoint (MinIO, Ceph, R2...) for s3:// destinations."
                " Credentials come from each cloud's environment and config files, never"
                " from flags.",
            ),
            click.option(
                "--timestamp-max-age",
                default="60s",
                show_default=True,
                metavar="DURATION",
                callback=_age("--timestamp-max-age"),
                help="Cache-Control max-age of timestamp.json and every other name replaced in"
                " place (0: no-cache). Agents see a publish at most this late through a CDN.",
            ),
            click.option(
                "--immutable-max-age",
                default="365d",
                show_default=True,
                metavar="DURATION",
                callback=_age("--immutable-max-age"),
                help="Cache-Control max-age of names never reused: N.root.json, versioned"
                " metadata and hash-prefixed targets.",
            ),
        ],
        f,
    )


@click.command(cls=FleetctlCommand)
@path_option
@click.option(
    "--to",
    "destination",
    required=True,
    envvar="ORBIT_PACKAGER_PUBLISH_TO",
    metavar="URL",
    help="Where agents download from: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX,"
    " az://CONTAINER/PREFIX, or a local directory (an nginx root, an rsync source).",
)
@destination_options
@click.option(
    "--force",
    is_flag=True,
    help="Publish even when what is published is newer or differs (a version would go"
    " backwards: agents that saw the newer one refuse it) or this repository has expired.",
)
@click.option(
    "--dry-run", is_flag=True, help="List what would be uploaded and deleted; write nothing."
)
@click.option(
    "--delete-stale",
    metavar="AGE",
    callback=_age("--delete-stale"),
    help="Also delete published targets and versioned metadata that this repository no longer"
    " has, once older than AGE (e.g. 7d). Root versions and current files are never deleted.",
)
@click.option(
    "--verify-url",
    metavar="URL",
    help="After publishing, check the repository from this public URL as an agent would"
    " (from root v1), and that a missing file answers 404.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Uploads at a time.",
)
@json_option
def publish(
    path: Any,
    destination: str,
    endpoint_url: str | None,
    timestamp_max_age: timedelta,
    immutable_max_age: timedelta,
    force: bool,
    dry_run: bool,
    delete_stale: timedelta | None,
    verify_url: str | None,
    jobs: int,
    as_json: bool,
) -> None:
    """Copy repository/ to object storage or a directory without a broken instant.

    Target files first, then N.root.json, versioned metadata, root.json, targets.json,
    snapshot.json and timestamp.json last; only what changed; refused (nothing written) when a
    published version is newer than this repository's. Exit 2 when refused, 4 when the
    destination fails (run again to finish), 1 when --verify-url finds a problem."""
    from packager.repo.publish import CachePolicy
    from packager.repo.repository import UpdateRepository

    repo = UpdateRepository(path)
    plan = run_publish(
        repo,
        destination,
        endpoint_url=endpoint_url,
        policy=CachePolicy(timestamp_max_age, immutable_max_age),
        force=force,
        dry_run=dry_run,
        delete_stale=delete_stale,
        jobs=jobs,
        quiet=as_json,
    )
    report: dict[str, Any] = {"dry_run": dry_run, **plan.to_json()}
    problems: list[str] = []
    if verify_url and not dry_run:
        problems = verify_published(repo, verify_url)
        report["verify_url"] = verify_url
        report["verify_problems"] = problems
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        if not dry_run:
            click.echo(summary(plan))
        for problem in problems:
            click.echo(f"verify: {problem}")
        if verify_url and not dry_run and not problems:
            click.echo(f"Verified {verify_url} as an agent would; missing files answer 404")
    if problems:
        sys.exit(EXIT_CHECK_FAILED)


def run_publish(
    repo: UpdateRepository,
    destination: str,
    *,
    endpoint_url: str | None = None,
    policy: CachePolicy | None = None,
    force: bool = False,
    dry_run: bool = False,
    delete_stale: timedelta | None = None,
    jobs: int = DEFAULT_JOBS,
    quiet: bool = False,
) -> PublishPlan:
    """Plan and (unless ``dry_run``) carry out a publish, under the repository's lock."""
    from packager.repo.publish import CachePolicy, execute, plan_publish
    from packager.repo.repository import utcnow
    from packager.repo.stores import open_store

    store = open_store(destination, endpoint_url=endpoint_url)
    with repo.locked(), store.session():
        state = repo.load()
        plan = plan_publish(
            repo, state, store, now=utcnow(), force=force, delete_stale=delete_stale
        )
        for override in plan.overrides:
            click.echo(f"orbit-packager: --force: {override}", err=True)
        for note in plan.notes:
            click.echo(f"orbit-packager: note: {note}", err=True)
        if dry_run:
            if not quiet:
                click.echo(plan_text(plan))
            return plan
        with _progress(plan, enabled=not quiet and sys.stderr.isatty()) as hook:
            execute(plan, store, policy or CachePolicy(), jobs=jobs, progress=hook)
    return plan


@contextmanager
def _progress(plan: PublishPlan, *, enabled: bool) -> Iterator[Callable[[Upload | str], None]]:
    """One bar over the bytes to upload (files complete one by one), on a terminal only."""
    if not enabled or not plan.uploads:
        yield lambda _item: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from packager.repo.publish import Upload

    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("publish", total=plan.upload_bytes)

        def hook(item: Upload | str) -> None:
            if isinstance(item, Upload):
                progress.advance(task, item.file.size)

        yield hook


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _versions(plan: PublishPlan) -> str:
    return ", ".join(f"{role} v{v['local']}" for role, v in plan.versions.items())


def plan_text(plan: PublishPlan) -> str:
    lines = [f"Plan for {plan.destination} (dry run: nothing written):"]
    for title, group in plan.phases():
        lines.append(f"  {title}:")
        lines += [f"    upload {u.file.name} ({_size(u.file.size)})" for u in group]
    lines += [f"  delete {name}" for name in plan.deletes]
    lines += [f"  keep {name} (stale, younger than --delete-stale)" for name in plan.kept_young]
    lines.append(
        f"{len(plan.uploads)} to upload ({_size(plan.upload_bytes)}), {len(plan.unchanged)}"
        f" unchanged, {len(plan.deletes)} to delete; {_versions(plan)}"
    )
    return "\n".join(lines)


def summary(plan: PublishPlan) -> str:
    return (
        f"Published to {plan.destination}: {len(plan.uploads)} uploaded"
        f" ({_size(plan.upload_bytes)}), {len(plan.unchanged)} unchanged,"
        f" {len(plan.deletes)} deleted; {_versions(plan)}"
    )


def verify_published(repo: UpdateRepository, url: str) -> list[str]:
    """Problems seen from ``url``: ``verify`` from root v1, then a 404 for a missing file."""
    from tuf.api import exceptions

    from packager.fetch.client import UpdateClient
    from packager.fetch.http import HttpOptions, RequestsFetcher
    from packager.fetch.verify import verify_repository
    from packager.repo.repository import utcnow

    first = repo.repository / "1.root.json"
    trusted = (first if first.is_file() else repo.repository / "root.json").read_bytes()
    problems: list[str] = []
    try:
        with UpdateClient(url, trusted, cache_dir=None, http=HttpOptions()) as client:
            report = verify_repository(
                client, patterns=[], warn=timedelta(0), now=utcnow(), download_dir=None
            )
            next_root = client.roles()[0].version + 1
    except PackagerError as exc:
        return [str(exc)]
    problems += report.problems + report.failures
    probe = f"{url.rstrip('/')}/{next_root}.root.json"
    try:
        for _chunk in RequestsFetcher(HttpOptions()).fetch(probe):
            pass
        problems.append(f"{probe} exists although root v{next_root - 1} is the newest")
    except exceptions.DownloadHTTPError as exc:
        if exc.status_code == 403:
            problems.append(
                f"{probe} (missing) answered 403, not 404: agents treat that as an error and"
                " stop updating; on S3 allow s3:ListBucket to anonymous readers of the bucket"
                " (or make the server answer 404 for missing files)"
            )
        elif exc.status_code != 404:
            problems.append(f"{probe} (missing) answered HTTP {exc.status_code}, not 404")
    except exceptions.DownloadError as exc:
        problems.append(f"{probe}: {exc}")
    return problems
