"""``updates publish``: copy ``repository/`` to object storage or a directory, in client order.

An agent polls ``timestamp.json``; it names a snapshot, which names targets, which name the
target files. So a publish is safe at every instant only when each file is in place before any
file that refers to it. The order (one phase after the other; files within a phase in
parallel):

1. target files (channel names and, with consistent snapshots, hash-prefixed names);
2. ``N.root.json``, oldest first: a new root before anything signed under it;
3. ``N.targets.json``, then 4. ``N.snapshot.json`` (consistent snapshots);
5. ``root.json``, 6. ``targets.json``, 7. ``snapshot.json``;
8. ``timestamp.json``, the switch, last.

A new root goes first, unless the published files do not verify under it while the new ones
verify under the old root (a key rotation: see :func:`_root_order`); then it goes last.

Before anything is written, what is published is read back: a role whose published version is
higher than ours, or equal with other bytes, or a versioned file (``N.root.json``...) that
differs from ours, stops the publish with nothing changed -- a published version never goes
backwards (agents refuse a lower version: "version 4401 is lower than current version 4402").
Unchanged files are skipped. The top-level metadata is written conditionally (If-Match on the
ETag read when planning), so a publisher racing this one makes it stop rather than interleave.
A publish stopped half-way (a crash, a dead endpoint) leaves what agents see valid -- the switch
comes last -- and running it again finishes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from packager.errors import CorruptRepositoryError, RepositoryStateError
from packager.repo import metadata as meta
from packager.repo.durations import format_duration
from packager.repo.fsutil import is_temp_name
from packager.repo.repository import ROLES, RepoState, UpdateRepository
from packager.repo.stores import ABSENT, RemoteObject, Store, StoreError, file_digests

PHASES = (
    "target files",
    "root versions",
    "versioned targets",
    "versioned snapshots",
    "root.json",
    "targets.json",
    "snapshot.json",
    "timestamp.json",
)
_VERSIONED = re.compile(r"([1-9][0-9]*)\.(root|targets|snapshot|timestamp)\.json")
_HASH_PREFIXED = re.compile(r"[0-9a-f]{64}(?:[0-9a-f]{64})?\..+")
META_LIMIT = 64 * 1024 * 1024  # the largest published metadata file read back
METADATA_TYPE = "application/json"
TARGET_TYPE = "application/octet-stream"


class PublishRefused(RepositoryStateError):
    """What is published is newer than, or conflicts with, this repository (exit 2)."""


@dataclass(frozen=True)
class CachePolicy:
    """Cache-Control max-age for names replaced in place, and for names never reused."""

    mutable: timedelta = timedelta(seconds=60)
    immutable: timedelta = timedelta(days=365)

    def header(self, name: str) -> str:
        age = self.immutable if is_immutable(name) else self.mutable
        seconds = int(age.total_seconds())
        return "no-cache" if seconds <= 0 else f"public, max-age={seconds}"


def phase_of(name: str) -> int:
    """Index in :data:`PHASES` of a file of ``repository/``."""
    versioned = _VERSIONED.fullmatch(name)
    if versioned:
        return {"root": 1, "targets": 2, "snapshot": 3}.get(versioned.group(2), 0)
    top = {"root.json": 4, "targets.json": 5, "snapshot.json": 6, "timestamp.json": 7}
    return top.get(name, 0)  # target files, and anything else found in repository/


def is_immutable(name: str) -> bool:
    """Versioned metadata and hash-prefixed targets: a name whose content never changes."""
    if _VERSIONED.fullmatch(name):
        return True
    return name.startswith("targets/") and bool(_HASH_PREFIXED.fullmatch(name.rsplit("/", 1)[-1]))


def is_repository_object(name: str) -> bool:
    """A name a TUF repository uses (what ``--delete-stale`` may remove, nothing else)."""
    return name.startswith("targets/") or bool(_VERSIONED.fullmatch(name))


@dataclass(frozen=True)
class LocalFile:
    name: str
    path: Path
    size: int
    sha256: str

    @property
    def phase(self) -> int:
        return phase_of(self.name)

    @property
    def content_type(self) -> str:
        return METADATA_TYPE if self.name.endswith(".json") and self.phase else TARGET_TYPE


@dataclass(frozen=True)
class Upload:
    file: LocalFile
    expect: str | None  # condition for the write (see stores.ABSENT)
    replaces: bool  # an object of that name is published already


@dataclass
class PublishPlan:
    destination: str
    uploads: list[Upload] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    kept_young: list[str] = field(default_factory=list)  # stale, but newer than --delete-stale
    versions: dict[str, dict[str, int | None]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # what --force let through
    root_last: bool = False  # see _root_order
    notes: list[str] = field(default_factory=list)

    def phases(self) -> Iterator[tuple[str, list[Upload]]]:
        order = list(range(len(PHASES)))
        if self.root_last:
            roots = [PHASES.index("root versions"), PHASES.index("root.json")]
            order = [i for i in order if i not in roots] + roots
        for index in order:
            group = [u for u in self.uploads if u.file.phase == index]
            if group:
                yield PHASES[index], group

    @property
    def upload_bytes(self) -> int:
        return sum(u.file.size for u in self.uploads)

    def to_json(self) -> dict[str, object]:
        return {
            "to": self.destination,
            "uploads": [
                {"name": u.file.name, "size": u.file.size, "phase": PHASES[u.file.phase]}
                for u in self.uploads
            ],
            "unchanged": len(self.unchanged),
            "deletes": self.deletes,
            "kept_stale": self.kept_young,
            "versions": self.versions,
            "overrides": self.overrides,
            "root_last": self.root_last,
            "notes": self.notes,
        }


def local_files(repository: Path) -> list[LocalFile]:
    """Every regular file of ``repository/`` (temporary names and dot-files left out)."""
    files: list[LocalFile] = []
    for path in sorted(repository.rglob("*")):
        rel = path.relative_to(repository)
        if any(part.startswith(".") for part in rel.parts) or is_temp_name(path.name):
            continue
        if path.is_symlink() or not path.is_file():
            continue
        _md5, sha = file_digests(path)
        files.append(LocalFile(rel.as_posix(), path, path.stat().st_size, sha))
    return files


def _check_published_versions(
    state: RepoState, store: Store, plan: PublishPlan, *, force: bool
) -> dict[str, meta.LoadedMetadata]:
    """The published top-level roles (those that parse), after the version checks."""
    conflicts: list[str] = []
    found: dict[str, meta.LoadedMetadata] = {}
    for role in ROLES:
        local = state.role(role)
        raw = store.read(f"{role}.json", META_LIMIT)
        published: int | None = None
        if raw is not None:
            try:
                found[role] = meta.parse(raw, role, f"{store.url}/{role}.json")
                published = found[role].version
            except CorruptRepositoryError as exc:
                conflicts.append(f"{exc.message} (published)")
        plan.versions[role] = {"local": local.version, "published": published}
        if published is None:
            continue
        if published > local.version:
            conflicts.append(
                f"published {role}.json is version {published}, this repository's is"
                f" {local.version}: publishing would move it backwards (agents that saw"
                f" v{published} refuse v{local.version})"
            )
        elif published == local.version and raw != local.raw:
            conflicts.append(
                f"published {role}.json v{published} differs from this repository's v"
                f"{local.version} (two copies signed the same version)"
            )
    _refuse_or_override(conflicts, plan, force=force)
    return found


def _verifies(root: Any, role: str, loaded: meta.LoadedMetadata) -> bool:
    try:
        meta.verify_signed_by(root, role, loaded, role)
    except CorruptRepositoryError:
        return False
    return True


def _root_order(
    state: RepoState, published: dict[str, meta.LoadedMetadata], plan: PublishPlan
) -> None:
    """Where a new root goes: first, unless that would break agents and last would not.

    First (the rule) is right when what is published now still verifies under the new root:
    an agent that fetched the new root early keeps reading the old files. A key rotation
    re-signs the new files with the old key as well, but the published files carry only the
    old one, which the new root revoked: there the new files verify under the old root, and
    the root goes last instead. When neither holds, no order avoids a window."""
    old_root = published.get("root")
    if old_root is None or old_root.version >= state.root.version:
        return
    new_root = state.root_signed
    others = [r for r in ("timestamp", "snapshot", "targets") if r in published]
    if all(_verifies(new_root, r, published[r]) for r in others):
        return
    if all(_verifies(old_root.md.signed, r, state.role(r)) for r in others):
        plan.root_last = True
        plan.notes.append(
            "the published files do not verify under the new root, the new ones verify under"
            " both: the new root goes last"
        )
        return
    plan.notes.append(
        "neither the published files verify under the new root nor the new files under the old"
        " one: agents polling during this publish may fail once and succeed on their next poll"
    )


def _refuse_or_override(conflicts: list[str], plan: PublishPlan, *, force: bool) -> None:
    if not conflicts:
        return
    if force:
        plan.overrides.extend(conflicts)
        return
    more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
    raise PublishRefused(
        f"{conflicts[0]}{more}; nothing was published",
        hint="publish from the up-to-date repository (or copy its metadata here);"
        " --force overrides this check",
    )


def _check_not_expired(state: RepoState, now: datetime, plan: PublishPlan, *, force: bool) -> None:
    conflicts = []
    for role in ROLES:
        expires = state.role(role).expires
        if expires <= now:
            conflicts.append(
                f"{role}.json expired {format_duration(now - expires)} ago: agents refuse it"
                f" (re-sign it first{', e.g. `updates timestamp`' if role == 'timestamp' else ''})"
            )
    _refuse_or_override(conflicts, plan, force=force)


def plan_publish(
    repo: UpdateRepository,
    state: RepoState,
    store: Store,
    *,
    now: datetime,
    force: bool = False,
    delete_stale: timedelta | None = None,
) -> PublishPlan:
    """What to upload and delete, after the checks that must pass before anything is written.

    Call with ``repo``'s lock held and ``store``'s session open."""
    plan = PublishPlan(store.url)
    _check_not_expired(state, now, plan, force=force)
    published = _check_published_versions(state, store, plan, force=force)
    _root_order(state, published, plan)
    remote = store.list()
    files = local_files(repo.repository)
    forks: list[str] = []
    for file in files:
        obj = remote.get(file.name)
        top_level = file.phase >= PHASES.index("root.json")
        if obj is None:
            plan.uploads.append(Upload(file, ABSENT if top_level else None, replaces=False))
            continue
        if _unchanged(store, obj, file):
            plan.unchanged.append(file.name)
            continue
        if _VERSIONED.fullmatch(file.name):
            forks.append(f"published {file.name} differs from this repository's")
        plan.uploads.append(Upload(file, obj.etag if top_level else None, replaces=True))
    _refuse_or_override(forks, plan, force=force)
    if delete_stale is not None:
        names = {f.name for f in files}
        for name, obj in sorted(remote.items()):
            if name in names or not is_repository_object(name):
                continue
            if (m := _VERSIONED.fullmatch(name)) and m.group(2) == "root":
                continue  # agents walk the whole root chain: every N.root.json stays
            # `now` is in whole seconds, a listed time may not be: an object written earlier in
            # this very second is age 0, not negative (so `--delete-stale 0s` deletes it).
            if max(now - obj.modified, timedelta(0)) < delete_stale:
                plan.kept_young.append(name)
            else:
                plan.deletes.append(name)
    return plan


def _unchanged(store: Store, obj: RemoteObject, file: LocalFile) -> bool:
    if obj.size != file.size:
        return False
    if file.name.startswith("targets/") and is_immutable(file.name):
        return True  # the name carries the content's hash, and uploads are atomic
    return store.same_content(obj, file.path, file.sha256)


ProgressHook = Callable[[Upload | str], None]


def execute(
    plan: PublishPlan,
    store: Store,
    policy: CachePolicy,
    *,
    jobs: int = 8,
    progress: ProgressHook | None = None,
) -> None:
    """Upload phase by phase (each phase complete before the next starts), then delete.

    A failure is re-raised as a :class:`StoreError` saying what agents see now."""
    done: list[object] = []

    def hook(item: Upload | str) -> None:
        done.append(item)
        if progress is not None:
            progress(item)

    try:
        for title, group in plan.phases():
            parallel = 1 if title == "root versions" else jobs  # the chain, oldest first
            _run([_task(store.put, policy, u, hook) for u in group], parallel)
    except StoreError as exc:
        uploaded = sum(isinstance(d, Upload) for d in done)
        state = (
            "nothing was changed"
            if not uploaded
            else f"{uploaded} of {len(plan.uploads)} files were uploaded before it, but not the"
            " switch (timestamp.json): agents still see the previous repository"
        )
        raise type(exc)(f"{exc.message}; {state}", hint="run `updates publish` again") from None
    try:
        _run([_task(store.delete, None, n, hook) for n in plan.deletes], jobs)
    except StoreError as exc:
        raise type(exc)(
            f"{exc.message}; the repository is published, some stale objects were not deleted",
            hint="run `updates publish --delete-stale` again",
        ) from None


def _task(
    action: Callable[..., None], policy: CachePolicy | None, item: Upload | str, hook: ProgressHook
) -> Callable[[], None]:
    def run() -> None:
        if isinstance(item, Upload) and policy is not None:
            file = item.file
            action(
                file.name,
                file.path,
                sha256=file.sha256,
                content_type=file.content_type,
                cache_control=policy.header(file.name),
                expect=item.expect,
            )
        else:
            action(item)
        hook(item)

    return run


def _run(tasks: list[Callable[[], None]], jobs: int) -> None:
    """Run ``tasks``, ``jobs`` at a time; the first failure stops the rest and is raised."""
    if not tasks:
        return
    if jobs <= 1 or len(tasks) == 1:
        for task in tasks:
            task()
        return
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(tasks)))
    futures = [pool.submit(task) for task in tasks]
    try:
        for future in futures:
            future.result()
    finally:
        # On a failure or a signal, writes not started never start: the phase stays
        # incomplete, so the next phase -- and the switch -- is never reached.
        pool.shutdown(wait=True, cancel_futures=True)
