"""SIGINT, SIGTERM and SIGHUP stop a command the way an error does: the exception unwinds the
stack, so every ``finally`` and ``with`` removes what the command created (the private build
directory, a ``--no-cache`` cache, temporary names beside the output), and the process exits
128 + the signal number (130, 143, 129).

* :func:`install` (the command line's entry point calls it first) makes the three signals raise
  :class:`Interrupted`. The first signal raises; more signals in the next seconds are ignored,
  so cleanup runs to the end (a signal after that raises again: an exception swallowed by
  third-party code must not leave a process that only SIGKILL stops).
* :func:`deferred` holds signals back while code must not be interrupted -- e.g. importing a C++
  extension such as lief (no longer imported at run time), whose module initialisation aborts
  the process (exit 134) when an exception surfaces in the middle of it. The signal is acted
  on when the block ends. It also blocks the signals at the thread level, so this holds even
  before :func:`install` has run.
* A signal raised from a handler can land between a lock's ``acquire()`` and the ``try`` that
  would release it (``tempfile``'s first call holds one that way): cleanup that needs the lock
  again would wait for ever. So the first raise also arms a watchdog (SIGALRM, which interrupts
  a blocked lock acquisition): if the process has not exited :data:`WATCHDOG` seconds later, it
  says where it was stuck and exits 128 + signo at once. :func:`prepare_modules` makes
  ``tempfile`` initialise its module state while signals are held back.
* An Interrupted raised inside a weakref callback or a ``__del__`` (importlib runs one at
  every import) is swallowed by Python ("Exception ignored in ..."): the unraisable hook raises
  it again 10 ms later from ordinary code, so the command still stops (CI once lost a SIGTERM
  this way: the build went on and failed later with exit 4).
* :func:`finishing` marks the instant a command's result is put in place (the installer renamed
  to its final name): from then on signals are ignored and the command completes and exits 0,
  so an output file exists and "Generated ..." is printed exactly when the exit status is 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CLEANUP_GRACE = 5.0  # seconds after a raise during which further signals are ignored
WATCHDOG = 60  # seconds after a raise by which the process must have exited


class Interrupted(BaseException):
    """A handled signal arrived; unwinding cleans up, then the process exits 128 + signo.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` never swallows it."""

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int]]:
        # A build process reports it to its parent pickled (packager.processes).
        return (Interrupted, (self.signo,))

    @property
    def exit_code(self) -> int:
        return 128 + self.signo

    @property
    def message(self) -> str:
        # SIGINT keeps the wording Ctrl-C always had.
        if self.signo == signal.SIGINT:
            return "aborted"
        return f"aborted by {signal.Signals(self.signo).name}"


class _State:
    installed = False
    deferring = 0
    pending: int | None = None  # a signal that arrived while deferring
    raised_at: float | None = None  # when Interrupted was last raised (cleanup is running)
    watchdog: int | None = None  # the signal the armed watchdog exits for
    redeliver: int | None = None  # an Interrupted that Python swallowed, raised again soon
    finished = False  # the result is in place: signals are ignored


_state = _State()


def _stopping() -> bool:
    return _state.raised_at is not None and time.monotonic() - _state.raised_at < CLEANUP_GRACE


def _raise(signo: int) -> None:
    _state.raised_at = time.monotonic()
    _arm_watchdog(signo)
    raise Interrupted(signo)


def _arm_watchdog(signo: int) -> None:
    if _state.watchdog is not None or threading.current_thread() is not threading.main_thread():
        return
    _state.watchdog = signo
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG)


def _swallowed(unraisable: Any) -> None:
    """sys.unraisablehook: an Interrupted raised where Python cannot propagate it (a weakref
    callback such as importlib's module-lock cleanup, a ``__del__``) would be printed as
    "Exception ignored" and lost -- the command would go on as if never interrupted. Raise it
    again moments later, from ordinary code (SIGALRM, which the watchdog also uses)."""
    exc = unraisable.exc_value
    if isinstance(exc, Interrupted) and not _state.finished:
        _state.redeliver = exc.signo
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def _alarm(signo: int, frame: FrameType | None) -> None:
    if _state.redeliver is not None:
        redeliver, _state.redeliver = _state.redeliver, None
        _state.raised_at = time.monotonic()
        signal.alarm(WATCHDOG)  # the watchdog again, from now
        raise Interrupted(redeliver)
    _watchdog_fired(signo, frame)


def _watchdog_fired(_signo: int, frame: FrameType | None) -> None:
    signo = _state.watchdog or signal.SIGTERM
    where = "unknown"
    if frame is not None:
        code = frame.f_code
        where = f"{Path(code.co_filename).name}:{frame.f_lineno} in {code.co_name}"
    message = (
        f"orbit-packager: cleanup after {signal.Signals(signo).name} did not finish in"
        f" {WATCHDOG}s (stuck at {where}); exiting, temporary files may remain\n"
    )
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), message.encode())
    os._exit(128 + signo)


def _handle(signo: int, _frame: FrameType | None) -> None:
    if _state.finished or _stopping():
        return
    if _state.deferring:
        if _state.pending is None:
            _state.pending = signo
        return
    _raise(signo)


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    for signo in HANDLED:
        if signal.getsignal(signo) is not signal.SIG_IGN:
            # An ignored signal stays ignored, as Python itself does for SIGINT: SIGHUP under
            # nohup, SIGINT for `cmd &` in a non-interactive shell.
            signal.signal(signo, _handle)
    sys.unraisablehook = _swallowed
    _state.installed = True


def prepare_modules() -> None:
    """Make tempfile's first calls with signals held back (call right after :func:`install`).

    Those calls take a module lock between ``acquire()`` and ``try``: a signal raised exactly
    there would leave it held, and the cleanup's own temporary-file calls would wait for it."""
    with deferred(), contextlib.suppress(OSError):
        tempfile.gettempdir()
        next(tempfile._get_candidate_names())  # type: ignore[attr-defined]


def raise_pending() -> None:
    """Raise :class:`Interrupted` for a signal that arrived while it was deferred."""
    if _state.pending is not None and not _state.finished and not _state.deferring:
        signo, _state.pending = _state.pending, None
        _raise(signo)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for the block; act on them when it ends."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.finished:
            # A signal blocked meanwhile is delivered here: to the handler once nothing defers.
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            raise_pending()


def finishing() -> None:
    """The command's result is about to be put in place: complete, whatever signal comes.

    The signals stay blocked from here to the exit, through the interpreter's finalization
    (which puts the default actions back: a signal there would kill the process after
    "Generated ..." was printed). Only where :func:`install` ran: a program using the library
    keeps its own signal handling."""
    if not _state.installed:
        return
    _state.finished = True
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
