"""Issue 15, flag compatibility: scripts written for `fleetctl package` run unchanged.

fleetctl parses with urfave/cli over Go's flag package: `--service=false`, `--debug=1` and
`-fleet-url URL` (one dash) are valid there, and its usage calls the Fleet URL "URL
(host:port)". The oracle for "the same meaning" is reproducibility: a build written in Go's
syntax is byte for byte the build written in ours (same SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest

from tests.helpers import FaultServer, cli

SDE = "1700000000"


def _package(
    served: tuple[Path, FaultServer], out: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    repo, server = served
    return cli(
        "package", "--type", "deb", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache", "--outfile", out, *flags,
        env={"SOURCE_DATE_EPOCH": SDE, **(env or {})}, check=False, timeout=300,
    )  # fmt: skip


def _env_file(deb: Path, tmp_path: Path) -> str:
    dest = tmp_path / f"x-{deb.stem}"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return (dest / "etc/default/orbit").read_text()


def test_go_syntax_builds_the_same_installer(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    ours = _package(
        served, tmp_path / "ours.deb",
        "--fleet-url", "https://fleet.example.com:8443", "--enroll-secret=-debug",
        "--no-service", "--debug", "--disable-updates",
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    go = _package(
        served, tmp_path / "go.deb",
        "-fleet-url", "fleet.example.com:8443", "--enroll-secret", "-debug",
        "--service=false", "-debug=1", "--disable-updates=T", "--enable-scripts=false",
        env={"FLEETCTL_ENABLE_SCRIPTS": "true"},  # the explicit =false wins over the variable
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    assert (tmp_path / "go.deb").read_bytes() == (tmp_path / "ours.deb").read_bytes()
    assert (
        "orbit-packager: note: --fleet-url 'fleet.example.com:8443' has no scheme: using "
        "'https://fleet.example.com:8443'\n"
    ) in go.stderr
    env = _env_file(tmp_path / "go.deb", tmp_path)
    assert 'ORBIT_FLEET_URL="https://fleet.example.com:8443"' in env
    assert 'ORBIT_ENROLL_SECRET="-debug"' in env  # a value is never read as a flag
    assert 'ORBIT_DEBUG="true"' in env
    assert "ENABLE_SCRIPTS" not in env


def test_environment_true_and_flag_absent(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    """The variable alone still turns the option on (Go's ParseBool spelling)."""
    out = _package(
        served, tmp_path / "e.deb", "--fleet-url", "https://f.example.com", "--enroll-secret", "s",
        env={"FLEETCTL_ENABLE_SCRIPTS": "TRUE"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert 'ORBIT_ENABLE_SCRIPTS="true"' in _env_file(tmp_path / "e.deb", tmp_path)


@pytest.mark.parametrize("value", ["yes!", "", "2", "on"])
def test_a_boolean_that_go_would_refuse(value: str, tmp_path: Path) -> None:
    out = cli("package", "--type", "deb", f"--debug={value}", check=False, cwd=tmp_path)
    assert out.returncode == 2
    assert f"{value!r} is not a boolean: use --debug=true or --debug=false" in out.stderr
    assert list(tmp_path.iterdir()) == []


def _commands() -> list[tuple[str, click.Command]]:
    from packager.cli import cli as root

    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        found.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", root)
    return found


@pytest.mark.parametrize("name,command", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help(name: str, command: click.Command) -> None:
    missing = [
        p.opts[0]
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert missing == [], f"{name or 'orbit-packager'}: {missing}"


def test_package_help_is_grouped_and_names_the_variables() -> None:
    out = cli("package", "--help").stdout
    titles = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert titles[-5:] == [
        "Target:", "Fleet and Orbit settings:", "Updates:", "Signing (pkg):", "Output and build:",
    ]  # fmt: skip
    section = out.split("Fleet and Orbit settings:")[1].split("Updates:")[0]
    assert "--fleet-url" in section and "ORBIT_PACKAGER_FLEET_URL" in section
    for variable in (
        "FLEETCTL_ENABLE_SCRIPTS",
        "FLEETCTL_END_USER_EMAIL",
        "ORBIT_PACKAGER_TIMEOUT",
    ):
        assert variable in out
