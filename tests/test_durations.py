"""Durations as fleetctl spells them (Go's time.ParseDuration units) plus days and weeks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from packager.errors import UsageError
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
