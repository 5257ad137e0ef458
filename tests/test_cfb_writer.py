"""packager/writers/cfb.py: olefile (in strict mode) reads back every stream byte for byte, at
the sizes around the mini-stream and sector boundaries and past the 109 FAT sectors the header
indexes; the directory, parsed here with struct, is a sorted, valid red-black tree."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import olefile
import pytest

from packager.writers.cfb import CompoundFileWriter, name_key

SIZES = [4096, 4095, 0, 1, 63, 64, 65, 512, 513]
ENDOFCHAIN, FREESECT, FATSECT, DIFSECT, NOSTREAM = (
    0xFFFFFFFE,
    0xFFFFFFFF,
    0xFFFFFFFD,
    0xFFFFFFFC,
    0xFFFFFFFF,
)
CLSID = uuid.UUID("000C1084-0000-0000-C000-000000000046").bytes_le  # an MSI database's


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write(streams: list[tuple[str, bytes | Path]], clsid: bytes = bytes(16)) -> bytes:
    buf = io.BytesIO()
    writer = CompoundFileWriter(buf, root_clsid=clsid)
    for name, source in streams:
        if isinstance(source, Path):
            writer.add_stream_file(name, source)
        else:
            writer.add_stream(name, source)
    writer.close()
    return buf.getvalue()


def _ole(raw: bytes) -> olefile.OleFileIO:
    # DEFECT_INCORRECT: olefile raises on anything the spec calls incorrect, not only fatal.
    return olefile.OleFileIO(raw, raise_defects=olefile.DEFECT_INCORRECT)


@dataclass
class Entry:
    sid: int
    name: str
    kind: int
    color: int
    left: int
    right: int
    child: int
    clsid: bytes
    start: int
    size: int
    raw: bytes


@dataclass
class Parsed:
    header: tuple[int, ...]
    fat: list[int]
    entries: list[Entry]
    fat_locations: list[int]
    difat_sectors: list[int]


def _parse(raw: bytes) -> Parsed:
    """An independent reader of what the writer promises (version 3, streams in the root)."""
    assert len(raw) % 512 == 0
    (sig, clsid, minor, major, bom, shift, mini_shift, reserved) = struct.unpack_from(
        "<8s16sHHHHH6s", raw
    )
    assert sig == bytes.fromhex("D0CF11E0A1B11AE1") and clsid == bytes(16)
    assert (minor, major, bom, shift, mini_shift, reserved) == (0x3E, 3, 0xFFFE, 9, 6, bytes(6))
    header = struct.unpack_from("<9I", raw, 40)
    n_dir, n_fat, dir_start, txn, cutoff, minifat_start, n_minifat, difat_start, n_difat = header
    assert (n_dir, txn, cutoff) == (0, 0, 4096)

    def sector(i: int) -> bytes:
        return raw[512 * (i + 1) : 512 * (i + 2)]

    difat = list(struct.unpack_from("<109I", raw, 76))
    difat_sectors = []
    nxt = difat_start
    for _ in range(n_difat):
        difat_sectors.append(nxt)
        ids = struct.unpack("<128I", sector(nxt))
        difat += ids[:127]
        nxt = ids[127]
    assert nxt == ENDOFCHAIN
    locations = difat[:n_fat]
    assert all(x == FREESECT for x in difat[n_fat:])
    fat = [x for loc in locations for x in struct.unpack("<128I", sector(loc))]
    assert len(raw) // 512 - 1 <= len(fat)
    for loc in locations:
        assert fat[loc] == FATSECT
    for loc in difat_sectors:
        assert fat[loc] == DIFSECT

    def chain(start: int) -> list[int]:
        out = []
        while start != ENDOFCHAIN:
            out.append(start)
            start = fat[start]
        return out

    directory = b"".join(sector(s) for s in chain(dir_start))
    entries = []
    for sid in range(len(directory) // 128):
        e = directory[sid * 128 : (sid + 1) * 128]
        name_len, kind, color, left, right, child = struct.unpack_from("<HBBIII", e, 64)
        start, size = struct.unpack_from("<IQ", e, 116)
        name = e[: max(0, name_len - 2)].decode("utf-16-le", "surrogatepass")
        assert e[100:116] == bytes(16)  # creation and modification times zero
        entries.append(Entry(sid, name, kind, color, left, right, child, e[80:96], start, size, e))
    if n_minifat:
        assert chain(minifat_start) and len(chain(minifat_start)) == n_minifat
    else:
        assert minifat_start == ENDOFCHAIN
    return Parsed(header, fat, entries, locations, difat_sectors)


def _check_tree(parsed: Parsed, names: list[str]) -> None:
    entries = parsed.entries
    root = entries[0]
    assert (root.name, root.kind, root.color, root.left, root.right) == (
        "Root Entry",
        5,
        1,
        NOSTREAM,
        NOSTREAM,
    )
    used = {e.sid for e in entries if e.kind}
    for e in entries:
        if not e.kind:  # free: all zeros but the three ids
            assert e.raw == bytes(68) + b"\xff" * 12 + bytes(48)

    order: list[str] = []

    def walk(sid: int, parent_red: bool) -> int:
        """In-order walk; returns the black height and checks no red node has a red child."""
        if sid == NOSTREAM:
            return 1
        e = entries[sid]
        assert e.kind == 2 and e.child == NOSTREAM
        red = e.color == 0
        assert not (red and parent_red), f"red {e.name!r} under a red parent"
        lh = walk(e.left, red)
        order.append(e.name)
        rh = walk(e.right, red)
        assert lh == rh, f"black heights differ under {e.name!r}"
        return lh + (0 if red else 1)

    if root.child != NOSTREAM:
        assert entries[root.child].color == 1  # the tree's root is black
    walk(root.child, False)
    assert order == sorted(names, key=name_key)
    assert len(used) == len(names) + 1


def test_sizes_round_trip(tmp_path: Path) -> None:
    file_stream = tmp_path / "f.bin"
    file_stream.write_bytes(_data(99, 3000))  # a file-backed stream small enough to go mini
    streams: list[tuple[str, bytes | Path]] = [(f"size{size}", _data(size, size)) for size in SIZES]
    streams += [(f"many{i:02d}", _data(1000 + i, i * 97 % 5000)) for i in range(48)]
    streams += [("mid", _data(7, 70_000)), ("fromfile", file_stream)]
    raw = _write(streams)
    ole = _ole(raw)
    assert sorted(e[0] for e in ole.listdir()) == sorted(n for n, _ in streams)
    for name, source in streams:
        expected = source.read_bytes() if isinstance(source, Path) else source
        assert ole.get_size(name) == len(expected)
        assert ole.openstream(name).read() == expected, name
    _check_tree(_parse(raw), [n for n, _ in streams])


def test_msi_style_names(tmp_path: Path) -> None:
    rng = random.Random(5)
    names = ["\x05SummaryInformation", "\u4840\u3f3f\u4577\u446c", "\u4840\u3b3f\u43f2\u4438"]
    names += ["".join(chr(rng.randint(0x3800, 0x4840)) for _ in range(n)) for n in range(1, 32)]
    names += ["Binary.\u3800x", "a" * 31, "\U0001f600" * 15 + "z"]  # pairs count as two units
    streams: list[tuple[str, bytes | Path]] = [(n, _data(i, i * 131)) for i, n in enumerate(names)]
    raw = _write(streams, CLSID)
    ole = _ole(raw)
    for name, data in streams:
        assert ole.openstream(name).read() == data
    parsed = _parse(raw)
    assert parsed.entries[0].clsid == CLSID
    assert ole.root.clsid == "000C1084-0000-0000-C000-000000000046"
    _check_tree(parsed, names)


def test_large_stream_needs_difat(tmp_path: Path) -> None:
    big = tmp_path / "big.cab"
    with big.open("wb") as f:
        for i in range(40):
            f.write(_data(i, 1024 * 1024))
    streams: list[tuple[str, bytes | Path]] = [("big", big)]
    streams += [(f"size{size}", _data(size, size)) for size in SIZES]
    raw = _write(streams)
    parsed = _parse(raw)
    n_fat, n_difat = parsed.header[1], parsed.header[8]
    assert n_fat > 109 and n_difat > 0
    assert len(parsed.difat_sectors) == n_difat
    ole = _ole(raw)
    assert ole.get_size("big") == 40 * 1024 * 1024
    digest = hashlib.sha256(ole.openstream("big").read()).digest()
    assert digest == hashlib.sha256(big.read_bytes()).digest()
    for size in SIZES:
        assert ole.openstream(f"size{size}").read() == _data(size, size)
    _check_tree(parsed, [n for n, _ in streams])


@pytest.mark.parametrize("count", [*range(17), 31, 32, 33, 63, 64, 65, 100])
def test_directory_is_a_red_black_tree(count: int) -> None:
    rng = random.Random(count)
    names = [
        "".join(rng.choice("abcXYZ\u3800\u4000") for _ in range(rng.randint(1, 8)))
        for _ in range(count * 3)
    ]
    unique = list({name_key(n): n for n in names}.values())[:count]
    raw = _write([(n, b"x" * (i % 3)) for i, n in enumerate(unique)])
    _check_tree(_parse(raw), unique)
    assert sorted(e[0] for e in _ole(raw).listdir()) == sorted(unique)


def test_name_order() -> None:
    # Shorter names first, then code unit by code unit after uppercasing.
    names = ["ab", "B", "a", "AC", "\u3800", "Z", "aB\u3800"]
    assert sorted(names, key=name_key) == ["a", "B", "Z", "\u3800", "ab", "AC", "aB\u3800"]
    assert name_key("Name") == name_key("NAME")


def test_refused_names(tmp_path: Path) -> None:
    writer = CompoundFileWriter(io.BytesIO())
    writer.add_stream("Name", b"1")
    for bad in (
        "Name",
        "NAME",
        "name",
        "a" * 32,
        "\U0001f600" * 16,
        "",
        "a/b",
        "a\\b",
        "a:b",
        "a!b",
        "a\0b",
    ):
        with pytest.raises(ValueError):
            writer.add_stream(bad, b"2")
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="duplicate"):
        writer.add_stream_file("nAmE", path)
    writer.add_stream("a" * 31, b"")


def test_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_data(3, 200_000))
    streams: list[tuple[str, bytes | Path]] = [
        ("f", path),
        ("\x05SummaryInformation", b"s" * 300),
        ("z", b""),
        ("\u4840x", _data(1, 5000)),
    ]
    first = _write(streams)
    assert first == _write(streams)
    assert len(first) % 512 == 0


def test_empty_file_is_valid() -> None:
    raw = _write([])
    assert len(raw) == 3 * 512  # header, one FAT sector, one directory sector
    assert _ole(raw).listdir() == []
    _check_tree(_parse(raw), [])


def test_mini_stream_in_root_entry() -> None:
    raw = _write([("a", b"1" * 100), ("b", b"2" * 5000)])
    root = _parse(raw).entries[0]
    assert root.size == 2 * 64  # 100 bytes: two mini sectors
    raw = _write([("b", b"2" * 5000), ("c", b"")])
    root = _parse(raw).entries[0]
    assert (root.start, root.size) == (ENDOFCHAIN, 0)
    assert _ole(raw).openstream("c").read() == b""


@pytest.mark.parametrize("now", [9_000, 11_000], ids=["shrank", "grew"])
def test_file_that_changes_size(tmp_path: Path, now: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    writer = CompoundFileWriter(io.BytesIO())
    writer.add_stream_file("f", path)
    path.write_bytes(b"x" * now)
    with pytest.raises(ValueError, match="changed size"):
        writer.close()


@pytest.mark.skipif(not shutil.which("7zz"), reason="7-Zip (7zz, Debian package 7zip) absent")
def test_7zip_extracts(tmp_path: Path) -> None:
    streams: list[tuple[str, bytes | Path]] = [
        (f"s{size}", _data(size, size)) for size in [*SIZES, 100_000]
    ]
    cfb = tmp_path / "x.cfb"
    cfb.write_bytes(_write(streams))
    subprocess.run(
        ["7zz", "x", "-y", f"-o{tmp_path / 'out'}", str(cfb)],
        check=True,
        capture_output=True,
    )
    for name, data in streams:
        assert (tmp_path / "out" / name).read_bytes() == data
