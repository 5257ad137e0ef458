"""Issue 14, item 1, fetch and repository verification: tests that fail when a guard is broken.

Each test below was checked by breaking the guard it names by hand (the guard removed, or its
comparison moved by one) and seeing the test fail:

* an endless target body is stopped at the length in targets.json (``verify``, ``fetch``,
  ``package``), with nothing left in the output, the cache or the temporary directory;
* the metadata cache is keyed by the trusted root as well as the URL: two repositories (two
  roots) served one after the other at one URL never use each other's metadata;
* a role signed by fewer keys than its threshold (k-1 of k) is refused by the client, by
  ``--update-roots``, by ``updates status`` and ``updates add``, in UTC and in go-tuf's
  local-time form (which our own loader reads);
* a role file whose ``_type`` is another role's (served in its place, or edited and re-signed
  with the right key) is refused by the client, by ``--update-roots`` and by the repository;
* new metadata that does not verify is never published (``add``, ``remove``, ``timestamp``,
  ``rotate``): the tree, the keys and the journal stay as they were;
* only an executable for the installer's OS and CPU is accepted as ``orbit`` or ``osqueryd``
  (never a Mach-O, a relocatable object, a core file, a DLL, a shared library, a dylib, a
  script or a binary for another CPU), and nothing that is published is ever run;
* archives: a symlink chain that only leads outside once later members exist, a member written
  through such a chain, and the member-count bound, exactly at the boundary;
* the ``--warn`` and expiry boundaries of ``status`` and ``verify``, and the expired-root check of
  the repository commands, with an injected clock: exactly at the boundary and one second on
  either side.

Three guards did not hold when these tests were written (fixed since): a shared library passed
as the Linux agent, ``rotate`` checked "under the old root" against the root it had already
changed, and an endless metadata file was reported as "a file".

Real components throughout: repositories made by our ``updates`` library, served on 127.0.0.1
by ``FaultServer``, fetched by the real client and the real command line. Hostile metadata is
signed here with the repository's own keys, through ``encode_canonical`` and raw Ed25519, not
through the code under test. Binaries are the committed fixtures, byte-patched here (ELF
``e_type``, PE ``IMAGE_FILE_DLL``, Mach-O ``filetype``, read back by offset, not by lief), and
real ones made with gcc and mingw when those are installed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signer
from tuf.api.metadata import Root

from packager.errors import CorruptRepositoryError, KeyFileError, RepositoryStateError, UsageError
from packager.fetch.client import FetchError, UpdateClient, load_trusted_root
from packager.fetch.extract import UnsafeArchiveError, extract_tar_gz
from packager.fetch.http import HttpOptions
from packager.fetch.inspect import TargetMismatchError
from packager.fetch.targets import TargetSelection, fetch_into_directory
from packager.fetch.verify import verify_repository
from packager.repo.keys import RoleKey, decrypt_keys, encrypt_keys
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from packager.repo.signing import SigningKey
from packager.repo.status import repository_status
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, cli, tree_bytes

EXE = FIXTURES / "executables"
LINUX_EXE = EXE / "orbit-linux-x86_64"
WINDOWS_EXE = EXE / "orbit-windows-x86_64.exe"
MACOS_EXE = EXE / "orbit-macos-universal"
ROLES = ("root", "targets", "snapshot", "timestamp")
Z_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# -- a repository seen from outside: its files, its keys in the clear, signing by hand ---------


def _canonical(value: Any) -> bytes:
    """Canonical JSON, what TUF signatures cover (securesystemslib's, not the packager's)."""
    return str(encode_canonical(value)).encode()


def _parse_z(text: str) -> datetime:
    return datetime.strptime(text, Z_FORMAT).replace(tzinfo=timezone.utc)


def _local_time(signed: dict[str, Any]) -> None:
    """Write ``expires`` as fleetctl does on a machine at UTC-3 (the same instant)."""
    when = _parse_z(signed["expires"])
    signed["expires"] = when.astimezone(timezone(timedelta(hours=-3))).isoformat()


@dataclass
class Repo:
    """A repository directory with its private keys (kept in the clear, as go-tuf allows, so
    that publishing here does not spend seconds in scrypt)."""

    path: Path
    keys: dict[str, list[RoleKey]]

    @property
    def published(self) -> Path:
        return self.path / "repository"

    @property
    def root_bytes(self) -> bytes:
        return (self.published / "root.json").read_bytes()

    def lib(self, **kw: Any) -> UpdateRepository:
        return UpdateRepository(self.path, PassphraseSource(environ={}), **kw)

    def signed(self, role: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.published / f"{role}.json").read_bytes())
        return doc["signed"]  # type: ignore[no-any-return]

    def write(
        self, role: str, signed: dict[str, Any], signers: list[RoleKey], name: str | None = None
    ) -> bytes:
        """Sign ``signed`` with ``signers`` (under the key IDs root lists) and publish it."""
        keys = {**self.signed("root")["keys"], **(signed["keys"] if role == "root" else {})}
        ids = {key["keyval"]["public"]: kid for kid, key in keys.items()}
        message = _canonical(signed)
        signatures = [
            {
                "keyid": ids[key.public_hex],
                "sig": Ed25519PrivateKey.from_private_bytes(key.seed).sign(message).hex(),
            }
            for key in signers
        ]
        data = json.dumps({"signatures": signatures, "signed": signed}, separators=(",", ":"))
        (self.published / (name or f"{role}.json")).write_bytes(data.encode())
        return data.encode()

    def republish(
        self,
        start: str,
        *,
        signers: dict[str, list[RoleKey]] | None = None,
        edit: dict[str, Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        """Re-sign ``start`` and the roles above it (targets, snapshot, timestamp), each one
        version up and naming the new bytes of the one below, as a real publish would."""
        chain = ["targets", "snapshot", "timestamp"]
        below: tuple[str, bytes, int] | None = None
        for role in chain[chain.index(start) :]:
            signed = self.signed(role)
            signed["version"] += 1
            if below is not None:
                name, data, version = below
                signed["meta"][f"{name}.json"] = {
                    "version": version,
                    "length": len(data),
                    "hashes": {"sha512": hashlib.sha512(data).hexdigest()},
                }
            if edit and role in edit:
                edit[role](signed)
            chosen = (signers or {}).get(role, self.keys[role])
            below = (role, self.write(role, signed, chosen), signed["version"])

    def save_keys(self, role: str) -> None:
        (self.path / "keys" / f"{role}.json").write_bytes(encrypt_keys(self.keys[role], None))

    def copy(self, dest: Path) -> Repo:
        shutil.copytree(self.path, dest)
        return Repo(dest, {role: list(keys) for role, keys in self.keys.items()})

    def add(self, source: Path, name: str, platform: str, version: str, *tags: str) -> None:
        self.lib().add(source, name=name, platform=platform, version=version, tags=list(tags))


def _plain_keys(path: Path, passphrases: dict[str, str]) -> dict[str, list[RoleKey]]:
    """Decrypt the key files once and store them unencrypted (go-tuf's insecure form)."""
    keys = {}
    for role in ROLES:
        blob = (path / "keys" / f"{role}.json").read_bytes()
        keys[role] = decrypt_keys(blob, passphrases[f"FLEET_{role.upper()}_PASSPHRASE"])
        (path / "keys" / f"{role}.json").write_bytes(encrypt_keys(keys[role], None))
    return keys


def _app_tar(path: Path, executable: bytes) -> Path:
    """An osqueryd.app.tar.gz as Fleet publishes it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("osquery.app", "osquery.app/Contents", "osquery.app/Contents/MacOS"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("osquery.app/Contents/MacOS/osqueryd")
        info.size, info.mode = len(executable), 0o755
        tar.addfile(info, io.BytesIO(executable))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


@pytest.fixture(scope="module")
def base(_initialized_template: dict[bool, Path], tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """orbit and osqueryd for linux, windows and macOS on channel stable (and 1.0.0 / 5.0.0)."""
    work = tmp_path_factory.mktemp("guards")
    path = work / "repo"
    shutil.copytree(_initialized_template[False], path)
    repo = Repo(path, _plain_keys(path, TEST_PASSPHRASES))
    app = _app_tar(work / "osqueryd.app.tar.gz", MACOS_EXE.read_bytes())
    for name, version in (("orbit", "1.0.0"), ("osqueryd", "5.0.0")):
        repo.add(LINUX_EXE, name, "linux", version, "stable")
        repo.add(WINDOWS_EXE, name, "windows", version, "stable")
    repo.add(MACOS_EXE, "orbit", "macos", "1.0.0", "stable")
    repo.add(app, "osqueryd", "macos-app", "5.0.0", "stable")
    return repo


class Web:
    """One real HTTP server on 127.0.0.1 for the whole module, pointed at one repository at a
    time through a symbolic link (a server per test would cost its shutdown poll each time)."""

    def __init__(self, work: Path) -> None:
        self.link = work / "served"
        self.empty = work / "empty"
        self.empty.mkdir()
        self.link.symlink_to(self.empty)
        self.server = FaultServer(self.link)

    def point(self, directory: Path) -> None:
        new = self.link.with_name("served.new")
        new.symlink_to(directory)
        os.replace(new, self.link)

    @contextlib.contextmanager
    def serve(self, directory: Path) -> Iterator[FaultServer]:
        """Serve ``directory`` (no faults, counters at zero), then nothing again."""
        server = self.server
        server.faults.clear()
        server.bytes_served.clear()
        server.requests.clear()
        self.point(directory)
        try:
            yield server
        finally:
            server.faults.clear()
            self.point(self.empty)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    web = Web(tmp_path_factory.mktemp("web"))
    yield web
    web.server.close()


def _client(url: str, root: bytes, cache: Path | None = None, **kw: Any) -> UpdateClient:
    http = HttpOptions(read_timeout=5, retries=1, backoff=0.01)
    return UpdateClient(url, root, cache_dir=cache, http=http, **kw)


def _fetch_error(url: str, root: bytes, tmp_path: Path, target: str) -> str:
    dest = tmp_path / "dest" / "file"
    with _client(url, root) as client, pytest.raises(FetchError) as err:
        client.fetch(target, dest)
    assert not dest.exists()
    message = str(err.value)
    assert "\n" not in message, message
    return message


# -- 1. an endless target is stopped at the length in targets.json ------------------------------

ORBIT_LINUX = "orbit/linux/stable/orbit"
ENDLESS_BOUND = 32 * 1024 * 1024  # the server would send 128 MiB; the client reads one chunk more


def _endless_line(url: str, target: str, source: Path) -> str:
    size = source.stat().st_size
    return (
        f"{target} from {url} is longer than its metadata allows: "
        f"{target} is longer than the {size} bytes the metadata allows"
    )


def test_endless_target_through_verify(web: Web, base: Repo, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    kept = tmp_path / "kept"
    roots = tmp_path / "root.json"
    roots.write_bytes(base.root_bytes)
    with web.serve(base.published) as server:
        server.faults[f"/targets/{ORBIT_LINUX}"] = "endless"
        out = cli(
            "verify", "--update-url", server.url, "--update-roots", roots,
            "--target", "orbit/linux/*", "--download-dir", kept,
            env={"TMPDIR": str(tmpdir)}, check=False,
        )  # fmt: skip
        served_bytes = server.bytes_served[f"/targets/{ORBIT_LINUX}"]
    assert out.returncode == 4, out.stdout + out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert "targets verified: 1/2" in lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == ["error: " + _endless_line(server.url, ORBIT_LINUX, LINUX_EXE)]
    assert served_bytes < ENDLESS_BOUND, served_bytes
    # The good channel is kept; nothing under the endless one's name, no temporary left.
    assert (kept / "orbit/linux/1.0.0/orbit").read_bytes() == LINUX_EXE.read_bytes()
    files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if not p.is_dir())
    assert files == ["orbit/linux/1.0.0/orbit"]
    assert list(tmpdir.iterdir()) == []


def test_endless_target_through_fetch(web: Web, base: Repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    outdir = tmp_path / "work" / "out"
    outdir.parent.mkdir()
    with web.serve(base.published) as server:
        server.faults[f"/targets/{ORBIT_LINUX}"] = "endless"
        (tmp_path / "root.json").write_bytes(base.root_bytes)
        out = cli(
            "fetch", "--type", "deb", "--update-url", server.url,
            "--update-roots", tmp_path / "root.json", "--cache-dir", cache, "--outdir", outdir,
            check=False,
        )  # fmt: skip
        served_bytes = server.bytes_served[f"/targets/{ORBIT_LINUX}"]
    assert out.returncode == 4, out.stderr
    line = _endless_line(server.url, ORBIT_LINUX, LINUX_EXE)
    assert out.stderr == f"orbit-packager: error: {line}\n"
    assert served_bytes < ENDLESS_BOUND, served_bytes
    assert list(outdir.parent.iterdir()) == []  # no output, no staging directory
    assert list((cache / "targets").iterdir()) == []  # no partial cache entry


def test_endless_target_through_package(web: Web, base: Repo, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (tmp_path / "out").mkdir()
    target = "orbit/windows/stable/orbit.exe"
    (tmp_path / "root.json").write_bytes(base.root_bytes)
    with web.serve(base.published) as server:
        server.faults[f"/targets/{target}"] = "endless"
        out = cli(
            "package", "--type", "msi", "--update-url", server.url,
            "--update-roots", tmp_path / "root.json", "--no-cache",
            "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s",
            "--outfile", tmp_path / "out" / "fleet.msi",
            env={"TMPDIR": str(tmpdir)}, check=False,
        )  # fmt: skip
        served_bytes = server.bytes_served[f"/targets/{target}"]
    assert out.returncode == 4, out.stderr
    assert (
        out.stderr == f"orbit-packager: error: {_endless_line(server.url, target, WINDOWS_EXE)}\n"
    )
    assert served_bytes < ENDLESS_BOUND, served_bytes
    assert list((tmp_path / "out").iterdir()) == []
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("name", ["timestamp.json", "snapshot.json", "targets.json", "2.root.json"])
def test_endless_metadata_is_stopped(web: Web, base: Repo, tmp_path: Path, name: str) -> None:
    """Metadata has its bound too: python-tuf's for timestamp and root, the length snapshot and
    timestamp list for the others."""
    with web.serve(base.published) as server:
        server.faults[f"/{name}"] = "endless"
        message = _fetch_error(server.url, base.root_bytes, tmp_path, ORBIT_LINUX)
        served_bytes = server.bytes_served[f"/{name}"]
    assert f"from {server.url} is longer than its metadata allows: Downloaded " in message
    assert served_bytes < ENDLESS_BOUND, served_bytes


def test_endless_metadata_error_names_the_file(web: Web, base: Repo, tmp_path: Path) -> None:
    with web.serve(base.published) as server:
        server.faults["/timestamp.json"] = "endless"
        message = _fetch_error(server.url, base.root_bytes, tmp_path, ORBIT_LINUX)
    assert message.startswith(f"timestamp.json from {server.url} is longer than"), message


# -- 2. the metadata cache is keyed by the trusted root, not by the URL alone -------------------


def test_two_roots_at_one_url_never_share_cached_metadata(
    web: Web, base: Repo, tmp_path: Path
) -> None:
    """Repository A, then a different repository B (new keys, lower versions) at the same URL
    with the same cache, then A again: each is verified from its own root, and what one left in
    the cache never stands in for the other's metadata (offline shows it: each root finds its
    own metadata there, a root never used finds none)."""
    a = base.copy(tmp_path / "a")
    a.republish("targets")  # A's versions are above B's
    a.republish("targets")
    b_path = tmp_path / "b"
    UpdateRepository(b_path, PassphraseSource(environ=TEST_PASSPHRASES)).init()
    b = Repo(b_path, _plain_keys(b_path, TEST_PASSPHRASES))
    b_orbit = tmp_path / "orbit"
    b_orbit.write_bytes(LINUX_EXE.read_bytes() + b"repository B")
    b.add(b_orbit, "orbit", "linux", "2.0.0", "stable")
    unused_path = tmp_path / "unused"
    UpdateRepository(unused_path, PassphraseSource(environ=TEST_PASSPHRASES)).init()
    unused_root = (unused_path / "repository/root.json").read_bytes()
    assert len({a.root_bytes, b.root_bytes, unused_root}) == 3

    cache = tmp_path / "cache"

    def fetch(root: bytes, name: str, *, offline: bool = False) -> bytes:
        dest = tmp_path / "got" / name
        with _client(server.url, root, cache, offline=offline) as client:
            client.fetch(ORBIT_LINUX, dest)
        return dest.read_bytes()

    with web.serve(a.published) as server:
        assert fetch(a.root_bytes, "a1") == LINUX_EXE.read_bytes()
        web.point(b.published)
        assert fetch(b.root_bytes, "b1") == b_orbit.read_bytes()
        # B's metadata under A's root: refused, and A's cached metadata is not touched.
        with _client(server.url, a.root_bytes, cache) as client, pytest.raises(FetchError) as err:
            client.fetch(ORBIT_LINUX, tmp_path / "got" / "x")
        assert str(err.value).startswith(f"bad signature from {server.url}: timestamp was signed")
        web.point(a.published)
        assert fetch(a.root_bytes, "a2") == LINUX_EXE.read_bytes()  # no rollback error
        web.point(web.empty)
        # Offline, each root finds its own metadata in the cache, and only its own.
        asked = sum(server.requests.values())
        assert fetch(a.root_bytes, "a3", offline=True) == LINUX_EXE.read_bytes()
    assert fetch(b.root_bytes, "b2", offline=True) == b_orbit.read_bytes()
    with (
        _client(server.url, unused_root, cache, offline=True) as client,
        pytest.raises(FetchError) as err,
    ):
        client.fetch(ORBIT_LINUX, tmp_path / "got" / "y")
    assert str(err.value) == (
        "--offline: timestamp.json is not in the cache (run once without --offline to fill it)"
    )
    assert sum(server.requests.values()) == asked


# -- 3. thresholds: k-1 signatures of k -------------------------------------------------------


def _require_two(repo: Repo, role: str) -> None:
    """Give ``role`` a second key and a threshold of 2 in root.json (version 1, re-signed by
    the root key: the root clients are given), and store both keys in its key file."""
    second = RoleKey.generate()
    root = repo.signed("root")
    root["keys"][second.gotuf_keyid] = second.public_dict()
    root["roles"][role]["keyids"].append(second.gotuf_keyid)
    root["roles"][role]["threshold"] = 2
    repo.keys[role] = [*repo.keys[role], second]
    repo.save_keys(role)
    signers = repo.keys["root"]
    data = repo.write("root", root, signers)
    (repo.published / "1.root.json").write_bytes(data)


def _under_signed(web: Web, base: Repo, tmp_path: Path, role: str, local_time: bool) -> Repo:
    """``role`` needs 2 of 2 keys; first everything is signed properly (and checked to
    verify), then ``role`` is re-signed by one of them only (optionally with go-tuf's
    local-time ``expires``, read by our own loader rather than python-tuf's)."""
    repo = base.copy(tmp_path / "repo")
    _require_two(repo, role)
    repo.republish(role)
    with web.serve(repo.published) as server, _client(server.url, repo.root_bytes) as client:
        client.fetch(ORBIT_LINUX, tmp_path / "control")  # 2 of 2: fine
    assert repository_status(repo.lib(), timedelta(0), datetime.now(timezone.utc)).ok
    edit: dict[str, Callable[[dict[str, Any]], None]] = {role: _local_time} if local_time else {}
    repo.republish(role, signers={role: repo.keys[role][:1]}, edit=edit)
    return repo


@pytest.mark.parametrize("local_time", [False, True], ids=["utc", "local-time"])
@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_client_refuses_a_role_below_its_threshold(
    web: Web, base: Repo, tmp_path: Path, role: str, local_time: bool
) -> None:
    repo = _under_signed(web, base, tmp_path, role, local_time)
    with web.serve(repo.published) as server:
        message = _fetch_error(server.url, repo.root_bytes, tmp_path, ORBIT_LINUX)
    assert message == (
        f"bad signature from {server.url}: {role} was signed by 1/2 keys "
        "(threshold not met; wrong --update-roots?)"
    )


@pytest.mark.parametrize("local_time", [False, True], ids=["utc", "local-time"])
def test_client_refuses_a_new_root_below_the_threshold(
    web: Web, base: Repo, tmp_path: Path, local_time: bool
) -> None:
    """Root v1 needs 2 of 2 root keys (and has both); root v2 carries one signature."""
    repo = base.copy(tmp_path / "repo")
    _require_two(repo, "root")
    v1 = repo.root_bytes
    root = repo.signed("root")
    root["version"] = 2
    if local_time:
        _local_time(root)
    data = repo.write("root", root, repo.keys["root"][:1], name="2.root.json")
    (repo.published / "root.json").write_bytes(data)
    with web.serve(repo.published) as server:
        message = _fetch_error(server.url, v1, tmp_path, ORBIT_LINUX)
    assert message == (
        f"bad signature from {server.url}: root was signed by 1/2 keys "
        "(threshold not met; wrong --update-roots?)"
    )


def test_update_roots_below_its_own_threshold_is_refused(base: Repo, tmp_path: Path) -> None:
    repo = base.copy(tmp_path / "repo")
    _require_two(repo, "root")
    good = repo.root_bytes
    load_trusted_root("https://updates.example.com", good.decode())  # 2 of 2
    root = repo.signed("root")
    repo.write("root", root, repo.keys["root"][:1])
    path = repo.published / "root.json"
    with pytest.raises(UsageError) as err:
        load_trusted_root("https://updates.example.com", str(path))
    assert err.value.message == (
        f"--update-roots file {path} is not signed by its own root keys (root was signed by "
        "1/2 keys, threshold not met): tampered with, or signed by other keys"
    )


@pytest.mark.parametrize("local_time", [False, True], ids=["utc", "local-time"])
@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_repository_refuses_a_role_below_its_threshold(
    web: Web, base: Repo, tmp_path: Path, role: str, local_time: bool
) -> None:
    repo = _under_signed(web, base, tmp_path, role, local_time)
    expected = (
        f"{repo.published / f'{role}.json'} does not verify: {role} was signed by 1/2 keys "
        "(restore it from a backup or re-sign it with the right key)"
    )
    with pytest.raises(CorruptRepositoryError) as err:
        repository_status(repo.lib(), timedelta(hours=72), datetime.now(timezone.utc))
    assert str(err.value) == expected
    before = tree_bytes(repo.path)
    with pytest.raises(CorruptRepositoryError) as err:
        repo.add(LINUX_EXE, "orbit", "linux", "3.0.0")
    assert str(err.value) == expected
    assert tree_bytes(repo.path) == before


def test_status_command_exits_3_on_a_role_below_its_threshold(
    web: Web, base: Repo, tmp_path: Path
) -> None:
    repo = _under_signed(web, base, tmp_path, "timestamp", False)
    out = cli("updates", "status", "--path", repo.path, check=False)
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr == (
        f"orbit-packager: error: {repo.published / 'timestamp.json'} does not verify: timestamp "
        "was signed by 1/2 keys (restore it from a backup or re-sign it with the right key)\n"
    )


def test_add_with_fewer_keys_than_the_threshold_signs_nothing(base: Repo, tmp_path: Path) -> None:
    """The targets key file holds one of the two keys root requires: refused before signing."""
    repo = base.copy(tmp_path / "repo")
    _require_two(repo, "targets")
    repo.republish("targets")
    repo.keys["targets"] = repo.keys["targets"][:1]
    repo.save_keys("targets")
    before = tree_bytes(repo.path)
    with pytest.raises(KeyFileError) as err:
        repo.add(LINUX_EXE, "orbit", "linux", "3.0.0")
    assert str(err.value).startswith(f"{repo.path / 'keys/targets.json'} holds no current targets")
    assert tree_bytes(repo.path) == before


# -- 4. a role file of the wrong _type --------------------------------------------------------


def _retyped(repo: Repo, role: str, new_type: str, local_time: bool) -> None:
    def edit(signed: dict[str, Any]) -> None:
        signed["_type"] = new_type
        if local_time:
            _local_time(signed)

    repo.republish(role, edit={role: edit})


@pytest.mark.parametrize("local_time", [False, True], ids=["utc", "local-time"])
@pytest.mark.parametrize("how", ["edited-and-re-signed", "snapshot-served-as-timestamp"])
def test_client_refuses_a_role_of_the_wrong_type(
    web: Web, base: Repo, tmp_path: Path, how: str, local_time: bool
) -> None:
    repo = base.copy(tmp_path / "repo")
    if how == "edited-and-re-signed":  # with the timestamp key: only _type is wrong
        _retyped(repo, "timestamp", "snapshot", local_time)
    else:
        repo.republish("targets", edit={"snapshot": _local_time} if local_time else {})
        shutil.copyfile(repo.published / "snapshot.json", repo.published / "timestamp.json")
    with web.serve(repo.published) as server:
        message = _fetch_error(server.url, repo.root_bytes, tmp_path, ORBIT_LINUX)
    assert message == (
        f"metadata from {server.url} is not valid: Expected 'timestamp', got 'snapshot'"
    )


def test_update_roots_of_another_type_is_refused(base: Repo) -> None:
    path = base.published / "timestamp.json"
    with pytest.raises(UsageError) as err:
        load_trusted_root("https://updates.example.com", str(path))
    assert err.value.message == (
        f"--update-roots file {path} is not a TUF root.json ('_type' is 'timestamp')"
    )


@pytest.mark.parametrize("local_time", [False, True], ids=["utc", "local-time"])
def test_repository_refuses_a_role_of_the_wrong_type(
    base: Repo, tmp_path: Path, local_time: bool
) -> None:
    repo = base.copy(tmp_path / "repo")
    _retyped(repo, "timestamp", "snapshot", local_time)
    expected = (
        f"{repo.published / 'timestamp.json'} is not valid TUF timestamp metadata: "
        "_type is 'snapshot', expected 'timestamp'"
    )
    with pytest.raises(CorruptRepositoryError) as err:
        repository_status(repo.lib(), timedelta(hours=72), datetime.now(timezone.utc))
    assert str(err.value) == expected
    before = tree_bytes(repo.path)
    for command in (lambda: repo.lib().timestamp(), lambda: repo.add(LINUX_EXE, "x", "linux", "1")):
        with pytest.raises(CorruptRepositoryError) as err:
            command()
        assert str(err.value) == expected
    assert tree_bytes(repo.path) == before


# -- 5. new metadata is verified before it is published ---------------------------------------


class WrongSignerRepository(UpdateRepository):
    """A repository whose signers for ``bad_role`` sign with another key than the one root lists
    under their key ID (what a key-ID mix-up would do): every signature they make is invalid,
    and only the check before publishing stands between it and the clients."""

    def __init__(self, path: Path, bad_role: str) -> None:
        super().__init__(path, PassphraseSource(environ={}))
        self.bad_role = bad_role

    def _signers_for(self, root: Root, role: str, keys: Sequence[SigningKey]) -> list[Signer]:
        signers = super()._signers_for(root, role, keys)
        if role != self.bad_role:
            return signers
        return [RoleKey.generate().signer(s.public_key.keyid) for s in signers]


COMMANDS: dict[str, Callable[[UpdateRepository], object]] = {
    "add": lambda lib: lib.add(LINUX_EXE, name="orbit", platform="linux", version="3.0.0"),
    "remove": lambda lib: lib.remove(["orbit/linux/1.0.0/orbit"]),
    "timestamp": lambda lib: lib.timestamp(),
    "rotate": lambda lib: lib.rotate("snapshot"),
    "rotate-root": lambda lib: lib.rotate("root"),
}


@pytest.mark.parametrize(
    ("command", "bad_role"),
    [
        ("add", "targets"),
        ("add", "snapshot"),
        ("add", "timestamp"),
        ("remove", "targets"),
        ("timestamp", "timestamp"),
        ("rotate", "timestamp"),
        # The rotated role's (and root's) new files carry the old key's signature too, for
        # clients still on the old root: a bad one must be caught under the old root.
        pytest.param("rotate", "snapshot"),
        pytest.param("rotate-root", "root"),
    ],
)
def test_metadata_that_does_not_verify_is_never_published(
    web: Web, base: Repo, tmp_path: Path, command: str, bad_role: str
) -> None:
    repo = base.copy(tmp_path / "repo")
    before = tree_bytes(repo.path)
    lib = WrongSignerRepository(repo.path, bad_role)
    with pytest.raises(CorruptRepositoryError) as err:
        COMMANDS[command](lib)
    assert str(err.value).startswith(f"new {bad_role}.json does not verify"), str(err.value)
    assert tree_bytes(repo.path) == before  # metadata, targets and key files
    assert not lib.pending_journal()
    with web.serve(repo.published) as server, _client(server.url, repo.root_bytes) as client:
        client.fetch(ORBIT_LINUX, tmp_path / "still-served")
    # The same command with the right keys publishes (the refusal came from the keys).
    COMMANDS[command](repo.lib())
    assert tree_bytes(repo.path) != before


# -- 6. only an executable for the installer's OS and CPU is an agent ---------------------------


def _patched(source: Path, dest: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dest.write_bytes(bytes(data))
    return dest


def _elf_type(dest: Path, e_type: int) -> Path:
    """The Linux fixture with another ELF e_type (1 REL, 3 DYN, 4 CORE): offset 16."""
    assert LINUX_EXE.read_bytes()[:4] == b"\x7fELF"
    return _patched(LINUX_EXE, dest, 16, "<H", e_type)


def _pe_dll(dest: Path) -> Path:
    """The Windows fixture with IMAGE_FILE_DLL (0x2000) set in its COFF characteristics."""
    data = WINDOWS_EXE.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[pe : pe + 4] == b"PE\0\0"
    characteristics = struct.unpack_from("<H", data, pe + 4 + 18)[0]
    return _patched(WINDOWS_EXE, dest, pe + 4 + 18, "<H", characteristics | 0x2000)


def _pe_stripped(dest: Path) -> Path:
    """The Windows fixture as an old-style linker leaves an executable: relocations, line
    numbers, local symbols and debug information stripped, run-from-swap flags (COFF
    characteristics 0x0001|0x0004|0x0008|0x0200|0x0400|0x0800); still no IMAGE_FILE_DLL."""
    data = WINDOWS_EXE.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    characteristics = struct.unpack_from("<H", data, pe + 4 + 18)[0]
    assert not characteristics & 0x2000
    return _patched(WINDOWS_EXE, dest, pe + 4 + 18, "<H", characteristics | 0x0E0D)


def _macho_dylib(source: Path, dest: Path, *, slice_index: int | None = None) -> Path:
    """A Mach-O fixture with filetype MH_DYLIB (6) instead of MH_EXECUTE (2): in a thin file,
    or in one slice of a universal one."""
    data = source.read_bytes()
    offset = 0
    if slice_index is not None:
        assert data[:4] == b"\xca\xfe\xba\xbe"
        offset = struct.unpack_from(">I", data, 8 + 20 * slice_index + 8)[0]
    assert data[offset : offset + 4] == b"\xcf\xfa\xed\xfe"
    assert struct.unpack_from("<I", data, offset + 12)[0] == 2
    return _patched(source, dest, offset + 12, "<I", 6)


def _compiled(dest: Path, compiler: str, *flags: str, source: str) -> Path | None:
    """A real binary made by ``compiler`` (None when it is not installed)."""
    if shutil.which(compiler) is None:
        return None
    src = dest.with_suffix(".c")
    src.write_text(source)
    subprocess.run([compiler, *flags, "-o", str(dest), str(src)], check=True, capture_output=True)
    return dest


MAIN = "int main(void) { return 0; }\n"
LIBRARY = "int orbit_main(void) { return 0; }\n"
CANARY = "canary-ran"


@dataclass(frozen=True)
class Case:
    package_type: str  # deb | msi | pkg
    arch: str
    name: str  # orbit | osqueryd
    platform: str
    source: str  # key into the ``zoo`` fixture's sources
    expected: str | None  # the refusal, None: accepted
    tool: str | None = None  # compiler the source needs


CASES = {
    # Linux installers: an ELF executable for the CPU, nothing else.
    "linux-macho": Case("deb", "amd64", "orbit", "linux", "macho", "a Mach-O X86_64 executable"),
    "linux-pe": Case("deb", "amd64", "orbit", "linux", "pe", "a PE AMD64 executable"),
    "linux-rel": Case("deb", "amd64", "orbit", "linux", "rel", "an ELF X86_64 non-executable"),
    "linux-core": Case("deb", "amd64", "orbit", "linux", "core", "an ELF X86_64 non-executable"),
    "linux-cpu": Case("deb", "amd64", "orbit", "linux", "aarch64", "an ELF AARCH64 executable"),
    "linux-script": Case(
        "deb", "amd64", "orbit", "linux", "script", "an unknown unknown CPU non-executable"
    ),
    "linux-osqueryd-rel": Case(
        "deb", "amd64", "osqueryd", "linux", "rel", "an ELF X86_64 non-executable"
    ),
    "linux-object": Case(
        "deb", "amd64", "orbit", "linux", "object", "an ELF X86_64 non-executable", "gcc"
    ),
    "linux-pie": Case("deb", "amd64", "orbit", "linux", "pie", None, "gcc"),
    "linux-no-pie": Case("deb", "amd64", "orbit", "linux", "no-pie", None, "gcc"),
    "linux-static-pie": Case("deb", "amd64", "orbit", "linux", "static-pie", None, "gcc"),
    # Windows installers: a PE executable (not a DLL) for the CPU.
    "windows-dll": Case("msi", "amd64", "orbit", "windows", "dll", "a PE AMD64 non-executable"),
    "windows-mingw-dll": Case(
        "msi",
        "amd64",
        "orbit",
        "windows",
        "mingw-dll",
        "a PE AMD64 non-executable",
        "x86_64-w64-mingw32-gcc",
    ),
    "windows-cpu": Case("msi", "amd64", "orbit", "windows", "arm64.exe", "a PE ARM64 executable"),
    "windows-stripped-exe": Case("msi", "amd64", "orbit", "windows", "stripped.exe", None),
    "windows-elf": Case("msi", "amd64", "orbit", "windows", "elf", "an ELF X86_64 executable"),
    "windows-mingw-exe": Case(
        "msi", "amd64", "orbit", "windows", "mingw-exe", None, "x86_64-w64-mingw32-gcc"
    ),
    # macOS: a Mach-O executable with every CPU the pkg is for (universal: both).
    "macos-dylib": Case(
        "pkg", "amd64", "orbit", "macos", "dylib", "a Mach-O X86_64 non-executable"
    ),
    "macos-universal-dylib-slice": Case(
        "pkg", "universal", "orbit", "macos", "fat-dylib", "a Mach-O X86_64+ARM64 non-executable"
    ),
    "macos-thin-for-universal": Case(
        "pkg", "universal", "orbit", "macos", "thin", "a Mach-O X86_64 executable"
    ),
    "macos-elf": Case("pkg", "universal", "orbit", "macos", "elf", "an ELF X86_64 executable"),
    "macos-app-dylib": Case(
        "pkg",
        "universal",
        "osqueryd",
        "macos-app",
        "app-dylib",
        "a Mach-O X86_64+ARM64 non-executable",
    ),
}
EXPECTED_FORMAT = {
    ("deb", "amd64"): "an ELF X86_64 executable",
    ("msi", "amd64"): "a PE AMD64 executable",
    ("pkg", "amd64"): "a Mach-O X86_64 executable",
    ("pkg", "universal"): "a Mach-O ARM64+X86_64 executable",
}


@dataclass
class Zoo:
    repo: Repo
    marker: Path  # what the script target would create if anything ran it
    missing: set[str]  # sources whose compiler is not installed


@pytest.fixture(scope="module")
def zoo(base: Repo, tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The base repository plus one channel per case, named after the case, holding its
    binary as orbit (or osqueryd)."""
    work = tmp_path_factory.mktemp("zoo")
    repo = base.copy(work / "repo")
    marker = work / CANARY
    src = work / "src"
    src.mkdir()
    script = src / "script"
    script.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    script.chmod(0o755)
    sources: dict[str, Path | None] = {
        "macho": EXE / "orbit-macos-x86_64",
        "pe": WINDOWS_EXE,
        "rel": _elf_type(src / "rel", 1),
        "core": _elf_type(src / "core", 4),
        "aarch64": EXE / "orbit-linux-aarch64",
        "script": script,
        "object": _compiled(src / "object", "gcc", "-c", source=LIBRARY),
        "pie": _compiled(src / "pie", "gcc", "-pie", "-fPIE", source=MAIN),
        "no-pie": _compiled(src / "no-pie", "gcc", "-no-pie", source=MAIN),
        "static-pie": _compiled(src / "static-pie", "gcc", "-static-pie", source=MAIN),
        "shared": _compiled(src / "shared", "gcc", "-shared", "-fPIC", source=LIBRARY),
        "dll": _pe_dll(src / "dll.exe"),
        "stripped.exe": _pe_stripped(src / "stripped.exe"),
        "mingw-dll": _compiled(
            src / "mingw.dll", "x86_64-w64-mingw32-gcc", "-shared", source=LIBRARY
        ),
        "mingw-exe": _compiled(src / "mingw.exe", "x86_64-w64-mingw32-gcc", source=MAIN),
        "arm64.exe": EXE / "orbit-windows-aarch64.exe",
        "elf": LINUX_EXE,
        "dylib": _macho_dylib(EXE / "orbit-macos-x86_64", src / "dylib"),
        "fat-dylib": _macho_dylib(MACOS_EXE, src / "fat-dylib", slice_index=1),
        "thin": EXE / "orbit-macos-x86_64",
    }
    fat_dylib = sources["fat-dylib"]
    assert fat_dylib is not None
    sources["app-dylib"] = _app_tar(src / "osqueryd.app.tar.gz", fat_dylib.read_bytes())
    missing = {name for name, path in sources.items() if path is None}
    cases = {**CASES, "linux-shared": Case("deb", "amd64", "orbit", "linux", "shared", "", "gcc")}
    for number, (case_id, case) in enumerate(sorted(cases.items()), start=1):
        source = sources[case.source]
        if source is None:
            continue
        named = src / case_id / _target_path(case, case_id).rsplit("/", 1)[1]
        named.parent.mkdir()
        shutil.copyfile(source, named)  # the published file name follows the source's
        repo.add(named, case.name, case.platform, f"9.{number}.0", case_id)
    return Zoo(repo, marker, missing)


def _selection(case: Case, channel: str) -> TargetSelection:
    if case.name == "orbit":
        return TargetSelection(case.package_type, case.arch, orbit_channel=channel)
    return TargetSelection(case.package_type, case.arch, osqueryd_channel=channel)


def _target_path(case: Case, channel: str) -> str:
    filename = {
        "windows": f"{case.name}.exe",
        "macos-app": "osqueryd.app.tar.gz",
    }.get(case.platform, case.name)
    return f"{case.name}/{case.platform}/{channel}/{filename}"


def _fetch_case(
    web: Web, zoo: Zoo, tmp_path: Path, case_id: str, case: Case, *, exact: bool = True
) -> None:
    if case.tool and case.source in zoo.missing:
        pytest.skip(f"{case.tool} is not installed")
    outdir = tmp_path / "work" / "orbit-root"
    outdir.parent.mkdir()
    repo = zoo.repo
    with web.serve(repo.published) as server, _client(server.url, repo.root_bytes) as client:
        if case.expected is None:
            fetched = fetch_into_directory(client, _selection(case, case_id), outdir)
            described = EXPECTED_FORMAT[case.package_type, case.arch].split(" ", 1)[1]
            assert fetched[0].binary.describe() == described
            return
        with pytest.raises(TargetMismatchError) as err:
            fetch_into_directory(client, _selection(case, case_id), outdir)
    expected = EXPECTED_FORMAT[case.package_type, case.arch]
    message = f"target {_target_path(case, case_id)} is {case.expected}, expected {expected}"
    if exact:
        assert err.value.message == message
    else:  # what the binary is called may change with the fix; the refusal may not
        assert err.value.message.startswith(f"target {_target_path(case, case_id)} is ")
        assert err.value.message.endswith(f", expected {expected}")
    assert err.value.hint == "check --arch and the target's platform in the update repository"
    assert list(outdir.parent.iterdir()) == []  # nothing fetched is left behind
    assert not zoo.marker.exists()


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_only_an_executable_for_the_os_and_cpu_is_an_agent(
    web: Web, zoo: Zoo, tmp_path: Path, case_id: str
) -> None:
    _fetch_case(web, zoo, tmp_path, case_id, CASES[case_id])


def test_a_shared_library_is_not_an_agent(web: Web, zoo: Zoo, tmp_path: Path) -> None:
    case = Case("deb", "amd64", "orbit", "linux", "shared", "an ELF X86_64 non-executable", "gcc")
    _fetch_case(web, zoo, tmp_path, "linux-shared", case, exact=False)


def test_fetch_and_package_refuse_a_dll_in_one_line(web: Web, zoo: Zoo, tmp_path: Path) -> None:
    """Through the command line: exit 2, one line, no output, nothing in TMPDIR."""
    repo = zoo.repo
    roots = tmp_path / "root.json"
    roots.write_bytes(repo.root_bytes)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    line = (
        "orbit-packager: error: target orbit/windows/windows-dll/orbit.exe is a PE AMD64 "
        "non-executable, expected a PE AMD64 executable (check --arch and the target's platform "
        "in the update repository)\n"
    )
    with web.serve(repo.published) as server:
        common: list[str | Path] = [
            "--type", "msi", "--orbit-channel", "windows-dll", "--update-url", server.url,
            "--update-roots", roots, "--no-cache",
        ]  # fmt: skip
        fetched = cli("fetch", *common, "--outdir", out / "targets", check=False)
        built = cli(
            "package", *common, "--fleet-url", "https://fleet.example.com",
            "--enroll-secret", "s", "--outfile", out / "fleet.msi",
            env={"TMPDIR": str(tmpdir)}, check=False,
        )  # fmt: skip
    assert (fetched.returncode, fetched.stderr) == (2, line)
    assert (built.returncode, built.stderr) == (2, line)
    assert list(out.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


def test_a_published_script_is_never_run(web: Web, zoo: Zoo, tmp_path: Path) -> None:
    """fleetctl runs ``<target> --help``; the packager only reads headers. The script would
    write the marker if anything ran it, even once."""
    roots = tmp_path / "root.json"
    roots.write_bytes(zoo.repo.root_bytes)
    with web.serve(zoo.repo.published) as server:
        out = cli(
            "fetch", "--type", "deb", "--orbit-channel", "linux-script", "--update-url",
            server.url, "--update-roots", roots, "--no-cache", "--outdir", tmp_path / "out",
            check=False,
        )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "target orbit/linux/linux-script/orbit is an unknown unknown CPU" in out.stderr
    assert not zoo.marker.exists()
    assert not (tmp_path / "out").exists()


# -- 7. archives ------------------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def _f(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def _sym(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _tar(path: Path, members: list[Member]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _listing(top: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(top))] = "l:" + str(p.readlink()) if p.is_symlink() else "-"
    return out


def _chain_write(levels: int) -> list[Member]:
    """``a -> b``, ``b -> c/c/.../../..`` and ``c -> .``: each link stays inside when it is
    made (``c`` does not exist yet when ``b`` is checked), but together ``a`` ends ``levels``
    directories above the extraction directory. ``a/escaped`` is written through the chain."""
    return [
        _sym("a", "b"),
        _sym("b", "/".join(["c"] * levels + [".."] * levels)),
        _sym("c", "."),
        _f("a/escaped", b"planted"),
    ]


def test_member_written_through_a_symlink_chain_is_refused(tmp_path: Path) -> None:
    """Extraction happens in ``dest/.extract-*``: four levels up from there is ``tmp_path``."""
    dest = tmp_path / "l1" / "l2" / "dest"
    archive = _tar(tmp_path / "in" / "desktop.tar.gz", _chain_write(4))
    before = _listing(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(archive, dest, label="desktop/linux/x/desktop.tar.gz")
    assert str(err.value) == (
        "desktop/linux/x/desktop.tar.gz: member 'a/escaped' goes through 'a', which is a symlink"
    )
    assert _listing(tmp_path) == {**before, "l1": "-", "l1/l2": "-", "l1/l2/dest": "-"}


def test_symlink_chain_to_outside_is_refused(tmp_path: Path) -> None:
    """``a -> b -> ../../outside``: ``b`` leaves at once; the same chain with every link inside
    at first is refused once the member that makes it leave exists (checked at the end)."""
    dest = tmp_path / "dest"
    archive = _tar(tmp_path / "one.tar.gz", [_sym("a", "b"), _sym("b", "../../outside")])
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(archive, dest, label="t")
    assert str(err.value) == "t: link 'b' -> '../../outside' points outside the destination"
    assert list(dest.iterdir()) == []
    archive = _tar(tmp_path / "two.tar.gz", _chain_write(2)[:3])
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(archive, dest, label="t")
    assert str(err.value) == "t: link 'a' -> 'b' points outside the destination"
    assert list(dest.iterdir()) == []


def test_fetch_refuses_a_member_written_through_a_symlink_chain(
    web: Web, base: Repo, tmp_path: Path
) -> None:
    """The same through ``fetch``: extracted in ``<staging>/bin/desktop/linux/<channel>/
    .extract-*``, six levels below ``tmp_path``; nothing is written anywhere."""
    repo = base.copy(tmp_path / "repo")
    archive = _tar(tmp_path / "src" / "desktop.tar.gz", _chain_write(6))
    repo.add(archive, "desktop", "linux", "1.0.0", "stable")
    work = tmp_path / "work"
    work.mkdir()
    (work / "root.json").write_bytes(repo.root_bytes)
    before = _listing(tmp_path)
    with web.serve(repo.published) as server:
        out = cli(
            "fetch", "--type", "deb", "--fleet-desktop", "--update-url", server.url,
            "--update-roots", work / "root.json", "--no-cache", "--outdir", work / "out",
            check=False,
        )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        "orbit-packager: error: desktop/linux/stable/desktop.tar.gz: member 'a/escaped' goes "
        "through 'a', which is a symlink\n"
    )
    assert _listing(tmp_path) == before


def _first_then_dots(path: Path, dots: int) -> Path:
    """A .tar.gz of one file ``first`` then ``dots`` '.' directory entries (raw header blocks:
    tarfile would take seconds to add 20,000 members)."""
    info = tarfile.TarInfo("first")
    info.size, info.mode = 1, 0o644
    first = info.tobuf(tarfile.USTAR_FORMAT) + b"x".ljust(tarfile.BLOCKSIZE, b"\0")
    dot = tarfile.TarInfo(".")
    dot.type, dot.mode = tarfile.DIRTYPE, 0o755
    body = first + dot.tobuf(tarfile.USTAR_FORMAT) * dots + b"\0" * 2 * tarfile.BLOCKSIZE
    path.write_bytes(gzip.compress(body))
    return path


def test_member_count_bound_is_exact(tmp_path: Path) -> None:
    """20,000 members (the documented bound) extract; one more is refused, leaving nothing.
    '.' entries count as members but write nothing, so the archives stay small."""
    dest = tmp_path / "dest"
    ok = _first_then_dots(tmp_path / "ok.tar.gz", 19_999)
    assert extract_tar_gz(ok, dest, label="t") == ["first"]
    assert (dest / "first").read_bytes() == b"x"
    dest2 = tmp_path / "dest2"
    over = _first_then_dots(tmp_path / "over.tar.gz", 20_000)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar_gz(over, dest2, label="t")
    assert str(err.value) == "t: more than 20000 members"
    assert list(dest2.iterdir()) == []


# -- 8. expiry boundaries, with an injected clock ---------------------------------------------

WARN = timedelta(hours=72)
SECOND = timedelta(seconds=1)


def _boundaries(expires: datetime) -> list[tuple[datetime, str]]:
    """(now, state of a role expiring at ``expires`` with --warn 72h), one second apart."""
    return [
        (expires - WARN - SECOND, "ok"),
        (expires - WARN, "expiring"),
        (expires - WARN + SECOND, "expiring"),
        (expires - SECOND, "expiring"),
        (expires, "expired"),
        (expires + SECOND, "expired"),
    ]


def test_status_warn_and_expiry_boundaries(base: Repo) -> None:
    expires = _parse_z(base.signed("timestamp")["expires"])
    assert _parse_z(base.signed("snapshot")["expires"]) > expires + WARN  # only timestamp moves
    for now, state in _boundaries(expires):
        report = repository_status(base.lib(), WARN, now)
        roles = {r.role: r for r in report.roles}
        assert roles["timestamp"].state == state, (now, state)
        assert roles["timestamp"].expires_in_seconds == int((expires - now).total_seconds())
        assert {r.state for role, r in roles.items() if role != "timestamp"} == {"ok"}
        assert report.ok is (state == "ok"), (now, report.problems)
        assert len(report.problems) == (state != "ok")


def test_verify_warn_and_expiry_boundaries(web: Web, base: Repo) -> None:
    expires = _parse_z(base.signed("timestamp")["expires"])
    with web.serve(base.published) as server, _client(server.url, base.root_bytes) as client:
        for now, state in _boundaries(expires):
            report = verify_repository(
                client, patterns=["none/*"], warn=WARN, now=now, download_dir=None
            )
            states = {r["role"]: r["state"] for r in report.roles}
            assert states == {"root": "ok", "targets": "ok", "snapshot": "ok", "timestamp": state}
            shown = f"timestamp.json {state} ({expires:%Y-%m-%d %H:%M} UTC)"
            assert report.problems == ([] if state == "ok" else [shown]), now


def test_expired_root_boundary_of_the_repository_commands(base: Repo, tmp_path: Path) -> None:
    repo = base.copy(tmp_path / "repo")
    expires = _parse_z(repo.signed("root")["expires"])
    for now in (expires, expires + SECOND):
        with pytest.raises(RepositoryStateError) as err:
            repo.lib(now=lambda now=now: now).timestamp()
        assert err.value.message == (
            f"root.json expired at {expires:%Y-%m-%dT%H:%M:%SZ}; clients reject this repository"
        )
    version = repo.signed("timestamp")["version"]
    repo.lib(now=lambda: expires - SECOND).timestamp()
    assert repo.signed("timestamp")["version"] == version + 1
    assert repo.signed("timestamp")["expires"] == (
        (expires - SECOND + timedelta(hours=336)).strftime(Z_FORMAT)
    )
