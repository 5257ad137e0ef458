"""Finish an nfpm deb: drop the directory entries the package must not own, then compress.

dpkg records every directory in a package's data archive as owned by the package and removes
it, once empty, when the last owner goes. nfpm lists every parent directory ("implicit" ones
included: ``./opt/``, ``./usr/local/``, ``./usr/local/bin/``) and has no option to leave them
out, so removing our package deleted ``/usr/local/bin`` and ``/opt`` on a fresh Debian, where
no package owns them. nfpm therefore writes the deb uncompressed, and this module copies it
with only the directories we own, compressing ``data.tar`` on the way (one pass, streamed; the
preinst creates the parents when they are missing, as dpkg needs them to exist).

The archive is filtered at the tar block level, not re-encoded: every header nfpm wrote is kept
byte for byte. No library filters an ar/tar stream like this without re-encoding it.
"""

from __future__ import annotations

import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
BLOCK = 512
CHUNK = 1024 * 1024
GZIP_LEVEL = 9  # what nfpm and dpkg-deb use for gzip'd debs
XZ_PRESET = 6  # dpkg-deb's default
ZSTD_LEVEL = 3  # dpkg-deb's and nfpm's default


class DebFormatError(ValueError):
    """The intermediate deb is not what nfpm writes (a bug, not user input)."""


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _zstd() -> _Compressor:
    import zstandard  # lazy: only zstd debs need it

    # write_content_size would need the size up front; checksums let dpkg detect corruption.
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, write_checksum=True, write_content_size=False, threads=0
    )
    obj: _Compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return obj


COMPRESSORS: dict[str, tuple[str, Callable[[], _Compressor]]] = {
    # wbits 31: a gzip header with mtime 0 and no file name, so the bytes are reproducible.
    "gzip": (".gz", lambda: zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)),
    "xz": (
        ".xz",
        lambda: lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET),
    ),
    "zstd": (".zst", _zstd),
    "none": ("", _Identity),
}


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DebFormatError("truncated archive")
    return data


def _tar_size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def _tar_name(header: bytes) -> bytes:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[257:265] != b"ustar  \0":
        prefix = header[345:500].split(b"\0", 1)[0]  # POSIX ustar only; GNU uses that space
        if prefix:
            name = prefix + b"/" + name
    return name


def _normalise(name: bytes) -> str:
    text = name.decode("utf-8", "surrogateescape")
    return "/" + text.removeprefix("./").strip("/")


def _tar_records(f: BinaryIO, size: int) -> Iterator[tuple[bytes, str, bytes, BinaryIO, int]]:
    """Yield (headers, path, typeflag, stream, data length) per member; ``headers`` are the
    member's raw header blocks, GNU long-name/link and pax records before it included."""
    remaining = size
    pending = b""
    long_name: bytes | None = None
    while remaining >= BLOCK:
        header = _read_exact(f, BLOCK)
        remaining -= BLOCK
        if header == b"\0" * BLOCK:
            return
        typeflag = header[156:157]
        length = _tar_size(header)
        padded = -(-length // BLOCK) * BLOCK
        if typeflag in (b"L", b"K", b"x", b"g"):
            data = _read_exact(f, padded)
            remaining -= padded
            if typeflag == b"L":
                long_name = data[:length].split(b"\0", 1)[0]
            pending += header + data
            continue
        name = long_name if long_name is not None else _tar_name(header)
        yield pending + header, _normalise(name), typeflag, f, padded
        remaining -= padded
        pending, long_name = b"", None
    raise DebFormatError("data.tar has no end-of-archive marker")


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
            for blocks, path, typeflag, stream, length in _tar_records(src, size):
                if typeflag == b"5" and path not in owned_dirs:
                    dropped.append(path)
                    stream.seek(length, os.SEEK_CUR)
                    continue
                written += _emit(out, compressor, blocks)
                written += _copy_through(stream, out, compressor, length)
            written += _emit(out, compressor, b"\0" * (2 * BLOCK))
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


def _emit(out: BinaryIO, compressor: _Compressor, data: bytes) -> int:
    chunk = compressor.compress(data)
    out.write(chunk)
    return len(chunk)


def _copy_through(src: BinaryIO, out: BinaryIO, compressor: _Compressor, length: int) -> int:
    written = 0
    while length:
        data = src.read(min(CHUNK, length))
        if not data:
            raise DebFormatError("truncated data.tar")
        length -= len(data)
        written += _emit(out, compressor, data)
    return written


def _copy(src: BinaryIO, out: BinaryIO, length: int) -> None:
    while length:
        data = src.read(min(CHUNK, length))
        if not data:
            raise DebFormatError("truncated archive member")
        out.write(data)
        length -= len(data)
