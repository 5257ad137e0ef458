"""A streaming writer for Microsoft Cabinet files (MS-CAB) with MSZIP compression: the payload
an MSI carries as an embedded stream.

gcab writes cabinets but only from a staged directory and with its own member order, and no
maintained PyPI library writes them, so the format is written here: one folder holding the
members in the given order (the MSI's File.Sequence order), cut into CFDATA blocks of 32 KiB
of uncompressed data that run across member boundaries. Every block is "CK" plus a raw deflate
stream of its own: MSZIP decompressors keep the previous block as history, but nothing requires
a compressor to use it. All sizes are known in advance, so the header, folder and file table are
written first, then the blocks as members are read, and only cbCabinet is patched at the end;
no more than one block is held in memory.
"""

from __future__ import annotations

import calendar
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

BLOCK = 32768  # uncompressed bytes per CFDATA (MSZIP's maximum)
MAX_BLOCKS = 0xFFFF  # cCFData is 16 bits
MAX_FOLDER = BLOCK * MAX_BLOCKS  # 0x7FFF8000, MS-CAB's limit on a folder's (and a file's) size
MAX_DATA = BLOCK + 12  # MS-CAB's limit on a CFDATA's compressed bytes
MAX_NAME = 255  # CB_MAX_FILENAME, 256 with the NUL
TYPE_MSZIP = 1
ATTRIB_ARCHIVE = 0x20

CFHEADER = struct.Struct("<4sIIIIIBBHHHHH")
CFFOLDER = struct.Struct("<IHH")
CFFILE = struct.Struct("<IIHHHH")
CFDATA = struct.Struct("<IHH")

# DOS dates cover 1980-01-01 to 2107-12-31 (2-second steps).
DOS_MIN = calendar.timegm((1980, 1, 1, 0, 0, 0))
DOS_MAX = calendar.timegm((2107, 12, 31, 23, 59, 58))


@dataclass(frozen=True)
class CabMember:
    """One file of the cabinet: its stored name, where its bytes come from, its size."""

    name: str  # the name stored in the cabinet (for an MSI: the File table key, ASCII)
    path: Path  # where the bytes come from
    size: int  # expected size; a mismatch while reading raises ValueError


def dos_datetime(seconds: int) -> tuple[int, int]:
    """(date, time) in DOS format for Unix ``seconds`` read as UTC, clamped to DOS's range."""
    when = datetime.fromtimestamp(min(max(seconds, DOS_MIN), DOS_MAX), timezone.utc)
    date = (when.year - 1980) << 9 | when.month << 5 | when.day
    time = when.hour << 11 | when.minute << 5 | when.second // 2
    return date, time


def checksum(data: bytes, seed: int = 0) -> int:
    """MS-CAB's CFDATA checksum: XOR of the little-endian 32-bit words, odd tail bytes last.

    The words are XORed by folding one big integer in halves (C speed, ~13 steps for 32 KiB)
    instead of a Python loop over 8192 words; it costs about 3% of compressing the block, so
    every block carries a real checksum that extractors verify, not the "none" value 0.
    """
    whole = len(data) & ~3
    value = int.from_bytes(memoryview(data)[:whole], "little")
    words = whole // 4
    while words > 1:
        low = words // 2
        bits = 32 * low
        value = (value >> bits) ^ (value & ((1 << bits) - 1))
        words -= low
    tail = 0
    for byte in data[whole:]:  # at most 3 bytes, the first one most significant
        tail = tail << 8 | byte
    return seed ^ value ^ tail


def _mszip(raw: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = compressor.compress(raw) + compressor.flush(zlib.Z_FINISH)
    if len(body) > len(raw) + 5:
        # Incompressible data: zlib may split it into several stored blocks, each with a 5-byte
        # header, overrunning MAX_DATA; one final stored block (BFINAL=1, BTYPE=00) never does.
        body = b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
    return b"CK" + body


def _check(members: Sequence[CabMember]) -> int:
    """Validate the members; return their total size."""
    if not members:
        raise ValueError("a cabinet needs at least one file")
    if len(members) > 0xFFFF:
        raise ValueError(f"{len(members)} files: a cabinet holds at most 65535")
    names: set[str] = set()
    total = 0
    for m in members:
        if not m.name or not m.name.isascii() or "\0" in m.name or len(m.name) > MAX_NAME:
            raise ValueError(f"cabinet member name {m.name!r} must be 1 to 255 ASCII characters")
        if m.name in names:
            raise ValueError(f"duplicate cabinet member name {m.name!r}")
        names.add(m.name)
        if m.size < 0:
            raise ValueError(f"{m.path}: negative size {m.size}")
        total += m.size
    if total > MAX_FOLDER:
        raise ValueError(
            f"{total} bytes to archive: a cabinet folder holds at most {MAX_FOLDER} "
            "(65535 blocks of 32 KiB)"
        )
    return total


def write_cab(
    out: BinaryIO, members: Sequence[CabMember], *, timestamp: int | None, level: int = 6
) -> None:
    """Write ``members`` as an MSZIP cabinet to ``out`` (seekable, written from its position).

    ``timestamp`` (SOURCE_DATE_EPOCH) dates every member; None uses each file's mtime. Both
    are read as UTC, so the bytes do not depend on the local time zone.
    """
    total = _check(members)
    blocks = -(-total // BLOCK)
    table = bytearray()
    offset = 0
    for m in members:
        when = timestamp if timestamp is not None else int(m.path.stat().st_mtime)
        date, time = dos_datetime(when)
        table += CFFILE.pack(m.size, offset, 0, date, time, ATTRIB_ARCHIVE)
        table += m.name.encode("ascii") + b"\0"
        offset += m.size
    files_at = CFHEADER.size + CFFOLDER.size
    data_at = files_at + len(table)

    start = out.tell()
    # cbCabinet (third field) is patched once the blocks are written; setID 0: reproducible.
    out.write(CFHEADER.pack(b"MSCF", 0, 0, 0, files_at, 0, 3, 1, 1, len(members), 0, 0, 0))
    out.write(CFFOLDER.pack(data_at, blocks, TYPE_MSZIP))
    out.write(table)

    written = 0

    def emit(raw: bytes) -> None:
        nonlocal written
        data = _mszip(raw, level)
        if len(data) > MAX_DATA:  # cannot happen (stored fallback), but never write a bad cab
            raise ValueError(f"an MSZIP block of {len(data)} bytes exceeds {MAX_DATA}")
        # The checksum covers the data, then cbData and cbUncomp as one little-endian word.
        csum = checksum(data, len(data) | len(raw) << 16)
        out.write(CFDATA.pack(csum, len(data), len(raw)))
        out.write(data)
        written += 1

    buf = bytearray()
    for m in members:
        left = m.size
        with m.path.open("rb") as f:
            while left:
                chunk = f.read(min(BLOCK - len(buf), left))
                if not chunk:
                    break
                buf += chunk
                left -= len(chunk)
                if len(buf) == BLOCK:
                    emit(bytes(buf))
                    buf.clear()
            if left or f.read(1):
                raise ValueError(f"{m.path}: expected {m.size} bytes, the file has changed size")
    if buf:
        emit(bytes(buf))
    if written != blocks:  # pragma: no cover - sizes were checked file by file
        raise ValueError(f"wrote {written} blocks, announced {blocks}")

    end = out.tell()
    out.seek(start + 8)
    out.write(struct.pack("<I", end - start))
    out.seek(end)
