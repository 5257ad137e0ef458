"""Acceptance 4: SIGKILL at random points of `add` and `rotate` leaves a repository that a TUF
client accepts (old or new state), and running the command again succeeds.

Half of the kill times are uniform over a whole run; the other half land just after the command
opens its journal, i.e. inside staging and publishing, where a crash can do damage.

The random trials find a narrow window only now and then (issue 11: a kill between creating
``keys/.targets.json.tmp-<pid>`` and renaming it left that file after the rollback), so the
windows around temp files are also hit deterministically: a child process kills itself at an
exact point through a hook on ``os.open``/``os.replace`` (``_KILL_AT``).
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.repo.fsutil import is_temp_name
from packager.repo.keys import decrypt_keys
from packager.repo.repository import UpdateRepository
from packager.repo.transaction import TXN_DIR_NAME, Transaction
from tests.helpers import TEST_PASSPHRASES, add_target, cli, served_client_fetch, tree_bytes

TRIALS = 20


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(TEST_PASSPHRASES)
    return env


def _phase(repo: Path) -> str:
    state = repo / TXN_DIR_NAME / "state.json"
    if not (repo / TXN_DIR_NAME).exists():
        return "none"
    try:
        return str(json.loads(state.read_bytes())["phase"])
    except (OSError, ValueError, KeyError):
        return "preparing"


def _run_and_kill(args: list[str], rng: random.Random, duration: float, repo: Path) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "packager", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if rng.random() < 0.5:
        deadline = time.monotonic() + rng.uniform(0, duration)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.0005)
    else:
        give_up = time.monotonic() + duration * 3
        while (
            not (repo / TXN_DIR_NAME).exists()
            and proc.poll() is None
            and time.monotonic() < give_up
        ):
            time.sleep(0.0002)
        time.sleep(rng.uniform(0, 0.03))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "killed"
    return "finished"


def _timed(args: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "packager", *args], env=_env(), check=True, capture_output=True
    )
    return time.monotonic() - start


def _check_client(
    repo: Path,
    root_v1: bytes,
    allowed: list[dict[str, bytes]],
    phase: str,
    consistent: bool,
    outcomes: collections.Counter[str],
) -> None:
    try:
        got = served_client_fetch(repo, root_v1)
    except Exception as exc:
        # Only a commit interrupted between its back-to-back renames, without consistent
        # snapshots, may be seen mixed; the next command completes it (checked below).
        if phase == "committing" and not consistent:
            outcomes["client saw a half-published commit"] += 1
            return
        raise AssertionError(
            f"client rejected the repository after a kill in phase {phase}: {exc!r}"
        ) from exc
    assert got in allowed


@pytest.mark.slow
def test_sigkill_during_add(new_repo, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    outcomes: collections.Counter[str] = collections.Counter()
    old_bin, new_bin = tmp_path / "orbit-old", tmp_path / "orbit-new"
    old_bin.write_bytes(b"old orbit " * 5000)
    new_bin.write_bytes(os.urandom(3_000_000))
    templates = {}
    for cs in (False, True):
        t = new_repo(cs)
        add_target(t, old_bin, "orbit", "linux", "1.0.0", "stable")
        templates[cs] = t
    old = {f"orbit/linux/{c}/orbit": old_bin.read_bytes() for c in ("1.0.0", "stable")}
    new = {**old, **{f"orbit/linux/{c}/orbit": new_bin.read_bytes() for c in ("2.0.0", "stable")}}

    def args(repo: Path) -> list[str]:
        return [
            "updates",
            "add",
            "--path",
            str(repo),
            "--target",
            str(new_bin),
            "--name",
            "orbit",
            "--platform",
            "linux",
            "--version",
            "2.0.0",
            "-t",
            "stable",
        ]

    probe = tmp_path / "probe"
    shutil.copytree(templates[False], probe)
    duration = _timed(args(probe))

    for trial in range(TRIALS):
        cs = trial % 2 == 1
        repo = tmp_path / f"trial-{trial}"
        shutil.copytree(templates[cs], repo)
        root_v1 = (repo / "repository/1.root.json").read_bytes()
        outcomes[_run_and_kill(args(repo), rng, duration, repo)] += 1
        phase = _phase(repo)
        outcomes[f"phase {phase}"] += 1
        _check_client(repo, root_v1, [old, new], phase, cs, outcomes)
        cli(*args(repo), env=TEST_PASSPHRASES)
        assert served_client_fetch(repo, root_v1) == new
        assert not (repo / TXN_DIR_NAME).exists()
    print(dict(outcomes))
    assert outcomes["killed"] >= TRIALS // 2, outcomes


@pytest.mark.slow
def test_sigkill_during_rotate(new_repo, tmp_path: Path) -> None:
    rng = random.Random(4242)
    outcomes: collections.Counter[str] = collections.Counter()
    payload = tmp_path / "osqueryd"
    payload.write_bytes(b"osqueryd")
    templates = {}
    for cs in (False, True):
        t = new_repo(cs)
        add_target(t, payload, "osqueryd", "linux", "5.0.0", "stable")
        templates[cs] = t
    expected = {f"osqueryd/linux/{c}/osqueryd": b"osqueryd" for c in ("5.0.0", "stable")}
    probe = tmp_path / "probe"
    shutil.copytree(templates[False], probe)
    duration = _timed(["updates", "rotate", "targets", "--path", str(probe)])

    for trial in range(TRIALS):
        cs = trial % 2 == 1
        role = rng.choice(["root", "targets", "snapshot", "timestamp"])
        repo = tmp_path / f"trial-{trial}"
        shutil.copytree(templates[cs], repo)
        root_v1 = (repo / "repository/1.root.json").read_bytes()
        before = tree_bytes(repo)
        args = ["updates", "rotate", role, "--path", str(repo)]
        outcomes[_run_and_kill(args, rng, duration, repo)] += 1
        phase = _phase(repo)
        outcomes[f"phase {phase}"] += 1
        _check_client(repo, root_v1, [expected], phase, cs, outcomes)

        # Recovery: either exactly the old repository and keys (no journal, no temp file, in
        # any directory), or the whole rotation and nothing else.
        Transaction(repo).recover()
        root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
        after = tree_bytes(repo)
        if root["version"] == 1:
            outcomes["rolled back"] += 1
            assert after == before
        else:
            outcomes["rotated"] += 1
            _assert_exactly_rotated(before, after, role, cs)
            keys = decrypt_keys(
                (repo / "keys" / f"{role}.json").read_bytes(),
                TEST_PASSPHRASES[f"FLEET_{role.upper()}_PASSPHRASE"],
            )
            assert len(keys) == 2 and keys[1].gotuf_keyid in root["roles"][role]["keyids"]
        assert served_client_fetch(repo, root_v1) == expected

        cli(*args, env=TEST_PASSPHRASES)
        assert served_client_fetch(repo, root_v1) == expected
        assert (
            json.loads((repo / "repository/root.json").read_bytes())["signed"]["version"]
            == root["version"] + 1
        )
    print(dict(outcomes))
    assert outcomes["killed"] >= TRIALS // 2, outcomes


def _assert_exactly_rotated(
    before: dict[str, bytes], after: dict[str, bytes], role: str, consistent: bool
) -> None:
    """``after`` is ``before`` plus one rotation of ``role``: nothing else added or left."""
    signed = {
        r: json.loads(after[f"repository/{r}.json"])["signed"]
        for r in ("root", "targets", "snapshot")
    }
    added = {f"repository/{signed['root']['version']}.root.json"}
    if consistent:
        added |= {f"repository/{signed[r]['version']}.{r}.json" for r in ("targets", "snapshot")}
    assert set(after) == set(before) | added, set(after) ^ (set(before) | added)
    changed = {f"repository/{r}.json" for r in ("root", "targets", "snapshot", "timestamp")}
    changed.add(f"keys/{role}.json")
    assert {k: v for k, v in after.items() if k in before and k not in changed} == {
        k: v for k, v in before.items() if k not in changed
    }
    assert all(after[k] != before[k] for k in changed)


# Runs the command line in a child that SIGKILLs itself at one exact point (argv[1]):
#   "key temp created":        right after creating keys/.ROLE.json.tmp-<pid> (empty)
#   "key temp written":        that file written and fsynced, just before its rename
#   "repository temp written": renames out of the journal fail with EXDEV (as across
#                              filesystems), so the first file is copied to
#                              repository/.NAME.tmp-<pid>; killed just before its rename
_KILL_AT = r"""
import errno, os, re, signal, sys
from pathlib import Path

point = sys.argv[1]
temp_name = re.compile(r"\..+\.tmp-[0-9]+")
real_open, real_replace = os.open, os.replace


def temp_in(path, directory):
    path = Path(path)
    return path.parent.name == directory and temp_name.fullmatch(path.name) is not None


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def hooked_open(path, flags, mode=0o777, **kwargs):
    fd = real_open(path, flags, mode, **kwargs)
    if point == "key temp created" and temp_in(path, "keys"):
        die()
    return fd


def hooked_replace(src, dst, **kwargs):
    if point == "key temp written" and temp_in(src, "keys"):
        die()
    if point == "repository temp written":
        if temp_in(src, "repository"):
            die()
        txn = ".orbit-packager-txn"
        if txn in Path(src).parts and txn not in Path(dst).parts and "keys" not in Path(dst).parts:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))
    return real_replace(src, dst, **kwargs)


os.open, os.replace = hooked_open, hooked_replace
from packager.cli import main

main(sys.argv[2:])
sys.exit("the kill point was never reached")
"""


def _killed_at(point: str, args: list[str]) -> int:
    """Run ``args`` until ``point``, where the child kills itself; return the child's pid."""
    with subprocess.Popen(
        [sys.executable, "-c", _KILL_AT, point, *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)
    return proc.pid


def _temp_files(tree: dict[str, bytes]) -> list[str]:
    return [k for k in tree if is_temp_name(Path(k).name)]


@pytest.mark.parametrize(
    ("point", "role", "consistent"),
    [
        ("key temp created", "targets", False),
        ("key temp written", "targets", True),
        ("key temp written", "root", False),
    ],
)
def test_kill_around_key_file_rename_rolls_back_exactly(
    new_repo, tmp_path: Path, point: str, role: str, consistent: bool
) -> None:
    """Issue 11, deterministically: the temp key file a killed rotate leaves is removed."""
    repo = new_repo(consistent)
    payload = tmp_path / "osqueryd"
    payload.write_bytes(b"osqueryd")
    add_target(repo, payload, "osqueryd", "linux", "5.0.0", "stable")
    expected = {f"osqueryd/linux/{c}/osqueryd": b"osqueryd" for c in ("5.0.0", "stable")}
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    before = tree_bytes(repo)
    args = ["updates", "rotate", role, "--path", str(repo)]

    pid = _killed_at(point, args)
    crashed = tree_bytes(repo)
    stale = f"keys/.{role}.json.tmp-{pid}"
    assert _temp_files(crashed) == [stale]
    assert (crashed[stale] == b"") == (point == "key temp created")
    assert _phase(repo) == "prepared"
    assert served_client_fetch(repo, root_v1) == expected

    # What every command does first (lock, then recover), on a copy: exactly the old tree.
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    with UpdateRepository(copy)._locked():
        assert tree_bytes(copy) == before

    # The next command itself: recovers the same way, then rotates; nothing else remains.
    done = cli(*args, env=TEST_PASSPHRASES)
    assert "rolled back an interrupted rotate" in done.stderr
    _assert_exactly_rotated(before, tree_bytes(repo), role, consistent)
    assert served_client_fetch(repo, root_v1) == expected


@pytest.mark.parametrize("consistent", [False, True])
def test_kill_before_renaming_a_copy_into_repository_rolls_forward_exactly(
    new_repo, consistent: bool
) -> None:
    """A copy into repository/ (the cross-filesystem path) killed before its rename."""
    repo = new_repo(consistent)
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    before = tree_bytes(repo)
    args = ["updates", "rotate", "snapshot", "--path", str(repo)]

    pid = _killed_at("repository temp written", args)
    crashed = tree_bytes(repo)
    state = json.loads((repo / TXN_DIR_NAME / "state.json").read_bytes())
    assert state["phase"] == "committing"
    first = state["writes"][0]
    assert _temp_files(crashed) == [f"repository/.{first}.tmp-{pid}"]
    # Rolled forward: every staged file in place, the rotated key file, and nothing else.
    journal = f"{TXN_DIR_NAME}/new/"
    published = {
        f"repository/{k[len(journal) :]}": v for k, v in crashed.items() if k.startswith(journal)
    }
    assert sorted(published) == sorted(f"repository/{w}" for w in state["writes"])
    rolled_forward = {**before, **published, "keys/snapshot.json": crashed["keys/snapshot.json"]}

    copy = repo.parent / "copy"
    shutil.copytree(repo, copy)
    with UpdateRepository(copy)._locked():
        assert tree_bytes(copy) == rolled_forward
    _assert_exactly_rotated(before, rolled_forward, "snapshot", consistent)

    done = cli(*args, env=TEST_PASSPHRASES)
    assert "completed an interrupted rotate" in done.stderr
    after = tree_bytes(repo)
    assert not _temp_files(after) and not (repo / TXN_DIR_NAME).exists()
    assert json.loads(after["repository/root.json"])["signed"]["version"] == 3
    assert served_client_fetch(repo, root_v1) == {}


def test_recovery_removes_only_stale_temp_files(new_repo, tmp_path: Path) -> None:
    """Without a journal too (left by an older version); only our names, only our dirs."""
    repo = new_repo(False)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    stale = [
        "keys/.targets.json.tmp-12345",
        f"keys/.root.json.tmp-{os.getpid()}",  # pids are reused: PID 1 in every container
        "repository/.timestamp.json.tmp-1",
        "repository/targets/a/b/c/.orbit.tmp-77",
        "staged/.root.json.tmp-9",
        "staged/targets/.x.tmp-3",
    ]
    kept = [
        "keys/targets.json.tmp-5",
        "keys/.targets.json.tmp-",
        "keys/.targets.json.tmp-5a",
        "keys/.tmp-5",
        "staged/targets/root.json123456",  # go-tuf's temp name
        "repository/.well-known",
        ".other.tmp-4",  # not one of the directories commands write
        "notes/.x.tmp-4",
    ]
    for name in stale + kept:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(b"partial")
    (repo / "repository/.dir.tmp-8").mkdir()
    (repo / "keys/.link.tmp-6").symlink_to(outside)
    before = tree_bytes(repo)

    done = cli("updates", "timestamp", "--path", repo, env=TEST_PASSPHRASES)
    assert "removed temporary files an interrupted command left" in done.stderr
    after = tree_bytes(repo)
    assert sorted(set(before) - set(after)) == sorted(stale)
    assert set(after) - set(before) == set()
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"repository/timestamp.json"}
    assert (repo / "repository/.dir.tmp-8").is_dir()
    assert outside.read_bytes() == b"not ours"

    assert Transaction(repo).recover() is None
