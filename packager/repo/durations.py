"""Durations as fleetctl spells them (Go's ``336h``, ``1h30m``) plus days and weeks (``14d``)."""

from __future__ import annotations

import re
from datetime import timedelta

from packager.errors import UsageError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """Parse ``text`` into a positive timedelta, or raise a UsageError naming ``what``."""
    value = text.strip()
    pos, seconds = 0, 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise UsageError(
            f"invalid {what} {text!r}",
            hint="use a number with a unit, e.g. 336h, 14d, 1h30m (units s, m, h, d, w)",
        )
    if seconds < 1:
        raise UsageError(f"invalid {what} {text!r}: must be at least one second")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Human form of a (possibly negative) duration, e.g. ``13d 23h`` or ``-2h 5m``."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {seconds}s"
    return f"{sign}{seconds}s"
