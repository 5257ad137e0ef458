"""Where error messages shorten what a repository or server sent: exact at the boundaries, so a
hostile value is cut but an ordinary one is shown whole."""

from __future__ import annotations

import socket

import pytest
import requests
import urllib3

from packager.fetch.http import ConnectError, TimeoutExceeded
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


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (
            urllib3.exceptions.NameResolutionError(
                "fleet.invalid",
                urllib3.connection.HTTPConnection("fleet.invalid", 80),
                socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            ),
            "cannot resolve the host name",
        ),
        (  # no DNS server reachable: only urllib3's class name says it
            urllib3.exceptions.NameResolutionError(
                "fleet.invalid",
                urllib3.connection.HTTPConnection("fleet.invalid", 80),
                socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            ),
            "cannot resolve the host name",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (OSError(101, "Network is unreachable"), "cannot connect"),
    ],
    ids=["no-such-name", "no-dns-server", "refused", "other"],
)
def test_a_connection_failure_says_why(cause: Exception, reason: str) -> None:
    """What requests raises when the host cannot be resolved (urllib3's own exception, wrapped
    as requests wraps it: no name is looked up here), refused, or anything else."""
    url = "http://fleet.invalid/timestamp.json"
    wrapped = requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/timestamp.json", cause)  # type: ignore[arg-type]
    )
    assert str(ConnectError(url, wrapped)) == f"{reason}: {url}"
