"""Issue 12: Orbit's own TUF client, go-tuf v0.5.2 (tests/gotuf), reads every repository our
`updates` commands make (run in-process through the library the commands call, to save the interpreter
start-up of each command) — init, several adds, timestamp, remove, the rotation of every role
(root included), with and without consistent snapshots, the fleetctl-made fixture once our
commands managed it, and the demo repository — bootstrapped with root v1 as Orbit is, checking
every target's bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.gotuf.harness import client_targets, gotuf_binary, run_client
from tests.helpers import (
    GOTUF_PASSPHRASES,
    TEST_PASSPHRASES,
    add_target,
    copy_gotuf_fixture,
    demo_repo,
    serve,
)

ROLES = ("root", "targets", "snapshot", "timestamp")


@pytest.fixture(scope="session")
def gotuf() -> Path:
    return gotuf_binary()


def _versions(repo: Path) -> dict[str, int]:
    return {
        r: json.loads((repo / "repository" / f"{r}.json").read_bytes())["signed"]["version"]
        for r in ROLES
    }


def gotuf_reads(binary: Path, repo: Path, root_v1: bytes, expected: dict[str, bytes]) -> None:
    """go-tuf's client, trusting ``root_v1``, updates to the repository's current versions and
    downloads exactly ``expected`` with the right bytes."""
    with serve(repo / "repository") as url:
        out = client_targets(binary, url, root_v1)
    assert out["versions"] == _versions(repo)
    assert set(out["targets"]) == set(expected)
    for path, data in expected.items():
        assert out["targets"][path] == {
            "length": len(data),
            "sha512": hashlib.sha512(data).hexdigest(),
        }, path


@pytest.mark.parametrize("consistent", [False, True], ids=["plain", "consistent-snapshot"])
def test_gotuf_reads_every_command(gotuf: Path, new_repo, tmp_path: Path, consistent: bool) -> None:
    repo = new_repo(consistent)  # `updates init` on the command line
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))

    gotuf_reads(gotuf, repo, root_v1, {})  # init

    orbit1, orbit2, osq = tmp_path / "orbit", tmp_path / "orbit-new", tmp_path / "osqueryd.exe"
    orbit1.write_bytes(b"orbit 1.2.0\n" * 100)
    orbit2.write_bytes(b"orbit 1.3.0\n" * 100)
    osq.write_bytes(os.urandom(200_000))

    lib.add(orbit1, name="orbit", platform="linux", version="1.2.0", tags=["1.2", "stable"])
    expected = {f"orbit/linux/{c}/orbit": orbit1.read_bytes() for c in ("1.2.0", "1.2", "stable")}
    gotuf_reads(gotuf, repo, root_v1, expected)

    lib.add(osq, name="osqueryd", platform="windows", version="5.10.2", tags=["stable"])
    expected.update(
        {f"osqueryd/windows/{c}/osqueryd.exe": osq.read_bytes() for c in ("5.10.2", "stable")}
    )
    gotuf_reads(gotuf, repo, root_v1, expected)
    lib.add(orbit2, name="orbit", platform="linux", version="1.3.0", tags=["stable"])
    expected.update({f"orbit/linux/{c}/orbit": orbit2.read_bytes() for c in ("1.3.0", "stable")})
    gotuf_reads(gotuf, repo, root_v1, expected)

    lib.timestamp()
    gotuf_reads(gotuf, repo, root_v1, expected)

    lib.remove(["orbit/linux/1.2", "osqueryd/windows/5.10.2/osqueryd.exe"])
    del expected["orbit/linux/1.2/orbit"], expected["osqueryd/windows/5.10.2/osqueryd.exe"]
    gotuf_reads(gotuf, repo, root_v1, expected)

    for n, role in enumerate(("timestamp", "snapshot", "targets", "root", "root"), start=2):
        lib.rotate(role)
        assert _versions(repo)["root"] == n
        gotuf_reads(gotuf, repo, root_v1, expected)  # walks 1.root.json .. n.root.json

    # After every rotation, the new keys sign what the next add publishes.
    lib.add(orbit1, name="orbit", platform="linux", version="1.2.0", tags=["edge"])
    expected["orbit/linux/1.2.0/orbit"] = expected["orbit/linux/edge/orbit"] = orbit1.read_bytes()
    gotuf_reads(gotuf, repo, root_v1, expected)
    # A client that already trusts the newest root reads it as well.
    gotuf_reads(gotuf, repo, (repo / "repository/root.json").read_bytes(), expected)


def test_gotuf_reads_fleetctl_repository_managed_by_us(gotuf: Path, tmp_path: Path) -> None:
    repo = copy_gotuf_fixture(tmp_path / "fleet")
    root_v1 = (repo / "root-v1.json").read_bytes()
    lib = UpdateRepository(repo, PassphraseSource(environ=GOTUF_PASSPHRASES))
    served = repo / "repository/targets"
    expected = {
        str(p.relative_to(served)): p.read_bytes() for p in served.rglob("*") if p.is_file()
    }
    lib.timestamp()  # the fixture's timestamp has expired
    gotuf_reads(gotuf, repo, root_v1, expected)

    new = tmp_path / "osqueryd"
    new.write_bytes(b"osqueryd 5.11.0")
    lib.add(new, name="osqueryd", platform="linux", version="5.11.0", tags=["stable"])
    expected["osqueryd/linux/5.11.0/osqueryd"] = expected["osqueryd/linux/stable/osqueryd"] = (
        new.read_bytes()
    )
    gotuf_reads(gotuf, repo, root_v1, expected)
    for role in ("targets", "root"):
        lib.rotate(role)
        gotuf_reads(gotuf, repo, root_v1, expected)
    lib.remove(["orbit/linux/edge"])
    del expected["orbit/linux/edge/orbit"]
    gotuf_reads(gotuf, repo, root_v1, expected)


def test_gotuf_reads_demo_repository(gotuf: Path, tmp_path: Path) -> None:
    repo = demo_repo(tmp_path / "demo")
    listed = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    expected = {p: (repo / "repository/targets" / p).read_bytes() for p in listed}
    assert len(expected) == 42
    gotuf_reads(gotuf, repo, (repo / "repository/1.root.json").read_bytes(), expected)


def test_gotuf_client_refuses_a_tampered_target(gotuf: Path, new_repo, tmp_path: Path) -> None:
    """The Go client's checks are real: a changed target byte fails the download."""
    repo = new_repo(False)
    target = tmp_path / "orbit"
    target.write_bytes(b"orbit 1.2.0\n" * 100)
    add_target(repo, target, "orbit", "linux", "1.2.0", "stable", env=TEST_PASSPHRASES)
    served = repo / "repository/targets/orbit/linux/stable/orbit"
    data = bytearray(served.read_bytes())
    data[10] ^= 1
    served.unlink()  # a hard link shared with the 1.2.0 copy: replace this name only
    served.write_bytes(bytes(data))
    with serve(repo / "repository") as url:
        proc = run_client(gotuf, url, (repo / "repository/1.root.json").read_bytes(), check=False)
    assert proc.returncode == 1
    assert "download orbit/linux/stable/orbit" in proc.stderr
