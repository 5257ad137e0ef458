"""packager/writers/deb.py: the deb keeps exactly the directories the package owns, every other
member byte for byte, and dpkg-deb reads it with each compression."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Literal

import pytest

from packager.writers.deb import finish_deb
from tests.helpers import cli
from tests.test_linux_packages import SYSTEM_DIRS, package_args

LONG_DIR = "/opt/orbit/" + "d" * 120  # longer than tar's 100-byte name: a GNU long-name record
LONG_SYSTEM_DIR = "/srv/" + "s" * 120


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += (
            name.encode().ljust(16)
            + b"0".ljust(12)
            + b"0".ljust(6)
            + b"0".ljust(6)
            + b"100644".ljust(8)
            + str(len(data)).encode().ljust(10)
            + b"`\n"
            + data
        )
        if len(data) % 2:
            out += b"\n"
    return out


def _data_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in ("/opt", "/opt/orbit", LONG_DIR, "/srv", LONG_SYSTEM_DIR):
            info = tarfile.TarInfo("." + path + "/")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        body = b"x" * 1001  # not a multiple of 512: padding must be kept
        info = tarfile.TarInfo("./opt/orbit/" + "f" * 150)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("./usr/local/bin/orbit")
        link.type = tarfile.SYMTYPE
        link.linkname = "/opt/orbit/bin/orbit/orbit"
        tar.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_only_owned_directories_are_kept(tmp_path: Path, compression: str) -> None:
    source = tmp_path / "in.deb"
    data = _data_tar()
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as tar:
        text = b"Package: x\nVersion: 1\nArchitecture: all\nMaintainer: m\nDescription: d\n"
        info = tarfile.TarInfo("./control")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    source.write_bytes(
        _ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", control.getvalue()),
                ("data.tar", data),
            ]
        )
    )
    out = tmp_path / "out.deb"
    dropped = finish_deb(
        source, out, owned_dirs=frozenset({"/opt/orbit", LONG_DIR}), compression=compression
    )
    assert dropped == ["/opt", "/srv", LONG_SYSTEM_DIR]
    members = subprocess.run(["ar", "t", out], capture_output=True, text=True, check=True).stdout
    suffix = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst", "none": ""}[compression]
    assert members.split() == ["debian-binary", "control.tar.gz", f"data.tar{suffix}"]
    raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", out], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(raw.stdout)) as tar:
        names = [m.name for m in tar.getmembers()]
        body = tar.extractfile("./opt/orbit/" + "f" * 150)
        assert body is not None and body.read() == b"x" * 1001
    assert names == [
        "./opt/orbit",
        "." + LONG_DIR,
        "./opt/orbit/" + "f" * 150,
        "./usr/local/bin/orbit",
    ]


@pytest.mark.parametrize("compression", ["xz", "zstd", "none"])
def test_package_compressions_are_readable_by_dpkg(
    served, tmp_path: Path, compression: str
) -> None:
    out = tmp_path / "x.deb"
    cli(*package_args(served, "--type", "deb", "--compression", compression, "--outfile", out))
    listing = subprocess.run(["dpkg-deb", "-c", out], capture_output=True, text=True, check=True)
    paths = {
        "/" + line.split()[5].removeprefix("./").rstrip("/") for line in listing.stdout.splitlines()
    }
    assert "/opt/orbit/bin/orbit/linux/stable/orbit" in paths
    assert not paths & SYSTEM_DIRS


# -- the tar block helpers the finishers share (writers/tarblocks.py), read back by tarfile ------


def _header(name: str, size: int, fmt: Literal[0, 1, 2]) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=fmt)[:512]


def test_tar_size_reads_octal_and_gnu_base256() -> None:
    from packager.writers.tarblocks import tar_size

    assert tar_size(_header("a", 12345, tarfile.USTAR_FORMAT)) == 12345
    # 8 GiB - 1: eleven octal digits from "7"; 1 GiB: from "1" (odd bytes, not base-256 either)
    for size in (8**11 - 1, 8**10):
        assert tar_size(_header("a", size, tarfile.USTAR_FORMAT)) == size
    big = 8**11 + 7  # over 11 octal digits: GNU writes base-256 (first byte 0x80)
    header = _header("a", big, tarfile.GNU_FORMAT)
    assert header[124] & 0x80
    assert tar_size(header) == big


def test_tar_name_joins_the_ustar_prefix_and_keeps_100_characters() -> None:
    from packager.writers.tarblocks import tar_name

    full = "n" * 100  # exactly the name field: no NUL after it
    assert tar_name(_header(full, 0, tarfile.USTAR_FORMAT)) == full.encode()
    deep = "d" * 60 + "/" + "f" * 90  # too long for the name field: prefix + name
    assert tar_name(_header(deep, 0, tarfile.USTAR_FORMAT)) == deep.encode()


def test_with_size_rewrites_size_and_checksum_and_refuses_what_octal_cannot_hold() -> None:
    from packager.writers.tarblocks import TarFormatError, with_size

    header = _header("opt/orbit/x", 5, tarfile.USTAR_FORMAT)
    resized = with_size(header, 8**11 - 1)
    info = tarfile.TarInfo.frombuf(resized, "utf-8", "surrogateescape")  # checks the checksum
    assert (info.name, info.size) == ("opt/orbit/x", 8**11 - 1)
    with pytest.raises(TarFormatError, match="header cannot take this size"):
        with_size(header, 8**11)
    with pytest.raises(TarFormatError, match="header cannot take this size"):
        with_size(header[:511], 5)


def test_skip_reads_past_a_member_and_refuses_a_truncated_one() -> None:
    from packager.writers.tarblocks import TarFormatError, skip

    stream = io.BytesIO(b"a" * 3000 + b"rest")
    skip(stream, 3000)
    assert stream.read() == b"rest"
    with pytest.raises(TarFormatError, match="truncated tar member"):
        skip(io.BytesIO(b"a" * 10), 11)
