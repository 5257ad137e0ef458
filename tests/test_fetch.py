"""Issue 3, acceptance 1-3: fetching through TUF from a real HTTP server on 127.0.0.1.

Every attack or fault is refused with a message naming it, and nothing is written to the
destination. Repositories are made with our own `updates` library and altered on disk the way an
attacker, a broken mirror or a misconfigured signer would alter them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.http import HttpOptions
from packager.repo.keys import RoleKey, decrypt_keys
from packager.repo.metadata import serialize
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import Expirations, UpdateRepository, utcnow
from tests.helpers import GOTUF_PASSPHRASES, TEST_PASSPHRASES, FaultServer, copy_gotuf_fixture

ORBIT = b"\x7fELF orbit 1.0.0 " * 64
OSQUERYD = b"\x7fELF osqueryd 5.0.0 " * 64


def _lib(repo: Path, *, signed_at: datetime | None = None, **exp: timedelta) -> UpdateRepository:
    """The repository library; ``signed_at``: the clock it signs with (expiries count from it)."""
    return UpdateRepository(
        repo,
        PassphraseSource(environ=TEST_PASSPHRASES),
        Expirations(**exp) if exp else None,
        now=(lambda: signed_at) if signed_at else utcnow,
    )


def _days_ago(days: int) -> datetime:
    return utcnow() - timedelta(days=days)


def _key(repo: Path, role: str, index: int = -1) -> RoleKey:
    blob = (repo / "keys" / f"{role}.json").read_bytes()
    return decrypt_keys(blob, TEST_PASSPHRASES[f"FLEET_{role.upper()}_PASSPHRASE"])[index]


def resign(repo: Path, role: str, mutate: Callable[[Any], None], keys: list[RoleKey]) -> None:
    """Alter a role file and sign it with exactly ``keys`` (under root's key IDs when listed)."""
    path = repo / "repository" / f"{role}.json"
    md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
    mutate(md.signed)
    root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    by_public = {k["keyval"]["public"]: kid for kid, k in root["keys"].items()}
    md.signatures.clear()
    for key in keys:
        md.sign(key.signer(by_public.get(key.public_hex)), append=True)
    path.write_bytes(serialize(md))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    lib = _lib(path)
    lib.init()
    for name, data in (("orbit", ORBIT), ("osqueryd", OSQUERYD)):
        src = tmp_path / name
        src.write_bytes(data)
        lib.add(src, name=name, platform="linux", version="1.0.0", tags=["stable"])
    return path


def _client(
    server: FaultServer, repo: Path, cache: Path | None = None, **http: Any
) -> UpdateClient:
    root = (repo / "repository/1.root.json").read_bytes()
    opts = HttpOptions(read_timeout=1.5, retries=2, backoff=0.05, **http)
    return UpdateClient(server.url, root, cache_dir=cache, http=opts)


def _refused(
    server: FaultServer, repo: Path, tmp_path: Path, *needles: str, cache: Path | None = None
) -> str:
    dest = tmp_path / "out" / "orbit"
    with _client(server, repo, cache) as client, pytest.raises(FetchError) as err:
        client.fetch("orbit/linux/stable/orbit", dest)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message
    assert not dest.exists()
    return message


def test_fetch_ok_and_version(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    with _client(server, repo) as client:
        info = client.fetch("orbit/linux/stable/orbit", tmp_path / "orbit")
    assert (tmp_path / "orbit").read_bytes() == ORBIT
    assert info.unrecognized_fields["custom"]["version"] == "1.0.0"
    from packager import __version__

    assert server.user_agents == {f"orbit-packager/{__version__}"}


def test_embedded_fleet_root() -> None:
    """Fleet's public root (go-tuf signed, v6) is the default trust anchor for Fleet's server."""
    from tuf.api.metadata import Root

    from packager.fetch.client import FLEET_UPDATE_URL, load_trusted_root
    from packager.repo.metadata import parse

    raw = load_trusted_root(FLEET_UPDATE_URL, None)
    loaded = parse(raw, "root", "embedded root")
    root: Root = loaded.md.signed
    assert root.version == 6 and len(root.keys) == 14
    root.verify_delegate("root", loaded.signed_canonical, loaded.md.signatures)


def test_tampered_target_same_length(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    f = repo / "repository/targets/orbit/linux/stable/orbit"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.unlink()  # channel copies are hard links: alter only this one
    f.write_bytes(bytes(data))
    _refused(server, repo, tmp_path, "target orbit/linux/stable/orbit", "does not match")


def test_endless_target(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/targets/orbit/linux/stable/orbit"] = "endless"
    _refused(server, repo, tmp_path, "longer than its metadata allows")
    assert server.bytes_served["/targets/orbit/linux/stable/orbit"] < 10 * 1024 * 1024


def test_rolled_back_timestamp(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = (repo / "repository/timestamp.json").read_bytes()
    _lib(repo).timestamp()
    with _client(server, repo, cache) as client:
        client.refresh()
    (repo / "repository/timestamp.json").write_bytes(old)
    _refused(server, repo, tmp_path, "rollback refused", "timestamp", cache=cache)


def test_rolled_back_snapshot(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old_snapshot = Metadata.from_bytes((repo / "repository/snapshot.json").read_bytes())
    old_raw = (repo / "repository/snapshot.json").read_bytes()
    (tmp_path / "new").write_bytes(b"new")
    _lib(repo).add(tmp_path / "new", name="orbit", platform="linux", version="1.1.0")
    with _client(server, repo, cache) as client:
        client.refresh()
    # A signed timestamp (new version) that points at the old snapshot: a rollback attack by
    # someone holding the timestamp key only.
    (repo / "repository/snapshot.json").write_bytes(old_raw)

    def point_at_old(ts: Any) -> None:
        import hashlib

        ts.version += 1
        ts.snapshot_meta.version = old_snapshot.signed.version
        ts.snapshot_meta.length = len(old_raw)
        ts.snapshot_meta.hashes = {"sha512": hashlib.sha512(old_raw).hexdigest()}

    resign(repo, "timestamp", point_at_old, [_key(repo, "timestamp")])
    _refused(server, repo, tmp_path, "rollback refused", "snapshot", cache=cache)


def test_expired_timestamp(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    # Signed 15 days ago with the default 14 days: expired a day ago, whatever the machine load.
    _lib(repo, signed_at=_days_ago(15)).timestamp()
    msg = _refused(
        server,
        repo,
        tmp_path,
        "timestamp.json",
        "has expired since 20",
        "`orbit-packager updates timestamp`",
    )
    assert "Z" in msg


def test_expired_targets(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    # Signed a day ago: targets (1 s) expired then, snapshot and timestamp are still valid.
    _lib(repo, signed_at=_days_ago(1), targets=timedelta(seconds=1)).add(
        tmp_path / "x", name="x", platform="linux", version="1"
    )
    _refused(server, repo, tmp_path, "targets.json", "has expired", "updates add/remove")


def test_root_v2_signed_only_by_new_key(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    _lib(repo).rotate("root")
    new_key = _key(repo, "root", -1)
    for name in ("root.json", "2.root.json"):
        md: Metadata[Any] = Metadata.from_bytes((repo / "repository" / name).read_bytes())
        root = md.signed
        kid = next(k for k, v in root.keys.items() if v.keyval["public"] == new_key.public_hex)
        md.signatures.clear()
        md.sign(new_key.signer(kid))
        (repo / "repository" / name).write_bytes(serialize(md))
    _refused(server, repo, tmp_path, "bad signature", "root")


def test_signed_by_revoked_key(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    _lib(repo).rotate("timestamp")
    _lib(repo).timestamp()  # now signed by the new key only
    revoked = _key(repo, "timestamp", 0)

    def bump(ts: Any) -> None:
        ts.version += 1

    resign(repo, "timestamp", bump, [revoked])
    _refused(server, repo, tmp_path, "bad signature", "timestamp")


def test_mix_and_match_snapshot(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    other = (repo / "repository/snapshot.json").read_bytes()
    (tmp_path / "n").write_bytes(b"n")
    _lib(repo).add(tmp_path / "n", name="orbit", platform="linux", version="1.2.0")
    (repo / "repository/snapshot.json").write_bytes(other)  # timestamp names a newer one
    _refused(server, repo, tmp_path, "snapshot.json", "does not match its TUF metadata")


def test_target_404(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/targets/orbit/linux/stable/orbit"] = 404
    _refused(server, repo, tmp_path, "HTTP 404", "orbit/linux/stable/orbit")


def test_metadata_403_hint(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/timestamp.json"] = 403
    _refused(server, repo, tmp_path, "HTTP 403", "must answer 404")


def test_stalled_server(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/timestamp.json"] = "stall"
    # The server stays silent for 5 s after the headers, then closes; only the client's own
    # read timeout (1.5 s) gives this message (after the close it would be a JSON error).
    _refused(
        server,
        repo,
        tmp_path,
        f"{server.url} is too slow or stalled: no data from {server.url}/timestamp.json for 1.5s",
    )


def test_500_then_success(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/timestamp.json"] = "500-once"
    with _client(server, repo) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "orbit")
    assert server.requests["/timestamp.json"] == 2
    assert (tmp_path / "orbit").read_bytes() == ORBIT


def test_connection_refused(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    server.close()  # nothing listens on that port any more
    _refused(server, repo, tmp_path, "connection refused")


def test_expires_with_zone_offset(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    """fleetctl outside UTC writes -03:00: accepted as go-tuf (Orbit) accepts it (issue 12)."""
    path = repo / "repository/timestamp.json"
    doc = json.loads(path.read_bytes())
    when = datetime.strptime(doc["signed"]["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )
    doc["signed"]["expires"] = when.astimezone(timezone(timedelta(hours=-3))).isoformat()
    doc["signed"]["version"] += 1
    from packager.repo.metadata import canonical

    key = _key(repo, "timestamp")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sig = Ed25519PrivateKey.from_private_bytes(key.seed).sign(canonical(doc["signed"]))
    doc["signatures"] = [{"keyid": doc["signatures"][0]["keyid"], "sig": sig.hex()}]
    path.write_text(json.dumps(doc))
    with _client(server, repo) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "o")
        assert {r.role: r.expires for r in client.roles()}["timestamp"] == when
    assert (tmp_path / "o").read_bytes() == ORBIT


def test_missing_channel_lists_existing(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    with _client(server, repo) as client, pytest.raises(FetchError) as err:
        client.fetch("orbit/linux/edge/orbit", tmp_path / "o")
    assert "orbit/linux/edge/orbit is not in the repository" in str(err.value)
    assert "channels for orbit/linux: 1.0.0, stable" in str(err.value)
    with _client(server, repo) as client, pytest.raises(FetchError) as err:
        client.fetch("orbit/windows/stable/orbit.exe", tmp_path / "o")
    assert "no orbit target for windows" in str(err.value)


def test_cache_second_fetch_downloads_no_target_bytes(
    server: FaultServer, repo: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with _client(server, repo, cache) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "a/orbit")
        client.fetch("osqueryd/linux/stable/osqueryd", tmp_path / "a/osqueryd")
    first = server.target_bytes()
    assert first == len(ORBIT) + len(OSQUERYD)
    with _client(server, repo, cache) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "b/orbit")
        client.fetch("osqueryd/linux/stable/osqueryd", tmp_path / "b/osqueryd")
    assert server.target_bytes() == first  # zero target bytes the second time
    assert (tmp_path / "b/orbit").read_bytes() == ORBIT

    # A corrupted cache entry is detected and replaced, never used.
    entry = next((cache / "targets").iterdir())
    entry.write_bytes(b"corrupt")
    with _client(server, repo, cache) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "c/orbit")
        client.fetch("osqueryd/linux/stable/osqueryd", tmp_path / "c/osqueryd")
    assert (tmp_path / "c/orbit").read_bytes() == ORBIT
    assert (tmp_path / "c/osqueryd").read_bytes() == OSQUERYD


def test_offline(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    root = (repo / "repository/1.root.json").read_bytes()
    cold = tmp_path / "cold"
    with (
        pytest.raises(FetchError, match=r"--offline: timestamp\.json is not in the cache"),
        UpdateClient("http://127.0.0.1:9", root, cache_dir=cold, offline=True) as client,
    ):
        client.fetch("orbit/linux/stable/orbit", tmp_path / "x")
    cache = tmp_path / "cache"
    with _client(server, repo, cache) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "warm")
    server.close()  # offline must not need the server
    with UpdateClient(server.url, root, cache_dir=cache, offline=True) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "offline/orbit")
        with pytest.raises(FetchError, match="--offline: target osqueryd/linux/stable/osqueryd"):
            client.fetch("osqueryd/linux/stable/osqueryd", tmp_path / "offline/osqueryd")
    assert (tmp_path / "offline/orbit").read_bytes() == ORBIT


def test_offline_still_checks_expiry(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with _client(server, repo, cache) as client:
        client.fetch("orbit/linux/stable/orbit", tmp_path / "warm")
    # Fifteen days later the timestamp in the cache has expired (it lives 14 days). Instead of
    # waiting, the cache (metadata/<key>/, see packager.fetch.client) is given a timestamp the
    # repository signed 15 days ago: validly signed, a newer version, expired a day ago.
    _lib(repo, signed_at=_days_ago(15)).timestamp()
    (cached,) = (cache / "metadata").iterdir()
    (cached / "timestamp.json").write_bytes((repo / "repository/timestamp.json").read_bytes())
    root = (repo / "repository/1.root.json").read_bytes()
    with (
        pytest.raises(FetchError, match=r"timestamp\.json .* has expired"),
        UpdateClient(server.url, root, cache_dir=cache, offline=True) as client,
    ):
        client.fetch("orbit/linux/stable/orbit", tmp_path / "offline")


def test_gotuf_fixture_served(tmp_path: Path) -> None:
    from tests.helpers import cli

    fx = copy_gotuf_fixture(tmp_path / "fx")
    cli(
        "updates",
        "timestamp",
        "--path",
        fx,
        env={"FLEET_TIMESTAMP_PASSPHRASE": GOTUF_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"]},
    )
    srv = FaultServer(fx / "repository")
    try:
        with UpdateClient(srv.url, (fx / "root-v1.json").read_bytes(), cache_dir=None) as client:
            info = client.fetch("orbit/linux/edge/orbit", tmp_path / "orbit")
            assert info.unrecognized_fields["custom"] == {"version": "1.3.0"}
            assert client.channels("osqueryd", "linux") == ["5", "5.10", "5.10.2", "stable"]
        # The bytes go-tuf published, checked here against its targets.json independently,
        # written as a private file nothing can execute (mode 0600).
        served = (fx / "repository/targets/orbit/linux/edge/orbit").read_bytes()
        listed = json.loads((fx / "repository/targets.json").read_bytes())["signed"]["targets"]
        assert (tmp_path / "orbit").read_bytes() == served
        assert (
            hashlib.sha512(served).hexdigest()
            == listed["orbit/linux/edge/orbit"]["hashes"]["sha512"]
        )
        assert (tmp_path / "orbit").stat().st_mode & 0o777 == 0o600
    finally:
        srv.close()


def test_expired_root(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    # Signed a day ago: the new root (1 s) expired then, the other roles are still valid.
    _lib(repo, signed_at=_days_ago(1), root=timedelta(seconds=1)).rotate("root")
    _refused(server, repo, tmp_path, "root.json", "has expired since 20", "updates rotate root")


def test_persistent_server_error(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    server.faults["/timestamp.json"] = 503
    _refused(server, repo, tmp_path, "HTTP 503")
    assert server.requests["/timestamp.json"] == 3  # first try + 2 bounded retries
