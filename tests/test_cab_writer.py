"""packager/writers/cab.py: the cabinet's structure, parsed here with struct and inflated with
zlib (an oracle always present), and extraction by gcab, cabextract and 7-Zip where installed,
byte for byte; same inputs, same bytes; sizes that do not match refuse."""

from __future__ import annotations

import calendar
import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from packager.writers.cab import CabMember, checksum, dos_datetime, write_cab

SDE = 1700000000  # 2023-11-14 22:13:20 UTC


def _member(directory: Path, name: str, data: bytes) -> CabMember:
    path = directory / name
    path.write_bytes(data)
    return CabMember(name, path, len(data))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[CabMember]:
    d = tmp_path_factory.mktemp("members")
    rng = random.Random(1)
    out = [
        _member(d, "empty", b""),
        _member(d, "one", b"\x07"),
        _member(d, "block", rng.randbytes(32768)),
        _member(d, "block_plus_one", rng.randbytes(32769)),
        _member(d, "empty_middle", b""),
    ]
    text = b"The quick brown fox jumps over the lazy dog.\n"
    for i in range(120):  # small files, compressible and not, crossing block boundaries
        size = rng.randint(0, 3000)
        data = rng.randbytes(size) if i % 2 else (text * (size // len(text) + 1))[:size]
        out.append(_member(d, f"small{i:03d}", data))
    out.append(_member(d, "mixed.bin", rng.randbytes(5 << 20) + bytes(5 << 20)))
    out.append(_member(d, "last", b"end"))
    return out


def _write(tmp_path: Path, members: list[CabMember], timestamp: int | None = SDE) -> Path:
    cab = tmp_path / "x.cab"
    with cab.open("wb") as f:
        write_cab(f, members, timestamp=timestamp)
    return cab


def _reference_checksum(data: bytes, seed: int) -> int:
    """libmspack's cabd_checksum, word by word."""
    csum = seed
    whole = len(data) // 4 * 4
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        csum ^= word
    tail = 0
    for byte in data[whole:]:
        tail = tail << 8 | byte
    return csum ^ tail


def _read_cab(raw: bytes) -> dict[str, tuple[bytes, int, int, int]]:
    """Parse and inflate: name -> (bytes, date, time, attribs), checking every field on the way."""
    (sig, r1, cb_cabinet, r2, coff_files, r3, minor, major, folders, files, flags, set_id, icab) = (
        struct.unpack_from("<4sIIIIIBBHHHHH", raw)
    )
    assert (sig, r1, r2, r3, minor, major, folders, flags, set_id, icab) == (
        b"MSCF", 0, 0, 0, 3, 1, 1, 0, 0, 0,
    )  # fmt: skip
    assert cb_cabinet == len(raw) and coff_files == 44
    data_at, n_blocks, compress = struct.unpack_from("<IHH", raw, 36)
    assert compress == 1
    table = []
    pos = coff_files
    for _ in range(files):
        size, offset, folder, date, time, attribs = struct.unpack_from("<IIHHHH", raw, pos)
        end = raw.index(b"\0", pos + 16)
        table.append((raw[pos + 16 : end].decode("ascii"), size, offset, date, time, attribs))
        assert folder == 0
        pos = end + 1
    assert pos == data_at
    stream = bytearray()
    for i in range(n_blocks):
        csum, cb_data, cb_uncomp = struct.unpack_from("<IHH", raw, pos)
        data = raw[pos + 8 : pos + 8 + cb_data]
        assert cb_data <= 32768 + 12 and data[:2] == b"CK"
        assert csum == _reference_checksum(data, cb_data | cb_uncomp << 16)
        # MSZIP: each block's deflate stream may refer to the previous 32 KiB.
        inflate = zlib.decompressobj(-15, zdict=bytes(stream[-32768:]))
        block = inflate.decompress(data[2:]) + inflate.flush()
        assert inflate.eof and not inflate.unused_data
        assert len(block) == cb_uncomp
        assert cb_uncomp == 32768 or i == n_blocks - 1
        stream += block
        pos += 8 + cb_data
    assert pos == len(raw)
    offset = 0
    out = {}
    for name, size, start, date, time, attribs in table:
        assert start == offset
        out[name] = (bytes(stream[start : start + size]), date, time, attribs)
        offset += size
    assert offset == len(stream)
    return out


def test_structure_and_contents(tmp_path: Path, members: list[CabMember]) -> None:
    cab = _write(tmp_path, members)
    contents = _read_cab(cab.read_bytes())
    assert list(contents) == [m.name for m in members]
    date, time = dos_datetime(SDE)
    for m in members:
        assert contents[m.name] == (m.path.read_bytes(), date, time, 0x20)


def _gcab(cab: Path, out: Path) -> None:
    subprocess.run(["gcab", "-x", "-C", str(out), str(cab)], check=True, capture_output=True)


def _cabextract(cab: Path, out: Path) -> None:
    subprocess.run(["cabextract", "-q", "-d", str(out), str(cab)], check=True, capture_output=True)


def _7zz(cab: Path, out: Path) -> None:
    subprocess.run(["7zz", "x", "-y", f"-o{out}", str(cab)], check=True, capture_output=True)


EXTRACTORS = {
    "gcab": (_gcab, "gcab"),
    "cabextract": (_cabextract, "cabextract"),
    "7zz": (_7zz, "7zip"),
}


@pytest.mark.parametrize("tool", list(EXTRACTORS))
def test_extractors(tmp_path: Path, members: list[CabMember], tool: str) -> None:
    extract, package = EXTRACTORS[tool]
    if not shutil.which(tool):
        pytest.skip(f"{tool} absent (Debian package {package})")
    cab = _write(tmp_path, members)
    out = tmp_path / "out"
    out.mkdir()
    extract(cab, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(m.name for m in members)
    for m in members:
        assert (out / m.name).read_bytes() == m.path.read_bytes(), m.name


@pytest.mark.skipif(not shutil.which("cabextract"), reason="cabextract absent")
def test_checksums_are_verified(tmp_path: Path, members: list[CabMember]) -> None:
    """The checksums are real: cabextract accepts them, and refuses a flipped bit."""
    cab = _write(tmp_path, members[:6])
    assert subprocess.run(["cabextract", "-t", str(cab)], capture_output=True).returncode == 0
    raw = bytearray(cab.read_bytes())
    raw[struct.unpack_from("<I", raw, 36)[0]] ^= 1  # first CFDATA's csum
    cab.write_bytes(raw)
    result = subprocess.run(["cabextract", "-t", str(cab)], capture_output=True, text=True)
    assert result.returncode != 0 and "checksum" in result.stdout + result.stderr


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 32775])
def test_checksum_matches_reference(size: int) -> None:
    data = random.Random(size).randbytes(size)
    for seed in (0, 0x12345678):
        assert checksum(data, seed) == _reference_checksum(data, seed)


def test_incompressible_blocks_fit(tmp_path: Path) -> None:
    m = _member(tmp_path, "r", random.Random(2).randbytes(5 * 32768 + 11))
    raw = _write(tmp_path, [m]).read_bytes()
    assert _read_cab(raw)["r"][0] == m.path.read_bytes()


def test_deterministic(tmp_path: Path, members: list[CabMember]) -> None:
    first = _write(tmp_path, members).read_bytes()
    assert _write(tmp_path, members).read_bytes() == first


def test_dates_from_mtimes(tmp_path: Path) -> None:
    a = _member(tmp_path, "a", b"a")
    b = _member(tmp_path, "b", b"b")
    os.utime(a.path, (0, 1_000_000_001))
    os.utime(b.path, (0, 4_000_000_000))
    contents = _read_cab(_write(tmp_path, [a, b], timestamp=None).read_bytes())
    assert contents["a"][1:3] == dos_datetime(1_000_000_001)
    assert contents["b"][1:3] == dos_datetime(4_000_000_000)


def test_dos_datetime() -> None:
    assert dos_datetime(SDE) == (43 << 9 | 11 << 5 | 14, 22 << 11 | 13 << 5 | 10)
    assert dos_datetime(0) == (0 << 9 | 1 << 5 | 1, 0)  # clamped to 1980-01-01
    assert dos_datetime(-5) == dos_datetime(0)
    end = (127 << 9 | 12 << 5 | 31, 23 << 11 | 59 << 5 | 29)  # 2107-12-31 23:59:58
    assert dos_datetime(2**40) == end
    assert dos_datetime(calendar.timegm((2107, 12, 31, 23, 59, 59))) == end


def test_written_at_an_offset(tmp_path: Path) -> None:
    m = _member(tmp_path, "m", b"payload" * 10_000)
    path = tmp_path / "offset.bin"
    with path.open("wb") as f:
        f.write(b"prefix")
        write_cab(f, [m], timestamp=SDE)
        f.write(b"suffix")
    raw = path.read_bytes()
    assert raw[:6] == b"prefix" and raw[-6:] == b"suffix"
    assert _read_cab(raw[6:-6])["m"][0] == m.path.read_bytes()


def test_only_empty_members(tmp_path: Path) -> None:
    members = [_member(tmp_path, "a", b""), _member(tmp_path, "b", b"")]
    contents = _read_cab(_write(tmp_path, members).read_bytes())
    assert [c[0] for c in contents.values()] == [b"", b""]


@pytest.mark.parametrize("declared", [99, 101, 0, 200_000])
def test_size_mismatch(tmp_path: Path, declared: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    with (tmp_path / "x.cab").open("wb") as out, pytest.raises(ValueError, match="changed size"):
        write_cab(out, [CabMember("f", tmp_path / "f", declared)], timestamp=SDE)


def test_refusals(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")

    def write(*members: CabMember) -> None:
        with (tmp_path / "x.cab").open("wb") as out:
            write_cab(out, members, timestamp=SDE)

    with pytest.raises(ValueError, match="at least one file"):
        write()
    for name in ("", "caf\u00e9", "a\0b", "n" * 256):
        with pytest.raises(ValueError, match="ASCII"):
            write(CabMember(name, path, 1))
    with pytest.raises(ValueError, match="duplicate"):
        write(CabMember("f", path, 1), CabMember("f", path, 1))
    with pytest.raises(ValueError, match="at most 2147450880"):
        write(CabMember("a", path, 2**30), CabMember("b", path, 2**30))
    with pytest.raises(ValueError, match="at most 2147450880"):
        write(CabMember("a", path, 2**31))
