"""Root keys in hardware (issue 17), with a real PKCS#11 module (SoftHSM2, a fresh token per
test) through the real command line: a repository whose root is 2 of 3 across a token key and
two holders' key files, every role rotated with the token signing the root, a ceremony signed on
the token, wrong PIN and missing token refused with nothing changed -- and python-tuf and go-tuf
v0.5.2 (Orbit's client) following every root from v1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from packager.repo.hsm import PinSource, generate_on_token
from tests.helpers import TEST_PASSPHRASES, cli, client_fetch_all, serve, tree_bytes
from tests.softhsm import SoftToken, make_token

HOLDER = "holder passphrase"


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    token = make_token(tmp_path, monkeypatch)  # SOFTHSM2_CONF is set for the children too
    key = generate_on_token(
        token.uri("root-a"), role="root", pins=PinSource(environ={"FLEET_ROOT_PIN": token.pin})
    )
    key.close()
    return token


def _updates(*args: Any, token: SoftToken, check: bool = True, **env: str) -> Any:
    full = {**TEST_PASSPHRASES, "FLEET_ROOT_PIN": token.pin, **env}
    return cli("updates", *args, env=full, check=check)


def _keygen(tmp: Path, name: str, token: SoftToken) -> tuple[Path, Path, str]:
    key, pub = tmp / f"{name}.key", tmp / f"{name}.pub.json"
    proc = _updates(
        "keygen", "--role", "root", "--out", key, "--public-out", pub, "--json",
        token=token, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    return key, pub, json.loads(proc.stdout)["keyid"]


def _agents_follow(repo: Path) -> None:
    from tests.gotuf.harness import client_targets, gotuf_binary

    root_v1 = (repo / "repository/1.root.json").read_bytes()
    with serve(repo / "repository") as url:
        assert "orbit/linux/stable/orbit" in client_fetch_all(url, root_v1)
        out = client_targets(gotuf_binary(), url, root_v1)
    version = json.loads((repo / "repository/root.json").read_bytes())["signed"]["version"]
    assert out["versions"]["root"] == version


def test_a_token_holds_a_root_key_through_init_rotations_and_a_ceremony(
    token: SoftToken, tmp_path: Path
) -> None:
    uri = token.uri("root-a")
    bob, carol = _keygen(tmp_path, "bob", token), _keygen(tmp_path, "carol", token)
    repo = tmp_path / "repo"
    _updates(
        "init", "--path", repo, "--root-key", uri, "--root-key", bob[0], "--root-key", carol[0],
        "--root-threshold", "2", token=token, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    assert not (repo / "keys/root.json").exists()
    assert all("PRIVATE" not in p.read_text() for p in (repo / "keys").iterdir())
    root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    token_keys = [k for k in root["keys"].values() if k["keytype"] == "ecdsa-sha2-nistp256"]
    assert len(token_keys) == 1 and root["roles"]["root"]["threshold"] == 2
    payload = tmp_path / "orbit"
    payload.write_bytes(b"orbit\n" * 1000)
    _updates(
        "add", "--path", repo, "--target", payload, "--name", "orbit", "--platform", "linux",
        "--version", "1.0.0", "-t", "stable", token=token,
    )  # fmt: skip
    for role in ("targets", "snapshot", "timestamp"):
        _updates(
            "rotate", role, "--path", repo, "--root-key", uri, "--root-key", bob[0],
            token=token, FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
    _agents_follow(repo)
    # The public part of the token key, as a holder would send it, is what root lists.
    pub = tmp_path / "token.pub.json"
    shown = _updates("keygen", "--role", "root", "--key", uri, "--public-out", pub, token=token)
    token_id = json.loads(pub.read_bytes())["keyid"]
    assert token_id in shown.stdout and token_id in root["roles"]["root"]["keyids"]
    dave = _keygen(tmp_path, "dave", token)
    _updates(
        "root", "stage", "--path", repo, "--add-key", "root", dave[1],
        "--revoke-key", "root", carol[2][:12], token=token,
    )  # fmt: skip
    _updates("root", "sign", "--path", repo, "--key", uri, "--yes", token=token)
    _updates(
        "root", "sign", "--path", repo, "--key", bob[0], "--yes",
        token=token, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    _updates("root", "publish", "--path", repo, token=token)
    assert json.loads((repo / "repository/root.json").read_bytes())["signed"]["version"] == 5
    _agents_follow(repo)


def test_a_wrong_pin_or_a_missing_token_changes_nothing(token: SoftToken, tmp_path: Path) -> None:
    uri = token.uri("root-a")
    repo = tmp_path / "repo"
    _updates("init", "--path", repo, "--root-key", uri, token=token)
    before = tree_bytes(repo)
    wrong = _updates(
        "rotate", "timestamp", "--path", repo, "--root-key", uri,
        token=token, check=False, FLEET_ROOT_PIN="999999",
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "999999" not in wrong.stderr
    assert "PIN" in wrong.stderr
    missing = _updates(
        "rotate", "timestamp", "--path", repo, "--root-key",
        uri.replace("token=fleet-root", "token=nowhere"), token=token, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert tree_bytes(repo) == before
    _updates("root", "stage", "--path", repo, token=token)
    staged = tree_bytes(repo)
    unsigned = _updates(
        "root", "sign", "--path", repo, "--key", uri, "--yes",
        token=token, check=False, FLEET_ROOT_PIN="999999",
    )  # fmt: skip
    assert unsigned.returncode == 2 and tree_bytes(repo) == staged


def test_the_timestamp_role_moves_to_a_token_and_a_no_op_asks_no_pin(
    token: SoftToken, tmp_path: Path
) -> None:
    """Any role may use a token key: the holders move timestamp to one (keygen --key gives its
    public part), publish re-signs with it; the hourly no-op then opens nothing (no PIN)."""
    ts_uri = token.uri("timestamp-a")
    generate_on_token(
        ts_uri, role="timestamp", pins=PinSource(environ={"FLEET_TIMESTAMP_PIN": token.pin})
    ).close()
    repo = tmp_path / "repo"
    _updates("init", "--path", repo, token=token)  # every key in keys/, root included
    pub = tmp_path / "ts.pub.json"
    _updates("keygen", "--role", "timestamp", "--key", ts_uri, "--public-out", pub, token=token)
    old_ts = json.loads((repo / "repository/root.json").read_bytes())["signed"]["roles"][
        "timestamp"
    ]["keyids"][0]
    _updates(
        "root", "stage", "--path", repo, "--add-key", "timestamp", pub,
        "--revoke-key", "timestamp", old_ts[:12], token=token,
    )  # fmt: skip
    _updates("root", "sign", "--path", repo, "--key", repo / "keys/root.json", "--yes", token=token)
    _updates(
        "root",
        "publish",
        "--path",
        repo,
        "--timestamp-key",
        ts_uri,
        token=token,
        FLEET_TIMESTAMP_PIN=token.pin,
    )
    ts = json.loads((repo / "repository/timestamp.json").read_bytes())
    assert [s["keyid"] for s in ts["signatures"]] == [json.loads(pub.read_bytes())["keyid"]]
    noop = _updates(
        "timestamp",
        "--path",
        repo,
        "--timestamp-key",
        ts_uri,
        "--if-expiring-within",
        "1h",
        "--json",
        token=token,
    )  # no FLEET_TIMESTAMP_PIN and no terminal: asking would fail
    assert json.loads(noop.stdout)["signed"] is False
    _updates(
        "timestamp",
        "--path",
        repo,
        "--timestamp-key",
        ts_uri,
        token=token,
        FLEET_TIMESTAMP_PIN=token.pin,
    )
    payload = tmp_path / "orbit"
    payload.write_bytes(b"orbit\n" * 1000)
    _updates(
        "add", "--path", repo, "--target", payload, "--name", "orbit", "--platform", "linux",
        "--version", "1.0.0", "-t", "stable", "--timestamp-key", ts_uri, token=token, FLEET_TIMESTAMP_PIN=token.pin,
    )  # fmt: skip
    _agents_follow(repo)
