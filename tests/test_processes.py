"""packager.processes: the builds of one run, each in a child process.

The jobs below run in spawned children, so they are module-level functions taking picklable
arguments. End to end (signals, a killed parent, a failing nfpm): tests/test_local_attacks.py
``-k "several_builds or end_with_the_command or one_failed_build"``."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path

import pytest

from packager.errors import EXIT_CORRUPT, CorruptRepositoryError
from packager.processes import ChildProcessLost, run_each
from packager.signals import Interrupted


def _meet(job: tuple[Path, str, int]) -> None:
    """Arrive at the meeting directory, then wait until all ``n`` have arrived."""
    where, name, n = job
    (where / name).touch()
    deadline = time.monotonic() + 30
    while len(list(where.iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: the others never came")
        time.sleep(0.01)


def test_every_job_runs_at_the_same_time(tmp_path: Path) -> None:
    """Each job waits for all the others: run one after the other, none would ever finish."""
    run_each(_meet, [(tmp_path, f"job{i}", 4) for i in range(4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"job{i}" for i in range(4)]


def _fail_after(job: tuple[float, str]) -> None:
    delay, name = job
    time.sleep(delay)
    if name:
        raise CorruptRepositoryError(f"{name} failed", hint=f"fix {name}")


def test_the_first_failure_in_the_jobs_order_is_raised_with_all_it_carries() -> None:
    """The second job fails first in time; the first job's failure is the one raised, of its
    own type, with its message, hint and exit code."""
    with pytest.raises(CorruptRepositoryError) as raised:
        run_each(_fail_after, [(0.0, ""), (0.8, "second"), (0.0, "third")])
    assert str(raised.value) == "second failed (fix second)"
    assert raised.value.exit_code == EXIT_CORRUPT


def _killed(_job: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_killed_from_outside_is_named() -> None:
    with pytest.raises(ChildProcessLost, match="ended by SIGKILL before it finished"):
        run_each(_killed, [1])


class _Unpicklable(Exception):
    def __init__(self, text: str, handle: object) -> None:
        super().__init__(text)
        self.handle = handle


def _raise_unpicklable(_job: int) -> None:
    raise _Unpicklable("with a lock inside", __import__("threading").Lock())


def test_an_exception_that_does_not_pickle_still_reports_its_type_and_text() -> None:
    with pytest.raises(RuntimeError, match=r"^_Unpicklable: with a lock inside$"):
        run_each(_raise_unpicklable, [1])


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_crosses_a_pipe(signo: int) -> None:
    """A build process stopped by a signal reports it; the parent exits as for that signal."""
    again = pickle.loads(pickle.dumps(Interrupted(signo)))  # noqa: S301 (our own bytes)
    assert isinstance(again, Interrupted)
    assert (again.signo, again.exit_code) == (signo, 128 + signo)
