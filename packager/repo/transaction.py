"""Crash-safe changes to a repository directory.

A command prepares every new file (targets, metadata, key files) in a private journal directory
``<path>/.orbit-packager-txn`` next to ``repository/``, fsyncs it, and only then commits:

1. ``prepared``: new files staged; key files that change are backed up, then replaced (a rotated
   key file is a superset of the old one, so the published repository still matches it).
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
from dataclasses import dataclass, field
from pathlib import Path

from packager.repo.fsutil import (
    atomic_write,
    fsync_dir,
    make_dirs,
    move_into_place,
    remove_empty_dirs,
    remove_stale_temp_files,
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

    # -- preparing ---------------------------------------------------------------------------
    def begin(self) -> Path:
        """Create an empty journal and return the directory new files are staged in."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(mode=0o700)
        self.new.mkdir(mode=0o700)
        fsync_dir(self.root)  # the journal's directory must survive a power cut with its renames
        self._write_state({"phase": "preparing"})
        return self.new

    def staged_path(self, relpath: str) -> Path:
        path = self.new / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage_bytes(self, relpath: str, data: bytes) -> Path:
        path = self.staged_path(relpath)
        atomic_write(path, data, mode=0o644)
        return path

    def commit(self, change: Change) -> None:
        """Make ``change`` durable and publish it (see the module docstring)."""
        self._sync_tree(self.new)
        backup = self.dir / _KEY_BACKUP
        backup.mkdir(mode=0o700, exist_ok=True)
        existed: dict[str, bool] = {}
        for role in change.key_files:
            current = self.keys / f"{role}.json"
            existed[role] = current.exists()
            if existed[role]:
                atomic_write(backup / f"{role}.json", current.read_bytes(), mode=0o600)
        fsync_dir(backup)
        self._write_state(
            {
                "phase": "prepared",
                "keys_dir_existed": self.keys.exists(),
                "command": change.command,
                "writes": change.writes,
                "deletes": change.deletes,
                "keys_existed": existed,
            }
        )
        # Key files change only after their backup is durable; a rollback restores them.
        for role, content in change.key_files.items():
            self.keys.mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.keys / f"{role}.json", content, mode=0o600)
        state = self._read_state()
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
