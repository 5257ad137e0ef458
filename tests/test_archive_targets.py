"""Issue 12, class 1, through the real command line: Fleet Desktop archives published in a
repository served on 127.0.0.1. A hostile one is refused in one line and leaves nothing; links
to directories in a valid one reach the deb and the rpm (os.walk used to drop them)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.layout import Payload
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from scripts.make_demo_repo import DEMO_PASSPHRASES
from tests.helpers import FIXTURES, FaultServer, cli, demo_repo

ELF = (FIXTURES / "executables/orbit-linux-x86_64").read_bytes()
CHANNEL_DIR = "/opt/orbit/bin/desktop/linux/dirlink/fleet-desktop"


def _desktop_tar(path: Path, members: list[tuple[str, str, bytes | str | None]]) -> Path:
    """(kind, name, data or link target) with kind f (file), d (dir), s (symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "s":
                info.type, info.linkname = tarfile.SYMTYPE, str(value)
                tar.addfile(info)
            else:
                assert isinstance(value, bytes)
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FaultServer]]:
    work = tmp_path_factory.mktemp("archives")
    repo = demo_repo(work / "repo")
    lib = UpdateRepository(repo, PassphraseSource(environ=DEMO_PASSPHRASES))
    good = _desktop_tar(
        work / "good" / "desktop.tar.gz",
        [
            ("d", "fleet-desktop", None),
            ("f", "fleet-desktop/fleet-desktop", ELF),
            ("s", "fleet-desktop/lib-current", "lib"),  # before the directory it names
            ("d", "fleet-desktop/lib", None),
            ("f", "fleet-desktop/lib/libdesktop.so", b"lib"),
            ("s", "fleet-desktop/run", "fleet-desktop"),
        ],
    )
    chain = _desktop_tar(
        work / "chain" / "desktop.tar.gz",
        [
            ("d", "fleet-desktop", None),
            ("f", "fleet-desktop/fleet-desktop", ELF),
            ("d", "x", None),
            ("s", "x/y", ".."),
            ("s", "x/y/x/y/r", "../../../../../../../../.."),
        ],
    )
    for channel, archive in (("dirlink", good), ("chain", chain)):
        lib.add(archive, name="desktop", platform="linux", version="1.41.0", tags=[channel])
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


def _common(served: tuple[Path, FaultServer]) -> list[str | Path]:
    repo, server = served
    return [
        "--update-url", server.url, "--update-roots", repo / "repository/root.json",
        "--no-cache", "--fleet-desktop",
    ]  # fmt: skip


def test_fetch_refuses_symlink_chain(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    out = tmp_path / "targets"
    proc = cli(
        "fetch", "--type", "deb", *_common(served), "--desktop-channel", "chain", "--outdir", out,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "orbit-packager: error: desktop/linux/chain/desktop.tar.gz: member 'x/y/x/y/r' goes "
        "through 'x/y', which is a symlink\n"
    )
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory left


def test_package_refuses_symlink_chain(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    out = tmp_path / "x.deb"
    proc = cli(
        "package", "--type", "deb", *_common(served), "--desktop-channel", "chain",
        "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s", "--outfile", out,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "desktop/linux/chain/desktop.tar.gz" in proc.stderr
    assert not out.exists()


def _listing(argv: list[str | Path]) -> dict[str, tuple[str, str | None]]:
    """{installed path: (type letter, link target or None)} from dpkg-deb -c or rpm -qlvp."""
    env = {**os.environ, "HOME": os.environ.get("TMPDIR", "/tmp")}
    text = subprocess.run(
        list(map(str, argv)), check=True, capture_output=True, text=True, env=env
    ).stdout
    out: dict[str, tuple[str, str | None]] = {}
    for line in text.splitlines():
        rest = line.split(None, 5 if argv[0] == "dpkg-deb" else 8)[-1]
        path, _, link = rest.partition(" -> ")
        out[path.removeprefix(".").rstrip("/")] = (line[0], link or None)
    return out


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_directory_symlinks_reach_linux_packages(
    served: tuple[Path, FaultServer], tmp_path: Path, kind: str
) -> None:
    out = tmp_path / f"x.{kind}"
    cli(
        "package", "--type", kind, *_common(served), "--desktop-channel", "dirlink",
        "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s", "--outfile", out,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    argv: list[str | Path] = ["dpkg-deb", "-c", out] if kind == "deb" else ["rpm", "-qlvp", out]
    listing = _listing(argv)
    assert listing[f"{CHANNEL_DIR}/lib-current"] == ("l", "lib")
    assert listing[f"{CHANNEL_DIR}/run"] == ("l", "fleet-desktop")
    assert listing[f"{CHANNEL_DIR}/lib"] == ("d", None)
    assert listing[f"{CHANNEL_DIR}/lib/libdesktop.so"] == ("-", None)
    assert not any(p.startswith(f"{CHANNEL_DIR}/lib-current/") for p in listing)


def test_add_tree_keeps_links_and_walks_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "app/real").mkdir(parents=True)
    (root / "app/real/file").write_text("x")
    (root / "app/real/file").chmod(0o640)
    (root / "app/dirlink").symlink_to("real")
    (root / "app/filelink").symlink_to("real/file")
    (root / "app/dangling").symlink_to("missing")
    payload = Payload()
    payload.add_tree(root, "/opt/orbit")
    got = {
        (e.path, e.kind, e.mode if e.kind != "symlink" else None, e.target) for e in payload.entries
    }
    assert got == {
        ("/opt/orbit", "dir", 0o755, None),
        ("/opt/orbit/app", "dir", 0o755, None),
        ("/opt/orbit/app/real", "dir", 0o755, None),
        ("/opt/orbit/app/real/file", "file", 0o640, None),
        ("/opt/orbit/app/dirlink", "symlink", None, "real"),
        ("/opt/orbit/app/filelink", "symlink", None, "real/file"),
        ("/opt/orbit/app/dangling", "symlink", None, "missing"),
    }
    assert len(payload.entries) == len(got)
