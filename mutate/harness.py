"""Run the mutant catalogue against the mapped tests and report the kill rate per package.

A run starts from a snapshot of the project (the working tree, or ``--rev`` through ``git
archive``): mutants are generated from it and each worker owns a private copy of it, so edits
made to the checkout during a long run never mix in. For one mutant a worker writes the mutated
file into its copy, runs ``nice -n 19 python -m pytest -x -q -p no:cacheprovider --timeout=120
<tests>`` there, and puts the original bytes back. ``PYTHONPATH`` names the copy, so the tests
and every ``python -m packager`` they start import the mutated code, never the checkout. Byte
code goes to a per-worker ``PYTHONPYCACHEPREFIX``, and the mutated module's entry is deleted
before and after each run (a same-size mutant written within the second of the original would
otherwise run the stale .pyc).

Which tests: the reviewed map (``mutate/testmap.py``) names the test files for each source
file. When ``.mutate-cache/coverage.json`` (``python -m mutate.derive_map``) holds an exact
measurement of a mapped test file against this version of the source file, only the tests that
executed the mutated lines run: single tests where a line ran inside a test; for a line run
while setting up a module, class or session fixture, every test of the file sharing that
fixture (they all depend on what it built); the whole file where a line ran outside any test
(imports while collecting). A mutant no mapped test executes is a survivor without any run
(``uncovered``). ``--no-coverage`` runs every mapped file for every mutant.

Outcomes: ``killed`` (a test failed or errored, collection included), ``timeout`` (a test or the
whole run exceeded its limit: counted as killed and listed, an endless loop is a detected
failure), ``survived`` (every selected test passed), ``uncovered`` (see above), ``error``
(pytest itself failed: not scored, printed). A kill counts only if the test that failed passes
on the unmutated snapshot: the first time a test kills, it runs once without the mutant; a test
that fails anyway is deselected from then on (listed in the report) and the mutant runs again.

Results are cached in ``.mutate-cache/results/`` keyed by (sha256 of the file, mutant id,
sha256 of the mapped test files and of the shared test code), so a re-run only redoes what
changed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from mutate import testmap
from mutate.operators import Mutant, mutants_for

HARNESS_VERSION = "3"  # 3: fixture set-up stands for every test sharing the fixture
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    ".mutate-cache",
    "dist",
    "build",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)
KILLED, TIMEOUT, SURVIVED, ERROR = "killed", "timeout", "survived", "error"
UNCOVERED = "uncovered"  # no mapped test executes the mutated lines: a survivor, never run
PER_TEST_TIMEOUT = 120


@dataclass
class Config:
    root: Path
    groups: dict[str, tuple[str, ...]]
    tests: dict[str, tuple[str, ...]]
    support_files: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)
    # Tests coverage cannot see (their work runs in children that are SIGKILLed, which never
    # write coverage data): selected for every mutant of the module.
    blind: dict[str, tuple[str, ...]] = field(default_factory=dict)
    markers: str = testmap.PYTEST_MARKERS
    equivalent_file: Path | None = None
    cache_dir: Path | None = None
    python: str = sys.executable


@dataclass
class Result:
    mutant: Mutant
    status: str
    seconds: float
    detail: str = ""
    cached: bool = False
    equivalent: str | None = None  # the reviewed reason, when listed in equivalent.txt
    ran: int = 0  # pytest arguments run (a test or a whole file)
    selected: int = 0  # of how many selected: fewer when --max-tests cut the list


@dataclass
class Selection:
    """Coverage of one source file by one test file: line -> test ids (None: whole file)."""

    nodes: list[str]
    lines: dict[str, list[int]]
    seconds: float  # the whole file, measured under coverage
    durations: list[float] = field(default_factory=list)  # per node, under coverage

    def for_lines(self, test: str, lines: Sequence[int]) -> list[str]:
        """The file, the tests of it that ran ``lines`` (quickest first), or nothing."""
        found: set[int] = set()
        for n in lines:
            found.update(self.lines.get(str(n), []))
        if not found:
            return []
        if -1 in found:
            return [test]
        return [self.nodes[i] for i in sorted(found, key=lambda i: (self._duration(i), i))]

    def _duration(self, index: int) -> float:
        return self.durations[index] if index < len(self.durations) else 0.0

    def seconds_of(self, arg: str) -> float:
        if "::" not in arg:
            return self.seconds
        return self._duration(self.nodes.index(arg)) if arg in self.nodes else self.seconds


@dataclass
class Plan:
    path: str
    group: str
    tests: tuple[str, ...]
    all_mutants: list[Mutant]
    mutants: list[Mutant]  # after --operator, sampling and --limit
    file_sha: str
    tests_sha: str
    coverage: dict[str, Selection] = field(default_factory=dict)  # exact measurements only
    # A template has no coverage of its own: the lines of the module that renders it stand in.
    proxy_lines: tuple[int, ...] = ()
    blind: tuple[str, ...] = ()  # selected whatever coverage says (Config.blind)

    # line -> first line of the innermost statement holding it (coverage's unit)
    statement_of: dict[int, int] = field(default_factory=dict)
    # every statement's full extent (first, last line), body included
    spans: list[tuple[int, int]] = field(default_factory=list)

    def _units(self, lines: Sequence[int]) -> list[int]:
        return sorted({self.statement_of.get(n, n) for n in lines})

    def tests_for(self, mutant: Mutant) -> list[str]:
        """pytest arguments (files or test ids) for ``mutant``, sharpest first (see _score)."""
        lines = self.proxy_lines or self._units(mutant.lines)
        found: list[str] = []
        for t in self.tests:
            sel = self.coverage.get(t)
            found += [t] if sel is None else sel.for_lines(t, lines)
        score = self._score(mutant)
        index = {a: i for i, a in enumerate(found)}
        ranked = sorted(found, key=lambda a: (-score.get(a, 0.0), index[a]))
        # A blind node whose file also runs whole is left out: pytest collects a file once, so
        # ``file::node`` before ``file`` would run only that node of the file. The file then
        # leads in its place.
        blind = [b for b in self.blind if b not in ranked and b.split("::")[0] not in ranked]
        lead = self.leading()
        whole = [a for a in ranked if a in lead]
        return [*blind, *whole, *(a for a in ranked if a not in lead)]

    def leading(self) -> set[str]:
        """The blind nodes and their files: they run first whatever the scores (coverage, which
        the scores come from, cannot see what they test)."""
        return {*self.blind, *(b.split("::")[0] for b in self.blind)}

    def ordered(self, mutant: Mutant, kills: dict[str, int]) -> list[str]:
        """The mutant's tests, sharpest first; among equals, one test of each file in turn (a
        line every test runs would otherwise fill --max-tests with the first files' tests, and
        the test that checks it sits in a later file), files that killed this module's mutants
        before first (``kills``: test file -> mutants killed) in each turn. The blind tests lead:
        scored 0 by coverage, they once sorted after 25 others and never ran for the
        transaction.py mutants they kill."""
        args = self.tests_for(mutant)
        lead = self.leading()
        first = [a for a in args if a in lead]
        args = [a for a in args if a not in lead]
        score = self._score(mutant)
        index = {a: i for i, a in enumerate(args)}
        turn: dict[str, int] = {}
        seen: dict[tuple[float, str], int] = {}
        for a in sorted(args, key=lambda a: (-round(score.get(a, 0.0), 6), index[a])):
            group = (round(score.get(a, 0.0), 6), a.split("::")[0])
            turn[a] = seen.get(group, 0)
            seen[group] = turn[a] + 1
        return first + sorted(
            args,
            key=lambda a: (
                -round(score.get(a, 0.0), 6),
                turn[a],
                -kills.get(a.split("::")[0], 0),
                index[a],
            ),
        )

    def _score(self, mutant: Mutant) -> dict[str, float]:
        """How specifically each test ran the code around the mutant.

        The neighbourhood is the innermost statement holding the mutant, body included (an
        ``if`` and the ``raise`` under it). Each of its lines a test ran adds 1/(how many tests
        ran that line): a test that takes the rare branch next to the mutant -- the one that
        makes a guard fire -- comes before the hundred that merely pass through it.
        """
        if self.proxy_lines:
            return {}
        first, last = mutant.line, max(mutant.line, mutant.end_line)
        inner = [(a, b) for a, b in self.spans if a <= first and last <= b]
        if inner:
            first, last = max(inner)  # the latest start is the innermost
        units = self._units(range(first, last + 1))
        runs: dict[int, list[str]] = {}
        for t in self.tests:
            sel = self.coverage.get(t)
            if sel is None:
                continue
            for u in units:
                for i in sel.lines.get(str(u), []):
                    runs.setdefault(u, []).append(t if i < 0 else sel.nodes[i])
        score: dict[str, float] = {}
        for tests in runs.values():
            for a in set(tests):
                score[a] = score.get(a, 0.0) + 1.0 / len(set(tests))
        return score

    def expected_seconds(self, args: Sequence[str]) -> float:
        """What ``args`` took under coverage (an unmeasured file counts ten minutes)."""
        total = 0.0
        for a in args:
            sel = self.coverage.get(a.split("::", 1)[0])
            total += sel.seconds_of(a) if sel is not None else 600.0
        return total


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sample(mutants: list[Mutant], cap: int, seed: str) -> list[Mutant]:
    """At most ``cap`` mutants, chosen by a seeded hash of their ids, kept in source order."""
    if cap <= 0 or len(mutants) <= cap:
        return mutants
    ranked = sorted(mutants, key=lambda m: _sha256(f"{seed}:{m.path}:{m.id}".encode()))
    chosen = {m.id for m in ranked[:cap]}
    return [m for m in mutants if m.id in chosen]


def load_equivalents(path: Path | None) -> dict[tuple[str, int, str], str]:
    """``path:line:operator reason`` per line; ``#`` starts a comment line."""
    out: dict[tuple[str, int, str], str] = {}
    if path is None or not path.exists():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, reason = line.partition(" ")
        parts = key.split(":")
        if len(parts) != 3 or not parts[1].isdigit():
            raise SystemExit(f"{path}: malformed line (want path:line:operator reason): {raw}")
        out[(parts[0], int(parts[1]), parts[2])] = reason.strip()
    return out


def load_coverage(path: Path | None) -> dict[str, dict[str, object]]:
    if path is None or not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8")).get("tests", {})
    return cast("dict[str, dict[str, object]]", raw) if isinstance(raw, dict) else {}


def _selection(
    coverage: dict[str, dict[str, object]], test: str, test_sha: str, module: str, module_sha: str
) -> Selection | None:
    """The measurement of ``test`` over ``module`` if both are still what was measured."""
    entry = coverage.get(test)
    if not entry or entry.get("sha") != test_sha:
        return None
    scope = cast("dict[str, str]", entry.get("scope", {}))
    if scope.get(module) != module_sha:
        return None
    lines = cast("dict[str, object]", entry.get("lines", {}))
    per_line = lines.get(module, {})
    if not isinstance(per_line, dict):  # an older format
        return None
    return Selection(
        nodes=cast("list[str]", entry.get("nodes", [])),
        lines=per_line,
        seconds=float(cast("float", entry.get("seconds", 600.0))),
        durations=cast("list[float]", entry.get("durations", [])),
    )


class Snapshot:
    """A frozen copy of the project every mutant starts from: the working tree, or a commit."""

    def __init__(self, config: Config, parent: Path, rev: str | None = None) -> None:
        self.dir = parent / "snapshot"
        if rev is None:
            shutil.copytree(config.root, self.dir, ignore=_COPY_IGNORE, symlinks=True)
        else:
            self.dir.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "-C", str(config.root), "archive", "--format=tar", rev],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", str(self.dir)], input=archive.stdout, check=True)
        for link, target in config.links.items():
            dest = self.dir / link
            if not dest.exists() and not dest.is_symlink():
                dest.symlink_to(target)

    def tree_sha(self) -> str:
        """Of every file in the snapshot: whether a test passes holds for exactly this tree."""
        h = hashlib.sha256()
        for p in sorted(self.dir.rglob("*")):
            if p.is_file() and not p.is_symlink():
                h.update(p.relative_to(self.dir).as_posix().encode() + b"\0")
                h.update(_sha256(p.read_bytes()).encode())
        return h.hexdigest()


class Workspace:
    """A private copy of the snapshot that one worker thread mutates, one file at a time."""

    def __init__(self, config: Config, snapshot: Path, parent: Path, index: int) -> None:
        self.config = config
        self.dir = parent / f"w{index}"
        self.tree = self.dir / "tree"
        self.pycache = self.dir / "pycache"
        self.tmp = self.dir / "tmp"
        shutil.copytree(snapshot, self.tree, symlinks=True)
        self.pycache.mkdir()

    def env(self) -> dict[str, str]:
        # Byte code is written, but only below this worker's prefix: the copy's imports stay
        # fast, and the mutated module's entry is deleted around each run (see mutated()).
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE"}
        }
        env["PYTHONPATH"] = str(self.tree)
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        return env

    def _drop_pyc(self, rel: str) -> None:
        source = (self.tree / rel).resolve()
        cached = self.pycache / source.parent.relative_to(source.anchor)
        for pyc in cached.glob(f"{source.stem}.*.pyc"):
            with contextlib.suppress(FileNotFoundError):
                pyc.unlink()

    @contextlib.contextmanager
    def mutated(self, rel: str, data: bytes) -> Iterator[None]:
        target = self.tree / rel
        original = target.read_bytes()
        self._drop_pyc(rel)
        target.write_bytes(data)
        try:
            yield
        finally:
            target.write_bytes(original)
            self._drop_pyc(rel)
            shutil.rmtree(self.tree / ".hypothesis", ignore_errors=True)

    def pytest(
        self,
        args: Sequence[str],
        timeout: float,
        *,
        deselect: Sequence[str] = (),
        collect_only: bool = False,
    ) -> tuple[str, float, str, list[str]]:
        """Run pytest; returns (status, seconds, first failure line, failing test ids)."""
        cmd = [
            "nice",
            "-n",
            "19",
            self.config.python,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--timeout={PER_TEST_TIMEOUT}",
            f"--basetemp={self.tmp}",
            "-m",
            self.config.markers,
            *(["--collect-only"] if collect_only else []),
            *(f"--deselect={d}" for d in deselect),
            *args,
        ]
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=self.tree,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return TIMEOUT, time.monotonic() - start, f"the run took over {timeout:.0f}s", []
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elapsed = time.monotonic() - start
        text = out.decode(errors="replace")
        failing = _failing(text)
        first = next(iter(failing.values()), "")
        if proc.returncode == 0:
            return SURVIVED, elapsed, "", []
        if proc.returncode in (1, 2):  # failed tests; collection error (the mutant broke import)
            if "Timeout" in first:
                return TIMEOUT, elapsed, first, list(failing)
            return KILLED, elapsed, first or text[-300:], list(failing)
        return ERROR, elapsed, f"pytest exit {proc.returncode}: {text[-2000:]}", []


def _failing(output: str) -> dict[str, str]:
    """Test id -> summary line of every FAILED/ERROR line of pytest's short summary."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            nodeid = line.split(" ", 1)[1].split(" - ", 1)[0].strip()
            found.setdefault(nodeid, line[:300])
    return found


class Runner:
    def __init__(
        self,
        config: Config,
        snapshot: Snapshot,
        jobs: int,
        *,
        progress: bool = True,
        use_cache: bool = True,
        max_tests: int = 0,
        escalate_seconds: float = 0.0,
    ) -> None:
        self.config = config
        # Reviewed equivalents still run (a kill shows the entry is stale), never escalated.
        self.equivalents = set(load_equivalents(config.equivalent_file))
        self.snapshot = snapshot
        self.max_tests = max_tests  # run at most this many selected tests per mutant (0: all)
        # A survivor of the first max_tests runs the rest of its tests, up to this many expected
        # seconds: the test that kills a mutant on a line every test runs often sits far down.
        self.escalate_seconds = escalate_seconds
        self.jobs = max(1, jobs)
        self.progress = progress
        self.use_cache = use_cache  # False: run everything again (results are still stored)
        self.cache = config.cache_dir
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        # Which test file killed this module's mutants so far (this run and, through
        # kills.json, earlier ones): it runs first next time.
        self._kills: dict[str, dict[str, int]] = self._load_kills()
        self._tree_sha = ""
        self._verified: dict[str, bool] = {}  # test id -> passes without any mutant
        self._verify_locks: dict[str, threading.Lock] = {}
        self.broken: dict[str, str] = {}  # tests failing without any mutant -> why

    # -- cache --------------------------------------------------------------------------------
    def _key(self, plan: Plan, mutant_id: str, max_tests: int = 0) -> str:
        budget = f"+{self.escalate_seconds:g}" if max_tests and self.escalate_seconds else ""
        blind = f"|{','.join(plan.blind)}" if plan.blind else ""  # a new selection, a new result
        return _sha256(
            f"{HARNESS_VERSION}|{plan.path}|{plan.file_sha}|{mutant_id}|{plan.tests_sha}"
            f"|{max_tests}{budget}{blind}".encode()
        )

    def _load_kills(self) -> dict[str, dict[str, int]]:
        if self.cache is None:
            return {}
        try:
            data = json.loads((self.cache / "kills.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(module): {str(t): int(n) for t, n in per.items() if isinstance(n, int)}
            for module, per in data.items()
            if isinstance(per, dict)
        }

    def save_kills(self) -> None:
        if self.cache is None:
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".kills.{os.getpid()}.tmp"
        with self._lock:
            tmp.write_text(json.dumps(self._kills, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.cache / "kills.json")

    def _cached(self, key: str) -> dict[str, object] | None:
        if self.cache is None or not self.use_cache:
            return None
        path = self.cache / "results" / f"{key}.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _store(self, key: str, value: dict[str, object]) -> None:
        if self.cache is None:
            return
        folder = self.cache / "results"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, folder / f"{key}.json")

    # -- running ------------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def _ordered(self, plan: Plan, mutant: Mutant) -> list[str]:
        with self._lock:
            kills = dict(self._kills.get(plan.path, {}))
        return plan.ordered(mutant, kills)

    def _escalation(self, plan: Plan, selected: list[str], done: int) -> list[str]:
        """The tests after the first ``done`` worth running for a survivor: files that killed
        this module's mutants before first, then in order, within --escalate-seconds."""
        rest = selected[done:]
        if not rest or not self.max_tests or self.escalate_seconds <= 0:
            return []
        with self._lock:
            kills = dict(self._kills.get(plan.path, {}))
        index = {a: i for i, a in enumerate(rest)}
        rest.sort(key=lambda a: (-kills.get(a.split("::")[0], 0), index[a]))
        chosen: list[str] = []
        budget = self.escalate_seconds
        for a in rest:
            cost = plan.expected_seconds([a])
            if cost <= budget:
                chosen.append(a)
                budget -= cost
        return chosen

    def _credit(self, plan: Plan, nodeid: str) -> None:
        test_file = nodeid.split("::", 1)[0]
        with self._lock:
            per = self._kills.setdefault(plan.path, {})
            per[test_file] = per.get(test_file, 0) + 1

    def _passes_unmutated(self, ws: Workspace, nodeid: str) -> bool:
        """Whether ``nodeid`` passes on the snapshot (run once per test, cached by tree)."""
        with self._lock:
            if nodeid in self._verified:
                return self._verified[nodeid]
            lock = self._verify_locks.setdefault(nodeid, threading.Lock())
        with lock:
            with self._lock:
                if nodeid in self._verified:
                    return self._verified[nodeid]
            key = _sha256(f"{HARNESS_VERSION}|unmutated|{nodeid}|{self._tree_sha}".encode())
            hit = self._cached(key)
            if hit is not None:
                ok = bool(hit["ok"])
                detail = str(hit.get("detail", ""))
            else:
                # A collection error names a file: collecting it is the check, not running it.
                status, _, detail, _ = ws.pytest(
                    [nodeid], timeout=3600, collect_only="::" not in nodeid
                )
                ok = status == SURVIVED
                if status != ERROR:
                    self._store(key, {"ok": ok, "detail": detail})
            with self._lock:
                self._verified[nodeid] = ok
                if not ok:
                    self.broken[nodeid] = detail or "fails without any mutant"
            if not ok:
                self._log(f"deselected (fails without any mutant): {nodeid}")
            return ok

    def _run_mutant(self, plan: Plan, mutant: Mutant, ws: Workspace) -> Result:
        source = (self.snapshot.dir / plan.path).read_bytes()
        mutated = mutant.apply(source)
        for _ in range(5):  # each retry deselects one test that fails without the mutant
            with self._lock:
                deselect = [b for b in self.broken if b.split("::")[0] in plan.tests]
            selected = [a for a in self._ordered(plan, mutant) if a not in self.broken]
            if not selected:
                return Result(mutant, SURVIVED, 0.0, "every selected test fails unmutated")
            args = selected[: self.max_tests] if self.max_tests else selected
            limit = max(300.0, 3 * plan.expected_seconds(args) + 120)
            with ws.mutated(plan.path, mutated):
                status, seconds, detail, failing = ws.pytest(args, limit, deselect=deselect)
                reviewed = (mutant.path, mutant.line, mutant.operator) in self.equivalents
                more = [] if reviewed else self._escalation(plan, selected, len(args))
                ran = len(args)
                if status == SURVIVED and more:
                    self._log(
                        f"escalate: {mutant.path}:{mutant.line} survived {ran} tests; "
                        f"{len(more)} more"
                    )
                    limit = max(300.0, 3 * plan.expected_seconds(more) + 120)
                    status, extra, detail, failing = ws.pytest(more, limit, deselect=deselect)
                    seconds += extra
                    ran += len(more)
            if status == KILLED and failing and not self._passes_unmutated(ws, failing[0]):
                continue
            if status in (KILLED, TIMEOUT) and failing:
                self._credit(plan, failing[0])
            return Result(mutant, status, seconds, detail, ran=ran, selected=len(selected))
        return Result(mutant, ERROR, 0.0, "too many tests fail without any mutant")

    def _lookup(self, plan: Plan, mutant: Mutant) -> Result | None:
        """A cached result: a complete one, else one that ran at least --max-tests tests."""
        for k in (0, self.max_tests) if self.max_tests else (0,):
            hit = self._cached(self._key(plan, mutant.id, k))
            if hit is not None:
                return Result(
                    mutant,
                    str(hit["status"]),
                    float(str(hit["seconds"])),
                    str(hit.get("detail", "")),
                    cached=True,
                    ran=int(str(hit.get("ran", 0))),
                    selected=int(str(hit.get("selected", 0))),
                )
        return None

    def _save(self, plan: Plan, result: Result) -> None:
        """A kill, or a survivor that ran every selected test, holds whatever --max-tests."""
        complete = result.status != SURVIVED or result.ran >= result.selected
        self._store(
            self._key(plan, result.mutant.id, 0 if complete else self.max_tests),
            {
                "status": result.status,
                "seconds": result.seconds,
                "detail": result.detail,
                "ran": result.ran,
                "selected": result.selected,
            },
        )

    def run(self, plans: list[Plan]) -> list[Result]:
        work = [(p, m) for p in plans for m in p.mutants]
        self._total = len(work)
        results: list[Result] = []
        pending: list[tuple[Plan, Mutant]] = []
        for plan, mutant in work:
            if not plan.tests_for(mutant):
                results.append(Result(mutant, UNCOVERED, 0.0, "no mapped test executes it"))
                continue
            hit = self._lookup(plan, mutant)
            if hit is not None:
                results.append(hit)
            else:
                pending.append((plan, mutant))
        self._done = len(results)
        uncovered = sum(r.status == UNCOVERED for r in results)
        self._log(
            f"mutate: {self._total} mutants: {uncovered} on lines no mapped test executes, "
            f"{len(results) - uncovered} from the cache, {len(pending)} to run"
        )
        if not pending:
            return results
        self._tree_sha = self.snapshot.tree_sha()
        with tempfile.TemporaryDirectory(prefix="mutate-work-") as tmp:
            pool_size = min(self.jobs, len(pending))
            free: queue.Queue[Workspace] = queue.Queue()
            for i in range(pool_size):
                free.put(Workspace(self.config, self.snapshot.dir, Path(tmp), i))

            def one(item: tuple[Plan, Mutant]) -> Result:
                plan, mutant = item
                ws = free.get()
                try:
                    result = self._run_mutant(plan, mutant, ws)
                finally:
                    free.put(ws)
                if result.status != ERROR:
                    self._save(plan, result)
                with self._lock:
                    self._done += 1
                    done = self._done
                self._log(
                    f"[{done}/{self._total}] {result.status:8} {mutant.path}:{mutant.line} "
                    f"{mutant.operator} ({result.seconds:.1f}s)"
                )
                return result

            try:
                with ThreadPoolExecutor(max_workers=pool_size) as pool:
                    results.extend(pool.map(one, pending))
            finally:
                self.save_kills()
        return results


# -- planning -------------------------------------------------------------------------------------
def statement_spans(source: bytes) -> list[tuple[int, int]]:
    return sorted(
        (n.lineno, n.end_lineno or n.lineno)
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.stmt)
    )


def statement_lines(source: bytes) -> dict[int, int]:
    """Each line of a Python file -> the first line of the innermost statement spanning it.

    Coverage reports a statement by its first line only, so a mutant on the third line of a
    multi-line condition is selected by the tests that ran the condition's first line.
    """
    out: dict[int, int] = {}
    spans: list[tuple[int, int]] = []
    for n in ast.walk(ast.parse(source)):
        if not isinstance(n, ast.stmt):
            continue
        end = n.end_lineno or n.lineno
        body = getattr(n, "body", None)
        if isinstance(body, list) and body:  # a compound statement owns its header only
            end = min(end, body[0].lineno - 1)
        spans.append((n.lineno, max(n.lineno, end)))
    for start, end in sorted(spans):  # later starts are inner: they overwrite enclosing ones
        for line in range(start, end + 1):
            out[line] = start
    return out


def _tests_sha(root: Path, config: Config, tests: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in [*sorted(tests), *config.support_files]:
        path = root / name
        h.update(name.encode() + b"\0")
        h.update(_sha256(path.read_bytes()).encode() if path.exists() else b"missing")
    h.update(config.markers.encode())
    return h.hexdigest()


def plan_mutants(
    config: Config,
    source_root: Path,
    *,
    modules: Sequence[str] = (),
    operators: Sequence[str] = (),
    cap: int = 0,
    seed: str = "0",
    limit: int = 0,
    coverage: dict[str, dict[str, object]] | None = None,
) -> list[Plan]:
    files = testmap.scope_files(source_root, config.groups)
    if modules:
        wanted = [m.rstrip("/") for m in modules]
        files = [f for f in files if any(f == w or f.startswith(w + "/") for w in wanted)]
    plans: list[Plan] = []
    for path in files:
        group = testmap.group_of(path, config.groups)
        if group is None:
            continue
        data = (source_root / path).read_bytes()
        found = mutants_for(path, data)
        if not found:
            continue
        tests = config.tests.get(path, ())
        chosen = [m for m in found if not operators or m.operator in operators]
        chosen = sample(chosen, cap, seed)
        measured, measured_data = path, data
        proxy_lines: tuple[int, ...] = ()
        proxy = testmap.template_proxy(source_root, path)
        if proxy is not None:
            measured, proxy_lines = proxy
            measured_data = (source_root / measured).read_bytes()
        selections: dict[str, Selection] = {}
        for t in tests if coverage and (proxy is not None or path.endswith(".py")) else ():
            test_path = source_root / t
            if not test_path.exists():
                continue
            if proxy is not None and t == testmap.GOLDEN_TESTS:
                # It renders templates directly, never through the proxy module's lines:
                # coverage would leave it out, yet it checks every line of every template.
                continue
            sel = _selection(
                coverage or {},
                t,
                _sha256(test_path.read_bytes()),
                measured,
                _sha256(measured_data),
            )
            if sel is not None:
                selections[t] = sel
        plans.append(
            Plan(
                path=path,
                group=group,
                tests=tuple(tests),
                all_mutants=found,
                mutants=chosen if tests else [],
                file_sha=_sha256(data),
                tests_sha=_tests_sha(source_root, config, tests),
                coverage=selections,
                proxy_lines=proxy_lines,
                blind=config.blind.get(path, ()) if tests else (),
                statement_of=statement_lines(data) if path.endswith(".py") else {},
                spans=statement_spans(data) if path.endswith(".py") else [],
            )
        )
    if limit > 0:  # a quick run: the first ``limit`` mutants, round-robin over the files
        left = limit
        taken = {p.path: 0 for p in plans}
        while left > 0 and any(taken[p.path] < len(p.mutants) for p in plans):
            for p in plans:
                if left > 0 and taken[p.path] < len(p.mutants):
                    taken[p.path] += 1
                    left -= 1
        for p in plans:
            p.mutants = p.mutants[: taken[p.path]]
    return plans


# -- reporting ------------------------------------------------------------------------------------
@dataclass
class Score:
    killed: int = 0
    total: int = 0  # killed + survived (equivalents and errors excluded)
    equivalent: int = 0
    errors: int = 0
    generated: int = 0
    planned: int = 0
    unmapped: int = 0
    uncovered: int = 0  # survivors no mapped test even executes

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0

    def line(self, name: str) -> str:
        text = f"{name}: killed {self.killed} of {self.total} ({self.percent:.1f}%)"
        notes = []
        if self.planned < self.generated:
            notes.append(f"sampled {self.planned} of {self.generated} mutants")
        if self.uncovered:
            notes.append(f"{self.uncovered} survivors on lines no test executes")
        if self.equivalent:
            notes.append(f"{self.equivalent} accepted equivalent")
        if self.errors:
            notes.append(f"{self.errors} errors")
        if self.unmapped:
            notes.append(f"{self.unmapped} mutants in files with no mapped tests, not run")
        return text + (f"  [{'; '.join(notes)}]" if notes else "")


def _describe(m: dict[str, object]) -> str:
    return f"{m['path']}:{m['line']}: {m['operator']}: {m['original']} -> {m['mutated']}"


def build_report(
    config: Config,
    plans: list[Plan],
    results: list[Result],
    *,
    broken: dict[str, str],
    settings: dict[str, object],
    seconds: float,
) -> dict[str, object]:
    equivalents = load_equivalents(config.equivalent_file)
    used: set[tuple[str, int, str]] = set()
    by_id = {(r.mutant.path, r.mutant.id): r for r in results}
    groups: dict[str, Score] = {}
    modules: dict[str, Score] = {}
    mutants_out: list[dict[str, object]] = []
    stale_equivalents: list[str] = []
    for plan in plans:
        g = groups.setdefault(plan.group, Score())
        m = modules.setdefault(plan.path, Score())
        for s in (g, m):
            s.generated += len(plan.all_mutants)
            s.planned += len(plan.mutants)
            if not plan.tests:
                s.unmapped += len(plan.all_mutants)
        for mutant in plan.mutants:
            r = by_id.get((plan.path, mutant.id))
            if r is None:
                continue
            key = (mutant.path, mutant.line, mutant.operator)
            if key in equivalents:
                used.add(key)
                if r.status in (SURVIVED, UNCOVERED):
                    r.equivalent = equivalents[key]
                else:
                    stale_equivalents.append(
                        f"{mutant.path}:{mutant.line}:{mutant.operator} listed as equivalent "
                        f"but {r.status}"
                    )
            for s in (g, m):
                if r.equivalent is not None:
                    s.equivalent += 1
                elif r.status == ERROR:
                    s.errors += 1
                else:
                    s.total += 1
                    s.killed += r.status in (KILLED, TIMEOUT)
                    s.uncovered += r.status == UNCOVERED
            mutants_out.append(
                {
                    "path": mutant.path,
                    "line": mutant.line,
                    "operator": mutant.operator,
                    "id": mutant.id,
                    "original": mutant.original,
                    "mutated": mutant.mutated,
                    "status": r.status,
                    "seconds": round(r.seconds, 2),
                    "cached": r.cached,
                    "detail": r.detail,
                    "equivalent": r.equivalent,
                    "ran": r.ran,
                    "selected": r.selected,
                }
            )
    scoped_paths = {p.path for p in plans}
    for key in equivalents:
        if key[0] in scoped_paths and key not in used:
            stale_equivalents.append(f"{key[0]}:{key[1]}:{key[2]} matches no mutant run")
    module_group = {plan.path: plan.group for plan in plans}
    return {
        "settings": settings,
        "seconds": round(seconds, 1),
        "groups": {name: vars(s) | {"percent": round(s.percent, 1)} for name, s in groups.items()},
        "modules": {
            name: vars(s) | {"percent": round(s.percent, 1), "group": module_group[name]}
            for name, s in modules.items()
        },
        "mutants": mutants_out,
        "deselected": broken,
        "stale_equivalents": stale_equivalents,
    }


def render_report(report: dict[str, object], threshold: float) -> tuple[str, bool]:
    """The text report and whether every group reached ``threshold`` percent."""
    lines: list[str] = []
    ok = True
    groups = cast("dict[str, dict[str, object]]", report["groups"])
    modules = cast("dict[str, dict[str, object]]", report["modules"])
    mutants = cast("list[dict[str, object]]", report["mutants"])
    settings = cast("dict[str, object]", report["settings"])

    def score(d: dict[str, object]) -> Score:
        s = Score()
        for k in vars(s):
            setattr(s, k, d[k])
        return s

    if settings.get("cap"):
        lines.append(
            f"(sampled: at most {settings['cap']} mutants per file, chosen by seed "
            f"{settings['seed']!r}; --max-per-module 0 runs them all)"
        )
    if settings.get("limit"):
        lines.append(f"(limited to {settings['limit']} mutants in all)")
    if settings.get("max_tests"):
        lines.append(
            f"(at most {settings['max_tests']} selected tests per mutant, sharpest first, "
            f"then for a survivor up to {settings.get('escalate_seconds', 0):g} s more of them; "
            "--max-tests 0 runs them all)"
        )
    for name, d in groups.items():
        s = score(d)
        lines.append(s.line(name))
        if s.total and s.percent < threshold:
            ok = False
        for mod, md in modules.items():
            if md["group"] == name and mod != name:
                lines.append("    " + score(md).line(mod))
    survivors = [
        m for m in mutants if m["status"] in (SURVIVED, UNCOVERED) and m["equivalent"] is None
    ]
    lines.append("")
    lines.append(f"survivors ({len(survivors)}; [not executed]: no mapped test runs the line):")
    for m in survivors:
        mark = "  [not executed]" if m["status"] == UNCOVERED else ""
        ran, selected = int(str(m.get("ran", 0))), int(str(m.get("selected", 0)))
        if m["status"] == SURVIVED and ran < selected:
            mark = f"  [ran {ran} of {selected} selected tests]"
        lines.append(_describe(m) + mark)
    timeouts = [m for m in mutants if m["status"] == TIMEOUT]
    if timeouts:
        lines.append("")
        lines.append(f"killed by a timeout ({len(timeouts)}; counted as killed, worth a look):")
        lines.extend(_describe(m) for m in timeouts)
    equivalent = [m for m in mutants if m["equivalent"] is not None]
    if equivalent:
        lines.append("")
        lines.append(f"accepted equivalent mutants ({len(equivalent)}, not scored):")
        lines.extend(f"{_describe(m)}  -- {m['equivalent']}" for m in equivalent)
    errors = [m for m in mutants if m["status"] == ERROR]
    if errors:
        lines.append("")
        lines.append(f"errors ({len(errors)}, not scored):")
        lines.extend(f"{_describe(m)}: {str(m['detail'])[:300]}" for m in errors)
    deselected = cast("dict[str, str]", report["deselected"])
    if deselected:
        lines.append("")
        lines.append("tests that fail without any mutant (deselected):")
        lines.extend(f"    {k}" for k in sorted(deselected))
    stale = cast("list[str]", report["stale_equivalents"])
    if stale:
        lines.append("")
        lines.append("equivalent.txt entries to review:")
        lines.extend(f"    {s}" for s in stale)
    lines.append("")
    lines.append(f"threshold {threshold:g}%: {'met' if ok else 'NOT met'}")
    return "\n".join(lines), ok


# -- command line -----------------------------------------------------------------------------
def default_config() -> Config:
    return Config(
        root=testmap.ROOT,
        groups=testmap.GROUPS,
        tests=testmap.TESTS,
        support_files=testmap.SUPPORT_FILES,
        links=testmap.LINKS,
        blind=testmap.BLIND,
        equivalent_file=testmap.ROOT / "mutate" / "equivalent.txt",
        cache_dir=testmap.ROOT / ".mutate-cache",
    )


def config_from_file(path: Path) -> Config:
    """A JSON description of another project (the harness's own smoke test uses one)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    root = (path.parent / raw.get("root", ".")).resolve()
    eq = raw.get("equivalent_file")
    return Config(
        root=root,
        groups={k: tuple(v) for k, v in raw["groups"].items()},
        tests={k: tuple(v) for k, v in raw["tests"].items()},
        support_files=tuple(raw.get("support_files", ())),
        links=dict(raw.get("links", {})),
        blind={k: tuple(v) for k, v in raw.get("blind", {}).items()},
        markers=raw.get("markers", testmap.PYTEST_MARKERS),
        equivalent_file=(root / eq) if eq else None,
        cache_dir=root / raw.get("cache_dir", ".mutate-cache"),
    )


def _unmapped_tests(config: Config, root: Path) -> list[str]:
    mapped = {t for tests in config.tests.values() for t in tests}
    found = {p.relative_to(root).as_posix() for p in (root / "tests").glob("test_*.py")}
    return sorted(found - mapped - testmap.EXCLUDED_TESTS - testmap.UNMAPPED_ON_PURPOSE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mutate", description="Mutation run over the packager's critical code."
    )
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--module", action="append", default=[], metavar="PATH", help="only this file or folder"
    )
    parser.add_argument(
        "--operator", action="append", default=[], metavar="NAME", help="only this operator"
    )
    parser.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N mutants in all (quick run)"
    )
    parser.add_argument(
        "--max-per-module",
        type=int,
        default=testmap.DEFAULT_CAP,
        metavar="N",
        help=f"sample at most N mutants per file, by --seed (default {testmap.DEFAULT_CAP}; "
        "0: all)",
    )
    parser.add_argument("--seed", default="0")
    parser.add_argument(
        "--max-tests",
        type=int,
        default=testmap.DEFAULT_MAX_TESTS,
        metavar="K",
        help="run at most K of a mutant's selected tests, sharpest first (0: all); a survivor "
        f"of a cut list is marked (default {testmap.DEFAULT_MAX_TESTS})",
    )
    parser.add_argument(
        "--escalate-seconds",
        type=float,
        default=testmap.DEFAULT_ESCALATE_SECONDS,
        metavar="S",
        help="a survivor of the first --max-tests tests runs the rest of its selected tests, "
        "files that killed this module's mutants before first, as many as fit in S expected "
        f"seconds (default {testmap.DEFAULT_ESCALATE_SECONDS:g}; 0: never)",
    )
    parser.add_argument("--threshold", type=float, default=90.0)
    parser.add_argument(
        "--report", type=Path, default=None, help="JSON report (default .mutate-cache/report.json)"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    parser.add_argument(
        "--no-coverage",
        action="store_true",
        help="run every mapped test file for every mutant (ignore .mutate-cache/coverage.json)",
    )
    parser.add_argument(
        "--rev", default=None, help="mutate this commit (git archive) instead of the working tree"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants; run nothing")
    parser.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    config = config_from_file(args.config) if args.config else default_config()
    cache_dir = config.cache_dir or config.root / ".mutate-cache"
    coverage = {} if args.no_coverage else load_coverage(cache_dir / "coverage.json")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        snapshot = Snapshot(config, Path(tmp), args.rev)
        plans = plan_mutants(
            config,
            snapshot.dir,
            modules=args.module,
            operators=args.operator,
            cap=args.max_per_module,
            seed=args.seed,
            limit=args.limit,
            coverage=coverage,
        )
        if args.list:
            for p in plans:
                tests = " ".join(p.tests)
                print(f"# {p.path}: {len(p.mutants)} of {len(p.all_mutants)} -> {tests}")
                for m in p.mutants:
                    selected = p.tests_for(m)
                    note = f"  [{len(selected)} tests/files]" if selected else "  [not executed]"
                    print(m.describe() + note)
            return 0
        if not args.config:
            for t in _unmapped_tests(config, snapshot.dir):
                print(f"note: {t} is in no entry of mutate/testmap.py", file=sys.stderr)
        stale = sorted(
            {(p.path, t) for p in plans if p.mutants and p.path.endswith(".py") for t in p.tests}
            - {(p.path, t) for p in plans for t in p.coverage}
        )
        if coverage and stale:
            print(
                f"note: coverage.json is out of date for {len(stale)} (module, test file) pairs: "
                "those test files run whole (python -m mutate.derive_map measures them again)",
                file=sys.stderr,
            )
        runner = Runner(
            config,
            snapshot,
            args.jobs,
            progress=not args.quiet,
            use_cache=not args.fresh,
            max_tests=args.max_tests,
            escalate_seconds=args.escalate_seconds,
        )
        results = runner.run(plans)
    elapsed = time.monotonic() - start
    settings: dict[str, object] = {
        "jobs": args.jobs,
        "rev": args.rev,
        "modules": args.module,
        "operators": args.operator,
        "cap": args.max_per_module,
        "seed": args.seed,
        "limit": args.limit,
        "max_tests": args.max_tests,
        "escalate_seconds": args.escalate_seconds,
        "threshold": args.threshold,
        "coverage_selection": bool(coverage),
    }
    report = build_report(
        config, plans, results, broken=runner.broken, settings=settings, seconds=elapsed
    )
    text, ok = render_report(report, args.threshold)
    print(text)
    print(f"({len(results)} mutants, {sum(r.cached for r in results)} cached, {elapsed:.0f}s)")
    path = args.report or cache_dir / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"report: {path}")
    return 0 if ok else 1
