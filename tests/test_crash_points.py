"""Issue 14: kill `updates add`, `timestamp` and `rotate` at *every* file-system call boundary.

Random wall-clock kills (tests/test_crash.py) almost never land inside a commit. Here the real
command line runs in a child process that dies (``os._exit(137)``, what SIGKILL leaves) just
before or just after its k-th ``os.replace``/``os.rename`` -- and, in a second sweep, its k-th
``os.link``/``os.unlink`` -- for every k from 1 to the number N a successful run makes (counted
by a reference run). The hook is a ``sitecustomize.py`` on the child's ``PYTHONPATH``
(tests/killpoint.py); product code is unchanged.

At every kill point, before anything recovers:

* the published ``repository/`` never names a file that is not there (a timestamp naming a
  snapshot, a snapshot naming targets metadata, targets naming a target file);
* a TUF client (python-tuf's ngclient over HTTP on 127.0.0.1) that already holds the old state --
  as every installed agent does -- refreshes to the old or the new state, never an error and never
  a mix; a fresh client bootstrapped from root v1 does too with consistent snapshots, and without
  them (fleetctl's fixed file names) may fail only while the commit's renames are running;
* key files are the old bytes or the intended new file, never missing or corrupt.

Then the *next command* runs normally (``updates timestamp``, which recovers first on its own; the
test never calls ``Transaction.recover()``) and the repository must be exactly the old state or
exactly the new state (plus that timestamp): same file names as a clean run, every file the
command does not change byte for byte as before, key files intact, a fresh client sees it,
``updates status`` is clean. Once a client could see the new state, only the new state is
acceptable (no rollback of what was published).

Kill points cannot show what a power cut would lose, so the reference run's call trace is
checked too: each file is fsynced before it is renamed, and each directory a rename changes is
fsynced before the journal moves on.

To keep hundreds of runs affordable, one interpreter imports the command line once and forks a
child per run (killpoint.CommandRunner); a fresh ``python -m packager`` reference run checks that
it makes the same calls. Key files are rewritten in go-tuf's unencrypted form (scrypt costs 0.2 s
per key and is not what these tests are about; encrypted key files are tests/test_key_files.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tuf.ngclient import Updater

from packager.repo.fsutil import is_temp_name
from packager.repo.keys import RoleKey, decrypt_keys, encrypt_keys
from tests.helpers import ROOT, TEST_PASSPHRASES, serve, tree_bytes
from tests.killpoint import (
    KILLED,
    CommandRunner,
    Event,
    Kill,
    counted,
    read_trace,
    spawn,
)

ROLES = ("root", "targets", "snapshot", "timestamp")
TXN = ".orbit-packager-txn"
OLD = {
    "orbit/linux/1.0.0/orbit": b"orbit one " * 40,
    "orbit/linux/1.1.0/orbit": b"orbit two " * 50,
}
OLD["orbit/linux/stable/orbit"] = OLD["orbit/linux/1.1.0/orbit"]
NEW_BINARY = b"orbit three " * 60
NEW = {
    **OLD,
    "orbit/linux/2.0.0/orbit": NEW_BINARY,
    "orbit/linux/stable/orbit": NEW_BINARY,
}


def passphrase(role: str) -> str:
    return TEST_PASSPHRASES[f"FLEET_{role.upper()}_PASSPHRASE"]


@functools.lru_cache(maxsize=256)
def read_keys(content: bytes, role: str) -> list[RoleKey]:
    """A key file's keys (raises if it is corrupt); scrypt is slow, so each content once."""
    return decrypt_keys(content, passphrase(role))


@dataclass(frozen=True)
class Scenario:
    name: str
    command: tuple[str, ...]  # after `updates`, before --path
    consistent: bool
    rotated: str | None = None

    @property
    def content_after(self) -> dict[str, bytes]:
        return NEW if self.command[0] == "add" else OLD


SCENARIOS = [
    Scenario("add-plain", ("add",), consistent=False),
    Scenario("add-consistent", ("add",), consistent=True),
    Scenario("timestamp", ("timestamp",), consistent=False),
    Scenario("rotate-targets-plain", ("rotate", "targets"), False, rotated="targets"),
    Scenario("rotate-targets-consistent", ("rotate", "targets"), True, rotated="targets"),
    Scenario("rotate-root-plain", ("rotate", "root"), False, rotated="root"),
]
# The second sweep: the commit's own unlinks (deleted targets, the journal) and staging links.
LINK_SWEEP = [s for s in SCENARIOS if s.name in ("add-consistent", "rotate-targets-plain")]


# -- environment --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandRunner]:
    r = CommandRunner(tmp_path_factory.mktemp("runner"), ROOT)
    yield r
    r.close()


def _run_ok(runner: CommandRunner, argv: list[str], **kw: Any) -> str:
    result = runner.run(argv, TEST_PASSPHRASES, **kw)
    assert result.rc == 0, (argv, result.rc, result.stdout, result.stderr)
    return result.stderr


def argv_of(scenario: Scenario, repo: Path, binary: Path) -> list[str]:
    argv = ["updates", *scenario.command, "--path", str(repo)]
    if scenario.command[0] == "add":
        argv += ["--target", str(binary), "--name", "orbit", "--platform", "linux"]
        argv += ["--version", "2.0.0", "-t", "stable"]
    return argv


@pytest.fixture(scope="module")
def bases(
    runner: CommandRunner, tmp_path_factory: pytest.TempPathFactory
) -> dict[bool, tuple[Path, Path]]:
    """Per consistent-snapshot mode: a repository with orbit 1.0.0 and 1.1.0 (stable), and the
    new binary. The second add makes the next add delete a hash-prefixed file (consistent)."""
    out = {}
    files = tmp_path_factory.mktemp("binaries")
    paths = {}
    for path, data in {**OLD, "orbit/linux/2.0.0/orbit": NEW_BINARY}.items():
        paths[path] = files / path.split("/")[2]
        paths[path].write_bytes(data)
    for cs in (False, True):
        repo = tmp_path_factory.mktemp(f"base-cs{int(cs)}") / "repo"
        _run_ok(runner, ["updates", "init", "--path", str(repo), *(["--consistent-snapshot"] * cs)])
        for version in ("1.0.0", "1.1.0"):
            _run_ok(runner, ["updates", "add", "--path", str(repo), "--target",
                             str(paths[f"orbit/linux/{version}/orbit"]), "--name", "orbit",
                             "--platform", "linux", "--version", version, "-t", "stable"])  # fmt: skip
        out[cs] = (repo, paths["orbit/linux/2.0.0/orbit"])
    return out


@dataclass
class Prepared:
    scenario: Scenario
    template: Path
    binary: Path
    root_v1: bytes
    before: dict[str, bytes]
    versions_before: dict[str, int]
    reference: dict[str, bytes]  # the tree after a clean run of the command
    reference_final: dict[str, bytes]  # ... and the next command
    versions_after: dict[str, int]
    cached_client: Path  # an ngclient cache holding the old state and its target files
    n: dict[tuple[str, ...], int] = field(default_factory=dict)
    trace: list[Event] = field(default_factory=list)


def _versions(repository: Path) -> dict[str, int]:
    return {
        r: json.loads((repository / f"{r}.json").read_bytes())["signed"]["version"] for r in ROLES
    }


def _make_template(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    for role in ROLES:
        path = dest / "keys" / f"{role}.json"
        path.write_bytes(encrypt_keys(decrypt_keys(path.read_bytes(), passphrase(role)), None))
    return dest


_prepared: dict[str, Prepared] = {}


@pytest.fixture(scope="module")
def prepare(
    runner: CommandRunner,
    bases: dict[bool, tuple[Path, Path]],
    tmp_path_factory: pytest.TempPathFactory,
):
    def make(scenario: Scenario) -> Prepared:
        if scenario.name in _prepared:
            return _prepared[scenario.name]
        top = tmp_path_factory.mktemp(scenario.name)
        base, binary = bases[scenario.consistent]
        template = _make_template(base, top / "template")
        before = tree_bytes(template)
        cache = top / "client"
        with serve(template / "repository") as url:
            root_v1 = (template / "repository/1.root.json").read_bytes()
            assert client_view(url, root_v1, cache).content == OLD

        # Reference: a fresh `python -m packager`, traced; then the fork server, for comparison.
        ref = top / "reference"
        shutil.copytree(template, ref)
        trace = top / "reference.trace"
        done = spawn(runner.site_dir, ROOT, argv_of(scenario, ref, binary), TEST_PASSPHRASES,
                     ops=("replace", "rename", "link", "unlink"), trace=trace)  # fmt: skip
        assert done.rc == 0, done.stderr
        events = read_trace(trace)
        reference = tree_bytes(ref)
        versions_after = _versions(ref / "repository")
        _run_ok(runner, ["updates", "timestamp", "--path", str(ref)])
        prepared = Prepared(
            scenario, template, binary, root_v1, before, _versions(template / "repository"),
            reference, tree_bytes(ref), versions_after, cache, trace=events,
        )  # fmt: skip
        for ops in (("replace", "rename"), ("link", "unlink")):
            prepared.n[ops] = counted(events, ops)
            forked = top / f"forked-{'-'.join(ops)}"
            shutil.copytree(template, forked)
            forked_trace = top / f"forked-{'-'.join(ops)}.trace"
            _run_ok(runner, argv_of(scenario, forked, binary), ops=ops, trace=forked_trace)
            assert counted(read_trace(forked_trace), ops) == prepared.n[ops]
        _prepared[scenario.name] = prepared
        return prepared

    return make


# -- what a client sees -------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    content: dict[str, bytes]
    versions: dict[str, int]


def client_view(base_url: str, trusted_root: bytes, cache: Path) -> View:
    """Refresh with ngclient (metadata and targets cached in ``cache``), then every target:
    the cached copy if it still matches, else downloaded and checked."""
    md, targets = cache / "metadata", cache / "targets"
    md.mkdir(parents=True, exist_ok=True)
    targets.mkdir(parents=True, exist_ok=True)
    updater = Updater(
        str(md), base_url + "/", str(targets), base_url + "/targets/", bootstrap=trusted_root
    )
    updater.refresh()
    listed = json.loads((md / "targets.json").read_bytes())["signed"]["targets"]
    content = {}
    for path in listed:
        info = updater.get_targetinfo(path)
        assert info is not None, path
        local = str(targets / hashlib.sha256(path.encode()).hexdigest())
        found = updater.find_cached_target(info, local) or updater.download_target(info, local)
        content[path] = Path(found).read_bytes()
    versions = {r: json.loads((md / f"{r}.json").read_bytes())["signed"]["version"] for r in ROLES}
    return View(content, versions)


def cached_client_view(base_url: str, template: Path, scratch: Path) -> View:
    """A client that holds the old state (as every installed agent does) refreshes."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(template, scratch, symlinks=True)
    return client_view(base_url, (scratch / "metadata/root.json").read_bytes(), scratch)


def dangling_references(repository: Path) -> list[str]:
    """What the published metadata names that is not there, read top-down from timestamp.json
    (plain JSON, independent of the code under test and of python-tuf)."""

    def signed(name: str) -> Any:
        return json.loads((repository / name).read_bytes())["signed"]

    problems = []
    root = signed("root.json")
    consistent = bool(root["consistent_snapshot"])
    missing_roots = [
        v for v in range(1, root["version"] + 1) if not (repository / f"{v}.root.json").is_file()
    ]
    if missing_roots:
        problems.append(
            f"root.json is v{root['version']} but {missing_roots} .root.json are missing"
        )
    snapshot_version = signed("timestamp.json")["meta"]["snapshot.json"]["version"]
    name = f"{snapshot_version}.snapshot.json" if consistent else "snapshot.json"
    if not (repository / name).is_file():
        return [*problems, f"timestamp.json names {name}, which is missing"]
    targets_version = signed(name)["meta"]["targets.json"]["version"]
    targets_name = f"{targets_version}.targets.json" if consistent else "targets.json"
    if not (repository / targets_name).is_file():
        return [*problems, f"{name} names {targets_name}, which is missing"]
    for path, info in signed(targets_name)["targets"].items():
        directory, _, base = path.rpartition("/")
        names = (
            [f"{directory}/{h}.{base}" for h in info["hashes"].values()] if consistent else [path]
        )
        problems += [
            f"{targets_name} lists {path}: targets/{n} is missing"
            for n in names
            if not (repository / "targets" / n).is_file()
        ]
    return problems


# -- the sweep ----------------------------------------------------------------------------------
def _phase(repo: Path) -> str | None:
    if not (repo / TXN).exists():
        return None
    try:
        return str(json.loads((repo / TXN / "state.json").read_bytes())["phase"])
    except (OSError, ValueError, KeyError):
        return "preparing"


def _check_key_file(p: Prepared, tree: dict[str, bytes], root: dict[str, Any], role: str) -> bool:
    """The rotated role's key file: the old bytes (False) or old key + one new key that the
    published root lists in place of the old one (True)."""
    name = f"keys/{role}.json"
    assert name in tree, f"{name} is missing"
    if tree[name] == p.before[name]:
        return False
    old = read_keys(p.before[name], role)
    keys = read_keys(tree[name], role)
    assert keys[:-1] == old and len(keys) == len(old) + 1, f"{name} is not old keys + one new"
    listed = root["roles"][role]["keyids"]
    assert keys[-1].gotuf_keyid in listed and old[0].gotuf_keyid not in listed
    return True


def _check_keys_at_crash(p: Prepared, crashed: dict[str, bytes]) -> None:
    for role in ROLES:
        name = f"keys/{role}.json"
        assert name in crashed, f"{name} is missing after the kill"
        if role != p.scenario.rotated:
            assert crashed[name] == p.before[name], f"{name} changed"
            continue
        if crashed[name] != p.before[name]:  # the new key file: old key + one new, readable
            keys = read_keys(crashed[name], role)
            assert keys[:-1] == read_keys(p.before[name], role), f"{name} lost the old key"
    stray = [k for k in crashed if k.startswith("keys/") and k[5:-5] not in ROLES]
    assert all(is_temp_name(Path(k).name) for k in stray), stray


def _allowed_views(p: Prepared) -> list[View]:
    allowed = [
        View(OLD, p.versions_before),
        View(p.scenario.content_after, p.versions_after),
    ]
    if p.scenario.rotated:  # root.json is published last: the new files under the old root
        allowed.append(View(OLD, {**p.versions_after, "root": p.versions_before["root"]}))
    return allowed


def _check_final(p: Prepared, repo: Path, url: str, saw_new: bool, label: str) -> None:
    final = tree_bytes(repo)
    leftovers = [k for k in final if k.startswith(TXN) or is_temp_name(Path(k).name)]
    assert not leftovers, f"{label}: left after recovery: {leftovers}"
    root = json.loads(final["repository/root.json"])["signed"]
    versions = _versions(repo / "repository")
    applied = versions["targets"] != p.versions_before["targets"] or (
        p.scenario.command[0] == "timestamp"
        and versions["timestamp"] == p.versions_before["timestamp"] + 2
    )
    ts = "repository/timestamp.json"
    if applied:
        assert sorted(final) == sorted(p.reference_final), (
            f"{label}: file names differ from a clean run"
        )
        for name, data in p.before.items():
            if name != ts and p.reference.get(name) == data:
                assert final[name] == data, f"{label}: {name} changed, a clean run keeps it"
        for name, data in p.reference.items():
            if name != ts and name in p.before and p.before[name] != data:
                assert final[name] != p.before[name], f"{label}: {name} is not the new one"
        expected = {**p.versions_after, "timestamp": p.versions_after["timestamp"] + 1}
        content = p.scenario.content_after
    else:
        assert not saw_new, f"{label}: a client saw the new state, then it was rolled back"
        assert {k: v for k, v in final.items() if k != ts} == {
            k: v for k, v in p.before.items() if k != ts
        }, f"{label}: neither the old nor the new state"
        expected = {**p.versions_before, "timestamp": p.versions_before["timestamp"] + 1}
        content = OLD
    if p.scenario.rotated:
        assert _check_key_file(p, final, root, p.scenario.rotated) == applied, label
    assert versions == expected, f"{label}: versions {versions}, expected {expected}"
    with_client = client_view(url, p.root_v1, repo.parent / "final-client")
    assert with_client == View(content, expected), label


def sweep(runner: CommandRunner, p: Prepared, ops: tuple[str, ...], tmp: Path) -> dict[str, int]:
    """Kill at every k in 1..N, before and after; check each point. Returns tallies."""
    n = p.n[ops]
    assert n >= 1
    s = p.scenario
    tally: dict[str, int] = {}
    work = tmp / "work"
    with serve(work / "repository") as url:
        for when in ("before", "after"):
            for k in range(1, n + 1):
                label = f"{s.name}: killed {when} {'/'.join(ops)} #{k} of {n}"
                for d in (work, tmp / "final-client", tmp / "fresh-client"):
                    if d.exists():
                        shutil.rmtree(d)
                shutil.copytree(p.template, work)
                killed = runner.run(
                    argv_of(s, work, p.binary), TEST_PASSPHRASES, kill=Kill(k, when, ops)
                )
                assert killed.rc == KILLED, (label, killed.rc, killed.stderr)
                crashed = tree_bytes(work)
                phase = _phase(work)

                # (a) what a client may see, before any recovery
                assert dangling_references(work / "repository") == [], label
                _check_keys_at_crash(p, crashed)
                allowed = _allowed_views(p)
                try:
                    cached = cached_client_view(url, p.cached_client, tmp / "cached-client")
                except Exception as exc:
                    raise AssertionError(
                        f"{label}: a client holding the old state failed: {exc!r}"
                    ) from exc
                assert cached in allowed, (
                    f"{label}: a client holding the old state saw {cached.versions}"
                )
                saw_new = cached != allowed[0]
                try:
                    fresh: View | None = client_view(url, p.root_v1, tmp / "fresh-client")
                except Exception as exc:
                    # Fixed names (no consistent snapshots): between the commit's back-to-back
                    # renames a new client may see targets.json and timestamp.json disagree.
                    if s.consistent or phase != "committing":
                        raise AssertionError(f"{label}: a new client failed: {exc!r}") from exc
                    fresh = None
                    tally["new client saw a half-published commit"] = (
                        tally.get("new client saw a half-published commit", 0) + 1
                    )
                if fresh is not None:
                    assert fresh in allowed, f"{label}: a new client saw {fresh.versions}"
                    saw_new = saw_new or fresh != allowed[0]

                # (b) the next command recovers on its own, then the repository is old or new
                trace = tmp / "next.trace"
                trace.unlink(missing_ok=True)
                stderr = _run_ok(runner, ["updates", "timestamp", "--path", str(work)], trace=trace)
                if phase is not None:
                    assert "interrupted" in stderr, (label, stderr)
                assert undurable_renames(read_trace(trace)) == [], label
                _check_final(p, work, url, saw_new, label)
                status = runner.run(["updates", "status", "--path", str(work)], TEST_PASSPHRASES)
                assert status.rc == 0 and "warning" not in status.stdout, (label, status.stdout)
                outcome = (
                    "rolled forward"
                    if _versions(work / "repository")
                    != {**p.versions_before, "timestamp": p.versions_before["timestamp"] + 1}
                    else "old state"
                )
                tally[outcome] = tally.get(outcome, 0) + 1
    return tally


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_kill_at_every_rename(runner, prepare, scenario: Scenario, tmp_path: Path) -> None:
    p = prepare(scenario)
    tally = sweep(runner, p, ("replace", "rename"), tmp_path)
    print(scenario.name, p.n, tally)
    # Both outcomes occur: early kills roll back, kills inside the commit roll forward.
    assert tally.get("old state") and tally.get("rolled forward"), tally


@pytest.mark.parametrize("scenario", LINK_SWEEP, ids=lambda s: s.name)
def test_kill_at_every_link_and_unlink(runner, prepare, scenario: Scenario, tmp_path: Path) -> None:
    p = prepare(scenario)
    tally = sweep(runner, p, ("link", "unlink"), tmp_path)
    print(scenario.name, p.n, tally)


# -- what a power cut would lose: the order of fsyncs and renames -------------------------------
def _is_journal_step(e: Event) -> bool:
    """The journal's state.json replaced (a new phase) or removed (the command is done)."""
    target = e.dst if e.op in ("replace", "rename") else e.path if e.op == "unlink" else None
    return target is not None and target.endswith(f"/{TXN}/state.json")


def _parent(path: str | None) -> str:
    return str(Path(str(path)).parent)


def _in_journal(path: str) -> bool:
    return f"/{TXN}/" in path + "/"


def unsynced_renames(events: list[Event]) -> list[str]:
    """Files renamed (so made visible under their final name) before their content was fsynced,
    or with bytes written after their last fsync (still in a user-space buffer when it ran):
    after a power cut the name may point to an empty or partial file."""
    synced: dict[int, int | None] = {}  # inode -> its size at its last fsync
    problems = []
    for e in events:
        if e.op == "fsync" and not e.dir and e.ino is not None:
            synced[e.ino] = e.size
        elif e.op in ("replace", "rename"):
            if e.ino not in synced:
                problems.append(f"{e.src} -> {e.dst} renamed before its content was fsynced")
            elif synced[e.ino] != e.size:
                problems.append(
                    f"{e.src} -> {e.dst} renamed with {e.size} bytes, {synced[e.ino]} of them "
                    "fsynced"
                )
            if e.old is not None:
                synced.pop(e.old, None)  # that inode is gone; its number may be reused
        elif e.op == "unlink" and e.ino is not None:
            synced.pop(e.ino, None)
    return problems


def undurable_renames(events: list[Event]) -> list[str]:
    """Renames and links whose directory is not fsynced after them before the journal moves on
    (a new phase, or its removal) or the command ends: a power cut could lose the rename after
    the journal says it happened."""
    pending: dict[str, Event] = {}
    problems: list[str] = []

    def flush(why: str) -> None:
        problems.extend(
            f"{e.op} {e.src} -> {e.dst}: {_parent(e.dst)} not fsynced {why}"
            for e in pending.values()
        )
        pending.clear()

    for e in events:
        if e.op == "fsync" and e.dir and e.path is not None:
            pending.pop(e.path, None)
            continue
        if _is_journal_step(e):
            flush(f"before the journal step {e.op} {e.dst or e.path}")
        if e.op in ("replace", "rename", "link"):
            pending.setdefault(_parent(e.dst), e)
    flush("before the command ended")
    return problems


def undurable_directories(events: list[Event]) -> list[str]:
    """Directories created without fsyncing their parent in time: the journal directory before
    anything is published from it, directories in repository/ before the journal goes."""
    problems = []
    for i, e in enumerate(events):
        if e.op != "mkdir" or e.exists or e.path is None:
            continue
        parent = _parent(e.path)
        journal = _in_journal(e.path)
        for later in events[i + 1 :]:
            if later.op == "fsync" and later.dir and later.path == parent:
                break
            published = later.op in ("replace", "rename") and not _in_journal(str(later.dst))
            removed = later.op == "unlink" and _is_journal_step(later)
            if (journal and published) or removed:
                problems.append(
                    f"{e.path} created, {parent} not fsynced before {later.op} {later.dst or later.path}"
                )
                break
        else:
            problems.append(f"{e.path} created, {parent} never fsynced")
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_each_file_is_fsynced_before_its_rename_and_its_directory_after(
    prepare, scenario: Scenario
) -> None:
    """On the reference run's trace (a fresh `python -m packager`)."""
    p = prepare(scenario)
    assert any(e.op == "fsync" for e in p.trace)
    assert unsynced_renames(p.trace) == []
    assert undurable_renames(p.trace) == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_new_directories_are_durable(prepare, scenario: Scenario) -> None:
    p = prepare(scenario)
    assert any(e.op == "mkdir" and not e.exists for e in p.trace)
    assert undurable_directories(p.trace) == []


# -- init ---------------------------------------------------------------------------------------
INIT_OPS = ("replace", "rename", "mkdir", "unlink")


def test_init_killed_anywhere_can_be_run_again(runner, tmp_path: Path) -> None:
    """`updates init` killed before or after any of its renames, mkdirs and unlinks: running
    `init` again finishes the job (or says it is done), and the repository is whole. A rolled
    back init must not leave its empty `keys/` behind (the next init would refuse it)."""
    trace = tmp_path / "trace"
    clean = tmp_path / "clean"
    _run_ok(runner, ["updates", "init", "--path", str(clean)], trace=trace, ops=INIT_OPS)
    total = counted(read_trace(trace), INIT_OPS)
    assert total >= 10
    for k in range(1, total + 1):
        for when in ("before", "after"):
            repo = tmp_path / f"r{k}{when[0]}"
            killed = runner.run(["updates", "init", "--path", str(repo)], TEST_PASSPHRASES,
                                kill=Kill(k, when, INIT_OPS))  # fmt: skip
            assert killed.rc == KILLED, (k, when, killed.stderr)
            again = runner.run(["updates", "init", "--path", str(repo)], TEST_PASSPHRASES)
            done = again.rc == 0 or "already initialized" in again.stderr
            assert done, (k, when, again.rc, again.stderr)
            status = runner.run(["updates", "status", "--path", str(repo)], TEST_PASSPHRASES)
            assert status.rc == 0, (k, when, status.stdout, status.stderr)
            assert sorted(p.name for p in (repo / "keys").iterdir()) == [
                f"{r}.json" for r in sorted(ROLES)
            ], (k, when)
