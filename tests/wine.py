"""Wine 8 as the Windows Installer engine of the MSI tests (tests/test_msi_wine.py).

One template prefix per session (``wineboot -i``, about 7 s and 700 MB), then a copy per test
with its own wineserver, killed on every exit path (``WineTemplate.prefix``). Facts this harness
relies on, checked with Wine 8.0 on Debian 12 (see also real-clients.md §2):

* ``wine msiexec …`` waits for the installation and exits with the low 8 bits of the result
  (1603 -> 67): ``msi_result`` turns them back into the Windows Installer code, in one place.
* Wine's msiexec.exe splits its command line on double quotes with no escape at all (neither
  ``""`` nor ``\\"``), so no property value given through it can contain a double quote;
  Windows' msiexec turns ``""`` inside a quoted value into one ``"``. ``install_product`` hands
  msi.dll's ``MsiInstallProductW`` exactly the property string Windows' msiexec would (Wine's
  msi.dll parses it as Windows does), through ``msitool.exe``, built here with mingw-w64.
* The MSI log is written in the ANSI codepage (``GetACP``), which the locale of the wine
  process decides: C.UTF-8 gives 1252, ru_RU.UTF-8 gives 1251.
* When the last Windows process ends (``wineserver -w``), Wine ends services.exe and the
  services with it, without a stop control; the next wine command starts services.exe again,
  which starts every auto-start service: every ``wineserver -w`` is a reboot.
* Not proven by Wine: MsiHiddenProperties (Wine logs hidden values), the service's registry
  ``Environment`` (Wine's services.exe ignores it), ACLs, ICE validation, PowerShell (a stub
  that exits 0 and does nothing).

Wine missing is a test failure naming the packages, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CALL_TIMEOUT = 120.0  # seconds, any one wine command (an install takes 1-3 s)
DEFAULT_LOCALE = "C.UTF-8"
# No Mono/Gecko install dialogs, no menu entries written to $HOME.
DLL_OVERRIDES = "mscoree,mshtml=;winemenubuilder.exe=d"
INSTALL_HINT = (
    "bash scripts/install-system-deps.sh --test "
    "(Debian: apt-get install wine wine64 gcc-mingw-w64-x86-64-win32)"
)

# Windows Installer results (msiexec's exit codes) the tests can meet; no two share a low byte.
MSI_RESULTS = {
    0: "ERROR_SUCCESS",
    1: "msiexec usage error",
    2: "ERROR_FILE_NOT_FOUND",
    1601: "ERROR_INSTALL_SERVICE_FAILURE",
    1602: "ERROR_INSTALL_USEREXIT",
    1603: "ERROR_INSTALL_FAILURE",
    1604: "ERROR_INSTALL_SUSPEND",
    1605: "ERROR_UNKNOWN_PRODUCT",
    1618: "ERROR_INSTALL_ALREADY_RUNNING",
    1619: "ERROR_INSTALL_PACKAGE_OPEN_FAILED",
    1620: "ERROR_INSTALL_PACKAGE_INVALID",
    1624: "ERROR_INSTALL_TRANSFORM_FAILURE",
    1625: "ERROR_INSTALL_PACKAGE_REJECTED",
    1627: "ERROR_FUNCTION_FAILED",
    1633: "ERROR_INSTALL_PLATFORM_UNSUPPORTED",
    1638: "ERROR_PRODUCT_VERSION",
    1639: "ERROR_INVALID_COMMAND_LINE",
    1641: "ERROR_SUCCESS_REBOOT_INITIATED",
    3010: "ERROR_SUCCESS_REBOOT_REQUIRED",
}
_BY_LOW_BYTE = {code & 0xFF: code for code in MSI_RESULTS}
assert len(_BY_LOW_BYTE) == len(MSI_RESULTS), "two MSI results share a low byte"

# A failed installation: Windows returns 1603. Wine 8 returns 1627 (ERROR_FUNCTION_FAILED)
# when a standard action fails (seen with StartServices), 1603 when a custom action fails.
INSTALL_FAILED = frozenset({1603, 1627})


def msi_result(status: int) -> int:
    """The Windows Installer result behind wine's exit status (its low 8 bits)."""
    if status in _BY_LOW_BYTE:
        return _BY_LOW_BYTE[status]
    raise AssertionError(f"wine exited with status {status}: no known Windows Installer result")


def result_name(code: int) -> str:
    return f"{code} ({MSI_RESULTS.get(code, 'unknown')})"


# The helper run inside Wine. Arguments after the verb are UTF-16 code units as 4 hex digits
# each, so no command-line quoting and no codepage can change them.
MSITOOL_C = r"""
#include <windows.h>
#include <msi.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

static wchar_t *unhex(const wchar_t *hex)
{
    size_t n = wcslen(hex) / 4;
    wchar_t *out = calloc(n + 1, sizeof(wchar_t));
    for (size_t i = 0; out && i < n; i++) {
        wchar_t unit[5] = {hex[4 * i], hex[4 * i + 1], hex[4 * i + 2], hex[4 * i + 3], 0};
        out[i] = (wchar_t)wcstoul(unit, NULL, 16);
    }
    return out;
}

int wmain(int argc, wchar_t **argv)
{
    if (argc == 2 && !wcscmp(argv[1], L"acp")) {
        printf("acp=%u\n", GetACP());
        return 0;
    }
    if (argc == 5 && !wcscmp(argv[1], L"install")) {
        /* msiexec /qn /l*v LOG: every log mode and verbose output */
        DWORD modes = INSTALLLOGMODE_FATALEXIT | INSTALLLOGMODE_ERROR | INSTALLLOGMODE_WARNING
            | INSTALLLOGMODE_USER | INSTALLLOGMODE_INFO | INSTALLLOGMODE_RESOLVESOURCE
            | INSTALLLOGMODE_OUTOFDISKSPACE | INSTALLLOGMODE_ACTIONSTART
            | INSTALLLOGMODE_ACTIONDATA | INSTALLLOGMODE_COMMONDATA
            | INSTALLLOGMODE_PROPERTYDUMP | INSTALLLOGMODE_PROGRESS | INSTALLLOGMODE_INITIALIZE
            | INSTALLLOGMODE_TERMINATE | INSTALLLOGMODE_SHOWDIALOG | INSTALLLOGMODE_VERBOSE;
        MsiSetInternalUI(INSTALLUILEVEL_NONE, NULL);
        if (MsiEnableLogW(modes, unhex(argv[4]), 0) != ERROR_SUCCESS) {
            fputs("msitool: MsiEnableLogW failed\n", stderr);
            return 3;
        }
        printf("result=%u\n", MsiInstallProductW(unhex(argv[2]), unhex(argv[3])));
        return 0;
    }
    if (argc == 2 && !wcscmp(argv[1], L"products")) {
        /* every product Windows Installer has registered: code, then the UTF-16 code units
           of its name as hex (no console codepage in between) */
        wchar_t code[39];
        for (DWORD i = 0; MsiEnumProductsW(i, code) == ERROR_SUCCESS; i++) {
            wchar_t name[512];
            DWORD size = 512;
            if (MsiGetProductInfoW(code, INSTALLPROPERTY_INSTALLEDPRODUCTNAME, name, &size)
                != ERROR_SUCCESS)
                name[0] = 0;
            printf("product=%ls|||", code);
            for (wchar_t *c = name; *c; c++)
                printf("%04x", (unsigned)*c);
            printf("\n");
        }
        printf("end\n");
        return 0;
    }
    fputs("usage: msitool acp | msitool products | msitool install PACKAGE PROPERTIES LOG\n",
          stderr);
    return 2;
}
"""


def _hex16(text: str) -> str:
    return text.encode("utf-16-be").hex()


def msi_properties(props: Mapping[str, str]) -> str:
    """Properties as an administrator types them for Windows' msiexec: NAME="value", with
    every double quote of the value doubled."""
    return " ".join(
        f'{name}="{value.replace(chr(34), chr(34) * 2)}"' for name, value in props.items()
    )


def windows_path(host: Path) -> str:
    """A host path as Wine sees it through drive Z: (the root of the host)."""
    return "Z:" + str(host.resolve()).replace("/", "\\")


def require_tools() -> None:
    """Fail (never skip) in one line when Wine or mingw-w64 is missing."""
    missing = [t for t in ("wine", "wineserver", "x86_64-w64-mingw32-gcc") if not shutil.which(t)]
    if not shutil.which("wine64") and not Path("/usr/lib/wine/wine64").exists():
        missing.append("wine64")
    if missing:
        pytest.fail(f"Wine tests need {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)


def _locale_names() -> set[str]:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    return {name.strip().lower().replace("utf-8", "utf8") for name in out.split()}


def ensure_locale(name: str, workdir: Path) -> Path | None:
    """Make glibc locale ``name`` (e.g. ru_RU.UTF-8) usable; returns a LOCPATH or None.

    An installed locale is used as it is. Otherwise it is compiled with localedef into
    ``workdir`` (no root, nothing changed on the system), which needs the definitions of
    Debian's ``locales`` package; without them the test fails naming it."""
    if name.lower().replace("utf-8", "utf8") in _locale_names():
        return None
    language, _, charmap = name.partition(".")
    target = workdir / name
    if not target.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["localedef", "-i", language, "-f", charmap or "UTF-8", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not target.exists():
            pytest.fail(
                f"locale {name} is not installed and localedef could not build it "
                f"({proc.stderr.strip().splitlines()[-1:] or proc.returncode}): "
                "apt-get install locales (its /usr/share/i18n definitions are enough), or "
                f"enable {name} in /etc/locale.gen and run locale-gen",
                pytrace=False,
            )
    return workdir


_NOISE = re.compile(
    r"^(it looks like wine32 is missing|multiarch needs to be enabled|execute \"dpkg|"
    r"apt-get install wine32|\w+:err:(winediag|systray|ole|explorer))"
)


def _quiet(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not _NOISE.match(line))


@dataclass
class MsiRun:
    """One msiexec (or MsiInstallProductW) call: the Windows Installer result and its log."""

    command: str
    code: int
    log: str
    log_path: Path
    seconds: float

    def failed_actions(self) -> list[str]:
        """Log lines of actions that ended in "Return value 0" or 3: a failure in Wine's log
        (Windows logs 3) or, in both, an action that did nothing (Wine: MigrateFeatureStates)."""
        return [
            line
            for line in self.log.splitlines()
            if re.match(r"Action ended [\d:]+: .*Return value [03]\.$", line)
        ]

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.log.splitlines() if text in line]

    def __str__(self) -> str:
        failed = "\n  ".join(self.failed_actions()) or "(none)"
        return (
            f"{self.command}\n-> {result_name(self.code)} in {self.seconds:.1f} s; "
            f"failed actions:\n  {failed}\nlog: {self.log_path}"
        )


@dataclass
class WinePrefix:
    """A private Wine prefix: run Windows programs, install MSIs, look at what they left."""

    path: Path
    logs: Path  # host directory for MSI logs and exports, kept after the prefix is removed
    tool: Path  # msitool.exe
    locale: str = DEFAULT_LOCALE
    locpath: Path | None = None
    _acp: int | None = field(default=None, repr=False)
    _count: int = field(default=0, repr=False)

    # -- running ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LC_", "WINE")) and k not in ("LANG", "LANGUAGE", "DISPLAY")
        }
        env.pop("WAYLAND_DISPLAY", None)
        env.update(
            WINEPREFIX=str(self.path),
            WINEDEBUG="-all",
            WINEDLLOVERRIDES=DLL_OVERRIDES,
            LC_ALL=self.locale,
        )
        if self.locpath is not None:
            env["LOCPATH"] = str(self.locpath)
        return env

    def run(
        self, *args: str | Path, timeout: float = CALL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``wine ARGS``; a hung command kills this prefix's wineserver and fails the test.

        Output goes through files, not pipes: the wineserver and services.exe a command starts
        inherit its output, and a pipe would make every call wait until they exit (2-3 s)."""
        cmd = ["wine", *map(str, args)]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                done = subprocess.run(
                    cmd,
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from None
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", errors="replace")
            stderr = _quiet(err.read().decode("utf-8", errors="replace"))
        return subprocess.CompletedProcess(cmd, done.returncode, stdout, stderr)

    def server(self, *args: str, timeout: float = CALL_TIMEOUT) -> None:
        """``wineserver ARGS`` for this prefix (-w: wait until every process ended, -k: kill)."""
        try:
            subprocess.run(
                ["wineserver", *args],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            if args != ("-k",):
                self.kill()
            raise AssertionError(f"wineserver {' '.join(args)} hung for {timeout:.0f} s") from None

    def wait(self) -> None:
        self.server("-w")

    def kill(self) -> None:
        self.server("-k", timeout=30)

    # -- paths -----------------------------------------------------------------------------
    @property
    def drive_c(self) -> Path:
        return self.path / "drive_c"

    def host(self, path: str) -> Path:
        r"""The host path of a C:\ path inside the prefix."""
        drive, _, rest = path.partition(":")
        assert drive.upper() == "C", path
        return self.drive_c.joinpath(*[part for part in rest.split("\\") if part])

    # -- Windows Installer -------------------------------------------------------------------
    def _log_path(self, name: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count += 1
        return self.logs / f"{self._count:02d}-{name}.log"

    def _finish(self, command: str, code: int, log_path: Path, started: float) -> MsiRun:
        self.wait()  # custom action servers, services and the log are done after this
        run = MsiRun(command, code, self.read_log(log_path), log_path, time.monotonic() - started)
        # Shown by pytest when the test fails: the whole log (test secrets are canaries).
        print(f"==== {run}\n{run.log}\n==== end of {log_path.name}")
        return run

    def msiexec(self, *args: str | Path, log: str) -> MsiRun:
        """``wine msiexec ARGS /l*v LOG``; Path arguments become Windows paths.

        Each argument reaches msiexec as one word (wine quotes those with spaces). Wine's
        msiexec cannot pass a double quote inside a value: use ``install_product`` for that.
        """
        words = [windows_path(a) if isinstance(a, Path) else a for a in args]
        for word in words:
            if '"' in word or (word.endswith("\\") and " " in word):
                raise ValueError(f"Wine's msiexec cannot receive {word!r} intact")
        log_path = self._log_path(log)
        command = " ".join(["msiexec", *words])
        started = time.monotonic()
        proc = self.run("msiexec", *words, "/l*v", windows_path(log_path))
        if proc.stderr.strip():
            print(f"msiexec stderr:\n{proc.stderr}")
        return self._finish(command, msi_result(proc.returncode), log_path, started)

    def install_product(self, package: Path, properties: Mapping[str, str], *, log: str) -> MsiRun:
        """``MsiInstallProductW(package, properties)``, properties as ``msi_properties`` writes
        them: what Windows' msiexec passes for ``msiexec /i PACKAGE /qn NAME="value"``."""
        props = msi_properties(properties)
        log_path = self._log_path(log)
        started = time.monotonic()
        proc = self.run(
            self.tool,
            "install",
            _hex16(windows_path(package)),
            _hex16(props),
            _hex16(windows_path(log_path)),
        )
        found = re.search(r"^result=(\d+)\s*$", proc.stdout, re.M)
        if found is None:
            raise AssertionError(f"msitool install gave no result: {proc.stdout}\n{proc.stderr}")
        command = f"MsiInstallProductW({windows_path(package)!r}, {props!r})"
        return self._finish(command, int(found.group(1)), log_path, started)

    def acp(self) -> int:
        """The ANSI codepage of Windows programs in this prefix (decided by the locale)."""
        if self._acp is None:
            out = self.run(self.tool, "acp").stdout
            found = re.search(r"acp=(\d+)", out)
            assert found, f"msitool acp: {out!r}"
            self._acp = int(found.group(1))
        return self._acp

    def read_log(self, path: Path) -> str:
        """An MSI log: UTF-16 when it starts with a BOM, else the prefix's ANSI codepage."""
        if not path.exists():
            return ""
        data = path.read_bytes()
        if data.startswith(b"\xff\xfe"):
            return data[2:].decode("utf-16-le", errors="replace")
        return data.decode(f"cp{self.acp()}", errors="replace")

    def installed_products(self) -> list[tuple[str, str]]:
        """(product code, name) of every product Windows Installer has registered, through its
        own API (MsiEnumProductsW). Wine 10's ``uninstaller --list`` (the Add/Remove Programs
        list) printed nothing on Debian 13 for products whose Uninstall key was there."""
        proc = self.run(self.tool, "products")
        lines = proc.stdout.splitlines()
        assert proc.returncode == 0 and "end" in lines, f"msitool products: {proc.stdout!r}"
        entries = []
        for line in lines:
            if line.startswith("product="):
                code, _, hexname = line.removeprefix("product=").partition("|||")
                entries.append((code, bytes.fromhex(hexname).decode("utf-16-be")))
        return entries

    # -- services ----------------------------------------------------------------------------
    def service_state(self, name: str) -> str | None:
        """RUNNING, STOPPED, … from ``wine sc query``; None when there is no such service."""
        proc = self.run("sc", "query", name)
        found = re.search(r"STATE\s*:\s*\d+\s+(\w+)", proc.stdout)
        if proc.returncode != 0 or found is None:
            return None
        return found.group(1)

    def wait_service_state(self, name: str, state: str, timeout: float = 30) -> str | None:
        """The service's state once it is ``state``, or the last state seen after ``timeout``
        (services.exe starts auto-start services while the first command of a boot runs)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.service_state(name)
            if seen == state or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)

    def create_service(self, name: str, binary: str) -> None:
        proc = self.run("sc", "create", name, "binPath=", binary, "start=", "demand")
        assert proc.returncode == 0, f"sc create {name}: {proc.stdout}{proc.stderr}"

    # -- registry ----------------------------------------------------------------------------
    def reg_query(self, key: str, value: str) -> str | list[str] | int | bytes | None:
        """A registry value, exactly: REG_SZ/REG_EXPAND_SZ as str, REG_MULTI_SZ as the list of
        its strings, REG_DWORD as int, anything else as bytes; None when key or value is
        missing. Read through ``reg export`` (UTF-16 hex data): ``reg query`` prints
        REG_MULTI_SZ with ``\\0`` separators and unescaped backslashes, which is ambiguous."""
        out = self._log_path("reg-export").with_suffix(".reg")
        proc = self.run("reg", "export", key, windows_path(out), "/y")
        if proc.returncode != 0 or not out.exists():
            return None
        return parse_reg_export(out.read_bytes().decode("utf-16"), key, value)

    # -- the service stand-in ----------------------------------------------------------------
    def events(self) -> list[str]:
        """Lines of the stand-in's C:\\ProgramData\\orbit-standin\\events.log."""
        path = self.host(r"C:\ProgramData\orbit-standin\events.log")
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def parse_reg_export(text: str, key: str, value: str) -> str | list[str] | int | bytes | None:
    """One value of ``key`` (its own section only) from the text of a .reg export."""
    lines: list[str] = []
    for raw in text.splitlines():
        if lines and lines[-1].endswith("\\") and raw.startswith("  "):
            lines[-1] = lines[-1][:-1] + raw.strip()
        else:
            lines.append(raw)
    wanted = "[" + key.replace("HKLM\\", "HKEY_LOCAL_MACHINE\\").lower() + "]"
    section = None
    for line in lines:
        if line.startswith("["):
            section = line.lower()
            continue
        if section != wanted:
            continue
        found = re.match(r'^(?:"((?:[^"\\]|\\.)*)"|@)=(.*)$', line)
        if not found:
            continue
        name = re.sub(r"\\(.)", r"\1", found.group(1) or "")
        if name.lower() != value.lower():
            continue
        data = found.group(2)
        if data.startswith('"'):
            return re.sub(r"\\(.)", r"\1", data[1:-1])
        if data.startswith("dword:"):
            return int(data[6:], 16)
        kind, _, hexdata = data.partition(":")
        raw_bytes = bytes.fromhex(hexdata.replace(",", ""))
        if kind in ("hex(7)", "hex(2)", "hex(1)"):
            decoded = raw_bytes.decode("utf-16-le")
            if kind != "hex(7)":
                return decoded.rstrip("\0")
            decoded = decoded.removesuffix("\0").removesuffix("\0")
            return decoded.split("\0") if decoded else []
        return raw_bytes
    return None


@dataclass
class WineTemplate:
    """A booted prefix every test copies (``prefix``), and the msitool.exe helper."""

    path: Path
    tool: Path
    seconds: float

    @contextlib.contextmanager
    def prefix(
        self, dest: Path, logs: Path, locale: str = DEFAULT_LOCALE, locpath: Path | None = None
    ) -> Iterator[WinePrefix]:
        """A fresh copy of the template with its own wineserver, killed and removed on exit
        (the MSI logs stay in ``logs``)."""
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.path), str(dest)], check=True)
        prefix = WinePrefix(dest, logs, self.tool, locale, locpath)
        try:
            yield prefix
        finally:
            try:
                prefix.kill()
            finally:
                _remove_server_dir(dest)
                shutil.rmtree(dest, ignore_errors=True)

    def remove(self) -> None:
        """Delete the template (its wineserver ended when it was booted)."""
        _remove_server_dir(self.path)
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_server_dir(prefix: Path) -> None:
    """Debian's Wine keeps a prefix's wineserver socket in <its tmp dir>/server-<dev>-<inode>
    (the tmp dir named in <prefix>/wineserver): removed with the prefix."""
    with contextlib.suppress(OSError):
        st = prefix.stat()
        tmp = (prefix / "wineserver").read_text().strip()
        if not tmp or "/" in tmp:
            return
        for base in {tempfile.gettempdir(), "/tmp"}:
            shutil.rmtree(
                Path(base, tmp, f"server-{st.st_dev:x}-{st.st_ino:x}"), ignore_errors=True
            )


def create_template(workdir: Path) -> WineTemplate:
    """Boot a 64-bit prefix once (``wineboot -i``) and build msitool.exe."""
    require_tools()
    started = time.monotonic()
    tool = workdir / "msitool.exe"
    source = workdir / "msitool.c"
    source.write_text(MSITOOL_C)
    proc = subprocess.run(
        ["x86_64-w64-mingw32-gcc", "-municode", "-O2", "-s", "-o", str(tool), str(source), "-lmsi"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"cannot build msitool.exe with mingw-w64: {proc.stderr.strip()}", pytrace=False
        )
    path = workdir / "template"
    boot = WinePrefix(path, workdir / "logs", tool)
    proc = boot.run("wineboot", "-i", timeout=300)
    boot.wait()
    if proc.returncode != 0 or not (path / "drive_c/windows/system32/msiexec.exe").exists():
        boot.kill()
        pytest.fail(
            f"wineboot -i failed ({proc.returncode}): {proc.stderr.strip()[-500:]}; {INSTALL_HINT}",
            pytrace=False,
        )
    return WineTemplate(path, tool, time.monotonic() - started)
