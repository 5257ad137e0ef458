"""``updates status``: versions, expiries and keys per role, for people, cron and monitoring."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tuf.api.metadata import Root

from packager.repo import metadata as meta
from packager.repo.durations import format_duration
from packager.repo.repository import ROLES, UpdateRepository


class RoleSet(Protocol):
    """The four top-level roles, read and verified: a local RepoState or a published one."""

    def role(self, name: str) -> meta.LoadedMetadata: ...

    @property
    def root_signed(self) -> Root: ...

    @property
    def consistent_snapshot(self) -> bool: ...


@dataclass
class RoleStatus:
    role: str
    version: int
    expires: str
    expires_in_seconds: int
    state: str  # ok | expiring | expired
    threshold: int
    key_ids: list[str]
    non_utc_expires: str | None = None


@dataclass
class RepoStatus:
    path: str
    consistent_snapshot: bool
    targets: int
    roles: list[RoleStatus]
    warn_seconds: int
    problems: list[str] = field(default_factory=list)
    target_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth a line that are no problem

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def repository_status(
    repo: UpdateRepository, warn: timedelta, now: datetime, *, with_targets: bool = False
) -> RepoStatus:
    """The status of the local repository at ``repo.path`` (read and verified)."""
    state = repo.load()
    extra = []
    if repo.pending_journal():
        extra.append("an interrupted command left a journal; the next command completes it")
    return roles_status(state, str(repo.path), warn, now, with_targets=with_targets, problems=extra)


def roles_status(
    state: RoleSet,
    label: str,
    warn: timedelta,
    now: datetime,
    *,
    with_targets: bool = False,
    problems: Iterable[str] = (),
    notes: Iterable[str] = (),
) -> RepoStatus:
    """Versions, expiries and keys of verified roles; ``label`` names where they come from
    (a path or a URL); ``problems`` found by the caller are listed after the expiry ones."""
    root = state.root_signed
    roles: list[RoleStatus] = []
    found: list[str] = []
    for role in ROLES:
        loaded = state.role(role)
        left = loaded.expires - now
        if left <= timedelta(0):
            verdict = "expired"
            found.append(f"{role}.json expired {format_duration(-left)} ago")
        elif left <= warn:
            verdict = "expiring"
            found.append(f"{role}.json expires in {format_duration(left)}")
        else:
            verdict = "ok"
        if loaded.original_expires:
            found.append(
                f"{role}.json has a non-UTC expires ({loaded.original_expires}) that python-tuf"
                f" clients reject; re-sign it ({_fix_for(role)})"
            )
        roles.append(
            RoleStatus(
                role=role,
                version=loaded.version,
                expires=meta.utc_z(loaded.expires),
                expires_in_seconds=int(left.total_seconds()),
                state=verdict,
                threshold=root.roles[role].threshold,
                key_ids=list(root.roles[role].keyids),
                non_utc_expires=loaded.original_expires,
            )
        )
    found.extend(problems)
    targets = state.role("targets").md.signed.targets
    return RepoStatus(
        path=label,
        consistent_snapshot=state.consistent_snapshot,
        targets=len(targets),
        roles=roles,
        warn_seconds=int(warn.total_seconds()),
        problems=found,
        target_paths=sorted(targets) if with_targets else [],
        notes=list(notes),
    )


def _fix_for(role: str) -> str:
    return {
        "timestamp": "`orbit-packager updates timestamp`",
        "snapshot": "`orbit-packager updates rotate snapshot` or any `add`",
        "targets": "any `orbit-packager updates add`/`remove`",
        "root": "`orbit-packager updates rotate root`",
    }[role]


def render_text(status: RepoStatus) -> str:
    lines = [
        f"repository: {status.path} (consistent snapshots: "
        f"{'on' if status.consistent_snapshot else 'off'}, {status.targets} targets)",
        f"{'ROLE':<10} {'VERSION':>7}  {'EXPIRES (UTC)':<20}  {'LEFT':<10}  {'STATE':<8}  KEY IDS",
    ]
    for r in status.roles:
        left = format_duration(timedelta(seconds=r.expires_in_seconds))
        keys = ", ".join(k[:16] for k in r.key_ids)
        lines.append(
            f"{r.role:<10} {r.version:>7}  {r.expires:<20}  {left:<10}  {r.state:<8}  {keys}"
        )
    lines.extend(f"  {path}" for path in status.target_paths)
    lines.extend(f"note: {n}" for n in status.notes)
    lines.extend(f"warning: {p}" for p in status.problems)
    return "\n".join(lines)
