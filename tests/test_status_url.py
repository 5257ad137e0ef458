"""``updates status --url``: the published repository, read over HTTP and verified."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from packager.fetch.published import LIST_BUCKET_HINT, display_url, load_published
from packager.repo import metadata as meta
from packager.repo.keys import decrypt_keys
from packager.repo.metadata import canonical
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import Expirations, UpdateRepository
from packager.repo.status import repository_status, roles_status
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, cli, serve

ORBIT = FIXTURES / "executables/orbit-linux-x86_64"


def _lib(path: Path, **kw: Any) -> UpdateRepository:
    return UpdateRepository(path, PassphraseSource(environ=TEST_PASSPHRASES), **kw)


def _add(path: Path, version: str) -> None:
    _lib(path).add(ORBIT, name="orbit", platform="linux", version=version, tags=["stable"])


def _versions(data: dict[str, Any]) -> dict[str, int]:
    return {r["role"]: r["version"] for r in data["roles"]}


def _status_url(url: str, *args: str | Path) -> tuple[int, str, str]:
    out = cli("updates", "status", "--url", url, *args, check=False)
    return out.returncode, out.stdout, out.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Forbidden(http.server.SimpleHTTPRequestHandler):
    """S3 without s3:ListBucket: a missing key answers 403, not 404."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(403 if code == 404 else code, message, explain)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serve_403(directory: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Forbidden, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- healthy repositories -------------------------------------------------------------------
@pytest.mark.parametrize("consistent", [False, True])
def test_ok_reports_what_the_local_status_reports(
    new_repo: Callable[..., Path], consistent: bool
) -> None:
    repo = new_repo(consistent)
    _add(repo, "1.0.0")
    _add(repo, "1.1.0")
    local = json.loads(cli("updates", "status", "--path", repo, "--json").stdout)
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url, "--json", "--targets")
        text_code, text, _ = _status_url(url + "/")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert (
        _versions(data)
        == _versions(local)
        == {
            "root": 1,
            "targets": 3,
            "snapshot": 3,
            "timestamp": 3,
        }
    )
    assert [r["expires"] for r in data["roles"]] == [r["expires"] for r in local["roles"]]
    assert [r["key_ids"] for r in data["roles"]] == [r["key_ids"] for r in local["roles"]]
    assert data["ok"] is True and data["problems"] == []
    assert data["consistent_snapshot"] is consistent
    assert data["targets"] == local["targets"] == 3
    assert "orbit/linux/1.1.0/orbit" in data["target_paths"]
    assert data["path"] == data["url"] == url
    assert data["trusted_root"] == "published" and data["root_chain"] == [1]
    assert text_code == 0
    assert f"repository: {url} (consistent snapshots: {'on' if consistent else 'off'}" in text
    assert "root trusted as published (pass --update-roots to check the chain)" in text


def test_rotated_root_walked_from_update_roots(
    new_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = new_repo(True)
    root_v1 = tmp_path / "root-v1.json"
    root_v1.write_bytes((repo / "repository/1.root.json").read_bytes())
    lib = _lib(repo)
    lib.rotate("root")
    lib.rotate("timestamp")
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url, "--update-roots", root_v1, "--json")
        _, text, _ = _status_url(url, "--update-roots", root_v1)
        published = load_published(url, trusted_root=root_v1.read_bytes())
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["root_chain"] == [1, 2, 3] and data["trusted_root"] == "update-roots"
    assert _versions(data)["root"] == 3
    local = repository_status(lib, timedelta(hours=72), datetime.now(timezone.utc))
    assert _versions(data) == {r.role: r.version for r in local.roles}
    assert "root chain walked from the --update-roots root v1 to v3" in text
    assert "trusted as published" not in text
    assert published.root.raw == (repo / "repository/root.json").read_bytes()


def test_root_not_signed_by_the_previous_one_does_not_verify(
    new_repo: Callable[..., Path], tmp_path: Path
) -> None:
    """A 2.root.json signed only by its own new keys: a client holding root v1 refuses it."""
    repo = new_repo()
    root_v1 = tmp_path / "root-v1.json"
    root_v1.write_bytes((repo / "repository/1.root.json").read_bytes())
    _lib(repo).rotate("root")
    path = repo / "repository/2.root.json"
    doc = json.loads(path.read_bytes())
    old_keyid = json.loads(root_v1.read_bytes())["signed"]["roles"]["root"]["keyids"][0]
    doc["signatures"] = [s for s in doc["signatures"] if s["keyid"] != old_keyid]
    path.write_text(json.dumps(doc))
    with serve(repo / "repository") as url:
        code, _, stderr = _status_url(url, "--update-roots", root_v1)
        # trusting the published root.json (v2, which is signed by its own keys) says nothing
        # about the chain: that is what --update-roots is for
        plain, _, _ = _status_url(url)
    assert code == 3
    assert f"{url}/2.root.json does not verify (by root v1)" in stderr
    assert plain == 0


# -- expiry ---------------------------------------------------------------------------------
def test_expiring_timestamp_exits_1(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    _lib(repo, expirations=Expirations(timestamp=timedelta(hours=2))).timestamp()
    with serve(repo / "repository") as url:
        code, stdout, _ = _status_url(url)
        json_code, as_json, _ = _status_url(url, "--json")
        calm, _, _ = _status_url(url, "--warn", "1h")
        published = load_published(url)
    assert code == 1 and json_code == 1
    assert "timestamp.json expires in 1h 59m" in stdout or "timestamp.json expires in 2h" in stdout
    data = json.loads(as_json)
    assert {r["role"]: r["state"] for r in data["roles"]}["timestamp"] == "expiring"
    assert data["ok"] is False
    assert calm == 0
    # the same verdicts with the clock given: expired one second after
    expires = published.timestamp.expires
    late = roles_status(published, url, timedelta(hours=1), expires + timedelta(seconds=1))
    assert {r.role: r.state for r in late.roles}["timestamp"] == "expired"
    assert late.problems == ["timestamp.json expired 1s ago"]
    early = roles_status(
        published, url, timedelta(hours=1), expires - timedelta(hours=1, seconds=1)
    )
    assert early.ok


def test_non_utc_expires_is_read_and_flagged(new_repo: Callable[..., Path]) -> None:
    """fleetctl on a machine not set to UTC writes ``...-03:00``: verified, reported, exit 1."""
    repo = new_repo()
    path = repo / "repository/timestamp.json"
    doc = json.loads(path.read_bytes())
    when = datetime.strptime(doc["signed"]["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )
    doc["signed"]["expires"] = when.astimezone(timezone(timedelta(hours=-3))).isoformat()
    (key,) = decrypt_keys(
        (repo / "keys/timestamp.json").read_bytes(), TEST_PASSPHRASES["FLEET_TIMESTAMP_PASSPHRASE"]
    )
    signer = key.signer(doc["signatures"][0]["keyid"])
    doc["signatures"] = [
        {
            "keyid": doc["signatures"][0]["keyid"],
            "sig": signer.sign(canonical(doc["signed"])).signature,
        }
    ]
    path.write_text(json.dumps(doc))
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url, "--json")
    assert code == 1, stderr
    data = json.loads(stdout)
    (problem,) = data["problems"]
    assert "timestamp.json has a non-UTC expires (" in problem and "-03:00" in problem
    assert {r["role"]: r["expires"] for r in data["roles"]}["timestamp"] == meta.utc_z(when)
    assert {r["role"]: r["non_utc_expires"] for r in data["roles"]}["timestamp"].endswith("-03:00")


# -- inconsistent or tampered ---------------------------------------------------------------
def test_tampered_snapshot_exits_3(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    _add(repo, "1.0.0")
    path = repo / "repository/snapshot.json"
    raw = path.read_bytes()
    expires = json.loads(raw)["signed"]["expires"].encode()
    later = str(int(expires[:4]) + 1).encode() + expires[4:]  # a year more: one byte changed
    tampered = raw.replace(b'"expires":"' + expires, b'"expires":"' + later)
    assert tampered != raw and json.loads(tampered)["signed"]["expires"] == later.decode()
    path.write_bytes(tampered)
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url)
    assert code == 3, stdout + stderr
    assert f"{url}/snapshot.json does not verify" in stderr
    assert stderr.count("\n") == 1


def test_timestamp_naming_another_snapshot_exits_1(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    old_timestamp = (repo / "repository/timestamp.json").read_bytes()  # names snapshot v1
    _add(repo, "1.0.0")  # snapshot v2
    (repo / "repository/timestamp.json").write_bytes(old_timestamp)
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url)
        json_code, as_json, _ = _status_url(url, "--json")
    assert code == json_code == 1, stderr
    assert "warning: timestamp.json v1 names snapshot v1 but snapshot.json is v2" in stdout
    assert json.loads(as_json)["problems"] == [
        "timestamp.json v1 names snapshot v1 but snapshot.json is v2"
    ]


def test_half_synced_snapshot_hash_exits_1(new_repo: Callable[..., Path]) -> None:
    """Same version, other bytes than timestamp.json records (signed, so it verifies)."""
    repo = new_repo()
    path = repo / "repository/snapshot.json"
    doc = json.loads(path.read_bytes())
    path.write_text(json.dumps(doc, indent=1))  # same signed content, other bytes
    with serve(repo / "repository") as url:
        code, stdout, _ = _status_url(url)
    assert code == 1
    assert "snapshot.json does not match the length or hashes timestamp.json v1 records" in stdout


def test_consistent_snapshot_missing_versioned_file_exits_1(new_repo: Callable[..., Path]) -> None:
    repo = new_repo(True)
    _add(repo, "1.0.0")
    (repo / "repository/2.snapshot.json").unlink()
    with serve(repo / "repository") as url:
        code, stdout, _ = _status_url(url)
    assert code == 1
    assert "timestamp.json v2 names snapshot v2 but 2.snapshot.json is missing (404)" in stdout


def test_stale_root_json_exits_1(new_repo: Callable[..., Path], tmp_path: Path) -> None:
    """root.json left at v1 after a rotation (uploaded in the wrong order, or not at all)."""
    repo = new_repo()
    root_v1 = (repo / "repository/1.root.json").read_bytes()
    _lib(repo).rotate("root")
    (repo / "repository/root.json").write_bytes(root_v1)
    (tmp_path / "root.json").write_bytes(root_v1)
    with serve(repo / "repository") as url:
        code, stdout, _ = _status_url(url, "--update-roots", tmp_path / "root.json")
    assert code == 1
    assert "root.json is v1, older than the newest root v2" in stdout


# -- cannot fetch ---------------------------------------------------------------------------
def test_unreachable_url_exits_4(new_repo: Callable[..., Path]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, stdout, stderr = _status_url(url)
    assert code == 4 and stdout == ""
    assert stderr.count("\n") == 1
    assert f"{url}/root.json" in stderr and "connection refused" in stderr


def test_http_error_exits_4_naming_url_and_status(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    server = FaultServer(repo / "repository")
    try:
        server.faults["/timestamp.json"] = 404
        code, _, stderr = _status_url(server.url)
        server.faults["/timestamp.json"] = 403
        forbidden, _, stderr_403 = _status_url(server.url)
    finally:
        server.close()
    assert code == 4
    assert stderr.strip() == (
        f"orbit-packager: error: {server.url}/timestamp.json answered HTTP 404 (not found)"
    )
    assert forbidden == 4 and f"{server.url}/timestamp.json answered HTTP 403" in stderr_403


def test_403_for_a_missing_root_exits_4_with_the_list_bucket_hint(
    new_repo: Callable[..., Path],
) -> None:
    repo = new_repo()
    with _serve_403(repo / "repository") as url:
        code, stdout, stderr = _status_url(url)
    assert code == 4 and stdout == ""
    assert stderr.strip() == (
        f"orbit-packager: error: {url}/2.root.json answered 403 for a missing file; "
        "clients treat that as an error: allow s3:ListBucket for anonymous reads on the bucket "
        "(or make your server answer 404)"
    )
    assert LIST_BUCKET_HINT in stderr


# -- flags and secrets ----------------------------------------------------------------------
def test_path_and_url_are_mutually_exclusive(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    with serve(repo / "repository") as url:
        both = cli("updates", "status", "--path", repo, "--url", url, check=False)
    assert both.returncode == 2 and "--path and --url are mutually exclusive" in both.stderr
    roots = cli("updates", "status", "--path", repo, "--update-roots", "x", check=False)
    assert roots.returncode == 2 and "--update-roots goes with --url" in roots.stderr
    # --path keeps its default (the current directory) when --url is not given
    here = cli("updates", "status", "--json", cwd=repo)
    assert json.loads(here.stdout)["path"] == "."
    bad = cli("updates", "status", "--url", "ftp://example.com/tuf", check=False)
    assert bad.returncode == 2 and "not an http:// or https:// URL" in bad.stderr


def test_credentials_in_the_url_are_never_printed(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    with serve(repo / "repository") as url:
        secret_url = url.replace("http://", "http://monitor:hunter2@")
        ok = cli("updates", "status", "--url", secret_url, "--json")
    assert "hunter2" not in ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["url"] == url
    down = f"http://monitor:hunter2@127.0.0.1:{_closed_port()}/tuf"
    failed = cli("updates", "status", "--url", down, check=False)
    assert failed.returncode == 4
    assert "hunter2" not in failed.stdout + failed.stderr
    assert "http://127.0.0.1:" in failed.stderr
    assert display_url("https://a:b@[::1]:8443/x") == "https://[::1]:8443/x"
    for secret in TEST_PASSPHRASES.values():
        assert secret not in ok.stdout + ok.stderr


def test_a_tampered_published_root_does_not_verify_by_itself(
    new_repo: Callable[..., Path],
) -> None:
    """Without --update-roots the published root.json is the anchor: it must still be signed by
    its own keys (an edited expiry or key list is refused, exit 3)."""
    repo = new_repo()
    path = repo / "repository/root.json"
    raw = path.read_bytes()
    expires = json.loads(raw)["signed"]["expires"].encode()
    later = str(int(expires[:4]) + 1).encode() + expires[4:]
    path.write_bytes(raw.replace(b'"expires":"' + expires, b'"expires":"' + later))
    with serve(repo / "repository") as url:
        code, stdout, stderr = _status_url(url)
    assert code == 3, stdout + stderr
    assert f"{url}/root.json does not verify (itself)" in stderr


def test_401_says_clients_read_anonymously(new_repo: Callable[..., Path]) -> None:
    repo = new_repo()
    server = FaultServer(repo / "repository")
    try:
        server.faults["/timestamp.json"] = 401
        code, _, stderr = _status_url(server.url)
    finally:
        server.close()
    assert code == 4
    assert "answered HTTP 401 (authentication required: clients read the repository" in stderr
