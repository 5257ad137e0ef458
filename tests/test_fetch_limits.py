"""Issue 12, classes 7 and 9: no server can hold a download for long, and a connection that
breaks mid-body is retried, then reported as a fetch error naming the URL (exit 4).

Real HTTP server on 127.0.0.1 (FaultServer's "drip", "retry-after" and "drop" faults); the
limits are injected small (and waits recorded instead of slept) so every test takes seconds."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.http import HttpOptions
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import TEST_PASSPHRASES, FaultServer, cli

ORBIT = b"\x7fELF orbit 1.0.0 " * 64  # 1,088 bytes
TARGET = "orbit/linux/stable/orbit"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "repo"
    lib = UpdateRepository(path, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    src = path.parent / "orbit"
    src.write_bytes(ORBIT)
    lib.add(src, name="orbit", platform="linux", version="1.0.0", tags=["stable"])
    lib.add(src, name="orbit", platform="windows", version="1.0.0", tags=["stable"])
    return path


class Sleeps:
    """An injected ``sleep``: records every wait the fetcher asks for, sleeps none of it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _client(server: FaultServer, repo: Path, **http: Any) -> UpdateClient:
    root = (repo / "repository/1.root.json").read_bytes()
    opts = HttpOptions(**{"read_timeout": 3.0, "retries": 2, "backoff": 0.01, **http})
    return UpdateClient(server.url, root, cache_dir=None, http=opts)


def _fails(server: FaultServer, repo: Path, tmp_path: Path, **http: Any) -> tuple[str, float]:
    start = time.monotonic()
    with _client(server, repo, **http) as client, pytest.raises(FetchError) as err:
        client.fetch(TARGET, tmp_path / "orbit")
    message = str(err.value)
    assert "\n" not in message
    assert not (tmp_path / "orbit").exists()
    return message, time.monotonic() - start


@pytest.mark.timeout(60)
def test_retry_after_is_capped_and_named(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults["/timestamp.json"] = "retry-after:3600"
        sleeps = Sleeps()
        message, elapsed = _fails(server, repo, tmp_path, retry_after_cap=0.25, sleep=sleeps)
        assert sleeps.waits == [0.25, 0.25], sleeps.waits  # two retries, each capped
        assert f"HTTP 503 for {server.url}/timestamp.json" in message, message
        assert "asked to retry after 60m" in message and "at most 0.25s" in message, message
        assert server.requests["/timestamp.json"] == 3
        assert elapsed < 5

        # A server that asks once, then answers: one capped wait, and the download succeeds.
        server.faults["/timestamp.json"] = "retry-after-once:3600"
        sleeps = Sleeps()
        with _client(server, repo, retry_after_cap=0.25, sleep=sleeps) as client:
            client.fetch(TARGET, tmp_path / "ok")
        assert sleeps.waits == [0.25]
        assert (tmp_path / "ok").read_bytes() == ORBIT
    finally:
        server.close()


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 404, 403, 501])
def test_which_answers_are_retried(repo: Path, tmp_path: Path, status: int) -> None:
    """One answer with ``status``, then the file: 429 (too many requests) and the server's
    transient errors 500, 502, 503 and 504 are retried and the download succeeds; anything
    else (a missing file, a refusal, 501) fails at once, after one request."""
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = f"once:{status}"
        with _client(server, repo, sleep=Sleeps()) as client:
            if status in (429, 500, 502, 503, 504):
                client.fetch(TARGET, tmp_path / "orbit")
                assert (tmp_path / "orbit").read_bytes() == ORBIT
                assert server.requests[f"/targets/{TARGET}"] == 2
            else:
                with pytest.raises(FetchError) as err:
                    client.fetch(TARGET, tmp_path / "orbit")
                assert str(status) in str(err.value)
                assert server.requests[f"/targets/{TARGET}"] == 1
                assert not (tmp_path / "orbit").exists()
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_retry_after_longer_than_the_deadline_fails_at_once(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults["/timestamp.json"] = "retry-after:20"
        sleeps = Sleeps()
        message, elapsed = _fails(
            server, repo, tmp_path, retry_after_cap=30, timeout=5, sleep=sleeps
        )
        assert sleeps.waits == []  # 20 s would pass the 5 s deadline: no wait at all
        assert (
            f"gave up on {server.url}/timestamp.json: waiting 20s to retry would pass " in message
        )
        assert "--timeout 5s" in message, message
        assert elapsed < 3
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_drip_fed_body_trips_the_minimum_rate(repo: Path, tmp_path: Path) -> None:
    """One byte every 0.1 s never trips a read timeout; the minimum rate stops it."""
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = "drip:0.1"
        message, elapsed = _fails(
            server, repo, tmp_path, min_rate=1000, rate_window=0.5, read_timeout=2, timeout=30
        )
        assert f"{server.url}/targets/{TARGET} sent" in message, message
        assert "below the minimum of 1000 bytes/s" in message, message
        assert elapsed < 4, elapsed
        assert server.bytes_served[f"/targets/{TARGET}"] < 40
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_overall_timeout_stops_a_drip(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = "drip:0.05"
        message, elapsed = _fails(server, repo, tmp_path, min_rate=0, read_timeout=2, timeout=1.5)
        assert f"gave up on {server.url}/targets/{TARGET}" in message, message
        assert "--timeout 1.5s" in message and "ORBIT_PACKAGER_TIMEOUT" in message, message
        assert elapsed < 3.5, elapsed
    finally:
        server.close()


def test_dropped_connection_is_retried_and_resumed(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = "drop-once"
        with _client(server, repo) as client:
            client.fetch(TARGET, tmp_path / "orbit")
        assert (tmp_path / "orbit").read_bytes() == ORBIT
        assert server.requests[f"/targets/{TARGET}"] == 2
    finally:
        server.close()


def test_dropped_connection_is_a_fetch_error_naming_the_url(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = "drop"
        message, _ = _fails(server, repo, tmp_path)
        assert f"the connection to {server.url}/targets/{TARGET} broke off" in message, message
        assert f"after {len(ORBIT) // 2} of {len(ORBIT)} bytes, 3 times" in message, message
        assert server.requests[f"/targets/{TARGET}"] == 3  # first try + 2 retries
        server.faults.clear()
        server.faults["/snapshot.json"] = "drop"
        message, _ = _fails(server, repo, tmp_path)
        assert f"the connection to {server.url}/snapshot.json broke off" in message, message
    finally:
        server.close()


def test_gzip_encoded_bodies_are_decoded(repo: Path, tmp_path: Path) -> None:
    """A CDN or nginx with compression on serves the JSON (and maybe targets) with
    ``Content-Encoding: gzip``: the client decodes it, and lengths and hashes are those of the
    decoded bytes."""
    server = FaultServer(repo / "repository")
    try:
        for name in ("timestamp.json", "snapshot.json", "targets.json"):
            server.faults[f"/{name}"] = "gzip"
        server.faults[f"/targets/{TARGET}"] = "gzip"
        with _client(server, repo) as client:
            client.fetch(TARGET, tmp_path / "orbit")
        assert (tmp_path / "orbit").read_bytes() == ORBIT
        assert server.bytes_served[f"/targets/{TARGET}"] < len(ORBIT)  # it was compressed
    finally:
        server.close()


def test_https_url_to_a_plain_http_server_names_tls(repo: Path) -> None:
    """An https:// URL pointing at a plain HTTP port is a TLS failure, not a request for a
    client certificate."""
    server = FaultServer(repo / "repository")
    try:
        url = server.url.replace("http://", "https://")
        with (
            UpdateClient(
                url, (repo / "repository/1.root.json").read_bytes(), cache_dir=None
            ) as client,
            pytest.raises(FetchError) as err,
        ):
            client.refresh()
    finally:
        server.close()
    message = str(err.value)
    assert f"TLS error for {url}/2.root.json: TLS handshake failed (" in message, message
    assert "client certificate" not in message


def _verify(server: FaultServer, repo: Path, *extra: str, env: dict[str, str] | None = None):
    return cli(
        "verify", "--update-url", server.url, "--update-roots", repo / "repository/1.root.json",
        *extra, check=False, env=env, timeout=60,
    )  # fmt: skip


def test_verify_keeps_its_report_when_a_body_drops(repo: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults[f"/targets/{TARGET}"] = "drop"
        out = _verify(server, repo, "--json")
        assert out.returncode == 4, out.stderr
        assert out.stderr == ""  # no traceback, no raw tuple
        report = json.loads(out.stdout)
        assert [t["ok"] for t in report["targets"]].count(False) == 1
        (failure,) = report["failures"]
        assert f"{server.url}/targets/{TARGET} broke off" in failure, failure
        assert len(report["targets"]) == 4 and report["roles"]
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_timeout_option_and_environment(repo: Path, tmp_path: Path) -> None:
    server = FaultServer(repo / "repository")
    try:
        server.faults["/timestamp.json"] = "drip:0.05"
        start = time.monotonic()
        out = _verify(server, repo, "--timeout", "2s")
        assert time.monotonic() - start < 15
        assert out.returncode == 4, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert f"gave up on {server.url}/timestamp.json" in lines[0]
        assert "--timeout 2s" in lines[0]

        by_env = _verify(server, repo, env={"ORBIT_PACKAGER_TIMEOUT": "1s"})
        assert by_env.returncode == 4 and "--timeout 1s" in by_env.stderr, by_env.stderr

        fetch = cli(
            "fetch", "--type", "deb", "--update-url", server.url, "--update-roots",
            repo / "repository/1.root.json", "--no-cache", "--outdir", tmp_path / "out",
            "--timeout", "1s", check=False, timeout=60,
        )  # fmt: skip
        assert fetch.returncode == 4 and "--timeout 1s" in fetch.stderr, fetch.stderr
        assert not (tmp_path / "out").exists()

        package = cli(
            "package", "--type", "deb", "--update-url", server.url, "--update-roots",
            repo / "repository/1.root.json", "--no-cache", "--outfile", tmp_path / "x.deb",
            check=False, timeout=60, env={"ORBIT_PACKAGER_TIMEOUT": "1s"},
        )  # fmt: skip
        assert package.returncode == 4, package.stderr
        assert f"gave up on {server.url}/timestamp.json" in package.stderr, package.stderr

        bad = _verify(server, repo, "--timeout", "soon")
        assert bad.returncode == 2 and "--timeout" in bad.stderr
    finally:
        server.close()


RAW_ANSWERS = {
    b"": "the server closed the connection without answering: ",
    b"garbage\r\n\r\n": "the server's answer is not HTTP: ",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd": (
        "sent a body its Content-Encoding ('gzip') cannot decode"
    ),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n": "broke off after 0 bytes",
}


@pytest.mark.parametrize("answer", list(RAW_ANSWERS))
def test_broken_http_answers_are_fetch_errors(repo: Path, answer: bytes) -> None:
    """Answers no HTTP server should give: one line naming the URL, never an internal error."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_all() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(answer)

    answering = threading.Thread(target=answer_all, daemon=True)
    answering.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    root = (repo / "repository/1.root.json").read_bytes()
    opts = HttpOptions(retries=1, backoff=0.01, read_timeout=2)
    try:
        with (
            UpdateClient(url, root, cache_dir=None, http=opts) as client,
            pytest.raises(FetchError) as err,
        ):
            client.refresh()
    finally:
        # close() alone leaves the thread blocked in accept() holding the socket, still
        # listening: it would answer one more connection, from a later test, with this answer.
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        answering.join(10)
    assert not answering.is_alive()
    message = str(err.value)
    assert RAW_ANSWERS[answer] in message and f"{url}/2.root.json" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("path", ["/timestamp.json", f"/targets/{TARGET}"])
def test_gzip_bomb_is_refused_in_bounded_memory(repo: Path, tmp_path: Path, path: str) -> None:
    """A malicious server sends 256 MiB of zeros gzip'd into about 256 KiB: the client stops at
    the length the metadata (or python-tuf's cap for timestamp.json) allows, and its memory
    does not follow the decoded size (measured in a child process of its own)."""
    import subprocess
    import sys

    server = FaultServer(repo / "repository")
    try:
        server.faults[path] = "gzip-bomb"
        probe = (
            "import resource, sys\n"
            "from pathlib import Path\n"
            "from packager.errors import PackagerError\n"
            "from packager.fetch.client import UpdateClient\n"
            "root = Path(sys.argv[2]).read_bytes()\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "with UpdateClient(sys.argv[1], root, cache_dir=None) as client:\n"
            "    try:\n"
            "        client.fetch(sys.argv[3], Path(sys.argv[4]))\n"
            "        print('fetched')\n"
            "    except PackagerError as exc:\n"
            "        print('refused:', exc)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, server.url, str(repo / "repository/1.root.json"),
             TARGET, str(tmp_path / "orbit")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    verdict, grown_kib = out.stdout.strip().splitlines()
    assert verdict.startswith("refused:"), verdict
    assert int(grown_kib) < 64 * 1024, f"peak memory grew by {int(grown_kib) // 1024} MiB"
    assert not (tmp_path / "orbit").exists()
