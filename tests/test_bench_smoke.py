"""The benchmark suite (bench/, `make bench`): one round of every measure on small inputs, and
the harness's own logic (verdicts, exit status, pair statistics, the byte counter, the inputs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path

import lief

from bench.harness import (
    CountingServer,
    PairTimes,
    Result,
    exit_status,
    format_line,
    interleave,
    meets_goal,
    ratio_result,
)
from bench.inputs import CodePool, padded_executable
from bench.run import MEASURES
from tests.helpers import ROOT

LABELS = {
    "deb": "deb warm",
    "rpm": "rpm warm",
    "pkg": "pkg warm",
    "msi": "msi warm",
    "fetch": "fetch cold",
    "all": "all four types",
    "help": "--help startup",
    "add": "updates add",
    "rss": "pkg peak RSS",
    "rebuild": "warm rebuild",
}


def test_one_round_of_every_measure_on_small_inputs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "BENCH_"))}
    env["BENCH_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "small", "--rounds", "1", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 2: the benchmark itself failed
    doc = json.loads(proc.stdout)
    results = doc["results"]
    assert [r["name"] for r in results] == list(MEASURES)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("bench: ")]
    assert len(lines) == len(MEASURES), proc.stderr
    for r, line in zip(results, lines, strict=True):
        assert line.startswith(LABELS[r["name"]]), line
        assert r["value"] >= 0 and r["value"] == r["value"]  # a figure, not NaN
        if r["unit"] == "ratio":
            assert r["ours_median"] > 0 and r["base_median"] > 0, r
            assert f"ratio {r['value']:.2f}" in line, line
        assert "goal ≤" in line
        verdict = "ok" if r["ok"] else "MISSED"
        assert re.search(rf"  {verdict}(  \(.*\))?$", line), line
    # the exit status follows the printed verdicts
    assert proc.returncode == (0 if all(r["ok"] for r in results) else 1)
    assert doc["exit_status"] == proc.returncode
    rebuild = results[-1]
    assert "the cold build: 0" not in rebuild["note"]  # the counter saw the cold downloads
    by_name = {r["name"]: r for r in results}
    # the informative floors: the four builds' CPU over the cores, four independent copies
    assert re.search(
        r"CPU of the four single builds [0-9.]+ s on \d+ cores: .*; the one run used [0-9.]+ CPU s$",
        by_name["all"]["note"],
    )
    run_cpu = float(by_name["all"]["note"].rsplit(" used ", 1)[1].split()[0])
    assert run_cpu > 0  # its builds' processes counted: they are waited for
    assert re.search(r"4 independent copies .* [0-9.]+ s: ours [0-9.]+x", by_name["add"]["note"])
    assert list(tmp_path.iterdir()) == []  # the private directory is removed at exit


def test_a_measure_run_alone_builds_its_own_inputs(tmp_path: Path) -> None:
    """`--only add` first touches the inputs directory itself (it once crashed there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "BENCH_"))}
    env["BENCH_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "add", "--scale", "small", "--rounds", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout.startswith(LABELS["add"]), proc.stdout
    assert list(tmp_path.iterdir()) == []


def result(value: float, goal: float = 1.1, unit: str = "ratio") -> Result:
    return Result("deb", "deb warm", goal, unit, value, 2.0, 2.0, "nfpm", 1.0, 1.0)


def test_a_missed_goal_gives_exit_status_1_and_a_missed_line() -> None:
    met, missed = result(1.09), result(1.11)
    assert meets_goal(1.10, 1.10) and not meets_goal(1.1001, 1.10)
    assert exit_status([met, met]) == 0
    assert exit_status([met, missed]) == 1
    assert exit_status([missed]) == 1
    assert format_line(met).endswith("goal ≤ 1.10  ok")
    assert format_line(missed).endswith("goal ≤ 1.10  MISSED")
    # absolute goals: 0 bytes for a warm rebuild, 200 MiB of peak RSS
    assert exit_status([result(0, goal=0, unit="bytes")]) == 0
    assert exit_status([result(1, goal=0, unit="bytes")]) == 1
    assert "MISSED" in format_line(result(201, goal=200, unit="MiB"))
    assert result(1.2).to_json()["ok"] is False


def test_pairs_are_interleaved_and_judged_on_the_median_of_their_ratios() -> None:
    calls: list[str] = []
    ours = iter([2.0, 4.0, 9.0])
    base = iter([1.0, 4.0, 3.0])

    def a() -> float:
        calls.append("A")
        return next(ours)

    def b() -> float:
        calls.append("B")
        return next(base)

    times = interleave(a, b, 3)
    assert calls == ["A", "B", "A", "B", "A", "B"]
    r = ratio_result("deb", "deb warm", "nfpm", times, 1.5)
    # per-pair ratios 2, 1, 3: median 2 (the ratio of the medians would be 4 / 3)
    assert r.value == 2.0 and not r.ok
    assert (r.ours_min, r.ours_median, r.base_min, r.base_median) == (2.0, 4.0, 1.0, 3.0)
    assert PairTimes([1.0], [2.0]).ratios == [0.5]


def test_the_server_counts_the_bytes_it_sends_per_path(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "orbit").write_bytes(b"x" * 3_000_000)
    (tmp_path / "root.json").write_bytes(b"{}")
    server = CountingServer(tmp_path)
    try:
        before = server.snapshot()
        for name in ("targets/orbit", "root.json", "targets/orbit"):
            with urllib.request.urlopen(f"{server.url}/{name}") as resp:
                resp.read()
        assert server.target_bytes_since(before) == {"/targets/orbit": 6_000_000}
        again = server.snapshot()
        assert server.target_bytes_since(again) == {}
    finally:
        server.close()


def test_padded_binaries_parse_for_their_os_and_cpu_and_compress_like_code(
    tmp_path: Path,
) -> None:
    pool = CodePool()
    size = 3 << 20
    elf = padded_executable(pool, "orbit-linux-x86_64", size, tmp_path / "elf")
    pe = padded_executable(pool, "orbit-windows-x86_64.exe", size, tmp_path / "pe.exe")
    macho = padded_executable(pool, "orbit-macos-universal", size, tmp_path / "macho")
    assert elf.stat().st_size == pe.stat().st_size == macho.stat().st_size == size
    assert elf.read_bytes()[-size // 2 :] != pe.read_bytes()[-size // 2 :]  # not the same bytes
    parsed_elf = lief.parse(str(elf))
    assert isinstance(parsed_elf, lief.ELF.Binary)
    assert parsed_elf.header.machine_type == lief.ELF.ARCH.X86_64
    parsed_pe = lief.parse(str(pe))
    assert isinstance(parsed_pe, lief.PE.Binary)
    assert parsed_pe.header.machine == lief.PE.Header.MACHINE_TYPES.AMD64
    fat = lief.MachO.parse(str(macho))
    assert fat is not None and fat.size == 2
    for binary in (elf, pe, macho):
        data = binary.read_bytes()
        ratio = len(zlib.compress(data, 6)) / len(data)
        # machine code: well compressible, unlike random bytes (~1.0) or zeros (~0.001)
        assert 0.1 < ratio < 0.8, (binary.name, ratio)
