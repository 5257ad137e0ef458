"""Root signing ceremonies with keys on different people's machines (issue 17), through the
real command line: holders' key files made by `updates keygen`, a 2-of-3 root, a root staged,
signed one holder at a time and published only when both thresholds are met, a releaser's own
targets key, and agents (python-tuf, and go-tuf v0.5.2 as Orbit) following every root from v1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TEST_PASSPHRASES, cli, client_fetch_all, serve, tree_bytes

HOLDER = "holder passphrase"  # every holder's file here; each holder signs in their own command


def _env(**extra: str) -> dict[str, str]:
    return {**TEST_PASSPHRASES, **extra}


def _keygen(tmp: Path, name: str, role: str = "root") -> tuple[Path, Path, str]:
    key, pub = tmp / f"{name}.key", tmp / f"{name}.pub.json"
    proc = cli(
        "updates", "keygen", "--role", role, "--out", key, "--public-out", pub, "--json",
        env=_env(**{f"FLEET_{role.upper()}_PASSPHRASE": HOLDER}),
    )  # fmt: skip
    return key, pub, json.loads(proc.stdout)["keyid"]


def _updates(*args: Any, check: bool = True, **env: str) -> Any:
    return cli("updates", *args, env=_env(**env), check=check)


@pytest.fixture
def ceremony(tmp_path: Path) -> dict[str, Any]:
    """A repository whose root is 2 of 3 holders' keys (none in keys/), plus a fourth key."""
    holders = {n: _keygen(tmp_path, n) for n in ("alice", "bob", "carol", "dave")}
    repo = tmp_path / "repo"
    refs = [a for n in ("alice", "bob", "carol") for a in ("--root-key", holders[n][0])]
    _updates(
        "init", "--path", repo, "--consistent-snapshot", *refs, "--root-threshold", "2",
        FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    payload = tmp_path / "orbit"
    payload.write_bytes(b"orbit 1\n" * 1000)
    _updates(
        "add", "--path", repo, "--target", payload, "--name", "orbit", "--platform", "linux",
        "--version", "1.0.0", "-t", "stable",
    )  # fmt: skip
    return {"repo": repo, "holders": holders, "root_v1": (repo / "repository/1.root.json")}


def _root(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "repository/root.json").read_bytes())["signed"]  # type: ignore[no-any-return]


def test_init_with_holders_keys_writes_no_root_key(ceremony: dict[str, Any]) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    assert sorted(p.name for p in (repo / "keys").iterdir()) == [
        "snapshot.json", "targets.json", "timestamp.json",
    ]  # fmt: skip
    root = _root(repo)
    assert root["roles"]["root"]["threshold"] == 2
    assert set(root["roles"]["root"]["keyids"]) == {
        holders[n][2] for n in ("alice", "bob", "carol")
    }
    refused = _updates("rotate", "root", "--path", repo, check=False)
    assert refused.returncode == 2 and "updates root stage" in refused.stderr


def test_a_two_of_three_ceremony_counts_only_valid_current_signatures(
    ceremony: dict[str, Any], tmp_path: Path
) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    alice, bob, dave = holders["alice"], holders["bob"], holders["dave"]
    staged = _updates(
        "root", "stage", "--path", repo, "--add-key", "root", dave[1],
        "--revoke-key", "root", alice[2][:12], "--json",
    )  # fmt: skip
    status = json.loads(staged.stdout)
    assert status["staged_version"] == 2 and not status["ready"]
    assert any("revoke key" in c for c in status["changes"])
    before = tree_bytes(repo / "repository")

    def sign(holder: tuple[Path, Path, str]) -> dict[str, Any]:
        proc = _updates(
            "root", "sign", "--path", repo, "--key", holder[0], "--yes", "--json",
            FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def refused() -> str:
        proc = _updates("root", "publish", "--path", repo, check=False)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert tree_bytes(repo / "repository") == before  # byte for byte
        return str(proc.stderr)

    assert "root v1 needs 2, has 0" in refused()
    after_bob = sign(bob)
    assert after_bob["current_root"]["signed"] == [bob[2]]
    assert after_bob["staged_root"]["signed"] == [bob[2]]
    assert "root v1 needs 2, has 1; root v2 needs 2, has 1" in refused()
    # Alice is revoked in v2: her signature counts for v1 only.
    after_alice = sign(alice)
    assert set(after_alice["current_root"]["signed"]) == {alice[2], bob[2]}
    assert after_alice["staged_root"]["signed"] == [bob[2]]
    message = refused()
    assert "root v2 needs 2, has 1" in message and "root v1" not in message
    status_proc = _updates("root", "status", "--path", repo, check=False)
    assert status_proc.returncode == 1
    sign(dave)
    assert _updates("root", "status", "--path", repo).returncode == 0
    _updates("root", "publish", "--path", repo)
    root = _root(repo)
    assert root["version"] == 2
    assert set(root["roles"]["root"]["keyids"]) == {bob[2], holders["carol"][2], dave[2]}
    assert not (repo / "staged/root.json").exists()
    _agents_follow(ceremony)


def _agents_follow(ceremony: dict[str, Any]) -> None:
    """python-tuf and go-tuf v0.5.2 (Orbit's client), trusting root v1, reach every version."""
    from tests.gotuf.harness import client_targets, gotuf_binary

    repo = ceremony["repo"]
    root_v1 = ceremony["root_v1"].read_bytes()
    with serve(repo / "repository") as url:
        assert set(client_fetch_all(url, root_v1)) >= {"orbit/linux/stable/orbit"}
        out = client_targets(gotuf_binary(), url, root_v1)
    assert out["versions"]["root"] == _root(repo)["version"]


def test_a_stranger_key_cannot_sign_and_signing_needs_a_confirmation(
    ceremony: dict[str, Any], tmp_path: Path
) -> None:
    repo = ceremony["repo"]
    _updates("root", "stage", "--path", repo)
    stranger = _keygen(tmp_path, "stranger")
    proc = _updates(
        "root", "sign", "--path", repo, "--key", stranger[0], "--yes",
        check=False, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    assert proc.returncode == 2 and "holds no root key of root v1" in proc.stderr
    unconfirmed = _updates(
        "root", "sign", "--path", repo, "--key", ceremony["holders"]["bob"][0],
        check=False, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    wrong = _updates(
        "root", "sign", "--path", repo, "--key", ceremony["holders"]["bob"][0], "--yes",
        check=False, FLEET_ROOT_PASSPHRASE="not it",
    )  # fmt: skip
    assert wrong.returncode == 2 and "not it" not in wrong.stderr
    again = _updates("root", "stage", "--path", repo, check=False)
    assert again.returncode == 2 and "already staged" in again.stderr


def test_a_releaser_signs_targets_with_their_own_key(
    ceremony: dict[str, Any], tmp_path: Path
) -> None:
    """The releaser makes a targets key; the holders add it (threshold 1); the releaser adds
    targets with it; agents accept them."""
    repo, holders = ceremony["repo"], ceremony["holders"]
    rel_key, rel_pub, rel_id = _keygen(tmp_path, "releaser", "targets")
    _updates("root", "stage", "--path", repo, "--add-key", "targets", rel_pub)
    for name in ("bob", "carol"):
        _updates(
            "root", "sign", "--path", repo, "--key", holders[name][0], "--yes",
            FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
    _updates("root", "publish", "--path", repo)
    assert rel_id in _root(repo)["roles"]["targets"]["keyids"]
    payload = tmp_path / "orbit2"
    payload.write_bytes(b"orbit 2\n" * 1000)
    _updates(
        "add", "--path", repo, "--target", payload, "--name", "orbit", "--platform", "linux",
        "--version", "2.0.0", "-t", "stable", "--targets-key", rel_key,
        FLEET_TARGETS_PASSPHRASE=HOLDER,
    )  # fmt: skip
    targets = json.loads((repo / "repository/targets.json").read_bytes())
    assert [s["keyid"] for s in targets["signatures"]] == [rel_id]
    _agents_follow(ceremony)


def test_rotating_an_online_role_signs_the_root_with_holders_keys(
    ceremony: dict[str, Any],
) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    one = _updates(
        "rotate", "timestamp", "--path", repo, "--root-key", holders["bob"][0],
        check=False, FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    assert one.returncode == 2 and "1 of 2 needed" in one.stderr
    _updates(
        "rotate", "timestamp", "--path", repo, "--root-key", holders["bob"][0],
        "--root-key", holders["carol"][0], FLEET_ROOT_PASSPHRASE=HOLDER,
    )  # fmt: skip
    assert _root(repo)["version"] == 2
    _agents_follow(ceremony)


def test_a_signature_that_does_not_verify_is_not_counted(ceremony: dict[str, Any]) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    _updates("root", "stage", "--path", repo)
    for name in ("bob", "carol"):
        _updates(
            "root", "sign", "--path", repo, "--key", holders[name][0], "--yes",
            FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
    staged = repo / "staged/root.json"
    doc = json.loads(staged.read_bytes())
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    staged.write_text(json.dumps(doc))
    status = json.loads(_updates("root", "status", "--path", repo, "--json", check=False).stdout)
    assert len(status["current_root"]["signed"]) == 1 and not status["ready"]
    before = tree_bytes(repo / "repository")
    assert _updates("root", "publish", "--path", repo, check=False).returncode == 2
    assert tree_bytes(repo / "repository") == before


def test_new_keys_alone_cannot_publish_a_root(ceremony: dict[str, Any], tmp_path: Path) -> None:
    """A root signed by enough of its own keys but not by the current root's threshold is not
    published: otherwise whoever holds new keys could take over the repository."""
    repo, holders = ceremony["repo"], ceremony["holders"]
    erin = _keygen(tmp_path, "erin")
    _updates(
        "root", "stage", "--path", repo, "--add-key", "root", holders["dave"][1],
        "--add-key", "root", erin[1], "--revoke-key", "root", holders["alice"][2][:12],
        "--revoke-key", "root", holders["bob"][2][:12],
    )  # fmt: skip
    for holder in (holders["dave"], erin):
        _updates(
            "root", "sign", "--path", repo, "--key", holder[0], "--yes",
            FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
    before = tree_bytes(repo / "repository")
    proc = _updates("root", "publish", "--path", repo, check=False)
    assert proc.returncode == 2 and "root v1 needs 2, has 0" in proc.stderr
    assert "root v2 needs" not in proc.stderr  # its own threshold is met
    assert tree_bytes(repo / "repository") == before


def test_sign_shows_the_changes_and_asks_on_a_terminal(ceremony: dict[str, Any]) -> None:
    """A holder sees what the new root changes before the token or key file signs; "no" leaves
    the staged root as it was."""
    import os
    import sys

    import pexpect

    repo, holders = ceremony["repo"], ceremony["holders"]
    _updates("root", "stage", "--path", repo, "--revoke-key", "root", holders["alice"][2][:12])
    staged = (repo / "staged/root.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_ROOT_PASSPHRASE"] = HOLDER
    args = ["-m", "packager", "updates", "root", "sign", "--path", str(repo), "--key"]

    def spawn() -> pexpect.spawn:
        return pexpect.spawn(
            sys.executable, [*args, str(holders["bob"][0])], env=env, timeout=60, encoding="utf-8"
        )

    child = spawn()
    child.expect(f"root: revoke key {holders['alice'][2][:16]}")
    child.expect(r"Sign this root\? \[y/N\]: ")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2 and (repo / "staged/root.json").read_bytes() == staged
    child = spawn()
    child.expect(r"Sign this root\? \[y/N\]: ")
    child.sendline("y")
    child.expect("Signed staged root v2")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    signed = json.loads((repo / "staged/root.json").read_bytes())["signatures"]
    assert [s["keyid"] for s in signed] == [holders["bob"][2]]


def test_stage_refuses_ambiguous_ids_and_impossible_thresholds(ceremony: dict[str, Any]) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    none = _updates("root", "status", "--path", repo, check=False)
    assert none.returncode == 2 and "no root is staged" in none.stderr
    short = _updates(
        "root", "stage", "--path", repo, "--revoke-key", "root", holders["bob"][2][:7],
        check=False,
    )  # fmt: skip
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    for n in ("0", "4"):
        bad = _updates("root", "stage", "--path", repo, "--threshold", "root", n, check=False)
        assert bad.returncode == 2 and f"root would need {n} signatures from 3 keys" in bad.stderr
    assert not (repo / "staged/root.json").exists()
    _updates("root", "stage", "--path", repo)
    missing = _updates(
        "root", "sign", "--path", repo, "--key", repo / "nowhere.key", "--yes", check=False
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_status_text_names_who_can_still_sign_and_when_it_is_ready(
    ceremony: dict[str, Any],
) -> None:
    repo, holders = ceremony["repo"], ceremony["holders"]
    _updates("root", "stage", "--path", repo)
    text = _updates("root", "status", "--path", repo, check=False).stdout
    assert "can still sign: " in text and holders["bob"][2][:16] in text
    for name in ("bob", "carol"):
        _updates(
            "root", "sign", "--path", repo, "--key", holders[name][0], "--yes",
            FLEET_ROOT_PASSPHRASE=HOLDER,
        )  # fmt: skip
    ready = _updates("root", "status", "--path", repo).stdout
    assert "ready: `updates root publish` publishes it" in ready


def test_keygen_never_overwrites_a_key_file(tmp_path: Path) -> None:
    key, _pub, _ = _keygen(tmp_path, "once")
    before = key.read_bytes()
    again = cli(
        "updates", "keygen", "--role", "root", "--out", key, "--public-out",
        tmp_path / "other.pub.json", env=_env(FLEET_ROOT_PASSPHRASE=HOLDER), check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr
    assert key.read_bytes() == before and not (tmp_path / "other.pub.json").exists()
