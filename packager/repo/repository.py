"""Fleet's TUF update repository: the ``updates`` commands, compatible with ``fleetctl updates``.

Layout (go-tuf's FileSystemStore, as fleetctl makes it)::

    <path>/keys/{root,targets,snapshot,timestamp}.json   encrypted private keys (0600)
    <path>/repository/                                  the tree to publish
    <path>/staged/                                      fleetctl's staging area (kept empty)

Each mutating command takes the repository lock, recovers an interrupted earlier command,
decrypts every key it needs before changing anything, builds the new metadata in memory, checks
it verifies, and publishes it through a :class:`~packager.repo.transaction.Transaction`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from packager.errors import (
    CorruptRepositoryError,
    KeyFileError,
    PackagerError,
    PassphraseError,
    RepositoryStateError,
    UsageError,
)
from packager.repo import metadata as meta
from packager.repo.durations import format_duration
from packager.repo.fsutil import Pending, exclusive_lock, link_or_copy, make_dirs
from packager.repo.keys import KeyStore, RoleKey, decrypt_keys, encrypt_keys, is_encrypted
from packager.repo.naming import check_component, check_name, check_target_path, target_paths
from packager.repo.passphrase import Passphrase, PassphraseSource
from packager.repo.signing import SigningKey, identity_of, open_key_ref, signers_for
from packager.repo.transaction import TXN_DIR_NAME, Change, Transaction

ROLES = meta.ROLES
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
LOCK_NAME = ".orbit-packager.lock"


@dataclass(frozen=True)
class Expirations:
    """How long newly signed metadata stays valid; defaults are fleetctl's."""

    root: timedelta = timedelta(hours=87600)
    targets: timedelta = timedelta(hours=26280)
    snapshot: timedelta = timedelta(hours=26280)
    timestamp: timedelta = timedelta(hours=336)

    def of(self, role: str) -> timedelta:
        return getattr(self, role)  # type: ignore[no-any-return]


@dataclass
class RepoState:
    """The four top-level roles as published in ``repository/``."""

    root: meta.LoadedMetadata
    targets: meta.LoadedMetadata
    snapshot: meta.LoadedMetadata
    timestamp: meta.LoadedMetadata

    def role(self, name: str) -> meta.LoadedMetadata:
        return getattr(self, name)  # type: ignore[no-any-return]

    @property
    def root_signed(self) -> Root:
        return self.root.md.signed  # type: ignore[no-any-return]

    @property
    def consistent_snapshot(self) -> bool:
        return bool(self.root_signed.consistent_snapshot)


@dataclass
class InitResult:
    key_ids: dict[str, str]
    consistent_snapshot: bool


@dataclass
class PublishResult:
    """What a command changed: new role versions and target paths added or removed."""

    versions: dict[str, int]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    new_key_ids: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # False when the command found nothing to do and changed no file (``timestamp`` with
    # ``if_expiring_within``); ``versions`` then holds the current, unchanged versions.
    signed: bool = True
    expires: dict[str, datetime] = field(default_factory=dict)  # per role, after the command
    reason: str = ""  # why it signed, or why not (``timestamp`` with ``if_expiring_within``)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class UpdateRepository:
    """One repository directory (``--path``)."""

    def __init__(
        self,
        path: Path,
        passphrases: PassphraseSource | None = None,
        expirations: Expirations | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.path = Path(path)
        self.keys = KeyStore(self.path / "keys")
        self.repository = self.path / "repository"
        self.staged = self.path / "staged"
        self.passphrases = passphrases or PassphraseSource()
        self.expirations = expirations or Expirations()
        self._now = now
        self.recovery_notes: list[str] = []
        # Keys named on the command line (--root-key, --targets-key...): tokens or holders'
        # files, opened when a command first needs them (a no-op `timestamp` opens none).
        self.key_refs: dict[str, list[str]] = {}
        self._opened: dict[str, list[SigningKey]] = {}
        # Key files decrypted (each once per command), and decryptions started ahead of need.
        self._decrypted: dict[str, list[RoleKey]] = {}
        self._ahead: dict[str, tuple[Passphrase, Pending[list[RoleKey]]]] = {}
        self._ahead_error: tuple[str, PackagerError] | None = None

    # -- state -------------------------------------------------------------------------------
    def is_initialized(self) -> bool:
        return (self.repository / "root.json").exists() or (self.staged / "root.json").exists()

    def pending_journal(self) -> bool:
        return (self.path / TXN_DIR_NAME).exists()

    def load(self) -> RepoState:
        """Read and verify ``repository/``: root self-signed, every role signed per root."""
        if not self.is_initialized():
            raise RepositoryStateError(
                f"repo not initialized: {self.path}",
                hint="run `orbit-packager updates init` or pass --path",
            )
        staged = sorted(
            p.name
            for p in (self.staged.glob("*.json") if self.staged.is_dir() else [])
            if p.name != "root.json"  # a root signing ceremony in progress (ceremony.py)
        )
        if staged:
            raise RepositoryStateError(
                f"{self.staged} holds uncommitted metadata ({', '.join(staged)}) from another tool",
                hint="commit it with that tool or move it away",
            )
        loaded: dict[str, meta.LoadedMetadata] = {}
        for role in ROLES:
            file = self.repository / f"{role}.json"
            try:
                raw = file.read_bytes()
            except FileNotFoundError:
                raise CorruptRepositoryError(f"{file} is missing") from None
            loaded[role] = meta.parse(raw, role, str(file))
        state = RepoState(**loaded)
        for role in ROLES:
            meta.verify_signed_by(
                state.root_signed, role, state.role(role), str(self.repository / f"{role}.json")
            )
        return state

    # -- keys --------------------------------------------------------------------------------
    def _decrypt_ahead(self, roles: Sequence[str]) -> None:
        """Start decrypting the key files of ``roles`` all at once, in threads.

        Each costs one scrypt (N=2^15: about 0.1 s of CPU), which releases the GIL, so on
        several cores the derivations overlap each other and whatever the command does
        meanwhile (``add`` copies and hashes its target). The passphrases are all asked for
        before any result is used, in role order -- the order the command opens the keys in --
        each derivation starting as soon as its passphrase is known; the results are taken in
        that order by :meth:`_role_keys`, so a wrong passphrase reads as when each key was
        opened in turn. Stops at the first role whose keys are named on the command line
        (opened where they are needed, in their order), whose file cannot be read, or whose
        passphrase would have to be typed: a typed one is checked before the next is asked for
        (a typo is asked again at once, as fleetctl does), so prompts keep today's order; or at
        a passphrase error, which is raised when the command reaches that role.
        """
        for role in roles:
            if role in self._decrypted or role in self._ahead:
                continue
            if self.key_refs.get(role) or self._ahead_error is not None:
                return
            try:
                content = self.keys.read_raw(role)
            except KeyFileError:
                return  # raised again, in its turn, when the command opens this role's keys
            if not is_encrypted(content):
                continue  # no scrypt: opened when needed
            if not self.passphrases.known(role):
                return  # typed: asked, derived and checked in turn by _role_keys
            try:
                phrase = self.passphrases.get(role)
            except PackagerError as exc:  # asking again could prompt again: keep the error
                self._ahead_error = (role, exc)
                return
            work = Pending(self.keys.open, role, content, phrase.value, source=phrase.source)
            self._ahead[role] = (phrase, work)

    def _role_keys(self, role: str) -> list[RoleKey]:
        if role in self._decrypted:
            return list(self._decrypted[role])
        content = self.keys.read_raw(role)
        if not is_encrypted(content):
            try:
                return decrypt_keys(content, "")
            except (ValueError, KeyError, TypeError) as exc:
                raise KeyFileError(
                    f"{self.keys.path(role)} is not a valid key file: {exc}"
                ) from None
        if self._ahead_error is not None and self._ahead_error[0] == role:
            error = self._ahead_error[1]
            self._ahead_error = None
            raise error
        ahead = self._ahead.pop(role, None)
        attempts = 0
        while True:
            work: Pending[list[RoleKey]] | None = None
            if ahead is not None:
                (passphrase, work), ahead = ahead, None
            else:
                passphrase = self.passphrases.get(role)
            try:
                if work is not None:
                    keys = work.result()
                else:
                    keys = self.keys.open(role, content, passphrase.value, source=passphrase.source)
            except PassphraseError:
                attempts += 1
                if not passphrase.interactive or attempts >= 3:
                    raise
                print(f"Failed to decrypt {role} key. Try again.", flush=True)
                self.passphrases.forget(role)
                continue
            self._decrypted[role] = keys
            return list(keys)

    def root_on_token(self) -> bool:
        """No root key file: the root keys are on tokens or with their holders."""
        return not self.keys.path("root").exists() and self.keys.directory.is_dir()

    def _held_keys(self, role: str) -> list[SigningKey]:
        """The keys this command signs ``role`` with: those named on the command line (for root,
        together with keys/root.json when there is one), else the role's key file."""
        if role not in self._opened:
            self._opened[role] = [
                key
                for ref in self.key_refs.get(role, [])
                for key in open_key_ref(ref, role, self.passphrases)
            ]
        given = self._opened[role]
        if role == "root":
            if self.keys.path("root").exists():
                return [*self._role_keys("root"), *given]
            if not given:
                raise KeyFileError(
                    f"no root key here: {self.keys.path('root')} does not exist",
                    hint="name the root keys with --root-key URI|KEYFILE (repeatable)",
                )
            return list(given)
        if given:
            return list(given)
        return list(self._role_keys(role))

    def _encode_like_existing(self, role: str, keys: list[RoleKey]) -> Pending[bytes]:
        """Re-encode a role's key file in the form it had (encrypted with the same passphrase),
        in a thread: its scrypt overlaps the signing that follows."""
        if not is_encrypted(self.keys.read_raw(role)):
            return Pending(encrypt_keys, keys, None)
        return Pending(encrypt_keys, keys, self.passphrases.get(role).value)

    def _signers_for(self, root: Root, role: str, keys: Sequence[SigningKey]) -> list[Signer]:
        """Signers for the keys we hold that ``root`` lists for ``role``, under root's key IDs."""
        signers = signers_for(root, role, keys)
        if len(signers) < root.roles[role].threshold:
            listed = ", ".join(k[:12] for k in root.roles[role].keyids) or "none"
            have = f" ({len(signers)} of {root.roles[role].threshold} needed)" if signers else ""
            raise KeyFileError(
                f"{self.keys.path(role)} holds no current {role} key{have} (root.json lists"
                f" {listed})",
                hint="use the key file that belongs to this repository",
            )
        return signers

    # -- commands ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository lock (after completing an interrupted command): for readers
        such as ``publish`` that must see one committed state from start to end."""
        with self._locked():
            yield

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        make_dirs(self.path)  # never group/other-writable, whatever the umask
        with exclusive_lock(self.path / LOCK_NAME, str(self.path)):
            txn = Transaction(self.path)
            note = txn.recover()
            if note:
                self.recovery_notes.append(note)
            try:
                yield
            except BaseException:
                # Undo a half-prepared change now (or finish a half-published one); if even
                # that fails, the journal stays and the next command recovers it.
                with contextlib.suppress(Exception):
                    txn.recover()
                raise
            finally:
                # Decrypted keys live for one command: the next may follow a rotation that
                # changed the key files (one UpdateRepository can run several commands).
                self._decrypted.clear()
                self._ahead.clear()
                self._ahead_error = None

    def init(
        self,
        *,
        consistent_snapshot: bool = False,
        root_keys: Sequence[SigningKey] = (),
        root_threshold: int = 1,
    ) -> InitResult:
        """Create keys, root v1 and empty targets, snapshot and timestamp (all version 1).

        With ``root_keys`` (tokens or holders' key files) no root key is generated and no root
        key file is written; root v1 is signed by all of them."""
        if root_threshold < 1 or root_threshold > max(1, len(root_keys)):
            raise UsageError(
                f"--root-threshold {root_threshold} needs at least {root_threshold} root keys"
                f" (--root-key given: {len(root_keys)})",
                hint="name each root key with --root-key URI|KEYFILE",
            )
        with self._locked():
            if self.is_initialized():
                raise RepositoryStateError(f"repo already initialized: {self.path}")
            if self.keys.directory.exists():
                raise RepositoryStateError(
                    f"keys directory already exists: {self.keys.directory}",
                    hint="move it away or init another --path",
                )
            generated = [r for r in ROLES if r != "root" or not root_keys]
            # Ask for every passphrase (twice, interactively) before the slow key generation.
            phrases = {role: self.passphrases.get(role, confirm=True) for role in generated}
            now = self._now()
            keys = {role: RoleKey.generate() for role in generated}
            # The four scrypt derivations at once, in threads, while the metadata is signed.
            sealing = {r: Pending(encrypt_keys, [keys[r]], phrases[r].value) for r in generated}
            root = Root(
                version=1,
                spec_version=meta.SPEC_VERSION,
                expires=now + self.expirations.root,
                consistent_snapshot=consistent_snapshot,
            )
            for role in generated:
                root.add_key(keys[role].sslib_key(), role)
            signers: dict[str, list[Signer]] = {role: [keys[role].signer()] for role in generated}
            if root_keys:
                for key in root_keys:
                    if key.gotuf_keyid in root.roles["root"].keyids:
                        raise UsageError(f"root key {key.gotuf_keyid[:16]} is given twice")
                    root.add_key(key.sslib_key(), "root")
                root.roles["root"].threshold = root_threshold
                signers["root"] = [key.signer() for key in root_keys]
            targets = Metadata(
                Targets(
                    version=1,
                    spec_version=meta.SPEC_VERSION,
                    expires=now + self.expirations.targets,
                )
            )
            state_new = self._build(
                Metadata(root), targets, signers, now, bump=False, root_changed=True
            )
            key_files = {r: sealing[r].result() for r in generated}
            self._publish("init", state_new, [], [], key_files, root_changed=True, first=True)
            make_dirs(self.staged / "targets")
            key_ids = {r: keys[r].gotuf_keyid for r in generated}
            if root_keys:
                key_ids["root"] = ", ".join(k.gotuf_keyid for k in root_keys)
            return InitResult(
                key_ids={r: key_ids[r] for r in ROLES},
                consistent_snapshot=consistent_snapshot,
            )

    def add(
        self,
        target: Path,
        *,
        name: str,
        platform: str,
        version: str,
        tags: list[str] | None = None,
    ) -> PublishResult:
        """Publish ``target`` under every channel in ``[version, *tags]``."""
        check_name(name)
        check_component(platform, "--platform")
        check_component(version, "--version")
        channels = [version]
        for tag in tags or []:
            check_component(tag, "--tag")
            if tag not in channels:
                channels.append(tag)
        target = Path(target)
        if not target.is_file():
            raise UsageError(f"target file {target} does not exist or is not a regular file")
        paths = target_paths(name, platform, channels, target.name)
        with self._locked():
            state = self.load()
            self._refuse_expired_root(state)
            # The keys are derived in threads while the target is copied into the private
            # journal; a wrong passphrase then discards the journal (_locked), so nothing
            # visible changes before every key is decrypted.
            self._decrypt_ahead(ONLINE_ROLES)
            txn = Transaction(self.path)
            txn.begin()
            # One pass over the bytes: read once, hashed (sha512, as fleetctl lists them) and
            # copied together. Whether the channels may share one inode depends on the layout:
            # go-tuf (so fleetctl) rewrites a published target file in place (os.Create) when
            # it publishes that path again. Without consistent snapshots it does so at the
            # channel's fixed name (a new stable/orbit), and a hard link would carry the new
            # bytes into 1.30.0/orbit too: there every channel gets its own file (a reflink
            # where the file system can). With consistent snapshots go-tuf writes only
            # hash-prefixed names, whose bytes the name fixes, and we replace files only by
            # rename: the channels and their hash-prefixed names are hard links to one inode.
            cs = state.consistent_snapshot
            staged = [f"targets/{p}" for p in paths]
            length, digest = txn.stage_copies(staged[:1] if cs else staged, target)
            if cs:
                first = txn.staged_path(staged[0])
                for path in staged[1:]:
                    link_or_copy(first, txn.staged_path(path))
            signers = self._online_signers(state.root_signed)
            targets_md: Metadata[Targets] = state.targets.md
            before = self._target_files(targets_md.signed, state.consistent_snapshot)
            for path in paths:
                targets_md.signed.targets[path] = TargetFile(
                    length,
                    {meta.HASH_ALGORITHM: digest},
                    path,
                    {"custom": {"version": version}},
                )
            return self._change("add", state, targets_md, signers, txn, before, added=paths)

    def remove(self, selectors: list[str]) -> PublishResult:
        """Remove targets by exact path, or every file of a NAME/PLATFORM/CHANNEL directory."""
        if not selectors:
            raise UsageError("name at least one target path or NAME/PLATFORM/CHANNEL to remove")
        wanted = [check_target_path(s) for s in selectors]
        with self._locked():
            state = self.load()
            self._refuse_expired_root(state)
            targets_md: Metadata[Targets] = state.targets.md
            existing = targets_md.signed.targets
            removed: list[str] = []
            for selector in wanted:
                matches = [selector] if selector in existing else []
                if not matches:
                    prefix = selector + "/"
                    matches = [
                        p for p in existing if p.startswith(prefix) and "/" not in p[len(prefix) :]
                    ]
                if not matches:
                    raise UsageError(
                        f"no target matches {selector!r}",
                        hint="see the target paths with `orbit-packager updates status --targets`",
                    )
                removed.extend(m for m in matches if m not in removed)
            signers = self._online_signers(state.root_signed)
            txn = Transaction(self.path)
            txn.begin()
            before = self._target_files(targets_md.signed, state.consistent_snapshot)
            for path in removed:
                del targets_md.signed.targets[path]
            return self._change("remove", state, targets_md, signers, txn, before, removed=removed)

    def timestamp(self, *, if_expiring_within: timedelta | None = None) -> PublishResult:
        """Re-sign ``timestamp.json`` only (needs only the timestamp key).

        With ``if_expiring_within``, re-sign only when timestamp.json expires within that long
        from now, has expired, has a non-UTC ``expires``, or does not name the published
        snapshot.json (version, length, hashes); otherwise change nothing and decrypt no key
        (``signed`` is False in the result). Decided under the repository lock.
        """
        with self._locked():
            state = self.load()
            self._refuse_expired_root(state)
            root = state.root_signed
            reason = ""
            if if_expiring_within is not None:
                due, reason = self._timestamp_due(state, if_expiring_within, self._now())
                if not due:
                    return PublishResult(
                        versions={"timestamp": state.timestamp.version},
                        signed=False,
                        expires={"timestamp": state.timestamp.expires},
                        reason=reason,
                    )
            signers = self._signers_for(root, "timestamp", self._held_keys("timestamp"))
            now = self._now()
            ts_md: Metadata[Timestamp] = state.timestamp.md
            ts = ts_md.signed
            ts.version += 1
            ts.expires = now + self.expirations.timestamp
            ts.spec_version = meta.SPEC_VERSION
            ts.snapshot_meta = MetaFile(
                version=state.snapshot.version,
                length=len(state.snapshot.raw),
                hashes=meta.file_hash(state.snapshot.raw),
            )
            meta.sign(ts_md, signers)
            new = {"timestamp": meta.serialize(ts_md)}
            self._check_new(root, {"timestamp": ts_md})
            txn = Transaction(self.path)
            txn.begin()
            txn.stage_bytes("timestamp.json", new["timestamp"])
            txn.commit(Change("timestamp", writes=["timestamp.json"]))
            return PublishResult(
                versions={"timestamp": ts.version},
                expires={"timestamp": ts.expires},
                reason=reason,
            )

    @staticmethod
    def _timestamp_due(state: RepoState, window: timedelta, now: datetime) -> tuple[bool, str]:
        """Whether timestamp.json must be re-signed now, and why (or why not), in words."""
        loaded = state.timestamp
        ts: Timestamp = loaded.md.signed
        name = f"timestamp.json v{loaded.version}"
        snap = ts.snapshot_meta
        if snap.version != state.snapshot.version:
            return True, (
                f"snapshot.json is v{state.snapshot.version} but {name} names v{snap.version}"
            )
        try:
            snap.verify_length_and_hashes(state.snapshot.raw)
        except LengthOrHashMismatchError:
            return True, f"snapshot.json differs from the length or hashes {name} records"
        if loaded.original_expires:
            return True, f"{name} has a non-UTC expires ({loaded.original_expires})"
        left = loaded.expires - now
        if left <= timedelta(0):
            return True, f"{name} expired {format_duration(-left)} ago"
        return left <= window, f"{name} expires in {format_duration(left)}"

    def rotate(self, role: str) -> PublishResult:
        """Replace ``role``'s key: revoke the old, add a new one, re-sign every role.

        Works on an expired root too: the old root's keys still sign the new root, which is
        all a client walking the root chain checks of an intermediate root.
        """
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}", hint=f"choose one of {', '.join(ROLES)}")
        if role == "root" and self.root_on_token():
            raise UsageError(
                "the root keys are not in keys/ (a token or holders' files): a new root key is"
                " not generated into a file",
                hint="change root keys with `updates root stage --add-key root PUB.json"
                " --revoke-key root KEYID`, then `root sign` and `root publish`",
            )
        with self._locked():
            state = self.load()
            self._decrypt_ahead(ROLES)
            held: dict[str, list[SigningKey]] = {r: self._held_keys(r) for r in ROLES}
            own = self._role_keys(role)  # the rotated role's file: the new key joins it
            # a copy: the root below is edited in place, and the checks that the new files also
            # verify under the old root must see the old one
            old_root: Root = meta.parse(state.root.raw, "root", "root.json").md.signed
            old_signers = {r: self._signers_for(old_root, r, held[r]) for r in ROLES}
            now = self._now()
            new_key = RoleKey.generate()
            root_md: Metadata[Root] = state.root.md
            root = root_md.signed
            held_ids = {identity_of(k) for k in own}
            for keyid in list(root.roles[role].keyids):
                if identity_of(root.keys[keyid]) in held_ids:
                    root.revoke_key(keyid, role)
            root.add_key(new_key.sslib_key(), role)
            root.version += 1
            root.expires = now + self.expirations.root
            root.spec_version = meta.SPEC_VERSION
            # Sign each role with the new key set, and also with the old keys during the
            # transition: clients still on the old root accept the new files until they
            # fetch the new root (which is published last).
            signers = {r: list(old_signers[r]) for r in ROLES}
            signers[role].append(new_key.signer())
            sealing = self._encode_like_existing(role, [*own, new_key])
            state_new = self._build(
                root_md,
                state.targets.md,
                signers,
                now,
                bump=True,
                root_changed=True,
                snapshot=state.snapshot.md,
                timestamp=state.timestamp.md,
            )
            self._check_rotation(old_root, state_new)
            key_files = {role: sealing.result()}
            self._publish("rotate", state_new, [], [], key_files, root_changed=True, first=False)
            return PublishResult(
                versions={r: int(state_new[r].signed.version) for r in ROLES},
                new_key_ids={role: new_key.gotuf_keyid},
            )

    def resign_under(self, state: RepoState, root_md: Metadata[Root]) -> dict[str, int]:
        """Publish ``root_md`` (a new root, already signed) with targets, snapshot and
        timestamp re-signed by the keys it lists -- and by the current root's keys still held,
        for agents that have not fetched the new root yet. Call with the lock held."""
        old_root = state.root_signed
        new_root = root_md.signed
        signers: dict[str, list[Signer]] = {}
        self._decrypt_ahead(ONLINE_ROLES)
        for role in ONLINE_ROLES:
            held = self._held_keys(role)
            fresh = signers_for(new_root, role, held)
            if len(fresh) < new_root.roles[role].threshold:
                raise KeyFileError(
                    f"the new root lists {role} keys this machine does not hold"
                    f" ({len(fresh)} of {new_root.roles[role].threshold} needed)",
                    hint=f"run `root publish` where keys/{role}.json holds the new {role} key",
                )
            ids = {s.public_key.keyid for s in fresh}
            signers[role] = fresh + [
                s for s in signers_for(old_root, role, held) if s.public_key.keyid not in ids
            ]
        now = self._now()
        state_new = self._build(
            root_md,
            state.targets.md,
            signers,
            now,
            bump=True,
            root_changed=False,
            snapshot=state.snapshot.md,
            timestamp=state.timestamp.md,
        )
        self._check_new(new_root, state_new)
        self._publish("root publish", state_new, [], [], {}, root_changed=True, first=False)
        return {r: int(state_new[r].signed.version) for r in ROLES}

    def roots(self) -> bytes:
        """The signed root.json, exactly as published (what ``package --update-roots`` takes)."""
        state = self.load()
        return state.root.raw

    # -- internals ---------------------------------------------------------------------------
    def _refuse_expired_root(self, state: RepoState) -> None:
        expires = state.root.expires
        if expires <= self._now():
            raise RepositoryStateError(
                f"root.json expired at {meta.utc_z(expires)}; clients reject this repository",
                hint="renew it with `orbit-packager updates rotate root` (works on expired roots)",
            )

    def _online_signers(self, root: Root) -> dict[str, list[Signer]]:
        """Signers for targets, snapshot and timestamp (decrypting all three up front, at once)."""
        self._decrypt_ahead(ONLINE_ROLES)
        keys = {r: self._held_keys(r) for r in ONLINE_ROLES}
        return {r: self._signers_for(root, r, keys[r]) for r in keys}

    def _change(
        self,
        command: str,
        state: RepoState,
        targets_md: Metadata[Targets],
        signers: dict[str, list[Signer]],
        txn: Transaction,
        old_files: set[str],
        *,
        added: list[str] | None = None,
        removed: list[str] | None = None,
    ) -> PublishResult:
        """Re-sign targets, snapshot and timestamp after ``targets_md`` changed; publish."""
        now = self._now()
        state_new = self._build(
            state.root.md,
            targets_md,
            signers,
            now,
            bump=True,
            root_changed=False,
            snapshot=state.snapshot.md,
            timestamp=state.timestamp.md,
        )
        self._check_new(state.root_signed, state_new)
        cs = state.consistent_snapshot
        new_files = self._target_files(targets_md.signed, cs)
        target_writes = [f"targets/{p}" for p in added or []]
        if cs:
            for path in added or []:
                for hashed in self._hashed_names(path, targets_md.signed.targets[path]):
                    link_or_copy(
                        txn.staged_path(f"targets/{path}"), txn.staged_path(f"targets/{hashed}")
                    )
                    target_writes.append(f"targets/{hashed}")
        deletes = sorted(f"targets/{p}" for p in self._stale_files(old_files, new_files, cs))
        self._publish(
            command,
            state_new,
            target_writes,
            deletes,
            {},
            root_changed=False,
            first=False,
            txn=txn,
            consistent=cs,
        )
        return PublishResult(
            versions={r: int(state_new[r].signed.version) for r in ROLES},
            added=list(added or []),
            removed=list(removed or []),
        )

    def _build(
        self,
        root_md: Metadata[Root],
        targets_md: Metadata[Targets],
        signers: dict[str, list[Signer]],
        now: datetime,
        *,
        bump: bool,
        root_changed: bool,
        snapshot: Metadata[Snapshot] | None = None,
        timestamp: Metadata[Timestamp] | None = None,
    ) -> dict[str, Metadata[Any]]:
        """Sign root (if changed), targets, snapshot and timestamp in order; return them."""
        exp = self.expirations
        if root_changed:
            meta.sign(root_md, signers["root"])
        targets = targets_md.signed
        if bump:
            targets.version += 1
        targets.expires = now + exp.targets
        targets.spec_version = meta.SPEC_VERSION
        meta.sign(targets_md, signers["targets"])
        targets_bytes = meta.serialize(targets_md)

        snap_md = snapshot or Metadata(Snapshot(version=1, spec_version=meta.SPEC_VERSION))
        snap = snap_md.signed
        if bump and snapshot is not None:
            snap.version += 1
        snap.expires = now + exp.snapshot
        snap.spec_version = meta.SPEC_VERSION
        snap.meta = {
            "targets.json": MetaFile(
                version=targets.version,
                length=len(targets_bytes),
                hashes=meta.file_hash(targets_bytes),
            )
        }
        meta.sign(snap_md, signers["snapshot"])
        snap_bytes = meta.serialize(snap_md)

        ts_md = timestamp or Metadata(
            Timestamp(version=1, spec_version=meta.SPEC_VERSION, snapshot_meta=MetaFile(1))
        )
        ts = ts_md.signed
        if bump and timestamp is not None:
            ts.version += 1
        ts.expires = now + exp.timestamp
        ts.spec_version = meta.SPEC_VERSION
        ts.snapshot_meta = MetaFile(
            version=snap.version, length=len(snap_bytes), hashes=meta.file_hash(snap_bytes)
        )
        meta.sign(ts_md, signers["timestamp"])
        return {"root": root_md, "targets": targets_md, "snapshot": snap_md, "timestamp": ts_md}

    def _check_new(self, root: Root, mds: dict[str, Metadata[Any]]) -> None:
        """Refuse to publish anything that would not verify (a bug or a wrong key)."""
        for role, md in mds.items():
            if role == "root":
                continue
            loaded = meta.parse(meta.serialize(md), role, f"new {role}.json")
            meta.verify_signed_by(root, role, loaded, f"new {role}.json")

    def _check_rotation(self, old_root: Root, mds: dict[str, Metadata[Any]]) -> None:
        new_root_loaded = meta.parse(meta.serialize(mds["root"]), "root", "new root.json")
        new_root: Root = new_root_loaded.md.signed
        meta.verify_signed_by(old_root, "root", new_root_loaded, "new root.json", what=" (old)")
        meta.verify_signed_by(new_root, "root", new_root_loaded, "new root.json", what=" (new)")
        self._check_new(new_root, mds)
        self._check_new(old_root, mds)

    @staticmethod
    def _hashed_names(path: str, info: TargetFile) -> list[str]:
        directory, _, name = path.rpartition("/")
        return [f"{directory}/{digest}.{name}" for digest in info.hashes.values()]

    def _stale_files(self, old_files: set[str], new_files: set[str], consistent: bool) -> set[str]:
        """Target files to delete once the new metadata is published.

        Without consistent snapshots: what the new targets.json no longer lists. With them, a
        client that read the current targets.json a moment ago may still be downloading its
        hash-prefixed files, so those stay one more generation (a poll that spans two commits
        is not a realistic client): what goes now is the hash-prefixed files the version before
        the current one listed and neither the current nor the new one lists.
        """
        gone = {p for p in old_files - new_files if not _is_hash_prefixed(p)}
        if not consistent:
            return old_files - new_files
        previous: set[str] = set()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, DeserializationError):
            current = json.loads((self.repository / "targets.json").read_bytes())
            version = int(current["signed"]["version"])
            data = (self.repository / f"{version - 1}.targets.json").read_bytes()
            previous = self._target_files(Metadata[Targets].from_bytes(data).signed, True)
        return gone | {p for p in previous - old_files - new_files if _is_hash_prefixed(p)}

    def _target_files(self, targets: Targets, consistent: bool) -> set[str]:
        files = set(targets.targets)
        if consistent:
            for path, info in targets.targets.items():
                files.update(self._hashed_names(path, info))
        return files

    def _publish(
        self,
        command: str,
        mds: dict[str, Metadata[Any]],
        target_writes: list[str],
        deletes: list[str],
        key_files: dict[str, bytes],
        *,
        root_changed: bool,
        first: bool,
        txn: Transaction | None = None,
        consistent: bool | None = None,
    ) -> None:
        """Stage metadata after the target files and commit in publication order."""
        if txn is None:
            txn = Transaction(self.path)
            txn.begin()
        cs = bool(mds["root"].signed.consistent_snapshot) if consistent is None else consistent
        writes = list(target_writes)
        data = {role: meta.serialize(md) for role, md in mds.items()}
        if cs:
            for role in ("targets", "snapshot"):
                name = f"{mds[role].signed.version}.{role}.json"
                txn.stage_bytes(name, data[role])
                writes.append(name)
        for role in ("targets", "snapshot", "timestamp"):
            txn.stage_bytes(f"{role}.json", data[role])
            writes.append(f"{role}.json")
        if root_changed:
            # Published last: clients that have not seen the new root yet still accept the
            # new files above (they carry the old keys' signatures during a rotation).
            versioned = f"{mds['root'].signed.version}.root.json"
            txn.stage_bytes(versioned, data["root"])
            txn.stage_bytes("root.json", data["root"])
            writes += [versioned, "root.json"]
        if first:
            make_dirs(self.repository)
            os.chmod(self.repository, 0o755)  # noqa: S103 - published tree is world-readable
        txn.commit(Change(command, writes=writes, deletes=deletes, key_files=key_files))


def _is_hash_prefixed(path: str) -> bool:
    """A consistent-snapshot copy: ``DIR/<sha512 hex>.NAME``."""
    head = path.rsplit("/", 1)[-1].split(".", 1)[0]
    return len(head) == 128 and all(c in "0123456789abcdef" for c in head)
