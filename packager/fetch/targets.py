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

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuf.api.metadata import TargetFile

from packager import signals
from packager.errors import UsageError
from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.extract import extract_tar_gz
from packager.fetch.inspect import BinaryInfo, require_executable
from packager.repo.naming import check_component

PACKAGE_OS = {
    "deb": "linux",
    "rpm": "linux",
    "pkg.tar.zst": "linux",
    "pkg": "macos",
    "msi": "windows",
}


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


# The installer version is the orbit target's custom.version from targets.json: repository
# content (fleetctl publishes any --version), which becomes the deb control file's Version
# field, the rpm Version tag, the msi ProductVersion, the pkg's PackageInfo version and part of
# the deb and rpm file names. So it is checked before anything is built (issue 12, class 10):
# * every format: a digit first (dpkg refuses anything else), then letters, digits and
#   . + ~ _ - only (no newline to inject control fields, no separator, space or quote in file
#   names), at most 128 characters as `updates add --version`;
# * deb and rpm (one repository serves both): no "_" (dpkg: invalid character) and no "-" (it
#   separates rpm's Version from Release and is invalid in a Version; in a deb it starts the
#   Debian revision, so "1.2.3-rc1" would sort after 1.2.3). Pre-releases are written with "~"
#   in both, which is what nfpm turns a semver pre-release into for fleetctl;
# * msi: Windows Installer compares ProductVersion major.minor.build (each number at most
#   255.255.65535; an optional fourth field is ignored), taken before any "-" or "+" suffix
#   as packager.formats.msi.msi_version does;
# * pkg: the common rule (PackageInfo compares dot-separated components).
_VERSION_MAX = 128
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~_-]*")
_LINUX_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~]*")
_MSI_FIELD_MAX = (255, 255, 65535, 65535)


def _version_problem(version: str, os_name: str) -> str | None:
    """Why ``version`` cannot be an installer version for ``os_name``, or None."""
    if len(version) > _VERSION_MAX:
        return f"is longer than {_VERSION_MAX} characters"
    if not _VERSION.fullmatch(version):
        return "must start with a digit and hold only letters, digits and . + ~ _ -"
    if os_name == "linux" and not _LINUX_VERSION.fullmatch(version):
        return (
            "cannot be a deb and rpm version: '_' and '-' are not allowed there "
            "(write a pre-release as 1.2.3~rc1)"
        )
    if os_name == "windows":
        core = re.split(r"[-+]", version, maxsplit=1)[0].split(".")
        if not 1 <= len(core) <= 4 or not all(part.isdigit() for part in core):
            return "cannot be an MSI ProductVersion: up to four numbers, like 1.40.0"
        for part, limit in zip(core, _MSI_FIELD_MAX, strict=False):
            if int(part) > limit:
                return "cannot be an MSI ProductVersion: its fields are at most 255.255.65535"
    return None


def _shown_value(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def installer_version(fetched: list[FetchedTarget]) -> str:
    """The installer's version: the orbit target's ``custom.version``, validated for the
    installer's OS (taken from the orbit target's platform) before anything is built."""
    orbit = next(f for f in fetched if f.spec.name == "orbit")
    custom = orbit.info.unrecognized_fields.get("custom")
    raw = custom.get("version") if isinstance(custom, dict) else None
    if raw is None or raw == "":
        raise FetchError(
            f"target {orbit.spec.path} has no custom.version in the repository",
            hint="publish it with `orbit-packager updates add --version ...`",
        )
    if not isinstance(raw, str):
        raise FetchError(
            f"target {orbit.spec.path} has custom.version {_shown_value(raw)}, not a string"
        )
    os_name = orbit.spec.platform.split("-", 1)[0]
    problem = _version_problem(raw, os_name)
    if problem:
        raise FetchError(
            f"target {orbit.spec.path} has custom.version {_shown_value(raw)}, which {problem}"
        )
    return raw


def fetch_into_directory(
    client: UpdateClient, sel: TargetSelection, outdir: Path
) -> list[FetchedTarget]:
    """Fetch the targets into a new directory ``outdir`` (an Orbit root layout), atomically:
    they are assembled in a private sibling directory, renamed into place only on success."""
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise UsageError(f"{outdir} already exists", hint="remove it or choose another --outdir")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging: Path | None = None
    try:
        with signals.deferred():  # no signal between its creation and the name being known
            staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
        fetched = fetch_agent_targets(client, sel, staging)
        installer_version(fetched)  # a version no installer can carry fails before the rename
        staging.chmod(0o755)
        with signals.deferred():  # once renamed, the command completes (packager.signals)
            if outdir.exists():
                outdir.rmdir()
            staging.rename(outdir)
            signals.finishing()
    except BaseException:
        if staging is not None:
            with signals.deferred():  # a second signal does not cut the cleanup short
                shutil.rmtree(staging, ignore_errors=True)
        raise
    for item in fetched:
        item.local_path = outdir / item.local_path.relative_to(staging)
    return fetched
