"""The worker threads of a command's downloads (``fetch_many``, ``verify``).

Daemon threads: one still waiting for a server's first answer (only a timeout ends that wait,
and it holds no file yet) does not keep a failed or interrupted command from exiting. Signals
stay blocked in them from their first instruction: they are for the main thread
(packager.signals raises Interrupted there), and one the kernel handed to a worker would go
unnoticed while the main thread waits. Each job reports through its own Future; the main
thread waits on those in its own order and, on a failure or a signal, calls :func:`stop`.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future

from packager import signals
from packager.fetch.http import CancelToken

MAX_PARALLEL = 6  # downloads at once: enough to fill a link, few enough for any server
STOP_GRACE = 5.0  # seconds a failed or interrupted batch waits for its threads to stop

_WORKER_BLOCKED = {*signals.HANDLED, signal.SIGALRM}


def start(jobs: Sequence[Callable[[], None]], name: str) -> list[threading.Thread]:
    """Run ``jobs``, earliest first, on at most MAX_PARALLEL daemon threads. A job never
    raises: it records its outcome itself (in its Future)."""
    work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    for job in jobs:
        work.put(job)
    threads = []
    for number in range(min(MAX_PARALLEL, len(jobs))):
        thread = threading.Thread(
            target=_worker, args=(work,), name=f"orbit-packager-{name}-{number}", daemon=True
        )
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_BLOCKED)
        try:
            thread.start()  # with the signals blocked from its first instruction
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        threads.append(thread)
    return threads


def _worker(work: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        try:
            job = work.get_nowait()
        except queue.Empty:
            return
        job()


def stop(
    token: CancelToken, futures: Iterable[Future[None]], threads: list[threading.Thread]
) -> None:
    """Stop every download of a failed or interrupted batch and wait (at most STOP_GRACE)
    until the threads removed their files. Signals wait meanwhile: a second Ctrl-C must not
    let the caller remove a directory a thread is still writing into."""
    with signals.deferred():
        for future in futures:
            future.cancel()  # not started yet: never starts
        token.cancel()
        deadline = time.monotonic() + STOP_GRACE
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
