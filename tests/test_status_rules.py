"""``updates status`` verdicts at their boundaries, with the clock given (no sleeping)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from packager.repo.status import repository_status
from tests.helpers import FIXTURES, TEST_PASSPHRASES

WARN = timedelta(days=3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> UpdateRepository:
    lib = UpdateRepository(tmp_path_factory.mktemp("status") / "repo",
                           PassphraseSource(environ=TEST_PASSPHRASES))  # fmt: skip
    lib.init()
    lib.add(FIXTURES / "executables/orbit-linux-x86_64", name="orbit", platform="linux",
            version="1.0.0", tags=["stable"])  # fmt: skip
    return lib


def _timestamp_expiry(repo: UpdateRepository) -> datetime:
    return repo.load().role("timestamp").expires


@pytest.mark.parametrize(
    ("before_expiry", "state"),
    [
        (timedelta(days=4), "ok"),
        (WARN + timedelta(seconds=1), "ok"),
        (WARN, "expiring"),
        (timedelta(hours=1), "expiring"),
        (timedelta(seconds=1), "expiring"),
        (timedelta(0), "expired"),
        (-timedelta(seconds=1), "expired"),
    ],
)
def test_timestamp_verdict_at_its_boundaries(
    repo: UpdateRepository, before_expiry: timedelta, state: str
) -> None:
    now = _timestamp_expiry(repo) - before_expiry
    status = repository_status(repo, WARN, now)
    (timestamp,) = (r for r in status.roles if r.role == "timestamp")
    assert timestamp.state == state
    assert status.ok == (state == "ok")
    named = [p for p in status.problems if p.startswith("timestamp.json")]
    assert bool(named) == (state != "ok")
    if state == "expired":
        assert named[0].startswith("timestamp.json expired ")
    elif state == "expiring":
        assert named[0].startswith("timestamp.json expires in ")


def test_target_paths_only_when_asked(repo: UpdateRepository, tmp_path: Path) -> None:
    now = _timestamp_expiry(repo) - timedelta(days=5)
    listed = repository_status(repo, WARN, now, with_targets=True)
    assert "orbit/linux/stable/orbit" in listed.target_paths and listed.targets >= 2
    assert repository_status(repo, WARN, now).target_paths == []
