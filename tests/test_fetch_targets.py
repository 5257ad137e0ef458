"""Issue 3: target selection, safe extraction and lief checks (acceptance 5), against real
repositories served on 127.0.0.1 holding the real tiny executables in fixtures/executables."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.errors import UsageError
from packager.fetch.client import UpdateClient
from packager.fetch.extract import UnsafeArchiveError, extract_tar_gz
from packager.fetch.inspect import TargetMismatchError
from packager.fetch.targets import (
    TargetSelection,
    fetch_agent_targets,
    installer_version,
    select_targets,
)
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, write_tar_gz

EXE = FIXTURES / "executables"


_tar = write_tar_gz


def _file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_extract_good_archive(tmp_path: Path) -> None:
    d = _tarinfo_dir("fleet-desktop")
    archive = _tar(
        tmp_path / "desktop.tar.gz",
        [
            (d, None),
            (_file("fleet-desktop/fleet-desktop", 0o4755), b"\x7fELF"),
            (_link("fleet-desktop/current", "fleet-desktop"), None),
        ],
    )
    out = tmp_path / "out"
    written = extract_tar_gz(archive, out)
    assert written == ["fleet-desktop", "fleet-desktop/fleet-desktop", "fleet-desktop/current"]
    exe = out / "fleet-desktop/fleet-desktop"
    assert exe.read_bytes() == b"\x7fELF"
    assert exe.stat().st_mode & 0o7777 == 0o755  # setuid dropped
    assert (out / "fleet-desktop/current").is_symlink()


def _tarinfo_dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([(_file("/etc/passwd"), b"x")], "escapes the destination"),
        ([(_file("a/../../x"), b"x")], "escapes the destination"),
        ([(_file("a/../b"), b"x")], "contains '..'"),
        ([(_link("evil", "/etc/passwd"), None)], "points outside"),
        ([(_link("evil", "../../x"), None)], "points outside"),
        ([(_link("hard", "../outside", tarfile.LNKTYPE), None)], "points outside"),
        ([(_link("dev", "", tarfile.CHRTYPE), None)], "device, FIFO"),
        ([(_link("fifo", "", tarfile.FIFOTYPE), None)], "device, FIFO"),
        ([(_file("dup"), b"1"), (_file("dup"), b"2")], "appears twice"),
    ],
)
def test_extract_refuses_hostile_archives(tmp_path: Path, members, needle: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(archive, tmp_path / "out")
    assert needle in str(err.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_extract_size_bound(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "big.tar.gz", [(_file("a"), b"0" * 5000), (_file("b"), b"0" * 5000)])
    with pytest.raises(UnsafeArchiveError, match="more than 8000 bytes"):
        extract_tar_gz(archive, tmp_path / "out", max_total=8000)
    with pytest.raises(UnsafeArchiveError, match="not a valid"):
        extract_tar_gz(EXE / "orbit-linux-x86_64", tmp_path / "out2")


def paths(sel: TargetSelection) -> list[str]:
    return [s.path for s in select_targets(sel)]


def test_selection_table() -> None:
    assert paths(TargetSelection("deb")) == [
        "orbit/linux/stable/orbit",
        "osqueryd/linux/stable/osqueryd",
    ]
    assert paths(TargetSelection("rpm", "arm64", fleet_desktop=True, desktop_channel="edge")) == [
        "orbit/linux-arm64/stable/orbit",
        "osqueryd/linux-arm64/stable/osqueryd",
        "desktop/linux-arm64/edge/desktop.tar.gz",
    ]
    assert paths(TargetSelection("msi", "arm64", orbit_channel="1.2")) == [
        "orbit/windows-arm64/1.2/orbit.exe",
        "osqueryd/windows-arm64/stable/osqueryd.exe",
    ]
    assert paths(TargetSelection("pkg", "universal", fleet_desktop=True)) == [
        "orbit/macos/stable/orbit",
        "osqueryd/macos-app/stable/osqueryd.app.tar.gz",
        "desktop/macos/stable/desktop.app.tar.gz",
    ]
    with pytest.raises(UsageError):
        TargetSelection("deb", "universal")
    with pytest.raises(UsageError, match="--orbit-channel"):
        TargetSelection("deb", orbit_channel="../x")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, FaultServer]]:
    repo = tmp_path / "repo"
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    app = tmp_path / "osqueryd.app.tar.gz"
    with tarfile.open(app, "w:gz") as tar:
        tar.add(EXE / "orbit-macos-universal", "osquery.app/Contents/MacOS/osqueryd")
    for name, platform, src in [
        ("orbit", "linux", "orbit-linux-x86_64"),
        ("osqueryd", "linux", "orbit-linux-x86_64"),
        ("orbit", "linux-arm64", "orbit-linux-x86_64"),  # wrong CPU on purpose
        ("osqueryd", "linux-arm64", "orbit-linux-aarch64"),
        ("orbit", "windows", "orbit-windows-x86_64.exe"),
        ("osqueryd", "windows", "orbit-windows-x86_64.exe"),
        ("orbit", "macos", "orbit-macos-universal"),
    ]:
        lib.add(EXE / src, name=name, platform=platform, version="1.2.3", tags=["stable"])
    lib.add(app, name="osqueryd", platform="macos-app", version="5.1.0", tags=["stable"])
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


def _client(repo: Path, server: FaultServer) -> UpdateClient:
    return UpdateClient(server.url, (repo / "repository/1.root.json").read_bytes(), cache_dir=None)


def test_fetch_deb_targets(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    root = tmp_path / "orbit-root"
    with _client(repo, server) as client:
        fetched = fetch_agent_targets(client, TargetSelection("deb"), root)
    assert [f.spec.path for f in fetched] == [
        "orbit/linux/stable/orbit",
        "osqueryd/linux/stable/osqueryd",
    ]
    assert (root / "bin/orbit/linux/stable/orbit").read_bytes() == (
        EXE / "orbit-linux-x86_64"
    ).read_bytes()
    assert (root / "bin/orbit/linux/stable/orbit").stat().st_mode & 0o777 == 0o755
    assert installer_version(fetched) == "1.2.3"
    assert fetched[0].binary.cpus == ("X86_64",)


def test_fetch_msi_targets_reads_pe_version(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    repo, server = served
    with _client(repo, server) as client:
        fetched = fetch_agent_targets(client, TargetSelection("msi"), tmp_path / "root")
    assert fetched[0].binary.version == "1.2.3.0"


def test_fetch_pkg_extracts_app(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    root = tmp_path / "root"
    with _client(repo, server) as client:
        fetched = fetch_agent_targets(client, TargetSelection("pkg", "universal"), root)
    app = root / "bin/osqueryd/macos-app/stable"
    assert (app / "osqueryd.app.tar.gz").is_file()  # archive kept next to the tree
    assert (app / "osquery.app/Contents/MacOS/osqueryd").is_file()
    assert fetched[1].binary.cpus == ("X86_64", "ARM64")


def test_linux_installer_refuses_pe_orbit(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    # Publish a Windows binary as the linux orbit: a deb must refuse it.
    disguised = tmp_path / "orbit"
    disguised.write_bytes((EXE / "orbit-windows-x86_64.exe").read_bytes())
    UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES)).add(
        disguised, name="orbit", platform="linux", version="9.9.9", tags=["pe"]
    )
    with _client(repo, server) as client, pytest.raises(TargetMismatchError) as err:
        fetch_agent_targets(client, TargetSelection("deb", orbit_channel="pe"), tmp_path / "root")
    assert str(err.value).startswith(
        "target orbit/linux/pe/orbit is a PE AMD64 executable, expected an ELF X86_64 executable"
    )


def test_arm64_deb_refuses_x86_64_orbit(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    with _client(repo, server) as client, pytest.raises(TargetMismatchError) as err:
        fetch_agent_targets(client, TargetSelection("deb", "arm64"), tmp_path / "root")
    assert "target orbit/linux-arm64/stable/orbit is an ELF X86_64 executable" in str(err.value)
    assert "expected an ELF AARCH64 executable" in str(err.value)
