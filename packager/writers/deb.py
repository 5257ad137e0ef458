"""Finish an nfpm deb: drop the directory entries the package must not own, then compress.

dpkg records every directory in a package's data archive as owned by the package and removes
it, once empty, when the last owner goes. nfpm lists every parent directory ("implicit" ones
included: ``./opt/``, ``./usr/local/``, ``./usr/local/bin/``) and has no option to leave them
out, so removing our package deleted ``/usr/local/bin`` and ``/opt`` on a fresh Debian, where
no package owns them. nfpm therefore writes the deb uncompressed, and this module copies it
with only the directories we own, compressing ``data.tar`` on the way (one pass, streamed; the
preinst creates the parents when they are missing, as dpkg needs them to exist).

The archive is filtered at the tar block level (``writers.tarblocks``), not re-encoded: every
header nfpm wrote is kept byte for byte; no library copies an ar member like this either.
"""

from __future__ import annotations

import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from packager.writers.parallel import ParallelGzip
from packager.writers.tarblocks import (
    BLOCK,
    CHUNK,
    Compressor,
    Identity,
    TarFormatError,
    copy_through,
    emit,
    tar_records,
    zstd_compressor,
)

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
GZIP_LEVEL = 9  # what nfpm and dpkg-deb use for gzip'd debs
XZ_PRESET = 6  # dpkg-deb's default


class DebFormatError(TarFormatError):
    """The intermediate deb is not what nfpm writes (a bug, not user input)."""


COMPRESSORS: dict[str, tuple[str, Callable[[], Compressor]]] = {
    # On every core (writers.parallel): the same bytes whatever their number, and a gzip
    # header with mtime 0 and no file name, so the bytes are reproducible.
    "gzip": (".gz", lambda: ParallelGzip(GZIP_LEVEL)),
    "xz": (
        ".xz",
        lambda: lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET),
    ),
    "zstd": (".zst", zstd_compressor),
    "none": ("", Identity),
}


def _ar_members(f: BinaryIO) -> Iterator[tuple[bytes, bytes, int]]:
    """Yield (raw 60-byte header, name, size) per member; the stream is at the member's data."""
    while True:
        header = f.read(AR_HEADER)
        if not header:
            return
        if len(header) != AR_HEADER or header[58:60] != b"`\n":
            raise DebFormatError("bad ar member header")
        name = header[0:16].rstrip(b" ").rstrip(b"/")
        size = int(header[48:58].strip() or b"0")
        yield header, name, size
        if size % 2:
            f.read(1)


def _ar_header(template: bytes, name: bytes, size: int) -> bytes:
    out = name.ljust(16) + template[16:48] + str(size).encode().ljust(10) + b"`\n"
    if len(out) != AR_HEADER or len(str(size)) > 10:
        raise DebFormatError("member too large for ar")
    return out


def finish_deb(
    source: Path, output: Path, *, owned_dirs: frozenset[str], compression: str
) -> list[str]:
    """Copy the uncompressed deb ``source`` to ``output``, keeping only the directory entries in
    ``owned_dirs`` (absolute paths) and compressing ``data.tar``. Returns the directories dropped.
    """
    suffix, make = COMPRESSORS[compression]
    dropped: list[str] = []
    with open(source, "rb") as src, open(output, "wb") as out:
        if src.read(len(AR_MAGIC)) != AR_MAGIC:
            raise DebFormatError(f"{source.name}: not an ar archive")
        out.write(AR_MAGIC)
        for header, name, size in _ar_members(src):
            if name != b"data.tar":
                out.write(header)
                _copy(src, out, size)
                if size % 2:
                    out.write(b"\n")
                continue
            # The compressed size is known only at the end: write the header, then patch it.
            data_start = src.tell()
            header_at = out.tell()
            out.write(header)
            compressor = make()
            written = 0
            for blocks, path, typeflag, stream, length in tar_records(src, size):
                if typeflag == b"5" and path not in owned_dirs:
                    dropped.append(path)
                    stream.seek(length, os.SEEK_CUR)
                    continue
                written += emit(out, compressor, blocks)
                written += copy_through(stream, out, compressor, length)
            written += emit(out, compressor, b"\0" * (2 * BLOCK))
            tail = compressor.flush()
            out.write(tail)
            written += len(tail)
            if written % 2:
                out.write(b"\n")
            out.seek(header_at)
            out.write(_ar_header(header, b"data.tar" + suffix.encode(), written))
            out.seek(0, os.SEEK_END)
            src.seek(data_start + size)  # past nfpm's record padding; ar padding follows
    return dropped


def _copy(src: BinaryIO, out: BinaryIO, length: int) -> None:
    while length:
        data = src.read(min(CHUNK, length))
        if not data:
            raise DebFormatError("truncated archive member")
        out.write(data)
        length -= len(data)
