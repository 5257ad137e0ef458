"""What `updates` writes, byte for byte where it matters to other software, and the names it
accepts for targets."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from packager.errors import UsageError
from packager.repo.fsutil import move_into_place, temp_path
from packager.repo.naming import check_name
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import FIXTURES, GOTUF_FIXTURE, TEST_PASSPHRASES

GOTUF_REPOSITORY = GOTUF_FIXTURE / "repository"


def _compact(data: bytes) -> bytes:
    return json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode()


def test_metadata_is_written_compact_as_go_tuf_writes_it(tmp_path: Path) -> None:
    """go-tuf (fleetctl) publishes compact JSON without a trailing newline; so do we (the
    signatures cover the canonical form either way, but mirrors and diffs see these bytes)."""
    reference = sorted(GOTUF_REPOSITORY.glob("*.json"))  # what fleetctl wrote
    assert reference
    for path in reference:
        assert path.read_bytes() == _compact(path.read_bytes()), path
    repo = UpdateRepository(tmp_path / "repo", PassphraseSource(environ=TEST_PASSPHRASES))
    repo.init()
    repo.add(FIXTURES / "executables/orbit-linux-x86_64", name="orbit", platform="linux",
             version="1.0.0", tags=["stable"])  # fmt: skip
    published = sorted((tmp_path / "repo/repository").glob("*.json"))
    assert {p.name for p in published} >= {"root.json", "1.root.json", "targets.json"}
    for path in published:
        assert path.read_bytes() == _compact(path.read_bytes()), path


@pytest.mark.parametrize("name", ["orbit", "osqueryd", "desktop", "extensions/hello_world",
                                  "extensions/a.b-c+d"])  # fmt: skip
def test_target_names_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "..", "a/b", "extensions/", "extensions/..", "extensions/../../etc",
     "extensions/a/b", "extensions/a b", "/orbit", "orbit\n"],
)  # fmt: skip
def test_target_names_refused(name: str) -> None:
    with pytest.raises(UsageError, match="--name"):
        check_name(name)


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """The rename fails (a directory sits at the name, as a hostile or confused user may put
    there): the error comes through, and nothing but what was there before remains."""
    from packager.repo.fsutil import atomic_write

    target = tmp_path / "timestamp.json"
    target.mkdir()
    (target / "kept").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):
        atomic_write(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timestamp.json"]
    assert [p.name for p in target.iterdir()] == ["kept"]


def test_stale_temp_files_removed_links_and_other_names_kept(tmp_path: Path) -> None:
    """Recovery deletes regular files named like a temp file (a killed writer's), in every
    directory below; a symbolic link with such a name is not followed nor removed (it may point
    anywhere), and other names are never touched."""
    from packager.repo.fsutil import remove_stale_temp_files, temp_path

    outside = tmp_path / "outside.json"
    outside.write_text("keep")
    top = tmp_path / "repository"
    (top / "targets/orbit").mkdir(parents=True)
    stale = [temp_path(top / "timestamp.json"), temp_path(top / "targets/orbit/orbit")]
    for path in stale:
        path.write_text("half")
    link = top / ".snapshot.json.tmp-7"
    link.symlink_to(outside)
    kept = [top / "timestamp.json", top / ".hidden", top / "x.tmp-1"]
    for path in kept:
        path.write_text("mine")
    assert sorted(remove_stale_temp_files(top)) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert link.is_symlink() and outside.read_text() == "keep"
    assert all(p.read_text() == "mine" for p in kept)


def test_a_move_across_file_systems_replaces_a_stale_temp_file(tmp_path: Path) -> None:
    """Across file systems a file is copied to its temp name beside the destination, then
    renamed. A file already at that name (left by a killed process that had this pid) is
    replaced, not a reason to fail; the mode travels with the bytes."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is missing or on the same file system as tmp_path")
    src_dir = Path(tempfile.mkdtemp(prefix="orbit-test-", dir=shm))
    try:
        src = src_dir / "timestamp.json"
        src.write_bytes(b"new bytes")
        src.chmod(0o640)
        dst = tmp_path / "timestamp.json"
        dst.write_bytes(b"old bytes")
        stale = temp_path(dst)
        stale.write_bytes(b"left by a killed process")
        move_into_place(src, dst)
        assert dst.read_bytes() == b"new bytes"
        assert stat.S_IMODE(dst.stat().st_mode) == 0o640
        assert not stale.exists() and not src.exists()
    finally:
        shutil.rmtree(src_dir)


def test_a_command_that_fails_waits_for_its_background_work_at_exit(tmp_path: Path) -> None:
    """Work started in a Pending thread (a key derivation, an fsync) ends before the process
    does, even when the command fails at once: a scrypt still running inside OpenSSL when
    libcrypto's exit handler ran crashed the interpreter (SIGSEGV, exit -11, seen in CI)."""
    import subprocess
    import sys

    done = tmp_path / "done"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from packager.repo.fsutil import Pending\n"
        "def work():\n"
        "    time.sleep(0.5)\n"
        f"    Path({str(done)!r}).write_text('finished')\n"
        "Pending(work)\n"
        "sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert done.read_text() == "finished"
