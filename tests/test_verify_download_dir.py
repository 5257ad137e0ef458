"""Issue 12, class 6: `verify --download-dir` keeps every target inside the directory, and a
target whose bytes do not verify leaves nothing under its name.

The repository is signed for real (targets, snapshot, timestamp re-signed with the repository's
keys) with target paths an attacker holding the targets key could publish."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, MetaFile, TargetFile

from packager.repo.keys import decrypt_keys
from packager.repo.metadata import serialize
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import TEST_PASSPHRASES, FaultServer, cli

ORBIT = b"\x7fELF orbit 1.0.0 " * 64
KEPT = "orbit/linux/stable/orbit"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    lib = UpdateRepository(path, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    src = tmp_path / "orbit"
    src.write_bytes(ORBIT)
    lib.add(src, name="orbit", platform="linux", version="1.0.0", tags=["stable"])
    return path


def publish_raw_targets(repo: Path, entries: dict[str, bytes]) -> None:
    """List ``entries`` (any path, as an attacker with the targets key could) in targets.json and
    re-sign targets, snapshot and timestamp with the repository's keys."""
    published = repo / "repository"
    root = json.loads((published / "root.json").read_bytes())["signed"]
    by_public = {k["keyval"]["public"]: kid for kid, k in root["keys"].items()}

    def sign(md: Metadata[Any], role: str) -> bytes:
        blob = (repo / "keys" / f"{role}.json").read_bytes()
        key = decrypt_keys(blob, TEST_PASSPHRASES[f"FLEET_{role.upper()}_PASSPHRASE"])[-1]
        md.signatures.clear()
        md.sign(key.signer(by_public.get(key.public_hex)))
        data = serialize(md)
        (published / f"{role}.json").write_bytes(data)
        return data

    def meta(version: int, data: bytes) -> MetaFile:
        return MetaFile(version, len(data), {"sha512": hashlib.sha512(data).hexdigest()})

    targets: Metadata[Any] = Metadata.from_bytes((published / "targets.json").read_bytes())
    for path, content in entries.items():
        targets.signed.targets[path] = TargetFile.from_data(path, content, ["sha512"])
    targets.signed.version += 1
    targets_data = sign(targets, "targets")
    snapshot: Metadata[Any] = Metadata.from_bytes((published / "snapshot.json").read_bytes())
    snapshot.signed.meta["targets.json"] = meta(targets.signed.version, targets_data)
    snapshot.signed.version += 1
    snapshot_data = sign(snapshot, "snapshot")
    timestamp: Metadata[Any] = Metadata.from_bytes((published / "timestamp.json").read_bytes())
    timestamp.signed.snapshot_meta = meta(snapshot.signed.version, snapshot_data)
    timestamp.signed.version += 1
    sign(timestamp, "timestamp")


def _verify(server: FaultServer, repo: Path, download_dir: Path, *extra: str):
    return cli(
        "verify", "--update-url", server.url, "--update-roots", repo / "repository/1.root.json",
        "--download-dir", download_dir, *extra, check=False, timeout=60,
    )  # fmt: skip


def _leftovers(download_dir: Path) -> list[str]:
    return [p.name for p in download_dir.iterdir() if p.name.startswith(".orbit-packager")]


def test_unsafe_target_paths_are_refused(repo: Path, server: FaultServer, tmp_path: Path) -> None:
    dl = tmp_path / "dl"
    outside = tmp_path / "outside"
    payload = b"written by the repository, outside the download directory"
    unsafe = [
        "../escape.bin",
        "orbit/../../../escape2.bin",
        str(outside / "absolute.bin"),  # an absolute path (inside tmp_path, to stay harmless)
        "orbit/./linux/dot.bin",
        "orbit//linux/empty.bin",
        "orbit/linux/new\nline.bin",
        "orbit/linux/unit\x1fseparator.bin",  # the last control character
        "orbit/linux/del\x7f.bin",
        "orbit\\linux\\backslash.bin",
    ]
    spaced = "orbit/linux/with space.bin"  # a space is the first character that is allowed
    publish_raw_targets(repo, {**dict.fromkeys(unsafe, payload), spaced: ORBIT})
    (repo / "repository/targets" / spaced).write_bytes(ORBIT)
    for name in ("escape.bin", "escape2.bin"):  # whatever a naive client would fetch, exists
        (repo / "repository" / name).write_bytes(payload)
        (repo / "repository/targets" / name).write_bytes(payload)
    out = _verify(server, repo, dl, "--json")
    assert out.returncode == 4, out.stderr
    report = json.loads(out.stdout)
    failures = report["failures"]
    assert len(failures) == len(unsafe), [f for f in failures if "unsafe path" not in f]
    for path in unsafe:
        (line,) = (f for f in failures if f.startswith(f"target {path!r} has an unsafe path"))
        assert f"nothing written to {dl}" in line
        assert "\n" not in line
    ok = {t["path"] for t in report["targets"] if t["ok"]}
    assert ok == {KEPT, "orbit/linux/1.0.0/orbit", spaced}
    assert (dl / KEPT).read_bytes() == ORBIT
    assert (dl / spaced).read_bytes() == ORBIT
    # nothing anywhere outside the download directory, nothing left inside but the targets
    written = set(tmp_path.rglob("*.bin")) - set((repo / "repository").rglob("*.bin"))
    assert written == {dl / spaced}, written
    assert not outside.exists()
    assert _leftovers(dl) == []
    assert sorted(p.name for p in dl.iterdir()) == ["orbit"]


def test_tampered_target_leaves_nothing_under_its_name(
    repo: Path, server: FaultServer, tmp_path: Path
) -> None:
    dl = tmp_path / "dl"
    first = _verify(server, repo, dl)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (dl / KEPT).read_bytes() == ORBIT

    published = repo / "repository/targets" / KEPT
    published.unlink()  # channel copies are hard links: alter only this one
    published.write_bytes(ORBIT[:-1] + b"X")  # same length, other bytes
    fresh = tmp_path / "fresh"
    for target_dir in (dl, fresh):
        out = _verify(server, repo, target_dir)
        assert out.returncode == 4
        assert f"error: target {KEPT} from {server.url}" in out.stdout, out.stdout
        assert _leftovers(target_dir) == []
    assert (dl / KEPT).read_bytes() == ORBIT  # the verified copy was not replaced
    assert not (fresh / KEPT).exists()  # and tampered bytes never got the real name
    assert (fresh / "orbit/linux/1.0.0/orbit").read_bytes() == ORBIT


def test_symlink_in_the_download_dir_is_not_followed(
    repo: Path, server: FaultServer, tmp_path: Path
) -> None:
    dl = tmp_path / "dl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dl.mkdir()
    (dl / "orbit").symlink_to(elsewhere)  # planted by someone sharing the directory
    out = _verify(server, repo, dl)
    assert out.returncode == 4
    assert f"error: target '{KEPT}' cannot be kept in {dl}" in out.stdout, out.stdout
    assert list(elsewhere.iterdir()) == []
    assert _leftovers(dl) == []


def test_created_directories_are_not_writable_by_others_whatever_the_umask(
    repo: Path, server: FaultServer, tmp_path: Path
) -> None:
    """Under umask 0 (cron jobs, some CI runners) the directories made for targets are still
    0755: another local user must not be able to swap a verified target."""
    import os
    import subprocess
    import sys

    dl = tmp_path / "dl"
    out = subprocess.run(
        [sys.executable, "-m", "packager", "verify", "--update-url", server.url,
         "--update-roots", str(repo / "repository/1.root.json"), "--download-dir", str(dl)],
        capture_output=True, text=True, timeout=60, check=False, umask=0,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    made = [p for p in dl.rglob("*") if p.is_dir()]
    assert made, "no directory was created"
    for directory in made:
        assert directory.stat().st_mode & 0o777 == 0o755, directory
    for file in (p for p in dl.rglob("*") if p.is_file()):
        assert file.stat().st_mode & 0o022 == 0, file


def test_download_dir_that_refuses_new_entries(
    repo: Path, server: FaultServer, tmp_path: Path
) -> None:
    """A directory that exists and opens, but where nothing may be created (sysfs refuses every
    mkdir, root included): one line naming the directory and why, exit 2, no traceback."""
    import os

    if not os.path.ismount("/sys"):
        pytest.skip("/sys is not a mounted sysfs here: no directory refuses mkdir to root")
    out = _verify(server, repo, Path("/sys"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("orbit-packager: error: cannot write in --download-dir /sys: "), (
        out.stderr
    )
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_a_refused_download_dir_leaves_no_descriptor_open() -> None:
    """The library in a long-lived process (a CI runner, a service): the refusal above closes
    the directory it had opened."""
    import os

    from packager.errors import PackagerError
    from packager.fetch.verify import DownloadDir

    if not os.path.ismount("/sys"):
        pytest.skip("/sys is not a mounted sysfs here: no directory refuses mkdir to root")
    before = sorted(p.name for p in Path("/proc/self/fd").iterdir())
    for _ in range(3):
        with pytest.raises(PackagerError), DownloadDir(Path("/sys")):
            pass
    assert sorted(p.name for p in Path("/proc/self/fd").iterdir()) == before
