"""pytest plugin for ``mutate/derive_map.py``: label coverage data with the running test.

Each test phase switches coverage's context to ``<node id>|setup``, ``|call`` or ``|teardown``,
in this process and -- through ``MUTATE_COV_CONTEXT``, which the coverage configuration reads as
its static context -- in every child process a test starts (the tests run the real command line
as ``python -m packager``). Lines run outside any test (imports while test files are collected)
get the empty context, and the harness runs the whole test file for them.

A module, class or session fixture is set up once, during the set-up of whichever test needs it
first, and every later test that uses it depends on what it built. So each test's shared
(not function-scoped) fixtures are recorded too: lines run while setting up or tearing down one
test stand for every test of the file that shares one of its fixtures.

With ``MUTATE_COV_DURATIONS`` set, each test's duration (set-up, call and teardown) and shared
fixtures are written there as JSON when the session ends.
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
_shared: dict[str, list[str]] = {}


def _shared_fixtures(item: pytest.Item) -> list[str]:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    return sorted(name for name, chain in defs.items() if chain and chain[-1].scope != "function")


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
    _shared[item.nodeid] = _shared_fixtures(item)
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
            json.dump({"durations": _durations, "shared": _shared}, f)
