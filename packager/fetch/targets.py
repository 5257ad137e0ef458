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

The downloads of one command run at once (:func:`fetch_many`): every distinct target of every
installer in a small pool of threads, after one metadata refresh. A target several installers
embed is downloaded once; the others copy it from the verified cache, re-hashing it. The
calling thread meanwhile extracts and checks each target in order as soon as it is there, so
the first failure in that order is the one reported, as when the targets came one by one.
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from packager import signals
from packager.errors import PackagerError, UsageError
from packager.fetch import workers
from packager.fetch.cache import cache_name
from packager.fetch.client import FetchError, UpdateClient
from packager.fetch.extract import extract_tar_gz
from packager.fetch.http import CancelToken
from packager.repo.fsutil import make_dirs
from packager.repo.naming import check_component

if TYPE_CHECKING:
    from packager.fetch.inspect import BinaryInfo

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
    return fetch_many(client, [(sel, orbit_root)])[0]


@dataclass
class _Wanted:
    """One target for one Orbit root, in the order the targets would come one by one."""

    sel: TargetSelection
    spec: TargetSpec
    local: Path
    found: TargetFile | PackagerError  # the target's metadata, or why it is not there
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


@dataclass
class _Copy:
    """A target file one worker writes: ``item`` with its metadata."""

    item: _Wanted
    info: TargetFile


def fetch_many(
    client: UpdateClient, wanted: Sequence[tuple[TargetSelection, Path]]
) -> list[list[FetchedTarget]]:
    """:func:`fetch_agent_targets` for several (selection, Orbit root) pairs at once, the
    downloads in parallel (see the module's docstring). Raises the error the first failing
    target (in the order given, then each selection's target order) would raise alone; the
    other downloads are stopped first and leave no file behind."""
    client.refresh()  # once, in this thread: the worker threads only read the metadata
    items: list[list[_Wanted]] = [
        [_lookup(client, sel, spec, root) for spec in select_targets(sel)] for sel, root in wanted
    ]
    token = CancelToken()
    threads: list[threading.Thread] = []
    try:
        _start(client, _groups([i for row in items for i in row]), token, threads)
        return [[_finish(item) for item in row] for row in items]
    except BaseException:
        _stop(token, [i for row in items for i in row], threads)
        raise


def _lookup(client: UpdateClient, sel: TargetSelection, spec: TargetSpec, root: Path) -> _Wanted:
    """Look a target up (in this thread: ngclient's Updater is not shared). A lookup that fails
    is raised when the target's turn comes, as when the targets came one by one."""
    local = root / "bin" / spec.path
    try:
        found: TargetFile | PackagerError = client.target_info(spec.path)
    except PackagerError as exc:
        found = exc
    else:
        make_dirs(local.parent)  # here, not in the threads: one creator per directory
    return _Wanted(sel, spec, local, found)


def _groups(items: list[_Wanted]) -> list[list[_Copy]]:
    """The targets grouped by cache entry, each group in target order: the first of a group
    downloads the entry, the others copy it (so no two threads write one entry at a time)."""
    groups: dict[str, list[_Copy]] = {}
    for item in items:
        if isinstance(item.found, PackagerError):
            continue
        try:
            key = cache_name(item.found)
        except exceptions.RepositoryError:
            key = f"path:{item.spec.path}"  # fetch_verified reports the malformed hash
        groups.setdefault(key, []).append(_Copy(item, item.found))
    return list(groups.values())


def _start(
    client: UpdateClient,
    groups: list[list[_Copy]],
    token: CancelToken,
    threads: list[threading.Thread],
) -> None:
    """Start threads downloading ``groups``, earliest first (packager.fetch.workers)."""
    threads.extend(
        workers.start([functools.partial(_fetch_group, client, g, token) for g in groups], "fetch")
    )


def _fetch_group(client: UpdateClient, group: list[_Copy], token: CancelToken) -> None:
    """Write one group's target files, in order."""
    for position, copy in enumerate(group):
        done = copy.item.done
        if not done.set_running_or_notify_cancel():
            continue
        try:
            client.fetch_verified(
                copy.item.spec.path, copy.info, copy.item.local, token, shared=len(group) > 1
            )
        except BaseException as exc:  # Cancelled too: the caller only looks at its own
            done.set_exception(exc)
            for later in group[position + 1 :]:
                later.item.done.cancel()  # after a failure in target order: never used
            break
        done.set_result(None)


def _finish(item: _Wanted) -> FetchedTarget:
    """Wait for ``item``'s file, then extract and check it, as one target at a time did."""
    # Imported here, not at the top: only commands that check binaries load the header readers.
    from packager.fetch.inspect import require_executable

    if isinstance(item.found, PackagerError):
        raise item.found
    item.done.result()  # the download's own error, unchanged
    spec, local = item.spec, item.local
    local.chmod(0o755)  # as Orbit's own downloads (fleetctl: staging files are 0755)
    extracted: list[str] = []
    executable = local
    if spec.filename.endswith(".tar.gz"):
        extracted = extract_tar_gz(local, local.parent, label=spec.path)
        if spec.exec_path is None or not (local.parent / spec.exec_path).is_file():
            raise FetchError(f"target {spec.path} does not contain {spec.exec_path}")
        executable = local.parent / spec.exec_path
    binary = require_executable(executable, spec.path, item.sel.os, item.sel.cpu_archs)
    return FetchedTarget(spec, local, item.found, binary, extracted)


def _stop(token: CancelToken, items: list[_Wanted], threads: list[threading.Thread]) -> None:
    workers.stop(token, [item.done for item in items], threads)


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
