"""pytest plugin for ``mutate/derive_map.py``: label coverage data with the running test.

Each test phase switches coverage's context to ``<node id>|setup``, ``|call`` or ``|teardown``,
in this process and -- through ``MUTATE_COV_CONTEXT``, which the coverage configuration reads as
its static context -- in every child process a test starts (the tests run the real command line
as ``python -m packager``). A module or session fixture is set up once, for whichever test
comes first: its lines are tied to that test. Lines run outside any test (imports while test
files are collected) get the empty context, and the harness runs the whole test file for them.

With ``MUTATE_COV_DURATIONS`` set, each test's duration (set-up, call and teardown) is written
there as JSON when the session ends.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator

import pytest

ENV = "MUTATE_COV_CONTEXT"
DURATIONS_ENV = "MUTATE_COV_DURATIONS"
_durations: dict[str, float] = {}


def _switch(label: str) -> None:
    os.environ[ENV] = label
    try:  # not a project dependency: derive_map puts it on PYTHONPATH
        coverage = importlib.import_module("coverage")
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context(label)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _switch(f"{item.nodeid}|setup")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _switch(f"{item.nodeid}|call")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    _switch(f"{item.nodeid}|teardown")
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(DURATIONS_ENV)
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump(_durations, f)
