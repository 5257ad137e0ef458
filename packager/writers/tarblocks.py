"""Filter a tar stream at the block level, keeping every header the producer wrote byte for byte.

nfpm's deb and Arch packages list every parent directory of their contents, and the package
manager then owns (and removes, once empty) system directories such as ``/opt``. Both finishers
(``writers.deb``, ``writers.archpkg``) copy nfpm's tar with some directory entries left out.
Python's tarfile would re-encode every header (and so change bytes nfpm wrote); no library
filters a tar stream without re-encoding it, so this reads the 512-byte blocks directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

BLOCK = 512
CHUNK = 1024 * 1024
ZSTD_LEVEL = 3  # dpkg-deb's and nfpm's default


class TarFormatError(ValueError):
    """The intermediate archive is not what nfpm writes (a bug, not user input)."""


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def zstd_compressor() -> Compressor:
    import zstandard  # lazy: only zstd outputs need it

    # write_content_size would need the size up front; checksums let readers detect corruption.
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, write_checksum=True, write_content_size=False, threads=0
    )
    obj: Compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return obj


def read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TarFormatError("truncated archive")
    return data


def tar_size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def tar_name(header: bytes) -> bytes:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[257:265] != b"ustar  \0":
        prefix = header[345:500].split(b"\0", 1)[0]  # POSIX ustar only; GNU uses that space
        if prefix:
            name = prefix + b"/" + name
    return name


def normalise(name: bytes) -> str:
    """A member name as an absolute path without a trailing slash (``./opt/`` -> ``/opt``)."""
    text = name.decode("utf-8", "surrogateescape")
    return "/" + text.removeprefix("./").strip("/")


def with_size(header: bytes, size: int) -> bytes:
    """A copy of a plain ustar/GNU header block with another data size and its checksum."""
    if len(header) != BLOCK or size >= 8**11:
        raise TarFormatError("header cannot take this size")
    out = bytearray(header)
    out[124:136] = b"%011o\0" % size
    out[148:156] = b" " * 8
    out[148:156] = b"%06o\0 " % sum(out)
    return bytes(out)


def tar_records(f: BinaryIO, size: int) -> Iterator[tuple[bytes, str, bytes, BinaryIO, int]]:
    """Yield (headers, path, typeflag, stream, padded data length) per member of a tar of at
    most ``size`` bytes; ``headers`` are the member's raw header blocks, GNU long-name/link and
    pax records before it included. The consumer reads or skips the member's data."""
    remaining = size
    pending = b""
    long_name: bytes | None = None
    while remaining >= BLOCK:
        header = read_exact(f, BLOCK)
        remaining -= BLOCK
        if header == b"\0" * BLOCK:
            return
        typeflag = header[156:157]
        length = tar_size(header)
        padded = -(-length // BLOCK) * BLOCK
        if typeflag in (b"L", b"K", b"x", b"g"):
            data = read_exact(f, padded)
            remaining -= padded
            if typeflag == b"L":
                long_name = data[:length].split(b"\0", 1)[0]
            pending += header + data
            continue
        name = long_name if long_name is not None else tar_name(header)
        yield pending + header, normalise(name), typeflag, f, padded
        remaining -= padded
        pending, long_name = b"", None
    raise TarFormatError("tar has no end-of-archive marker")


def emit(out: BinaryIO, compressor: Compressor, data: bytes) -> int:
    chunk = compressor.compress(data)
    out.write(chunk)
    return len(chunk)


def copy_through(src: BinaryIO, out: BinaryIO, compressor: Compressor, length: int) -> int:
    """Copy ``length`` bytes from ``src`` through ``compressor``; returns the bytes written."""
    written = 0
    while length:
        data = src.read(min(CHUNK, length))
        if not data:
            raise TarFormatError("truncated tar member")
        length -= len(data)
        written += emit(out, compressor, data)
    return written


def skip(src: BinaryIO, length: int) -> None:
    """Skip ``length`` bytes of a stream that may not be seekable (a decompressor)."""
    while length:
        data = src.read(min(CHUNK, length))
        if not data:
            raise TarFormatError("truncated tar member")
        length -= len(data)
