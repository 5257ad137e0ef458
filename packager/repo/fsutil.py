"""Small filesystem primitives: atomic writes, directory fsync, locks, one-pass copy+hash."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from packager.errors import BusyError

CHUNK = 1024 * 1024

# ``.NAME.tmp-<pid>``: the only name this module gives a file before renaming it into place.
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9]+")


def temp_path(path: Path) -> Path:
    """Where a file is written before it is renamed to ``path`` (see remove_stale_temp_files)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one that :func:`temp_path` gives."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temp_files(top: Path) -> list[Path]:
    """Delete every regular file below ``top`` named like :func:`temp_path`; return them.

    A process killed between creating its temp file and renaming it leaves the file behind.
    Call this only while holding the lock that every writer holds for its whole run: then no
    live process is writing, so every such file is stale whatever pid its name carries. The
    pid is deliberately not checked: pids are reused (in a container each command may run as
    PID 1, the same pid the killed one had), and a live pid would not mean a live writer.
    Symbolic links are not followed.
    """
    removed: list[Path] = []
    for dirpath, _dirs, files in os.walk(top):
        directory = Path(dirpath)
        here = [directory / n for n in files if is_temp_name(n)]
        here = [p for p in here if p.is_file() and not p.is_symlink()]
        for path in here:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        if here:
            fsync_dir(directory)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def copy_and_hash(src: Path, dst: Path, algorithm: str = "sha512") -> tuple[int, str]:
    """Stream ``src`` into a new file ``dst`` (0644, fsynced), hashing in the same pass.

    Returns (length, hex digest). Memory stays bounded whatever the file size.
    """
    digest = hashlib.new(algorithm)
    length = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
                length += len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        raise
    return length, digest.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk use); copy where links are impossible."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copy_and_hash(src, dst)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock; a second holder fails fast with BusyError."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(
                f"another orbit-packager command is working on {what}",
                hint=f"wait for it to finish; lock file {lock_path}",
            ) from None
        yield
    finally:
        os.close(fd)


def move_into_place(src: Path, dst: Path) -> None:
    """Atomically replace ``dst`` with ``src`` (rename; copy+rename across filesystems)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = temp_path(dst)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        copy_and_hash(src, tmp)
        os.chmod(tmp, src.stat().st_mode & 0o7777)
        os.replace(tmp, dst)
        src.unlink()


def remove_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, never ``stop`` or above it."""
    current = start
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
