"""The benchmark's machinery: a counting HTTP server, interleaved pair timing, verdicts, output."""

from __future__ import annotations

import collections
import http.server
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

LABEL_WIDTH = 20


class CountingServer:
    """A threaded HTTP server on 127.0.0.1 serving a directory, counting body bytes per path."""

    def __init__(self, directory: Path) -> None:
        self.bytes_served: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def copyfile(self, source: Any, outputfile: Any) -> None:
                path = self.path.split("?", 1)[0]
                while chunk := source.read(1 << 20):
                    outputfile.write(chunk)
                    with owner._lock:
                        owner.bytes_served[path] += len(chunk)

        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory))
        )
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.bytes_served)

    def target_bytes_since(self, before: collections.Counter[str]) -> dict[str, int]:
        """Bytes sent per /targets/ path since ``before`` (a snapshot)."""
        now = self.snapshot()
        return {
            p: now[p] - before[p]
            for p in sorted(now)
            if p.startswith("/targets/") and now[p] > before[p]
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class CpuClock:
    """CPU seconds (user + system) of every child process waited for so far."""

    @staticmethod
    def now() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def run_timed(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, shell: bool = False
) -> float:
    """Wall seconds of one child process; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    proc = subprocess.run(
        argv if not shell else ["/bin/sh", "-c", argv[0]],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}): {out[-2000:]}")
    return seconds


class BenchError(RuntimeError):
    """The benchmark itself could not run (a command failed, an input is missing)."""


@dataclass
class PairTimes:
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.base, strict=True)]


def interleave(
    ours: Callable[[], float],
    base: Callable[[], float],
    rounds: int,
    before_each: Callable[[], None] | None = None,
) -> PairTimes:
    """Run the pair A B A B … ``rounds`` times; each callable returns its own seconds, so
    setup and cleanup around the timed command stay out of the figure."""
    times = PairTimes()
    for _ in range(rounds):
        for side, fn in ((times.ours, ours), (times.base, base)):
            if before_each is not None:
                before_each()
            side.append(fn())
    return times


@dataclass
class Result:
    """One line of the table: a ratio against a baseline, or an absolute figure."""

    name: str  # for --only
    label: str
    goal: float
    unit: str  # "ratio" (ours / baseline), "MiB" or "bytes" (absolute)
    value: float  # the figure judged against the goal
    ours_min: float | None = None
    ours_median: float | None = None
    base_label: str = ""
    base_min: float | None = None
    base_median: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return meets_goal(self.value, self.goal)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def meets_goal(value: float, goal: float) -> bool:
    """Every goal is an upper bound (a ratio, MiB, or 0 bytes)."""
    return value <= goal


def ratio_result(name: str, label: str, base_label: str, times: PairTimes, goal: float) -> Result:
    """Min and median of each side, judged on the median of the per-pair ratios (a pair runs
    back to back, so it shares the machine's load of the moment)."""
    return Result(
        name=name,
        label=label,
        goal=goal,
        unit="ratio",
        value=statistics.median(times.ratios),
        ours_min=min(times.ours),
        ours_median=statistics.median(times.ours),
        base_label=base_label,
        base_min=min(times.base),
        base_median=statistics.median(times.base),
    )


def format_line(r: Result) -> str:
    verdict = "ok" if r.ok else "MISSED"
    if r.unit == "ratio":
        body = (
            f"ours {r.ours_median:.2f} s (min {r.ours_min:.2f})  "
            f"{r.base_label} {r.base_median:.2f} s (min {r.base_min:.2f})  "
            f"ratio {r.value:.2f}  goal ≤ {r.goal:.2f}"
        )
    elif r.unit == "MiB":
        body = f"ours {r.value:.0f} MiB  goal ≤ {r.goal:.0f} MiB"
    else:
        body = f"ours {r.value:.0f} bytes  goal ≤ {r.goal:.0f} bytes"
    note = f"  ({r.note})" if r.note else ""
    return f"{r.label:<{LABEL_WIDTH}}{body}  {verdict}{note}"


def exit_status(results: list[Result]) -> int:
    """1 when any goal is missed, 0 otherwise."""
    return 0 if all(r.ok for r in results) else 1
