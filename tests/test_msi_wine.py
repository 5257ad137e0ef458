"""Our MSI under a real Windows Installer engine: Wine 8's msiexec (tests/wine.py).

Installers are built through the real command line from a local TUF repository whose orbit
is a real Windows service, the stand-in of fixtures/windows-service (1.0.0, then 2.0.0): run
by the service control manager it logs start/stop with its version to
C:\\ProgramData\\orbit-standin\\events.log. Each scenario runs on a fresh copy of one booted
prefix. What Wine cannot prove (hidden properties, the service Environment reaching the
process, ACLs, PowerShell) is listed in tests/wine.py; where the secret shows in an install
log is printed, not asserted (Wine logs MsiHiddenProperties values).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import olefile
import pytest

from packager.writers.msidb import Column, Database, Summary
from tests.helpers import FIXTURES, FaultServer, add_target, cli
from tests.wine import (
    INSTALL_FAILED,
    MsiRun,
    WinePrefix,
    WineTemplate,
    create_template,
    ensure_locale,
)

pytestmark = pytest.mark.wine

STANDIN_DIR = FIXTURES / "windows-service"
OSQUERYD = FIXTURES / "executables" / "orbit-windows-x86_64.exe"
SERVICE = "Fleet osquery"
SERVICE_KEY = r"HKLM\SYSTEM\CurrentControlSet\Services\Fleet osquery"
ORBIT_ROOT = r"C:\Program Files\Orbit"
SERVICE_EXE = ORBIT_ROOT + r"\bin\orbit\orbit.exe"
SDE = "1700000000"
FLEET_URL = "https://f.example.com"
# Through msiexec: spaces, quotes, |, brackets, %, shell characters and non-ASCII. No double
# quote: Wine's msiexec.exe cannot pass one (see tests/wine.py); QUOTE_CANARY goes through
# MsiInstallProductW as Windows' msiexec would pass FLEET_SECRET="s3cr|t ""q"" ü€".
# On msiexec's command line: no spaces, since Wine 10's msiexec (Debian 13) answers 1639 to a
# property argument with spaces (Wine 8 accepts it); values with spaces and quotes go through
# MsiInstallProductW in test_secret_with_double_quote_through_msi_api.
CANARY = "s3cr|t'q'ü€[z]{w}%PATH%^&<>"
QUOTE_CANARY = 's3cr|t "q" ü€'
BUILD_SECRET = "build-time-secret-v1"
UTF8_SECRET = "süper-€-secret"
LOG_FILE = (
    r"C:\Windows\System32\config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"
)

OSQUERY_UPGRADE_CODE = "{EA6C7327-461E-4033-847C-ACDF2B85DEDE}"  # osquery's own MSI
OSQUERY_PRODUCT_CODE = "{5E1E4B6C-2D7A-4C1B-9E55-0A5F2B7C9D11}"  # of the stand-in below


# -- the installers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Installers:
    update_url: str
    v1: Path  # orbit 1.0.0, --fleet-url https://fleet.example.com, BUILD_SECRET
    v1_rebuild: Path  # the same version again: another --fleet-url and SOURCE_DATE_EPOCH
    v1_utf8: Path  # orbit 1.0.0 with the build-time secret UTF8_SECRET
    v2: Path  # orbit 2.0.0, config-less (FLEET_URL and FLEET_SECRET default to "dummy")
    standin: dict[str, bytes]  # version -> the stand-in's bytes


def package_msi(
    repo: Path, url: str, out: Path, *extra: str, secret: str | None, sde: str = SDE
) -> Path:
    env = {"SOURCE_DATE_EPOCH": sde}
    if secret is not None:
        env["ORBIT_PACKAGER_ENROLL_SECRET"] = secret
    cli("package", "--type", "msi", "--update-url", url, "--update-roots",
        repo / "repository/root.json", "--no-cache", "--outfile", out, *extra, env=env)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def installers(
    _initialized_template: dict[bool, Path], tmp_path_factory: pytest.TempPathFactory
) -> Installers:
    standins = {v: STANDIN_DIR / f"orbit-standin-{v}.exe" for v in ("1.0.0", "2.0.0")}
    missing = [str(p.relative_to(FIXTURES.parent)) for p in standins.values() if not p.exists()]
    if missing:
        pytest.fail(f"the Windows service stand-in is missing: {', '.join(missing)}", pytrace=False)
    work = tmp_path_factory.mktemp("msi-wine")
    repo = work / "repo"
    shutil.copytree(_initialized_template[False], repo)
    add_target(repo, standins["1.0.0"], "orbit", "windows", "1.0.0", "stable")
    add_target(repo, OSQUERYD, "osqueryd", "windows", "5.13.1", "stable")
    server = FaultServer(repo / "repository")
    try:
        url = server.url
        fleet = ("--fleet-url", "https://fleet.example.com")
        v1 = package_msi(repo, url, work / "v1.msi", *fleet, secret=BUILD_SECRET)
        v1_rebuild = package_msi(repo, url, work / "v1-rebuild.msi",
                                 "--fleet-url", "https://fleet2.example.com",
                                 secret=BUILD_SECRET, sde=str(int(SDE) + 86400))  # fmt: skip
        v1_utf8 = package_msi(repo, url, work / "v1-utf8.msi", *fleet, secret=UTF8_SECRET)
        add_target(repo, standins["2.0.0"], "orbit", "windows", "2.0.0", "stable")
        v2 = package_msi(repo, url, work / "v2.msi", secret=None)
    finally:
        server.close()
    return Installers(
        url, v1, v1_rebuild, v1_utf8, v2, {v: p.read_bytes() for v, p in standins.items()}
    )


# -- Wine -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wine_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WineTemplate]:
    template = create_template(tmp_path_factory.mktemp("wine"))
    print(f"wine template booted in {template.seconds:.1f} s")
    yield template
    template.remove()


@pytest.fixture
def wine(wine_template: WineTemplate, tmp_path: Path) -> Iterator[WinePrefix]:
    """A fresh prefix (C.UTF-8: ANSI codepage 1252) with its own wineserver."""
    with wine_template.prefix(tmp_path / "prefix", tmp_path / "logs") as prefix:
        yield prefix


# -- checks ---------------------------------------------------------------------------------
class Expect:
    """Collects failed checks so one run reports every difference of a scenario."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, ok: object, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return bool(ok)

    def verify(self) -> None:
        assert not self.failures, f"{len(self.failures)} check(s) failed:\n- " + "\n- ".join(
            self.failures
        )


def check_log(expect: Expect, run: MsiRun, *secrets: str) -> None:
    """For every install log: no PowerShell anywhere (Wine's log shows neither command lines
    nor CustomActionData, so the whole log is searched: stricter than custom action lines).
    Lines showing a secret are printed, not asserted: Wine ignores MsiHiddenProperties."""
    powershell = [line for line in run.log.splitlines() if "powershell" in line.lower()]
    expect(not powershell, f"{run.log_path.name}: PowerShell in the log: {powershell[:5]}")
    # by their first characters: the log formats what it shows ("[z]" disappears)
    shown = [line for line in run.log.splitlines() if any(s[:6] in line for s in secrets if s)]
    print(f"{run.log_path.name}: {len(shown)} log line(s) show a secret (Wine logs hidden "
          f"properties): {shown}")  # fmt: skip


def parse_events(lines: list[str]) -> list[tuple[str, dict[str, str]]]:
    """The stand-in's events: ("start", {version, pid, exe}), ("stop", …), ("regenv", {entry})."""
    events = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind in ("start", "stop"):
            fields = dict(re.findall(r"(\w+)=(\S+)", rest.split(" exe=")[0]))
            if " exe=" in rest or rest.startswith("exe="):
                fields["exe"] = rest.split("exe=", 1)[1]
            events.append((kind, fields))
        elif kind in ("env", "regenv"):
            events.append((kind, {"entry": rest}))
    return events


def running_version(lines: list[str]) -> str | None:
    """Version of the last service start with no stop after it."""
    running: dict[str, str] = {}
    last = None
    for kind, fields in parse_events(lines):
        if kind == "start":
            running[fields.get("pid", "")] = fields.get("version", "")
            last = fields.get("pid", "")
        elif kind == "stop":
            running.pop(fields.get("pid", ""), None)
    return running.get(last) if last is not None else None


def stop_then_start(lines: list[str], old: str, new: str) -> bool:
    """``old`` stopped, then ``new`` started, and ``old`` never started again after that."""
    events = [(k, f.get("version")) for k, f in parse_events(lines) if k in ("start", "stop")]
    stops = [i for i, e in enumerate(events) if e == ("stop", old)]
    starts = [i for i, e in enumerate(events) if e == ("start", new)]
    if not stops or not starts or starts[-1] < stops[0]:
        return False
    return ("start", old) not in events[starts[-1] :]


def expected_environment(update_url: str, fleet_url: str) -> dict[str, str]:
    """The service's Environment for a default build: Fleet's entries (fleet-packaging.md
    §3.3.4) and the install-time properties our MSI always carries, at their defaults (Fleet
    adds END_USER_EMAIL only for orbit >= 1.28 and EUA_TOKEN for >= 1.55)."""
    return {
        "ORBIT_ROOT_DIR": ORBIT_ROOT + "\\.",
        "ORBIT_LOG_FILE": LOG_FILE,
        "ORBIT_FLEET_URL": fleet_url,
        "ORBIT_ENROLL_SECRET_PATH": ORBIT_ROOT + r"\secret.txt",
        "ORBIT_UPDATE_URL": update_url,
        "ORBIT_UPDATE_INTERVAL": "15m0s",
        "ORBIT_FLEET_DESKTOP": "False",
        "ORBIT_DESKTOP_CHANNEL": "stable",
        "ORBIT_ORBIT_CHANNEL": "stable",
        "ORBIT_OSQUERYD_CHANNEL": "stable",
        "ORBIT_ENABLE_SCRIPTS": "False",
        "ORBIT_END_USER_EMAIL": "dummy",
        "ORBIT_EUA_TOKEN": "dummy",
        "ORBIT_BYPASS_END_USER_AUTH": "false",
    }


def environment_as_dict(entries: list[str]) -> dict[str, str]:
    """Entries by name; the system folder's case is Windows' (C:\\Windows\\System32), Wine's is
    lower case: ORBIT_LOG_FILE is compared without case."""
    out = dict(entry.partition("=")[::2] for entry in entries)
    if "ORBIT_LOG_FILE" in out and out["ORBIT_LOG_FILE"].lower() == LOG_FILE.lower():
        out["ORBIT_LOG_FILE"] = LOG_FILE
    return out


def fleet_products(wine: WinePrefix) -> list[str]:
    return [key for key, name in wine.installed_products() if name == "Fleet osquery"]


def secret_bytes(wine: WinePrefix) -> bytes | None:
    path = wine.host(ORBIT_ROOT + r"\secret.txt")
    return path.read_bytes() if path.exists() else None


def check_service(expect: Expect, wine: WinePrefix, version: str, standin: bytes) -> None:
    """The service runs ``version`` from bin\\orbit\\orbit.exe (after a reboot too)."""
    exe = wine.host(SERVICE_EXE)
    expect(exe.exists() and exe.read_bytes() == standin, f"{SERVICE_EXE} is not stand-in {version}")
    state = wine.wait_service_state(SERVICE, "RUNNING")
    expect(state == "RUNNING", f"service state {state} after a reboot, expected RUNNING")
    events = wine.events()
    expect(running_version(events) == version,
           f"running version {running_version(events)}, expected {version}: {events}")  # fmt: skip
    starts = [f for k, f in parse_events(events) if k == "start"]
    expect(starts and starts[-1].get("exe", "").lower() == SERVICE_EXE.lower(),
           f"service started from {starts[-1].get('exe') if starts else None}")  # fmt: skip


# -- scenarios ------------------------------------------------------------------------------
def test_install_with_url_and_secret_on_command_line(
    wine: WinePrefix, installers: Installers
) -> None:
    """1. msiexec /i with FLEET_URL and FLEET_SECRET: files, running service, Environment,
    secret.txt byte for byte, registered product."""
    run = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_URL={FLEET_URL}",
                       f"FLEET_SECRET={CANARY}", log="install")  # fmt: skip
    expect = Expect()
    expect(run.code == 0, f"install: {run}")
    root = wine.host(ORBIT_ROOT)
    for rel in ("bin/orbit/windows/stable/orbit.exe", "bin/orbit/orbit.exe",
                "bin/osqueryd/windows/stable/osqueryd.exe", "certs.pem"):  # fmt: skip
        expect((root / rel).is_file(), f"missing {ORBIT_ROOT}\\{rel}")
    expect((root / "staging").is_dir(), f"missing directory {ORBIT_ROOT}\\staging")
    channel_exe = root / "bin/orbit/windows/stable/orbit.exe"
    expect(channel_exe.exists() and channel_exe.read_bytes() == installers.standin["1.0.0"],
           "bin/orbit/windows/stable/orbit.exe is not stand-in 1.0.0")  # fmt: skip
    osqueryd = root / "bin/osqueryd/windows/stable/osqueryd.exe"
    expect(osqueryd.exists() and osqueryd.read_bytes() == OSQUERYD.read_bytes(), "osqueryd.exe")
    first = [f for k, f in parse_events(wine.events()) if k == "start"][:1]
    expect(first and first[0].get("version") == "1.0.0",
           f"the install did not start stand-in 1.0.0: {wine.events()}")  # fmt: skip
    check_service(expect, wine, "1.0.0", installers.standin["1.0.0"])

    env = wine.reg_query(SERVICE_KEY, "Environment")
    expect(isinstance(env, list), f"Environment is not a REG_MULTI_SZ: {env!r}")
    if isinstance(env, list):
        names = [entry.partition("=")[0] for entry in env]
        expect(len(names) == len(set(names)), f"Environment names repeat: {names}")
        expected = expected_environment(installers.update_url, FLEET_URL)
        expect(environment_as_dict(env) == expected,
               f"Environment {env}\n  expected {expected}")  # fmt: skip
        regenv = [f["entry"] for k, f in parse_events(wine.events()) if k == "regenv"]
        expect(regenv[-len(env) :] == env if regenv else False,
               f"the service read Environment {regenv[-len(env):]}, registry has {env}")  # fmt: skip
    orbit_env = [f["entry"] for k, f in parse_events(wine.events()) if k == "env"]
    print(f"ORBIT_* in the service's process environment (Wine ignores Environment): {orbit_env}")

    expect(secret_bytes(wine) == CANARY.encode(),
           f"secret.txt is {secret_bytes(wine)!r}, expected {CANARY.encode()!r}")  # fmt: skip
    found = wine.installed_products()
    expect(len([n for _, n in found if n == "Fleet osquery"]) == 1, f"products: {found}")
    check_log(expect, run, CANARY)
    expect.verify()


def test_secret_with_double_quote_through_msi_api(wine: WinePrefix, installers: Installers) -> None:
    """1b. FLEET_SECRET with a double quote, as Windows' msiexec hands it to the engine
    (FLEET_SECRET="s3cr|t ""q"" ü€"): secret.txt holds it exactly."""
    run = wine.install_product(installers.v1, {"FLEET_URL": FLEET_URL,
                               "FLEET_SECRET": QUOTE_CANARY}, log="install-api")  # fmt: skip
    expect = Expect()
    expect(run.code == 0, f"install: {run}")
    print(f"engine saw: {run.lines_with('Property(S): FLEET_SECRET')}")
    expect(secret_bytes(wine) == QUOTE_CANARY.encode(),
           f"secret.txt is {secret_bytes(wine)!r}, expected {QUOTE_CANARY.encode()!r}")  # fmt: skip
    check_log(expect, run, QUOTE_CANARY)
    expect.verify()


def test_upgrade_runs_new_version(wine: WinePrefix, installers: Installers) -> None:
    """2. v1 with a secret, then the config-less v2 without FLEET_SECRET: the old service
    stops, 2.0.0 starts, one product, and "dummy" never reaches secret.txt.

    Windows keeps secret.txt across the upgrade: it removes the old product with
    UPGRADINGPRODUCTCODE set, so the old uninstall skips removing the Orbit root. Wine 8 cannot
    show it: its RemoveExistingProducts runs ``msiexec /qn /i {old} REMOVE=ALL`` without
    UPGRADINGPRODUCTCODE (dlls/msi/action.c, ITERATE_RemoveExistingProducts), a plain
    uninstall that removes the root and secret.txt with it. So this asserts the secret is v1's
    or absent, and test_configless_install_keeps_existing_secret proves that "dummy" keeps an
    existing secret.txt."""
    first = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_URL={FLEET_URL}",
                         f"FLEET_SECRET={CANARY}", log="install-v1")  # fmt: skip
    assert first.code == 0, f"install v1: {first}"
    expect = Expect()
    expect(secret_bytes(wine) == CANARY.encode(), f"after v1 secret.txt is {secret_bytes(wine)!r}")
    before = len(wine.events())
    second = wine.msiexec("/i", installers.v2, "/qn", log="upgrade-v2")
    expect(second.code == 0, f"upgrade: {second}")
    new = wine.events()[before:]
    expect(stop_then_start(new, "1.0.0", "2.0.0"),
           f"expected stop of 1.0.0 then start of 2.0.0 during the upgrade: {new}")  # fmt: skip
    check_service(expect, wine, "2.0.0", installers.standin["2.0.0"])
    found = wine.installed_products()
    expect(len([n for _, n in found if n == "Fleet osquery"]) == 1, f"products: {found}")
    after = secret_bytes(wine)
    print(f"secret.txt after the upgrade under Wine: {after!r}")
    expect(after in (CANARY.encode(), None),
           f"after the upgrade secret.txt is {after!r}, expected v1's secret (or none: Wine)")  # fmt: skip
    check_log(expect, first, CANARY)
    check_log(expect, second, CANARY)
    expect.verify()


def test_configless_install_keeps_existing_secret(wine: WinePrefix, installers: Installers) -> None:
    """2b. A config-less MSI (FLEET_SECRET defaults to "dummy") installed where secret.txt
    already exists leaves it as it is, byte for byte."""
    existing = wine.host(ORBIT_ROOT + r"\secret.txt")
    existing.parent.mkdir(parents=True)
    existing.write_bytes(CANARY.encode())
    run = wine.msiexec("/i", installers.v2, "/qn", log="install-v2")
    expect = Expect()
    expect(run.code == 0, f"install: {run}")
    expect(secret_bytes(wine) == CANARY.encode(),
           f"secret.txt is {secret_bytes(wine)!r}, expected it kept")  # fmt: skip
    check_service(expect, wine, "2.0.0", installers.standin["2.0.0"])
    left = sorted(p.name for p in existing.parent.glob("secret*"))
    expect(left == ["secret.txt"], f"secret files: {left}")
    check_log(expect, run, CANARY)
    expect.verify()


def test_downgrade_runs_old_version(wine: WinePrefix, installers: Installers) -> None:
    """3. v2, then v1 (Fleet allows downgrades): 1.0.0 runs, one product, and v1's build-time
    secret (not "dummy") replaces secret.txt."""
    first = wine.msiexec("/i", installers.v2, "/qn", f"FLEET_URL={FLEET_URL}",
                         f"FLEET_SECRET={CANARY}", log="install-v2")  # fmt: skip
    assert first.code == 0, f"install v2: {first}"
    before = len(wine.events())
    second = wine.msiexec("/i", installers.v1, "/qn", log="downgrade-v1")
    expect = Expect()
    expect(second.code == 0, f"downgrade: {second}")
    new = wine.events()[before:]
    expect(stop_then_start(new, "2.0.0", "1.0.0"),
           f"expected stop of 2.0.0 then start of 1.0.0 during the downgrade: {new}")  # fmt: skip
    check_service(expect, wine, "1.0.0", installers.standin["1.0.0"])
    found = wine.installed_products()
    expect(len([n for _, n in found if n == "Fleet osquery"]) == 1, f"products: {found}")
    expect(secret_bytes(wine) == BUILD_SECRET.encode(),
           f"secret.txt is {secret_bytes(wine)!r}, expected v1's build-time secret")  # fmt: skip
    check_log(expect, first, CANARY)
    check_log(expect, second, CANARY, BUILD_SECRET)
    expect.verify()


def package_code(msi: Path) -> str:
    with olefile.OleFileIO(str(msi)) as ole:
        code = ole.get_metadata().revision_number
    return code.decode() if isinstance(code, bytes) else str(code)


def test_same_version_rebuild_replaces_product(wine: WinePrefix, installers: Installers) -> None:
    """4. Two builds of orbit 1.0.0 (another --fleet-url and SOURCE_DATE_EPOCH): the second
    installs over the first and leaves one product, configured as the second says."""
    codes = package_code(installers.v1), package_code(installers.v1_rebuild)
    print(f"PackageCodes: {codes}")
    assert codes[0] != codes[1], f"both builds have PackageCode {codes[0]}"
    first = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_SECRET={CANARY}", log="install-1")
    assert first.code == 0, f"first install: {first}"
    products_before = fleet_products(wine)
    second = wine.msiexec("/i", installers.v1_rebuild, "/qn", log="install-rebuild")
    expect = Expect()
    expect(second.code == 0, f"second install: {second}")
    products = fleet_products(wine)
    print(f"products before {products_before}, after {products}")
    expect(len(products) == 1, f"products: {wine.installed_products()}")
    check_service(expect, wine, "1.0.0", installers.standin["1.0.0"])
    env = wine.reg_query(SERVICE_KEY, "Environment")
    url = environment_as_dict(env).get("ORBIT_FLEET_URL") if isinstance(env, list) else None
    expect(url == "https://fleet2.example.com", f"ORBIT_FLEET_URL {url}, expected the rebuild's")
    check_log(expect, first, CANARY)
    check_log(expect, second, CANARY, BUILD_SECRET)
    expect.verify()


def test_uninstall_removes_everything(wine: WinePrefix, installers: Installers) -> None:
    """5. /x by product code: service stopped and deleted, product gone, and the whole
    C:\\Program Files\\Orbit gone, files created at run time and secret.txt included."""
    first = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_URL={FLEET_URL}",
                         f"FLEET_SECRET={CANARY}", log="install")  # fmt: skip
    assert first.code == 0, f"install: {first}"
    products = fleet_products(wine)
    assert len(products) == 1, f"products: {wine.installed_products()}"
    root = wine.host(ORBIT_ROOT)
    runtime = ["bin/osqueryd/windows/stable/extra.db", "staging/x", "osquery.db/nested/deep/f",
               "orbit-osquery.log"]  # fmt: skip
    for rel in runtime:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"runtime data")
    before = len(wine.events())
    run = wine.msiexec("/x", products[0], "/qn", log="uninstall")
    expect = Expect()
    expect(run.code == 0, f"uninstall: {run}")
    expect(not fleet_products(wine), f"still registered: {wine.installed_products()}")
    state = wine.service_state(SERVICE)
    expect(state is None, f"service still there ({state})")
    expect(wine.reg_query(SERVICE_KEY, "Environment") is None, "Environment value left behind")
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    expect(not root.exists(), f"{ORBIT_ROOT} left behind, with: {left}")
    new = [k + " " + f.get("version", "") for k, f in parse_events(wine.events()[before:])]
    expect("stop 1.0.0" in new, f"the uninstall did not stop the service: {new}")
    check_log(expect, first, CANARY)
    check_log(expect, run, CANARY)
    expect.verify()


def test_build_time_utf8_secret_under_cp1251(
    wine_template: WineTemplate, installers: Installers, tmp_path: Path
) -> None:
    """6. A non-ASCII build-time secret, installed with Wine's ANSI codepage 1251
    (LC_ALL=ru_RU.UTF-8): secret.txt holds its UTF-8 bytes (the database codepage is declared
    and right, not the system's)."""
    locpath = ensure_locale("ru_RU.UTF-8", tmp_path / "locales")
    with wine_template.prefix(tmp_path / "prefix", tmp_path / "logs", "ru_RU.UTF-8",
                              locpath) as wine:  # fmt: skip
        assert wine.acp() == 1251, f"LC_ALL=ru_RU.UTF-8 gave ANSI codepage {wine.acp()}"
        run = wine.msiexec("/i", installers.v1_utf8, "/qn", log="install-ru")
        expect = Expect()
        expect(run.code == 0, f"install: {run}")
        print(f"engine saw (log in cp1251): {run.lines_with('Property(S): FLEET_SECRET')}")
        expect(secret_bytes(wine) == UTF8_SECRET.encode(),
               f"secret.txt is {secret_bytes(wine)!r}, expected {UTF8_SECRET.encode()!r}")  # fmt: skip
        check_log(expect, run, UTF8_SECRET)
        expect.verify()


def test_failed_install_rolls_back_secret(wine: WinePrefix, installers: Installers) -> None:
    """7. An install that fails after the secret is written (StartServices: a "Fleet osquery"
    service already exists and points at a missing program) rolls back: 1603, no secret.txt
    and none of its temporary files, no product."""
    wine.create_service(SERVICE, r"C:\nowhere\orbit.exe")
    run = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_URL={FLEET_URL}",
                       f"FLEET_SECRET={CANARY}", log="install-fails")  # fmt: skip
    expect = Expect()
    expect(run.code in INSTALL_FAILED, f"expected a failed install (1603): {run}")
    print(f"failed actions: {run.failed_actions()}")
    root = wine.host(ORBIT_ROOT)
    secrets = sorted(str(p) for p in root.rglob("secret*")) if root.exists() else []
    expect(not secrets, f"left after the rollback: {secrets}")
    expect(
        not fleet_products(wine), f"registered after a failed install: {wine.installed_products()}"
    )
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    print(f"{ORBIT_ROOT} after the rollback: {left if root.exists() else 'absent'}")
    check_log(expect, run, CANARY)
    expect.verify()


def osquery_msi(out: Path) -> Path:
    """A minimal standalone "osquery" MSI (osquery's UpgradeCode, version 5.10.2) made with our
    MSI database writer: one component creating C:\\Program Files\\osquery, registered as a
    per-machine product."""
    db = Database(1252)

    def table(name: str, *columns: Column, rows: list[tuple[str | int | None, ...]]) -> None:
        t = db.table(name, columns)
        for row in rows:
            t.add(*row)

    table("Property", Column("Property", "s72", key=True, category="Identifier"),
          Column("Value", "l0", category="Text"), rows=[
              ("ProductCode", OSQUERY_PRODUCT_CODE), ("ProductName", "osquery"),
              ("ProductVersion", "5.10.2"), ("ProductLanguage", "1033"),
              ("Manufacturer", "osquery"), ("UpgradeCode", OSQUERY_UPGRADE_CODE),
              ("ALLUSERS", "1")])  # fmt: skip
    table("Directory", Column("Directory", "s72", key=True, category="Identifier"),
          Column("Directory_Parent", "S72", category="Identifier"),
          Column("DefaultDir", "l255", category="DefaultDir"), rows=[
              ("TARGETDIR", None, "SourceDir"), ("ProgramFiles64Folder", "TARGETDIR", "."),
              ("INSTALLDIR", "ProgramFiles64Folder", "osquery")])  # fmt: skip
    table("Component", Column("Component", "s72", key=True, category="Identifier"),
          Column("ComponentId", "S38", category="Guid"),
          Column("Directory_", "s72", category="Identifier"), Column("Attributes", "i2"),
          Column("Condition", "S255", category="Condition"),
          Column("KeyPath", "S72", category="Identifier"), rows=[
              ("C_OSQUERY", "{0B6C1B7E-7E8B-4A55-9D35-6C1F3C2E4A21}", "INSTALLDIR", 256,
               None, None)])  # fmt: skip
    table("CreateFolder", Column("Directory_", "s72", key=True, category="Identifier"),
          Column("Component_", "s72", key=True, category="Identifier"),
          rows=[("INSTALLDIR", "C_OSQUERY")])  # fmt: skip
    table("Feature", Column("Feature", "s38", key=True, category="Identifier"),
          Column("Feature_Parent", "S38", category="Identifier"),
          Column("Title", "L64", category="Text"), Column("Description", "L255", category="Text"),
          Column("Display", "I2"), Column("Level", "i2"),
          Column("Directory_", "S72", category="UpperCase"), Column("Attributes", "i2"),
          rows=[("osquery", None, "osquery", None, 0, 1, None, 0)])  # fmt: skip
    table("FeatureComponents", Column("Feature_", "s38", key=True, category="Identifier"),
          Column("Component_", "s72", key=True, category="Identifier"),
          rows=[("osquery", "C_OSQUERY")])  # fmt: skip
    actions = ["CostInitialize", "FileCost", "CostFinalize", "InstallValidate",
               "InstallInitialize", "ProcessComponents", "UnpublishFeatures", "RemoveFolders",
               "CreateFolders", "RegisterProduct", "PublishFeatures", "PublishProduct",
               "InstallFinalize"]  # fmt: skip
    table("InstallExecuteSequence", Column("Action", "s72", key=True, category="Identifier"),
          Column("Condition", "S255", category="Condition"), Column("Sequence", "I2"),
          rows=[(action, None, 100 * (i + 1)) for i, action in enumerate(actions)])  # fmt: skip
    summary = Summary(
        codepage=1252, title="Installation Database", subject="osquery", author="osquery",
        keywords="Installer", comments="test stand-in for a standalone osquery MSI",
        template="x64;1033", package_code="{7A4E2C1D-3B5F-4D6E-8F90-1A2B3C4D5E6F}",
        timestamp=int(SDE), page_count=500, word_count=2, app_name="tests",
    )  # fmt: skip
    with out.open("wb") as f:
        db.write(f, summary.encode())
    return out


def test_first_install_removes_standalone_osquery(
    wine: WinePrefix, installers: Installers, tmp_path: Path
) -> None:
    """8. A standalone osquery MSI is installed; Fleet's first install removes it (osquery's
    UpgradeCode in our Upgrade table), as Fleet's MSI does."""
    osquery = osquery_msi(tmp_path / "osquery.msi")
    first = wine.msiexec("/i", osquery, "/qn", log="install-osquery")
    assert first.code == 0, f"installing the osquery MSI: {first}"
    names = [name for _, name in wine.installed_products()]
    assert "osquery" in names, f"the osquery MSI did not register: {names}"
    assert wine.host(r"C:\Program Files\osquery").is_dir()
    run = wine.msiexec("/i", installers.v1, "/qn", f"FLEET_URL={FLEET_URL}",
                       f"FLEET_SECRET={CANARY}", log="install")  # fmt: skip
    expect = Expect()
    expect(run.code == 0, f"install: {run}")
    products = wine.installed_products()
    expect([name for _, name in products].count("Fleet osquery") == 1, f"products: {products}")
    expect(OSQUERY_PRODUCT_CODE not in [key for key, _ in products] and
           "osquery" not in [name for _, name in products],
           f"the standalone osquery is still registered: {products}")  # fmt: skip
    expect(not wine.host(r"C:\Program Files\osquery").exists(),
           "C:\\Program Files\\osquery left behind")  # fmt: skip
    check_log(expect, run, CANARY)
    expect.verify()
