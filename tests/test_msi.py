"""The .msi written by our own writer, read back by msitools (msiinfo, msiextract), olefile and
lief, and checked against the ICE rules that apply. Installing it under a real Windows
Installer engine is tests/test_msi_wine.py."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import tempfile
from pathlib import Path

import lief
import olefile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UsageError
from packager.formats.msi import UPGRADE_CODE, orbit_environment
from packager.options import BuildRequest, has_control_chars
from packager.writers.msidb import encode_stream_name
from tests.helpers import FIXTURES, build_installer, cli

SECRET = "msi-canary \"q\" 's' %x `y` \\ & < > [z] {w} $(x) ü"
SDE = "1700000000"
OSQUERY_UPGRADE_CODE = "{EA6C7327-461E-4033-847C-ACDF2B85DEDE}"
GUID = re.compile(r"\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,71}")
SHORT_NAME = re.compile(r"[A-Za-z0-9_\-!#$%&'()@^`{}~]{1,8}(\.[A-Za-z0-9_\-!#$%&'()@^`{}~]{1,3})?")


def build(served, out: Path, *extra: str | Path, secret: str = SECRET, sde: str = SDE) -> Path:
    return build_installer(served, "msi", out, *extra, secret=secret, sde=sde)


def table_rows(msi: Path, table: str) -> list[dict[str, str]]:
    """Rows of an MSI table, read by msitools (libmsi: the engine Wine's msi.dll derives from)."""
    with tempfile.TemporaryDirectory() as scratch:  # where msiinfo writes binary cells
        out = subprocess.run(
            ["msiinfo", "export", str(msi.resolve()), table],
            capture_output=True, text=True, check=True, cwd=scratch,
        ).stdout.split("\n")  # fmt: skip
    names = out[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in out[3:] if line]


@pytest.fixture(scope="module")
def msi(served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(served, tmp_path_factory.mktemp("msi") / "x.msi", "--fleet-desktop", "--enable-scripts",
                 "--end-user-email", "it@example.com", "--debug")  # fmt: skip


def rows(msi: Path, table: str) -> list[dict[str, str]]:
    return table_rows(msi, table)


def test_property_table(msi: Path) -> None:
    props = {r["Property"]: r["Value"] for r in rows(msi, "Property")}
    assert props["FLEET_URL"] == "https://fleet.example.com"
    assert props["FLEET_SECRET"] == SECRET
    assert set(props["MsiHiddenProperties"].split(";")) == {
        "FLEET_SECRET", "EUA_TOKEN", "CA_WriteSecret"}  # fmt: skip
    assert props["ENABLE_SCRIPTS"] == "True" and props["FLEET_DESKTOP"] == "True"
    assert props["END_USER_EMAIL"] == "it@example.com" and props["EUA_TOKEN"] == "dummy"
    assert props["BYPASS_END_USER_AUTH"] == "false"
    assert props["UpgradeCode"] == UPGRADE_CODE
    assert props["ProductName"] == "Fleet osquery"
    assert props["ProductVersion"] == "1.40.0"
    assert props["Manufacturer"] == "Fleet Device Management (fleetdm.com)"
    assert props["REINSTALLMODE"] == "amus" and props["ALLUSERS"] == "1"
    assert GUID.fullmatch(props["ProductCode"])
    secure = props["SecureCustomProperties"].split(";")
    for name in ("FLEET_URL", "FLEET_SECRET", "END_USER_EMAIL", "EUA_TOKEN", "ENABLE_SCRIPTS",
                 "FLEET_DESKTOP", "BYPASS_END_USER_AUTH", "WIX_UPGRADE_DETECTED", "OSQUERY_DETECTED"):  # fmt: skip
        assert name in secure


def _paths(msi: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    dirs = {r["Directory"]: r for r in rows(msi, "Directory")}

    def path_of(directory: str) -> str:
        parts = []
        while directory not in ("ORBITROOT", "ProgramFiles64Folder", "TARGETDIR"):
            row = dirs[directory]
            parts.append(row["DefaultDir"].split("|")[-1])
            directory = row["Directory_Parent"]
        return "/".join(reversed(parts))

    return dirs, {d: path_of(d) for d in dirs}


def test_directory_component_file_tables(msi: Path) -> None:
    dirs, path_of = _paths(msi)
    assert dirs["ORBITROOT"]["DefaultDir"] == "Orbit"
    assert dirs["ORBITROOT"]["Directory_Parent"] == "ProgramFiles64Folder"
    components = {r["Component"]: r for r in rows(msi, "Component")}
    files = {}
    for f in rows(msi, "File"):
        comp = components[f["Component_"]]
        assert int(comp["Attributes"]) & 256, comp  # 64-bit component (ICE80)
        assert comp["KeyPath"] == f["File"]  # one file per component, its key path
        rel = path_of[comp["Directory_"]]
        files[(rel + "/" if rel else "") + f["FileName"].split("|")[-1]] = f
    assert set(files) == {
        "certs.pem", "tuf-metadata.json", "bin/orbit/orbit.exe",
        "bin/orbit/windows/stable/orbit.exe", "bin/osqueryd/windows/stable/osqueryd.exe",
        "bin/desktop/windows/stable/fleet-desktop.exe",
    }  # fmt: skip
    exe = (FIXTURES / "executables/orbit-windows-x86_64.exe").stat().st_size
    assert int(files["bin/orbit/orbit.exe"]["FileSize"]) == exe
    assert components["C_ORBITBIN"]["ComponentId"] == "{AF347B4E-B84B-4DD4-9C4D-133BE17B613D}"
    assert components["C_ORBITROOT"]["ComponentId"] == "{A7DFD09E-2D2B-4535-A04F-5D4DE90F3863}"
    # the empty staging directory is created by its own component
    created = {(r["Directory_"], r["Component_"]) for r in rows(msi, "CreateFolder")}
    assert any(path_of[d] == "staging" for d, _ in created)
    assert ("ORBITROOT", "C_ORBITROOT") in created
    locks = {r["LockObject"]: r for r in rows(msi, "MsiLockPermissionsEx")}
    lock = locks.pop("ORBITROOT")
    assert lock["Table"] == "CreateFolder"
    assert lock["SDDLText"] == "O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
    # what the Unix layouts install 0600 (here the TUF store) is for SYSTEM and Administrators
    assert {lk["LockObject"] for lk in locks.values()} == {files["tuf-metadata.json"]["File"]}
    assert all(lk["Table"] == "File" for lk in locks.values())
    assert {lk["SDDLText"] for lk in locks.values()} == {"O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)"}
    # every component in the one feature; sequences 1..N, the media's last one N
    feature = {r["Component_"] for r in rows(msi, "FeatureComponents")}
    assert feature == set(components)
    sequences = sorted(int(f["Sequence"]) for f in rows(msi, "File"))
    assert sequences == list(range(1, len(sequences) + 1))
    (media,) = rows(msi, "Media")
    assert media["Cabinet"] == "#product.cab" and int(media["LastSequence"]) == len(sequences)


def test_ice_rules(msi: Path) -> None:
    """The ICE checks that apply to this database, done here since ICE validation needs
    Windows (orca/msival2): ICE03 (identifiers, GUIDs, 8.3 short names), ICE77 (deferred
    actions inside the script), ICE80 (64-bit components in an x64 package), ICE61 (upgrade
    properties secure), ICE12-ish (set-property actions before their deferred actions)."""
    for table, column in [("Directory", "Directory"), ("Component", "Component"),
                          ("File", "File"), ("CustomAction", "Action"), ("Registry", "Registry")]:  # fmt: skip
        for r in rows(msi, table):
            assert IDENTIFIER.fullmatch(r[column]), (table, r[column])
    for r in rows(msi, "Component"):
        assert GUID.fullmatch(r["ComponentId"]), r
    names: list[str] = [r["DefaultDir"] for r in rows(msi, "Directory")][:]
    names += [r["FileName"] for r in rows(msi, "File")]
    for value in names:
        short = value.split("|")[0]
        assert short in (".", "SourceDir") or SHORT_NAME.fullmatch(short), value
    by_dir: dict[str, list[str]] = {}
    for r in rows(msi, "Directory"):
        by_dir.setdefault(r["Directory_Parent"], []).append(r["DefaultDir"].split("|")[0].upper())
    components = {r["Component"]: r["Directory_"] for r in rows(msi, "Component")}
    for r in rows(msi, "File"):
        by_dir.setdefault(components[r["Component_"]], []).append(
            r["FileName"].split("|")[0].upper()
        )
    for parent, shorts in by_dir.items():
        assert len(shorts) == len(set(shorts)), (parent, shorts)  # unique short names

    seq = {r["Action"]: int(r["Sequence"]) for r in rows(msi, "InstallExecuteSequence")}
    cas = {r["Action"]: r for r in rows(msi, "CustomAction")}
    for action, row in cas.items():
        kind = int(row["Type"])
        if kind & 0x400:  # deferred, rollback or commit: only inside the script (ICE77)
            assert seq["InstallInitialize"] < seq[action] < seq["InstallFinalize"], action
            setter = action.replace("CA_", "CA_Set", 1)
            assert cas[setter]["Source"] == action and int(cas[setter]["Type"]) & 0x3F == 51
            assert seq[setter] < seq[action]  # its CustomActionData is set before it is queued
    props = {r["Property"]: r["Value"] for r in rows(msi, "Property")}
    for r in rows(msi, "Upgrade"):
        assert r["ActionProperty"] in props["SecureCustomProperties"].split(";")  # ICE61
    summary = subprocess.run(["msiinfo", "suminfo", str(msi)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert "Template: x64;1033" in summary and "Version: 500" in summary  # ICE80, schema 500
    assert seq["InstallValidate"] < seq["RemoveExistingProducts"] < seq["InstallInitialize"]


def test_service_and_registry(msi: Path) -> None:
    (svc,) = rows(msi, "ServiceInstall")
    assert svc["Name"] == "Fleet osquery" and svc["StartName"] == "LocalSystem"
    assert svc["ServiceType"] == "16" and svc["StartType"] == "2"  # own process, automatic
    assert svc["Component_"] == "C_ORBITBIN" and svc["Arguments"] == ""
    (ctl,) = rows(msi, "ServiceControl")
    # start on install, stop on install and uninstall, delete on uninstall
    assert ctl["Name"] == "Fleet osquery" and ctl["Event"] == "163" and ctl["Wait"] == "1"
    (recovery,) = rows(msi, "MsiServiceConfigFailureActions")
    assert recovery["Name"] == "Fleet osquery" and recovery["ResetPeriod"] == "86400"
    assert recovery["Actions"] == "1[~]1[~]1" and recovery["DelayActions"] == "1000[~]1000[~]1000"
    (reg,) = rows(msi, "Registry")
    assert reg["Root"] == "2" and reg["Key"] == r"SYSTEM\CurrentControlSet\Services\Fleet osquery"
    assert reg["Name"] == "Environment" and reg["Component_"] == "C_ORBITBIN"
    entries = reg["Value"].split("[~]")
    assert entries[:4] == [
        "ORBIT_ROOT_DIR=[ORBITROOT].",
        r"ORBIT_LOG_FILE=[System64Folder]config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log",
        "ORBIT_FLEET_URL=[FLEET_URL]",
        "ORBIT_ENROLL_SECRET_PATH=[ORBITROOT]secret.txt",
    ]
    for expected in ("ORBIT_UPDATE_INTERVAL=15m0s", "ORBIT_FLEET_DESKTOP=[FLEET_DESKTOP]",
                     "ORBIT_ENABLE_SCRIPTS=[ENABLE_SCRIPTS]", "ORBIT_DEBUG=true",
                     "ORBIT_END_USER_EMAIL=[END_USER_EMAIL]", "ORBIT_EUA_TOKEN=[EUA_TOKEN]",
                     "ORBIT_BYPASS_END_USER_AUTH=[BYPASS_END_USER_AUTH]",
                     "ORBIT_ORBIT_CHANNEL=stable"):  # fmt: skip
        assert expected in entries
    assert all(e.startswith("ORBIT_") and "=" in e for e in entries)
    assert SECRET not in reg["Value"]


def test_custom_actions_native_and_secret_never_on_a_command_line(msi: Path) -> None:
    cas = {r["Action"]: r for r in rows(msi, "CustomAction")}
    (binary,) = rows(msi, "Binary")
    for action, row in cas.items():
        kind = int(row["Type"])
        assert "powershell" not in (row["Target"] + row["Source"]).lower()
        if kind & 0x3F == 1:  # DLL from the Binary table: no process, no command line
            assert row["Source"] == binary["Name"] == "FleetCA"
            assert kind & 0x800  # runs as LocalSystem
        else:  # the only other kind: set a property (the deferred action's CustomActionData)
            assert kind & 0x3F == 51, action
        if "[FLEET_SECRET]" in row["Target"]:
            assert kind & 0x3F == 51 and kind & 0x2000  # hidden from the log
            assert row["Source"] == "CA_WriteSecret"
    assert (
        int(cas["CA_WriteSecret"]["Type"]) == 1 | 0x400 | 0x800 | 0x2000
    )  # checked: fails the install
    assert int(cas["CA_RollbackSecret"]["Type"]) & 0x100
    assert int(cas["CA_CommitSecret"]["Type"]) & 0x200
    assert cas["CA_SetWriteSecret"]["Target"] == "[ORBITROOT]|[FLEET_SECRET]"
    seq = {r["Action"]: r for r in rows(msi, "InstallExecuteSequence")}

    def order(action: str) -> int:
        return int(seq[action]["Sequence"])

    assert order("InstallFiles") < order("CA_RollbackSecret") < order("CA_WriteSecret")
    assert order("CA_WriteSecret") < order("InstallServices") < order("StartServices")
    assert seq["CA_WriteSecret"]["Condition"] == "NOT Installed"
    # the whole root on uninstall, after the files and services, inside the script
    assert order("RemoveFiles") < order("CA_RemoveOrbitRoot") < order("InstallFinalize")
    assert order("DeleteServices") < order("CA_RemoveOrbitRoot")
    assert "NOT UPGRADINGPRODUCTCODE" in seq["CA_RemoveOrbitRoot"]["Condition"]
    # the DLL embedded is the committed x64 one
    with olefile.OleFileIO(str(msi)) as ole:
        dll = ole.openstream(encode_stream_name("Binary.FleetCA", table=False)).read()
    committed = Path(__file__).parents[1] / "packager/data/msi/fleetca-x64.dll"
    assert dll == committed.read_bytes()


def test_upgrade_table(msi: Path) -> None:
    upgrades = {r["UpgradeCode"]: r for r in rows(msi, "Upgrade")}
    assert set(upgrades) == {UPGRADE_CODE, OSQUERY_UPGRADE_CODE}
    own = upgrades[UPGRADE_CODE]
    assert own["VersionMin"] == "0.0.0" and own["VersionMax"] == ""
    assert int(own["Attributes"]) == 257  # include minimum, migrate features: any version
    assert own["ActionProperty"] == "WIX_UPGRADE_DETECTED"
    osquery = upgrades[OSQUERY_UPGRADE_CODE]  # a standalone osquery MSI is removed
    assert osquery["VersionMax"] == "" and not int(osquery["Attributes"]) & 2  # not detect-only


def test_msiextract_equals_staged_tree(msi: Path, served, tmp_path: Path) -> None:
    subprocess.run(["msiextract", "-C", str(tmp_path), str(msi)], check=True, capture_output=True)
    root = tmp_path / "Orbit"
    got = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in root.rglob("*") if p.is_file()}  # fmt: skip
    exe = FIXTURES / "executables/orbit-windows-x86_64.exe"
    from packager.layout import CA_BUNDLE

    want = {
        "certs.pem": CA_BUNDLE,
        "bin/orbit/orbit.exe": exe,
        "bin/orbit/windows/stable/orbit.exe": exe,
        "bin/osqueryd/windows/stable/osqueryd.exe": exe,
        "bin/desktop/windows/stable/fleet-desktop.exe": exe,
    }
    for rel, source in want.items():
        assert got.pop(rel) == hashlib.sha256(source.read_bytes()).hexdigest(), rel
    # the TUF store: exactly the metadata the server published, in Orbit's file format
    from packager.layout import orbit_metadata_json

    published = served[0] / "repository"
    store = orbit_metadata_json(
        {
            n: (published / n).read_bytes()
            for n in ("root.json", "targets.json", "snapshot.json", "timestamp.json")
        }
    )
    assert got.pop("tuf-metadata.json") == hashlib.sha256(store).hexdigest()
    assert got == {}


def _summary(m: Path) -> str:
    return subprocess.run(["msiinfo", "suminfo", str(m)], capture_output=True, text=True).stdout


def _product_code(m: Path) -> str:
    return {r["Property"]: r["Value"] for r in table_rows(m, "Property")}["ProductCode"]


def test_reproducible_and_package_code(served, tmp_path: Path) -> None:
    a = build(served, tmp_path / "a.msi")
    b = build(served, tmp_path / "b.msi")
    assert a.read_bytes() == b.read_bytes()
    c = build(served, tmp_path / "c.msi", secret=SECRET + "!")
    rev = [line for line in _summary(a).splitlines() if line.startswith("Revision")]
    rev_c = [line for line in _summary(c).splitlines() if line.startswith("Revision")]
    assert rev and rev != rev_c  # changing one input changes the PackageCode
    assert _product_code(a) != _product_code(c)  # and the ProductCode: a major upgrade
    assert "Created: Tue Nov 14 22:13:20 2023" in _summary(a)  # SOURCE_DATE_EPOCH


def _string_pool_codepage(m: Path) -> int:
    with olefile.OleFileIO(str(m)) as ole:
        header = ole.openstream(encode_stream_name("_StringPool", table=True)).read(4)
    return int(struct.unpack("<I", header)[0]) & 0x7FFFFFFF


@pytest.mark.parametrize(
    ("secret", "codepage"),
    [("süper-€-secret", 1252), ("секрет-ключ", 1251), ("κλειδί", 1253), ("plain", 1252)],
)
def test_codepage_declared_and_values_exact(
    served, tmp_path: Path, secret: str, codepage: int
) -> None:
    m = build(served, tmp_path / "x.msi", secret=secret)
    assert _string_pool_codepage(m) == codepage
    props = {r["Property"]: r["Value"] for r in table_rows(m, "Property")}
    assert props["FLEET_SECRET"] == secret  # msitools decodes with the declared codepage


def test_values_no_codepage_holds_are_refused_before_download(served, tmp_path: Path) -> None:
    repo, server = served
    before = sum(server.requests.values())
    out = cli("package", "--type", "msi", "--update-url", server.url, "--update-roots",
              repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
              "--no-cache", "--outfile", tmp_path / "x.msi",
              env={"ORBIT_PACKAGER_ENROLL_SECRET": "секрет-κλειδί"}, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "--enroll-secret mixes characters" in out.stderr
    assert "FLEET_SECRET=" in out.stderr and "секрет" not in out.stderr and "κ" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2
    assert sum(server.requests.values()) == before
    assert not (tmp_path / "x.msi").exists()


def test_arm64(served, tmp_path: Path) -> None:
    """arm64: Template Arm64, only ARM64 executables (the windows-arm64 targets), the x86
    custom-action DLL."""
    m = build(served, tmp_path / "arm.msi", "--arch", "arm64")
    assert "Template: Arm64;1033" in _summary(m)
    subprocess.run(
        ["msiextract", "-C", str(tmp_path / "x"), str(m)], check=True, capture_output=True
    )
    exes = sorted((tmp_path / "x").rglob("*.exe"))
    assert {str(p.relative_to(tmp_path / "x/Orbit")) for p in exes} == {
        "bin/orbit/orbit.exe", "bin/orbit/windows-arm64/stable/orbit.exe",
        "bin/osqueryd/windows-arm64/stable/osqueryd.exe",
    }  # fmt: skip
    for exe in exes:
        binary = lief.PE.parse(str(exe))
        assert binary is not None and binary.header.machine == lief.PE.Header.MACHINE_TYPES.ARM64
    with olefile.OleFileIO(str(m)) as ole:
        dll = ole.openstream(encode_stream_name("Binary.FleetCA", table=False)).read()
    assert dll == (Path(__file__).parents[1] / "packager/data/msi/fleetca-x86.dll").read_bytes()


def test_no_external_tool_needed(served, tmp_path: Path) -> None:
    """No wixl, msibuild or anything else on PATH: the MSI is written by Python alone."""
    bare = tmp_path / "bin"
    bare.mkdir()
    out = build_installer(served, "msi", tmp_path / "x.msi", secret="s", sde=SDE,
                          env={"PATH": str(bare)})  # fmt: skip
    assert out.stat().st_size > 0


text = st.lists(
    st.one_of(
        st.sampled_from(
            [*"\"'<>&[]{}~$`\\;=| \t\n", "[~]", "]]>", "ü", "€", "Ā", "ш", "😀", "\x00", "[\\[]"]
        ),
        st.text(max_size=3),
    ),
    max_size=10,
).map("".join)


def unformat(value: str) -> str:
    """Windows Installer's reading of a Formatted literal: [\\x] is the character x, [~] a
    null, [NAME] a property (none may appear in a literal). Written independently of
    packager.formats.msi.formatted, as the oracle."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("[\\", i) and i + 3 < len(value) + 1 and value[i + 3 : i + 4] == "]":
            out.append(value[i + 2])
            i += 4
        elif value[i] in "[]{}":
            raise AssertionError(f"unescaped {value[i]!r} in {value!r}")
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@settings(max_examples=60, deadline=None)
@given(secret=text, path=text)
def test_hostile_values_round_trip_or_are_refused(secret: str, path: str, tmp_path_factory) -> None:
    """Secrets and URLs reach the Property table exactly, and literal values in the service's
    environment read back as the same text through Windows Installer's formatting rules."""
    url = f"https://fleet.example.com/{path}"
    update = "https://tuf.example.com/" + path.replace("\n", "")
    try:
        req = BuildRequest(
            type="msi", fleet_url=url, enroll_secret=secret or "x", update_url=update
        )
        orbit_environment(req)
    except UsageError as exc:
        assert "\n" not in str(exc)
        assert has_control_chars(secret + url) or "codepage" in str(exc), str(exc)
        return
    stage = tmp_path_factory.mktemp("p")
    _build_direct(stage, req)
    props = {r["Property"]: r["Value"] for r in table_rows(stage / "m.msi", "Property")}
    assert props["FLEET_SECRET"] == (secret or "x")
    assert props["FLEET_URL"] == url
    (reg,) = table_rows(stage / "m.msi", "Registry")
    entry = next(e for e in reg["Value"].split("[~]") if e.startswith("ORBIT_UPDATE_URL="))
    assert unformat(entry) == "ORBIT_UPDATE_URL=" + req.update_url


def _build_direct(stage: Path, req: BuildRequest, orbit: bytes = b"MZ") -> Path:
    from packager.formats.base import BuildContext
    from packager.formats.msi import MsiBuilder
    from packager.tooling import NativeTooling

    exe = stage / "root/bin/orbit/windows/stable/orbit.exe"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(orbit)
    ctx = BuildContext(req, "1.0.0", stage, [], int(SDE), NativeTooling({}))
    MsiBuilder().build(ctx, stage / "m.msi")
    return stage / "m.msi"


def test_same_bytes_wherever_the_package_is_installed(tmp_path: Path, monkeypatch) -> None:
    """The custom-action DLL is found where orbit-packager is installed (a venv, site-packages
    in our image): that place must not reach the ProductCode or PackageCode."""
    import shutil

    import packager.formats.msi as msi_format

    req = BuildRequest(type="msi", fleet_url="https://f.example.com", enroll_secret="s")
    first = _build_direct(tmp_path / "a", req).read_bytes()
    elsewhere = tmp_path / "elsewhere/site-packages/packager/data/msi"
    shutil.copytree(msi_format.CA_DLL_DIR, elsewhere)
    monkeypatch.setattr(msi_format, "CA_DLL_DIR", elsewhere)
    assert _build_direct(tmp_path / "b", req).read_bytes() == first


# _Validation rows as the Windows Installer SDK's schema (and WiX's table definitions) give
# them: Table, Column, Nullable, MinValue, MaxValue, KeyTable, KeyColumn, Category, Set.
# Written out here, not derived from the writer's schema. Validators (ICEs) read these.
SDK_VALIDATION = {
    ("Feature", "Display"): ("Y", "0", "32767", "", "", "", ""),
    ("Feature", "Level"): ("N", "0", "32767", "", "", "", ""),
    ("Feature", "Feature_Parent"): ("Y", "", "", "Feature", "1", "Identifier", ""),
    ("File", "Version"): ("Y", "", "", "File", "1", "Version", ""),
    ("File", "FileSize"): ("N", "0", "2147483647", "", "", "", ""),
    ("File", "Attributes"): ("Y", "0", "32767", "", "", "", ""),
    ("File", "Sequence"): ("N", "1", "2147483647", "", "", "", ""),
    ("Media", "DiskId"): ("N", "1", "32767", "", "", "", ""),
    ("Media", "LastSequence"): ("N", "0", "2147483647", "", "", "", ""),
    ("Component", "Directory_"): ("N", "", "", "Directory", "1", "Identifier", ""),
    ("Component", "KeyPath"): ("Y", "", "", "File;Registry", "1", "Identifier", ""),
}


def test_validation_rows_are_the_sdks(msi: Path) -> None:
    got = {(r["Table"], r["Column"]): r for r in rows(msi, "_Validation")}
    for (table, column), want in SDK_VALIDATION.items():
        row = got[(table, column)]
        have = tuple(
            row[c]
            for c in (
                "Nullable",
                "MinValue",
                "MaxValue",
                "KeyTable",
                "KeyColumn",
                "Category",
                "Set",
            )
        )
        assert have == want, (table, column)


def test_package_code_follows_the_files_bytes(tmp_path: Path) -> None:
    """Two agents of the same size and name, one byte apart, give the same tables: only the
    cabinet tells them apart. The PackageCode must differ, or Windows Installer would take the
    second package for the first one it has cached."""
    req = BuildRequest(type="msi", fleet_url="https://f.example.com", enroll_secret="s")
    a = _build_direct(tmp_path / "a", req, b"MZ\x90\x00")
    b = _build_direct(tmp_path / "b", req, b"MZ\x90\x01")
    assert table_rows(a, "File") == table_rows(b, "File")
    revision = [line for line in _summary(a).splitlines() if line.startswith("Revision")]
    assert revision and revision != [
        line for line in _summary(b).splitlines() if line.startswith("Revision")
    ]


@pytest.mark.parametrize(
    ("text", "codepage"),
    [
        ("plain", 1252),
        ("Łódź", 1250),
        ("ключ", 1251),
        ("κλειδί", 1253),
        ("dağ", 1254),
        ("rakstāmā", 1257),
        ("מפתח", 1255),
        ("مفتاح", 1256),
        ("khóa ₫", 1258),
        ("กุญแจ", 874),
        ("かぎ", 932),
        ("钥匙", 936),
        ("열쇠", 949),
        ("emoji \U0001f511", None),
    ],
)
def test_every_codepage_is_chosen_for_its_script(text: str, codepage: int | None) -> None:
    """The first Windows codepage that holds every string, one script per entry of the list
    (950, Big5, comes after 936, GBK, which holds traditional characters too)."""
    from packager.writers.msidb import choose_codepage

    assert choose_codepage(["ascii", text]) == codepage
    if codepage is not None:
        text.encode(f"cp{codepage}")  # and it does hold it
