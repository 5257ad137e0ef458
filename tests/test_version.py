"""Issue 12, class 10: the orbit target's custom.version is validated before anything is built.

It comes from targets.json (fleetctl publishes any --version) and becomes the deb control
file's Version field, the rpm Version tag, the msi ProductVersion, the pkg's version and part of
the deb and rpm file names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from packager.fetch.client import FetchError
from packager.fetch.inspect import BinaryInfo
from packager.fetch.targets import FetchedTarget, TargetSelection, installer_version, select_targets
from packager.repo import repository
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from scripts.make_demo_repo import DEMO_PASSPHRASES
from tests.helpers import FIXTURES, FaultServer, cli, demo_repo


def _fetched(package_type: str, version: object, arch: str = "amd64") -> list[FetchedTarget]:
    custom = {} if version is None else {"custom": {"version": version}}
    out = []
    for spec in select_targets(TargetSelection(package_type, arch)):
        info = TargetFile(1, {"sha512": "00"}, spec.path, custom)
        out.append(FetchedTarget(spec, Path("/nonexistent"), info, BinaryInfo("ELF", (), True)))
    return out


GOOD = {
    "deb": ["1.40.0", "1.40.0~rc1", "1.40.0+git5.abc", "2", "1.40.0.4"],
    "rpm": ["1.40.0", "1.40.0~rc1", "1.40.0+b1"],
    "msi": ["1.40.0", "255.255.65535", "1.40.0-rc.1", "1.40.0+meta", "1.40.0.9", "7"],
    "pkg": ["1.40.0", "1.40.0-rc.1", "1.40.0_1", "1.40.0~beta"],
}


@pytest.mark.parametrize(
    ("package_type", "version"), [(t, v) for t, versions in GOOD.items() for v in versions]
)
def test_valid_versions(package_type: str, version: str) -> None:
    arch = "universal" if package_type == "pkg" else "amd64"
    assert installer_version(_fetched(package_type, version, arch)) == version


BAD = [
    # (package type, version, what the error says)
    ("deb", "1.40.0\nDepends: evil", "must start with a digit and hold only"),
    ("rpm", "1.40.0\nRequires: evil", "must start with a digit and hold only"),
    ("pkg", '1.0"/><evil', "must start with a digit and hold only"),
    ("deb", "1.40.0/../../x", "must start with a digit and hold only"),
    ("deb", "1.40 0", "must start with a digit and hold only"),
    ("deb", "v1.40.0", "must start with a digit and hold only"),
    ("pkg", "", "has no custom.version"),
    ("deb", None, "has no custom.version"),
    ("deb", "1" * 129, "is longer than 128 characters"),
    ("deb", "1.40.0_1", "cannot be a deb and rpm version"),
    ("rpm", "1.40.0-rc1", "cannot be a deb and rpm version"),
    ("msi", "1.40.0~rc1", "cannot be an MSI ProductVersion"),
    ("msi", "1.2.3.4.5", "cannot be an MSI ProductVersion"),
    ("msi", "256.0.0", "fields are at most 255.255.65535"),
    ("msi", "1.256.0", "fields are at most 255.255.65535"),
    ("msi", "1.2.65536", "fields are at most 255.255.65535"),
    ("deb", 140, "not a string"),
    ("deb", ["1.0"], "not a string"),
]


@pytest.mark.parametrize(("package_type", "version", "needle"), BAD)
def test_invalid_versions(package_type: str, version: object, needle: str) -> None:
    arch = "universal" if package_type == "pkg" else "amd64"
    fetched = _fetched(package_type, version, arch)
    with pytest.raises(FetchError) as err:
        installer_version(fetched)
    message = str(err.value)
    assert needle in message
    assert message.startswith(f"target {fetched[0].spec.path} has ")
    assert "\n" not in message and len(message) < 400
    if isinstance(version, str) and version:
        assert repr(version)[:40] in message  # the bad value, as repr


def test_error_truncates_the_value() -> None:
    with pytest.raises(FetchError) as err:
        installer_version(_fetched("deb", "1\n" + "x" * 10_000))
    message = str(err.value)
    assert "'1\\nxxx" in message and "…" in message and len(message) < 300


def test_arm64_and_windows_platforms_use_their_os_rules() -> None:
    with pytest.raises(FetchError, match="deb and rpm"):
        installer_version(_fetched("deb", "1.0-1", "arm64"))
    with pytest.raises(FetchError, match="MSI"):
        installer_version(_fetched("msi", "300.0.0", "arm64"))


def test_package_refuses_injected_version_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: a repository publishes orbit with a version that would add a control field
    to the deb. The repository is made the way fleetctl makes it, which accepts any --version
    (our own `updates add` refuses it, so its name check is lifted for this publisher only)."""
    repo = demo_repo(tmp_path / "repo")
    monkeypatch.setattr(repository, "check_component", lambda value, _flag: value)
    UpdateRepository(repo, PassphraseSource(environ=DEMO_PASSPHRASES)).add(
        FIXTURES / "executables/orbit-linux-x86_64",
        name="orbit",
        platform="linux",
        version="1.40.0\nDepends: evil-package",
        tags=["inject"],
    )
    server = FaultServer(repo / "repository")
    try:
        out = tmp_path / "out.deb"
        proc = cli(
            "package", "--type", "deb", "--update-url", server.url, "--update-roots",
            repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
            "--enroll-secret", "s", "--no-cache", "--orbit-channel", "inject", "--outfile", out,
            check=False,
        )  # fmt: skip
        outdir = tmp_path / "targets"
        fetched = cli(
            "fetch", "--type", "deb", "--update-url", server.url, "--update-roots",
            repo / "repository/root.json", "--no-cache", "--orbit-channel", "inject",
            "--outdir", outdir, check=False,
        )  # fmt: skip
    finally:
        server.close()
    # fetch refuses it too, and leaves no output directory behind
    assert fetched.returncode == 4, fetched.stderr
    assert "custom.version '1.40.0\\nDepends" in fetched.stderr
    assert not outdir.exists()
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr == (
        "orbit-packager: error: target orbit/linux/inject/orbit has custom.version "
        "'1.40.0\\nDepends: evil-package', which must start with a digit and hold only "
        "letters, digits and . + ~ _ -\n"
    )
    assert not out.exists()
