"""Finish an nfpm rpm: compress its payload on every core.

nfpm compresses an rpm's payload (the cpio archive of the files) on one core, and for our
installers that is nearly all of the build's time. So nfpm writes the payload stored (gzip
level 0: the same cpio, same headers, same tags), and this module copies the rpm with the payload
compressed by :class:`~packager.writers.parallel.ParallelGzip` (the same bytes whatever the
number of cores), then fixes the values that describe the payload's compressed bytes:

- main header: ``PAYLOADDIGEST`` (sha256 of the compressed payload, tag 5092) and
  ``PAYLOADFLAGS`` (the gzip level, tag 1126);
- signature header: ``SHA1`` and ``SHA256`` of the main header (269, 273), ``SIZE`` of header
  plus payload (1000) and ``MD5`` of header plus payload (1004).

Every value keeps its length, so both headers keep their layout and only bytes inside their
data stores change. ``PAYLOADSIZE`` (1007, the uncompressed size) and the per-file digests do not
change, and are checked against what was inflated. Hand-written because no Python library
rewrites an rpm's payload; rpm's own tools (rpmrebuild) re-run a build, which nfpm already did.

Format: rpm's ``doc/manual/format.md`` (lead, signature header padded to 8 bytes, main header,
payload) and ``tags.md``; the result is checked by ``rpm -K`` in tests/test_rpm_payload.py.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from packager.writers.parallel import ParallelGzip

# zlib level 4: the same or smaller payload than nfpm's own gzip (Go, one core) of our
# installers, and on 2 cores in about 0.7 of its time (bench/, measure "rpm").
GZIP_LEVEL = 2
NFPM_COMPRESSION = "gzip:0"  # what finish_rpm expects nfpm to have written: stored blocks

LEAD = 96
LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
CHUNK = 1024 * 1024

# Tag types (rpm's header format)
_INT32, _STRING, _BIN, _STRING_ARRAY, _I18N_STRING = 4, 6, 7, 8, 9

# Signature header tags
_SIG_SIZE, _SIG_MD5, _SIG_SHA1, _SIG_SHA256, _SIG_PAYLOADSIZE = 1000, 1004, 269, 273, 1007
# Main header tags
_PAYLOADCOMPRESSOR, _PAYLOADFLAGS, _PAYLOADDIGEST, _PAYLOADDIGESTALGO = 1125, 1126, 5092, 5093
_PGPHASHALGO_SHA256 = 8


class RpmFormatError(ValueError):
    """The intermediate rpm is not what nfpm writes (a bug or another nfpm, not user input)."""


@dataclass(frozen=True)
class _Field:
    """Where one tag's value sits in the file, and how long it is."""

    offset: int
    length: int


@dataclass
class RpmHeader:
    """One rpm header (the signature or the main one) as read: its bytes and its index."""

    start: int  # file offset of the header's magic
    end: int  # file offset after its data store (and the signature header's padding)
    fields: dict[int, tuple[int, int, int]]  # tag: (type, absolute file offset, count)
    raw: bytes

    def string(self, tag: int) -> str | None:
        """The first string of ``tag`` (a string, string array or i18n string), else None."""
        kind, offset, _ = self.fields.get(tag, (0, 0, 0))
        if kind not in (_STRING, _STRING_ARRAY, _I18N_STRING):
            return None
        local = offset - self.start
        end = self.raw.find(b"\0", local)
        return self.raw[local : end if end >= 0 else len(self.raw)].decode("utf-8", "replace")

    def field(self, tag: int, kind: int, length: int, count: int = 1) -> _Field:
        """The value of ``tag``, which must have type ``kind`` and ``count`` values; for
        strings ``length`` bytes before its NUL, otherwise ``length`` bytes."""
        if tag not in self.fields:
            raise RpmFormatError(f"rpm header has no tag {tag}")
        have, offset, have_count = self.fields[tag]
        if have != kind or have_count != count:
            raise RpmFormatError(f"rpm header tag {tag} has type {have} x{have_count}")
        local = offset - self.start
        if local + length > len(self.raw):
            raise RpmFormatError(f"rpm header tag {tag} runs past its header")
        if kind in (_STRING, _STRING_ARRAY) and self.raw[local + length : local + length + 1] != (
            b"\0"
        ):
            raise RpmFormatError(f"rpm header tag {tag} is not {length} characters long")
        return _Field(offset, length)

    def value(self, f: _Field) -> bytes:
        local = f.offset - self.start
        return self.raw[local : local + f.length]


def read_header(src: IO[bytes], *, padded: bool) -> RpmHeader:
    """The rpm header at ``src``'s position (the signature header is ``padded`` to 8 bytes);
    also what ``inspect`` reads rpms with (packager.installers.linux)."""
    start = src.tell()
    intro = src.read(16)
    if len(intro) != 16 or intro[:4] != HEADER_MAGIC:
        raise RpmFormatError("no rpm header where one belongs")
    count, store = struct.unpack(">II", intro[8:16])
    if count > 100_000 or store > 64 * 1024 * 1024:
        raise RpmFormatError("rpm header sizes out of range")
    body = src.read(16 * count + store)
    if len(body) != 16 * count + store:
        raise RpmFormatError("truncated rpm header")
    if padded:
        src.read((8 - store % 8) % 8)
    data_at = start + 16 + 16 * count
    fields: dict[int, tuple[int, int, int]] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack(">iiii", body[16 * i : 16 * i + 16])
        if not 0 <= offset < store:
            raise RpmFormatError(f"rpm header tag {tag} points outside its data")
        fields[tag] = (kind, data_at + offset, n)
    return RpmHeader(start, src.tell(), fields, intro + body)


def finish_rpm(source: Path, output: Path, level: int = GZIP_LEVEL) -> None:
    """Copy the rpm ``source`` (payload gzip'd at level 0, as nfpm writes it when asked for
    ``gzip:0``) to the new file ``output`` with its payload compressed at ``level``. On any
    error ``output`` is removed."""
    try:
        _finish(source, output, level)
    except BaseException:
        output.unlink(missing_ok=True)
        raise


def _finish(source: Path, output: Path, level: int) -> None:
    with open(source, "rb") as src, open(output, "x+b") as out:
        lead = src.read(LEAD)
        if len(lead) != LEAD or lead[:4] != LEAD_MAGIC:
            raise RpmFormatError(f"{source.name}: not an rpm")
        sig = read_header(src, padded=True)
        main = read_header(src, padded=False)
        if main.value(main.field(_PAYLOADCOMPRESSOR, _STRING, 4)) != b"gzip":
            raise RpmFormatError("rpm payload is not gzip")
        algo = main.field(_PAYLOADDIGESTALGO, _INT32, 4)
        if struct.unpack(">i", main.value(algo))[0] != _PGPHASHALGO_SHA256:
            raise RpmFormatError("rpm payload digest is not sha256")
        flags = main.field(_PAYLOADFLAGS, _STRING, 1)
        digest = main.field(_PAYLOADDIGEST, _STRING_ARRAY, 64)
        sha1 = sig.field(_SIG_SHA1, _STRING, 40)
        sha256 = sig.field(_SIG_SHA256, _STRING, 64)
        size = sig.field(_SIG_SIZE, _INT32, 4)
        md5 = sig.field(_SIG_MD5, _BIN, 16, count=16)
        (payload_size,) = struct.unpack(">I", sig.value(sig.field(_SIG_PAYLOADSIZE, _INT32, 4)))

        # Headers as nfpm wrote them for now (rewritten once the payload is known); the
        # payload right after, streamed: inflated and deflated again chunk by chunk.
        out.write(lead)
        out.write(sig.raw)
        out.write(b"\0" * (main.start - sig.start - len(sig.raw)))  # the signature's padding
        out.write(main.raw)
        payload_digest = hashlib.sha256()
        written = _recompress(src, out, level, payload_digest, payload_size)

        header = bytearray(main.raw)
        _put(header, main.start, flags, str(level).encode())
        _put(header, main.start, digest, payload_digest.hexdigest().encode())
        if len(header) + written >= 1 << 32:
            raise RpmFormatError("rpm too large for its 32-bit SIZE tag")
        signature = bytearray(sig.raw)
        header_sha1 = hashlib.sha1(header).hexdigest()  # noqa: S324 - the format's own
        _put(signature, sig.start, sha1, header_sha1.encode())
        _put(signature, sig.start, sha256, hashlib.sha256(header).hexdigest().encode())
        _put(signature, sig.start, size, struct.pack(">I", len(header) + written))
        _put(signature, sig.start, md5, _md5_of(header, out, main.end, written))
        out.seek(sig.start)
        out.write(signature)
        out.seek(main.start)
        out.write(header)


def _recompress(
    src: BinaryIO, out: BinaryIO, level: int, digest: hashlib._Hash, expected: int
) -> int:
    """Inflate the gzip payload of ``src`` and write it deflated at ``level`` to ``out``,
    hashing what is written; returns the bytes written. The inflated size must be
    ``expected`` and nothing may follow the gzip stream."""
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
    deflate = ParallelGzip(level)
    inflated = written = 0

    def emit(data: bytes) -> None:
        nonlocal written
        if data:
            digest.update(data)
            out.write(data)
            written += len(data)

    while chunk := src.read(CHUNK):
        if inflate.eof:
            raise RpmFormatError("data after the rpm payload")
        plain = inflate.decompress(chunk)
        inflated += len(plain)
        emit(deflate.compress(plain))
    if not inflate.eof:
        raise RpmFormatError("truncated rpm payload")
    if inflate.unused_data:
        raise RpmFormatError("data after the rpm payload")
    if inflated != expected:
        raise RpmFormatError(f"rpm payload is {inflated} bytes, its header says {expected}")
    emit(deflate.flush())
    return written


def _md5_of(header: bytes | bytearray, out: BinaryIO, payload_at: int, length: int) -> bytes:
    """MD5 of ``header`` then the ``length`` payload bytes written at ``payload_at``: read back,
    since the header it starts with depends on the payload's own digest."""
    md5 = hashlib.md5(header)  # noqa: S324 - rpm's format asks for it; not a security check
    out.seek(payload_at)
    left = length
    while left:
        data = out.read(min(CHUNK, left))
        if not data:
            raise RpmFormatError("rpm payload shorter than written")
        md5.update(data)
        left -= len(data)
    return md5.digest()


def _put(buf: bytearray, base: int, f: _Field, value: bytes) -> None:
    if len(value) != f.length:
        raise RpmFormatError(f"new value of {len(value)} bytes for a field of {f.length}")
    buf[f.offset - base : f.offset - base + f.length] = value
