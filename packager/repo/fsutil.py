"""Small filesystem primitives: atomic writes, directory fsync, locks, one-pass copy+hash, and
:class:`Pending` (work in a thread of its own, for fsyncs and key derivations that overlap)."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import io
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, ParamSpec, TypeVar

from packager.errors import BusyError

CHUNK = 1024 * 1024

# ``.NAME.tmp-<pid>``: the only name this module gives a file before renaming it into place.
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9]+")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Pending(Generic[_T]):
    """``fn(*args, **kwargs)`` started at once in a thread of its own; :meth:`result` waits for
    it and returns its value or raises its exception, in the caller's thread.

    For work that releases the GIL (hashlib's scrypt, fsync): it overlaps with the caller. A
    daemon thread, but a command that fails meanwhile waits for it at exit (at most
    ``EXIT_WAIT`` seconds in all): a scrypt still inside OpenSSL when libcrypto's own exit
    handler ran crashed the interpreter (SIGSEGV after the error line of a bad key file). Made
    per use, never at import: a process forked after import (tests/killpoint.py) has no threads.
    """

    def __init__(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> None:
        self._value: list[_T] = []  # empty until fn returns
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._value.append(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller by result()
                self._error.append(exc)

        self._thread = threading.Thread(target=run, daemon=True)
        _running_at_exit(self._thread)
        self._thread.start()

    def result(self) -> _T:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._value[0]


EXIT_WAIT = 10.0  # seconds: a few key derivations, or fsyncs on a slow disk
_started: list[threading.Thread] = []
_started_lock = threading.Lock()


def _running_at_exit(thread: threading.Thread) -> None:
    """Have the interpreter's exit wait for ``thread`` (Python's atexit runs before the C
    library's exit handlers, OpenSSL's cleanup among them)."""
    with _started_lock:
        if not _started:
            atexit.register(_wait_for_started)
        _started[:] = [t for t in _started if t.is_alive()]
        _started.append(thread)


def _wait_for_started() -> None:
    deadline = time.monotonic() + EXIT_WAIT
    with _started_lock:
        threads = list(_started)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


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


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents, each with exactly ``mode``: the umask neither
    widens them (umask 0 would make them world-writable) nor narrows them (what goes into an
    installer must not depend on the umask of the machine that built it)."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made meanwhile by someone else: left as it is
        directory.chmod(mode)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    With ``sync_dir=False`` the caller fsyncs ``path.parent`` itself, once after several
    writes into it (each fsync of a directory is a journal commit)."""
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
    if sync_dir:
        fsync_dir(path.parent)


def write_synced(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` (created or truncated, exactly ``mode``) and fsync it, with no
    temp name: for files in a private journal, which nobody reads before it is complete. The
    caller fsyncs the directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)
        f.write(data)
        f.flush()
        os.fsync(fd)


def fsync_file(path: Path) -> None:
    """Make the bytes written to ``path`` (through any descriptor) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_and_hash(
    src: Path,
    dst: Path,
    algorithm: str = "sha512",
    *,
    mode: int | None = None,
) -> tuple[int, str]:
    """Stream ``src`` into a new file ``dst`` (fsynced), hashing in the same pass.

    ``dst`` is 0644 less the umask, or exactly ``mode`` when given: then it has that mode
    before any byte is written (:func:`create_new_file`). Returns (length, hex digest).
    Memory stays bounded whatever the file size: one buffer, reused for every chunk.
    """
    digest = hashlib.new(algorithm)
    length = 0
    if mode is None:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    else:
        fd = create_new_file(dst, mode)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        with src.open("rb", buffering=0) as fin, os.fdopen(fd, "wb", buffering=0) as fout:
            while n := fin.readinto(buffer):
                chunk = view[:n]
                digest.update(chunk)  # releases the GIL: other threads run meanwhile
                written = 0
                while written < n:  # a regular file takes it all; a short write is legal
                    written += os.write(fout.fileno(), chunk[written:])
                length += n
            os.fsync(fout.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        raise
    return length, digest.hexdigest()


# ioctl(dst, FICLONE, src): dst shares src's blocks copy-on-write (btrfs, XFS, bcachefs).
_FICLONE = 0x40049409
_NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.EPERM)


def copy_and_hash_to(src: Path, dsts: Sequence[Path], algorithm: str = "sha512") -> tuple[int, str]:
    """Copy ``src`` into every new file of ``dsts`` (0644 less the umask), reading and hashing
    each byte once; returns (length, hex digest). Not fsynced: the caller fsyncs each file.

    The copies are independent files, never hard links: a later write through one name (go-tuf,
    so fleetctl, rewrites a published target file in place) must not change another. Where the
    file system can, the others are reflinks of the first (FICLONE: shared blocks, copied on
    write, no data written twice); elsewhere each is written from the same buffer.
    """
    digest = hashlib.new(algorithm)
    length = 0
    fds: list[int] = []
    try:
        for dst in dsts:
            # read and write: FICLONE reads the first file through its descriptor
            fds.append(os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        writers = fds
        if len(fds) > 1 and _reflinks(fds[0], fds[1]):
            writers = fds[:1]  # the others are cloned once the first is complete
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        with src.open("rb", buffering=0) as fin:
            while n := fin.readinto(buffer):
                chunk = view[:n]
                digest.update(chunk)  # releases the GIL: other threads run meanwhile
                for fd in writers:
                    written = 0
                    while written < n:  # a regular file takes it all; a short write is legal
                        written += os.write(fd, chunk[written:])
                length += n
        if writers is not fds:
            for fd in fds[1:]:
                fcntl.ioctl(fd, _FICLONE, fds[0])
    except BaseException:
        for dst in dsts[: len(fds)]:
            with contextlib.suppress(FileNotFoundError):
                dst.unlink()
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return length, digest.hexdigest()


def _reflinks(first: int, other: int) -> bool:
    """Whether ``other`` can be a reflink of ``first`` (both still empty, so probing costs
    nothing and clones nothing)."""
    try:
        fcntl.ioctl(other, _FICLONE, first)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


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
        copy_and_hash(src, tmp, mode=src.stat().st_mode & 0o7777)
        os.replace(tmp, dst)
        src.unlink()


def create_new_file(path: Path, mode: int) -> int:
    """Create ``path`` (which must not exist, not even as a symbolic link) for writing, with
    exactly ``mode`` before anything is written: O_CREAT|O_EXCL|O_NOFOLLOW, then fchmod, so
    the umask can neither widen nor narrow it. Returns the file descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode & 0o700)  # nothing for group/others until fchmod
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return fd


def create_private_temp(directory: Path, name: str, mode: int = 0o600) -> tuple[Path, int]:
    """A new file with an unpredictable name beside ``name`` in ``directory``, created as
    :func:`create_new_file` does: a name planted in a shared directory (a symbolic link in
    /tmp) is never opened. Returns the path and a descriptor open for writing."""
    for _ in range(100):
        path = directory / f".{name[:200]}.{secrets.token_hex(8)}.tmp"
        try:
            return path, create_new_file(path, mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def place_private_file(
    src: Path,
    dst: Path,
    *,
    mode: int = 0o600,
    commit: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
) -> tuple[int, str]:
    """Move the file ``src`` (in a private directory) to ``dst`` atomically; return its size
    and sha256, read in the same pass as any copy.

    At no instant can anyone but the owner read it at ``dst``'s directory: ``src`` gets
    ``mode`` before it moves. Across file systems the bytes go to a new temporary file beside
    ``dst`` created with ``mode`` (:func:`create_private_temp`), fsynced, then renamed. A
    symbolic link at ``dst`` is never followed: the rename replaces the link itself.
    The final rename (the point of no return) runs inside ``commit()``, e.g. to hold signals
    back across it.
    """
    # O_NONBLOCK: opening a FIFO put at this name must not wait for a writer (it is refused
    # below); on a regular file the flag changes nothing.
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(src))
        os.fchmod(fd, mode)
        try:
            with commit():
                os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            with contextlib.suppress(OSError):  # the rename happened; durability is a bonus
                fsync_dir(dst.parent)
            return _size_and_sha256(source)
        tmp, out_fd = create_private_temp(dst.parent, dst.name, mode)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(out_fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            with commit():
                os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    with contextlib.suppress(OSError):
        fsync_dir(dst.parent)
    with contextlib.suppress(FileNotFoundError):
        src.unlink()
    return size, digest.hexdigest()


def _size_and_sha256(f: io.BufferedReader) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def remove_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, never ``stop`` or above it."""
    current = start
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
