"""The root signing ceremony: the next root version is staged unsigned, collects signatures
from its holders one at a time (on their own machines, keys in files or on tokens), and is
published once it is signed by the threshold of the current root *and* of itself (TUF 5.3.4:
what a client walking the root chain checks).

Only ``staged/root.json`` travels between holders. Each step holds the repository lock, and
the staged file is replaced atomically, so an interrupted step leaves the previous file.
``publish`` goes through the same journal as every command (:mod:`packager.repo.transaction`):
when the new root changes the keys of targets, snapshot or timestamp, those roles are
re-signed with the keys it lists (and the old ones still held, for agents not yet on the new
root), else only ``N.root.json`` and ``root.json`` are written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root

from packager.errors import RepositoryStateError, UsageError
from packager.repo import metadata as meta
from packager.repo.fsutil import atomic_write, make_dirs
from packager.repo.repository import ROLES, PublishResult, UpdateRepository
from packager.repo.signing import (
    SigningKey,
    open_key_ref,
    read_public_key,
    role_key_ids,
)
from packager.repo.transaction import Change, Transaction

STAGED_NAME = "root.json"


@dataclass
class ThresholdCount:
    """Signatures of the staged root that count for one root version's root role."""

    version: int
    threshold: int
    signed: list[str]  # key IDs with a valid signature
    missing: list[str]  # key IDs that could still sign

    @property
    def met(self) -> bool:
        return len(self.signed) >= self.threshold

    def line(self, whose: str) -> str:
        state = "met" if self.met else f"{self.threshold - len(self.signed)} more needed"
        return f"{whose} (root v{self.version}): {len(self.signed)} of {self.threshold} ({state})"


@dataclass
class CeremonyStatus:
    current: int
    staged: int
    changes: list[str]
    old: ThresholdCount
    new: ThresholdCount
    expires: str
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.old.met and self.new.met

    def to_json(self) -> dict[str, Any]:
        return {
            "current_version": self.current,
            "staged_version": self.staged,
            "changes": self.changes,
            "expires": self.expires,
            "current_root": _count_json(self.old),
            "staged_root": _count_json(self.new),
            "ready": self.ready,
        }

    def text(self) -> str:
        lines = [f"staged root v{self.staged} (current v{self.current}), expires {self.expires}"]
        lines += [f"  {change}" for change in self.changes] or ["  no key or threshold change"]
        lines += [self.old.line("signatures for the current root"), self.new.line("for itself")]
        if self.ready:
            lines.append("ready: `updates root publish` publishes it")
        else:
            keys = sorted(
                set(self.old.missing if not self.old.met else [])
                | set(self.new.missing if not self.new.met else [])
            )
            lines.append("can still sign: " + ", ".join(k[:16] for k in keys))
        return "\n".join(lines)


def _count_json(count: ThresholdCount) -> dict[str, Any]:
    return {
        "version": count.version,
        "threshold": count.threshold,
        "signed": count.signed,
        "missing": count.missing,
        "met": count.met,
    }


def _count(delegator: Root, staged: Metadata[Root], version: int) -> ThresholdCount:
    role = delegator.roles["root"]
    payload = meta.canonical(staged.signed.to_dict())
    signed = []
    for keyid in role.keyids:
        sig = staged.signatures.get(keyid)
        key = delegator.keys.get(keyid)
        if sig is None or key is None:
            continue
        try:
            key.verify_signature(sig, payload)
        except Exception:  # noqa: S112 - a bad signature simply does not count
            continue
        signed.append(keyid)
    missing = [k for k in role.keyids if k not in signed]
    return ThresholdCount(version, role.threshold, signed, missing)


def describe_changes(old: Root, new: Root) -> list[str]:
    """What a holder approves: keys added and revoked per role, thresholds, expiry."""
    out: list[str] = []
    for role in ROLES:
        before, after = set(old.roles[role].keyids), set(new.roles[role].keyids)
        out += [f"{role}: add key {k[:16]} ({new.keys[k].keytype})" for k in sorted(after - before)]
        out += [f"{role}: revoke key {k[:16]}" for k in sorted(before - after)]
        if old.roles[role].threshold != new.roles[role].threshold:
            out.append(
                f"{role}: threshold {old.roles[role].threshold} -> {new.roles[role].threshold}"
            )
    if bool(old.consistent_snapshot) != bool(new.consistent_snapshot):
        out.append(f"consistent_snapshot -> {str(bool(new.consistent_snapshot)).lower()}")
    return out


def _expand(root: Root, role: str, prefix: str) -> str:
    matches = [k for k in root.roles[role].keyids if k.startswith(prefix.lower())]
    if len(prefix) < 8 or len(matches) != 1:
        listed = ", ".join(k[:16] for k in root.roles[role].keyids)
        raise UsageError(
            f"{prefix!r} names no single {role} key (listed: {listed})",
            hint="give at least 8 characters of the key ID",
        )
    return matches[0]


class Ceremony:
    def __init__(
        self, repo: UpdateRepository, *, now: Callable[[], datetime] | None = None
    ) -> None:
        self.repo = repo
        self._now = now or repo._now
        self.path = repo.staged / STAGED_NAME

    # -- reading ---------------------------------------------------------------------------
    def staged(self, current: Root) -> Metadata[Root]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise RepositoryStateError(
                f"no root is staged in {self.path}",
                hint="start with `updates root stage`",
            ) from None
        loaded = meta.parse(raw, "root", str(self.path))
        md: Metadata[Root] = loaded.md
        if md.signed.version != current.version + 1:
            raise RepositoryStateError(
                f"{self.path} is root v{md.signed.version}, the current root is"
                f" v{current.version}: it was published or overtaken",
                hint="stage a new one with `updates root stage --replace`",
            )
        return md

    def status(self) -> CeremonyStatus:
        state = self.repo.load()
        current = state.root_signed
        staged = self.staged(current)
        return self._status(current, staged)

    def _status(self, current: Root, staged: Metadata[Root]) -> CeremonyStatus:
        return CeremonyStatus(
            current=current.version,
            staged=staged.signed.version,
            changes=describe_changes(current, staged.signed),
            old=_count(current, staged, current.version),
            new=_count(staged.signed, staged, staged.signed.version),
            expires=meta.utc_z(staged.signed.expires),
        )

    # -- steps -----------------------------------------------------------------------------
    def stage(
        self,
        *,
        add: Sequence[tuple[str, Path]] = (),
        revoke: Sequence[tuple[str, str]] = (),
        thresholds: Sequence[tuple[str, int]] = (),
        expiration: timedelta | None = None,
        replace: bool = False,
    ) -> CeremonyStatus:
        """Write the next root version, unsigned, to ``staged/root.json``."""
        with self.repo.locked():
            state = self.repo.load()
            if self.path.exists() and not replace:
                pending: Metadata[Root] | None = None
                with contextlib.suppress(RepositoryStateError):  # one overtaken is replaced
                    pending = self.staged(state.root_signed)
                if pending is not None:
                    raise RepositoryStateError(
                        f"root v{pending.signed.version} is already staged in {self.path}",
                        hint="sign and publish it, or pass --replace to start over",
                    )
            root: Root = meta.parse(state.root.raw, "root", "root.json").md.signed
            for role, keyid in revoke:
                _check_role(role)
                root.revoke_key(_expand(root, role, keyid), role)
            for role, public in add:
                _check_role(role)
                keyid, key = read_public_key(public, role)
                if keyid in root.roles[role].keyids:
                    raise UsageError(f"{public}: key {keyid[:16]} is already a {role} key")
                root.add_key(key, role)
            for role, n in thresholds:
                _check_role(role)
                root.roles[role].threshold = n
            for role in ROLES:
                have, need = len(root.roles[role].keyids), root.roles[role].threshold
                if need < 1 or need > have:
                    raise UsageError(
                        f"{role} would need {need} signatures from {have} keys",
                        hint="a threshold is at least 1 and at most the number of keys",
                    )
            root.version += 1
            root.expires = self._now() + (expiration or self.repo.expirations.root)
            root.spec_version = meta.SPEC_VERSION
            md = Metadata(root)
            self._write(md)
            return self._status(state.root_signed, md)

    def sign(
        self,
        key_ref: str,
        *,
        confirm: Callable[[CeremonyStatus], bool],
    ) -> tuple[list[str], CeremonyStatus]:
        """Add this holder's signatures (every key of ``key_ref`` that is a root key of the
        current or of the staged root); ``confirm`` sees the changes first."""
        with self.repo.locked():
            state = self.repo.load()
            current = state.root_signed
            staged = self.staged(current)
            keys = open_key_ref(key_ref, "root", self.repo.passphrases)
            plan: list[tuple[SigningKey, str]] = []
            for key in keys:
                ids = role_key_ids(current, "root", key) + role_key_ids(staged.signed, "root", key)
                plan += [(key, keyid) for keyid in dict.fromkeys(ids)]
            if not plan:
                raise UsageError(
                    f"{_shown(key_ref)} holds no root key of root v{current.version} or of the"
                    f" staged v{staged.signed.version}",
                    hint="sign with a root holder's key file or token",
                )
            if not confirm(self._status(current, staged)):
                raise UsageError("not signed: the holder did not confirm")
            payload = meta.canonical(staged.signed.to_dict())
            for key, keyid in plan:
                staged.signatures[keyid] = key.signer(keyid).sign(payload)
            self._write(staged)
            return [keyid for _key, keyid in plan], self._status(current, staged)

    def publish(self) -> PublishResult:
        """Publish the staged root once both thresholds are met; re-sign what its key changes
        require. Otherwise refuse with what is missing, changing nothing."""
        repo = self.repo
        with repo.locked():
            state = repo.load()
            current = state.root_signed
            staged = self.staged(current)
            status = self._status(current, staged)
            if not status.ready:
                short = [c for c in (status.old, status.new) if not c.met]
                missing = "; ".join(
                    f"root v{c.version} needs {c.threshold}, has {len(c.signed)}" for c in short
                )
                raise RepositoryStateError(
                    f"staged root v{status.staged} is not signed enough ({missing});"
                    " nothing was published",
                    hint="more holders run `updates root sign`; `updates root status` lists them",
                )
            new_root = staged.signed
            changed = [
                r
                for r in ("targets", "snapshot", "timestamp")
                if set(current.roles[r].keyids) != set(new_root.roles[r].keyids)
                or current.roles[r].threshold != new_root.roles[r].threshold
            ]
            data = meta.serialize(staged)
            versioned = f"{new_root.version}.root.json"
            if not changed:
                txn = Transaction(repo.path)
                txn.begin()
                txn.stage_bytes(versioned, data)
                txn.stage_bytes("root.json", data)
                txn.commit(Change("root publish", writes=[versioned, "root.json"]))
                versions = {r: state.role(r).version for r in ROLES}
                versions["root"] = new_root.version
            else:
                versions = repo.resign_under(state, staged)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return PublishResult(versions=versions)

    def _write(self, md: Metadata[Root]) -> None:
        make_dirs(self.repo.staged)
        atomic_write(self.path, json.dumps(md.to_dict(), indent=1).encode() + b"\n")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint=f"choose one of {', '.join(ROLES)}")


def _shown(ref: str) -> str:
    return ref.split("?", 1)[0]
