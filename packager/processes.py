"""Run the builds of one command side by side, each in a child process of its own.

Why processes and not threads: a thread cannot be stopped. On a signal the threads' builds ran
to their end (a deb's compression, or an nfpm that never finishes) before the command could
exit; a process is told to stop and stops within seconds, its nfpm with it. And a build of a
command that was killed outright stops too, instead of building for nobody. Speed is the same:
on a quiet 2-core machine both ways reach the CPU floor (four types in 12.3 s with processes,
12.1 s with threads, against 11.7 and 11.9 s of CPU over 2 cores; `make bench --only all`).

``spawn``, not ``fork``: the parent has threads by then (the deflate pool, the HTTP client's),
and a forked child inherits their locks in whatever state they were. A job reaches its child
through a pipe, pickled (the enroll secret is in it: never in a child's arguments or
environment). A child's failure comes back the same way and is raised in the parent, the first
in the order the jobs were given, once every child has ended (as the threads did).

A signal stops every child: the parent terminates them (SIGTERM, which each child turns into
:class:`packager.signals.Interrupted`, so a running nfpm is stopped too) and waits for them
before the caller removes their stages. A child whose parent dies (SIGKILL) gets SIGTERM from
the kernel (``PR_SET_PDEATHSIG``), so no build goes on for nobody.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from packager import signals
from packager.errors import PackagerError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

T = TypeVar("T")

STOP_GRACE = 15.0  # seconds a terminated child has to clean up before it is killed
_PR_SET_PDEATHSIG = 1


class ChildProcessLost(PackagerError):
    """A child ended without reporting: killed from outside (the out-of-memory killer, say) or
    its interpreter crashed."""


def run_each(fn: Callable[[T], None], jobs: Sequence[T]) -> None:
    """``fn(job)`` for every job at once, each in a child process; returns when every child has
    ended and raises the first failure in ``jobs``' order. ``fn`` must be a module-level
    function and each job picklable."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    children: list[tuple[BaseProcess, Connection]] = []
    try:
        for index, job in enumerate(jobs):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(
                target=_child_main,
                args=(fn, job, send, os.getpid()),
                name=f"orbit-packager-build-{index}",
            )
            child.start()
            send.close()  # the child holds the other end: EOF when it ends without a word
            children.append((child, receive))
        outcomes = [_outcome(child, receive) for child, receive in children]
    except BaseException:
        _stop(children)
        raise
    for outcome in outcomes:
        if outcome is not None:
            raise outcome


def _outcome(child: BaseProcess, receive: Connection) -> BaseException | None:
    try:
        outcome = receive.recv()
    except EOFError:
        child.join()
        code = child.exitcode
        how = (
            f"by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"with status {code}"
        )
        return ChildProcessLost(
            f"a build process ended {how} before it finished",
            hint="was it killed from outside, by the out-of-memory killer for one?",
        )
    finally:
        receive.close()
    child.join()
    return outcome if isinstance(outcome, BaseException) else None


def _stop(children: list[tuple[BaseProcess, Connection]]) -> None:
    """Terminate every child still running and wait for it (killed after STOP_GRACE)."""
    for child, _ in children:
        if child.exitcode is None:
            child.terminate()
    for child, receive in children:
        child.join(STOP_GRACE)
        if child.exitcode is None:
            child.kill()
            child.join()
        receive.close()


def _child_main(fn: Callable[[T], None], job: T, send: Connection, parent: int) -> None:
    signals.install()
    _die_with(parent)
    outcome: BaseException | None = None
    try:
        signals.raise_pending()
        fn(job)
    except BaseException as exc:  # reported to the parent, which raises it
        outcome = exc
        if os.environ.get("ORBIT_PACKAGER_DEBUG") and not isinstance(exc, signals.Interrupted):
            import traceback

            traceback.print_exc()
    try:
        _report(send, outcome)
    except OSError:  # the parent stopped listening (it is stopping us): nobody to tell
        pass
    finally:
        send.close()


def _report(send: Connection, outcome: BaseException | None) -> None:
    import pickle

    try:
        message = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle: its type and text still reach the user
        message = pickle.dumps(RuntimeError(f"{type(outcome).__name__}: {outcome}"))
    send.send_bytes(message)


def _die_with(parent: int) -> None:
    """Receive SIGTERM when the parent dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # died before prctl: nobody would ever get the result
        os._exit(128 + signal.SIGTERM)
