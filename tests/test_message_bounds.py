"""Where error messages shorten what a repository or server sent: exact at the boundaries, so a
hostile value is cut but an ordinary one is shown whole."""

from __future__ import annotations

import pytest

from packager.fetch.http import TimeoutExceeded
from packager.fetch.targets import _shown_value
from packager.fetch.verify import _shown

URL = "http://127.0.0.1:1/targets/x"


@pytest.mark.parametrize(
    ("wait", "shown"),
    [(1, "1s"), (119, "119s"), (120, "2m"), (7199, "120m"), (7200, "2h"), (86400, "24h")],
)
def test_retry_wait_is_shown_in_the_largest_fitting_unit(wait: float, shown: str) -> None:
    message = str(TimeoutExceeded(URL, 60, wait=wait))
    assert f"waiting {shown} to retry would pass --timeout 1m" in message, message


@pytest.mark.parametrize("length", [0, 1, 117, 118])
def test_target_path_shown_whole_up_to_120_characters(length: int) -> None:
    path = "p" * length
    assert _shown(path) == repr(path)  # repr adds two quotes: 120 characters at most


@pytest.mark.parametrize("length", [119, 500])
def test_target_path_cut_beyond_120_characters(length: int) -> None:
    shown = _shown("p" * length)
    assert len(shown) == 120 and shown == "'" + "p" * 116 + "..."


def test_custom_version_boundary() -> None:
    exactly = "v" * 78  # repr: 80 characters
    assert _shown_value(exactly) == repr(exactly)
    longer = "v" * 79
    assert _shown_value(longer) == repr(longer)[:80] + "…"
