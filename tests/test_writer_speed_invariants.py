"""packager/writers/parallel.py and its users: compressing on every core changes neither the
compression level nor the validity of the streams, and the bytes never depend on the number of
cores or on how the input arrives."""

from __future__ import annotations

import gzip
import io
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.writers import parallel
from packager.writers.cab import BATCH, SHARE_MIN, CabMember, write_cab
from packager.writers.cpio import write_cpio_gz
from packager.writers.parallel import PIECE, WINDOW, ParallelGzip, ordered_map


def code_like(size: int, seed: int) -> bytes:
    """Bytes that compress like machine code (neither zeros nor random): words from a small
    vocabulary with random operands."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 7)) for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + rng.randbytes(rng.randint(0, 2))
    return bytes(out[:size])


def _gzip(data: bytes, level: int, chunks: list[int], **kw: int) -> bytes:
    compressor = ParallelGzip(level, **kw)
    out = bytearray()
    at = 0
    for size in chunks:
        out += compressor.compress(data[at : at + size])
        at += size
    out += compressor.compress(data[at:])
    return bytes(out + compressor.flush())


@pytest.fixture(scope="module")
def sample() -> bytes:
    return code_like(3 * PIECE + 12345, 1)


@pytest.mark.parametrize("level", [6, 9])
def test_one_piece_is_exactly_zlib_at_the_same_level(level: int) -> None:
    """Below one piece the stream is what zlib writes at that level: the level is the one
    asked for (deb: 9 with zlib's header; Payload: 6 with Python gzip's header)."""
    data = code_like(PIECE - 1, 2)
    zlib_gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
    assert _gzip(data, level, []) == zlib_gzip.compress(data) + zlib_gzip.flush()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=level) as f:
        f.write(data)
    assert _gzip(data, level, [], os_byte=parallel.GZIP_OS_UNKNOWN) == buf.getvalue()


@pytest.mark.parametrize("cores", [1, 2, 5])
def test_same_bytes_whatever_the_cores_and_the_chunks(
    sample: bytes, cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _gzip(sample, 9, [PIECE] * 3)
    monkeypatch.setattr(parallel, "usable_cores", lambda: cores)
    assert _gzip(sample, 9, [1, 511, PIECE, 7, PIECE - 2, 3 * PIECE]) == reference
    assert _gzip(sample, 9, [len(sample)]) == reference
    assert gzip.decompress(reference) == sample


@pytest.mark.parametrize("size", [0, 1, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE])
def test_round_trip_at_piece_boundaries(size: int) -> None:
    data = code_like(size, 3)
    out = _gzip(data, 6, [PIECE] * 2)
    assert gzip.decompress(out) == data
    inflate = zlib.decompressobj(31)
    assert inflate.decompress(out) == data and inflate.eof and not inflate.unused_data


def test_pieces_see_the_previous_window() -> None:
    """Each piece is primed with the previous piece's last 32 KiB: a second piece repeating
    the end of the first costs almost nothing (without the dictionary its first 16 KiB, random
    bytes, would be stored). zlib matches reach a little less than the window: 16 KiB back."""
    first = random.Random(4).randbytes(PIECE)
    data = first + first[-WINDOW // 2 :] * 16
    out = _gzip(data, 6, [])
    assert gzip.decompress(out) == data
    assert len(out) < PIECE + 6000  # about 2 KiB; over 18 KiB unprimed


def test_size_close_to_one_zlib_stream(sample: bytes) -> None:
    """The pieces cost a few bytes each, not compression: within 0.5% of a single stream."""
    single = zlib.compressobj(9, zlib.DEFLATED, 31)
    whole = len(single.compress(sample) + single.flush())
    assert len(_gzip(sample, 9, [])) <= whole * 1.005


def test_compress_after_flush_is_refused() -> None:
    compressor = ParallelGzip(6)
    compressor.flush()
    assert compressor.flush() == b""
    with pytest.raises(ValueError):
        compressor.compress(b"x")


def test_ordered_map_keeps_order_and_bounds_the_read_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    taken = 0

    def items() -> Iterator[int]:
        nonlocal taken
        for i in range(50):
            taken += 1
            yield i

    results = ordered_map(lambda i: i * i, items())
    assert next(results) == 0
    assert taken <= 2 * 2 + 1  # not the whole input: memory stays bounded
    assert list(results) == [i * i for i in range(1, 50)]
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert list(ordered_map(str, range(5))) == ["0", "1", "2", "3", "4"]


def test_ordered_map_raises_the_first_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)

    def fail_on_three(i: int) -> int:
        if i == 3:
            raise OSError("three")
        return i

    with pytest.raises(OSError, match="three"):
        list(ordered_map(fail_on_three, range(20)))


def _cab(tmp_path: Path, members: list[CabMember], name: str) -> bytes:
    out = tmp_path / name
    with out.open("wb") as f:
        write_cab(f, members, timestamp=1700000000)
    return out.read_bytes()


@pytest.mark.parametrize("cores", [1, 3])
def test_cab_same_bytes_whatever_the_cores(
    tmp_path: Path, cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = []
    for i, size in enumerate([BATCH - 5, 10, 2 * BATCH + 32768 * 3 + 1, 0, 70000]):
        path = tmp_path / f"m{i}"
        path.write_bytes(code_like(size, 10 + i))
        members.append(CabMember(f"m{i}", path, size))
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    serial = _cab(tmp_path, members, "serial.cab")
    monkeypatch.setattr(parallel, "usable_cores", lambda: cores)
    assert _cab(tmp_path, members, "parallel.cab") == serial


def test_cpio_payload_same_bytes_whatever_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/big").write_bytes(code_like(2 * PIECE + 99, 20))
    (root / "small").write_bytes(b"x" * 100)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    write_cpio_gz(root, tmp_path / "serial", mtime=0)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    write_cpio_gz(root, tmp_path / "parallel", mtime=0)
    serial = (tmp_path / "serial").read_bytes()
    assert (tmp_path / "parallel").read_bytes() == serial
    assert serial[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # Python gzip's header
    assert b"bin/big" in gzip.decompress(serial)


def test_cab_stores_a_small_repeat_twice(tmp_path: Path) -> None:
    """Below SHARE_MIN a repeat is not worth hashing: both copies are in the folder."""
    small = code_like(SHARE_MIN - 1, 33)
    members = []
    for name in ("x", "y"):
        (tmp_path / name).write_bytes(small)
        members.append(CabMember(name, tmp_path / name, len(small)))
    cab = _cab(tmp_path, members, "small.cab")
    table = [struct.unpack_from("<II", cab, at) for at in _cffile_offsets(cab, 2)]
    assert table == [(len(small), 0), (len(small), len(small))]


SIZE = SHARE_MIN + 12345


def test_cab_stores_a_repeated_member_once(tmp_path: Path) -> None:
    """The service's copy of orbit.exe (a hard link in the stage) is stored and compressed
    once, both entries pointing at the same bytes as WiX's cabinets do; by content, so a copy
    gives the same cabinet as a link, and every extractor gives both files back."""
    body = code_like(SIZE, 30)
    (tmp_path / "a").write_bytes(body)
    (tmp_path / "other").write_bytes(code_like(SIZE, 31))  # same size, other bytes
    (tmp_path / "small").write_bytes(b"tail")
    os.link(tmp_path / "a", tmp_path / "linked")
    (tmp_path / "copied").write_bytes(body)

    def cab(copy: str, name: str) -> bytes:
        names = ["a", "other", copy, "small"]
        members = [CabMember(n, tmp_path / n, (tmp_path / n).stat().st_size) for n in names]
        return _cab(tmp_path, members, name)

    linked = cab("linked", "linked.cab")
    assert cab("copied", "copied.cab") == linked.replace(b"linked\0", b"copied\0")
    (tmp_path / "b").write_bytes(code_like(SIZE, 32))
    distinct = cab("b", "distinct.cab")
    assert len(linked) < len(distinct) * 0.7  # 2 of 3 large members compressed, not 3
    (files,) = struct.unpack_from("<H", linked, 28)
    table = [struct.unpack_from("<II", linked, at) for at in _cffile_offsets(linked, files)]
    assert table[0] == (SIZE, 0) and table[2] == (SIZE, 0)  # the same bytes
    assert table[1] == (SIZE, SIZE) and table[3] == (4, 2 * SIZE)
    for tool, argv in {
        "cabextract": ["cabextract", "-q", "-d"],
        "gcab": ["gcab", "-x", "-C"],
    }.items():
        if not shutil.which(tool):
            continue
        out = tmp_path / tool
        out.mkdir()
        subprocess.run([*argv, str(out), str(tmp_path / "linked.cab")], check=True)
        assert (out / "a").read_bytes() == (out / "linked").read_bytes() == body, tool
        assert (out / "small").read_bytes() == b"tail"


def _cffile_offsets(cab: bytes, files: int) -> list[int]:
    at = 36 + 8  # CFHEADER, one CFFOLDER
    out = []
    for _ in range(files):
        out.append(at)
        at = cab.index(b"\0", at + 16) + 1
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_compresses_on_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child forked after the pool started has none of its threads: it must not wait for
    them (a fork from a build would otherwise hang)."""
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    data = code_like(3 * PIECE, 40)
    expected = _gzip(data, 6, [])  # the parent's pool now exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = _gzip(data, 6, []) == expected
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as r:
        ready, _, _ = select.select([r], [], [], 60)
        if not ready:  # the child waits for threads it does not have
            os.kill(pid, signal.SIGKILL)
        answer = r.read() if ready else b"hung"
    os.waitpid(pid, 0)
    assert answer == b"1"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_usable_cores_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between 1 and MAX_WORKERS whatever the machine (memory in flight grows with it)."""
    assert 1 <= parallel.usable_cores() <= parallel.MAX_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert parallel.usable_cores() == parallel.MAX_WORKERS == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert parallel.usable_cores() == 3
