"""Acceptance 3: a repository made by go-tuf (fleetctl's library) is managed by our commands,
stays readable by ngclient bootstrapped with its root v1, and its key files stay go-tuf's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.repo.keys import decrypt_keys
from tests.helpers import (
    GOTUF_FIXTURE,
    GOTUF_PASSPHRASES,
    add_target,
    cli,
    copy_gotuf_fixture,
    served_client_fetch,
)

ROLES = ("root", "targets", "snapshot", "timestamp")


def _assert_gotuf_key_file(path: Path, passphrase: str) -> list[str]:
    raw = path.read_bytes()
    doc = json.loads(raw)
    assert raw.startswith(
        b'{\n\t"encrypted": true,\n\t"data": {\n\t\t"kdf": {'
    )  # MarshalIndent, tabs
    assert set(doc) == {"encrypted", "data"}
    assert doc["data"]["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert doc["data"]["cipher"]["name"] == "nacl/secretbox"
    keys = decrypt_keys(raw, passphrase)
    return [k.public_hex for k in keys]


def test_fixture_key_ids_match_gotuf_computation() -> None:
    """Our go-tuf key IDs equal the IDs go-tuf wrote into the fixture's root."""
    root = json.loads((GOTUF_FIXTURE / "root-v1.json").read_bytes())["signed"]
    for role in ROLES:
        env = f"FLEET_{role.upper()}_PASSPHRASE"
        keys = decrypt_keys(
            (GOTUF_FIXTURE / "keys" / f"{role}.json").read_bytes(), GOTUF_PASSPHRASES[env]
        )
        assert keys[0].gotuf_keyid in root["roles"][role]["keyids"]


def test_manage_gotuf_repository(tmp_path: Path) -> None:
    repo = copy_gotuf_fixture(tmp_path / "fleet")
    root_v1 = (repo / "root-v1.json").read_bytes()
    env = GOTUF_PASSPHRASES
    original_targets = dict.fromkeys(
        json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"], b""
    )

    # The fixture's timestamp has expired: re-signing it is the first compatibility step.
    cli(
        "updates",
        "timestamp",
        "--path",
        repo,
        env={"FLEET_TIMESTAMP_PASSPHRASE": env["FLEET_TIMESTAMP_PASSPHRASE"]},
    )
    fetched = served_client_fetch(repo, root_v1)
    assert set(fetched) == set(original_targets)
    assert b"orbit" in fetched["orbit/linux/stable/orbit"]
    ts = json.loads((repo / "repository/timestamp.json").read_bytes())
    fixture_root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    # The key ID go-tuf put in root is honoured in our signature.
    assert [s["keyid"] for s in ts["signatures"]] == fixture_root["roles"]["timestamp"]["keyids"]

    new = tmp_path / "osqueryd"
    new.write_bytes(b"osqueryd 5.11.0")
    add_target(repo, new, "osqueryd", "linux", "5.11.0", "stable", env=env)
    fetched = served_client_fetch(repo, root_v1)
    assert fetched["osqueryd/linux/stable/osqueryd"] == b"osqueryd 5.11.0"

    targets_before = _assert_gotuf_key_file(
        repo / "keys/targets.json", env["FLEET_TARGETS_PASSPHRASE"]
    )
    cli("updates", "rotate", "targets", "--path", repo, env=env)
    served_client_fetch(repo, root_v1)
    targets_after = _assert_gotuf_key_file(
        repo / "keys/targets.json", env["FLEET_TARGETS_PASSPHRASE"]
    )
    # go-tuf appends the new key to the role's file
    assert targets_after[:-1] == targets_before and len(targets_after) == len(targets_before) + 1

    cli("updates", "rotate", "root", "--path", repo, env=env)
    fetched = served_client_fetch(repo, root_v1)
    root = json.loads((repo / "repository/root.json").read_bytes())
    assert root["signed"]["version"] == 4
    assert len(root["signatures"]) == 2

    cli("updates", "remove", "--path", repo, "orbit/linux/edge", env=env)
    fetched = served_client_fetch(repo, root_v1)
    assert "orbit/linux/edge/orbit" not in fetched
    assert "orbit/linux/1.3.0/orbit" in fetched
    assert not (repo / "repository/targets/orbit/linux/edge").exists()

    for role in ROLES:
        _assert_gotuf_key_file(
            repo / "keys" / f"{role}.json", env[f"FLEET_{role.upper()}_PASSPHRASE"]
        )
    for name in ("1.root.json", "2.root.json", "3.root.json", "4.root.json"):
        assert (repo / "repository" / name).is_file()


@pytest.mark.parametrize("role", ROLES)
def test_wrong_fixture_passphrase(tmp_path: Path, role: str) -> None:
    repo = copy_gotuf_fixture(tmp_path / "fleet")
    env = dict(GOTUF_PASSPHRASES)
    var = f"FLEET_{role.upper()}_PASSPHRASE"
    env[var] = "not-it"
    out = cli("updates", "rotate", "snapshot", "--path", repo, env=env, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == f"orbit-packager: error: {role} passphrase from {var} is invalid"
    assert "not-it" not in out.stderr + out.stdout
