"""`updates publish` to a local directory (an nginx root), and the publish engine itself.

The engine's promises are checked from the client's side: after every single upload of a
publish (the endpoint stopping there), a fresh agent and an agent holding the previous state
both read a complete repository -- the old one or the new one; a second run finishes it. The
order is also asserted on the calls themselves (target files, root, versioned metadata,
targets, snapshot, timestamp last), since some wrong orders are invisible to clients in one
scenario and fatal in another.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadLengthMismatchError,
    LengthOrHashMismatchError,
)
from tuf.ngclient import Updater

from packager.errors import PackagerError
from packager.repo.passphrase import PassphraseSource
from packager.repo.publish import PHASES, CachePolicy, execute, phase_of, plan_publish
from packager.repo.repository import Expirations, UpdateRepository, utcnow
from packager.repo.stores import DirectoryStore, StoreError
from tests.helpers import TEST_PASSPHRASES, cli, client_fetch_all, serve, tree_bytes

ENV = TEST_PASSPHRASES


def _repo(path: Path, *, consistent: bool = False, **exp: Any) -> UpdateRepository:
    repo = UpdateRepository(
        path, PassphraseSource(environ=TEST_PASSPHRASES), expirations=Expirations(**exp)
    )
    if not repo.is_initialized():
        repo.init(consistent_snapshot=consistent)
    return repo


def _add(repo: UpdateRepository, tmp: Path, version: str, size: int = 40_000) -> None:
    payload = tmp / f"orbit-{version}"
    payload.write_bytes(f"orbit {version}\n".encode() * (size // 12))
    repo.add(payload, name="orbit", platform="linux", version=version, tags=["stable"])


def _publish(repo: Path, dest: Path, *extra: str, check: bool = True) -> Any:
    return cli("updates", "publish", "--path", repo, "--to", dest, *extra, env=ENV, check=check)


def _published(dest: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_bytes(dest).items() if not k.startswith(".")}


class Spy:
    """The real DirectoryStore, recording each write; optionally failing at the k-th one (the
    endpoint stopping there: that write and all after it never happen)."""

    def __init__(self, inner: DirectoryStore, fail_at: int | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_at = fail_at
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, name: str, source: Path, **kw: Any) -> None:
        if self.fail_at is not None and len(self.writes) >= self.fail_at:
            raise StoreError(f"endpoint gone before {name}")
        self.inner.put(name, source, **kw)
        self.writes.append(name)


def _plan_and_run(repo: UpdateRepository, store: Any, *, jobs: int = 1) -> None:
    with repo.locked(), store.session():
        plan = plan_publish(repo, repo.load(), store, now=utcnow())
        execute(plan, store, CachePolicy(), jobs=jobs)


def _client_view(
    dest: Path, root_v1: bytes, old_md: Path | None
) -> tuple[dict[str, int], bytes] | None:
    """(versions, the stable channel's bytes) as an agent sees ``dest``: a fresh one from root
    v1, or one whose metadata directory holds a previous state (``old_md``, copied). None when
    a file with a fixed name no longer matches the metadata naming it (the in-place window);
    any other failure raises."""
    with serve(dest) as url, tempfile.TemporaryDirectory() as tmp:
        md, tg = Path(tmp, "md"), Path(tmp, "tg")
        if old_md is not None:
            shutil.copytree(old_md, md)
        else:
            md.mkdir()
        tg.mkdir()
        updater = Updater(
            str(md), url + "/", str(tg), url + "/targets/", bootstrap=None if old_md else root_v1
        )
        try:
            updater.refresh()
        except (LengthOrHashMismatchError, DownloadLengthMismatchError, BadVersionNumberError):
            return None  # names replaced in place changed under it (no consistent snapshots)
        info = updater.get_targetinfo("orbit/linux/stable/orbit")
        assert info is not None
        local = tg / "orbit"
        if old_md is not None:
            # An agent that read the old state has its file, as Orbit does: it downloads only
            # when the file does not match what the metadata says.
            shutil.copy(old_md / "orbit", local)
        try:
            cached = updater.find_cached_target(info, str(local))
            data = Path(cached or updater.download_target(info, str(local))).read_bytes()
        except LengthOrHashMismatchError:
            return None  # a channel file replaced in place (no consistent snapshots)
        versions = {
            r: json.loads((md / f"{r}.json").read_bytes())["signed"]["version"]
            for r in ("root", "targets", "snapshot", "timestamp")
        }
        return versions, data


def _snapshot_client(dest: Path, root_v1: bytes, into: Path) -> None:
    """An agent's metadata directory after it read ``dest``, with its stable orbit as ``orbit``."""
    with serve(dest) as url:
        into.mkdir()
        updater = Updater(str(into), url + "/", str(into), url + "/targets/", bootstrap=root_v1)
        updater.refresh()
        info = updater.get_targetinfo("orbit/linux/stable/orbit")
        assert info is not None
        updater.download_target(info, str(into / "orbit"))


# -- the directory target -------------------------------------------------------------------


@pytest.mark.parametrize("consistent", [False, True], ids=["plain", "consistent-snapshot"])
def test_publish_mirrors_the_repository_and_skips_what_is_unchanged(
    tmp_path: Path, consistent: bool
) -> None:
    repo = _repo(tmp_path / "repo", consistent=consistent)
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www" / "tuf"
    first = _publish(repo.path, dest, "--json")
    report = json.loads(first.stdout)
    assert _published(dest) == tree_bytes(repo.repository)
    assert len(report["uploads"]) == len(tree_bytes(repo.repository))
    for path in dest.rglob("*"):
        if path.name.startswith("."):
            continue
        want = 0o755 if path.is_dir() else 0o644  # a web server running as another user reads it
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    again = json.loads(_publish(repo.path, dest, "--json").stdout)
    assert again["uploads"] == [] and again["unchanged"] == report["unchanged"] + len(
        report["uploads"]
    )
    _add(repo, tmp_path, "1.1.0")
    third = json.loads(_publish(repo.path, dest, "--json").stdout)
    names = {u["name"] for u in third["uploads"]}
    assert "timestamp.json" in names and "1.root.json" not in names
    assert _published(dest) == tree_bytes(repo.repository)
    seen = _client_view(dest, (repo.repository / "1.root.json").read_bytes(), None)
    assert seen is not None
    versions, data = seen
    assert data == (tmp_path / "orbit-1.1.0").read_bytes()
    assert versions["targets"] == repo.load().targets.version


def test_dry_run_lists_the_plan_in_order_and_writes_nothing(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    proc = _publish(repo.path, dest, "--dry-run")
    assert not dest.exists() or _published(dest) == {}
    lines = [line.strip() for line in proc.stdout.splitlines()]
    uploads = [line.split()[1] for line in lines if line.startswith("upload ")]
    assert uploads.index("targets/orbit/linux/stable/orbit") < uploads.index("1.root.json")
    assert uploads[-4:] == ["root.json", "targets.json", "snapshot.json", "timestamp.json"]
    assert "nothing written" in proc.stdout


def test_gotuf_reads_a_published_directory(tmp_path: Path) -> None:
    from tests.gotuf.harness import client_targets, gotuf_binary

    binary = gotuf_binary()
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    repo.rotate("timestamp")
    _add(repo, tmp_path, "1.1.0")
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    with serve(dest) as url:
        out = client_targets(binary, url, (repo.repository / "1.root.json").read_bytes())
    state = repo.load()
    assert out["versions"] == {r: state.role(r).version for r in out["versions"]}
    assert set(out["targets"]) == set(state.targets.md.signed.targets)


# -- never backwards -----------------------------------------------------------------------


def test_a_stale_copy_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """An older copy (snapshot and targets behind) whose timestamp was freshly re-signed -- the
    case that sent Fleet's agents into "version 4401 is lower than current version 4402"."""
    repo = _repo(tmp_path / "repo")
    _add(repo, tmp_path, "1.0.0")
    stale = tmp_path / "stale"
    shutil.copytree(repo.path, stale)
    _add(repo, tmp_path, "1.1.0")
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    before = _published(dest)
    stale_repo = _repo(stale)
    for _ in range(3):
        stale_repo.timestamp()  # its timestamp now has a higher version than the published one
    proc = _publish(stale, dest, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "published targets.json is version 3, this repository's is 2" in proc.stderr
    assert "(and 1 more)" in proc.stderr  # snapshot.json
    assert "nothing was published" in proc.stderr and "--force" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _published(dest) == before


def test_the_same_version_with_other_bytes_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    _add(repo, tmp_path, "1.0.0")
    twin = tmp_path / "twin"
    shutil.copytree(repo.path, twin)
    repo.timestamp()
    later = utcnow() + timedelta(hours=1)
    UpdateRepository(  # same version, signed for another expiry: other bytes
        twin, PassphraseSource(environ=TEST_PASSPHRASES), now=lambda: later
    ).timestamp()
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    before = _published(dest)
    proc = _publish(twin, dest, check=False)
    assert proc.returncode == 2
    assert "published timestamp.json v3 differs from this repository's v3" in proc.stderr
    assert _published(dest) == before


def test_another_repository_at_the_destination_is_refused(tmp_path: Path) -> None:
    a, b = _repo(tmp_path / "a"), _repo(tmp_path / "b")
    for _ in range(2):
        b.timestamp()
    _add(b, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    _publish(a.path, dest)
    before = _published(dest)
    proc = _publish(b.path, dest, check=False)  # every version of b is higher, but 1.root.json
    assert proc.returncode == 2
    assert "1.root.json differs" in proc.stderr or "root.json v1 differs" in proc.stderr
    assert _published(dest) == before


def test_force_publishes_backwards_and_says_what_it_overrode(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    stale = tmp_path / "stale"
    shutil.copytree(repo.path, stale)
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    proc = _publish(stale, dest, "--force")
    assert "--force: published targets.json is version 2, this repository's is 1" in proc.stderr
    assert _published(dest)["snapshot.json"] == (stale / "repository/snapshot.json").read_bytes()


def test_expired_metadata_is_not_published(tmp_path: Path) -> None:
    now = utcnow()
    repo = UpdateRepository(
        tmp_path / "repo",
        PassphraseSource(environ=TEST_PASSPHRASES),
        now=lambda: now - Expirations().timestamp - Expirations().timestamp,
    )
    repo.init()
    proc = _publish(repo.path, tmp_path / "www", check=False)
    assert proc.returncode == 2
    assert "timestamp.json expired" in proc.stderr and "updates timestamp" in proc.stderr
    assert not (tmp_path / "www" / "timestamp.json").exists()


def test_metadata_expiring_this_instant_is_not_published(tmp_path: Path) -> None:
    """At the instant timestamp.json expires, agents already refuse it (python-tuf and go-tuf
    both: expired when now >= expires), so publish refuses it too; a second earlier it goes."""
    repo = UpdateRepository(tmp_path / "repo", PassphraseSource(environ=TEST_PASSPHRASES))
    repo.init()
    expires = repo.load().role("timestamp").expires
    store = DirectoryStore(tmp_path / "www")
    with repo.locked(), store.session():
        with pytest.raises(PackagerError, match=r"^timestamp\.json expired 0s ago: agents"):
            plan_publish(repo, repo.load(), store, now=expires)
        plan = plan_publish(repo, repo.load(), store, now=expires - timedelta(seconds=1))
    assert [u.file.name for u in plan.uploads][-1] == "timestamp.json"


# -- order and interruption ----------------------------------------------------------------


def _scenario(tmp_path: Path, kind: str) -> tuple[UpdateRepository, Path, bytes, Path]:
    """A published repository, then a local change not yet published. Returns the repository,
    the destination, root v1 and the metadata directory of an agent that read the old state."""
    repo = _repo(tmp_path / "repo", consistent=kind.endswith("consistent") or kind == "fresh")
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    _plan_and_run(repo, DirectoryStore(dest))
    root_v1 = (repo.repository / "1.root.json").read_bytes()
    old_agent = tmp_path / "old-agent"
    _snapshot_client(dest, root_v1, old_agent)
    if kind.startswith("add"):
        _add(repo, tmp_path, "1.1.0")
    elif kind.startswith("rotate-"):
        repo.rotate(kind.split("-")[1])
    return repo, dest, root_v1, old_agent


def _count_writes(repo: UpdateRepository, dest: Path) -> int:
    scratch = dest.with_name("scratch")
    shutil.copytree(dest, scratch)
    spy = Spy(DirectoryStore(scratch))
    with repo.locked(), spy.session():
        plan = plan_publish(repo, repo.load(), spy, now=utcnow())
        execute(plan, spy, CachePolicy(), jobs=1)
    shutil.rmtree(scratch)
    return len(spy.writes)


@pytest.mark.parametrize(
    "kind",
    ["add", "add-consistent", "rotate-timestamp", "rotate-timestamp-consistent",
     "rotate-snapshot-consistent", "rotate-targets-consistent", "rotate-root-consistent"],
)  # fmt: skip
def test_the_endpoint_stopping_after_any_upload_leaves_agents_a_whole_repository(
    tmp_path: Path, kind: str
) -> None:
    """After each upload of a publish the endpoint stops. Then an agent that read the old
    state, and a fresh one (from root v1), each read the old repository or the new one, whole;
    running publish again finishes it. With consistent snapshots nothing else is ever seen.
    Without them names are replaced in place (fleetctl's default layout): between the first
    such upload and the switch a fresh agent may find a file that does not match the metadata
    naming it, refuses it and retries -- an agent that holds the old state never does."""
    repo, dest, root_v1, old_agent = _scenario(tmp_path, kind)
    consistent = kind.endswith("consistent")
    saved = tmp_path / "saved"
    shutil.copytree(dest, saved)
    old = _client_view(dest, root_v1, None)
    total = _count_writes(repo, dest)
    assert total >= 3 and old is not None
    finished = tmp_path / "finished"
    shutil.copytree(saved, finished)
    _plan_and_run(repo, DirectoryStore(finished))
    new = _client_view(finished, root_v1, None)
    assert new is not None and new[0]["timestamp"] > old[0]["timestamp"]
    windows = 0
    for k in range(total):
        shutil.rmtree(dest)
        shutil.copytree(saved, dest)
        spy = Spy(DirectoryStore(dest), fail_at=k)
        with pytest.raises(StoreError):
            _plan_and_run(repo, spy)
        for agent in (None, old_agent):
            seen = _client_view(dest, root_v1, agent)  # raises on any other failure
            if seen is None:
                assert not consistent and agent is None, (k, spy.writes)
                windows += 1
                continue
            versions, data = seen
            state = old if versions["timestamp"] == old[0]["timestamp"] else new
            assert data == state[1], (k, spy.writes)
            for role in ("targets", "snapshot", "timestamp"):
                assert versions[role] == state[0][role], (k, role, spy.writes)
        # Running it again finishes the publish.
        _plan_and_run(repo, DirectoryStore(dest))
        assert _published(dest) == _published(finished)
    if not consistent:
        assert windows > 0  # the oracle does see the in-place window (fleetctl's layout)


def _order(tmp_path: Path, kind: str) -> list[str]:
    repo, dest, _root_v1, _old = _scenario(tmp_path, kind)
    spy = Spy(DirectoryStore(dest))
    _plan_and_run(repo, spy, jobs=4)
    return spy.writes


@pytest.mark.parametrize("kind", ["fresh", "add", "add-consistent", "rotate-root-consistent"])
def test_uploads_go_in_client_order(tmp_path: Path, kind: str) -> None:
    """Target files, N.root.json, versioned metadata, root.json, targets.json, snapshot.json,
    timestamp.json: each phase complete before the next begins."""
    if kind == "fresh":
        repo = _repo(tmp_path / "repo", consistent=True)
        _add(repo, tmp_path, "1.0.0")
        spy = Spy(DirectoryStore(tmp_path / "www"))
        _plan_and_run(repo, spy, jobs=4)
        writes = spy.writes
    else:
        writes = _order(tmp_path, kind)
    phases = [phase_of(name) for name in writes]
    assert phases == sorted(phases), writes
    assert writes[-1] == "timestamp.json"
    if kind in ("fresh", "rotate-root-consistent"):
        root = next(n for n in writes if n.endswith(".root.json"))
        assert writes.index(root) < writes.index("targets.json"), writes
    assert PHASES[phase_of(writes[0])] in ("target files", "root versions")


def test_a_rotation_whose_new_files_verify_under_the_old_root_puts_the_root_last(
    tmp_path: Path,
) -> None:
    """rotate timestamp: the published timestamp carries only the revoked key, so an agent that
    fetched the new root first would refuse it; the new files carry both keys. The root goes
    after timestamp.json (and the interruption test above shows no agent sees a broken state)."""
    writes = _order(tmp_path, "rotate-timestamp-consistent")
    assert writes.index("timestamp.json") < writes.index("2.root.json") < writes.index("root.json")


# -- stale objects ---------------------------------------------------------------------------


def test_delete_stale_removes_only_unreferenced_old_objects(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    (dest / "index.html").write_text("not ours")
    old_target = "targets/orbit/linux/1.0.0/orbit"
    repo.remove(["orbit/linux/1.0.0/orbit"])
    _add(repo, tmp_path, "1.1.0")
    _add(repo, tmp_path, "1.2.0")  # the 1.0.0 generation's hash-prefixed files are now gone too
    gone = set(_published(dest)) - set(tree_bytes(repo.repository)) - {"index.html"}
    assert old_target in gone
    young = json.loads(_publish(repo.path, dest, "--delete-stale", "7d", "--json").stdout)
    assert set(young["kept_stale"]) == gone and young["deletes"] == []
    assert old_target in _published(dest)
    # Written later in the second the command reads the clock in (it counts whole seconds):
    # still stale under "0s" (once kept as if negative-aged, a flaky CI failure).
    for name in gone:
        later = time.time() + 0.9
        os.utime(dest / name, (later, later))
    proc = _publish(repo.path, dest, "--delete-stale", "0s", "--json")
    report = json.loads(proc.stdout)
    assert set(report["deletes"]) == gone
    left = _published(dest)
    assert old_target not in left
    assert "index.html" in left and "1.root.json" in left
    assert set(left) == set(tree_bytes(repo.repository)) | {"index.html"}


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "extra", "message"),
    [
        ("ftp://host/x", [], "unsupported scheme ftp://"),
        ("s3://", [], "no bucket"),
        ("gs://bucket/p", ["--endpoint-url", "http://127.0.0.1:9"], "for s3:// destinations"),
        ("s3://b/p", ["--endpoint-url", "127.0.0.1:9000"], "not an http(s) URL"),
    ],
)
def test_bad_destinations_are_one_line_usage_errors(
    tmp_path: Path, to: str, extra: list[str], message: str
) -> None:
    repo = _repo(tmp_path / "repo")
    proc = cli("updates", "publish", "--path", repo.path, "--to", to, *extra, env=ENV, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_an_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        dest = blocker / "sub"  # a path under a regular file: no one can create it
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        dest = ro / "sub"
    repo = _repo(tmp_path / "repo")
    proc = _publish(repo.path, dest, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot create {dest}" in proc.stderr


class _Forbidding(http.server.SimpleHTTPRequestHandler):
    """A static server that answers 403 for missing files (an S3 bucket without ListBucket)."""

    def log_message(self, *_args: object) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(403 if code == 404 else code, message, explain)


def test_verify_url_checks_as_an_agent_and_wants_404_for_missing_files(tmp_path: Path) -> None:
    import threading

    repo = _repo(tmp_path / "repo")
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    with serve(dest) as url:
        ok = _publish(repo.path, dest, "--verify-url", url)
    assert f"Verified {url}" in ok.stdout
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Forbidding, directory=str(dest))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        bad = _publish(repo.path, dest, "--verify-url", url, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert bad.returncode == 1, bad.stderr
    assert "2.root.json (missing) answered 403, not 404" in bad.stdout
    assert "s3:ListBucket" in bad.stdout


def test_store_errors_are_packager_errors() -> None:
    assert issubclass(StoreError, PackagerError) and StoreError.exit_code == 4


def test_client_fetch_all_sees_published_bytes(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    dest = tmp_path / "www"
    _publish(repo.path, dest)
    with serve(dest) as url:
        got = client_fetch_all(url, (repo.repository / "1.root.json").read_bytes())
    assert got["orbit/linux/stable/orbit"] == (tmp_path / "orbit-1.0.0").read_bytes()
