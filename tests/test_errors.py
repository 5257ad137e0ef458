"""Acceptance 4 (except crashes, see test_crash.py): wrong passphrase, missing key, no terminal,
prompts, a concurrent command, unsafe names: each one clear line, an exit code, nothing
written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from packager.repo.fsutil import exclusive_lock
from tests.helpers import TEST_PASSPHRASES, cli, served_client_fetch, tree_bytes


def _add_args(repo: Path, target: Path, **over: str) -> list[str | Path]:
    opts = {"name": "orbit", "platform": "linux", "version": "1.0.0", **over}
    args: list[str | Path] = ["updates", "add", "--path", repo, "--target", target]
    for key, value in opts.items():
        args += [f"--{key}", value]
    return args


@pytest.fixture
def target(tmp_path: Path) -> Path:
    f = tmp_path / "orbit"
    f.write_bytes(b"orbit binary")
    return f


def test_wrong_passphrase(new_repo, target: Path) -> None:
    repo = new_repo()
    before = tree_bytes(repo)
    env = {**TEST_PASSPHRASES, "FLEET_SNAPSHOT_PASSPHRASE": "wrong horse"}
    out = cli(*_add_args(repo, target), env=env, check=False)
    assert out.returncode == 2
    assert (
        out.stderr
        == "orbit-packager: error: snapshot passphrase from FLEET_SNAPSHOT_PASSPHRASE is invalid\n"
    )
    assert out.stdout == ""
    assert "wrong horse" not in out.stderr
    assert tree_bytes(repo) == before


def test_empty_passphrase_variable(new_repo, target: Path) -> None:
    repo = new_repo()
    out = cli(
        *_add_args(repo, target),
        env={**TEST_PASSPHRASES, "FLEET_TARGETS_PASSPHRASE": ""},
        check=False,
    )
    assert out.returncode == 2
    assert "FLEET_TARGETS_PASSPHRASE is set but empty" in out.stderr


def test_missing_key_file(new_repo, target: Path) -> None:
    repo = new_repo()
    (repo / "keys/targets.json").unlink()
    before = tree_bytes(repo)
    out = cli(*_add_args(repo, target), env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 2
    assert "targets key not found" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert tree_bytes(repo) == before


def test_rotate_needs_root_key(new_repo) -> None:
    repo = new_repo()
    (repo / "keys/root.json").unlink()
    before = tree_bytes(repo)
    out = cli("updates", "rotate", "timestamp", "--path", repo, env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 2 and "no root key here" in out.stderr and "--root-key" in out.stderr
    assert tree_bytes(repo) == before


def test_no_terminal_and_no_variable_fails_fast(new_repo, target: Path) -> None:
    repo = new_repo()
    env = {k: v for k, v in TEST_PASSPHRASES.items() if k != "FLEET_TIMESTAMP_PASSPHRASE"}
    # start_new_session: no controlling terminal, like cron or CI; stdin is an open pipe that
    # would hang a naive getpass fallback forever.
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *map(str, _add_args(repo, target))],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}, **env},
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "orbit-packager: error: no terminal to ask for the timestamp key passphrase "
        "(set FLEET_TIMESTAMP_PASSPHRASE)"
    )


def _spawn(args: list[str | Path], env: dict[str, str]) -> pexpect.spawn:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full.update(env)
    return pexpect.spawn(
        sys.executable, ["-m", "packager", *map(str, args)], env=full, timeout=60, encoding="utf-8"
    )


def test_init_prompts_twice_and_add_prompts_once(tmp_path: Path, target: Path) -> None:
    repo = tmp_path / "prompted"
    child = _spawn(["updates", "init", "--path", repo], {})
    for role in ("root", "targets", "snapshot", "timestamp"):
        child.expect(f"Enter {role} key passphrase: ")
        child.sendline(f"{role}-typed")
        child.expect(f"Repeat {role} key passphrase: ")
        if role == "targets":  # a mismatch asks again
            child.sendline("typo")
            child.expect("do not match")
            child.expect(f"Enter {role} key passphrase: ")
            child.sendline(f"{role}-typed")
            child.expect(f"Repeat {role} key passphrase: ")
        child.sendline(f"{role}-typed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "-typed" not in (child.before or "")

    child = _spawn(_add_args(repo, target), {"FLEET_TARGETS_PASSPHRASE": "targets-typed"})
    child.expect("Enter snapshot key passphrase: ")
    child.sendline("wrong")
    child.expect("Failed to decrypt snapshot key. Try again.")
    child.expect("Enter snapshot key passphrase: ")
    child.sendline("snapshot-typed")
    child.expect("Enter timestamp key passphrase: ")
    child.sendline("timestamp-typed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    assert served_client_fetch(repo, root_v1) == {"orbit/linux/1.0.0/orbit": b"orbit binary"}


def test_concurrent_command_fails_fast(new_repo, target: Path) -> None:
    repo = new_repo()
    before = tree_bytes(repo)
    with exclusive_lock(repo / ".orbit-packager.lock", "test"):
        out = cli(*_add_args(repo, target), env=TEST_PASSPHRASES, check=False, timeout=30)
    assert out.returncode == 75
    assert "another orbit-packager command is working on" in out.stderr
    assert tree_bytes(repo) == before
    cli(*_add_args(repo, target), env=TEST_PASSPHRASES)  # and works once the lock is free


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("name", "../etc"),
        ("name", "orbit/x"),
        ("platform", "linux/../../x"),
        ("platform", ".."),
        ("version", "1.0 0"),
        ("version", "1.0\n"),
        ("version", "$(id)"),
        ("tag", "a\\b"),
        ("name", ""),
    ],
)
def test_unsafe_names_refused(new_repo, target: Path, flag: str, value: str) -> None:
    repo = new_repo()
    before = tree_bytes(repo)
    args = _add_args(repo, target)
    if flag == "tag":
        args += ["-t", value]
    else:
        args[args.index(f"--{flag}") + 1] = value
    out = cli(*args, env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 2
    assert f"--{flag}" in out.stderr
    assert tree_bytes(repo) == before


def test_missing_target_and_uninitialized(tmp_path: Path, new_repo) -> None:
    repo = new_repo()
    out = cli(*_add_args(repo, tmp_path / "nope"), env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 2 and "does not exist" in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = cli("updates", "timestamp", "--path", empty, env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 2 and "repo not initialized" in out.stderr
    out = cli(
        "updates",
        "remove",
        "--path",
        repo,
        "orbit/linux/9.9.9/orbit",
        env=TEST_PASSPHRASES,
        check=False,
    )
    assert out.returncode == 2 and "no target matches" in out.stderr


def test_tampered_metadata_is_reported(new_repo) -> None:
    repo = new_repo()
    path = repo / "repository/targets.json"
    path.write_bytes(path.read_bytes().replace(b'"version":1', b'"version":7'))
    before = tree_bytes(repo)
    out = cli("updates", "timestamp", "--path", repo, env=TEST_PASSPHRASES, check=False)
    assert out.returncode == 3
    assert "targets.json does not verify" in out.stderr
    assert tree_bytes(repo) == before


def test_bad_duration(new_repo) -> None:
    repo = new_repo()
    out = cli(
        "updates",
        "timestamp",
        "--path",
        repo,
        "--timestamp-expiration",
        "14 days",
        env=TEST_PASSPHRASES,
        check=False,
    )
    assert out.returncode == 2 and "invalid --timestamp-expiration" in out.stderr


def test_a_long_value_in_an_error_is_cut_to_its_bound(tmp_path: Path) -> None:
    """A repository value quoted in an error is cut to a fixed width (40 characters here,
    "..." included), so a hostile root cannot flood the terminal or the logs."""
    import json

    root = tmp_path / "root.json"
    root.write_text(json.dumps({"signed": {"_type": "x" * 100}, "signatures": []}))
    proc = cli("verify", "--update-url", "http://127.0.0.1:9", "--update-roots", root, check=False)
    assert proc.returncode == 2
    quoted = "'" + "x" * 36 + "..."
    assert len(quoted) == 40
    assert proc.stderr == (
        f"orbit-packager: error: --update-roots file {root} is not a TUF root.json ('_type' is "
        f"{quoted}) (pass the root.json `orbit-packager updates roots` prints, unmodified)\n"
    )


def test_a_response_body_is_closed_when_a_download_stops() -> None:
    """packager.fetch.client closes a body it stops reading (releasing its connection)."""
    from packager.fetch.client import _close

    def body() -> Iterator[bytes]:
        try:
            yield b"first"
            yield b"second"
        finally:
            closed.append(True)

    closed: list[bool] = []
    chunks = body()
    assert next(chunks) == b"first"
    _close(chunks)
    assert closed == [True]
    _close(iter([b"a list iterator has no close()"]))  # and nothing breaks without one
