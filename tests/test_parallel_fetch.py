"""Issue 18: the targets of one command download in parallel, each once, and a failure or a
signal still reports as before and leaves nothing behind.

The server below (real HTTP on 127.0.0.1) sees the overlap itself: it holds every target
response until the expected number of them are in progress at once. Downloads one after the
other never get there (each waits out the gate's timeout alone), so no test depends on how
fast this machine is."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.targets import TargetSelection, fetch_agent_targets, fetch_many
from packager.fetch.workers import MAX_PARALLEL
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import FIXTURES, ROOT, TEST_PASSPHRASES, cli, demo_repo

ORBIT = "/targets/orbit/linux/stable/orbit"
OSQUERYD = "/targets/osqueryd/linux/stable/osqueryd"
DESKTOP = "/targets/desktop/linux/stable/desktop.tar.gz"


class GateServer:
    """A real HTTP server on 127.0.0.1 serving a repository directory. It counts requests per
    path and the most target responses in progress at once, and can: hold target responses
    until ``gate`` of them are in progress (from then on, none is held); send half of each
    target body and wait for ``release``; answer a path with an HTTP ``status``; ``corrupt`` a
    body (same length, one byte changed); answer a path only once another one was answered
    (``answer_after``)."""

    # Seconds any hold lasts at most: then the response goes on regardless. Long enough that a
    # command stopped by a signal is gone well before it even on a loaded machine (a CI run
    # sharing 2 cores with a mutation run once took over 30 s from the held bodies to exit).
    WAIT = 60.0

    def __init__(self, directory: Path) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.in_progress = 0
        self.most_in_progress = 0
        self.mid_body = 0  # target responses holding in the middle of their body
        self.gate = 0
        self.gate_open = False
        self.hold_mid_body = False
        self.release = threading.Event()
        self.status: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.answer_after: dict[str, str] = {}
        self.answered: set[str] = set()
        self.cond = threading.Condition()
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with owner.cond:
                    owner.requests[path] += 1
                if not path.startswith("/targets/"):
                    super().do_GET()
                    return
                with contextlib.suppress(OSError):  # the client may hang up: fine
                    owner.serve_target(self, path)

        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory))
        )
        self._server.daemon_threads = True
        self.directory = directory
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def serve_target(self, handler: http.server.SimpleHTTPRequestHandler, path: str) -> None:
        with self.cond:
            self.in_progress += 1
            self.most_in_progress = max(self.most_in_progress, self.in_progress)
            self.cond.notify_all()
        try:
            with self.cond:
                if self.gate and not self.gate_open:
                    reached = self.cond.wait_for(
                        lambda: self.gate_open or self.in_progress >= self.gate, self.WAIT
                    )
                    self.gate_open = reached  # for good: the ones now waiting go too
                    self.cond.notify_all()
                if path in self.answer_after:
                    first = self.answer_after[path]
                    self.cond.wait_for(lambda: first in self.answered, self.WAIT)
            if path in self.status:
                handler.send_error(self.status[path])
                return
            data = bytearray((self.directory / path.removeprefix("/")).read_bytes())
            if path in self.corrupt:
                data[-1] ^= 0xFF
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            half = len(data) // 2
            handler.wfile.write(data[:half])
            handler.wfile.flush()
            if self.hold_mid_body:
                with self.cond:
                    self.mid_body += 1
                    self.cond.notify_all()
                self.release.wait(self.WAIT)
            handler.wfile.write(data[half:])
            handler.wfile.flush()
        finally:
            with self.cond:
                self.in_progress -= 1
                self.answered.add(path)
                self.cond.notify_all()

    def target_requests(self) -> dict[str, int]:
        return {p: n for p, n in self.requests.items() if p.startswith("/targets/")}

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def linux_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Orbit, osqueryd and Fleet Desktop for Linux, three different files (the demo repository
    has one executable for orbit and osqueryd, which is one download)."""
    base = tmp_path_factory.mktemp("linux")
    repo = base / "repo"
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    elf = (FIXTURES / "executables" / "orbit-linux-x86_64").read_bytes()
    (base / "orbit").write_bytes(elf + b"orbit" * 40_000)
    (base / "osqueryd").write_bytes(elf + b"osqueryd" * 40_000)
    with tarfile.open(base / "desktop.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo("fleet-desktop/fleet-desktop")
        data = elf + b"desktop" * 40_000
        member.size, member.mode = len(data), 0o755
        tar.addfile(member, io.BytesIO(data))
    for name, file, version in (
        ("orbit", "orbit", "1.40.0"),
        ("osqueryd", "osqueryd", "5.13.1"),
        ("desktop", "desktop.tar.gz", "1.40.0"),
    ):
        lib.add(base / file, name=name, platform="linux", version=version, tags=["stable"])
    return repo


@pytest.fixture
def gate_server(linux_repo: Path) -> Iterator[GateServer]:
    server = GateServer(linux_repo / "repository")
    yield server
    server.close()


def _root(repo: Path) -> bytes:
    return (repo / "repository" / "root.json").read_bytes()


def _leftovers(directory: Path) -> list[str]:
    """Temporary names (``.name.<random>.tmp``) anywhere below ``directory``."""
    return [str(p) for p in directory.rglob(".*")] if directory.exists() else []


# -- overlap and one download per target -------------------------------------------------------


def test_the_targets_download_at_once(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """All three targets are in progress at the server at the same time, each asked for once,
    and the files are the published bytes."""
    gate_server.gate = 3
    with UpdateClient(gate_server.url, _root(linux_repo), cache_dir=tmp_path / "cache") as client:
        fetched = fetch_agent_targets(
            client, TargetSelection("deb", fleet_desktop=True), tmp_path / "root"
        )
    assert gate_server.most_in_progress == 3
    assert gate_server.target_requests() == {ORBIT: 1, OSQUERYD: 1, DESKTOP: 1}
    assert [f.spec.name for f in fetched] == ["orbit", "osqueryd", "desktop"]
    published = linux_repo / "repository" / "targets"
    for f in fetched:
        assert f.local_path.read_bytes() == (published / f.spec.path).read_bytes()
    assert fetched[2].extracted == ["fleet-desktop/fleet-desktop"]
    assert _leftovers(tmp_path / "cache" / "targets") == []


def test_same_bytes_under_two_paths_download_once(tmp_path: Path) -> None:
    """The demo repository's orbit and osqueryd for Linux are one file, published under its
    version, tag and channel names: asked for through two selections (channels stable and
    1.40), it is downloaded once (one cache entry, never two writers) and copied to all four
    places."""
    repo = demo_repo(tmp_path / "demo")
    server = GateServer(repo / "repository")
    try:
        with UpdateClient(server.url, _root(repo), cache_dir=tmp_path / "cache") as client:
            both = fetch_many(
                client,
                [
                    (TargetSelection("deb"), tmp_path / "a"),
                    (TargetSelection("rpm", orbit_channel="1.40"), tmp_path / "b"),
                ],
            )
    finally:
        server.close()
    same = {ORBIT, OSQUERYD, "/targets/orbit/linux/1.40/orbit"}
    assert sum(server.target_requests().get(p, 0) for p in same) == 1, server.requests
    files = [f.local_path.read_bytes() for row in both for f in row]
    assert len(files) == 4 and len(set(files)) == 1
    assert [p.name for p in (tmp_path / "cache" / "targets").iterdir()] == [
        both[0][0].info.hashes["sha512"]
    ]


def test_without_a_cache_each_byte_is_written_once(linux_repo: Path, tmp_path: Path) -> None:
    """--no-cache: a target only one installer uses goes to its file and nowhere else (no
    temporary cache entry written beside it); one shared by two installers still downloads
    once, through a temporary entry the second one copies."""
    server = GateServer(linux_repo / "repository")
    try:
        with UpdateClient(server.url, _root(linux_repo)) as client:
            entries = client.targets_dir
            one = fetch_many(client, [(TargetSelection("deb"), tmp_path / "one")])
            assert sorted(p.name for p in entries.iterdir()) == []
            two = fetch_many(
                client,
                [
                    (TargetSelection("deb"), tmp_path / "a"),
                    (TargetSelection("rpm"), tmp_path / "b"),
                ],
            )
            kept = sorted(p.name for p in entries.iterdir())
    finally:
        server.close()
    published = linux_repo / "repository" / "targets"
    for f in [*one[0], *two[0], *two[1]]:
        assert f.local_path.read_bytes() == (published / f.spec.path).read_bytes()
    assert kept == sorted(f.info.hashes["sha512"] for f in two[0])
    assert server.target_requests() == {ORBIT: 2, OSQUERYD: 2}  # once per fetch_many
    assert not entries.exists()  # the temporary cache is gone with the client


def test_every_type_from_one_fetch_all_at_once(tmp_path: Path) -> None:
    """`package --type deb,rpm,msi,pkg --fleet-desktop`: the distinct target files of all four
    installers (six in the demo repository) are in progress at the server at once, each target
    is asked for once, and metadata is refreshed once."""
    repo = demo_repo(tmp_path / "demo")
    server = GateServer(repo / "repository")
    server.gate = min(6, MAX_PARALLEL)
    try:
        out = cli(
            "package", "--type", "deb,rpm,msi,pkg", "--fleet-desktop", "--update-url",
            server.url, "--update-roots", repo / "repository/root.json", "--cache-dir",
            tmp_path / "cache", "--fleet-url", "https://fleet.example.com", "--enroll-secret",
            "s", "--outdir", tmp_path / "out", "--json",
            env={"SOURCE_DATE_EPOCH": "1700000000"}, timeout=600,
        )  # fmt: skip
    finally:
        server.close()
    installers = json.loads(out.stdout)["installers"]
    assert [i["type"] for i in installers] == ["deb", "rpm", "msi", "pkg"]
    targets = server.target_requests()
    assert set(targets.values()) == {1}, targets
    assert len(targets) == 6, targets  # one per distinct file
    assert server.most_in_progress == server.gate
    assert server.requests["/timestamp.json"] == 1
    assert _leftovers(tmp_path / "cache") == []


# -- failures ----------------------------------------------------------------------------------


def _fetch_cli(server: GateServer, repo: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return cli(
        "fetch", "--type", "deb", "--fleet-desktop", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--cache-dir", tmp_path / "cache",
        "--outdir", tmp_path / "out" / "targets",
        env={"TMPDIR": str(tmpdir)}, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("first", ["404", "hash"])
def test_first_failure_in_target_order_is_reported(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path, first: str
) -> None:
    """osqueryd fails (404, or a body that does not match its hash) and desktop fails too --
    the other way -- before it, in time: the error is osqueryd's, exactly as fetching osqueryd
    alone reports it; no temporary file is left in the cache, no output, no staging."""
    if first == "404":
        gate_server.status[OSQUERYD] = 404
        gate_server.corrupt.add(DESKTOP)
    else:
        gate_server.corrupt.add(OSQUERYD)
        gate_server.status[DESKTOP] = 404
    gate_server.gate = 3
    gate_server.answer_after[OSQUERYD] = DESKTOP
    proc = _fetch_cli(gate_server, linux_repo, tmp_path)

    gate_server.gate = 0
    gate_server.answer_after.clear()
    with (
        UpdateClient(gate_server.url, _root(linux_repo), cache_dir=None) as alone,
        pytest.raises(FetchError) as expected,
    ):
        alone.fetch(OSQUERYD.removeprefix("/targets/"), tmp_path / "alone")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == [f"orbit-packager: error: {expected.value}"]
    assert "osqueryd" in proc.stderr and "desktop" not in proc.stderr
    assert gate_server.most_in_progress == 3  # desktop's failure was not waited for
    assert _leftovers(tmp_path / "cache") == []
    assert list((tmp_path / "out").iterdir()) == []  # no output, no staging directory
    assert list((tmp_path / "tmp").iterdir()) == []
    # orbit, checked before osqueryd's turn, stays cached for the next run; nothing else does
    orbit = (linux_repo / "repository" / ORBIT.removeprefix("/")).read_bytes()
    cached = [p.name for p in (tmp_path / "cache" / "targets").iterdir()]
    assert cached == [hashlib.sha512(orbit).hexdigest()]


# -- signals -----------------------------------------------------------------------------------


def _interrupt_when_held(
    gate_server: GateServer,
    argv: list[str],
    held: int,
    env: dict[str, str] | None = None,
    *,
    before_headers: bool = False,
) -> tuple[int, str, str, float]:
    """Run ``argv`` (Python's arguments) until ``held`` target bodies hold half-way at the
    server (or, ``before_headers``, ``held`` target requests wait for their first answer),
    then send SIGINT; (exit status, stdout, stderr, seconds from the signal to the exit). The
    child starts with SIGINT's default action, as from a shell, whatever this test runner
    does with it."""
    with subprocess.Popen(
        [sys.executable, *argv],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        with gate_server.cond:
            # One download at a time would hold here alone until the time is up.
            all_held = gate_server.cond.wait_for(
                lambda: (
                    (gate_server.in_progress if before_headers else gate_server.mid_body) == held
                ),
                GateServer.WAIT,
            )
        assert all_held, proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        stdout, stderr = proc.communicate(timeout=90)
        seconds = time.monotonic() - signalled
    return proc.returncode, stdout, stderr, seconds


def test_sigint_before_the_server_answers_exits_at_once(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """SIGINT while the three downloads still wait for the server's first answer (it holds
    them for 60 s, and nothing can shut down a socket no body is read from yet): the command
    exits 130 before the server answers any of them. The waiting threads are daemons, so
    they do not hold the exit back."""
    gate_server.gate = 99  # never reached: every response is held before its headers
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ORBIT_PACKAGER"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    argv = [
        "-m", "packager", "fetch", "--type", "deb", "--fleet-desktop", "--update-url",
        gate_server.url, "--update-roots", str(linux_repo / "repository" / "root.json"),
        "--outdir", str(tmp_path / "out"),
    ]  # fmt: skip
    returncode, _, stderr, seconds = _interrupt_when_held(
        gate_server, argv, 3, env, before_headers=True
    )
    with gate_server.cond:
        answered_before_exit = set(gate_server.answered)
    # Not held back until the client's own 30 s read timeout ends the waits (the exit itself
    # waits STOP_GRACE, 5 s, for threads that can be stopped; these cannot).
    assert seconds < 20, seconds
    assert returncode == 130, stderr
    assert answered_before_exit == set()  # it did not wait for the server
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cache", ["cache-dir", "no-cache"])
def test_sigint_while_the_targets_download_exits_130_leaving_nothing(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path, cache: str
) -> None:
    """SIGINT while all three downloads hold half-way through their bodies (the server would
    hold them for 60 s): the command exits 130 without waiting for them -- the main thread
    stops the worker threads, which remove their files -- with no temporary file in the cache
    or in TMPDIR."""
    gate_server.gate = 3
    gate_server.hold_mid_body = True
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "fleet.deb"
    out.parent.mkdir()
    cache_dir = tmp_path / "cache"
    extra = ["--no-cache"] if cache == "no-cache" else ["--cache-dir", str(cache_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ORBIT_PACKAGER"))}
    env.update(
        TMPDIR=str(tmpdir),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        ORBIT_PACKAGER_ENROLL_SECRET="s",
    )
    argv = [
        "package", "--type", "deb", "--fleet-desktop", "--tooling", "native",
        "--update-url", gate_server.url, "--update-roots",
        str(linux_repo / "repository" / "root.json"), "--fleet-url",
        "https://fleet.example.com", "--outfile", str(out), *extra,
    ]  # fmt: skip
    returncode, stdout, stderr, _ = _interrupt_when_held(
        gate_server, ["-m", "packager", *argv], 3, env
    )
    assert gate_server.answered == set()  # gone while the server still held every body
    assert returncode == 130, stderr
    assert stderr.splitlines()[-1] == "orbit-packager: aborted", stderr
    assert "Traceback" not in stderr and "Generated" not in stdout
    assert list(tmpdir.iterdir()) == []
    assert list(out.parent.iterdir()) == []
    if cache == "cache-dir":
        assert list((cache_dir / "targets").iterdir()) == []  # none finished, none partial


# -- progress ----------------------------------------------------------------------------------

_NO_BAR = """
import sys
from packager.fetch.http import RequestsFetcher
from packager.fetch.progress import download_progress
import packager.fetch.targets
with download_progress(RequestsFetcher(), enabled=False):
    pass
print("rich" in sys.modules)
"""

_BARS = """
import sys
from pathlib import Path
from packager.fetch.client import UpdateClient
from packager.fetch.progress import download_progress
from packager.fetch.targets import TargetSelection, fetch_agent_targets
url, root, dest = sys.argv[1], Path(sys.argv[2]).read_bytes(), Path(sys.argv[3])
with UpdateClient(url, root, cache_dir=None) as client:
    with download_progress(client.http, enabled=True):
        fetch_agent_targets(client, TargetSelection("deb", fleet_desktop=True), dest)
"""


def test_rich_is_imported_only_to_show_bars(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """Without a terminal no bar is shown and rich (~30 ms to import) is never loaded; with bars
    on, the parallel downloads each get theirs, complete."""
    quiet = subprocess.run(
        [sys.executable, "-c", _NO_BAR], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert quiet.stdout.strip() == "False", quiet.stderr
    gate_server.gate = 3
    shown = subprocess.run(
        [sys.executable, "-c", _BARS, gate_server.url, linux_repo / "repository/root.json",
         tmp_path / "root"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert gate_server.most_in_progress == 3
    published = linux_repo / "repository" / "targets"
    for path in (ORBIT, OSQUERYD, DESKTOP):
        size = (published / path.removeprefix("/targets/")).stat().st_size
        line = next(x for x in shown.stderr.splitlines() if path.removeprefix("/targets/") in x)
        assert f"{size}/{size} bytes" in line or f"{size / 1000:.1f}/{size / 1000:.1f} kB" in line


_LABELS = """
from packager.fetch.http import RequestsFetcher
from packager.fetch.progress import download_progress
fetcher = RequestsFetcher()
with download_progress(fetcher, enabled=True):
    fetcher.progress("http://127.0.0.1:1/repo/targets/orbit/linux/targets/orbit", 4, 8)
    fetcher.progress("http://127.0.0.1:1/repo/timestamp.json", 4, 8)
"""


def test_a_bar_is_labelled_with_the_target_path_and_only_targets_get_one() -> None:
    """The label is the target's path after the first /targets/ of the URL (a target may have
    /targets/ in its own path); metadata gets no bar."""
    shown = subprocess.run(
        [sys.executable, "-c", _LABELS], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    (line,) = [x for x in shown.stderr.splitlines() if x.strip()]
    assert line.split()[0] == "orbit/linux/targets/orbit", shown.stderr
    assert "4/8 bytes" in line


# -- verify ------------------------------------------------------------------------------------


def test_verify_checks_the_targets_at_once_reporting_in_order(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """`verify --download-dir`: every target of the repository (three files, each under its
    version and its channel) is in progress at the server at once, each asked for once; the
    report lists them in the metadata's order and the kept files are the published bytes."""
    from datetime import datetime, timedelta, timezone

    from packager.fetch.verify import verify_repository

    published = linux_repo / "repository" / "targets"
    paths = sorted(
        json.loads((linux_repo / "repository" / "targets.json").read_text())["signed"]["targets"]
    )
    assert len(paths) == 6 and MAX_PARALLEL >= 6  # all six can be in flight together
    gate_server.gate = 6
    kept = tmp_path / "kept"
    with UpdateClient(gate_server.url, _root(linux_repo)) as client:
        report = verify_repository(
            client, patterns=[], warn=timedelta(hours=1), now=datetime.now(timezone.utc),
            download_dir=kept,
        )  # fmt: skip
    assert gate_server.most_in_progress == gate_server.gate
    assert gate_server.target_requests() == {f"/targets/{p}": 1 for p in paths}
    assert [t["path"] for t in report.targets] == paths  # the metadata's (sorted) order
    assert all(t["ok"] for t in report.targets) and report.failures == []
    for path in paths:
        assert (kept / path).read_bytes() == (published / path).read_bytes()
    assert [p.name for p in kept.iterdir() if p.name.startswith(".")] == []


def test_verify_reports_each_failure_while_the_others_pass(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """One target tampered, one missing: both reported with their own error, the others kept."""
    from datetime import datetime, timedelta, timezone

    from packager.fetch.verify import verify_repository

    gate_server.corrupt.add(OSQUERYD)
    gate_server.status[DESKTOP] = 404
    kept = tmp_path / "kept"
    with UpdateClient(gate_server.url, _root(linux_repo)) as client:
        report = verify_repository(
            client, patterns=[], warn=timedelta(hours=1), now=datetime.now(timezone.utc),
            download_dir=kept,
        )  # fmt: skip
    bad = {str(t["path"]): t["error"] for t in report.targets if not t["ok"]}
    assert set(bad) == {OSQUERYD.removeprefix("/targets/"), DESKTOP.removeprefix("/targets/")}
    assert "does not match its TUF metadata" in str(bad[OSQUERYD.removeprefix("/targets/")])
    assert "404" in str(bad[DESKTOP.removeprefix("/targets/")])
    assert report.failures == [bad[p] for p in sorted(bad)]
    assert not (kept / OSQUERYD.removeprefix("/targets/")).exists()
    assert (kept / ORBIT.removeprefix("/targets/")).exists()


def test_sigint_while_verify_downloads_exits_130_leaving_nothing(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """SIGINT while six verify downloads hold half-way through their bodies: exit 130 at
    once, nothing under --download-dir (no partial file, no temporary directory)."""
    gate_server.gate = MAX_PARALLEL
    gate_server.hold_mid_body = True
    kept = tmp_path / "kept"
    kept.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ORBIT_PACKAGER"))}
    argv = [
        "verify", "--update-url", gate_server.url, "--update-roots",
        str(linux_repo / "repository" / "root.json"), "--download-dir", str(kept),
    ]  # fmt: skip
    returncode, stdout, stderr, _ = _interrupt_when_held(
        gate_server, ["-m", "packager", *argv], MAX_PARALLEL, env
    )
    assert stdout == ""
    assert gate_server.answered == set()  # gone while the server still held every body
    assert returncode == 130, stderr
    assert stderr.splitlines()[-1] == "orbit-packager: aborted", stderr
    assert "Traceback" not in stderr
    # no file, partial or temporary (the targets' directories are made before their downloads)
    assert [p for p in kept.rglob("*") if not p.is_dir()] == []
    assert [p for p in kept.iterdir() if p.name.startswith(".")] == []


_VERIFY_IN_A_LIBRARY = """
import os, sys, threading, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from packager import signals
from packager.fetch.client import UpdateClient
from packager.fetch.verify import verify_repository

url, root, kept = sys.argv[1:]
real_unlink = os.unlink


def slow_unlink(path, *args, **kwargs):
    # A slow disk: a download thread is still removing its partial file when the batch stops;
    # the caller must get the exception only once it is done.
    if threading.current_thread().name.startswith("orbit-packager-"):
        time.sleep(0.5)
    return real_unlink(path, *args, **kwargs)


os.unlink = slow_unlink
signals.install()
try:
    with UpdateClient(url, Path(root).read_bytes()) as client:
        verify_repository(client, patterns=[], warn=timedelta(hours=1),
                          now=datetime.now(timezone.utc), download_dir=Path(kept))
except signals.Interrupted:
    # A caller that goes on (publish verifies before it uploads): no download still running.
    alive = [t.name for t in threading.enumerate() if t.name.startswith("orbit-packager-")]
    print("interrupted; threads still running:", alive, flush=True)
"""


def test_verify_interrupted_in_a_library_caller_stops_its_downloads(
    linux_repo: Path, gate_server: GateServer, tmp_path: Path
) -> None:
    """verify_repository interrupted while six downloads hold half-way: when the exception
    reaches the caller, every download thread has stopped (a longer-lived caller does not
    keep downloading in the background)."""
    gate_server.gate = MAX_PARALLEL
    gate_server.hold_mid_body = True
    kept = tmp_path / "kept"
    root = linux_repo / "repository" / "root.json"
    argv = ["-c", _VERIFY_IN_A_LIBRARY, gate_server.url, str(root), str(kept)]
    _, stdout, stderr, _ = _interrupt_when_held(gate_server, argv, MAX_PARALLEL)
    assert stdout == "interrupted; threads still running: []\n", (stdout, stderr)
    assert gate_server.answered == set()
