"""A streaming writer for Microsoft Cabinet files (MS-CAB) with MSZIP compression: the payload
an MSI carries as an embedded stream.

gcab writes cabinets but only from a staged directory and with its own member order, and no
maintained PyPI library writes them, so the format is written here: one folder holding the
members in the given order (the MSI's File.Sequence order), cut into CFDATA blocks of 32 KiB
of uncompressed data that run across member boundaries. Every block is "CK" plus a raw deflate
stream of its own: MSZIP decompressors keep the previous block as history, but nothing requires
a compressor to use it; independent blocks also compress in parallel. A member repeating an
earlier one's bytes points at them (``_layout``). All sizes are known in advance, so the
header, folder and file table are written first, then the blocks as members are read, and only
cbCabinet is patched at the end; memory holds a few 1 MiB batches of blocks per core.
"""

from __future__ import annotations

import calendar
import hashlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import BinaryIO

from packager.writers.parallel import ordered_map

BLOCK = 32768  # uncompressed bytes per CFDATA (MSZIP's maximum)
BATCH = 32 * BLOCK  # uncompressed bytes per task of the compression pool
SHARE_MIN = 4096  # smallest repeated member stored once (see _layout)
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


def _digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(BATCH):
            digest.update(chunk)
    return digest.digest()


def _layout(members: Sequence[CabMember]) -> tuple[list[CabMember], list[int]]:
    """The members whose bytes go in the folder, and every member's offset in it.

    A member with the same bytes as an earlier one points at that one's bytes instead (what
    WiX's cabinets do, e.g. for the service's copy of orbit.exe): the copy is neither stored
    nor compressed again. Only large members of equal sizes are hashed to find them (small
    ones are not worth a read), and by content, never by inode, so the bytes do not depend on
    whether the stage linked or copied files.
    """
    sizes: dict[int, int] = {}
    for m in members:
        sizes[m.size] = sizes.get(m.size, 0) + 1
    stored: list[CabMember] = []
    offsets: list[int] = []
    first: dict[tuple[int, bytes], int] = {}
    offset = 0
    for m in members:
        if m.size >= SHARE_MIN and sizes[m.size] > 1:
            key = (m.size, _digest(m.path))
            if key in first:
                offsets.append(first[key])
                continue
            first[key] = offset
        stored.append(m)
        offsets.append(offset)
        offset += m.size
    return stored, offsets


def _frame(level: int, raw: bytes) -> tuple[bytes, int]:
    """CFDATA blocks (header and MSZIP data) for ``raw``, cut every 32 KiB; and their count."""
    parts: list[bytes] = []
    for at in range(0, len(raw), BLOCK):
        block = raw[at : at + BLOCK]
        data = _mszip(block, level)
        if len(data) > MAX_DATA:  # cannot happen (stored fallback), but never write a bad cab
            raise ValueError(f"an MSZIP block of {len(data)} bytes exceeds {MAX_DATA}")
        # The checksum covers the data, then cbData and cbUncomp as one little-endian word.
        csum = checksum(data, len(data) | len(block) << 16)
        parts += (CFDATA.pack(csum, len(data), len(block)), data)
    return b"".join(parts), len(parts) // 2


def _batches(members: Sequence[CabMember]) -> Iterator[bytes]:
    """The members' bytes back to back, in batches of BATCH (a whole number of blocks: block
    boundaries stay at fixed offsets of the folder), the last one shorter."""
    buf = bytearray()
    for m in members:
        left = m.size
        with m.path.open("rb") as f:
            while left:
                chunk = f.read(min(BATCH - len(buf), left))
                if not chunk:
                    break
                buf += chunk
                left -= len(chunk)
                if len(buf) == BATCH:
                    yield bytes(buf)
                    buf.clear()
            if left or f.read(1):
                raise ValueError(f"{m.path}: expected {m.size} bytes, the file has changed size")
    if buf:
        yield bytes(buf)


def write_cab(
    out: BinaryIO, members: Sequence[CabMember], *, timestamp: int | None, level: int = 6
) -> None:
    """Write ``members`` as an MSZIP cabinet to ``out`` (seekable, written from its position).

    ``timestamp`` (SOURCE_DATE_EPOCH) dates every member; None uses each file's mtime. Both
    are read as UTC, so the bytes do not depend on the local time zone.
    """
    _check(members)
    stored, offsets = _layout(members)
    blocks = -(-sum(m.size for m in stored) // BLOCK)
    table = bytearray()
    for m, offset in zip(members, offsets, strict=True):
        when = timestamp if timestamp is not None else int(m.path.stat().st_mtime)
        date, time = dos_datetime(when)
        table += CFFILE.pack(m.size, offset, 0, date, time, ATTRIB_ARCHIVE)
        table += m.name.encode("ascii") + b"\0"
    files_at = CFHEADER.size + CFFOLDER.size
    data_at = files_at + len(table)

    start = out.tell()
    # cbCabinet (third field) is patched once the blocks are written; setID 0: reproducible.
    out.write(CFHEADER.pack(b"MSCF", 0, 0, 0, files_at, 0, 3, 1, 1, len(members), 0, 0, 0))
    out.write(CFFOLDER.pack(data_at, blocks, TYPE_MSZIP))
    out.write(table)

    written = 0
    # Blocks are independent, so batches of them compress on every core (writers.parallel;
    # zlib releases the GIL) and are written in order: the same bytes whatever the cores.
    for framed, count in ordered_map(partial(_frame, level), _batches(stored)):
        out.write(framed)
        written += count
    if written != blocks:  # pragma: no cover - sizes were checked file by file
        raise ValueError(f"wrote {written} blocks, announced {blocks}")

    end = out.tell()
    out.seek(start + 8)
    out.write(struct.pack("<I", end - start))
    out.seek(end)
