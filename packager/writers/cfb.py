"""A writer for Compound File Binary files (MS-CFB version 3, 512-byte sectors): the container
of an MSI database.

wixl was the only Linux tool writing MSIs and no maintained PyPI library writes compound files
(olefile reads, and only overwrites streams in place), so the format is written here. Every
stream sits in the root storage, which is all an MSI needs. Sizes are known once ``close()`` is
called, so the file is laid out then and written front to back in one pass: header, FAT, DIFAT,
directory, MiniFAT, mini stream, then the large streams, each contiguous, in the order they were
added. File-backed streams are copied in 1 MiB chunks; only the allocation tables (4 bytes per
512-byte sector) are held in memory. Timestamps are zero: same inputs, same bytes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096  # streams shorter than this live in the mini stream
IDS_PER_SECTOR = SECTOR // 4
HEADER_DIFAT = 109  # FAT sector locations the header itself holds
MAX_NAME_UNITS = 31  # 32 UTF-16 code units with the terminating NUL
MAX_FILE_SIZE = 2**31  # MS-CFB 2.9: a 512-byte-sector file must not exceed 2 GB

DIFSECT = 0xFFFFFFFC
FATSECT = 0xFFFFFFFD
ENDOFCHAIN = 0xFFFFFFFE
FREESECT = 0xFFFFFFFF
NOSTREAM = 0xFFFFFFFF

SIGNATURE = bytes.fromhex("D0CF11E0A1B11AE1")
STREAM, ROOT = 2, 5  # directory entry object types (0: free)
RED, BLACK = 0, 1

HEADER = struct.Struct("<8s16sHHHHH6sIIIIIIIII436s")
ENTRY = struct.Struct("<64sHBBIII16sIQQIQ")


@dataclass
class _Stream:
    name: str
    size: int
    source: bytes | Path  # in memory, or a file copied at close()
    start: int = ENDOFCHAIN  # first (mini) sector, set by the layout


def _upcase(unit: int) -> int:
    # MS-CFB compares names after simple uppercasing; a full mapping longer than one character
    # (German sharp s) means there is no simple one. Surrogates stay as they are.
    if 0xD800 <= unit <= 0xDFFF:
        return unit
    upper = chr(unit).upper()
    return ord(upper) if len(upper) == 1 and ord(upper) <= 0xFFFF else unit


def name_key(name: str) -> tuple[int, tuple[int, ...]]:
    """MS-CFB's directory order: length in UTF-16 code units, then uppercased unit by unit."""
    encoded = name.encode("utf-16-le", "surrogatepass")
    units = struct.unpack(f"<{len(encoded) // 2}H", encoded)
    return len(units), tuple(_upcase(u) for u in units)


def _sectors(size: int, unit: int = SECTOR) -> int:
    return -(-size // unit)


# FAT, MiniFAT and DIFAT are arrays of 32-bit sector ids ("I" is 4 bytes wherever CPython runs):
# chains are filled by slice assignment and written with tobytes(), no per-entry Python loop.
def _chain(table: array[int], start: int, count: int) -> None:
    """Mark ``count`` consecutive sectors from ``start`` as one chain in a FAT or MiniFAT."""
    if count:
        table[start : start + count - 1] = array("I", range(start + 1, start + count))
        table[start + count - 1] = ENDOFCHAIN


def _le(table: array[int]) -> bytes:
    if sys.byteorder == "big":
        table = array("I", table)
        table.byteswap()
    return table.tobytes()


def _tree(count: int) -> tuple[int, list[int], list[int], list[int]]:
    """A red-black tree over ids 1..count (already in directory order): root, left, right, color.

    Median splits give a tree whose levels are all full but the deepest, so with that level red
    and every other node black each root-to-leaf path crosses the same number of black nodes, and
    no red node has a red child (a red node's children are all NOSTREAM).
    """
    left = [NOSTREAM] * (count + 1)
    right = [NOSTREAM] * (count + 1)
    depth = [0] * (count + 1)

    def build(lo: int, hi: int, level: int) -> int:
        if lo >= hi:
            return NOSTREAM
        mid = (lo + hi) // 2
        depth[mid] = level
        left[mid] = build(lo, mid, level + 1)
        right[mid] = build(mid + 1, hi, level + 1)
        return mid

    root = build(1, count + 1, 0)
    deepest = max(depth[1:], default=0)
    # The tree's root stays black (a one-node tree has it as its deepest level).
    color = [RED if d == deepest and d > 0 else BLACK for d in depth]
    return root, left, right, color


class CompoundFileWriter:
    """Collect streams (all in the root storage), then ``close()`` writes the compound file."""

    def __init__(self, out: BinaryIO, *, root_clsid: bytes = bytes(16)) -> None:
        if len(root_clsid) != 16:
            raise ValueError("root_clsid must be 16 bytes")
        self._out = out
        self._clsid = root_clsid
        self._streams: list[_Stream] = []
        self._keys: set[tuple[int, tuple[int, ...]]] = set()
        self._closed = False

    def _add(self, stream: _Stream) -> None:
        if self._closed:
            raise ValueError("the compound file is already written")
        name = stream.name
        key = name_key(name)
        if not name or key[0] > MAX_NAME_UNITS:
            raise ValueError(f"stream name {name!r} must be 1 to 31 UTF-16 code units long")
        if any(c in name for c in "/\\:!\0"):
            raise ValueError(f"stream name {name!r}: MS-CFB forbids / \\ : ! and NUL in names")
        if key in self._keys:  # names are unique regardless of case, as readers look them up
            raise ValueError(f"duplicate stream name {name!r}")
        if stream.size >= MAX_FILE_SIZE:
            raise ValueError(f"stream {name!r}: {stream.size} bytes, over the 2 GB of CFB v3")
        self._keys.add(key)
        self._streams.append(stream)

    def add_stream(self, name: str, data: bytes) -> None:
        """Add a stream held in memory."""
        self._add(_Stream(name, len(data), bytes(data)))

    def add_stream_file(self, name: str, path: Path) -> None:
        """Add a stream copied from ``path`` at ``close()``; it must keep its current size."""
        self._add(_Stream(name, path.stat().st_size, path))

    def close(self) -> None:
        """Lay out and write the whole file (front to back: ``out`` needs no seeking)."""
        if self._closed:
            return
        self._closed = True
        streams = self._streams
        small = [s for s in streams if 0 < s.size < MINI_CUTOFF]
        large = [s for s in streams if s.size >= MINI_CUTOFF]

        minis = 0
        for s in small:
            s.start = minis
            minis += _sectors(s.size, MINI_SECTOR)
        mini_stream_sectors = _sectors(minis * MINI_SECTOR)
        minifat_sectors = _sectors(minis, IDS_PER_SECTOR)
        dir_sectors = _sectors(len(streams) + 1, SECTOR // ENTRY.size)
        large_sectors = sum(_sectors(s.size) for s in large)
        data_sectors = dir_sectors + minifat_sectors + mini_stream_sectors + large_sectors

        # The FAT covers every sector, its own and the DIFAT's included: grow both to a fixpoint.
        fat_sectors = difat_sectors = 0
        while True:
            total = data_sectors + fat_sectors + difat_sectors
            need_fat = _sectors(total, IDS_PER_SECTOR)
            need_difat = _sectors(max(0, need_fat - HEADER_DIFAT), IDS_PER_SECTOR - 1)
            if (need_fat, need_difat) == (fat_sectors, difat_sectors):
                break
            fat_sectors, difat_sectors = need_fat, need_difat
        if (total + 1) * SECTOR > MAX_FILE_SIZE:
            raise ValueError(f"{(total + 1) * SECTOR} bytes: over the 2 GB of a CFB v3 file")

        difat_start = fat_sectors
        dir_start = difat_start + difat_sectors
        minifat_start = dir_start + dir_sectors
        mini_stream_start = minifat_start + minifat_sectors
        next_sector = mini_stream_start + mini_stream_sectors
        for s in large:
            s.start = next_sector
            next_sector += _sectors(s.size)

        fat = array("I", [FREESECT]) * (fat_sectors * IDS_PER_SECTOR)
        fat[0:fat_sectors] = array("I", [FATSECT]) * fat_sectors
        fat[difat_start:dir_start] = array("I", [DIFSECT]) * difat_sectors
        _chain(fat, dir_start, dir_sectors)
        _chain(fat, minifat_start, minifat_sectors)
        _chain(fat, mini_stream_start, mini_stream_sectors)
        for s in large:
            _chain(fat, s.start, _sectors(s.size))

        minifat = array("I", [FREESECT]) * (minifat_sectors * IDS_PER_SECTOR)
        for s in small:
            _chain(minifat, s.start, _sectors(s.size, MINI_SECTOR))

        locations = list(range(fat_sectors))
        head, rest = locations[:HEADER_DIFAT], locations[HEADER_DIFAT:]
        difat = array("I", [FREESECT]) * (difat_sectors * IDS_PER_SECTOR)
        per = IDS_PER_SECTOR - 1  # the last entry of a DIFAT sector points to the next one
        for i in range(difat_sectors):
            part = rest[i * per : (i + 1) * per]
            base = i * IDS_PER_SECTOR
            difat[base : base + len(part)] = array("I", part)
            difat[base + per] = difat_start + i + 1 if i + 1 < difat_sectors else ENDOFCHAIN

        header = HEADER.pack(
            SIGNATURE,
            bytes(16),
            0x003E,  # minor version
            3,  # major version: 512-byte sectors
            0xFFFE,  # byte order mark: little-endian
            9,  # sector shift: 2**9
            6,  # mini sector shift: 2**6
            bytes(6),
            0,  # directory sectors: always 0 in version 3
            fat_sectors,
            dir_start,
            0,  # transaction signature
            MINI_CUTOFF,
            minifat_start if minifat_sectors else ENDOFCHAIN,
            minifat_sectors,
            difat_start if difat_sectors else ENDOFCHAIN,
            difat_sectors,
            _le(array("I", head + [FREESECT] * (HEADER_DIFAT - len(head)))),
        )

        out = self._out
        out.write(header)
        out.write(_le(fat))
        out.write(_le(difat))
        out.write(self._directory(minis, mini_stream_start, dir_sectors))
        out.write(_le(minifat))
        for s in small:
            self._copy(s, MINI_SECTOR)
        out.write(bytes(mini_stream_sectors * SECTOR - minis * MINI_SECTOR))
        for s in large:
            self._copy(s, SECTOR)

    def _directory(self, minis: int, mini_stream_start: int, dir_sectors: int) -> bytes:
        ordered = sorted(self._streams, key=lambda s: name_key(s.name))
        root, left, right, color = _tree(len(ordered))

        parts = [
            ENTRY.pack(
                "Root Entry\0".encode("utf-16-le"),
                22,
                ROOT,
                BLACK,
                NOSTREAM,
                NOSTREAM,
                root,
                self._clsid,
                0,
                0,
                0,
                mini_stream_start if minis else ENDOFCHAIN,
                minis * MINI_SECTOR,
            )
        ]
        for i, s in enumerate(ordered, start=1):
            encoded = s.name.encode("utf-16-le", "surrogatepass") + b"\0\0"
            parts.append(
                ENTRY.pack(
                    encoded,
                    len(encoded),
                    STREAM,
                    color[i],
                    left[i],
                    right[i],
                    NOSTREAM,
                    bytes(16),
                    0,
                    0,
                    0,
                    s.start if s.size else ENDOFCHAIN,
                    s.size,
                )
            )
        free = ENTRY.pack(b"", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM, bytes(16), 0, 0, 0, 0, 0)
        parts += [free] * (dir_sectors * SECTOR // ENTRY.size - len(parts))
        return b"".join(parts)

    def _copy(self, stream: _Stream, unit: int) -> None:
        """Write a stream's bytes padded to ``unit``; a file must still have its size."""
        out = self._out
        if isinstance(stream.source, bytes):
            out.write(stream.source)
        else:
            left = stream.size
            with stream.source.open("rb") as f:
                while left and (chunk := f.read(min(CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
                if left or f.read(1):
                    raise ValueError(f"{stream.source} changed size while being written")
        out.write(bytes(-stream.size % unit))
