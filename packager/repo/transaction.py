"""Crash-safe changes to a repository directory.

A command prepares every new file (targets, metadata, key files) in a private journal directory
``<path>/.orbit-packager-txn`` next to ``repository/``, fsyncs it, and only then commits:

1. ``prepared``: new files staged; key files that change are backed up, then replaced (a rotated
   key file is a superset of the old one, so the published repository still matches it). A
   change without key files skips this phase: nothing would happen in it.
2. ``committing`` (one atomic write of ``state.json``): files are renamed into ``repository/`` in
   publication order -- target files, versioned metadata, ``targets.json``, ``snapshot.json`` and
   ``timestamp.json`` last -- then files no longer listed are deleted.

Recovery runs under the lock before every command. A journal still ``prepared`` is rolled back
(key files restored byte for byte, nothing published); a ``committing`` one is rolled forward
(each rename is atomic and idempotent, so redoing the remaining ones finishes the commit).
Files outside the journal are written under a temp name and renamed into place (key files in
``keys/``, and copies into ``repository/`` across filesystems); the journal cannot list those
names (a kill may land between creating one and any journal write), so recovery deletes every
file in ``keys/``, ``repository/`` and ``staged/`` named like one: under the lock no live
process is writing them (see :func:`~packager.repo.fsutil.remove_stale_temp_files`).

Why not an atomic directory swap: admins serve ``repository/`` through bind mounts (docker -v) or
from a server started inside it, which keep the old directory inode and would serve a deleted
tree after a swap. Renaming files inside the existing directory keeps every such setup working.
With consistent snapshots every staged file has a new name and ``timestamp.json`` is the single
switch, so clients see the old or the new state at every instant. Without them (fleetctl's
default) ``targets.json``/``snapshot.json`` are fixed names: the renames run back to back after
all data is durable, so the window in which a client may see a mix is a few renames long, and a
crash inside it is completed by the next command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packager.repo.fsutil import (
    Pending,
    atomic_write,
    copy_and_hash_to,
    fsync_dir,
    fsync_file,
    make_dirs,
    move_into_place,
    remove_empty_dirs,
    remove_stale_temp_files,
    write_synced,
)

TXN_DIR_NAME = ".orbit-packager-txn"
_STATE = "state.json"
_NEW = "new"
_KEY_BACKUP = "keys-backup"


@dataclass
class Change:
    """What one command publishes: files in order, deletions, and key files to replace."""

    command: str
    writes: list[str] = field(default_factory=list)  # repository-relative paths, publish order
    deletes: list[str] = field(default_factory=list)
    key_files: dict[str, bytes] = field(default_factory=dict)  # role -> new key file content


class Transaction:
    """One staged change of ``<root>/repository`` and ``<root>/keys``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / TXN_DIR_NAME
        self.new = self.dir / _NEW
        self.repository = root / "repository"
        self.keys = root / "keys"
        self.staged_dir = root / "staged"  # fleetctl's staging area (not the journal's "new")
        self._syncing: list[Pending[None]] = []  # fsyncs of staged copies, joined by commit

    # -- preparing ---------------------------------------------------------------------------
    def begin(self) -> Path:
        """Create an empty journal and return the directory new files are staged in.

        Nothing is fsynced here: a journal without ``state.json`` reads as "preparing" and is
        rolled back whether or not it survives a power cut; :meth:`commit` makes the journal
        durable (its directory entry included) before it may be rolled forward."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(mode=0o700)
        self.new.mkdir(mode=0o700)
        return self.new

    def staged_path(self, relpath: str) -> Path:
        path = self.new / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage_copies(self, relpaths: Sequence[str], src: Path) -> tuple[int, str]:
        """Copy ``src`` into the journal at every one of ``relpaths`` (independent files:
        :func:`~packager.repo.fsutil.copy_and_hash_to`), hashed in the same pass; returns
        (length, sha512 hex). Their fsyncs run in threads meanwhile -- the disk writes the
        bytes back while the command signs -- and :meth:`commit` waits for them first."""
        paths = [self.staged_path(r) for r in relpaths]
        result = copy_and_hash_to(src, paths)
        self._syncing += [Pending(fsync_file, path) for path in paths]
        return result

    def stage_bytes(self, relpath: str, data: bytes) -> Path:
        # No temp name and no directory fsync per file: the journal is private until commit,
        # which fsyncs every directory of new/ once (_sync_tree).
        path = self.staged_path(relpath)
        write_synced(path, data, mode=0o644)
        return path

    def commit(self, change: Change) -> None:
        """Make ``change`` durable and publish it (see the module docstring).

        Each file is fsynced once, after its last byte; each directory once per journal step
        that relies on its entries, after the last of them."""
        for syncing in self._syncing:  # staged copies' fsyncs, started by stage_copies
            syncing.result()
        self._syncing.clear()
        self._sync_tree(self.new)
        state: dict[str, object] = {
            "phase": "prepared",
            "keys_dir_existed": self.keys.exists(),
            "command": change.command,
            "writes": change.writes,
            "deletes": change.deletes,
            "keys_existed": {},
        }
        # The journal's own entry: it must be found after a power cut once it is "prepared".
        fsync_dir(self.root)
        if change.key_files:
            backup = self.dir / _KEY_BACKUP
            backup.mkdir(mode=0o700, exist_ok=True)
            existed: dict[str, bool] = {}
            for role in change.key_files:
                current = self.keys / f"{role}.json"
                existed[role] = current.exists()
                if existed[role]:
                    data = current.read_bytes()
                    atomic_write(backup / f"{role}.json", data, mode=0o600, sync_dir=False)
            fsync_dir(backup)
            state["keys_existed"] = existed
            self._write_state(state)
            # Key files change only after their backup is durable; a rollback restores them.
            made_keys = not self.keys.exists()
            self.keys.mkdir(mode=0o700, exist_ok=True)
            for role, content in change.key_files.items():
                atomic_write(self.keys / f"{role}.json", content, mode=0o600, sync_dir=False)
            fsync_dir(self.keys)
            if made_keys:  # init: keys/ itself is a new entry of the root
                fsync_dir(self.root)
        # With no key file to change, "prepared" would be followed by nothing: straight to
        # "committing" (one journal write fewer, the same two outcomes after a crash).
        state["phase"] = "committing"
        self._write_state(state)
        self._roll_forward(state)
        self.discard()

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> str | None:
        """Finish or undo an interrupted commit. Returns what was done, for the user.

        Call it only under the repository lock: it deletes the temp files a killed command
        left (``.NAME.tmp-<pid>``), which would be an in-flight write if another command ran.
        """
        if not self.dir.exists():
            stale = self._remove_stale_temp_files()
            if not stale:
                return None
            names = ", ".join(str(p.relative_to(self.root)) for p in stale)
            return f"removed temporary files an interrupted command left: {names}"
        try:
            state = self._read_state()
        except (OSError, ValueError):
            state = {"phase": "preparing"}
        command = state.get("command", "command")
        if state.get("phase") == "committing":
            self._roll_forward(state)
            self._remove_stale_temp_files()
            self.discard()
            return f"completed an interrupted {command}"
        if state.get("phase") == "prepared":
            # Temp files first: an interrupted init's keys/ holds only a stale temp file, and
            # must be empty to be removed (else the next init refuses the leftover keys/).
            self._remove_stale_temp_files()
            self._restore_keys(state)
        # Before the journal goes: a kill in between leaves it, and the next recovery redoes this.
        self._remove_stale_temp_files()
        self.discard()
        return f"rolled back an interrupted {command}; nothing of it was published"

    def discard(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
            fsync_dir(self.root)

    # -- internals ---------------------------------------------------------------------------
    def _remove_stale_temp_files(self) -> list[Path]:
        removed: list[Path] = []
        for top in (self.keys, self.repository, self.staged_dir):
            removed += remove_stale_temp_files(top)
        return removed

    def _roll_forward(self, state: dict[str, object]) -> None:
        writes = _str_list(state.get("writes"))
        deletes = _str_list(state.get("deletes"))
        touched_dirs: set[Path] = set()
        for rel in writes:
            src = self.new / rel
            dst = self.repository / rel
            if not src.exists() and not src.is_symlink():
                continue  # moved before the interruption
            # directories made here are durable only once their parents are synced too
            created = [d for d in (dst.parent, *dst.parent.parents) if not d.exists()]
            make_dirs(dst.parent)  # 0755 whatever the umask: the published tree is public
            touched_dirs.update(d.parent for d in created)
            move_into_place(src, dst)
            touched_dirs.add(dst.parent)
        for directory in sorted(touched_dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)
        for rel in deletes:
            target = self.repository / rel
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            remove_empty_dirs(target.parent, self.repository / "targets")
        if deletes:
            fsync_dir(self.repository)

    def _restore_keys(self, state: dict[str, object]) -> None:
        existed = state.get("keys_existed")
        if not isinstance(existed, dict):
            existed = {}
        backup = self.dir / _KEY_BACKUP
        for role, was_there in existed.items():
            current = self.keys / f"{role}.json"
            saved = backup / f"{role}.json"
            if was_there and saved.exists():
                os.replace(saved, current)
            elif not was_there:
                with contextlib.suppress(FileNotFoundError):
                    current.unlink()
        if existed and self.keys.exists():
            fsync_dir(self.keys)
            if not state.get("keys_dir_existed", True):
                with contextlib.suppress(OSError):
                    self.keys.rmdir()  # only if empty: init made it

    def _write_state(self, state: dict[str, object]) -> None:
        atomic_write(self.dir / _STATE, json.dumps(state).encode(), mode=0o600)

    def _read_state(self) -> dict[str, object]:
        value = json.loads((self.dir / _STATE).read_bytes())
        if not isinstance(value, dict):
            raise ValueError("bad journal")
        return value

    @staticmethod
    def _sync_tree(top: Path) -> None:
        for dirpath, _dirs, _files in os.walk(top):
            fsync_dir(Path(dirpath))


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("journal lists are not lists of paths")
    return list(value)
