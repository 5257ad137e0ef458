"""Smoke test of the mutation harness (``make mutate``) on a throwaway project in tmp_path.

The toy module has one mutant its test kills (``return None``) and one it cannot see (``>`` ->
``>=``: the test never asks about 10); another test fails whatever the code, so it must be
deselected rather than count as a kill. Nothing here touches the real tree: the harness copies
the toy project, and its cache and report stay in tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from mutate import derive_map
from mutate.derive_map import _compact
from mutate.harness import (
    Plan,
    Selection,
    Snapshot,
    Workspace,
    config_from_file,
    main,
    statement_lines,
    statement_spans,
)
from mutate.operators import Mutant, python_mutants

TOY = '''def is_big(x: int) -> bool:
    """Whether x is over ten."""
    return x > 10
'''

TOY_TEST = """from toy.calc import is_big


def test_broken_anyway() -> None:
    assert is_big(5), "fails with or without a mutant: must not count as a kill"


def test_is_big() -> None:
    assert is_big(20)
    assert not is_big(3)
"""


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "toy").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "toy" / "__init__.py").write_text("")
    (root / "toy" / "calc.py").write_text(TOY)
    (root / "tests" / "test_calc.py").write_text(TOY_TEST)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    config = {
        "groups": {"toy": ["toy/"]},
        "tests": {"toy/calc.py": ["tests/test_calc.py"]},
        "equivalent_file": "equivalent.txt",
        "cache_dir": ".mutate-cache",
    }
    (root / "mutate.json").write_text(json.dumps(config))
    return root


def _run(root: Path, *extra: str) -> int:
    return main(
        [
            "--config",
            str(root / "mutate.json"),
            "-j",
            "2",
            "--quiet",
            "--operator",
            "compare",
            "--operator",
            "return",
            *extra,
        ]
    )


def test_one_killed_one_survivor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path)
    before = (root / "toy" / "calc.py").read_bytes()

    assert _run(root) == 1  # 50% is under the default threshold of 90
    out = capsys.readouterr().out
    assert "toy: killed 1 of 2 (50.0%)" in out
    assert "toy/calc.py:3: compare: x > 10 -> x >= 10" in out
    assert "return x > 10 -> return None" not in out.split("survivors")[1]
    report = json.loads((root / ".mutate-cache" / "report.json").read_text())
    statuses = {m["operator"]: m["status"] for m in report["mutants"]}
    assert statuses == {"compare": "survived", "return": "killed"}
    assert (root / "toy" / "calc.py").read_bytes() == before  # mutated only in the copy
    assert report["deselected"].keys() == {"tests/test_calc.py::test_broken_anyway"}

    # Cached: nothing runs again. Accepting the survivor as equivalent excludes it from the score.
    (root / "equivalent.txt").write_text("toy/calc.py:3:compare the toy never asks about ten\n")
    assert _run(root, "--threshold", "100") == 0
    out = capsys.readouterr().out
    assert "toy: killed 1 of 1 (100.0%)" in out
    assert "(2 mutants, 2 cached" in out
    assert "the toy never asks about ten" in out


def test_catalogue_on_the_toy() -> None:
    ops = sorted(m.operator for m in python_mutants("toy/calc.py", TOY.encode()))
    # > -> >=, 10 -> 11 and 9, the result -> None; the docstring is left alone
    assert ops == ["compare", "int", "int", "return"]


def test_mutated_module_never_loads_stale_byte_code(tmp_path: Path) -> None:
    """A same-size mutant (10 -> 11) written within the second of the original must not run
    the original's cached .pyc, nor the original run the mutant's afterwards."""
    root = _project(tmp_path)
    config = config_from_file(root / "mutate.json")
    snapshot = Snapshot(config, tmp_path / "work")
    ws = Workspace(config, snapshot.dir, tmp_path / "work", 0)
    probe = [sys.executable, "-c", "from toy.calc import is_big; print(is_big(11))"]

    def run() -> str:
        env = ws.env()
        return subprocess.run(
            probe, cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run() == "True"
    assert list(ws.pycache.rglob("calc.*.pyc"))  # byte code goes to the worker's prefix
    with ws.mutated("toy/calc.py", TOY.replace("10", "11").encode()):
        assert run() == "False"
    assert run() == "True"
    assert (ws.tree / "toy" / "calc.py").read_text() == TOY


def test_a_shared_fixture_selects_every_test_that_uses_it() -> None:
    """A module fixture is built during the first test's set-up; a mutant in what it builds
    must run every test relying on it (here t2 checks what t1's set-up built)."""
    ctx = "tests/test_x.py::"
    lines = {
        "pkg/m.py": {
            "5": [f"{ctx}t1|setup"],  # the module fixture, set up for t1
            "9": [f"{ctx}t3|call"],  # only t3 runs it
            "1": [""],  # at import, while collecting
        }
    }
    shared = {f"{ctx}t1": ["built"], f"{ctx}t2": ["built"], f"{ctx}t3": []}
    compact = _compact("tests/test_x.py", lines, shared)
    nodes = cast("list[str]", compact["nodes"])
    per_line = cast("dict[str, dict[str, list[int]]]", compact["lines"])["pkg/m.py"]
    assert {nodes[i] for i in per_line["5"]} == {f"{ctx}t1", f"{ctx}t2"}
    assert [nodes[i] for i in per_line["9"]] == [f"{ctx}t3"]
    assert per_line["1"] == [-1]  # the whole file
    sel = Selection(nodes=nodes, lines=per_line, seconds=10.0)
    assert sel.for_lines("tests/test_x.py", [1, 9]) == ["tests/test_x.py"]
    assert sel.for_lines("tests/test_x.py", [7]) == []


def test_a_mutant_inside_a_statement_maps_to_its_first_line() -> None:
    """Coverage reports a multi-line statement by its first line, a compound one by its
    header; blank lines between statements belong to none."""
    source = b"def f(a, b):\n    if (a and\n            b):\n        return 1\n\n    return 2\n"
    assert statement_lines(source) == {1: 1, 2: 2, 3: 2, 4: 4, 6: 6}


def test_the_test_that_makes_a_guard_fire_runs_first() -> None:
    """Of the tests that run a guard, the one that takes its raise runs first: with --max-tests
    it must not be cut off behind the many that only pass through."""
    source = b"def f(x):\n    if x:\n        raise ValueError(x)\n    return 1\n"
    guard = next(m for m in python_mutants("m.py", source) if m.operator == "guard-drop")
    passing = [f"tests/test_m.py::test_pass{i}" for i in range(30)]
    nodes = [*passing, "tests/test_m.py::test_fires"]
    every = list(range(len(nodes)))
    sel = Selection(nodes=nodes, lines={"2": every, "3": [len(nodes) - 1]}, seconds=1.0)
    plan = Plan(
        path="m.py",
        group="g",
        tests=("tests/test_m.py",),
        all_mutants=[guard],
        mutants=[guard],
        file_sha="",
        tests_sha="",
        coverage={"tests/test_m.py": sel},
        statement_of=statement_lines(source),
        spans=statement_spans(source),
    )
    assert plan.tests_for(guard)[0] == "tests/test_m.py::test_fires"


def test_a_survivor_of_the_cut_list_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --max-tests 1 only the first mapped file runs; the test that asks about ten sits in
    the second. A survivor goes on with the rest within --escalate-seconds (an unmeasured file
    counts 600 s), and a kill there is credited, so that file runs first next time."""
    root = _project(tmp_path)
    (root / "tests" / "test_edge.py").write_text(
        "from toy.calc import is_big\n\n\ndef test_ten() -> None:\n    assert not is_big(10)\n"
    )
    config = json.loads((root / "mutate.json").read_text())
    config["tests"]["toy/calc.py"] = ["tests/test_calc.py", "tests/test_edge.py"]
    (root / "mutate.json").write_text(json.dumps(config))
    cut = ("--operator", "compare", "--max-tests", "1", "--threshold", "100")

    assert _run(root, *cut, "--escalate-seconds", "0") == 1
    out = capsys.readouterr().out
    assert "toy/calc.py:3: compare: x > 10 -> x >= 10  [ran 1 of 2 selected tests]" in out

    assert _run(root, *cut, "--escalate-seconds", "700") == 0
    out = capsys.readouterr().out
    assert "toy: killed 2 of 2 (100.0%)" in out
    report = json.loads((root / ".mutate-cache" / "report.json").read_text())
    compare = [m for m in report["mutants"] if m["operator"] == "compare"]
    assert [m["status"] for m in compare] == ["killed"]
    kills = json.loads((root / ".mutate-cache" / "kills.json").read_text())
    assert kills["toy/calc.py"]["tests/test_edge.py"] == 1


def _plan_of_f(
    tests: tuple[str, ...], coverage: dict[str, Selection], blind: tuple[str, ...]
) -> tuple[Plan, Mutant]:
    """The plan of m.py (``def f(x): return x + 1``) with one mutant, its ``return`` one."""
    source = b"def f(x):\n    return x + 1\n"
    mutant = next(m for m in python_mutants("m.py", source) if m.operator == "return")
    plan = Plan(
        path="m.py",
        group="g",
        tests=tests,
        all_mutants=[mutant],
        mutants=[mutant],
        file_sha="",
        tests_sha="",
        coverage=coverage,
        blind=blind,
        statement_of=statement_lines(source),
        spans=statement_spans(source),
    )
    return plan, mutant


def _crash_plan(sel: Selection) -> tuple[Plan, Mutant]:
    """_plan_of_f with tests/test_m.py measured as ``sel`` and tests/test_crash.py, whose
    test_kill is blind, measured as running nothing."""
    return _plan_of_f(
        tests=("tests/test_m.py", "tests/test_crash.py"),
        coverage={"tests/test_m.py": sel, "tests/test_crash.py": Selection([], {}, 1.0)},
        blind=("tests/test_crash.py::test_kill",),
    )


def test_a_test_coverage_cannot_see_is_selected_anyway() -> None:
    """A crash test's work runs in children killed with SIGKILL, which never write coverage
    data: listed as blind for a module, it runs for each of its mutants, first."""
    sel = Selection(nodes=["tests/test_m.py::test_f"], lines={"2": [0]}, seconds=1.0)
    plan, mutant = _crash_plan(sel)
    assert plan.tests_for(mutant) == ["tests/test_crash.py::test_kill", "tests/test_m.py::test_f"]


def test_blind_tests_lead_whatever_the_scores() -> None:
    """Thirty tests each run the mutated line and score above 0; the blind test, scored 0 by a
    coverage that cannot see it, still comes first, inside the first --max-tests batch (the
    transaction.py roll-forward mutants survived three runs behind 25 scored tests)."""
    nodes = [f"tests/test_m.py::test_{i}" for i in range(30)]
    sel = Selection(nodes=nodes, lines={"2": list(range(30))}, seconds=30.0)
    plan, mutant = _crash_plan(sel)
    ordered = plan.ordered(mutant, kills={"tests/test_m.py": 5})
    assert ordered[0] == "tests/test_crash.py::test_kill"
    assert sorted(ordered[1:]) == sorted(nodes)
    # its file measured as a whole (a line run outside any test): the whole file leads
    whole = Selection(nodes=[], lines={"2": [-1]}, seconds=1.0)
    plan.coverage["tests/test_crash.py"] = whole
    assert plan.ordered(mutant, kills={})[0] == "tests/test_crash.py"


def test_a_blind_node_of_a_file_that_runs_whole_is_not_passed_twice() -> None:
    """When the blind test's file has no current measurement it runs whole; passing its node
    before the file would make pytest collect the file once, with that node only (the plain-
    checkout node hid every golden test from render.py's mutants that way)."""
    plan, mutant = _plan_of_f(
        tests=("tests/test_golden.py",),
        coverage={},  # stale: the file runs whole
        blind=("tests/test_golden.py::test_plain_checkout",),
    )
    assert plan.tests_for(mutant) == ["tests/test_golden.py"]


def test_deriving_the_map_without_coverage_stops_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --coverage-path without coverage in it once made every test file record nothing: an
    empty map, and a mutation run that counted 171 of 248 mutants as executed by no test."""
    empty = tmp_path / "no-coverage-here"
    empty.mkdir()
    with pytest.raises(SystemExit) as stopped:
        derive_map.main(["--coverage-path", str(empty), "--test", "tests/test_mutate_harness.py"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"coverage is not importable from --coverage-path {empty}" in err
    assert f"pip install --target {empty} coverage" in err


def test_every_python_module_of_a_group_has_tests_mapped() -> None:
    """A module with no entry is never mutated at all (its mutants only count as "not run"):
    writers/parallel.py and the new writers/rpm.py went unmapped that way."""
    from mutate import testmap

    root = Path(__file__).resolve().parent.parent
    modules = []
    for prefixes in testmap.GROUPS.values():
        for prefix in prefixes:
            top = root / prefix
            modules += sorted(top.rglob("*.py")) if top.is_dir() else [top]
    empty_init = [m for m in modules if m.name == "__init__.py" and not m.stat().st_size]
    missing = [
        m.relative_to(root).as_posix()
        for m in modules
        if m.suffix == ".py"
        and m not in empty_init
        and not testmap.TESTS.get(m.relative_to(root).as_posix())
    ]
    assert missing == []
