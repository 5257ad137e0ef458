"""`orbit-packager fetch`: cache, offline, atomic output and progress, through the real CLI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, cli

EXE = FIXTURES / "executables"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, FaultServer]]:
    repo = tmp_path / "repo"
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    big = tmp_path / "osqueryd"
    big.write_bytes((EXE / "orbit-linux-x86_64").read_bytes() + os.urandom(3_000_000))
    lib.add(
        EXE / "orbit-linux-x86_64",
        name="orbit",
        platform="linux",
        version="1.40.0",
        tags=["stable"],
    )
    lib.add(big, name="osqueryd", platform="linux", version="5.13.1", tags=["stable"])
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


def _fetch_args(repo: Path, server: FaultServer, out: Path, *extra: str | Path) -> list[str]:
    return [
        "fetch", "--type", "deb", "--update-url", server.url,
        "--update-roots", str(repo / "repository/1.root.json"), "--outdir", str(out),
        *map(str, extra),
    ]  # fmt: skip


def _fetch(repo: Path, server: FaultServer, out: Path, *extra: str | Path):
    return cli(*_fetch_args(repo, server, out, *extra), check=False)


def test_fetch_cache_and_offline(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    cache = tmp_path / "cache"
    first = _fetch(repo, server, tmp_path / "a", "--cache-dir", cache, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["version"] == "1.40.0"
    assert [t["path"] for t in summary["targets"]] == [
        "orbit/linux/stable/orbit",
        "osqueryd/linux/stable/osqueryd",
    ]
    assert summary["targets"][0]["binary"] == "ELF X86_64 executable"
    downloaded = server.target_bytes()
    assert downloaded > 3_000_000

    second = _fetch(repo, server, tmp_path / "b", "--cache-dir", cache)
    assert second.returncode == 0
    assert server.target_bytes() == downloaded  # zero target bytes the second time
    assert (tmp_path / "b/bin/osqueryd/linux/stable/osqueryd").read_bytes() == (
        tmp_path / "a/bin/osqueryd/linux/stable/osqueryd"
    ).read_bytes()

    server.close()
    offline = _fetch(repo, server, tmp_path / "c", "--cache-dir", cache, "--offline")
    assert offline.returncode == 0, offline.stderr
    cold = _fetch(repo, server, tmp_path / "d", "--cache-dir", tmp_path / "cold", "--offline")
    assert cold.returncode == 4
    assert cold.stderr.strip() == (
        "orbit-packager: error: --offline: timestamp.json is not in the cache "
        "(run once without --offline to fill it)"
    )
    assert not (tmp_path / "d").exists()


def test_a_cache_entry_that_is_not_a_file_is_downloaded_again(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    """A FIFO where a cache entry should be (opened without blocking, never read): the target is
    downloaded again, and the entry is a regular file with the right bytes after the run."""
    repo, server = served
    cache = tmp_path / "cache"
    assert _fetch(repo, server, tmp_path / "a", "--cache-dir", cache).returncode == 0
    entries = sorted((cache / "targets").iterdir(), key=lambda p: p.stat().st_size)
    entry = entries[-1]  # osqueryd's, the larger
    good = entry.read_bytes()
    entry.unlink()
    os.mkfifo(entry)
    before = server.target_bytes()
    again = _fetch(repo, server, tmp_path / "b", "--cache-dir", cache)
    assert again.returncode == 0, again.stderr
    assert server.target_bytes() - before == len(good)  # that one target, downloaded again
    assert (tmp_path / "b/bin/osqueryd/linux/stable/osqueryd").read_bytes() == good
    assert entry.is_file() and entry.read_bytes() == good


def test_fetch_failure_writes_nothing(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    server.faults["/targets/osqueryd/linux/stable/osqueryd"] = 404
    out = _fetch(repo, server, tmp_path / "out", "--no-cache")
    assert out.returncode == 4 and "HTTP 404" in out.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken/file").write_text("keep me")
    refused = _fetch(repo, server, tmp_path / "taken")
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert (tmp_path / "taken/file").read_text() == "keep me"


def test_progress_only_on_a_terminal(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    repo, server = served
    quiet = _fetch(repo, server, tmp_path / "quiet", "--no-cache")
    assert quiet.returncode == 0 and quiet.stderr == ""
    args = ["-m", "packager", *_fetch_args(repo, server, tmp_path / "tty", "--no-cache")]
    child = pexpect.spawn(sys.executable, args, timeout=60, encoding="utf-8", dimensions=(40, 160))
    child.expect("osqueryd/linux/stable/osqueryd")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "MB" in (child.before or "") or "━" in (child.before or "")
