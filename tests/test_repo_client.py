"""Acceptance 2 and 6: after every command, a real ngclient bootstrapped with root v1 refreshes
from repository/ served over HTTP and downloads every target with matching hashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import TEST_PASSPHRASES, add_target, cli, served_client_fetch

ROLES = ("root", "targets", "snapshot", "timestamp")


def _versions(repo: Path) -> dict[str, int]:
    return {
        r: json.loads((repo / "repository" / f"{r}.json").read_bytes())["signed"]["version"]
        for r in ROLES
    }


@pytest.mark.parametrize("consistent", [False, True], ids=["plain", "consistent-snapshot"])
def test_every_command_keeps_clients_working(new_repo, tmp_path: Path, consistent: bool) -> None:
    repo = new_repo(consistent)
    root_v1 = (repo / "repository" / "1.root.json").read_bytes()
    env = TEST_PASSPHRASES

    assert served_client_fetch(repo, root_v1) == {}
    assert _versions(repo) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}

    orbit1, orbit2, osq = tmp_path / "orbit", tmp_path / "orbit-new", tmp_path / "osqueryd.exe"
    orbit1.write_bytes(b"orbit 1.2.0\n" * 100)
    orbit2.write_bytes(b"orbit 1.3.0\n" * 100)
    osq.write_bytes(os.urandom(200_000))

    add_target(repo, orbit1, "orbit", "linux", "1.2.0", "1.2", "stable", env=env)
    expected = {f"orbit/linux/{c}/orbit": orbit1.read_bytes() for c in ("1.2.0", "1.2", "stable")}
    assert served_client_fetch(repo, root_v1) == expected
    assert _versions(repo) == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}
    # Consistent snapshots: one inode (go-tuf only writes hash-prefixed names, fixed by their
    # bytes). Without them each channel is its own file: fleetctl rewrites a channel's fixed
    # name in place when it publishes to it again, which would change every linked name.
    inodes = {(repo / "repository/targets" / p).stat().st_ino for p in expected}
    assert len(inodes) == (1 if consistent else len(expected))

    add_target(repo, osq, "osqueryd", "windows", "5.10.2", "stable", env=env)
    expected.update(
        {f"osqueryd/windows/{c}/osqueryd.exe": osq.read_bytes() for c in ("5.10.2", "stable")}
    )
    add_target(repo, orbit2, "orbit", "linux", "1.3.0", "stable", env=env)
    expected.update({f"orbit/linux/{c}/orbit": orbit2.read_bytes() for c in ("1.3.0", "stable")})
    assert served_client_fetch(repo, root_v1) == expected

    targets = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    assert targets["orbit/linux/stable/orbit"]["custom"] == {"version": "1.3.0"}
    assert list(targets["orbit/linux/stable/orbit"]["hashes"]) == ["sha512"]

    cli("updates", "timestamp", "--path", repo, env=env)
    assert served_client_fetch(repo, root_v1) == expected
    assert _versions(repo)["timestamp"] == 5

    cli(
        "updates",
        "remove",
        "--path",
        repo,
        "orbit/linux/1.2",
        "osqueryd/windows/5.10.2/osqueryd.exe",
        env=env,
    )
    del expected["orbit/linux/1.2/orbit"], expected["osqueryd/windows/5.10.2/osqueryd.exe"]
    assert served_client_fetch(repo, root_v1) == expected
    for gone in ("orbit/linux/1.2", "osqueryd/windows/5.10.2"):
        left = list((repo / "repository/targets" / gone).glob("*"))
        # With consistent snapshots the hash-prefixed copies stay one more generation, for
        # clients that read the previous targets.json (test_add_window.py); the next add or
        # remove deletes them.
        assert all(_is_hashed(p.name) for p in left) if consistent else not left, left

    for n, role in enumerate(ROLES, start=2):
        out = cli("updates", "rotate", role, "--path", repo, env=env)
        assert f"Generated new {role} key with ID:" in out.stdout
        assert served_client_fetch(repo, root_v1) == expected
        assert _versions(repo)["root"] == n
        root = json.loads((repo / "repository/root.json").read_bytes())
        new_id = out.stdout.split("ID: ")[1].split()[0]
        assert root["signed"]["roles"][role]["keyids"] == [new_id]
        if role == "root":
            # signed by the old and the new root key
            assert len(root["signatures"]) == 2
        assert (repo / f"repository/{n}.root.json").read_bytes() == (
            repo / "repository/root.json"
        ).read_bytes()

    listing = {
        str(p.relative_to(repo / "repository"))
        for p in (repo / "repository").rglob("*")
        if p.is_file()
    }
    if consistent:
        assert any(name.endswith(".targets.json") for name in listing)
        assert any(name.endswith(".snapshot.json") for name in listing)
        for path in expected:
            directory, _, name = path.rpartition("/")
            digest = targets_digest(repo, path)
            assert f"targets/{directory}/{digest}.{name}" in listing
    else:
        assert not any(n.endswith((".targets.json", ".snapshot.json")) for n in listing)
    # No stale target files: exactly what targets.json lists (plus hash-prefixed copies).
    target_files = {n.removeprefix("targets/") for n in listing if n.startswith("targets/")}
    plain = {p for p in target_files if not _is_hashed(p)}
    assert plain == set(expected)


def targets_digest(repo: Path, path: str) -> str:
    targets = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    return str(targets[path]["hashes"]["sha512"])


def _is_hashed(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    head = name.split(".", 1)[0]
    return len(head) == 128 and all(c in "0123456789abcdef" for c in head)


def test_init_layout_and_key_files(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    out = cli("updates", "init", "--path", repo, env=TEST_PASSPHRASES)
    lines = out.stdout.strip().splitlines()
    assert [line.split(" key")[0] for line in lines] == [f"Generated {r}" for r in ROLES]
    for role in ROLES:
        kf = repo / "keys" / f"{role}.json"
        assert kf.stat().st_mode & 0o777 == 0o600
        doc = json.loads(kf.read_bytes())
        assert doc["encrypted"] is True
        assert doc["data"]["kdf"] == {
            **doc["data"]["kdf"],
            "name": "scrypt",
            "params": {"N": 32768, "r": 8, "p": 1},
        }
        assert doc["data"]["cipher"]["name"] == "nacl/secretbox"
    assert (repo / "keys").stat().st_mode & 0o777 == 0o700
    for name in ("root.json", "1.root.json", "targets.json", "snapshot.json", "timestamp.json"):
        assert (repo / "repository" / name).is_file()
    assert (repo / "staged").is_dir()
    root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    assert root["consistent_snapshot"] is False
    for key in root["keys"].values():
        assert key["keytype"] == key["scheme"] == "ed25519"
        assert key["keyid_hash_algorithms"] == ["sha256", "sha512"]
    for role in ROLES:
        md = json.loads((repo / "repository" / f"{role}.json").read_bytes())["signed"]
        assert md["expires"].endswith("Z")
        assert md["version"] == 1
    printed = {line.split()[1]: line.rsplit(" ", 1)[1] for line in lines}
    assert {r: root["roles"][r]["keyids"][0] for r in ROLES} == printed

    again = cli("updates", "init", "--path", repo, env=TEST_PASSPHRASES, check=False)
    assert again.returncode == 2
    assert "repo already initialized" in again.stderr

    other = tmp_path / "other"
    (other / "keys").mkdir(parents=True)
    refused = cli("updates", "init", "--path", other, env=TEST_PASSPHRASES, check=False)
    assert refused.returncode == 2 and "keys directory already exists" in refused.stderr
    assert not (other / "repository" / "root.json").exists()


def test_roots_prints_signed_root(new_repo) -> None:
    repo = new_repo()
    out = cli("updates", "roots", "--path", repo)
    assert json.loads(out.stdout) == json.loads((repo / "repository/root.json").read_bytes())


def test_add_without_root_key(new_repo, tmp_path: Path) -> None:
    """The documented procedure deletes keys/root.json from the online copy."""
    repo = new_repo()
    (repo / "keys/root.json").unlink()
    f = tmp_path / "orbit"
    f.write_bytes(b"x")
    env = {k: v for k, v in TEST_PASSPHRASES.items() if k != "FLEET_ROOT_PASSPHRASE"}
    add_target(repo, f, "orbit", "linux", "1.0.0", env=env)
    cli(
        "updates",
        "timestamp",
        "--path",
        repo,
        env={"FLEET_TIMESTAMP_PASSPHRASE": TEST_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"]},
    )
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    assert served_client_fetch(repo, root_v1) == {"orbit/linux/1.0.0/orbit": b"x"}


@pytest.mark.parametrize(
    ("name", "platform", "source", "expected"),
    [
        ("orbit", "linux", "orbit", "orbit"),
        ("orbit", "windows", "orbit.exe", "orbit.exe"),
        ("osqueryd", "macos-app", "osqueryd.app.tar.gz", "osqueryd.app.tar.gz"),
        ("desktop", "windows", "anything.exe", "fleet-desktop.exe"),
        ("desktop", "linux", "whatever", "desktop.tar.gz"),
        ("desktop", "macos", "desktop.app.tar.gz", "desktop.app.tar.gz"),
        ("escrowBuddy", "macos", "escrowBuddy.pkg", "escrowBuddy.pkg"),
        ("extensions/hello", "linux", "hello.ext", "hello.ext"),
        ("extensions/hello", "windows", "hello.ext.exe", "hello.ext.exe"),
    ],
)
def test_add_file_names(new_repo, tmp_path: Path, name, platform, source, expected) -> None:
    repo = new_repo()
    f = tmp_path / source
    f.write_bytes(b"payload")
    add_target(repo, f, name, platform, "1.0.0", "stable")
    targets = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    assert set(targets) == {f"{name}/{platform}/{c}/{expected}" for c in ("1.0.0", "stable")}
