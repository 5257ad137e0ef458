"""The committed Windows binaries: the MSI's custom action DLLs and the Orbit service stand-ins.

* ``packager/data/msi/fleetca-{x64,x86}.dll`` (from ``fleetca.c``) and
  ``fixtures/windows-service/orbit-standin-{1.0.0,2.0.0}.exe`` (from ``standin.c``) are rebuilt
  by their ``build.sh`` and must come out byte for byte as committed whenever the installed
  mingw-w64 toolchain is the one their ``BUILDINFO`` names (the comparison skips, naming both
  versions, otherwise: another Debian release ships another mingw-w64). Reproducibility itself
  (same bytes from another directory) is checked with whatever toolchain is installed.
* Read with lief: CPU, exports, imports, sections, version.
* The stand-in runs as a real service under Wine's service control manager (``-m wine``).
  The DLLs need an MSIHANDLE, so they run only in the MSI tests, under Wine's msiexec.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lief
import pytest

from packager.fetch.inspect import inspect_binary

ROOT = Path(__file__).resolve().parents[1]
MSI_DIR = ROOT / "packager" / "data" / "msi"
SERVICE_DIR = ROOT / "fixtures" / "windows-service"

EXPORTS = {"WriteSecret", "RollbackSecret", "CommitSecret", "RemoveOrbitRoot"}
DLL_IMPORTS = {"kernel32.dll", "advapi32.dll", "msi.dll"}
STANDIN_IMPORTS = {"kernel32.dll", "advapi32.dll"}
# What mingw-w64's ld makes of code, constants, unwind tables (x64), exports, imports, base
# relocations and, for the stand-ins, the version resource. Anything else (.tls, .CRT, .debug*,
# .eh_frame) means a C runtime or debug information got in.
ALLOWED_SECTIONS = {".text", ".rdata", ".data", ".bss", ".pdata", ".xdata", ".edata", ".idata"}
ALLOWED_SECTIONS |= {".reloc"}
STANDIN_SECTIONS = ALLOWED_SECTIONS | {".rsrc"}
STANDIN_VERSIONS = ("1.0.0", "2.0.0")
# PE header flags (winnt.h), as numbers: lief's enum spellings vary between its versions.
IMAGE_FILE_DLL = 0x2000
DYNAMIC_BASE = 0x0040
NX_COMPAT = 0x0100

lief.logging.disable()


@dataclass(frozen=True)
class Build:
    name: str
    directory: Path  # holds build.sh, the sources, the committed outputs and BUILDINFO
    sources: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def script(self) -> Path:
        return self.directory / "build.sh"


BUILDS = (
    Build("fleetca", MSI_DIR, ("build.sh", "fleetca.c"), ("fleetca-x64.dll", "fleetca-x86.dll")),
    Build(
        "standin",
        SERVICE_DIR,
        ("build.sh", "standin.c"),
        tuple(f"orbit-standin-{v}.exe" for v in STANDIN_VERSIONS),
    ),
)


def parse_buildinfo(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """BUILDINFO's (or ``build.sh --versions``') tool versions and sha256 lines, as dicts."""
    versions: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(": ")
        assert sep, f"malformed BUILDINFO line: {line!r}"
        if key.startswith("sha256 "):
            hashes[key.removeprefix("sha256 ")] = value
        else:
            versions[key] = value
    return versions, hashes


def installed_versions(build: Build) -> dict[str, str]:
    done = subprocess.run(
        ["bash", str(build.script), "--versions"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return parse_buildinfo(done.stdout)[0]


def toolchain_differences(build: Build) -> list[str]:
    recorded, _ = parse_buildinfo((build.directory / "BUILDINFO").read_text())
    installed = installed_versions(build)
    return [
        f"{key}: BUILDINFO has {recorded.get(key)!r}, installed is {installed.get(key)!r}"
        for key in sorted(recorded.keys() | installed.keys())
        if recorded.get(key) != installed.get(key)
    ]


def require_toolchain(build: Build) -> None:
    missing = [k for k, v in installed_versions(build).items() if v == "not installed"]
    if missing:
        pytest.skip(
            f"mingw-w64 is not installed ({', '.join(missing)}): "
            "apt-get install gcc-mingw-w64-x86-64-win32 gcc-mingw-w64-i686-win32"
        )


def run_build(script: Path, out: Path, cwd: Path) -> None:
    done = subprocess.run(
        ["bash", str(script), str(out)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Build], Path]:
    """Builds each Build once per module with its committed build.sh into a temporary dir."""
    cache: dict[str, Path] = {}

    def get(build: Build) -> Path:
        if build.name not in cache:
            out = tmp_path_factory.mktemp(f"rebuilt-{build.name}")
            run_build(build.script, out, cwd=ROOT)
            cache[build.name] = out
        return cache[build.name]

    return get


# ---- committed files and their BUILDINFO ------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS, ids=lambda b: b.name)
def test_buildinfo_describes_the_committed_binaries(build: Build) -> None:
    versions, hashes = parse_buildinfo((build.directory / "BUILDINFO").read_text())
    assert sorted(hashes) == sorted(build.outputs)
    for name in build.outputs:
        data = (build.directory / name).read_bytes()
        assert sha256(data) == hashes[name], f"{name} is not the file BUILDINFO describes"
    assert "x86_64-w64-mingw32-gcc" in versions
    assert "x86_64-w64-mingw32-ld" in versions


@pytest.mark.parametrize("build", BUILDS, ids=lambda b: b.name)
def test_rebuild_matches_the_committed_bytes(
    build: Build, rebuilt: Callable[[Build], Path]
) -> None:
    differences = toolchain_differences(build)
    if differences:
        pytest.skip(
            "the installed toolchain is not the one that made the committed binaries, so their "
            "bytes cannot be compared (reproducibility is still tested): " + "; ".join(differences)
        )
    out = rebuilt(build)
    for name in build.outputs:
        committed = (build.directory / name).read_bytes()
        fresh = (out / name).read_bytes()
        assert fresh == committed, (
            f"{name} rebuilt with the toolchain BUILDINFO names differs from the committed file "
            f"(sha256 {sha256(fresh)} != {sha256(committed)}): commit the output of "
            f"bash {build.script.relative_to(ROOT)}"
        )
    assert (out / "BUILDINFO").read_text() == (build.directory / "BUILDINFO").read_text()


@pytest.mark.parametrize("build", BUILDS, ids=lambda b: b.name)
def test_build_is_reproducible_from_any_directory(
    build: Build, rebuilt: Callable[[Build], Path], tmp_path: Path
) -> None:
    require_toolchain(build)
    # A copy of the sources elsewhere (a space in the path, too), run from another directory.
    elsewhere = tmp_path / "some other" / "checkout"
    elsewhere.mkdir(parents=True)
    for name in build.sources:
        shutil.copy2(build.directory / name, elsewhere / name)
    out = tmp_path / "out"
    run_build(elsewhere / "build.sh", out, cwd=tmp_path)
    reference = rebuilt(build)
    for name in build.outputs:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), (
            f"{name} depends on the directory it is built in"
        )
    assert (out / "BUILDINFO").read_text() == (reference / "BUILDINFO").read_text()


# ---- static checks with lief -------------------------------------------------------------------


def parse_pe(path: Path) -> lief.PE.Binary:
    binary = lief.PE.parse(str(path))
    assert binary is not None, f"{path} is not a PE file"
    return binary


def enum_name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def text(name: str | bytes) -> str:
    """A name as lief gives it (section names may come as bytes)."""
    return name.decode("latin-1") if isinstance(name, bytes) else name


def imported_dlls(binary: lief.PE.Binary) -> set[str]:
    return {text(imp.name).lower() for imp in binary.imports}


def check_common(binary: lief.PE.Binary, allowed_sections: set[str], imports: set[str]) -> None:
    sections = {text(s.name) for s in binary.sections}
    assert sections <= allowed_sections, f"unexpected sections {sections - allowed_sections}"
    assert not binary.has_tls, "a TLS directory (C runtime or thread-local data)"
    assert not binary.has_debug, "a debug directory (build id or debug information)"
    assert binary.header.time_date_stamps == 0, "a link timestamp (not reproducible)"
    found = imported_dlls(binary)
    assert found <= imports, f"imports from {found - imports}"
    flags = binary.optional_header.dll_characteristics
    assert flags & DYNAMIC_BASE and flags & NX_COMPAT, "no ASLR or no DEP"


@pytest.mark.parametrize(
    ("name", "machine"), [("fleetca-x64.dll", "AMD64"), ("fleetca-x86.dll", "I386")]
)
def test_custom_action_dll(name: str, machine: str) -> None:
    binary = parse_pe(MSI_DIR / name)
    assert enum_name(binary.header.machine) == machine
    assert binary.header.characteristics & IMAGE_FILE_DLL
    check_common(binary, ALLOWED_SECTIONS, DLL_IMPORTS)
    assert imported_dlls(binary) == DLL_IMPORTS

    # Undecorated names (no _WriteSecret@4 on x86) and nothing else: GetProcAddress, which
    # the custom action server uses with the CustomAction table's Target, matches exactly.
    export = binary.get_export()
    assert export is not None
    assert {text(e.name) for e in export.entries} == EXPORTS
    assert text(export.name) == name
    code = binary.get_section(".text")
    assert code is not None
    for entry in export.entries:
        assert not entry.is_extern, f"{text(entry.name)} is forwarded"
        assert code.virtual_address <= entry.address < code.virtual_address + code.virtual_size
    assert binary.optional_header.addressof_entrypoint != 0  # DllMain, returning TRUE


@pytest.mark.parametrize("version", STANDIN_VERSIONS)
def test_standin_executable(version: str) -> None:
    path = SERVICE_DIR / f"orbit-standin-{version}.exe"
    binary = parse_pe(path)
    assert enum_name(binary.header.machine) == "AMD64"
    assert not binary.header.characteristics & IMAGE_FILE_DLL
    assert enum_name(binary.optional_header.subsystem) == "WINDOWS_CUI"
    check_common(binary, STANDIN_SECTIONS, STANDIN_IMPORTS)
    data = path.read_bytes()
    assert f"orbit stand-in {version}\n".encode() in data  # what `orbit.exe --help` prints
    assert f" version={version} pid=".encode("utf-16-le") in data  # the events.log lines
    # The version resource, read as the packager reads a downloaded orbit.exe.
    info = inspect_binary(path)
    assert (info.format, info.cpus, info.executable) == ("PE", ("AMD64",), True)
    assert info.version == f"{version}.0"


# ---- the stand-in as a service under Wine ------------------------------------------------------

SERVICE = "Fleet osquery"
SERVICE_EXE = r"C:\Program Files\Orbit\bin\orbit\orbit.exe"
EVENTS_LOG = Path("drive_c", "ProgramData", "orbit-standin", "events.log")
WINE_TIMEOUT = 120.0  # seconds, any one wine command


def run_detached(
    cmd: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Runs cmd with its output in files, not pipes: wine and wineserver leave daemons (the
    wineserver, services.exe, the service) that inherit the output and would hold a pipe open
    long after cmd exits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            cmd,
            done.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


@dataclass
class Wine:
    prefix: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = run_detached(["wine", *args], self.env, WINE_TIMEOUT)
        if check and done.returncode != 0:
            pytest.fail(
                f"wine {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def host_path(self, windows_path: str) -> Path:
        drive, _, rest = windows_path.partition(":\\")
        assert drive.upper() == "C"
        return self.prefix.joinpath("drive_c", *rest.split("\\"))


def _wine_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the Wine tests need Wine 8 (64-bit). Debian: apt-get install "
            "wine wine64, or bash scripts/install-system-deps.sh --test"
        )
    return path


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    """A fresh 64-bit Wine prefix with a persistent wineserver, killed and deleted at the end."""
    for tool in ("wine", "wineboot", "wineserver"):
        _wine_tool(tool)
    prefix = tmp_path_factory.mktemp("wine") / "prefix"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(
        WINEPREFIX=str(prefix),
        WINEDEBUG="-all",
        # No Mono/Gecko install dialogs, no menu entries written to $HOME.
        WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
    )

    def wineserver(*args: str) -> None:
        run_detached(["wineserver", *args], env, WINE_TIMEOUT)

    try:
        booted = run_detached(["wineboot", "-i"], env, 600)
        if booted.returncode != 0:
            pytest.fail(f"wineboot -i failed ({booted.returncode}):\n{booted.stderr}")
        wineserver("-w")
        # Wine ends services (without a stop control) when the last other Windows process of
        # the prefix ends; a persistent wineserver keeps the service up between our commands.
        wineserver("-p")
        yield Wine(prefix, env)
    finally:
        wineserver("-k")
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def service(wine: Wine) -> Wine:
    """The "Fleet osquery" service, installed as the MSI does (the binary is copied per test)."""
    wine.host_path(SERVICE_EXE).parent.mkdir(parents=True)
    wine.run("sc", "create", SERVICE, "binPath=", f'"{SERVICE_EXE}"')
    key = rf"HKLM\SYSTEM\CurrentControlSet\Services\{SERVICE}"
    environment = r"ORBIT_A=1\0ORBIT_B=2"  # reg's separator of REG_MULTI_SZ entries
    wine.run("reg", "add", key, "/v", "Environment", "/t", "REG_MULTI_SZ", "/d", environment, "/f")
    return wine


def wait_for(what: str, check: Callable[[], str | None], timeout: float = 60.0) -> str:
    """Polls check() until it returns a string; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def service_state(wine: Wine, state: str) -> Callable[[], str | None]:
    def check() -> str | None:
        out = wine.run("sc", "query", SERVICE, check=False).stdout
        return out if re.search(rf"STATE\s*:\s*\d+\s+{state}\b", out) else None

    return check


@pytest.mark.wine
@pytest.mark.parametrize("version", STANDIN_VERSIONS)
def test_standin_prints_its_version_outside_the_scm(wine: Wine, version: str) -> None:
    exe = wine.prefix / "drive_c" / f"standin-{version}.exe"
    shutil.copyfile(SERVICE_DIR / f"orbit-standin-{version}.exe", exe)
    done = wine.run(f"C:\\standin-{version}.exe", "--help")
    assert done.stdout == f"orbit stand-in {version}\n"
    # It never acted as a service (under Wine, a process that calls StartServiceCtrlDispatcherW
    # can take the place of a service that services.exe is starting).
    log = wine.prefix / EVENTS_LOG
    assert not log.exists() or "standin-" not in log.read_text(encoding="utf-8")


@pytest.mark.wine
@pytest.mark.parametrize("version", STANDIN_VERSIONS)
def test_standin_runs_as_a_service(service: Wine, version: str) -> None:
    wine = service
    shutil.copyfile(SERVICE_DIR / f"orbit-standin-{version}.exe", wine.host_path(SERVICE_EXE))
    log = wine.prefix / EVENTS_LOG
    seen = log.read_text(encoding="utf-8") if log.exists() else ""

    def new_lines() -> list[str]:
        return log.read_text(encoding="utf-8").removeprefix(seen).splitlines()

    wine.run("sc", "start", SERVICE)
    wait_for(f"{SERVICE} RUNNING", service_state(wine, "RUNNING"))
    # The start lines are written before the service reports RUNNING.
    lines = new_lines()
    assert lines, "no start line in events.log"
    start = re.fullmatch(rf"start version={re.escape(version)} pid=(\d+) exe=(.*)", lines[0])
    assert start, f"unexpected first line {lines[0]!r}"
    assert start[2].lower() == SERVICE_EXE.lower()
    pid = start[1]
    assert [line for line in lines if line.startswith("regenv ")] == [
        "regenv ORBIT_A=1",
        "regenv ORBIT_B=2",
    ]
    # Wine does not apply the registry Environment to the service; whatever ORBIT_* the
    # process has must at least be well formed.
    assert all(re.fullmatch(r"env ORBIT_\w*=.*", x) for x in lines if x.startswith("env "))

    wine.run("sc", "stop", SERVICE)
    wait_for(f"{SERVICE} STOPPED", service_state(wine, "STOPPED"))
    lines = new_lines()
    assert lines[-1] == f"stop version={version} pid={pid}"
    assert sum(line.startswith("start ") for line in lines) == 1
