"""Coverage per test file: the first version of the map, and the lines each test file executes.

Each test file runs alone under coverage, child processes included (the tests run the real
command line as ``python -m packager``), in a snapshot of the project. Two results:

* on stdout, a proposed module -> test files map (every module a test file executed), the
  starting point of the reviewed map in ``mutate/testmap.py``;
* ``.mutate-cache/coverage.json``: for each test file and module, the lines it executed, with
  the sha256 of both files. The harness uses it to skip, for one mutant, the mapped test files
  that never execute the mutated lines (and to report a mutant no test executes without running
  anything). An entry counts only while both files are byte-identical to what was measured;
  otherwise every mapped file runs.

Needs ``coverage`` importable by the test interpreter (it is not a project dependency)::

    pip install --target /tmp/covlib coverage
    python -m mutate.derive_map --coverage-path /tmp/covlib -j 2 > /tmp/proposed-map.txt
    python -m mutate.derive_map --print-map   # the proposal again, from coverage.json
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from mutate import covplugin
from mutate.harness import Config, Snapshot, default_config
from mutate.testmap import EXCLUDED_TESTS, PYTEST_MARKERS, ROOT, scope_files

COVERAGE_FILE = "coverage.json"
NOT_MEASURED = frozenset({"tests/test_mutate_harness.py"})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_one(
    test: str, tree: Path, work: Path, coverage_path: str
) -> tuple[str, dict[str, dict[str, list[str]]], float, dict[str, object]]:
    out = work / Path(test).stem
    out.mkdir(parents=True, exist_ok=True)
    rc = out / "coveragerc"
    rc.write_text(
        f"[run]\nparallel = True\nsource = {tree / 'packager'}\n"
        f"data_file = {out / '.coverage'}\ncontext = ${{{covplugin.ENV}}}\n",
        encoding="utf-8",
    )
    site = out / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import coverage\ncoverage.process_startup()\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["COVERAGE_PROCESS_START"] = str(rc)
    env[covplugin.ENV] = ""
    env[covplugin.DURATIONS_ENV] = str(out / "durations.json")
    # The checkout last: mutate.covplugin for a --rev that predates it, never packager.
    env["PYTHONPATH"] = os.pathsep.join([str(site), coverage_path, str(tree), str(ROOT)])
    start = time.monotonic()
    cmd = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "mutate.covplugin", "--timeout=600", f"--basetemp={out / 'tmp'}"]
    cmd += ["-m", PYTEST_MARKERS, test]
    subprocess.run(cmd, cwd=tree, env=env, capture_output=True, check=False)
    elapsed = time.monotonic() - start
    report = out / "report.json"
    for args in (["combine"], ["json", "--show-contexts", "-o", str(report)]):
        subprocess.run(
            [sys.executable, "-m", "coverage", *args, f"--rcfile={rc}"],
            cwd=tree,
            env=env,
            capture_output=True,
            check=False,
        )
    durations: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        durations = json.loads((out / "durations.json").read_text(encoding="utf-8"))
    lines: dict[str, dict[str, list[str]]] = {}
    if not report.exists():  # not even the test file's imports measured: coverage failed
        durations["failed"] = True
    else:
        data = json.loads(report.read_text(encoding="utf-8"))
        for name, info in data.get("files", {}).items():
            measured = Path(name) if Path(name).is_absolute() else tree / name
            try:
                key = measured.resolve().relative_to(tree.resolve()).as_posix()
            except ValueError:
                continue
            contexts = info.get("contexts", {})
            lines[key] = {
                str(n): sorted(set(contexts.get(str(n), [""]))) for n in info["executed_lines"]
            }
    return test, lines, elapsed, durations


def coverage_problem(coverage_path: str) -> str | None:
    """Why ``coverage`` cannot run from ``coverage_path`` (None: it can)."""
    env = dict(os.environ, PYTHONPATH=coverage_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import coverage"], env=env, capture_output=True, check=False
    )
    if probe.returncode == 0:
        return None
    return (
        f"coverage is not importable from --coverage-path {coverage_path}"
        f" (install it there: pip install --target {coverage_path} coverage)"
    )


def _compact(
    test: str, lines: dict[str, dict[str, list[str]]], shared: dict[str, list[str]]
) -> dict[str, object]:
    """``nodes``: test ids; ``lines``: module -> line -> indices into ``nodes``, where -1 stands
    for no test at all (collection, imports). A line run while setting up or tearing down a test
    counts for every test of the file sharing a non-function fixture with it (covplugin)."""
    nodes: list[str] = []
    index: dict[str, int] = {}

    def idx(nodeid: str) -> int:
        if nodeid not in index:
            index[nodeid] = len(nodes)
            nodes.append(nodeid)
        return index[nodeid]

    users: dict[str, set[str]] = {}
    for nodeid, fixtures in shared.items():
        for name in fixtures:
            users.setdefault(name, set()).add(nodeid)
    out: dict[str, dict[str, list[int]]] = {}
    for module, per_line in lines.items():
        rows: dict[str, list[int]] = {}
        for line, contexts in per_line.items():
            found: set[int] = set()
            for ctx in contexts:
                nodeid, _, phase = ctx.rpartition("|")
                if not nodeid.startswith(test + "::"):
                    found.add(-1)  # outside any test: collection, imports
                    continue
                found.add(idx(nodeid))
                if phase != "call":
                    for name in shared.get(nodeid, []):
                        found.update(idx(n) for n in sorted(users.get(name, ())))
            rows[line] = sorted(found)
        out[module] = rows
    return {"nodes": nodes, "lines": out}


def _body_lines(source: bytes) -> set[int]:
    """Lines inside function bodies: what a test exercises beyond importing the module."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def proposed_map(root: Path, stored: dict[str, dict[str, object]], modules: list[str]) -> str:
    """The map as Python source: per module, every test file that ran a line of a function
    body in it (merely importing it does not count), most lines per second first."""
    out = ["TESTS: dict[str, tuple[str, ...]] = {"]
    for module in modules:
        body = _body_lines((root / module).read_bytes())
        rows = []
        for test, entry in stored.items():
            per_module = cast("dict[str, dict[str, list[int]]]", entry.get("lines", {}))
            ran = {int(n) for n in per_module.get(module, {})} & body
            if ran:
                rows.append((float(cast("float", entry.get("seconds", 0))), test, len(ran)))
        out.append(f'    "{module}": (')
        # Sharpest first: most of this module's lines per second of running time.
        for seconds, test, count in sorted(rows, key=lambda r: (-r[2] / max(r[0], 1.0), r[1])):
            out.append(f'        "{test}",  # {count} lines, {seconds:.0f}s')
        out.append("    ),")
    out.append("}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--coverage-path", help="directory with coverage in it")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--test", action="append", default=[], help="only this test file")
    parser.add_argument("--rev", default=None, help="measure this commit (git archive)")
    parser.add_argument(
        "--print-map", action="store_true", help="only print the map proposed by coverage.json"
    )
    args = parser.parse_args(argv)
    config: Config = default_config()
    cache = config.cache_dir or config.root / ".mutate-cache"
    path = cache / COVERAGE_FILE
    stored: dict[str, dict[str, object]] = {}
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8")).get("tests", {})
        stored.update(old if isinstance(old, dict) else {})
    modules = [m for m in scope_files(config.root, config.groups) if m.endswith(".py")]
    if args.print_map:
        print(proposed_map(config.root, stored, modules))
        return 0
    if not args.coverage_path:
        parser.error("--coverage-path is needed to measure")
    problem = coverage_problem(args.coverage_path)
    if problem:
        # Without it every test file would record nothing, and the map would say no test
        # executes any line: a mutation run on it scores nothing and says so only at the end.
        parser.error(problem)
    with tempfile.TemporaryDirectory(prefix="mutate-derive-") as tmp:
        snap = Snapshot(config, Path(tmp), args.rev)
        tree = snap.dir
        tests = args.test or sorted(
            p.relative_to(tree).as_posix()
            for p in (tree / "tests").glob("test_*.py")
            if p.relative_to(tree).as_posix() not in EXCLUDED_TESTS | NOT_MEASURED
        )
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(
                pool.map(lambda t: _run_one(t, tree, Path(tmp), args.coverage_path), tests)
            )
        unmeasured = [test for test, _, _, recorded in results if recorded.get("failed")]
        if unmeasured:
            print(
                f"mutate.derive_map: coverage recorded nothing for {', '.join(unmeasured)};"
                f" {path} is left as it was",
                file=sys.stderr,
            )
            return 1
        in_scope = scope_files(tree, config.groups)
        measured = {m: _sha(tree / m) for m in in_scope if m.endswith(".py")}
        for test, lines, elapsed, recorded in results:
            durations = cast("dict[str, float]", recorded.get("durations", {}))
            shared = cast("dict[str, list[str]]", recorded.get("shared", {}))
            compact = _compact(test, {m: c for m, c in lines.items() if m in measured}, shared)
            nodes = cast("list[str]", compact["nodes"])
            stored[test] = {
                "sha": _sha(tree / test),
                "seconds": round(elapsed, 1),
                "scope": measured,  # the module versions it ran against
                "durations": [round(durations.get(n, 0.0), 2) for n in nodes],
                **compact,
            }
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"tests": stored}) + "\n", encoding="utf-8")
        print(proposed_map(tree, stored, modules))
    print(f"coverage per test file: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
