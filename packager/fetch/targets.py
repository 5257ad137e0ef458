"""Which agent targets an installer needs, and fetching them into the Orbit root, verified.

Targets per installer type and arch follow ``fleetctl package`` (Orbit's update options),
as ``name platform file``:

* pkg: ``orbit macos orbit``; ``osqueryd macos-app osqueryd.app.tar.gz``;
  ``desktop macos desktop.app.tar.gz``
* deb, rpm: ``orbit linux[-arm64] orbit``; ``osqueryd linux[-arm64] osqueryd``;
  ``desktop linux[-arm64] desktop.tar.gz``
* msi: ``orbit windows[-arm64] orbit.exe``; ``osqueryd windows[-arm64] osqueryd.exe``;
  ``desktop windows[-arm64] fleet-desktop.exe``

Desktop only with ``--fleet-desktop``. Each lands at
``<orbit root>/bin/<name>/<platform>/<channel>/<file>``; archives are extracted next to
themselves and kept, as Orbit expects.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuf.api.metadata import TargetFile

from packager.errors import UsageError
from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.extract import extract_tar_gz
from packager.fetch.inspect import BinaryInfo, require_executable
from packager.repo.naming import check_component

PACKAGE_OS = {"deb": "linux", "rpm": "linux", "pkg": "macos", "msi": "windows"}


@dataclass(frozen=True)
class TargetSpec:
    name: str
    platform: str
    channel: str
    filename: str
    exec_path: str | None = None  # the executable inside an archive target

    @property
    def path(self) -> str:
        return f"{self.name}/{self.platform}/{self.channel}/{self.filename}"


@dataclass(frozen=True)
class TargetSelection:
    package_type: str
    arch: str = "amd64"  # amd64 | arm64; for pkg also "universal" (the default there)
    orbit_channel: str = "stable"
    osqueryd_channel: str = "stable"
    desktop_channel: str = "stable"
    fleet_desktop: bool = False

    def __post_init__(self) -> None:
        if self.package_type not in PACKAGE_OS:
            raise UsageError(f"unknown package type {self.package_type!r}")
        allowed = (
            ("universal", "amd64", "arm64") if self.package_type == "pkg" else ("amd64", "arm64")
        )
        if self.arch not in allowed:
            raise UsageError(f"--arch {self.arch!r} is not valid for {self.package_type}")
        for flag, value in (
            ("--orbit-channel", self.orbit_channel),
            ("--osqueryd-channel", self.osqueryd_channel),
            ("--desktop-channel", self.desktop_channel),
        ):
            check_component(value, flag)

    @property
    def os(self) -> str:
        return PACKAGE_OS[self.package_type]

    @property
    def cpu_archs(self) -> list[str]:
        return ["amd64", "arm64"] if self.arch == "universal" else [self.arch]


def select_targets(sel: TargetSelection) -> list[TargetSpec]:
    """The orbit, osqueryd (and desktop) targets ``sel``'s installer embeds, in that order."""
    arm = sel.arch == "arm64"
    if sel.package_type == "pkg":
        specs = [
            TargetSpec("orbit", "macos", sel.orbit_channel, "orbit"),
            TargetSpec(
                "osqueryd",
                "macos-app",
                sel.osqueryd_channel,
                "osqueryd.app.tar.gz",
                "osquery.app/Contents/MacOS/osqueryd",
            ),
        ]
        desktop = TargetSpec(
            "desktop",
            "macos",
            sel.desktop_channel,
            "desktop.app.tar.gz",
            "Fleet Desktop.app/Contents/MacOS/fleet-desktop",
        )
    elif sel.package_type == "msi":
        platform = "windows-arm64" if arm else "windows"
        specs = [
            TargetSpec("orbit", platform, sel.orbit_channel, "orbit.exe"),
            TargetSpec("osqueryd", platform, sel.osqueryd_channel, "osqueryd.exe"),
        ]
        desktop = TargetSpec("desktop", platform, sel.desktop_channel, "fleet-desktop.exe")
    else:
        platform = "linux-arm64" if arm else "linux"
        specs = [
            TargetSpec("orbit", platform, sel.orbit_channel, "orbit"),
            TargetSpec("osqueryd", platform, sel.osqueryd_channel, "osqueryd"),
        ]
        desktop = TargetSpec(
            "desktop",
            platform,
            sel.desktop_channel,
            "desktop.tar.gz",
            "fleet-desktop/fleet-desktop",
        )
    if sel.fleet_desktop:
        specs.append(desktop)
    return specs


@dataclass
class FetchedTarget:
    spec: TargetSpec
    local_path: Path  # the file as stored in the Orbit root (archive or executable)
    info: TargetFile
    binary: BinaryInfo
    extracted: list[str] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        custom = self.info.unrecognized_fields.get("custom") or {}
        value = custom.get("version") if isinstance(custom, dict) else None
        return str(value) if value is not None else None


def fetch_agent_targets(
    client: UpdateClient, sel: TargetSelection, orbit_root: Path
) -> list[FetchedTarget]:
    """Fetch, verify, inspect (and extract) every target ``sel`` needs into ``orbit_root``."""
    fetched = []
    for spec in select_targets(sel):
        local = orbit_root / "bin" / spec.path
        info = client.fetch(spec.path, local)
        local.chmod(0o755)  # as Orbit's own downloads (fleetctl: staging files are 0755)
        extracted: list[str] = []
        executable = local
        if spec.filename.endswith(".tar.gz"):
            extracted = extract_tar_gz(local, local.parent, label=spec.path)
            if spec.exec_path is None or not (local.parent / spec.exec_path).is_file():
                raise FetchError(f"target {spec.path} does not contain {spec.exec_path}")
            executable = local.parent / spec.exec_path
        binary = require_executable(executable, spec.path, sel.os, sel.cpu_archs)
        fetched.append(FetchedTarget(spec, local, info, binary, extracted))
    return fetched


def installer_version(fetched: list[FetchedTarget]) -> str:
    """The installer's version: the orbit target's ``custom.version``."""
    orbit = next(f for f in fetched if f.spec.name == "orbit")
    if not orbit.version:
        raise FetchError(
            f"target {orbit.spec.path} has no custom.version in the repository",
            hint="publish it with `orbit-packager updates add --version ...`",
        )
    return orbit.version


def fetch_into_directory(
    client: UpdateClient, sel: TargetSelection, outdir: Path
) -> list[FetchedTarget]:
    """Fetch the targets into a new directory ``outdir`` (an Orbit root layout), atomically:
    they are assembled in a private sibling directory, renamed into place only on success."""
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise UsageError(f"{outdir} already exists", hint="remove it or choose another --outdir")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        fetched = fetch_agent_targets(client, sel, staging)
        staging.chmod(0o755)
        if outdir.exists():
            outdir.rmdir()
        staging.rename(outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for item in fetched:
        item.local_path = outdir / item.local_path.relative_to(staging)
    return fetched
