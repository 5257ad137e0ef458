"""``updates timestamp --if-expiring-within``: re-sign only when needed, with the clock given."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Snapshot

from packager.errors import BusyError, PassphraseError
from packager.repo import metadata as meta
from packager.repo.fsutil import exclusive_lock
from packager.repo.keys import decrypt_keys
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import LOCK_NAME, UpdateRepository
from tests.helpers import FIXTURES, TEST_PASSPHRASES, cli, tree_bytes

WINDOW = timedelta(hours=72)
TS_PASSPHRASE = {"FLEET_TIMESTAMP_PASSPHRASE": TEST_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"]}


def _no_prompt(prompt: str) -> str:
    raise AssertionError(f"asked for a passphrase: {prompt}")


def _no_passphrases() -> PassphraseSource:
    """Fails on any attempt to get a passphrase: no variable, no terminal, no prompt."""
    return PassphraseSource(environ={}, prompt=_no_prompt, terminal_available=lambda: False)


def _lib(
    path: Path, now: datetime, passphrases: PassphraseSource | None = None
) -> UpdateRepository:
    return UpdateRepository(
        path,
        passphrases or PassphraseSource(environ=TS_PASSPHRASE, prompt=_no_prompt),
        now=lambda: now,
    )


def _timestamp(path: Path) -> dict[str, object]:
    signed: dict[str, object] = json.loads((path / "repository/timestamp.json").read_bytes())[
        "signed"
    ]
    return signed


def _expiry(path: Path) -> datetime:
    return UpdateRepository(path).load().timestamp.expires


def _snapshot(path: Path) -> tuple[int, bytes]:
    raw = (path / "repository/snapshot.json").read_bytes()
    return int(json.loads(raw)["signed"]["version"]), raw


def _stat_tree(path: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, inode) of every file below ``path`` except the lock file."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.name != LOCK_NAME and p.is_file():
            st = p.stat()
            out[str(p.relative_to(path))] = (st.st_mtime_ns, st.st_ino)
    return out


# -- no-op ----------------------------------------------------------------------------------
@pytest.mark.parametrize("before_expiry", [timedelta(days=10), WINDOW + timedelta(seconds=1)])
def test_far_from_expiry_changes_nothing_and_decrypts_no_key(
    new_repo: Callable[..., Path], before_expiry: timedelta
) -> None:
    repo = new_repo()
    expires = _expiry(repo)
    before_bytes = tree_bytes(repo / "repository")
    before_keys = tree_bytes(repo / "keys")
    before_stat = _stat_tree(repo)
    lib = _lib(repo, expires - before_expiry, _no_passphrases())

    result = lib.timestamp(if_expiring_within=WINDOW)

    assert result.signed is False
    assert result.versions == {"timestamp": 1}
    assert result.expires == {"timestamp": expires}
    assert result.reason.startswith("timestamp.json v1 expires in ")
    assert tree_bytes(repo / "repository") == before_bytes
    assert tree_bytes(repo / "keys") == before_keys
    assert _stat_tree(repo) == before_stat  # not even rewritten with the same bytes
    assert not (repo / ".orbit-packager-txn").exists()


def test_no_passphrase_source_really_fails_when_signing(new_repo: Callable[..., Path]) -> None:
    """The control for the test above: the same source makes a needed re-sign fail."""
    repo = new_repo()
    lib = _lib(repo, _expiry(repo) - timedelta(hours=1), _no_passphrases())
    before = tree_bytes(repo / "repository")
    with pytest.raises(PassphraseError, match="FLEET_TIMESTAMP_PASSPHRASE"):
        lib.timestamp(if_expiring_within=WINDOW)
    assert tree_bytes(repo / "repository") == before


# -- re-signs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before_expiry", "reason"),
    [
        (WINDOW, "timestamp.json v1 expires in 3d 0h"),
        (timedelta(hours=71), "timestamp.json v1 expires in 2d 23h"),
        (timedelta(seconds=1), "timestamp.json v1 expires in 1s"),
        (timedelta(0), "timestamp.json v1 expired 0s ago"),
        (-timedelta(hours=5), "timestamp.json v1 expired 5h 0m ago"),
    ],
)
def test_resigns_when_within_or_expired(
    new_repo: Callable[..., Path], before_expiry: timedelta, reason: str
) -> None:
    repo = new_repo()
    now = _expiry(repo) - before_expiry
    snapshot_before = (repo / "repository/snapshot.json").read_bytes()

    result = _lib(repo, now).timestamp(if_expiring_within=WINDOW)

    assert result.signed is True
    assert result.reason == reason
    assert result.versions == {"timestamp": 2}
    assert result.expires == {"timestamp": now + timedelta(hours=336)}
    signed = _timestamp(repo)
    assert signed["version"] == 2
    assert signed["expires"] == meta.utc_z(now + timedelta(hours=336))
    assert (repo / "repository/snapshot.json").read_bytes() == snapshot_before
    UpdateRepository(repo).load()  # verifies


def test_without_the_option_always_resigns(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    now = _expiry(repo) - timedelta(days=13)
    result = _lib(repo, now).timestamp()
    assert result.signed is True and result.reason == ""
    assert result.versions == {"timestamp": 2}


def test_resigns_when_snapshot_changed_outside(new_repo: Callable[..., Path]) -> None:
    """snapshot.json newer than what timestamp.json names (a half-finished sync or another tool):
    re-signed however far the expiry, so the repository is never left stale."""
    repo = new_repo()
    ts_v1 = (repo / "repository/timestamp.json").read_bytes()
    UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES)).add(
        FIXTURES / "executables/orbit-linux-x86_64",
        name="orbit",
        platform="linux",
        version="1.0.0",
    )
    (repo / "repository/timestamp.json").write_bytes(ts_v1)  # names snapshot v1
    version, snapshot_raw = _snapshot(repo)
    assert version == 2
    now = _expiry(repo) - timedelta(days=13)  # far from expiry

    result = _lib(repo, now).timestamp(if_expiring_within=WINDOW)

    assert result.signed is True
    assert result.reason == "snapshot.json is v2 but timestamp.json v1 names v1"
    signed = _timestamp(repo)
    assert signed["meta"] == {
        "snapshot.json": {
            "version": 2,
            "length": len(snapshot_raw),
            "hashes": meta.file_hash(snapshot_raw),
        }
    }
    # and now it is current: the next run is a no-op
    again = _lib(repo, now, _no_passphrases()).timestamp(if_expiring_within=WINDOW)
    assert again.signed is False and again.versions == {"timestamp": 2}


def test_resigns_when_snapshot_bytes_differ_at_same_version(
    new_repo: Callable[..., Path],
) -> None:
    """Same version, other content (re-signed elsewhere): the recorded hash no longer matches."""
    repo = new_repo()
    path = repo / "repository/snapshot.json"
    md = Metadata[Snapshot].from_bytes(path.read_bytes())
    md.signed.expires = md.signed.expires - timedelta(days=1)
    (key,) = decrypt_keys(
        (repo / "keys/snapshot.json").read_bytes(), TEST_PASSPHRASES["FLEET_SNAPSHOT_PASSPHRASE"]
    )
    meta.sign(md, [key.signer(md.signatures.popitem()[0])])
    path.write_bytes(meta.serialize(md))
    UpdateRepository(repo).load()  # still verifies: only the hash in timestamp.json is off

    result = _lib(repo, _expiry(repo) - timedelta(days=13)).timestamp(if_expiring_within=WINDOW)

    assert result.signed is True
    assert result.reason == (
        "snapshot.json differs from the length or hashes timestamp.json v1 records"
    )
    recorded = _timestamp(repo)["meta"]
    assert isinstance(recorded, dict)
    assert recorded["snapshot.json"]["hashes"] == meta.file_hash(path.read_bytes())


def test_decides_under_the_lock(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    lib = _lib(repo, _expiry(repo) - timedelta(days=10), _no_passphrases())
    with exclusive_lock(repo / LOCK_NAME, str(repo)), pytest.raises(BusyError):
        lib.timestamp(if_expiring_within=WINDOW)


# -- command line ---------------------------------------------------------------------------
def test_cli_no_op_then_resign(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    before = tree_bytes(repo / "repository")
    expires = meta.utc_z(_expiry(repo))

    # no FLEET_* variable at all (cli() removes them): asking for one would fail
    idle = cli("updates", "timestamp", "--path", repo, "--if-expiring-within", "72h")
    line = idle.stdout.strip()
    assert "\n" not in line
    assert re.fullmatch(
        r"timestamp\.json v1 expires in 13d \d+h \((.*)\): not re-signed "
        r"\(--if-expiring-within 72h\)",
        line,
    ), line
    assert f"({expires})" in line
    assert tree_bytes(repo / "repository") == before

    as_json = cli("updates", "timestamp", "--path", repo, "--if-expiring-within", "3d", "--json")
    data = json.loads(as_json.stdout)
    assert data["signed"] is False
    assert data["expires"] == expires
    assert data["versions"] == {"timestamp": 1}
    assert tree_bytes(repo / "repository") == before

    # 15 days is more than the 14 a timestamp lasts: always within
    signed = cli(
        "updates", "timestamp", "--path", repo, "--if-expiring-within", "15d", env=TS_PASSPHRASE
    )
    assert signed.stdout.startswith("Signed timestamp v2 (timestamp.json v1 expires in 13d ")
    assert _timestamp(repo)["version"] == 2

    signed_json = cli(
        "updates", "timestamp", "--path", repo, "--if-expiring-within", "15d", "--json",
        "--timestamp-expiration", "1h", env=TS_PASSPHRASE,
    )  # fmt: skip
    data = json.loads(signed_json.stdout)
    assert data["signed"] is True
    assert data["versions"] == {"timestamp": 3}
    assert data["expires"] == _timestamp(repo)["expires"]
    for secret in TEST_PASSPHRASES.values():
        assert secret not in signed.stdout + signed.stderr + signed_json.stdout


def test_cli_rejects_a_bad_duration(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    out = cli("updates", "timestamp", "--path", repo, "--if-expiring-within", "3x", check=False)
    assert out.returncode == 2
    assert "--if-expiring-within" in out.stderr and "'3x'" in out.stderr


def test_cli_without_the_option_is_unchanged(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    out = cli("updates", "timestamp", "--path", repo, env=TS_PASSPHRASE)
    assert out.stdout.strip() == "Signed timestamp v2"
    data = json.loads(
        cli("updates", "timestamp", "--path", repo, "--json", env=TS_PASSPHRASE).stdout
    )
    assert data["versions"] == {"timestamp": 3} and data["signed"] is True
    assert "reason" not in data
