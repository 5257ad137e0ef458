"""Windows .msi with Fleet's layout, written by our own writer (``packager/writers/msidb.py``,
``cfb.py``, ``cab.py``): no wixl, no Wine, no Docker, x64 and arm64.

The product is Fleet's: "Fleet osquery", its UpgradeCode (major upgrades, downgrades allowed),
the Orbit root in ``C:\\Program Files\\Orbit``, the "Fleet osquery" service (auto start,
LocalSystem, restart on failure through the standard MsiServiceConfigFailureActions table)
configured by its ``Environment`` REG_MULTI_SZ, and the install-time properties FLEET_URL,
FLEET_SECRET, END_USER_EMAIL, EUA_TOKEN, BYPASS_END_USER_AUTH, ENABLE_SCRIPTS, FLEET_DESKTOP.

No PowerShell: ``secret.txt`` is written by a native custom action (``packager/data/msi``,
fleetca.c) that receives the secret through CustomActionData, never on a command line, and
creates the file with its final DACL; a rollback action removes it and a commit action drops the
backup of a replaced one. On uninstall the same DLL removes the whole Orbit root (runtime files
included), as the last deferred action before InstallFinalize.

Reproducible: every GUID is derived from content (components from their install path, the
ProductCode and PackageCode from a hash of every table, file and the writer's version), dates
come from SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from packager import __version__
from packager.errors import UsageError
from packager.formats.base import BuildContext, ToolError
from packager.options import BuildRequest
from packager.writers import msidb
from packager.writers.cab import CabMember, write_cab
from packager.writers.msidb import Column, Database, Summary

# Namespace for our deterministic GUIDs (components by install path, product by content).
GUID_NAMESPACE = uuid.UUID("8a4c7c39-6e0f-4f44-9d3a-2b5e1c0f7a11")
UPGRADE_CODE = "{B681CB20-107E-428A-9B14-2D3C1AFED244}"  # Fleet's: upgrades Fleet-built installs
OSQUERY_UPGRADE_CODE = "{EA6C7327-461E-4033-847C-ACDF2B85DEDE}"  # osquery's own MSI
SERVICE_NAME = "Fleet osquery"
MANUFACTURER = "Fleet Device Management (fleetdm.com)"
LOG_FILE = (
    r"[System64Folder]config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"
)
# Fleet's SDDL for the Orbit root: SYSTEM and Administrators full, Users read and execute, no
# inheritance from Program Files.
ROOT_SDDL = "O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
# Files the Unix layouts install 0600 (client keys and certificates, osquery.flags, the TUF
# store): SYSTEM and Administrators only, as Fleet locks secret.txt. The root's DACL would let
# every local user read them.
PRIVATE_SDDL = "O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)"
CA_DLL_DIR = Path(__file__).resolve().parent.parent / "data" / "msi"

# Custom action type bits (msidbCustomActionType*).
CA_DLL = 1
CA_SET_PROPERTY = 51
CA_CONTINUE = 0x40
CA_ROLLBACK = 0x100
CA_COMMIT = 0x200
CA_IN_SCRIPT = 0x400
CA_NO_IMPERSONATE = 0x800
CA_HIDE_TARGET = 0x2000


@dataclass(frozen=True)
class Platform:
    arch: str
    template: str  # SummaryInformation Template: platform;language
    tuf_platform: str
    ca_dll: str
    machine: str  # lief's PE machine name of the executables it may carry


PLATFORMS = {
    "amd64": Platform("amd64", "x64;1033", "windows", "fleetca-x64.dll", "AMD64"),
    # Windows on ARM runs x86 custom-action DLLs (WOW64); Debian has no ARM64 mingw-w64.
    "arm64": Platform("arm64", "Arm64;1033", "windows-arm64", "fleetca-x86.dll", "ARM64"),
}


def formatted(value: str) -> str:
    """Escape literal text for a Windows Installer Formatted column ([ ] { } are syntax)."""
    return "".join(f"[\\{ch}]" if ch in "[]{}" else ch for ch in value)


def orbit_environment(req: BuildRequest) -> list[str]:
    """Entries of the service's Environment (REG_MULTI_SZ), Fleet's names and order. Values
    an admin may set at install time are MSI properties ([NAME]); the rest are literal."""
    env = [
        "ORBIT_ROOT_DIR=[ORBITROOT].",
        f"ORBIT_LOG_FILE={LOG_FILE}",
        "ORBIT_FLEET_URL=[FLEET_URL]",
        "ORBIT_ENROLL_SECRET_PATH=[ORBITROOT]secret.txt",
        f"ORBIT_UPDATE_URL={formatted(req.update_url)}",
        f"ORBIT_UPDATE_INTERVAL={req.update_interval_go}",
        "ORBIT_FLEET_DESKTOP=[FLEET_DESKTOP]",
        f"ORBIT_DESKTOP_CHANNEL={formatted(req.desktop_channel)}",
        f"ORBIT_ORBIT_CHANNEL={formatted(req.orbit_channel)}",
        f"ORBIT_OSQUERYD_CHANNEL={formatted(req.osqueryd_channel)}",
        "ORBIT_ENABLE_SCRIPTS=[ENABLE_SCRIPTS]",
    ]
    optional = [
        (bool(req.fleet_certificate), "ORBIT_FLEET_CERTIFICATE=[ORBITROOT]fleet.pem"),
        (req.insecure, "ORBIT_INSECURE=true"),
        (req.debug, "ORBIT_DEBUG=true"),
        (bool(req.update_tls_certificate), "ORBIT_UPDATE_TLS_CERTIFICATE=[ORBITROOT]update.pem"),
        (req.disable_updates, "ORBIT_DISABLE_UPDATES=true"),
        (
            bool(req.fleet_desktop_alternative_browser_host),
            "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST="
            + formatted(req.fleet_desktop_alternative_browser_host),
        ),
        (req.host_identifier != "uuid", f"ORBIT_HOST_IDENTIFIER={req.host_identifier}"),
        (True, "ORBIT_END_USER_EMAIL=[END_USER_EMAIL]"),
        (True, "ORBIT_EUA_TOKEN=[EUA_TOKEN]"),
        (bool(req.osquery_db), f"ORBIT_OSQUERY_DB={formatted(req.osquery_db)}"),
        (req.disable_setup_experience, "ORBIT_DISABLE_SETUP_EXPERIENCE=true"),
        (True, "ORBIT_BYPASS_END_USER_AUTH=[BYPASS_END_USER_AUTH]"),
    ]
    return env + [entry for wanted, entry in optional if wanted]


def install_properties(req: BuildRequest) -> dict[str, str]:
    """The properties an admin may override on msiexec's command line, with the build's
    values as defaults ("dummy" is Fleet's placeholder that Orbit and our custom action
    ignore: a config-less MSI)."""
    return {
        "FLEET_URL": req.fleet_url or "dummy",
        "FLEET_SECRET": req.enroll_secret or "dummy",
        "END_USER_EMAIL": req.end_user_email or "dummy",
        "EUA_TOKEN": "dummy",
        "ENABLE_SCRIPTS": "True" if req.enable_scripts else "False",
        "FLEET_DESKTOP": "True" if req.fleet_desktop else "False",
        "BYPASS_END_USER_AUTH": "true" if req.bypass_end_user_auth else "false",
    }


def _id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:24].upper()


def _guid(key: str) -> str:
    return "{" + str(uuid.uuid5(GUID_NAMESPACE, key)).upper() + "}"


_SHORT_OK = re.compile(r"[A-Za-z0-9_\-!#$%&'()@^`{}~]{1,8}(\.[A-Za-z0-9_\-!#$%&'()@^`{}~]{1,3})?")


def long_name(name: str, taken: set[str]) -> str:
    """A FileName/DefaultDir value: the name itself when it is a valid 8.3 name, else
    ``SHORT~N|long`` with a short name unique in its directory (ICE03)."""
    if _SHORT_OK.fullmatch(name) and name.upper() not in taken:
        taken.add(name.upper())
        return name
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    clean = re.sub(r"[^A-Za-z0-9]", "", stem).upper()[:6] or "F"
    ext = re.sub(r"[^A-Za-z0-9]", "", ext).upper()[:3]
    for n in range(1, 100000):
        suffix = f"~{n}"
        short = clean[: 8 - len(suffix)] + suffix + (f".{ext}" if dot and ext else "")
        if short.upper() not in taken:
            taken.add(short.upper())
            return f"{short}|{name}"
    raise ToolError(f"no short name left for {name!r}")


# -- the schema of the tables we write (MSI SDK, schema 500) ---------------------------------
def _s(
    name: str, spec: str, key: bool = False, category: str | None = None, **kw: object
) -> Column:
    return Column(name, spec, key=key, category=category, **kw)  # type: ignore[arg-type]


SCHEMA: dict[str, list[Column]] = {
    "Property": [_s("Property", "s72", True, "Identifier"), _s("Value", "l0", category="Text")],
    "Directory": [
        _s("Directory", "s72", True, "Identifier"),
        _s("Directory_Parent", "S72", category="Identifier", key_table="Directory", key_column=1),
        _s("DefaultDir", "l255", category="DefaultDir"),
    ],
    "Component": [
        _s("Component", "s72", True, "Identifier"),
        _s("ComponentId", "S38", category="Guid"),
        _s("Directory_", "s72", category="Identifier", key_table="Directory", key_column=1),
        _s("Attributes", "i2"),
        _s("Condition", "S255", category="Condition"),
        _s("KeyPath", "S72", category="Identifier", key_table="File;Registry", key_column=1),
    ],
    "Feature": [
        _s("Feature", "s38", True, "Identifier"),
        _s("Feature_Parent", "S38", category="Identifier", key_table="Feature", key_column=1),
        _s("Title", "L64", category="Text"),
        _s("Description", "L255", category="Text"),
        _s("Display", "I2", min_value=0, max_value=32767),
        _s("Level", "i2", min_value=0, max_value=32767),
        _s("Directory_", "S72", category="UpperCase", key_table="Directory", key_column=1),
        _s(
            "Attributes",
            "i2",
            values="0;1;2;4;5;6;8;9;10;16;17;18;20;21;22;24;25;26;32;33;34;36;37;38;48;49;50;52;53;54",
        ),
    ],
    "FeatureComponents": [
        _s("Feature_", "s38", True, "Identifier", key_table="Feature", key_column=1),
        _s("Component_", "s72", True, "Identifier", key_table="Component", key_column=1),
    ],
    "File": [
        _s("File", "s72", True, "Identifier"),
        _s("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
        _s("FileName", "l255", category="Filename"),
        _s("FileSize", "i4", min_value=0, max_value=2147483647),
        _s("Version", "S72", category="Version", key_table="File", key_column=1),
        _s("Language", "S20", category="Language"),
        _s("Attributes", "I2", min_value=0, max_value=32767),
        _s("Sequence", "i4", min_value=1, max_value=2147483647),
    ],
    "Media": [
        _s("DiskId", "i2", True, min_value=1, max_value=32767),
        _s("LastSequence", "i4", min_value=0, max_value=2147483647),
        _s("DiskPrompt", "L64", category="Text"),
        _s("Cabinet", "S255", category="Cabinet"),
        _s("VolumeLabel", "S32", category="Text"),
        _s("Source", "S72", category="Property"),
    ],
    "CreateFolder": [
        _s("Directory_", "s72", True, "Identifier", key_table="Directory", key_column=1),
        _s("Component_", "s72", True, "Identifier", key_table="Component", key_column=1),
    ],
    "MsiLockPermissionsEx": [
        _s("MsiLockPermissionsEx", "s72", True, "Identifier"),
        _s("LockObject", "s72", category="Identifier"),
        _s(
            "Table",
            "s32",
            category="Identifier",
            values="CreateFolder;File;Registry;ServiceInstall",
        ),
        _s("SDDLText", "s0", category="FormattedSDDLText"),
        _s("Condition", "S255", category="Condition"),
    ],
    "Registry": [
        _s("Registry", "s72", True, "Identifier"),
        _s("Root", "i2", min_value=-1, max_value=3),
        _s("Key", "l255", category="RegPath"),
        _s("Name", "L255", category="Formatted"),
        _s("Value", "L0", category="Formatted"),
        _s("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
    ],
    "ServiceInstall": [
        _s("ServiceInstall", "s72", True, "Identifier"),
        _s("Name", "s255", category="Formatted"),
        _s("DisplayName", "L255", category="Formatted"),
        _s("ServiceType", "i4", min_value=-2147483647, max_value=2147483647),
        _s("StartType", "i4", min_value=0, max_value=4),
        _s("ErrorControl", "i4", min_value=-2147483647, max_value=2147483647),
        _s("LoadOrderGroup", "S255", category="Formatted"),
        _s("Dependencies", "S255", category="Formatted"),
        _s("StartName", "S255", category="Formatted"),
        _s("Password", "S255", category="Formatted"),
        _s("Arguments", "S255", category="Formatted"),
        _s("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
        _s("Description", "L255", category="Formatted"),
    ],
    "ServiceControl": [
        _s("ServiceControl", "s72", True, "Identifier"),
        _s("Name", "l255", category="Formatted"),
        _s("Event", "i2", min_value=0, max_value=187),
        _s("Arguments", "L255", category="Formatted"),
        _s("Wait", "I2", min_value=0, max_value=1),
        _s("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
    ],
    "MsiServiceConfigFailureActions": [
        _s("MsiServiceConfigFailureActions", "s72", True, "Identifier"),
        _s("Name", "s255", category="Formatted"),
        _s("Event", "i2", min_value=0, max_value=7),
        _s("ResetPeriod", "I4", min_value=0, max_value=2147483647),
        _s("RebootMessage", "L255", category="Formatted"),
        _s("Command", "L255", category="Formatted"),
        _s("Actions", "S255", category="Text"),
        _s("DelayActions", "S255", category="Text"),
        _s("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
    ],
    "Binary": [_s("Name", "s72", True, "Identifier"), _s("Data", "v0")],
    "CustomAction": [
        _s("Action", "s72", True, "Identifier"),
        _s("Type", "i2", min_value=1, max_value=32767),
        _s("Source", "S72", category="CustomSource"),
        _s("Target", "S255", category="Formatted"),
        _s("ExtendedType", "I4", min_value=0, max_value=2147483647),
    ],
    "InstallExecuteSequence": [
        _s("Action", "s72", True, "Identifier"),
        _s("Condition", "S255", category="Condition"),
        _s("Sequence", "I2", min_value=-4, max_value=32767),
    ],
    "InstallUISequence": [
        _s("Action", "s72", True, "Identifier"),
        _s("Condition", "S255", category="Condition"),
        _s("Sequence", "I2", min_value=-4, max_value=32767),
    ],
    "Upgrade": [
        _s("UpgradeCode", "s38", True, "Guid"),
        _s("VersionMin", "S20", True, "Version"),
        _s("VersionMax", "S20", True, "Version"),
        _s("Language", "S255", True, "Language"),
        _s("Attributes", "i4", True, min_value=0, max_value=2147483647),
        _s("Remove", "S255", category="Formatted"),
        _s("ActionProperty", "s72", category="UpperCase"),
    ],
}

# Standard actions and where Windows Installer's own sequence tables put them.
EXECUTE_SEQUENCE = [
    ("FindRelatedProducts", None, 25),
    ("ValidateProductID", None, 700),
    ("CostInitialize", None, 800),
    ("FileCost", None, 900),
    ("CostFinalize", None, 1000),
    ("MigrateFeatureStates", None, 1200),
    ("InstallValidate", None, 1400),
    # WiX's default major upgrade: the old product goes before anything of the new is
    # installed, so its uninstall cannot remove the service the new one installs.
    ("RemoveExistingProducts", None, 1401),
    ("InstallInitialize", None, 1500),
    ("ProcessComponents", None, 1600),
    ("UnpublishFeatures", None, 1800),
    ("StopServices", "VersionNT", 1900),
    ("DeleteServices", "VersionNT", 2000),
    ("RemoveRegistryValues", None, 2600),
    ("RemoveFiles", None, 3500),
    ("RemoveFolders", None, 3600),
    ("CreateFolders", None, 3700),
    ("InstallFiles", None, 4000),
    # secret.txt after the files (the Orbit root exists) and before the service first starts
    ("CA_SetRollbackSecret", "NOT Installed", 4001),
    ("CA_RollbackSecret", "NOT Installed", 4002),
    ("CA_SetWriteSecret", "NOT Installed", 4003),
    ("CA_WriteSecret", "NOT Installed", 4004),
    ("CA_SetCommitSecret", "NOT Installed", 4005),
    ("CA_CommitSecret", "NOT Installed", 4006),
    ("WriteRegistryValues", None, 5000),
    ("InstallServices", "VersionNT", 5800),
    ("MsiConfigureServices", 'VersionMsi >= "5.00"', 5850),
    ("StartServices", "VersionNT", 5900),
    ("RegisterUser", None, 6000),
    ("RegisterProduct", None, 6100),
    ("PublishFeatures", None, 6300),
    ("PublishProduct", None, 6400),
    # The Orbit root, runtime files included, goes last inside the script: a deferred action
    # after InstallFinalize is rejected by Windows (error 2762), and nothing after this one can
    # fail and roll the uninstall back with the root already gone.
    ("CA_SetRemoveOrbitRoot", 'REMOVE~="ALL" AND NOT UPGRADINGPRODUCTCODE', 6580),
    ("CA_RemoveOrbitRoot", 'REMOVE~="ALL" AND NOT UPGRADINGPRODUCTCODE', 6590),
    ("InstallFinalize", None, 6600),
]
UI_SEQUENCE = [
    ("FindRelatedProducts", None, 25),
    ("ValidateProductID", None, 700),
    ("CostInitialize", None, 800),
    ("FileCost", None, 900),
    ("CostFinalize", None, 1000),
    ("MigrateFeatureStates", None, 1200),
    ("ExecuteAction", None, 1300),
]


@dataclass(frozen=True)
class StagedFile:
    key: str  # File table key, also its name in the cabinet
    component: str
    directory: str
    name: str  # FileName column (short|long)
    path: Path
    size: int


class MsiBuilder:
    package_type = "msi"
    writes_secret_file = False  # written at install time from FLEET_SECRET (CA_WriteSecret)
    external_tools: tuple[str, ...] = ()
    install_hint = ""

    def orbit_root(self, stage: Path) -> Path:
        return stage / "root"

    def default_filename(self, request: BuildRequest, version: str) -> str:
        return "fleet-osquery.msi"

    def preflight(self, request: BuildRequest) -> None:
        if request.arch not in PLATFORMS:
            raise UsageError("--arch must be amd64 or arm64 for msi")

    def prepare(self, ctx: BuildContext) -> None:
        """The service's own copy of orbit.exe, as Fleet authors it (bin\\orbit\\orbit.exe)."""
        req = ctx.request
        root = self.orbit_root(ctx.stage)
        platform = PLATFORMS[req.arch or "amd64"].tuf_platform
        channel_exe = root / "bin" / "orbit" / platform / req.orbit_channel / "orbit.exe"
        service_exe = root / "bin" / "orbit" / "orbit.exe"
        if not service_exe.exists():
            os.link(channel_exe, service_exe)

    def build(self, ctx: BuildContext, output: Path) -> None:
        self.preflight(ctx.request)
        self.prepare(ctx)
        platform = PLATFORMS[ctx.request.arch or "amd64"]
        db, files = self.author(ctx, platform)
        cab = ctx.stage / "product.cab"
        members = [CabMember(f.key, f.path, f.size) for f in files]
        try:
            with cab.open("wb") as out:
                write_cab(out, members, timestamp=ctx.source_date_epoch)
        except ValueError as exc:
            raise ToolError(f"cannot write the MSI's cabinet: {exc}") from None
        db.add_stream("product.cab", cab)
        content = self.content_hash(db, files, cab)
        product_code = _guid("product:" + content)
        db.tables["Property"].rows = [
            (name, product_code if name == "ProductCode" else value)
            for name, value in db.tables["Property"].rows
        ]
        summary = Summary(
            codepage=db.codepage,
            title="Installation Database",
            subject="Fleet osquery",
            author=MANUFACTURER,
            keywords="Installer",
            comments="This installer database contains the logic and data required to install "
            "Fleet osquery.",
            template=platform.template,
            package_code=_guid("package:" + content),
            timestamp=ctx.source_date_epoch if ctx.source_date_epoch is not None else _now(),
            page_count=500,
            word_count=2,
            app_name=f"orbit-packager {__version__}",
        )
        with output.open("wb") as out:
            db.write(out, summary.encode())

    # -- the tables ----------------------------------------------------------------------------
    def author(self, ctx: BuildContext, platform: Platform) -> tuple[Database, list[StagedFile]]:
        req = ctx.request
        root = self.orbit_root(ctx.stage)
        props = install_properties(req)
        environment = "[~]".join(orbit_environment(req))
        values = [*props.values(), environment]
        codepage = msidb.choose_codepage(values)
        if codepage is None:  # options.py refuses these before any download
            raise UsageError("the MSI's values need more than one Windows codepage")
        db = Database(codepage)
        t = {name: db.table(name, columns) for name, columns in SCHEMA.items()}

        t["Directory"].add("TARGETDIR", None, "SourceDir")
        t["Directory"].add("ProgramFiles64Folder", "TARGETDIR", ".")
        t["Directory"].add("ORBITROOT", "ProgramFiles64Folder", "Orbit")
        t["Feature"].add("Orbit", None, "Fleet osquery", None, 0, 1, None, 0)

        def component(cid: str, guid: str, directory: str, key_path: str | None) -> None:
            t["Component"].add(cid, guid, directory, 256, None, key_path)  # 256: 64-bit
            t["FeatureComponents"].add("Orbit", cid)

        component("C_ORBITROOT", "{A7DFD09E-2D2B-4535-A04F-5D4DE90F3863}", "ORBITROOT", None)
        t["CreateFolder"].add("ORBITROOT", "C_ORBITROOT")
        t["MsiLockPermissionsEx"].add("LP_ORBITROOT", "ORBITROOT", "CreateFolder", ROOT_SDDL, None)

        files: list[StagedFile] = []
        service_dir = ""

        def walk(directory: Path, rel: str, dir_id: str) -> None:
            nonlocal service_dir
            taken: set[str] = set()
            entries = sorted(directory.iterdir(), key=lambda p: p.name)
            for path in entries:
                key = f"{rel}/{path.name}" if rel else path.name
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    raise ToolError(f"cannot put {key} in an MSI: not a file or directory")
                if path.is_dir():
                    child = _id("D_", key)
                    t["Directory"].add(child, dir_id, long_name(path.name, taken))
                    if key == "bin/orbit":
                        service_dir = child
                    if not any(path.iterdir()):
                        cid = _id("C_", "dir:" + key)
                        component(cid, _guid("dir:" + key), child, None)
                        t["CreateFolder"].add(child, cid)
                    walk(path, key, child)
                    continue
                name = long_name(path.name, taken)
                if key == "bin/orbit/orbit.exe":
                    cid, fid = "C_ORBITBIN", "F_ORBITSERVICE"
                    component(cid, "{AF347B4E-B84B-4DD4-9C4D-133BE17B613D}", dir_id, fid)
                else:
                    cid, fid = _id("C_", key), _id("F_", key)
                    component(cid, _guid(key), dir_id, fid)
                files.append(StagedFile(fid, cid, dir_id, name, path, path.stat().st_size))

        walk(root, "", "ORBITROOT")
        if not service_dir:
            raise ToolError("the staged tree has no bin\\orbit\\orbit.exe")
        for sequence, f in enumerate(files, start=1):
            if f.size > 0x7FFFFFFF:
                raise ToolError(f"{f.path.name} is over 2 GiB, more than an MSI file can hold")
            t["File"].add(f.key, f.component, f.name, f.size, None, None, 512, sequence)  # vital
            if f.path.stat().st_mode & 0o077 == 0:
                lock = "LP_" + f.key.removeprefix("F_")
                t["MsiLockPermissionsEx"].add(lock, f.key, "File", PRIVATE_SDDL, None)
        t["Media"].add(1, len(files), None, "#product.cab", None, None)

        # The service, its recovery and its configuration.
        t["ServiceInstall"].add(
            "OrbitService", SERVICE_NAME, SERVICE_NAME, 0x10, 2, 0, None, None, "LocalSystem",
            None, None, "C_ORBITBIN",
            "This service runs Fleet's osquery runtime and autoupdater (Orbit).",
        )  # fmt: skip
        # start on install; stop on install and uninstall; delete on uninstall
        t["ServiceControl"].add("StartOrbitService", SERVICE_NAME, 1 | 2 | 32 | 128, None, 1,
                                "C_ORBITBIN")  # fmt: skip
        # restart after 1 s on the first three failures, counters reset after a day (sc.exe
        # failure ... reset= 86400 actions= restart/1000 x3, without running sc.exe)
        t["MsiServiceConfigFailureActions"].add(
            "OrbitRecovery", SERVICE_NAME, 1, 86400, None, None, "1[~]1[~]1",
            "1000[~]1000[~]1000", "C_ORBITBIN",
        )  # fmt: skip
        t["Registry"].add(
            "reg_Environment", 2, rf"SYSTEM\CurrentControlSet\Services\{SERVICE_NAME}",
            "Environment", environment, "C_ORBITBIN",
        )  # fmt: skip

        # secret.txt and the Orbit root, by the native custom actions.
        t["Binary"].add("FleetCA", str(CA_DLL_DIR / platform.ca_dll))
        deferred = CA_DLL | CA_IN_SCRIPT | CA_NO_IMPERSONATE
        for action, kind, entry, data in [
            ("CA_RollbackSecret", deferred | CA_ROLLBACK | CA_CONTINUE, "RollbackSecret",
             "[ORBITROOT]"),
            ("CA_WriteSecret", deferred | CA_HIDE_TARGET, "WriteSecret",
             "[ORBITROOT]|[FLEET_SECRET]"),
            ("CA_CommitSecret", deferred | CA_COMMIT | CA_CONTINUE, "CommitSecret",
             "[ORBITROOT]"),
            ("CA_RemoveOrbitRoot", deferred | CA_CONTINUE, "RemoveOrbitRoot", "[ORBITROOT]"),
        ]:  # fmt: skip
            t["CustomAction"].add(action, kind, "FleetCA", entry, None)
            # deferred actions read CustomActionData: a property named after the action
            hidden = CA_HIDE_TARGET if "SECRET]" in data else 0
            setter = action.replace("CA_", "CA_Set", 1)
            t["CustomAction"].add(setter, CA_SET_PROPERTY | hidden, action, data, None)

        for action, condition, sequence in EXECUTE_SEQUENCE:
            t["InstallExecuteSequence"].add(action, condition, sequence)
        for action, condition, sequence in UI_SEQUENCE:
            t["InstallUISequence"].add(action, condition, sequence)

        # Any other version of this product (older, newer or equal: downgrades allowed, like
        # Fleet's), and a standalone osquery MSI, which would run a second osqueryd service.
        t["Upgrade"].add(UPGRADE_CODE, "0.0.0", None, None, 257, None, "WIX_UPGRADE_DETECTED")
        t["Upgrade"].add(OSQUERY_UPGRADE_CODE, "0.0.0", None, None, 256, None, "OSQUERY_DETECTED")

        properties = {
            "ProductCode": "{00000000-0000-0000-0000-000000000000}",  # set from the content
            "ProductName": "Fleet osquery",
            "ProductVersion": msi_version(ctx.version),
            "ProductLanguage": "1033",
            "Manufacturer": MANUFACTURER,
            "UpgradeCode": UPGRADE_CODE,
            "ALLUSERS": "1",
            "REINSTALLMODE": "amus",
            "ARPNOREPAIR": "yes",
            "ARPNOMODIFY": "yes",
            "ARPURLINFOABOUT": "https://fleetdm.com",
            **props,
            # hidden from the MSI log: the secret, the token, and the data of the action
            "MsiHiddenProperties": "FLEET_SECRET;EUA_TOKEN;CA_WriteSecret",
            # public properties passed to the elevated server side of a managed install
            "SecureCustomProperties": ";".join(
                [*props, "WIX_UPGRADE_DETECTED", "OSQUERY_DETECTED"]
            ),
        }
        for name, value in properties.items():
            t["Property"].add(name, value)
        for table in list(t.values()):
            if not table.rows:
                del db.tables[table.name]
        return db, files

    @staticmethod
    def content_hash(db: Database, files: list[StagedFile], cab: Path) -> str:
        """Hash of everything the MSI is made of: every table row, the cabinet (every file's
        bytes and name), the custom-action DLL and this writer's version."""
        digest = hashlib.sha256(f"orbit-packager {__version__} msi\0".encode())
        for name in sorted(db.tables):
            for row in db.tables[name].rows:
                if name == "Binary":  # its Data names a file where we are installed: hashed below
                    row = (row[0], Path(str(row[1])).name)
                digest.update(repr((name, row)).encode() + b"\0")
        for path in [cab, CA_DLL_DIR / "fleetca-x64.dll", CA_DLL_DIR / "fleetca-x86.dll"]:
            part = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    part.update(chunk)
            digest.update(part.digest())
        return digest.hexdigest()


def _now() -> int:
    import time

    return int(time.time())


def msi_version(version: str) -> str:
    """ProductVersion: up to three numeric fields (Windows Installer compares only those)."""
    core = version.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise ToolError(f"orbit version {version!r} cannot be an MSI ProductVersion")
    if int(parts[0]) > 255 or any(int(p) > 65535 for p in parts[1:3]):
        raise ToolError(
            f"orbit version {version!r} is over an MSI ProductVersion's 255.65535.65535"
        )
    return ".".join(parts[:3])
