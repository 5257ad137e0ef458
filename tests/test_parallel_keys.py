"""The scrypt key derivations of a command run at once, in threads (issue 18).

Each role's key file costs one scrypt (N=2^15, about 0.1 s of CPU). hashlib's scrypt releases
the GIL, so threads overlap them on several cores. What must not change: a wrong passphrase
gives the same message, exit code and retries as when the keys were opened one by one, and
changes nothing.

Overlap is shown without timing: the real derivation (``keys._derive``) is wrapped so that each
call waits at a barrier for the others; opened one after another, the first would wait alone
and the barrier would break.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from packager.errors import PassphraseError
from packager.repo import keys as keys_module
from packager.repo.passphrase import PassphraseSource, env_var
from packager.repo.repository import UpdateRepository
from tests.helpers import TEST_PASSPHRASES, cli, tree_bytes

ONLINE = ("targets", "snapshot", "timestamp")
TXN = ".orbit-packager-txn"


def phrase(role: str) -> str:
    return TEST_PASSPHRASES[env_var(role)]


class Overlap:
    """Wraps keys._derive: every call waits until ``parties`` calls are inside at once."""

    def __init__(self, parties: int) -> None:
        # The timeout only bounds a failing run; a passing one never waits for it.
        self.barrier = threading.Barrier(parties, timeout=30)
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.threads: set[int] = set()
        self.calls = 0

    def wrap(self, real: Callable[[str, bytes], bytes]) -> Callable[[str, bytes], bytes]:
        def derive(passphrase: str, salt: bytes) -> bytes:
            with self.lock:
                self.calls += 1
                self.inside += 1
                self.most = max(self.most, self.inside)
                self.threads.add(threading.get_ident())
            try:
                if self.calls <= self.barrier.parties:
                    self.barrier.wait()
                return real(passphrase, salt)
            finally:
                with self.lock:
                    self.inside -= 1

        return derive


@pytest.fixture
def overlap(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Overlap]]:
    def install(parties: int) -> Overlap:
        o = Overlap(parties)
        monkeypatch.setattr(keys_module, "_derive", o.wrap(keys_module._derive))
        return o

    yield install


def _payload(tmp_path: Path) -> Path:
    payload = tmp_path / "orbit"
    payload.write_bytes(b"orbit build " * 4000)
    return payload


def _add(repo: UpdateRepository, payload: Path) -> None:
    repo.add(payload, name="orbit", platform="linux", version="1.0.0", tags=["1", "stable"])


def test_scrypt_releases_the_gil() -> None:
    """While a derivation runs in one thread, another thread runs Python code: threads suffice.

    The deriving thread signals just before scrypt and notes when it returns. Were the GIL
    held throughout, the waiting thread could only wake after scrypt had returned."""
    started, finished = threading.Event(), threading.Event()

    def derive() -> None:
        started.set()
        keys_module._derive("passphrase", b"s" * 32)
        finished.set()

    worker = threading.Thread(target=derive)
    worker.start()
    started.wait()
    ran_during = not finished.is_set()
    worker.join()
    assert ran_during, "scrypt held the GIL: the main thread ran only after it returned"


@pytest.mark.parametrize("consistent", [False, True])
def test_add_derives_its_three_keys_at_once(
    new_repo: Callable[[bool], Path], overlap: Callable[[int], Overlap], tmp_path: Path,
    consistent: bool,
) -> None:  # fmt: skip
    repo_dir = new_repo(consistent)
    o = overlap(3)
    repo = UpdateRepository(repo_dir, PassphraseSource(environ=TEST_PASSPHRASES))
    _add(repo, _payload(tmp_path))
    assert (o.calls, o.most, len(o.threads)) == (3, 3, 3)
    listed = cli("updates", "status", "--path", repo_dir, "--targets", env=TEST_PASSPHRASES)
    assert "orbit/linux/stable/orbit" in listed.stdout


def test_typed_passphrases_are_checked_before_the_next_is_asked(
    new_repo: Callable[[bool], Path], overlap: Callable[[int], Overlap], tmp_path: Path
) -> None:
    """Keys whose passphrases come from variables derive at once; a typed one is derived and
    checked before the next prompt (a typo is asked again at once, in today's order)."""
    o = overlap(1)
    asked: list[str] = []

    def prompt(text: str) -> str:
        role = text.split()[1]
        asked.append(role)
        assert o.inside == 0, "a prompt while a derivation was still running"
        return phrase(role)

    environ = {env_var("targets"): phrase("targets")}
    source = PassphraseSource(environ=environ, prompt=prompt, terminal_available=lambda: True)
    _add(UpdateRepository(new_repo(False), source), _payload(tmp_path))
    assert asked == ["snapshot", "timestamp"]
    assert o.calls == 3


def test_rotate_and_init_derive_at_once(
    new_repo: Callable[[bool], Path], overlap: Callable[[int], Overlap], tmp_path: Path
) -> None:
    o = overlap(4)  # rotate: root, targets, snapshot, timestamp (then the new file's sealing)
    UpdateRepository(new_repo(False), PassphraseSource(environ=TEST_PASSPHRASES)).rotate("targets")
    assert o.most >= 4 and o.calls == 5
    o = overlap(4)  # init: the four new key files sealed at once
    UpdateRepository(tmp_path / "fresh", PassphraseSource(environ=TEST_PASSPHRASES)).init()
    assert o.most == 4 and o.calls == 4


@pytest.mark.parametrize("wrong", ONLINE)
def test_a_wrong_passphrase_is_todays_error_and_changes_nothing(
    new_repo: Callable[[bool], Path], tmp_path: Path, wrong: str
) -> None:
    repo = new_repo(True)
    before = tree_bytes(repo)
    done = cli(
        "updates", "add", "--path", repo, "--target", _payload(tmp_path), "--name", "orbit",
        "--platform", "linux", "--version", "1.0.0", "-t", "stable",
        env={**TEST_PASSPHRASES, env_var(wrong): "not it"}, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr == (
        f"orbit-packager: error: {wrong} passphrase from {env_var(wrong)} is invalid\n"
    )
    assert tree_bytes(repo) == before
    assert not (repo / TXN).exists()


def test_two_wrong_passphrases_name_the_first_role(
    new_repo: Callable[[bool], Path], tmp_path: Path
) -> None:
    """As when opened in turn: targets is reported, though timestamp is wrong too."""
    environ = {**TEST_PASSPHRASES, env_var("targets"): "x", env_var("timestamp"): "y"}
    repo_dir = new_repo(False)
    before = tree_bytes(repo_dir)
    repo = UpdateRepository(repo_dir, PassphraseSource(environ=environ))
    with pytest.raises(PassphraseError, match=r"^targets passphrase from FLEET_TARGETS_"):
        _add(repo, _payload(tmp_path))
    assert tree_bytes(repo_dir) == before and not (repo_dir / TXN).exists()


def test_a_wrong_typed_passphrase_is_asked_again(
    new_repo: Callable[[bool], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prompt's retry: the same message, then the role is asked again (up to 3 times)."""
    answers = {"targets": [phrase("targets")], "timestamp": [phrase("timestamp")]}
    answers["snapshot"] = ["typo", phrase("snapshot")]
    asked: list[str] = []

    def prompt(text: str) -> str:
        role = text.split()[1]
        asked.append(role)
        return answers[role].pop(0)

    source = PassphraseSource(environ={}, prompt=prompt, terminal_available=lambda: True)
    _add(UpdateRepository(new_repo(False), source), _payload(tmp_path))
    assert asked == ["targets", "snapshot", "snapshot", "timestamp"]
    assert capsys.readouterr().out == "Failed to decrypt snapshot key. Try again.\n"


def test_three_wrong_typed_passphrases_fail_and_change_nothing(
    new_repo: Callable[[bool], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def prompt(text: str) -> str:
        role = text.split()[1]
        return "typo" if role == "timestamp" else phrase(role)

    repo_dir = new_repo(True)
    before = tree_bytes(repo_dir)
    source = PassphraseSource(environ={}, prompt=prompt, terminal_available=lambda: True)
    with pytest.raises(PassphraseError, match=r"^timestamp passphrase from the prompt is invalid$"):
        _add(UpdateRepository(repo_dir, source), _payload(tmp_path))
    assert capsys.readouterr().out == "Failed to decrypt timestamp key. Try again.\n" * 2
    assert tree_bytes(repo_dir) == before and not (repo_dir / TXN).exists()


@pytest.mark.parametrize("consistent", [False, True])
def test_the_target_is_hashed_as_published(
    new_repo: Callable[[bool], Path], tmp_path: Path, consistent: bool
) -> None:
    """One pass copies and hashes: the sha512 and length in targets.json are the file's, and
    every channel and consistent-snapshot name holds the same bytes."""
    payload = tmp_path / "orbit"
    payload.write_bytes(bytes(range(256)) * 9000 + b"tail")  # > 2 MiB: several chunks
    repo_dir = new_repo(consistent)
    _add(UpdateRepository(repo_dir, PassphraseSource(environ=TEST_PASSPHRASES)), payload)
    digest = hashlib.sha512(payload.read_bytes()).hexdigest()
    listed = json.loads((repo_dir / "repository/targets.json").read_bytes())["signed"]["targets"]
    targets = repo_dir / "repository/targets/orbit/linux"
    for channel in ("1.0.0", "1", "stable"):
        info = listed[f"orbit/linux/{channel}/orbit"]
        assert info["hashes"] == {"sha512": digest}  # as fleetctl (go-tuf's default) lists it
        assert info["length"] == payload.stat().st_size
        assert (targets / channel / "orbit").read_bytes() == payload.read_bytes()
        if consistent:
            assert (targets / channel / f"{digest}.orbit").read_bytes() == payload.read_bytes()


def test_channels_without_consistent_snapshots_are_separate_files(
    new_repo: Callable[[bool], Path], tmp_path: Path
) -> None:
    """go-tuf (fleetctl) publishes a channel again by rewriting its fixed name in place
    (os.Create: O_TRUNC, then write). That must not change the version's own file."""
    payload = _payload(tmp_path)
    repo_dir = new_repo(False)
    _add(UpdateRepository(repo_dir, PassphraseSource(environ=TEST_PASSPHRASES)), payload)
    targets = repo_dir / "repository/targets/orbit/linux"
    with (targets / "stable/orbit").open("r+b") as f:  # what go-tuf's commit does
        f.truncate(0)
        f.write(b"orbit 2.0.0")
    for channel in ("1.0.0", "1"):
        assert (targets / channel / "orbit").read_bytes() == payload.read_bytes(), channel


def test_consistent_snapshot_names_share_one_inode(
    new_repo: Callable[[bool], Path], tmp_path: Path
) -> None:
    """With consistent snapshots go-tuf writes only hash-prefixed names (whose bytes the name
    fixes): one copy on disk for every channel and hash-prefixed name."""
    payload = _payload(tmp_path)
    repo_dir = new_repo(True)
    _add(UpdateRepository(repo_dir, PassphraseSource(environ=TEST_PASSPHRASES)), payload)
    digest = hashlib.sha512(payload.read_bytes()).hexdigest()
    targets = repo_dir / "repository/targets/orbit/linux"
    names = [
        targets / c / n for c in ("1.0.0", "1", "stable") for n in ("orbit", f"{digest}.orbit")
    ]
    assert len({p.stat().st_ino for p in names}) == 1


@pytest.mark.parametrize("role", ONLINE)
def test_keys_are_decrypted_again_after_a_rotation(
    new_repo: Callable[[bool], Path], tmp_path: Path, role: str
) -> None:
    """One UpdateRepository running several commands: a key file a rotation changed is read
    again by the next command (CI caught a per-instance cache holding the old keys)."""
    repo = UpdateRepository(new_repo(False), PassphraseSource(environ=TEST_PASSPHRASES))
    repo.rotate(role)
    _add(repo, _payload(tmp_path))
    repo.rotate(role)
    repo.timestamp()
