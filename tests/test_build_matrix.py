"""Issue 15, part 2: `package --config builds.toml`, a CI matrix built from one fetch.

Each team's secret comes from a variable or a file the matrix names, never from the file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import FaultServer, cli

SDE = "1700000000"


def _matrix(served: tuple[Path, FaultServer], tmp_path: Path, builds: str) -> Path:
    repo, server = served
    (tmp_path / "roots.json").write_bytes((repo / "repository/root.json").read_bytes())
    path = tmp_path / "builds.toml"
    path.write_text(
        f'[defaults]\nupdate-url = "{server.url}"\nupdate-roots = "roots.json"\n'
        f'no-cache = true\noutdir = "dist"\n\n{builds}'
    )
    return path


def _file_in(package: Path, member: str) -> str:
    out = subprocess.run(
        ["bsdtar", "-xOf", str(package), f".{member}"], capture_output=True, check=True
    )
    return out.stdout.decode()


def test_matrix_of_teams_from_one_fetch(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "b.txt").write_text("team-b-secret\n")
    config = _matrix(
        served,
        tmp_path,
        '[[build]]\ntype = ["deb", "msi"]\nfleet-url = "https://a.example.com"\n'
        'enroll-secret-env = "TEAM_A_SECRET"\n\n'
        '[[build]]\ntype = "rpm"\nfleet-url = "b.example.com:8443"\n'
        'enroll-secret-file = "secrets/b.txt"\noutdir = "dist/team-b"\ndebug = true\n'
        'update-interval = "1h"\n',
    )
    server = served[1]
    server.requests.clear()
    out = cli(
        "package", "--config", config, "--json",
        env={"SOURCE_DATE_EPOCH": SDE, "TEAM_A_SECRET": "team-a-secret"}, cwd=tmp_path / "..",
        timeout=600,
    )  # fmt: skip
    installers = json.loads(out.stdout)["installers"]
    assert [i["type"] for i in installers] == ["deb", "msi", "rpm"]
    targets = {p: n for p, n in server.requests.items() if p.startswith("/targets/")}
    assert targets and set(targets.values()) == {1}, targets
    assert server.requests["/timestamp.json"] == 1
    assert "team-a-secret" not in out.stdout + out.stderr

    deb, msi, rpm = (Path(i["path"]) for i in installers)
    assert deb.parent == msi.parent == tmp_path / "dist"  # relative to the file
    assert rpm.parent == tmp_path / "dist/team-b"
    env = _file_in(rpm, "/etc/default/orbit")
    assert 'ORBIT_ENROLL_SECRET="team-b-secret"' in env
    assert 'ORBIT_FLEET_URL="https://b.example.com:8443"' in env
    assert 'ORBIT_DEBUG="true"' in env and 'ORBIT_UPDATE_INTERVAL="1h0m0s"' in env

    # The same installer as the command line builds alone.
    repo, _ = served
    single = tmp_path / "single.deb"
    cli(
        "package", "--type", "deb", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache",
        "--fleet-url", "https://a.example.com", "--outfile", single,
        env={"SOURCE_DATE_EPOCH": SDE, "ORBIT_PACKAGER_ENROLL_SECRET": "team-a-secret"},
        timeout=300,
    )  # fmt: skip
    assert single.read_bytes() == deb.read_bytes()


@pytest.mark.parametrize(
    "builds,extra,message",
    [
        ('[[build]]\ntype = "deb"\nfleet-url = "https://f.example.com"\n'
         'enroll-secret = "oops"\n', [],
         "[[build]] 1: the file must not hold the enroll secret itself"),
        ('[[build]]\ntype = "deb"\ncolour = "blue"\n', [], "[[build]] 1: unknown setting 'colour'"),
        ('[[build]]\ntype = "deb"\nupdate-url = "https://x.example.com"\n', [],
         "[[build]] 1: update-url is shared by every build of the run"),
        ('[[build]]\ntype = "deb"\nfleet-url = "https://f.example.com"\n'
         'enroll-secret-env = "NOT_SET_ANYWHERE"\n', [],
         "[[build]] 1: environment variable NOT_SET_ANYWHERE (enroll-secret-env) is not set"),
        ('[[build]]\ntype = "deb"\n', ["--type", "rpm"], "each [[build]] names its type"),
        ('[[build]]\ntype = "deb"\n', ["--fleet-url", "https://f.example.com"],
         "with --config, --fleet-url belongs in the file"),
        ('[[build]]\ntype = "zip"\n', [], "[[build]] 1: type 'zip' is not one of"),
        ('[[build]]\ntype = "deb"\ndebug = "yes"\n', [], "[[build]] 1: debug must be true or false"),
        ('[[build]]\ntype = "deb"\n[[build]]\ntype = "msi"\nend-user-email = "x"\n', [],
         "[[build]] 2 (msi): Invalid email address specified for --end-user-email."),
        ('type = "deb"\n[[build]]\nend-user-email = "x"\n', [],
         "[[build]] 1 (deb): Invalid email address"),  # the type from [defaults]
        ('tooling = "podman"\n[[build]]\ntype = "deb"\n', [],
         "[[build]] 1 (deb): --tooling must be one of auto, native, docker"),
        ("[[build]\n", [], "is not valid TOML"),
        ("", [], "lists no [[build]]"),
    ],
)  # fmt: skip
def test_matrix_mistakes_refused_before_any_download(
    served: tuple[Path, FaultServer], tmp_path: Path, builds: str, extra: list[str], message: str
) -> None:
    config = _matrix(served, tmp_path, builds)
    server = served[1]
    server.requests.clear()
    out = cli("package", "--config", config, *extra, check=False, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr
    assert "oops" not in out.stderr and "Traceback" not in out.stderr
    assert sum(server.requests.values()) == 0
    assert not (tmp_path / "dist").exists()
