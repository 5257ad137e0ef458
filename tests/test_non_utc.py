"""Issue 12: repositories written outside UTC work, as they do for Orbit.

fleetctl (go-tuf) writes ``expires`` in the signing machine's time zone, root included. Here go-tuf
v0.5.2 itself (tests/gotuf, ``TZ=America/Sao_Paulo``) re-signs every role of a repository made by
our `updates` commands (the demo repository) and of the fleetctl-made fixture; `verify`, `fetch`
and `package --type deb` accept them, with one warning line from `verify`. Tampered and expired
non-UTC files are refused — and go-tuf's client, the reference, agrees on every case."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization import DeserializationError

from packager.fetch.gotuf import load_metadata, non_utc_roles, parse_expires
from packager.repo.keys import RoleKey, decrypt_keys
from packager.repo.metadata import canonical
from scripts.make_demo_repo import DEMO_PASSPHRASES
from tests.gotuf.harness import gotuf_binary, resign, run_client
from tests.helpers import (
    GOTUF_PASSPHRASES,
    FaultServer,
    build_installer,
    cli,
    copy_gotuf_fixture,
    demo_repo,
)

ROLES = ("root", "targets", "snapshot", "timestamp")
SDE = "1700000000"
SAO_PAULO_OFFSET = timedelta(hours=-3)


@pytest.fixture(scope="session")
def gotuf() -> Path:
    return gotuf_binary()


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def _metadata_files(repo: Path) -> list[Path]:
    """The top-level files a client reads, and the newest N.root.json."""
    md = repo / "repository"
    root_version = _doc(md / "root.json")["signed"]["version"]
    return [md / f"{r}.json" for r in ROLES] + [md / f"{root_version}.root.json"]


@pytest.fixture(scope="module")
def sao_paulo(
    gotuf: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, dict[str, str]]]:
    """Two repositories whose every metadata file go-tuf signed in America/Sao_Paulo (-03:00):
    the demo repository (made by our `updates` commands) and the fleetctl-made fixture."""
    base = tmp_path_factory.mktemp("sao-paulo")
    repos = {
        "ours": (demo_repo(base / "ours"), DEMO_PASSPHRASES),
        "fleetctl": (copy_gotuf_fixture(base / "fleetctl"), GOTUF_PASSPHRASES),
    }
    for repo, passphrases in repos.values():
        before = _doc(repo / "repository/root.json")["signed"]["version"]
        resign(gotuf, repo, passphrases)
        assert _doc(repo / "repository/root.json")["signed"]["version"] == before + 1
        for path in _metadata_files(repo):
            assert _doc(path)["signed"]["expires"].endswith("-03:00"), path
    return repos


@pytest.fixture(scope="module")
def servers(sao_paulo: dict[str, tuple[Path, dict[str, str]]]) -> Iterator[dict[str, FaultServer]]:
    out = {name: FaultServer(repo / "repository") for name, (repo, _) in sao_paulo.items()}
    yield out
    for server in out.values():
        server.close()


def _root_v1(repo: Path) -> Path:
    return repo / "repository/1.root.json"


def _verify(url: str, roots: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("verify", "--update-url", url, "--update-roots", roots, *extra, check=False)


def test_python_tuf_alone_rejects_these_files(
    sao_paulo: dict[str, tuple[Path, dict[str, str]]],
) -> None:
    """The problem is real: python-tuf's Metadata API refuses every file go-tuf wrote."""
    for repo, _ in sao_paulo.values():
        for path in _metadata_files(repo):
            with pytest.raises(DeserializationError):
                Metadata.from_bytes(path.read_bytes())


@pytest.mark.parametrize("name", ["ours", "fleetctl"])
@pytest.mark.parametrize("trust", ["root-v1", "newest-root"])
def test_verify_accepts_sao_paulo(
    gotuf: Path,
    sao_paulo: dict[str, tuple[Path, dict[str, str]]],
    servers: dict[str, FaultServer],
    tmp_path: Path,
    name: str,
    trust: str,
) -> None:
    repo, _ = sao_paulo[name]
    # root v1 (UTC) walks the chain to the -03:00 root; or the -03:00 root itself is trusted.
    roots = _root_v1(repo) if trust == "root-v1" else repo / "repository/root.json"
    url = servers[name].url
    run_client(gotuf, url, roots.read_bytes())  # the reference: go-tuf accepts it

    out = _verify(url, roots)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = _doc(repo / "repository/targets.json")["signed"]["targets"]
    assert f"targets verified: {len(listed)}/{len(listed)}" in out.stdout
    warnings = [line for line in out.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, out.stdout
    for role in ROLES:
        assert f"{role}.json (" in warnings[0]
    assert "-03:00" in warnings[0] and "outside UTC" in warnings[0]

    report = json.loads(_verify(url, roots, "--json").stdout)
    assert report["ok"] is True and len(report["warnings"]) == 1
    for entry in report["roles"]:
        written = _doc(repo / f"repository/{entry['role']}.json")["signed"]["expires"]
        # shown in UTC, the same instant
        instant = datetime.fromisoformat(written).astimezone(timezone.utc)
        assert entry["expires"] == instant.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert entry["state"] == "ok"


@pytest.mark.parametrize("name", ["ours", "fleetctl"])
def test_fetch_accepts_sao_paulo(
    sao_paulo: dict[str, tuple[Path, dict[str, str]]],
    servers: dict[str, FaultServer],
    tmp_path: Path,
    name: str,
) -> None:
    repo, _ = sao_paulo[name]
    cache = tmp_path / "cache"
    args: list[str | Path] = ["fetch", "--type", "deb", "--update-url", servers[name].url,
            "--update-roots", _root_v1(repo), "--cache-dir", cache]  # fmt: skip
    cli(*args, "--outdir", tmp_path / "online")
    # --offline re-reads the cached -03:00 metadata through the same checks
    cli(*args, "--offline", "--outdir", tmp_path / "offline")
    for out in (tmp_path / "online", tmp_path / "offline"):
        fetched = {p.relative_to(out / "bin"): p for p in (out / "bin").rglob("*") if p.is_file()}
        assert {str(p.parts[0]) for p in fetched} == {"orbit", "osqueryd"}
        for rel, path in fetched.items():
            served = repo / "repository/targets" / rel
            assert path.read_bytes() == served.read_bytes(), rel


def test_package_deb_from_sao_paulo(
    sao_paulo: dict[str, tuple[Path, dict[str, str]]],
    servers: dict[str, FaultServer],
    tmp_path: Path,
) -> None:
    repo, _ = sao_paulo["ours"]
    deb = build_installer(
        (repo, servers["ours"]), "deb", tmp_path / "x.deb", secret="s3cret", sde=SDE
    )
    contents = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    assert "./opt/orbit/bin/orbit/linux/stable/orbit" in contents
    assert "./opt/orbit/bin/osqueryd/linux/stable/osqueryd" in contents


# -- tampered and expired files are refused, by go-tuf and by us ---------------------------------


@pytest.fixture
def copy(
    sao_paulo: dict[str, tuple[Path, dict[str, str]]], tmp_path: Path
) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        src, _ = sao_paulo[name]
        dest = tmp_path / name
        shutil.copytree(src, dest)
        return dest

    return make


def _refused_by_both(
    gotuf: Path, repo: Path, roots: Path, expect: str
) -> subprocess.CompletedProcess[str]:
    server = FaultServer(repo / "repository")
    try:
        reference = run_client(gotuf, server.url, roots.read_bytes(), check=False)
        out = _verify(server.url, roots)
    finally:
        server.close()
    assert reference.returncode == 1, "go-tuf accepted it"
    assert out.returncode == 4, out.stdout + out.stderr
    assert expect in out.stderr, out.stderr
    assert "targets verified" not in out.stdout
    return out


def _edit_raw(path: Path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(old) == 1, (path, old)
    path.write_bytes(raw.replace(old, new))


def _other_offset(expires: str) -> str:
    return expires.removesuffix("-03:00") + "-02:00"  # one hour earlier


def _same_instant_utc(expires: str) -> str:
    return parse_expires(expires).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("how", ["expires-offset", "expires-as-utc", "version", "snapshot-hash"])
def test_tampered_timestamp_refused(gotuf: Path, copy: Callable[[str], Path], how: str) -> None:
    repo = copy("ours")
    path = repo / "repository/timestamp.json"
    signed = _doc(path)["signed"]
    expires = signed["expires"]
    if how == "expires-offset":  # the instant moves by one hour
        _edit_raw(path, f'"{expires}"'.encode(), f'"{_other_offset(expires)}"'.encode())
    elif how == "expires-as-utc":  # the same instant, rewritten: not what was signed either
        _edit_raw(path, f'"{expires}"'.encode(), f'"{_same_instant_utc(expires)}"'.encode())
    elif how == "version":
        v = signed["version"]  # go-tuf writes its struct's order: version, then expires
        _edit_raw(
            path, f'"version":{v},"expires"'.encode(), f'"version":{v + 1},"expires"'.encode()
        )
    else:
        digest = signed["meta"]["snapshot.json"]["hashes"]["sha512"]
        flipped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
        _edit_raw(path, digest.encode(), flipped.encode())
    _refused_by_both(gotuf, repo, _root_v1(repo), "bad signature")


@pytest.mark.parametrize("how", ["expires-offset", "key-byte"])
def test_tampered_root_refused(gotuf: Path, copy: Callable[[str], Path], how: str) -> None:
    """The -03:00 root v2, fetched by a client trusting root v1, with one signed field changed."""
    repo = copy("ours")
    md = repo / "repository"
    signed = _doc(md / "root.json")["signed"]
    assert signed["version"] == 2
    if how == "expires-offset":
        old, new = signed["expires"], _other_offset(signed["expires"])
    else:
        old = next(iter(signed["keys"].values()))["keyval"]["public"]
        new = old[:-1] + ("0" if old[-1] != "0" else "1")
    for path in (md / "root.json", md / "2.root.json"):
        _edit_raw(path, old.encode(), new.encode())
    _refused_by_both(gotuf, repo, _root_v1(repo), "bad signature")


def sign_in_place(repo: Path, role: str, passphrases: dict[str, str], **fields: object) -> None:
    """Set ``fields`` in ``role``'s signed part and sign it again with the role's keys, over the
    canonical JSON of the signed object as written (what go-tuf does): only ``fields`` differ.
    Only for root and timestamp, which no other role lists by hash."""
    assert role in ("root", "timestamp")
    md = repo / "repository"
    paths = [md / f"{role}.json"]
    if role == "root":
        paths.append(md / f"{_doc(paths[0])['signed']['version']}.root.json")
    doc = _doc(paths[0])
    doc["signed"].update(fields)
    keyids = {s["keyid"] for s in doc["signatures"]}
    keys: list[RoleKey] = decrypt_keys(
        (repo / "keys" / f"{role}.json").read_bytes(),
        passphrases[f"FLEET_{role.upper()}_PASSPHRASE"],
    )
    payload = canonical(doc["signed"])
    doc["signatures"] = [
        {"keyid": key.gotuf_keyid, "sig": key.signer().sign(payload).signature}
        for key in keys
        if key.gotuf_keyid in keyids
    ]
    assert doc["signatures"]
    raw = json.dumps(doc, separators=(",", ":")).encode()
    for path in paths:
        path.write_bytes(raw)


def _zoned(delta: timedelta, offset: timedelta) -> str:
    moment = datetime.now(timezone.utc).replace(microsecond=0) + delta
    return moment.astimezone(timezone(offset)).isoformat()


@pytest.mark.parametrize(
    ("delta", "offset", "accepted"),
    [
        # 1 h ahead as an instant; its wall clock read as UTC would be 2 h ago
        (timedelta(hours=1), timedelta(hours=-3), True),
        (timedelta(hours=-1), timedelta(hours=-3), False),
        # 1 h ago as an instant; its wall clock read as UTC would be 4.5 h ahead
        (timedelta(hours=-1), timedelta(hours=5, minutes=30), False),
    ],
    ids=["ahead-03:00", "1h-ago-03:00", "1h-ago+05:30"],
)
def test_timestamp_expiry_is_an_instant(
    gotuf: Path, copy: Callable[[str], Path], delta: timedelta, offset: timedelta, accepted: bool
) -> None:
    repo = copy("ours")
    sign_in_place(repo, "timestamp", DEMO_PASSPHRASES, expires=_zoned(delta, offset))
    if not accepted:
        out = _refused_by_both(gotuf, repo, _root_v1(repo), "timestamp.json from")
        assert "has expired" in out.stderr
        return
    server = FaultServer(repo / "repository")
    try:
        run_client(gotuf, server.url, _root_v1(repo).read_bytes())
        out = _verify(server.url, _root_v1(repo))
    finally:
        server.close()
    assert out.returncode == 1, out.stdout + out.stderr  # valid, but expires within --warn
    assert "timestamp.json expiring" in out.stdout
    assert "targets verified: 42/42" in out.stdout


def test_expired_sao_paulo_root_refused(gotuf: Path, copy: Callable[[str], Path]) -> None:
    repo = copy("ours")
    expires = _zoned(-timedelta(hours=1), SAO_PAULO_OFFSET)
    sign_in_place(repo, "root", DEMO_PASSPHRASES, expires=expires)
    out = _refused_by_both(gotuf, repo, _root_v1(repo), "root.json")
    assert "expired" in out.stderr


# -- our own commands keep writing UTC -----------------------------------------------------------


def test_status_reports_and_timestamp_rewrites_in_utc(
    copy: Callable[[str], Path], tmp_path: Path
) -> None:
    repo = copy("ours")
    status = cli("updates", "status", "--path", repo, "--json", check=False)
    assert status.returncode == 1
    report = json.loads(status.stdout)
    assert {r["role"]: bool(r["non_utc_expires"]) for r in report["roles"]} == dict.fromkeys(
        ROLES, True
    )
    cli("updates", "timestamp", "--path", repo, env=DEMO_PASSPHRASES)
    assert _doc(repo / "repository/timestamp.json")["signed"]["expires"].endswith("Z")
    server = FaultServer(repo / "repository")
    try:
        out = _verify(server.url, _root_v1(repo))
    finally:
        server.close()
    assert out.returncode == 0, out.stdout + out.stderr
    warning = next(line for line in out.stdout.splitlines() if "outside UTC" in line)
    assert "timestamp.json" not in warning and "snapshot.json (" in warning


# -- the parser and the loader -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2029-11-24T03:50:09-03:00", "2029-11-24T06:50:09+00:00"),
        ("2029-11-24T03:50:09+05:30", "2029-11-23T22:20:09+00:00"),
        ("2029-11-24T03:50:09Z", "2029-11-24T03:50:09+00:00"),
        ("2029-11-24T03:50:09+00:00", "2029-11-24T03:50:09+00:00"),
        ("2029-11-24T03:50:09.123456789-03:00", "2029-11-24T06:50:09.123456+00:00"),
        ("2029-11-24T03:50:09,5Z", "2029-11-24T03:50:09.500000+00:00"),
        ("2029-12-31T23:59:59-03:00", "2030-01-01T02:59:59+00:00"),
        ("2029-11-24T03:50:09+23:59", "2029-11-23T03:51:09+00:00"),  # the largest offsets
        ("2029-11-24T03:50:09-00:59", "2029-11-24T04:49:09+00:00"),
    ],
)
def test_parse_expires(text: str, utc: str) -> None:
    assert parse_expires(text).isoformat() == utc


@pytest.mark.parametrize(
    "text",
    [
        "2029-11-24T03:50:09",  # no zone
        "2029-11-24 03:50:09Z",
        "2029-11-24t03:50:09z",
        "2029-11-24",
        "20291124T035009Z",
        "2029-11-24T24:00:00Z",
        "2029-02-30T00:00:00Z",
        "2029-11-24T03:50:60Z",  # Go refuses leap seconds too
        "2029-11-24T03:50:09-24:00",
        "2029-11-24T03:50:09+00:60",
        "2029-11-24T03:50:09-0300",
        "٢٠٢٩-11-24T03:50:09Z",  # non-ASCII digits
        "2029-11-24T03:50:09-03:00 ",
    ],
)
def test_parse_expires_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expires"):
        parse_expires(text)


def _self_signed_root(expires: str, **extra: object) -> bytes:
    key = RoleKey.generate()
    keyid = key.gotuf_keyid
    signed = {
        "_type": "root",
        "spec_version": "1.0",
        "version": 1,
        "expires": expires,
        "consistent_snapshot": False,
        "keys": {keyid: key.public_dict()},
        "roles": {r: {"keyids": [keyid], "threshold": 1} for r in ROLES},
        **extra,
    }
    sig = key.signer().sign(canonical(signed))
    return json.dumps(
        {"signed": signed, "signatures": [{"keyid": keyid, "sig": sig.signature}]}
    ).encode()


def test_loader_verifies_the_published_bytes() -> None:
    raw = _self_signed_root("2029-11-24T03:50:09-03:00")
    root, signed_bytes, signatures = load_metadata(Root, raw)
    root.verify_delegate("root", signed_bytes, signatures)
    assert root.expires == datetime(2029, 11, 24, 6, 50, 9, tzinfo=timezone.utc)
    assert signed_bytes == canonical(json.loads(raw)["signed"])
    # the same with the delegator: threshold and key IDs are python-tuf's
    load_metadata(Root, raw, root)
    other = load_metadata(Root, _self_signed_root("2029-11-24T03:50:09-03:00"))[0]
    with pytest.raises(exceptions.UnsignedMetadataError):
        load_metadata(Root, raw, other)


def test_loader_refuses_what_python_tuf_would_not_read_back() -> None:
    """A signed field python-tuf drops when it re-serialises (``consistent_snapshot: null``): the
    model would differ from the signed content, so the file is refused, as python-tuf refuses
    the same file in UTC (its signature check over the re-serialisation fails)."""
    raw = _self_signed_root("2029-11-24T03:50:09-03:00", consistent_snapshot=None)
    with pytest.raises(exceptions.RepositoryError, match="does not read back"):
        load_metadata(Root, raw)
    utc = Metadata[Root].from_bytes(
        _self_signed_root("2029-11-24T06:50:09Z", consistent_snapshot=None)
    )
    with pytest.raises(exceptions.UnsignedMetadataError):
        utc.signed.verify_delegate("root", utc.signed_bytes, utc.signatures)


def test_non_utc_roles_reads_the_trusted_files(tmp_path: Path) -> None:
    (tmp_path / "root.json").write_bytes(_self_signed_root("2029-11-24T03:50:09-03:00"))
    (tmp_path / "timestamp.json").write_bytes(_self_signed_root("2029-11-24T03:50:09Z"))
    found = non_utc_roles(tmp_path)
    assert [(r.role, r.expires) for r in found] == [("root", "2029-11-24T03:50:09-03:00")]


@pytest.mark.parametrize("expires", ["2030-01-01T00:00:00", "2030-01-01T00:00:00.5"])
def test_repository_metadata_without_a_time_zone_refused(expires: str) -> None:
    """Our own reader of repository files (updates commands): an expiry that is not an instant
    (no offset, no Z) would be read in the local time zone; it is refused as corrupt."""
    from packager.errors import CorruptRepositoryError
    from packager.repo.metadata import parse

    def doc(when: str) -> bytes:
        signed = {"_type": "timestamp", "spec_version": "1.0.0", "version": 1, "expires": when,
                  "meta": {"snapshot.json": {"version": 1}}}  # fmt: skip
        return json.dumps({"signatures": [], "signed": signed}).encode()

    with pytest.raises(CorruptRepositoryError) as info:
        parse(doc(expires), "timestamp", "timestamp.json")
    assert str(info.value) == (
        f"timestamp.json is not valid TUF timestamp metadata: expires {expires!r} has no time zone"
    )
    loaded = parse(doc("2030-01-01T00:00:00-03:00"), "timestamp", "timestamp.json")
    assert loaded.md.signed.expires == datetime(2030, 1, 1, 3, tzinfo=timezone.utc)
