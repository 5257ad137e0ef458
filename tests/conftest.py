from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TEST_PASSPHRASES, FaultServer, cli, demo_repo


@pytest.fixture
def server(repo: Path) -> Iterator[FaultServer]:
    """The module's own ``repo`` fixture, served on 127.0.0.1 for one test."""
    srv = FaultServer(repo / "repository")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FaultServer]]:
    """The demo update repository (fixtures/demo-repo), served on 127.0.0.1 for one module."""
    repo = demo_repo(tmp_path_factory.mktemp("demo") / "repo")
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


@pytest.fixture(scope="session")
def _initialized_template(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """One initialized repository per consistent-snapshot mode, copied by each test."""
    out = {}
    for cs in (False, True):
        path = tmp_path_factory.mktemp(f"template-cs{int(cs)}") / "repo"
        flags = ["--consistent-snapshot"] if cs else []
        cli("updates", "init", "--path", path, *flags, env=TEST_PASSPHRASES)
        out[cs] = path
    return out


@pytest.fixture
def new_repo(_initialized_template: dict[bool, Path], tmp_path: Path):
    """Factory: a fresh copy of an initialized repository (keys use TEST_PASSPHRASES)."""

    def make(consistent_snapshot: bool = False) -> Path:
        dest = tmp_path / f"repo-cs{int(consistent_snapshot)}"
        shutil.copytree(_initialized_template[consistent_snapshot], dest)
        return dest

    return make
