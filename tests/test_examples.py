"""examples/: the systemd units, the crontab and the docker line run a command our CLI accepts."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import ROOT

EXAMPLES = ROOT / "examples"
SERVICE = EXAMPLES / "fleet-tuf-timestamp.service"
TIMER = EXAMPLES / "fleet-tuf-timestamp.timer"
CRONTAB = EXAMPLES / "crontab"
BINARY = "/usr/local/bin/orbit-packager"
COMMAND = [
    "updates", "timestamp", "--path", "/var/lib/fleet-tuf", "--if-expiring-within", "72h",
    "--publish", "s3://my-bucket/tuf",
]  # fmt: skip


def _unit(path: Path) -> configparser.ConfigParser:
    # systemd allows repeated keys (EnvironmentFile=): keep the last, as strict=False does
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def _unit_values(path: Path, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section`` (systemd keys repeat)."""
    values, current = [], None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


@cache
def _timestamp_help() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "packager", "updates", "timestamp", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout


def _orbit_packager_argv(words: list[str]) -> list[str]:
    """The orbit-packager invocation in a shell word list, up to the first shell operator."""
    start = next(i for i, w in enumerate(words) if w.endswith("orbit-packager"))
    argv = []
    for word in words[start:]:
        if word in ("||", "&&", ";", "|", "2>&1") or word.startswith(("|", ";")):
            break
        argv.append(word)
    return argv


def _check_flags(argv: list[str]) -> None:
    help_text = _timestamp_help()
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    assert flags, argv
    assert "--if-expiring-within" in help_text  # the real help text, not an error
    for flag in flags:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text), (
            f"{flag} is not an option of `orbit-packager updates timestamp`"
        )


def test_every_flag_of_the_examples_is_an_option_of_timestamp() -> None:
    """The examples all run COMMAND (checked below). --publish comes with `updates publish`:
    this fails until `updates timestamp` has it."""
    _check_flags(COMMAND)


def test_the_flag_check_catches_an_unknown_flag() -> None:
    with pytest.raises(AssertionError, match="--if-expiring-withn is not an option"):
        _check_flags(["--if-expiring-withn", "72h"])
    _check_flags(["--path", "x", "--if-expiring-within", "72h", "--timestamp-expiration=1h"])


def test_service_runs_the_command() -> None:
    unit = _unit(SERVICE)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == BINARY and argv[1:] == COMMAND


def test_service_settings() -> None:
    service = _unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == "fleet-tuf"
    assert "DynamicUser" not in service
    assert _unit_values(SERVICE, "Service", "EnvironmentFile")[0] == "/etc/fleet-tuf/timestamp.env"
    path = COMMAND[COMMAND.index("--path") + 1]
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == path
    for key in ("PrivateTmp", "NoNewPrivileges", "ProtectHome"):
        assert service[key] == "yes", key
    assert "Install" not in _unit(SERVICE)  # started by the timer only


def test_timer_settings() -> None:
    timer = _unit(TIMER)["Timer"]
    assert timer["OnCalendar"] == "hourly"
    assert timer["Persistent"] == "true"
    assert timer["RandomizedDelaySec"]
    assert _unit(TIMER)["Install"]["WantedBy"] == "timers.target"
    assert "Unit" not in timer or timer["Unit"] == SERVICE.name  # default: same name


def test_crontab_runs_the_same_command() -> None:
    lines = [
        line
        for line in CRONTAB.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert fields[:5] == ["17", "*", "*", "*", "*"] and fields[5] == "fleet-tuf"
    command = fields[6]
    assert "%" not in command  # cron would turn it into a newline
    assert "logger -t fleet-tuf-timestamp" in command and "flock" not in command
    assert ". /etc/fleet-tuf/timestamp.env" in command
    argv = _orbit_packager_argv(shlex.split(command))
    assert argv[0] == BINARY and argv[1:] == COMMAND
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", "-c", command], check=True)


def test_readme_docker_line_runs_the_same_command() -> None:
    text = (EXAMPLES / "README.md").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("docker run ")]
    words = shlex.split(line)
    image = next(w for w in words if w.startswith("orbit-packager:"))
    argv = words[words.index(image) + 1 :]
    assert argv == COMMAND
    assert "--env-file" in words and "/etc/fleet-tuf/timestamp.env" in words
    assert "/var/lib/fleet-tuf:/var/lib/fleet-tuf" in words


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """With the binary path pointed at one that exists here (verify checks it is executable)."""
    exe = Path(sys.executable).parent / "orbit-packager"
    if not exe.exists():
        pytest.skip("orbit-packager is not installed next to the interpreter")
    (tmp_path / SERVICE.name).write_text(SERVICE.read_text().replace(BINARY, str(exe)))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        check=False,
    )
    # warnings (unknown keys, bad values) go to stderr with exit 0
    relevant = [
        line for line in (out.stdout + out.stderr).splitlines() if "fleet-tuf-timestamp" in line
    ]
    assert out.returncode == 0 and relevant == [], out.stdout + out.stderr
