"""The download cache, safe against other local users, and target bytes hashed in the pass that
writes them.

* The cache directory must be the caller's own: owned by the caller's uid and not writable by
  group or others, or another user could plant files or links in it (a root build would then
  write wherever they point). A symbolic link at the cache path is followed only when it is the
  caller's own; every directory inside is a real directory with the same checks, and nothing
  inside is ever opened through a symbolic link.
* A target reaches the private build directory as a new file whose bytes are the bytes that were
  hashed: copied out of the cache and hashed in the same read, or hashed as they stream from the
  server (and kept in the cache too). Nothing is linked to the cache, so whoever can change a
  cache file cannot change a build after its check (one read per byte, too).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from packager.errors import UsageError
from packager.repo.fsutil import create_new_file

CACHE_DIR_MODE = 0o700
CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{32,128}")


def _refuse(path: Path, problem: str, fix: str) -> UsageError:
    return UsageError(f"cache directory {path} {problem}", hint=fix)


def _check_dir(path: Path, st: os.stat_result, root: Path) -> None:
    uid = os.geteuid()
    other = "--cache-dir DIR of your own, or --no-cache"
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory", f"remove it, or use a {other}")
    if st.st_uid != uid:
        raise _refuse(
            path,
            f"belongs to uid {st.st_uid}, not to you (uid {uid}): another user could change it",
            f"use a {other}",
        )
    if st.st_mode & 0o022:
        raise _refuse(
            path,
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"run `chmod go-w {root}` (and on the directories in it), or use a {other}",
        )


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (the umask cannot widen them)."""
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=CACHE_DIR_MODE)


def open_cache_dir(path: Path) -> Path:
    """``path`` checked (and created 0700 when missing) as a cache the caller alone controls;
    returns its real path. Raises UsageError (exit 2) naming the problem and the fix."""
    path = path.absolute()
    _make_dirs(path)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid not in (os.geteuid(), 0):
            raise _refuse(
                path,
                f"is a symbolic link that belongs to uid {st.st_uid}",
                "use a --cache-dir DIR of your own, or --no-cache",
            )
        path = path.resolve()
        st = os.lstat(path)
    _check_dir(path, st, path)
    return path


def private_subdir(path: Path, root: Path) -> Path:
    """A directory inside the checked cache ``root``: created 0700 when missing, else a real
    directory (not a symbolic link) with the same owner and mode checks."""
    for directory in [*reversed(path.relative_to(root).parents[:-1]), path.relative_to(root)]:
        full = root / directory
        with contextlib.suppress(FileExistsError):
            full.mkdir(mode=CACHE_DIR_MODE)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(
                full,
                "is a symbolic link, which is never followed inside the cache",
                f"remove it, or use another --cache-dir than {root}",
            )
        _check_dir(full, st, root)
    return path


def remove_symlinks(directory: Path) -> None:
    """Delete every symbolic link directly in ``directory`` (never following it), so that
    nothing read from there later goes through one."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    Path(entry.path).unlink()


def write_private_text(path: Path, text: str) -> None:
    """Write a small file in a checked cache directory, never through a symbolic link."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink():
            path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def cache_name(info: TargetFile) -> str:
    """The cache file name of a target: its sha512 (else its first hash), checked to be hex."""
    digest = info.hashes.get("sha512") or next(iter(info.hashes.values()))
    if not _HEX.fullmatch(digest):
        raise exceptions.RepositoryError(f"target {info.path} has a malformed hash in targets.json")
    return digest


@contextlib.contextmanager
def new_private_file(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A new file at ``path`` (O_EXCL, no symbolic link followed, exactly ``mode``), removed
    again if the block fails."""
    fd = create_new_file(path, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


def write_verified(
    chunks: Iterable[bytes], info: TargetFile, outputs: list[BinaryIO], label: str
) -> int:
    """Write ``chunks`` to every output while checking them against ``info``: at most
    ``info.length`` bytes, then exactly that length and every listed hash. Raises python-tuf's
    length or hash errors. Returns the length."""
    hashers = {}
    for alg in info.hashes:
        try:
            hashers[alg] = hashlib.new(alg)
        except ValueError:
            raise exceptions.LengthOrHashMismatchError(
                f"{label} lists the unsupported hash algorithm {alg!r}"
            ) from None
    length = 0
    for chunk in chunks:
        length += len(chunk)
        if length > info.length:
            raise exceptions.DownloadLengthMismatchError(
                f"{label} is longer than the {info.length} bytes the metadata allows"
            )
        for h in hashers.values():
            h.update(chunk)
        for out in outputs:
            out.write(chunk)
    if length != info.length:
        raise exceptions.LengthOrHashMismatchError(
            f"{label} is {length} bytes, the metadata says {info.length}"
        )
    for alg, h in hashers.items():
        if h.hexdigest() != info.hashes[alg]:
            raise exceptions.LengthOrHashMismatchError(f"{label} does not match its {alg} hash")
    return length


def copy_from_cache(
    cached: Path,
    info: TargetFile,
    dest: Path,
    label: str,
    check: Callable[[], None] | None = None,
) -> bool:
    """Copy the cache entry ``cached`` to the new private file ``dest``, hashing it in the same
    read. True when it matched ``info``; False (``dest`` removed, a bad entry deleted) when the
    entry is missing, not a regular file, a symbolic link (never followed) or does not match.
    ``check`` runs before each chunk: what it raises stops the copy (``dest`` removed)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(cached, flags)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.ENXIO):
            raise
        return False
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        chunks: Iterable[bytes] = iter(lambda: src.read(CHUNK), b"")
        if check is not None:
            chunks = _checked(chunks, check)
        try:
            with new_private_file(dest) as out:
                write_verified(chunks, info, [out], label)
        except (exceptions.LengthOrHashMismatchError, exceptions.DownloadLengthMismatchError):
            with contextlib.suppress(FileNotFoundError):
                cached.unlink()  # stale or corrupted: a download replaces it
            return False
    return True


def _checked(chunks: Iterable[bytes], check: Callable[[], None]) -> Iterator[bytes]:
    for chunk in chunks:
        check()
        yield chunk
