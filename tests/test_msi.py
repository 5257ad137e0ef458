"""Issue 6: the .msi built by wixl, read back with msitools (msiinfo, msiextract)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UsageError
from packager.formats.msi import formatted, orbit_environment, table_rows
from packager.options import BuildRequest, has_control_chars, msi_encodable
from packager.render import render_xml
from tests.helpers import FIXTURES, build_installer, cli

SECRET = "msi-canary \"q\" 's' %x `y` \\ & < > [z] {w} ü"
SDE = "1700000000"
UPGRADE_CODE = "{B681CB20-107E-428A-9B14-2D3C1AFED244}"


def build(served, out: Path, *extra: str | Path, secret: str = SECRET, sde: str = SDE) -> Path:
    return build_installer(served, "msi", out, *extra, secret=secret, sde=sde)


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
    assert props["MsiHiddenProperties"] == "FLEET_SECRET;CA_WriteSecret"
    assert props["ENABLE_SCRIPTS"] == "True" and props["FLEET_DESKTOP"] == "True"
    assert props["END_USER_EMAIL"] == "it@example.com"
    assert props["UpgradeCode"] == UPGRADE_CODE
    assert props["ProductName"] == "Fleet osquery"
    assert props["ProductVersion"] == "1.40.0"
    assert props["Manufacturer"] == "Fleet Device Management (fleetdm.com)"
    assert props["REINSTALLMODE"] == "amus"
    assert "WIX_UPGRADE_DETECTED" in props["SecureCustomProperties"]


def test_directory_component_file_tables(msi: Path) -> None:
    dirs = {r["Directory"]: r for r in rows(msi, "Directory")}
    assert (
        dirs["ORBITROOT"]["DefaultDir"] == "Orbit"
        and dirs["ORBITROOT"]["Directory_Parent"] == "ProgramFiles64Folder"
    )

    def path_of(directory: str) -> str:
        parts = []
        while directory not in ("ORBITROOT", "ProgramFiles64Folder", "TARGETDIR"):
            row = dirs[directory]
            parts.append(row["DefaultDir"].split("|")[-1])
            directory = row["Directory_Parent"]
        return "/".join(reversed(parts))

    components = {r["Component"]: r for r in rows(msi, "Component")}
    files = {}
    for f in rows(msi, "File"):
        comp = components[f["Component_"]]
        assert int(comp["Attributes"]) & 256, comp  # 64-bit component
        rel = path_of(comp["Directory_"])
        files[(rel + "/" if rel else "") + f["FileName"].split("|")[-1]] = f
    assert set(files) == {
        "certs.pem", "tuf-metadata.json", "write-secret.ps1", "bin/orbit/orbit.exe",
        "bin/orbit/windows/stable/orbit.exe", "bin/osqueryd/windows/stable/osqueryd.exe",
        "bin/desktop/windows/stable/fleet-desktop.exe",
    }  # fmt: skip
    exe = (FIXTURES / "executables/orbit-windows-x86_64.exe").stat().st_size
    assert int(files["bin/orbit/orbit.exe"]["FileSize"]) == exe
    assert components["C_ORBITBIN"]["ComponentId"] == "{AF347B4E-B84B-4DD4-9C4D-133BE17B613D}"
    # the empty staging directory is created by its own component
    assert any(path_of(c["Directory_"]) == "staging" for c in components.values())


def test_service_and_registry(msi: Path) -> None:
    (svc,) = rows(msi, "ServiceInstall")
    assert svc["Name"] == "Fleet osquery" and svc["StartName"] == "LocalSystem"
    assert svc["ServiceType"] == "16" and svc["StartType"] == "2"  # own process, automatic
    assert svc["Component_"] == "C_ORBITBIN" and svc["Arguments"] == ""
    (ctl,) = rows(msi, "ServiceControl")
    assert (
        ctl["Name"] == "Fleet osquery" and ctl["Event"] == "163"
    )  # start install, stop both, remove uninstall
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
                     "ORBIT_END_USER_EMAIL=[END_USER_EMAIL]", "ORBIT_ORBIT_CHANNEL=stable"):  # fmt: skip
        assert expected in entries
    assert all(e.startswith("ORBIT_") and "=" in e for e in entries)
    assert SECRET not in reg["Value"]


def test_custom_actions_and_sequence(msi: Path) -> None:
    cas = {r["Action"]: r for r in rows(msi, "CustomAction")}
    write = cas["CA_WriteSecret"]
    assert (
        int(write["Type"]) == 3122 | 0x2000
    )  # EXE from property, deferred, no impersonation, hidden
    assert write["Source"] == "POWERSHELLEXE"
    assert write["Target"].endswith(
        '-File "[ORBITROOT]write-secret.ps1" FLEETSECRET:[FLEET_SECRET]'
    )
    seq = {r["Action"]: r for r in rows(msi, "InstallExecuteSequence")}

    def order(action: str) -> int:
        return int(seq[action]["Sequence"])

    assert order("InstallValidate") < order("RemoveExistingProducts") < order("InstallInitialize")
    assert order("InstallFiles") < order("CA_WriteSecret") < order("InstallServices")
    assert seq["CA_WriteSecret"]["Condition"] == "NOT Installed"
    assert order("RemoveFiles") < order("CA_RemoveOrbitRoot")
    assert "NOT UPGRADINGPRODUCTCODE" in seq["CA_RemoveOrbitRoot"]["Condition"]
    assert "AppSearch" in seq  # finds powershell.exe


def test_upgrade_table(msi: Path) -> None:
    (row,) = rows(msi, "Upgrade")
    assert row["UpgradeCode"] == UPGRADE_CODE
    assert row["VersionMin"] == "0.0.0" and row["VersionMax"] == ""
    assert int(row["Attributes"]) == 257  # include minimum, migrate features: any version
    assert row["ActionProperty"] == "WIX_UPGRADE_DETECTED"
    assert all("DOWNGRADE" not in r.get("Condition", "") for r in rows(msi, "LaunchCondition"))


def test_msiextract_equals_staged_tree(msi: Path, served, tmp_path: Path) -> None:
    subprocess.run(["msiextract", "-C", str(tmp_path), str(msi)], check=True, capture_output=True)
    root = tmp_path / "Orbit"
    got = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in root.rglob("*") if p.is_file()}  # fmt: skip
    exe = FIXTURES / "executables/orbit-windows-x86_64.exe"
    from packager.layout import CA_BUNDLE
    from packager.render import templates_dir

    want = {
        "certs.pem": CA_BUNDLE,
        "write-secret.ps1": templates_dir() / "windows/write-secret.ps1",
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


def test_reproducible_and_package_code(served, tmp_path: Path) -> None:
    a = build(served, tmp_path / "a.msi")
    b = build(served, tmp_path / "b.msi")
    assert a.read_bytes() == b.read_bytes()
    c = build(served, tmp_path / "c.msi", secret=SECRET + "!")

    def code(m: Path) -> str:
        return subprocess.run(["msiinfo", "suminfo", str(m)], capture_output=True, text=True).stdout

    rev = [line for line in code(a).splitlines() if line.startswith("Revision")]
    rev_c = [line for line in code(c).splitlines() if line.startswith("Revision")]
    assert rev and rev != rev_c  # changing one input changes the PackageCode
    assert "Created: Tue Nov 14 22:13:20 2023" in code(a)  # SOURCE_DATE_EPOCH


def test_arm64_refused(served, tmp_path: Path) -> None:
    repo, server = served
    out = cli("package", "--type", "msi", "--arch", "arm64", "--update-url", server.url,
              "--update-roots", repo / "repository/root.json", "--no-cache",
              "--outfile", tmp_path / "x.msi", check=False)  # fmt: skip
    assert out.returncode == 2 and "wixl 0.101 cannot build ARM64" in out.stderr
    assert not (tmp_path / "x.msi").exists()
    assert not any("arm64" in p for p in server.requests)  # refused before any download


def test_missing_wixl_hint(served, tmp_path: Path) -> None:
    repo, server = served
    bare = tmp_path / "bin"
    bare.mkdir()
    out = cli("package", "--type", "msi", "--update-url", server.url, "--update-roots",
              repo / "repository/root.json", "--no-cache", "--outfile", tmp_path / "x.msi",
              env={"PATH": str(bare)}, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "wixl not found" in out.stderr and "apt-get install wixl" in out.stderr
    assert not (tmp_path / "x.msi").exists()


text = st.lists(
    st.one_of(
        st.sampled_from(
            [*"\"'<>&[]{}~$`\\;= \t\n", "[~]", "]]>", "ü", "€", "Ā", "ш", "😀", "\x00"]
        ),
        st.text(max_size=3),
    ),
    max_size=10,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(secret=text, path=text)
def test_hostile_values_round_trip_or_are_refused(secret: str, path: str, tmp_path_factory) -> None:
    """Secrets and URLs reach the Property table (and the registry, via [FLEET_URL]) exactly."""
    url = f"https://fleet.example.com/{path}"
    try:
        req = BuildRequest(type="msi", fleet_url=url, enroll_secret=secret or "x",
                           update_url="https://tuf.example.com/" + path.replace("\n", ""))  # fmt: skip
        env = orbit_environment(req)
    except UsageError as exc:
        assert "\n" not in str(exc)
        values = secret + url
        refused = has_control_chars(values) or "$" in values or "[~]" in values
        assert refused or not msi_encodable(values), str(exc)
        return
    work = tmp_path_factory.mktemp("p")
    (work / "root").mkdir()
    wxs = render_xml(
        "windows", "main.wxs.j2", tool_version="t", product_code="{11111111-1111-1111-1111-111111111111}",
        version="1.0.0", fleet_url=url, fleet_secret=secret or "x", enable_scripts="False",
        fleet_desktop="False", end_user_email="", tree="", components=[], service_dir="TARGETDIR",
        service_exe="svc.exe", environment="[~]".join(env),
    )  # fmt: skip
    (work / "svc.exe").write_bytes(b"MZ")
    (work / "m.wxs").write_text(wxs)
    subprocess.run(
        ["wixl", "-a", "x64", "-o", "m.msi", "m.wxs"], cwd=work, check=True, capture_output=True
    )
    props = {r["Property"]: r["Value"] for r in table_rows(work / "m.msi", "Property")}
    assert props["FLEET_SECRET"] == (secret or "x")
    assert props["FLEET_URL"] == url
    (reg,) = table_rows(work / "m.msi", "Registry")
    update = next(e for e in reg["Value"].split("[~]") if e.startswith("ORBIT_UPDATE_URL="))
    assert update == "ORBIT_UPDATE_URL=" + formatted(req.update_url)


def test_dollar_in_secret_refused_before_download(served, tmp_path: Path) -> None:
    repo, server = served
    before = sum(server.requests.values())
    out = cli("package", "--type", "msi", "--update-url", server.url, "--update-roots",
              repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
              "--no-cache", "--outfile", tmp_path / "x.msi",
              env={"ORBIT_PACKAGER_ENROLL_SECRET": "a$(b)c"}, check=False)  # fmt: skip
    assert out.returncode == 2
    assert "--enroll-secret contains '$'" in out.stderr and "FLEET_SECRET=" in out.stderr
    assert "a$(b)c" not in out.stderr
    assert sum(server.requests.values()) == before
