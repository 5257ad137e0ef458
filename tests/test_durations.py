"""Durations as fleetctl spells them (Go's time.ParseDuration units) plus days and weeks."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta

import pytest

from packager.errors import UsageError
from packager.options import go_duration
from packager.repo.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("336h", 336 * 3600),
        ("1h30m", 5400),
        ("14d", 14 * 86400),
        ("2w", 14 * 86400),
        ("1.5h", 5400),
        ("1s", 1),
        ("90m", 5400),
        (" 1d ", 86400),
        ("1500ms", 1.5),
        ("1d12h30m15s", 86400 + 12 * 3600 + 30 * 60 + 15),
        ("1000000000ns", 1),
        ("2000000us", 2),
        ("1000000µs", 1),
    ],
)
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "invalid expiry ''"),
        ("   ", "invalid expiry '   '"),
        ("10", "invalid expiry '10'"),
        ("h", "invalid expiry 'h'"),
        ("1x", "invalid expiry '1x'"),
        ("1h x", "invalid expiry '1h x'"),
        ("-1h", "invalid expiry '-1h'"),
        ("1h-", "invalid expiry '1h-'"),
        ("0s", "must be at least one second"),
        ("0d", "must be at least one second"),
        ("999ms", "must be at least one second"),
    ],
)
def test_invalid_names_what_and_why(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_duration(text, what="expiry")
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m 0s"),
        (61, "1m 1s"),
        (3600, "1h 0m"),
        (3661, "1h 1m"),
        (86399, "23h 59m"),
        (86400, "1d 0h"),
        (13 * 86400 + 23 * 3600 + 59, "13d 23h"),
        (-7500, "-2h 5m"),
        (-5, "-5s"),
    ],
)
def test_format(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


# Go's own rendering is the oracle for go_duration (what fleetctl writes into the flags Orbit
# parses with time.ParseDuration).
GO_CASES_US = [1_000_000, 10_000_000, 59_000_000, 60_000_000, 61_000_000, 900_000_000,
               3_600_000_000, 3_661_000_000, 5_400_000_000, 86_400_000_000, 1_500_000,
               61_500_000, 1_000_001, 360_000_000_000, 3_599_999_999]  # fmt: skip


@pytest.fixture(scope="module")
def go_strings(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    go = shutil.which("go")
    if go is None:
        pytest.skip(
            "needs Go (scripts/install-system-deps.sh --test installs it, as make test does)"
        )
    src = tmp_path_factory.mktemp("godur") / "main.go"
    values = ", ".join(str(us) for us in GO_CASES_US)
    src.write_text(
        'package main\nimport ("fmt"; "time")\nfunc main() {\n'
        f"  for _, us := range []int64{{{values}}} {{\n"
        "    fmt.Println((time.Duration(us) * time.Microsecond).String())\n  }\n}\n"
    )
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    env.setdefault("GOCACHE", str(src.parent / "cache"))
    out = subprocess.run([go, "run", str(src)], capture_output=True, text=True, check=True,
                         env=env, timeout=300, cwd=src.parent)  # fmt: skip
    return out.stdout.split()


@pytest.mark.parametrize("index", range(len(GO_CASES_US)))
def test_go_duration_is_gos_rendering(go_strings: list[str], index: int) -> None:
    delta = timedelta(microseconds=GO_CASES_US[index])
    assert go_duration(delta) == go_strings[index]
