"""Issue 12, class 11: a hostile environment gives one line naming the problem and the fix.

- HOME unwritable (or unset, with no passwd entry): the message names the download cache and
  ``--cache-dir``, not just "Permission denied: /nonexistent".
- A full ``$TMPDIR`` (a small tmpfs mounted in a private mount namespace): the message names the
  temporary directory, not the file being copied (``certs.pem``).
- A passphrase that is not valid UTF-8 (bytes in the variable, or typed): a bad passphrase
  (exit 2), never a "broken key file", and no trace of its bytes in the output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from packager.repo.keys import RoleKey, decrypt_keys, encrypt_keys
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, cli

ROOT_JSON = FIXTURES / "demo-repo/repository/1.root.json"


def _in_private_mount(mountpoint: Path, options: str) -> list[str]:
    """A command prefix that runs the rest in a private mount namespace where ``mountpoint``
    is a fresh tmpfs mounted with ``options`` (root: ``unshare -m``; others: a user namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) (util-linux) to mount a private tmpfs")
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    prefix = [
        "unshare", *userns, "--mount", "sh", "-c",
        'mount -t tmpfs -o "$0" tmpfs "$1" && shift && exec "$@"', options, str(mountpoint),
    ]  # fmt: skip
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        reason = " ".join(probe.stderr.split())
        pytest.skip(f"cannot mount a private tmpfs here ({reason})")
    return prefix


def _run(
    prefix: list[str], *args: str | Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "XDG_"))}
    full.update(env)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "packager", *map(str, args)],
        env=full, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT_JSON.parent,
    )  # fmt: skip


# -- HOME ----------------------------------------------------------------------------------


def test_unwritable_home_names_the_cache(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    prefix = _in_private_mount(home, "ro,size=64k")  # unwritable even for root
    cache = home / ".cache/orbit-packager"
    fetch = _run(
        prefix, "fetch", "--type", "deb", "--update-url", "http://127.0.0.1:9",
        "--update-roots", ROOT_JSON, "--outdir", tmp_path / "out", env={"HOME": str(home)},
    )  # fmt: skip
    package = _run(
        prefix, "package", "--type", "deb", "--update-url", "http://127.0.0.1:9",
        "--update-roots", ROOT_JSON, "--outfile", tmp_path / "x.deb", env={"HOME": str(home)},
    )  # fmt: skip
    for out in (fetch, package):
        assert out.returncode == 2, out.stderr
        lines = out.stderr.splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith(
            f"orbit-packager: error: cannot use the download cache {cache}: Read-only file system:"
        ), lines[0]
        assert "pass --cache-dir DIR" in lines[0] and "--no-cache" in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.deb").exists()


def test_home_unset_without_passwd_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HOME and no passwd entry (a container's arbitrary uid): Path.home() cannot answer."""
    import pwd

    from packager.cli import cli as cli_group
    from packager.errors import UsageError

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("ORBIT_PACKAGER_CACHE_DIR", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for command in (
        ["fetch", "--type", "deb", "--outdir", str(tmp_path / "out")],
        ["package", "--type", "deb", "--outfile", str(tmp_path / "x.deb")],
    ):
        with pytest.raises(UsageError) as err:
            cli_group.main(
                args=[*command, "--update-url", "http://127.0.0.1:9", "--update-roots",
                      str(ROOT_JSON)],
                prog_name="orbit-packager", standalone_mode=False,
            )  # fmt: skip
        assert str(err.value) == (
            "no home directory for the download cache (HOME is not set) "
            "(pass --cache-dir DIR, set XDG_CACHE_HOME or HOME, or use --no-cache)"
        )


# -- a full TMPDIR -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    from tests.helpers import demo_repo

    repo = demo_repo(tmp_path_factory.mktemp("demo") / "repo")
    server = FaultServer(repo / "repository")
    yield server
    server.close()


@pytest.mark.parametrize("size", ["16k", "200k", "600k"])
def test_full_tmpdir_names_the_temporary_directory(
    served: FaultServer, tmp_path: Path, size: str
) -> None:
    """Each size runs out of room at another step (metadata, copying certs.pem, the deb)."""
    small = tmp_path / "small-tmp"
    small.mkdir()
    prefix = _in_private_mount(small, f"size={size}")
    out = _run(
        prefix, "package", "--type", "deb", "--fleet-url", "https://fleet.example.com",
        "--update-url", served.url, "--update-roots", ROOT_JSON, "--no-cache",
        "--outfile", tmp_path / "x.deb",
        env={"TMPDIR": str(small), "ORBIT_PACKAGER_ENROLL_SECRET": "s3cr3t"},
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"orbit-packager: error: no space left on device in the temporary directory {small} "
        "(TMPDIR, "
    ), lines[0]
    assert "set TMPDIR to a directory on a larger file system" in lines[0]
    assert "certs.pem" not in lines[0]
    assert not (tmp_path / "x.deb").exists()


# -- passphrases that are not UTF-8 ------------------------------------------------------------


def test_non_utf8_passphrase_variable_is_a_bad_passphrase(new_repo) -> None:
    repo = new_repo()
    raw = b"\xff\xfe not utf-8 \xe9"
    out = cli(
        "updates", "timestamp", "--path", repo, check=False,
        env={"FLEET_TIMESTAMP_PASSPHRASE": os.fsdecode(raw)},
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == (
        "orbit-packager: error: timestamp passphrase from FLEET_TIMESTAMP_PASSPHRASE is invalid "
        "(it is not valid UTF-8: check the encoding of the variable or the terminal)\n"
    )
    assert out.stdout == ""


def test_passphrase_bytes_are_used_as_they_are() -> None:
    """As fleetctl (Go) does: the variable's bytes are the passphrase, valid UTF-8 or not."""
    key = RoleKey.generate()
    sealed = encrypt_keys([key], "é")  # UTF-8: c3 a9
    assert decrypt_keys(sealed, os.fsdecode(b"\xc3\xa9")) == [key]
    latin1 = encrypt_keys([key], os.fsdecode(b"\xe9"))  # not UTF-8: the byte e9 itself
    assert decrypt_keys(latin1, os.fsdecode(b"\xe9")) == [key]


def _spawn(args: list[str | Path]) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["LC_ALL"] = "C.UTF-8"
    return pexpect.spawn(sys.executable, ["-m", "packager", *map(str, args)], env=env, timeout=60)


def test_non_utf8_typed_passphrase_is_a_bad_passphrase(new_repo) -> None:
    repo = new_repo()
    child = _spawn(["updates", "timestamp", "--path", repo])
    for _ in range(3):
        child.expect(b"Enter timestamp key passphrase: ")
        child.send(b"\xff\xfe\xe9\r")
        child.expect(b"Passphrase is not valid text in the terminal's encoding.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert child.before is not None
    assert (
        b"orbit-packager: error: no usable timestamp key passphrase after 3 attempts "
        b"(or set FLEET_TIMESTAMP_PASSPHRASE)" in child.before
    ), child.before
    assert b"Traceback" not in child.before and b"internal error" not in child.before

    # the terminal still works: bad bytes, then the right passphrase
    child = _spawn(["updates", "timestamp", "--path", repo])
    child.expect(b"Enter timestamp key passphrase: ")
    child.send(b"\xff\r")
    child.expect(b"not valid text")
    child.expect(b"Enter timestamp key passphrase: ")
    child.send(TEST_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"].encode() + b"\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
