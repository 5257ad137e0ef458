"""Deflate on every core with output bytes that do not depend on how many cores there are.

One zlib stream is sequential, and compressing is nearly all of a build's time (a deb's
data.tar at level 9, a pkg's Payload at level 6, an MSI's cabinet). zlib releases the GIL while
it compresses, so threads can share the work if the stream is cut into pieces that compress
independently: pigz's scheme. The input is cut at fixed 1 MiB offsets (never where reads
happen to end); each piece is deflated on its own, primed with the previous piece's last
32 KiB as a preset dictionary (so matches still reach back a full window across the cut), and
ends with a sync flush (an empty stored block, byte-aligned); the last one ends the stream.
The pieces concatenate into one valid deflate stream, the same bytes with 1 worker or 64.

One pool serves every stream of the process, sized to the usable cores: builds of several
formats at once (``package --type deb,pkg,msi``) share the cores instead of each starting its
own threads. Tasks never wait on other tasks, so the shared pool cannot deadlock.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

PIECE = 1024 * 1024  # input bytes per independently compressed piece
WINDOW = 32 * 1024  # deflate's window: the dictionary each piece is primed with
# Memory in flight is about two pieces per worker per stream; past 8 workers the disk, not
# deflate, is usually what a build waits for.
MAX_WORKERS = 8
GZIP_OS_UNIX = 3  # what zlib's own gzip header says on Unix
GZIP_OS_UNKNOWN = 255  # what Python's gzip module writes

T = TypeVar("T")
R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def _forget_pool() -> None:
    # A forked child has none of the parent's threads: a pool inherited from it would queue
    # work that never runs. The child makes its own when it needs one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=usable_cores(), thread_name_prefix="orbit-packager-deflate"
            )
        return _pool


def ordered_map(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map(fn, items)`` on the shared pool, results in order, at most two tasks per core in
    flight (memory stays bounded whatever the input size)."""
    cores = usable_cores()
    if cores == 1:
        yield from map(fn, items)
        return
    pool = _shared_pool()
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * cores:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # an error or an abandoned generator: drop what has not run
            future.cancel()


def deflate_piece(level: int, dictionary: bytes, data: bytes, last: bool) -> bytes:
    """One piece of a raw deflate stream (see the module docstring)."""
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    end = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    return compressor.compress(data) + compressor.flush(end)


def gzip_header(level: int, os_byte: int) -> bytes:
    """A gzip member header with mtime 0 and no name (reproducible); XFL as zlib sets it."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return b"\x1f\x8b\x08\x00" + bytes(4) + bytes((xfl, os_byte))


class ParallelGzip:
    """A gzip compressor object (``compress()`` chunks, then ``flush()`` once) whose deflate
    work runs on the shared pool. Output comes back in order; ``compress()`` returns what is
    ready so far and waits only when too many pieces are in flight."""

    def __init__(self, level: int, *, os_byte: int = GZIP_OS_UNIX) -> None:
        self._level = level
        self._header = gzip_header(level, os_byte)
        self._buffer = bytearray()
        self._previous = b""  # the dictionary for the next piece
        self._crc = 0
        self._size = 0
        self._cores = usable_cores()
        self._pending: deque[Future[bytes]] = deque()
        self._finished = False

    def _submit(self, data: bytes, last: bool) -> None:
        dictionary, self._previous = self._previous, data[-WINDOW:]
        if self._cores == 1:  # the same bytes, without a thread hop
            done: Future[bytes] = Future()
            done.set_result(deflate_piece(self._level, dictionary, data, last))
            self._pending.append(done)
        else:
            self._pending.append(
                _shared_pool().submit(deflate_piece, self._level, dictionary, data, last)
            )

    def _collect(self, *, wait: bool) -> bytes:
        parts = [self._header] if self._header else []
        self._header = b""
        limit = 0 if wait else 2 * self._cores
        while self._pending and (len(self._pending) > limit or self._pending[0].done()):
            parts.append(self._pending.popleft().result())
        return b"".join(parts)

    def compress(self, data: bytes, /) -> bytes:
        if self._finished:
            raise ValueError("compress() after flush()")
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        if not self._buffer and len(data) == PIECE:  # the common case: no copy
            self._submit(bytes(data), False)
        else:
            self._buffer += data
            while len(self._buffer) >= PIECE:
                piece = bytes(self._buffer[:PIECE])
                del self._buffer[:PIECE]
                self._submit(piece, False)
        return self._collect(wait=False)

    def flush(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        self._submit(bytes(self._buffer), True)
        self._buffer.clear()
        body = self._collect(wait=True)
        return body + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
