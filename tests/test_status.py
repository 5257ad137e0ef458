"""Acceptance 5: status reports versions and expiries with meaningful exit codes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from packager.repo.keys import decrypt_keys
from packager.repo.metadata import canonical
from tests.helpers import TEST_PASSPHRASES, cli, served_client_fetch


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_status_reports_and_exit_codes(new_repo) -> None:
    repo = new_repo()
    start = datetime.now(timezone.utc)
    cli(
        "updates", "timestamp", "--path", repo, "--timestamp-expiration", "2h", env=TEST_PASSPHRASES
    )
    ok = cli("updates", "status", "--path", repo, "--warn", "1h", "--json")
    data = json.loads(ok.stdout)
    roles = {r["role"]: r for r in data["roles"]}
    assert {r: roles[r]["version"] for r in roles} == {
        "root": 1,
        "targets": 1,
        "snapshot": 1,
        "timestamp": 2,
    }
    exp = _parse(roles["timestamp"]["expires"])
    assert timedelta(hours=2) - timedelta(seconds=5) <= exp - start <= timedelta(hours=2, seconds=5)
    assert 7190 <= roles["timestamp"]["expires_in_seconds"] <= 7200
    root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    assert roles["snapshot"]["key_ids"] == root["roles"]["snapshot"]["keyids"]
    assert data["ok"] is True and ok.returncode == 0

    warn = cli("updates", "status", "--path", repo, check=False)  # default --warn 72h
    assert warn.returncode == 1
    assert (
        "timestamp.json expires in 1h 59m" in warn.stdout
        or "timestamp.json expires in 2h" in warn.stdout
    )
    assert "expiring" in warn.stdout

    cli(
        "updates", "timestamp", "--path", repo, "--timestamp-expiration", "2s", env=TEST_PASSPHRASES
    )
    time.sleep(3)
    expired = cli("updates", "status", "--path", repo, "--warn", "1s", "--json", check=False)
    assert expired.returncode == 1
    data = json.loads(expired.stdout)
    assert {r["role"]: r["state"] for r in data["roles"]}["timestamp"] == "expired"
    assert any("timestamp.json expired" in p for p in data["problems"])


def test_status_flags_non_utc_expires_and_timestamp_fixes_it(new_repo) -> None:
    """go-tuf writes local-zone expiries; we read them, report them, and re-sign in UTC."""
    repo = new_repo()
    path = repo / "repository/timestamp.json"
    doc = json.loads(path.read_bytes())
    when = _parse(doc["signed"]["expires"]).astimezone(timezone(timedelta(hours=-3)))
    doc["signed"]["expires"] = when.isoformat()
    key = decrypt_keys(
        (repo / "keys/timestamp.json").read_bytes(), TEST_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"]
    )[0]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sig = Ed25519PrivateKey.from_private_bytes(key.seed).sign(canonical(doc["signed"]))
    doc["signatures"] = [{"keyid": doc["signatures"][0]["keyid"], "sig": sig.hex()}]
    path.write_text(json.dumps(doc))

    out = cli("updates", "status", "--path", repo, check=False)
    assert out.returncode == 1
    assert "non-UTC expires (" in out.stdout and "-03:00" in out.stdout
    assert "updates timestamp" in out.stdout

    cli("updates", "timestamp", "--path", repo, env=TEST_PASSPHRASES)
    assert json.loads(path.read_bytes())["signed"]["expires"].endswith("Z")
    assert cli("updates", "status", "--path", repo).returncode == 0
    served_client_fetch(repo, (repo / "repository/1.root.json").read_bytes())


def test_status_on_missing_repo(tmp_path: Path) -> None:
    out = cli("updates", "status", "--path", tmp_path, check=False)
    assert out.returncode == 2 and "repo not initialized" in out.stderr


def test_rotate_root_after_root_expired(new_repo) -> None:
    """Fleet needed a special procedure for this (PR #22693); here it is plain `rotate root`."""
    repo = new_repo()
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    cli(
        "updates",
        "rotate",
        "snapshot",
        "--path",
        repo,
        "--root-expiration",
        "2s",
        env=TEST_PASSPHRASES,
    )
    time.sleep(3)
    refused = cli("updates", "timestamp", "--path", repo, env=TEST_PASSPHRASES, check=False)
    assert (
        refused.returncode == 2
        and "root.json expired" in refused.stderr
        and "rotate root" in refused.stderr
    )
    cli("updates", "rotate", "root", "--path", repo, env=TEST_PASSPHRASES)
    served_client_fetch(repo, root_v1)
    assert cli("updates", "status", "--path", repo).returncode == 0


def test_status_text_is_laid_out_in_its_order() -> None:
    """`updates status` prints the header, one line per role, the target paths, then the
    notes, then the problems: the exact text, written out here."""
    from packager.repo.status import RepoStatus, RoleStatus, render_text

    status = RepoStatus(
        path="/srv/tuf",
        consistent_snapshot=False,
        targets=2,
        roles=[
            RoleStatus("root", 1, "2027-11-27T00:00:00Z", 86400 * 365, "ok", 1, ["a" * 64]),
            RoleStatus("timestamp", 7, "2026-11-28T00:00:00Z", 3600, "expiring", 1, ["b" * 64]),
        ],
        warn_seconds=86400,
        problems=["timestamp.json expires in 1h"],
        target_paths=["orbit/linux/1.0.0/orbit", "orbit/linux/stable/orbit"],
        notes=["a note"],
    )
    assert render_text(status).split("\n") == [
        "repository: /srv/tuf (consistent snapshots: off, 2 targets)",
        "ROLE       VERSION  EXPIRES (UTC)         LEFT        STATE     KEY IDS",
        "root             1  2027-11-27T00:00:00Z  365d 0h     ok        aaaaaaaaaaaaaaaa",
        "timestamp        7  2026-11-28T00:00:00Z  1h 0m       expiring  bbbbbbbbbbbbbbbb",
        "  orbit/linux/1.0.0/orbit",
        "  orbit/linux/stable/orbit",
        "note: a note",
        "warning: timestamp.json expires in 1h",
    ]


def test_a_missing_role_file_is_named(new_repo) -> None:
    """A repository whose snapshot.json is gone: status and add name the missing file in one
    line (not an internal error), and add changes nothing."""
    repo = new_repo()
    missing = repo / "repository" / "snapshot.json"
    missing.unlink()
    before = sorted(p.name for p in (repo / "repository").iterdir())
    target = repo.parent / "orbit"
    target.write_bytes(b"orbit\n")
    for argv in (
        ["updates", "status", "--path", repo],
        ["updates", "add", "--path", repo, "--target", target, "--name", "orbit",
         "--platform", "linux", "--version", "1.0.0"],
    ):  # fmt: skip
        out = cli(*argv, env=TEST_PASSPHRASES, check=False)
        assert out.returncode not in (0, 1, 70), (out.returncode, out.stderr)
        (line,) = out.stderr.strip().splitlines()
        assert f"{missing} is missing" in line, line
    assert sorted(p.name for p in (repo / "repository").iterdir()) == before
