"""Issue 15, part 3: `inspect FILE` on our Linux installers (deb, rpm, pkg.tar.zst), on debs and
rpms laid out as fleetctl builds them, on a deb whose orbit was swapped after the build, and on
files that are not installers. The pkg and msi readers have their own files
(tests/test_inspect_pkg.py, tests/test_inspect_msi.py); the CLI is the same for all."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.fleet_layout import build_fleet_packages
from tests.helpers import FaultServer, build_installer, cli

SECRET = 'inspect-canary-5e1f "q" $HOME `id` ; # x'
SDE = "1700000000"
LINUX = ("deb", "rpm", "pkg.tar.zst")
FLAGS = ("--fleet-desktop", "--enable-scripts", "--host-identifier", "instance",
         "--end-user-email", "it@example.com", "--orbit-channel", "stable")  # fmt: skip


def expected_settings(update_url: str) -> dict[str, str]:
    return {
        "ORBIT_UPDATE_URL": update_url,
        "ORBIT_ORBIT_CHANNEL": "stable",
        "ORBIT_OSQUERYD_CHANNEL": "stable",
        "ORBIT_UPDATE_INTERVAL": "15m0s",
        "ORBIT_FLEET_DESKTOP": "true",
        "ORBIT_DESKTOP_CHANNEL": "stable",
        "ORBIT_FLEET_URL": "https://fleet.example.com",
        "ORBIT_ENABLE_SCRIPTS": "true",
        "ORBIT_HOST_IDENTIFIER": "instance",
        "ORBIT_END_USER_EMAIL": "it@example.com",
    }


@pytest.fixture(scope="module")
def built(served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("inspect")
    return {
        kind: build_installer(served, kind, out / f"x.{kind}", *FLAGS, secret=SECRET, sde=SDE)
        for kind in LINUX
    }


def inspect(
    path: Path, *extra: str | Path, served: tuple[Path, FaultServer] | None = None
) -> tuple[int, dict[str, object], str]:
    args: list[str | Path] = ["inspect", path, "--json", *extra]
    if served is not None:
        repo, server = served
        args += ["--update-url", server.url, "--update-roots", repo / "repository/root.json"]
    out = cli(*args, check=False)
    assert "canary" not in out.stdout + out.stderr  # the secret's value, never
    assert "Traceback" not in out.stderr
    return out.returncode, json.loads(out.stdout) if out.stdout.startswith("{") else {}, out.stderr


def served_target(repo: Path, name: str) -> bytes:
    listed = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    sha512 = listed[name]["hashes"]["sha512"]
    for candidate in (repo / "repository/targets").rglob("*"):
        if candidate.is_file() and hashlib.sha512(candidate.read_bytes()).hexdigest() == sha512:
            return candidate.read_bytes()
    raise AssertionError(f"{name} not served")


@pytest.mark.parametrize("kind", LINUX)
def test_our_linux_installers(built: dict[str, Path], served, kind: str) -> None:
    repo, server = served
    code, report, _err = inspect(built[kind])
    assert code == 0, report
    assert (report["type"], report["name"], report["version"], report["arch"]) == (
        kind, "fleet-osquery", "1.40.0", "amd64")  # fmt: skip
    assert report["settings"] == expected_settings(server.url)
    assert report["enroll_secret_embedded"] is True
    assert report["fleet_url"] == "https://fleet.example.com"
    assert report["channels"] == {"orbit": "stable", "osqueryd": "stable", "desktop": "stable"}
    listed = report["targets"]
    assert isinstance(listed, list)
    targets = {t["name"]: t for t in listed}
    assert sorted(targets) == [
        "desktop/linux/stable/desktop.tar.gz",
        "orbit/linux/stable/orbit",
        "osqueryd/linux/stable/osqueryd",
    ]
    listed_meta = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    for name, target in targets.items():
        assert target["version"] == listed_meta[name].get("custom", {}).get("version")
        data = served_target(repo, name)
        assert (target["length"], target["sha512"]) == (len(data), hashlib.sha512(data).hexdigest())
        assert target["matches_embedded_metadata"] is True
    assert targets["orbit/linux/stable/orbit"]["binary"] == "ELF X86_64 executable"
    assert targets["orbit/linux/stable/orbit"]["version"] == "1.40.0"
    assert targets["desktop/linux/stable/desktop.tar.gz"]["binary"] == "archive"
    root = json.loads((repo / "repository/root.json").read_bytes())["signed"]
    tuf_root = report["tuf_root"]
    assert isinstance(tuf_root, dict)
    assert tuf_root["version"] == root["version"] and tuf_root["expires"] == root["expires"]
    assert tuf_root["key_ids"] == {r: sorted(v["keyids"]) for r, v in root["roles"].items()}
    assert report["problems"] == []


@pytest.mark.parametrize("kind", LINUX)
def test_matches_the_repository(built: dict[str, Path], served, kind: str) -> None:
    code, report, err = inspect(built[kind], served=served)
    assert code == 0, (report, err)
    repository = report["repository"]
    assert isinstance(repository, dict) and repository["differences"] == []
    text = cli("inspect", built[kind], "--update-url", served[1].url, "--update-roots",
               served[0] / "repository/root.json")  # fmt: skip
    assert f"matches {served[1].url}" in text.stdout
    assert "enroll secret:  embedded" in text.stdout and "canary" not in text.stdout


def test_without_a_secret(served, tmp_path: Path) -> None:
    repo, server = served
    out = tmp_path / "plain.deb"
    cli("package", "--type", "deb", "--update-url", server.url, "--update-roots",
        repo / "repository/root.json", "--no-cache", "--outfile", out)  # fmt: skip
    code, report, _ = inspect(out)
    assert code == 0
    assert report["enroll_secret_embedded"] is False and report["fleet_url"] is None


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_fleetctl_layout(built: dict[str, Path], served, tmp_path: Path, kind: str) -> None:
    """fleetctl's env file is not quoted; its packages list every parent directory."""
    server = served[1]
    env = {**expected_settings(server.url), "ORBIT_ENROLL_SECRET": "fleetctl-canary-secret"}
    (tmp_path / "work").mkdir()
    made = build_fleet_packages(built["deb"], env, "1.40.0", tmp_path, tmp_path / "work")
    code, report, _ = inspect(made[kind], served=served)
    assert code == 0, report
    assert report["settings"] == expected_settings(server.url)
    assert report["enroll_secret_embedded"] is True
    assert "fleetctl-canary-secret" not in json.dumps(report)


def _swap_orbit(deb: Path, tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    orbit = tree / "opt/orbit/bin/orbit/linux/stable/orbit"
    data = bytearray(orbit.read_bytes())
    data[-1] ^= 0xFF  # one byte: still an ELF executable, no longer the published one
    orbit.write_bytes(bytes(data))
    out = tmp_path / "swapped.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True,
                   capture_output=True)  # fmt: skip
    return out


def test_swapped_orbit_is_named(built: dict[str, Path], served, tmp_path: Path) -> None:
    swapped = _swap_orbit(built["deb"], tmp_path)
    code, report, _ = inspect(swapped)
    assert code == 1  # contradicts its own TUF metadata
    assert report["problems"] == [
        "bin/orbit/linux/stable/orbit differs from the embedded TUF metadata of "
        "orbit/linux/stable/orbit"
    ]
    code, report, _ = inspect(swapped, served=served)
    assert code == 4
    repository = report["repository"]
    assert isinstance(repository, dict)
    differences = repository["differences"]
    assert isinstance(differences, list) and len(differences) == 1
    assert differences[0].startswith(
        "bin/orbit/linux/stable/orbit differs from the repository's orbit/linux/stable/orbit"
    )
    text = cli("inspect", swapped, "--update-url", served[1].url, "--update-roots",
               served[0] / "repository/root.json", check=False)  # fmt: skip
    assert text.returncode == 4 and "differs from" in text.stdout


def test_not_an_installer(tmp_path: Path) -> None:
    for name, data in (("x.deb", b"hello"), ("x.rpm", b"\xed\xab\xee\xdb" + b"\0" * 10),
                       ("x.pkg.tar.zst", b"\x28\xb5\x2f\xfd" + b"junk"), ("empty.msi", b"")):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(data)
        out = cli("inspect", path, check=False)
        assert out.returncode == 2, (name, out.stderr)
        assert (
            out.stderr.startswith("orbit-packager: error: ") and len(out.stderr.splitlines()) == 1
        )
        assert "Traceback" not in out.stderr


def test_traversal_member_refused(built: dict[str, Path], tmp_path: Path) -> None:
    """A deb whose data.tar names /opt/orbit/../../etc/evil: refused, nothing written."""
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("./opt/orbit/../../tmp/evil")
        payload = b"x"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as tar:
        text = b"Package: fleet-osquery\nVersion: 1\nArchitecture: amd64\n"
        info = tarfile.TarInfo("./control")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    deb = tmp_path / "evil.deb"
    with open(deb, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in ((b"debian-binary", b"2.0\n"), (b"control.tar.gz", control.getvalue()),
                           (b"data.tar.gz", data.getvalue())):  # fmt: skip
            f.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6)
                    + b"100644".ljust(8) + str(len(body)).encode().ljust(10) + b"`\n")  # fmt: skip
            f.write(body + (b"\n" if len(body) % 2 else b""))
    out = cli("inspect", deb, check=False)
    assert out.returncode == 2 and "unsafe member name" in out.stderr, out.stderr
