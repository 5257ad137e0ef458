"""Fixtures of the acceptance suite: a Docker engine (required: a missing engine fails the suite,
it never skips), the systemd image, the stand-in agent in three versions, a real update
repository with them, and every package the scenarios install."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.fleet_layout import build_fleet_packages
from tests.acceptance.machine import START_HINT, Machine, engine_problem, image
from tests.helpers import TEST_PASSPHRASES, FaultServer, add_target, cli

HERE = Path(__file__).resolve().parent
FLEET_URL = "https://fleet.example.com"
# Every character a shell, systemd's EnvironmentFile parser or a Go template could take apart,
# and a trailing space: the agent must receive exactly this.
SECRET = "se\"c $HOME `id` \\ # 'q' ; %s ${X} "
FLEETCTL_SECRET = "fleetctl-plain-secret"  # fleetctl does not quote its env file
FORMATS = ("deb", "rpm", "pkg.tar.zst")
FLEETCTL_FORMATS = ("deb", "rpm")  # fleet_layout.py models these


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.acceptance)


@dataclass(frozen=True)
class Packages:
    directory: Path  # mounted at /pkgs in every machine
    update_url: str

    def env(self, channel: str = "stable") -> dict[str, str]:
        """The ORBIT_* environment our packages must give the agent, written out literally."""
        return {
            "ORBIT_UPDATE_URL": self.update_url,
            "ORBIT_ORBIT_CHANNEL": channel,
            "ORBIT_OSQUERYD_CHANNEL": "stable",
            "ORBIT_UPDATE_INTERVAL": "15m0s",
            "ORBIT_FLEET_URL": FLEET_URL,
            "ORBIT_ENROLL_SECRET": SECRET,
        }

    def fleetctl_env(self) -> dict[str, str]:
        return {**self.env(), "ORBIT_ENROLL_SECRET": FLEETCTL_SECRET}


@pytest.fixture(scope="session")
def systemd_image() -> str:
    problem = engine_problem()
    if problem:
        pytest.fail(f"acceptance tests need a Docker engine: {problem}; {START_HINT}")
    return image()


@pytest.fixture(scope="session")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stand-in agent (agent/standin.c) in versions 1.0.0, 2.0.0 and 3.0.0."""
    out = tmp_path_factory.mktemp("agents")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("the stand-in agent needs a C compiler: apt-get install gcc libc6-dev")
    built = {}
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        exe = out / f"orbit-{version}"
        subprocess.run(
            [cc, "-static", "-O2", "-Wall", "-Werror", f'-DSTANDIN_VERSION="{version}"',
             "-o", str(exe), str(HERE / "agent/standin.c")],
            check=True,
        )  # fmt: skip
        built[version] = exe
    return built


@pytest.fixture(scope="session")
def packages(
    agents: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Packages]:
    """Our packages, built by the real CLI from a real repository as it gains versions:
    v1 (orbit 1.0.0, stable), v1-noservice, v2 (2.0.0, stable), v3-edge (3.0.0 on edge); and
    fleetctl-laid-out packages of 1.0.0 and 2.0.0."""
    work = tmp_path_factory.mktemp("acceptance")
    pkgs = work / "pkgs"
    pkgs.mkdir()
    repo = work / "repo"
    cli("updates", "init", "--path", repo, env=TEST_PASSPHRASES)
    add_target(repo, agents["1.0.0"], "osqueryd", "linux", "5.0.0", "stable")
    server = FaultServer(repo / "repository")
    try:
        built = Packages(pkgs, server.url)

        def package(name: str, kind: str, *extra: str) -> Path:
            out = pkgs / f"{name}.{kind}"
            cli("package", "--type", kind, "--update-url", server.url,
                "--update-roots", repo / "repository/root.json", "--fleet-url", FLEET_URL,
                "--no-cache", "--outfile", out, *extra,
                env={"ORBIT_PACKAGER_ENROLL_SECRET": SECRET})  # fmt: skip
            return out

        add_target(repo, agents["1.0.0"], "orbit", "linux", "1.0.0", "stable")
        for kind in FORMATS:
            package("v1", kind)
            package("v1-noservice", kind, "--no-service")
        add_target(repo, agents["2.0.0"], "orbit", "linux", "2.0.0", "stable")
        for kind in FORMATS:
            package("v2", kind)
        add_target(repo, agents["3.0.0"], "orbit", "linux", "3.0.0", "edge")
        for kind in FORMATS:
            package("v3-edge", kind, "--orbit-channel", "edge")
        for version, ours in (("1.0.0", "v1"), ("2.0.0", "v2")):
            scratch = work / f"fleetctl-{version}"
            scratch.mkdir()
            build_fleet_packages(pkgs / f"{ours}.deb", built.fleetctl_env(), version, pkgs, scratch)
        yield built
    finally:
        server.close()


@pytest.fixture
def machine(systemd_image: str, packages: Packages) -> Iterator[Callable[[], Machine]]:
    """Factory of freshly booted machines (most tests need one; some run two side by side)."""
    started: list[Machine] = []

    def boot() -> Machine:
        m = Machine(systemd_image, packages.directory)
        started.append(m)
        return m

    yield boot
    for m in started:
        m.close()
