"""Issue 15, part 2: several installers from one run (`--type deb,rpm,msi,pkg,pkg.tar.zst`,
`--type all`).

One TUF refresh and each target downloaded once (the test server counts requests), and every
installer byte for byte the one a single run writes (same SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import FaultServer, cli

SDE = "1700000000"
ALL = ("deb", "rpm", "msi", "pkg", "pkg.tar.zst")


def _package(
    served: tuple[Path, FaultServer], *flags: str | Path, cwd: Path | None = None
) -> dict[str, object]:
    repo, server = served
    out = cli(
        "package", "--update-url", server.url, "--update-roots", repo / "repository/root.json",
        "--no-cache", "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s",
        "--json", *flags, env={"SOURCE_DATE_EPOCH": SDE}, cwd=cwd, timeout=600,
    )  # fmt: skip
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_every_type_one_fetch_same_bytes_as_single_runs(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    server = served[1]
    server.requests.clear()
    together = tmp_path / "together"
    report = _package(served, "--type", ",".join(ALL), "--outdir", together)
    installers = report["installers"]
    assert isinstance(installers, list)
    assert [i["type"] for i in installers] == list(ALL)
    targets = {p: n for p, n in server.requests.items() if p.startswith("/targets/")}
    assert targets and set(targets.values()) == {1}, targets  # each target downloaded once
    assert server.requests["/timestamp.json"] == 1  # one refresh
    for kind in ("orbit/linux", "orbit/windows", "orbit/macos", "osqueryd/macos-app"):
        assert any(p.startswith(f"/targets/{kind}/") for p in targets), (kind, targets)

    alone = tmp_path / "alone"
    alone.mkdir()
    for installer in installers:
        assert isinstance(installer, dict)
        path = Path(str(installer["path"]))
        assert path.parent == together and path.stat().st_mode & 0o777 == 0o600
        single = _package(served, "--type", str(installer["type"]), "--outdir", alone)
        assert Path(str(single["path"])).name == path.name  # fleetctl's file name
        assert Path(str(single["path"])).read_bytes() == path.read_bytes(), path.name
        assert single["sha256"] == installer["sha256"]
        data = path.read_bytes()  # what the report says is the file's own size and hash
        assert installer["size"] == len(data)
        assert installer["sha256"] == hashlib.sha256(data).hexdigest()


def test_all_is_every_type(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    report = _package(served, "--type", "all", "--outdir", tmp_path / "out")
    installers = report["installers"]
    assert isinstance(installers, list)
    assert sorted(str(i["type"]) for i in installers) == sorted(ALL)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        Path(str(i["path"])).name for i in installers
    )
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700  # made private: secrets inside


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--type", "deb,rpm", "--outfile", "x.deb"], "--outfile names one installer"),
        (["--type", "deb,deb"], "'deb,deb' names a type twice"),
        (["--type", "deb,zip"], "'zip' is not one of deb, rpm, pkg, msi, pkg.tar.zst (or all)"),
        (["--type", "deb,pkg", "--end-user-email", "a@b.example"],
         "Can only set --end-user-email when building an msi, deb, rpm"),
    ],
)  # fmt: skip
def test_refused_before_any_download(
    served: tuple[Path, FaultServer], tmp_path: Path, flags: list[str], message: str
) -> None:
    repo, server = served
    server.requests.clear()
    out = cli(
        "package", "--update-url", server.url, "--update-roots", repo / "repository/root.json",
        "--no-cache", "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s",
        *flags, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert sum(server.requests.values()) == 0
    assert list(tmp_path.iterdir()) == []


def test_failed_run_removes_the_outdir_it_made(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    """A run that fails after validation (here: no target on the channel) takes away the
    --outdir directories it created, and only those."""
    repo, server = served
    kept = tmp_path / "kept"
    kept.mkdir()
    for outdir in (tmp_path / "new" / "sub", kept):
        out = cli(
            "package", "--update-url", server.url, "--update-roots",
            repo / "repository/root.json", "--no-cache", "--type", "deb,rpm",
            "--orbit-channel", "no-such-channel", "--outdir", outdir, check=False,
        )  # fmt: skip
        assert out.returncode == 4, out.stderr
        assert "no-such-channel" in out.stderr
    assert not (tmp_path / "new").exists()
    assert kept.is_dir() and list(kept.iterdir()) == []
