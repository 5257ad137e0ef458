"""Issue 12, class 1: archive targets are extracted by real location, with bounded headers.

Hostile archives are built with tarfile (and raw header blocks where tarfile would refuse or
would itself need the memory under test); valid ones also with GNU tar and bsdtar, the tools
that make Fleet's real archives.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from packager.fetch.extract import (
    MAX_NAME_BYTES,
    SHOWN_NAME_CHARS,
    UnsafeArchiveError,
    extract_tar_gz,
)
from tests.helpers import ROOT, write_tar_gz

Member = tuple[tarfile.TarInfo, bytes | None]


_tar = write_tar_gz


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def d(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def sym(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def hard(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def snapshot(top: Path) -> dict[str, str]:
    """Every path below ``top`` with its kind (and link target): proves what was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            kind = "l:" + str(p.readlink()) if p.is_symlink() else ("d" if p.is_dir() else "f")
            out[str(p.relative_to(top))] = kind
    return out


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A sandbox: ``box/host-secret`` stands for a build-host file, the destination is three
    levels down (``box/l1/l2/dest``, holding the archive) so that ``../../..`` from it lands
    on ``box``."""
    (tmp_path / "host-secret").write_text("host data\n")
    (tmp_path / "l1/l2/dest").mkdir(parents=True)
    return tmp_path


def refused(box: Path, members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> str:
    """Extract a hostile archive; assert it is refused and that nothing changed anywhere."""
    dest = box / "l1/l2/dest"
    archive = _tar(dest / "a.tar.gz", members, fmt)
    before = snapshot(box)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(archive, dest, label="desktop/linux/stable/desktop.tar.gz")
    assert snapshot(box) == before, "a refused archive left something behind"
    message = str(err.value)
    assert "\n" not in message and len(message) < 600, message
    assert message.startswith("desktop/linux/stable/desktop.tar.gz: "), message
    return message


# -- escapes through in-archive symlinks ------------------------------------------------------


def test_symlink_chain_escape(box: Path) -> None:
    """``x/y -> ..`` stays inside, but a member below it is really at the destination's top,
    so ``x/y/x/y/r -> ../../..`` would point three levels above the destination."""
    message = refused(box, [d("x"), sym("x/y", ".."), sym("x/y/x/y/r", "../../..")])
    assert "member 'x/y/x/y/r' goes through 'x/y', which is a symlink" in message


def test_symlink_resolved_through_earlier_link(box: Path) -> None:
    """No write through a link, yet ``x/r -> y/../..`` leaves: ``x/y`` is the top already."""
    message = refused(box, [d("x"), sym("x/y", ".."), sym("x/r", "y/../..")])
    assert "link 'x/r' -> 'y/../..' points outside the destination" in message


def test_symlink_made_unsafe_by_a_later_member(box: Path) -> None:
    """``l -> d/..`` is inside while ``d`` is missing; ``d -> .`` (inside itself) makes ``l``
    leave. Every link is resolved again once everything is extracted."""
    message = refused(box, [sym("l", "d/.."), sym("d", ".")])
    assert "link 'l' -> 'd/..' points outside the destination" in message


def test_symlink_loop_refused(box: Path) -> None:
    assert "loops" in refused(box, [sym("a", "b"), sym("b", "a")])


def test_hardlink_to_host_file_through_symlink_chain(box: Path) -> None:
    """The full attack: a chain to ``box`` and a hard link that would copy ``host-secret``
    into the installer. Refused at the first member that goes through a link."""
    message = refused(
        box,
        [
            d("x"),
            sym("x/y", ".."),
            sym("x/y/x/y/r", "../../.."),
            hard("h", "x/y/x/y/r/host-secret"),
        ],
    )
    assert "goes through 'x/y', which is a symlink" in message
    assert not list(box.rglob("h"))


def test_hardlink_through_symlinked_parent(box: Path) -> None:
    """A hard link whose target path goes through a symlink is refused, even one that stays
    inside: hard links name archive members, reached without links."""
    message = refused(box, [d("real"), f("real/file"), sym("link", "real"), hard("h", "link/file")])
    assert "hard link 'h' -> 'link/file' goes through 'link', which is a symlink" in message


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([d("sub"), hard("h", "sub")], "does not name a regular file"),
        ([f("file"), sym("s", "file"), hard("h", "s")], "does not name a regular file"),
        ([hard("h", "later"), f("later")], "does not name a file extracted before it"),
        ([hard("h", "../host-secret")], "points outside the destination"),
        ([hard("h", "/etc/hostname")], "points outside the destination"),
    ],
)
def test_hardlink_only_to_extracted_regular_files(box: Path, members, needle: str) -> None:
    assert needle in refused(box, members)


def test_directory_member_through_symlink(box: Path) -> None:
    """The old extractor created directories anywhere (``mkdir(parents=True)`` through links)."""
    message = refused(
        box, [d("x"), sym("x/y", ".."), sym("x/y/x/y/r", "../../.."), d("x/y/x/y/r/planted")]
    )
    assert "goes through 'x/y', which is a symlink" in message
    assert not (box / "planted").exists()


def test_directory_member_through_inside_symlink(box: Path) -> None:
    message = refused(box, [d("real"), sym("link", "real"), d("link/sub")])
    assert "member 'link/sub' goes through 'link', which is a symlink" in message


def test_directory_member_over_symlink(box: Path) -> None:
    message = refused(box, [d("real"), sym("link", "real"), d("link")])
    assert "directory member 'link' would replace a symlink" in message


def test_file_member_never_written_through_existing_link(box: Path) -> None:
    message = refused(box, [f("real.txt", b"good"), sym("f", "real.txt"), f("f", b"evil")])
    assert "member 'f' appears twice" in message


def test_file_through_file_parent(box: Path) -> None:
    message = refused(box, [f("a"), f("a/b")])
    assert "member 'a/b' goes through 'a', which is not a directory" in message


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        (tarfile.CHRTYPE, "is a device, FIFO or other special file"),
        (tarfile.BLKTYPE, "is a device, FIFO or other special file"),
        (tarfile.FIFOTYPE, "is a device, FIFO or other special file"),
        (tarfile.GNUTYPE_SPARSE, "has an unsupported type b'S'"),
    ],
)
def test_special_members_refused(box: Path, kind: bytes, needle: str) -> None:
    members = [f("ok"), special("dev/node", kind)]
    message = refused(box, members, tarfile.GNU_FORMAT)
    assert f"member 'dev/node' {needle}" in message


def test_existing_entry_in_destination_not_replaced(box: Path) -> None:
    """A top-level member named like the archive itself must not replace it."""
    assert "member 'a.tar.gz' would replace an existing file" in refused(box, [f("a.tar.gz")])


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([f("/etc/x")], "member '/etc/x' escapes the destination"),
        ([f("a/../../x")], "member 'a/../../x' escapes the destination"),
        ([f("a/../b")], "member 'a/../b' contains '..'"),
        ([sym("evil", "/etc/passwd")], "link 'evil' -> '/etc/passwd' points outside"),
        ([sym("evil", "../../x")], "link 'evil' -> '../../x' points outside"),
        ([f("dup", b"1"), f("dup", b"2")], "member 'dup' appears twice"),
    ],
)
def test_name_checks_still_hold(box: Path, members, needle: str) -> None:
    assert needle in refused(box, members)


def test_refusal_at_last_member_leaves_nothing(box: Path) -> None:
    """Everything before the bad member was fine: it is removed too (private temp directory)."""
    message = refused(box, [d("app"), f("app/bin", b"\x7fELF", 0o755), special("app/p", b"6")])
    assert "'app/p'" in message
    assert list((box / "l1/l2/dest").iterdir()) == [box / "l1/l2/dest/a.tar.gz"]


# -- bounded headers ------------------------------------------------------------------------


def _gnu_long_name_archive(path: Path, name_bytes: int) -> Path:
    """A GNU long-name header declaring ``name_bytes`` bytes, the name itself, then a small
    file: written block by block so the test does not hold the name in memory either."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, name_bytes
    member = tarfile.TarInfo("short")
    member.size = 1
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(header.tobuf(tarfile.GNU_FORMAT))
        block = b"n" * (1024 * 1024)
        for start in range(0, name_bytes, len(block)):
            gz.write(block[: min(len(block), name_bytes - start)])
        gz.write(b"\0" * (-name_bytes % tarfile.BLOCKSIZE))
        gz.write(member.tobuf(tarfile.GNU_FORMAT) + b"x".ljust(tarfile.BLOCKSIZE, b"\0"))
        gz.write(b"\0" * tarfile.BLOCKSIZE * 2)
    return path


_MEASURE = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from packager.fetch.extract import UnsafeArchiveError, extract_tar_gz
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    try:
        extract_tar_gz(Path(sys.argv[1]), Path(sys.argv[2]))
        message = "extracted"
    except UnsafeArchiveError as exc:
        message = str(exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(grown, time.monotonic() - start)
    print(message)
    """
)


def test_huge_gnu_long_name_bounded(tmp_path: Path) -> None:
    """A 100 MB GNU long name (a ~100 KiB archive) took 800 MB and printed a 100 MB line."""
    archive = _gnu_long_name_archive(tmp_path / "long.tar.gz", 100_000_000)
    assert archive.stat().st_size < 1024 * 1024
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(archive), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    usage, message = proc.stdout.split("\n", 1)
    grown_kib, seconds = usage.split()
    assert message.strip() == (
        "long.tar.gz: header 1 declares a GNU long name of 100000000 bytes (limit 1024)"
    )
    assert int(grown_kib) < 16 * 1024, f"max RSS grew by {grown_kib} KiB"
    assert float(seconds) < 5
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_long_names_within_bounds_still_work(box: Path) -> None:
    """GNU long names and pax paths up to the limit are fine; errors truncate longer ones."""
    dest = box / "l1/l2/dest"
    deep = "/".join(["d" * 50] * 8) + "/file"  # 409 bytes: a long-name header in every format
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        out = dest / f"fmt{fmt}"
        archive = _tar(box / f"ok{fmt}.tar.gz", [f(deep, b"deep"), sym("l" * 150, deep)], fmt)
        assert extract_tar_gz(archive, out) == [deep, "l" * 150]
        assert (out / ("l" * 150)).read_bytes() == b"deep"
    # Exactly the limit (1024 bytes, in components of at most 255) passes in both formats.
    at_limit = "/".join(["d" * 200] * 4 + ["f" * 220])
    assert len(at_limit) == MAX_NAME_BYTES
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        archive = _tar(box / f"limit{fmt}.tar.gz", [f(at_limit, b"edge")], fmt)
        assert extract_tar_gz(archive, dest / f"limit{fmt}") == [at_limit]
    too_long = "n" * (MAX_NAME_BYTES + 1)
    shown = "'" + "n" * SHOWN_NAME_CHARS + "…'"
    label = "desktop/linux/stable/desktop.tar.gz"
    assert refused(box, [f(too_long)], tarfile.PAX_FORMAT) == (
        f"{label}: member {shown} is longer than 1024 bytes"
    )
    assert refused(box, [f(too_long)], tarfile.GNU_FORMAT) == (
        f"{label}: header 1 declares a GNU long name of 1026 bytes (limit 1024)"
    )
    assert refused(box, [sym("l", too_long)], tarfile.PAX_FORMAT) == (
        f"{label}: link 'l' has a target longer than 1024 bytes"
    )


def test_huge_pax_header_refused(box: Path) -> None:
    message = refused(box, [f("p" * 2_000_000)], tarfile.PAX_FORMAT)
    assert "declares a pax header of" in message and "(limit 1048576)" in message


def test_member_count_bounded(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar.gz", [f(f"m{i}") for i in range(11)])
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        extract_tar_gz(archive, tmp_path / "out", max_members=10)


def test_size_bound_and_garbage(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "big.tar.gz", [f("a", b"0" * 5000), f("b", b"0" * 5000)])
    with pytest.raises(UnsafeArchiveError, match="more than 8000 bytes"):
        extract_tar_gz(archive, tmp_path / "out", max_total=8000)
    with pytest.raises(UnsafeArchiveError, match=r"is not a valid \.tar\.gz archive"):
        extract_tar_gz(ROOT / "fixtures/executables/orbit-linux-x86_64", tmp_path / "out2")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes())[:3000]))
    with pytest.raises(UnsafeArchiveError, match="unexpected end of data"):
        extract_tar_gz(truncated, tmp_path / "out3")


def test_errors_truncate_names_and_stay_on_one_line(box: Path) -> None:
    name = "evil\nInjected: yes " + "z" * 900
    message = refused(box, [special(name, tarfile.FIFOTYPE)])
    assert "\\n" in message and "z" * SHOWN_NAME_CHARS not in message and "…" in message


# -- valid archives ---------------------------------------------------------------------------

APP = "Fleet Desktop.app/Contents"
FW = f"{APP}/Frameworks/Sparkle.framework"


def _app_members() -> list[Member]:
    """An .app-like tree as macOS bundles hold it: framework version links emitted before
    the directories they name, links to files and directories, a link going up and back down,
    a hard link, setuid bits to drop."""
    return [
        d("Fleet Desktop.app"),
        sym(f"{FW}/Versions/Current", "B"),  # before Versions/B exists
        sym(f"{FW}/Sparkle", "Versions/Current/Sparkle"),
        sym(f"{FW}/Resources", "Versions/Current/Resources"),
        d(f"{FW}/Versions/B"),
        f(f"{FW}/Versions/B/Sparkle", b"dylib", 0o755),
        d(f"{FW}/Versions/B/Resources"),
        f(f"{FW}/Versions/B/Resources/Info.plist", b"<plist/>"),
        f(f"{APP}/MacOS/fleet-desktop", b"\xcf\xfa\xed\xfe", 0o4755),
        hard(f"{APP}/MacOS/fleet-desktop-copy", f"{APP}/MacOS/fleet-desktop"),
        sym(f"{APP}/Resources/up", "../../../Fleet Desktop.app/Contents/MacOS"),
        sym(f"{APP}/Resources/top", "../../.."),  # the destination itself: inside
    ]


def _check_app(out: Path) -> None:
    fw = out / FW
    assert (fw / "Versions/Current").readlink() == Path("B")
    assert (fw / "Resources").readlink() == Path("Versions/Current/Resources")
    assert (fw / "Sparkle").read_bytes() == b"dylib"
    assert (fw / "Resources/Info.plist").read_bytes() == b"<plist/>"
    exe = out / APP / "MacOS/fleet-desktop"
    assert exe.stat().st_mode & 0o7777 == 0o755  # setuid dropped
    assert exe.samefile(out / APP / "MacOS/fleet-desktop-copy")
    assert (out / APP / "Resources/up/fleet-desktop").read_bytes() == b"\xcf\xfa\xed\xfe"
    assert (out / APP / "Resources/top").resolve() == out.resolve()
    assert (fw / "Versions/B/Resources").stat().st_mode & 0o777 == 0o755
    assert not [p for p in out.iterdir() if p.name.startswith(".extract-")]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_app_bundle_with_directory_links(tmp_path: Path, fmt: int) -> None:
    out = tmp_path / "stable"
    out.mkdir()
    archive = _tar(out / "desktop.app.tar.gz", _app_members(), fmt)
    written = extract_tar_gz(archive, out)
    assert written[1] == f"{FW}/Versions/Current" and len(written) == len(_app_members())
    _check_app(out)
    assert (out / "desktop.app.tar.gz").is_file()  # the archive stays next to the tree


@pytest.mark.parametrize("tool", ["tar", "bsdtar"])
def test_archives_made_by_tar_tools(tmp_path: Path, tool: str) -> None:
    """The tools that make real bundles (bsdtar on macOS, GNU tar on Linux), from a tree."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    src = tmp_path / "src"
    extract_tar_gz(_tar(tmp_path / "seed.tar.gz", _app_members()), src)
    archive = tmp_path / "tool.tar.gz"
    subprocess.run([tool, "-czf", archive, "-C", src, "Fleet Desktop.app"], check=True)
    out = tmp_path / "out"
    extract_tar_gz(archive, out)
    _check_app(out)


def test_dot_entries_and_redundant_slashes(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "dot.tar.gz", [d("."), d("./a/"), f("./a//b", b"1")])
    assert extract_tar_gz(archive, tmp_path / "out") == ["a", "a/b"]
    assert (tmp_path / "out/a/b").read_bytes() == b"1"


def test_timing_of_many_small_members(tmp_path: Path) -> None:
    """Opening every path one component at a time stays fast for real archive sizes."""
    members = [f(f"dir{i % 20}/sub/file{i}") for i in range(2000)]
    archive = _tar(tmp_path / "many.tar.gz", members)
    start = time.monotonic()
    assert len(extract_tar_gz(archive, tmp_path / "out")) == 2000
    assert time.monotonic() - start < 20


def _pax_member(headers: dict[str, str], kind: bytes = tarfile.REGTYPE) -> Member:
    info = tarfile.TarInfo("plain")
    info.type, info.pax_headers = kind, headers
    return info, (b"x" if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    ("headers", "kind", "needle"),
    [
        ({"path": "a\0b"}, tarfile.REGTYPE, "member 'a\\x00b' contains a NUL character"),
        ({"linkpath": "a\0b"}, tarfile.SYMTYPE, "link 'plain' -> 'a\\x00b' points outside"),
        ({"linkpath": "a\0b"}, tarfile.LNKTYPE, "link 'plain' -> 'a\\x00b' points outside"),
        ({"size": "²"}, tarfile.REGTYPE, "bad pax size '²'"),
        ({"GNU.sparse.major": "1"}, tarfile.REGTYPE, "is a sparse file"),
    ],
)
def test_odd_pax_headers_refused(box: Path, headers, kind: bytes, needle: str) -> None:
    """Values no path may hold become one-line refusals, never an internal error."""
    assert needle in refused(box, [_pax_member(headers, kind)])


def test_non_utf8_name_refused(box: Path) -> None:
    info = tarfile.TarInfo("caf\udce9")
    info.mode = 0o644
    archive_members: list[Member] = [(info, b"x")]
    dest = box / "l1/l2/dest"
    path = dest / "a.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tar:
        for member, data in archive_members:
            member.size = len(data or b"")
            tar.addfile(member, io.BytesIO(data or b""))
    with pytest.raises(UnsafeArchiveError, match="is not valid UTF-8"):
        extract_tar_gz(path, dest)
    assert list(dest.iterdir()) == [path]
