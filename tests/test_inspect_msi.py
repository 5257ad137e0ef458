"""read_msi (packager/installers/windows.py): our own MSIs built by `package` (amd64, arm64,
with and without a secret) read back and compared with what msitools extracts and with the
targets the demo repository serves; an MSI laid out as fleetctl's WiX template (service
Arguments, secret.txt in the payload) built by msitools' wixl; MSIs crafted with our msidb/cfb
writers for what neither builds (the Environment table, WiX's smart cabbing, MSZIP blocks that
use the previous 32 KiB as dictionary, a large payload); and hostile MSIs, each refused with one
InstallerFormatError line. The enroll secret's value is never in what the reader returns."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import olefile
import pytest

from packager.formats.msi import SCHEMA, install_properties, orbit_environment
from packager.installers import windows
from packager.installers.model import InstallerContents, InstallerFormatError
from packager.installers.windows import read_msi, split_command_line
from packager.layout import CA_BUNDLE, orbit_metadata_json
from packager.options import BuildRequest
from packager.writers.cab import CabMember, checksum, write_cab
from packager.writers.cfb import CompoundFileWriter
from packager.writers.msidb import MSI_CLSID, Column, Database, Summary, encode_stream_name
from tests.helpers import FaultServer, build_installer, cli

SECRET = 'msi-inspect-canary "q" [x] {y} ü'
SDE = "1700000000"
OSQUERY_DB = r"C:\osquery [db]\{x}"
FLAGS = ("--fleet-desktop", "--enable-scripts", "--host-identifier", "instance",
         "--orbit-channel", "1.40", "--osqueryd-channel", "5.13", "--debug",
         "--end-user-email", "it@example.com", "--osquery-db", OSQUERY_DB)  # fmt: skip
ORBIT = "C:\\Program Files\\Orbit\\"
SYSTEM64 = "C:\\Windows\\System32\\"
LOG_FILE = SYSTEM64 + r"config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"


# -- helpers -------------------------------------------------------------------------------------


def expected_settings(req: BuildRequest) -> dict[str, str]:
    """What msi.py's orbit_environment says the service receives, resolved independently of
    the reader: [\\x] escapes, the two folders it uses, the install properties' defaults."""
    values = {"ORBITROOT": ORBIT, "System64Folder": SYSTEM64, **install_properties(req)}
    del values["FLEET_SECRET"]
    out = {}
    for entry in orbit_environment(req):
        key, _, value = entry.partition("=")
        out[key] = re.sub(
            r"\[\\(.)\]|\[([A-Za-z0-9_]+)\]",
            lambda m: m.group(1) if m.group(1) is not None else values[m.group(2)],
            value,
        )
    return out


def assert_no_secret(contents: InstallerContents, *secrets: str) -> None:
    text = repr(contents)
    for secret in (SECRET, "canary", *secrets):
        assert secret not in text
        for path in contents.files.values():
            assert secret.encode() not in path.read_bytes()


def msiextract(msi: Path, out: Path) -> dict[str, bytes]:
    subprocess.run(["msiextract", "-C", str(out), str(msi)], check=True, capture_output=True)
    root = out / "Orbit"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def served_target(repo: Path, name: str) -> bytes:
    listed = json.loads((repo / "repository/targets.json").read_bytes())["signed"]["targets"]
    sha512 = listed[name]["hashes"]["sha512"]
    for candidate in (repo / "repository/targets").rglob("*"):
        if candidate.is_file() and hashlib.sha512(candidate.read_bytes()).hexdigest() == sha512:
            return candidate.read_bytes()
    raise AssertionError(f"{name} not served")


def refused(msi: Path, tmp_path: Path, match: str) -> InstallerFormatError:
    with pytest.raises(InstallerFormatError) as info:
        read_msi(msi, tmp_path / "work")
    message = str(info.value)
    assert re.search(match, message), message
    assert "\n" not in message and "canary" not in message
    return info.value


def rewrite(src: Path, dst: Path, change: Callable[[dict[str, bytes]], object]) -> Path:
    """A copy of the MSI ``src`` with its streams (by olefile's raw names) changed."""
    with olefile.OleFileIO(str(src)) as ole:
        streams = {entry[0]: ole.openstream(entry).read() for entry in ole.listdir()}
    change(streams)
    with dst.open("wb") as out:
        cfb = CompoundFileWriter(out, root_clsid=MSI_CLSID)
        for name, data in streams.items():
            cfb.add_stream(name, data)
        cfb.close()
    return dst


def table(name: str) -> str:
    return encode_stream_name(name, table=True)


# -- a cabinet writer for what ours never writes -----------------------------------------------


def make_cab(
    folders: list[list[tuple[str, bytes]]],
    *,
    copies: dict[str, str] | None = None,
    entries: dict[str, tuple[int, int, int]] | None = None,
    history: bool = True,
    kind: int = 1,
    lie: int | None = None,
    signature: bytes = b"CK",
) -> bytes:
    """An MS-CAB of ``folders`` (each a list of (name, bytes)), MSZIP blocks compressed with
    the previous 32 KiB as dictionary when ``history``. ``copies``: name -> original, a CFFILE
    pointing at the original's bytes (WiX's smart cabbing); ``entries``: name -> (size,
    offset, folder) overriding a CFFILE; ``lie``: cbUncomp of the first block; ``signature``:
    what starts an MSZIP block instead of "CK"."""
    table_ = []
    blocks: list[list[bytes]] = []
    where: list[tuple[str, tuple[int, int, int]]] = []  # CFFILEs: name, (size, offset, folder)
    for index, members in enumerate(folders):
        data, offset = b"", 0
        for name, content in members:
            where.append((name, (len(content), offset, index)))
            offset += len(content)
            data += content
        out: list[bytes] = []
        previous = b""
        for at in range(0, len(data), 32768):
            raw = data[at : at + 32768]
            if kind == 0:
                packed = raw
            else:
                compressor = (
                    zlib.compressobj(9, zlib.DEFLATED, -15, zdict=previous)
                    if history and previous
                    else zlib.compressobj(9, zlib.DEFLATED, -15)
                )
                packed = signature + compressor.compress(raw) + compressor.flush()
            unpacked = len(raw) if lie is None or out or index else lie
            csum = checksum(packed, len(packed) | unpacked << 16)
            out.append(struct.pack("<IHH", csum, len(packed), unpacked) + packed)
            previous = (previous + raw)[-32768:]
        blocks.append(out)
    for copy, original in (copies or {}).items():
        where.append((copy, dict(where)[original]))
    where = [(name, (entries or {}).get(name, entry)) for name, entry in where]
    for name, (size, offset, folder) in where:
        table_.append(
            struct.pack("<IIHHHH", size, offset, folder, 0x5A21, 0, 0x20) + name.encode() + b"\0"
        )
    files_at = 36 + 8 * len(folders)
    at = files_at + sum(map(len, table_))
    folder_entries = []
    for out in blocks:
        folder_entries.append(struct.pack("<IHH", at, len(out), kind))
        at += sum(map(len, out))
    header = struct.pack("<4sIIIIIBBHHHHH", b"MSCF", 0, at, 0, files_at, 0, 3, 1, len(folders),
                         len(table_), 0, 0, 0)  # fmt: skip
    return (
        header + b"".join(folder_entries) + b"".join(table_) + b"".join(b"".join(o) for o in blocks)
    )


def file_key(n: int, rel: str) -> str:
    """The File key (and cabinet name) craft_msi gives the n-th file."""
    return f"f{n}_" + re.sub(r"[^A-Za-z0-9]", "_", rel)[-40:]


ENVIRONMENT = [
    Column("Environment", "s72", key=True, category="Identifier"),
    Column("Name", "l255", category="Text"),
    Column("Value", "L255", category="Formatted"),
    Column("Component_", "s72", category="Identifier", key_table="Component", key_column=1),
]


def craft_msi(
    path: Path,
    files: dict[str, bytes],
    *,
    cab: bytes | None = None,
    sizes: dict[str, int] | None = None,
    file_names: dict[str, str] | None = None,
    dir_names: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
    arguments: str | None = None,
    registry_environment: str | None = None,
    environment: tuple[tuple[str, str], ...] = (),
    cabinet: str | None = "#cab1.cab",
    drop: tuple[str, ...] = (),
    directory_parent: dict[str, str] | None = None,
    template: str = "x64;1033",
) -> Path:
    """An MSI written by our msidb/cfb writers with Fleet's directories: ``files`` (Orbit-root
    path -> bytes) in a cabinet stream cab1.cab named by their File keys."""
    db = Database(1252)
    t = {name: db.table(name, SCHEMA[name]) for name in
         ("Property", "Directory", "Component", "File", "Media", "ServiceInstall", "Registry")}  # fmt: skip
    env = db.table("Environment", ENVIRONMENT)
    t["Directory"].add("TARGETDIR", None, "SourceDir")
    t["Directory"].add("ProgramFiles64Folder", "TARGETDIR", ".")
    t["Directory"].add("ORBITROOT", "ProgramFiles64Folder", "Orbit")
    dir_ids = {"": "ORBITROOT"}
    keys: dict[str, str] = {}
    for n, rel in enumerate(files):
        parent = ""
        for part in rel.split("/")[:-1]:
            here = f"{parent}/{part}".lstrip("/")
            if here not in dir_ids:
                dir_ids[here] = f"d{len(dir_ids)}"
                default = (dir_names or {}).get(here, part)
                up = (directory_parent or {}).get(dir_ids[here], dir_ids[parent])
                t["Directory"].add(dir_ids[here], up, default)
            parent = here
        key = keys[rel] = file_key(n, rel)
        t["Component"].add("c" + key, None, dir_ids[parent], 256, None, key)
        name = (file_names or {}).get(rel, rel.rsplit("/", 1)[-1])
        size = (sizes or {}).get(rel, len(files[rel]))
        t["File"].add(key, "c" + key, name, size, None, None, 512, n + 1)
    t["Media"].add(1, len(files), None, cabinet, None, None)
    props = {"ProductName": "Fleet osquery", "ProductVersion": "1.40.0", "ProductCode":
             "{00000000-0000-0000-0000-000000000001}", "FLEET_URL": "https://fleet.example.com",
             "FLEET_SECRET": "dummy", **(properties or {})}  # fmt: skip
    for name, value in props.items():
        t["Property"].add(name, value)
    service_component = "c" + next(iter(keys.values()))
    t["ServiceInstall"].add("svc", "Fleet osquery", "Fleet osquery", 16, 2, 0, None, None,
                            "LocalSystem", None, arguments, service_component, None)  # fmt: skip
    if registry_environment is not None:
        t["Registry"].add("reg", 2, r"SYSTEM\CurrentControlSet\Services\Fleet osquery",
                          "Environment", registry_environment, service_component)  # fmt: skip
    for n, (name, value) in enumerate(environment):
        env.add(f"env{n}", name, value, service_component)
    if cab is None:
        cab = make_cab([[(keys[rel], data) for rel, data in files.items()]])
    db.add_stream("cab1.cab", cab)
    for name in [*drop, *(n for n, tb in db.tables.items() if not tb.rows)]:
        db.tables.pop(name, None)
    summary = Summary(codepage=1252, title="Installation Database", subject="Fleet osquery",
                      author="test", keywords="Installer", comments="", template=template,
                      package_code="{00000000-0000-0000-0000-000000000002}", timestamp=0,
                      page_count=500, word_count=2, app_name="test")  # fmt: skip
    with path.open("wb") as out:
        db.write(out, summary.encode())
    return path


# -- our MSIs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    repo, server = served
    out = tmp_path_factory.mktemp("inspect-msi")
    arm = out / "arm64.msi"
    cli("package", "--type", "msi", "--arch", "arm64", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache", "--outfile", arm,
        env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
    return {
        "amd64": build_installer(served, "msi", out / "amd64.msi", *FLAGS, secret=SECRET, sde=SDE),
        "arm64": arm,
    }


def amd64_request(server: FaultServer) -> BuildRequest:
    return BuildRequest(
        type="msi", update_url=server.url, fleet_url="https://fleet.example.com",
        enroll_secret=SECRET, fleet_desktop=True, enable_scripts=True, host_identifier="instance",
        orbit_channel="1.40", osqueryd_channel="5.13", debug=True, end_user_email="it@example.com",
        osquery_db=OSQUERY_DB,
    )  # fmt: skip


def test_our_amd64_msi(built: dict[str, Path], served, tmp_path: Path) -> None:
    _repo, server = served
    contents = read_msi(built["amd64"], tmp_path)
    assert (contents.type, contents.name, contents.version, contents.arch) == (
        "msi", "Fleet osquery", "1.40.0", "amd64")  # fmt: skip
    assert contents.settings == expected_settings(amd64_request(server))
    # the same, spelled out: Formatted values as Windows Installer resolves them
    assert contents.settings["ORBIT_ROOT_DIR"] == "C:\\Program Files\\Orbit\\."
    assert contents.settings["ORBIT_ENROLL_SECRET_PATH"] == "C:\\Program Files\\Orbit\\secret.txt"
    assert contents.settings["ORBIT_LOG_FILE"] == LOG_FILE
    assert contents.settings["ORBIT_OSQUERY_DB"] == r"C:\osquery [db]\{x}"
    assert contents.settings["ORBIT_FLEET_URL"] == "https://fleet.example.com"
    assert (
        contents.settings["ORBIT_FLEET_DESKTOP"]
        == contents.settings["ORBIT_ENABLE_SCRIPTS"]
        == "True"
    )
    assert contents.settings["ORBIT_ORBIT_CHANNEL"] == "1.40"
    assert contents.settings["ORBIT_END_USER_EMAIL"] == "it@example.com"
    assert contents.settings["ORBIT_UPDATE_URL"] == server.url
    assert "ORBIT_ENROLL_SECRET" not in contents.settings
    assert contents.enroll_secret is True
    assert any("FLEET_URL" in note and "msiexec" in note for note in contents.notes)
    assert_no_secret(contents)
    assert sorted(contents.files) == [
        "bin/desktop/windows/stable/fleet-desktop.exe", "bin/orbit/orbit.exe",
        "bin/orbit/windows/1.40/orbit.exe", "bin/osqueryd/windows/5.13/osqueryd.exe",
        "certs.pem", "tuf-metadata.json",
    ]  # fmt: skip
    for path in contents.files.values():
        assert path.is_relative_to(tmp_path / "root")


def test_our_arm64_msi_without_secret(built: dict[str, Path], served, tmp_path: Path) -> None:
    _repo, server = served
    contents = read_msi(built["arm64"], tmp_path)
    assert (contents.type, contents.name, contents.version, contents.arch) == (
        "msi", "Fleet osquery", "1.40.0", "arm64")  # fmt: skip
    request = BuildRequest(type="msi", arch="arm64", update_url=server.url)
    assert contents.settings == expected_settings(request)
    assert contents.settings["ORBIT_FLEET_URL"] == "dummy"  # what the service gets unless msiexec
    assert contents.settings["ORBIT_FLEET_DESKTOP"] == "False"
    assert contents.enroll_secret is False
    assert any("placeholder" in note for note in contents.notes)
    assert "bin/orbit/windows-arm64/stable/orbit.exe" in contents.files


@pytest.mark.parametrize("kind", ["amd64", "arm64"])
def test_files_equal_msiextract_and_the_repository(
    built: dict[str, Path], served, tmp_path: Path, kind: str
) -> None:
    repo, _server = served
    contents = read_msi(built[kind], tmp_path / "work")
    got = {rel: path.read_bytes() for rel, path in contents.files.items()}
    assert got == msiextract(built[kind], tmp_path / "msiextract")
    # and what they should be: the served targets, the CA bundle, the TUF store
    platform = "windows" if kind == "amd64" else "windows-arm64"
    orbit, osqueryd = ("1.40", "5.13") if kind == "amd64" else ("stable", "stable")
    assert got.pop("bin/orbit/orbit.exe") == served_target(
        repo, f"orbit/{platform}/{orbit}/orbit.exe"
    )
    for name in (
        f"orbit/{platform}/{orbit}/orbit.exe",
        f"osqueryd/{platform}/{osqueryd}/osqueryd.exe",
    ):
        assert got.pop("bin/" + name) == served_target(repo, name)
    if kind == "amd64":
        name = "desktop/windows/stable/fleet-desktop.exe"
        assert got.pop("bin/" + name) == served_target(repo, name)
    assert got.pop("certs.pem") == CA_BUNDLE.read_bytes()
    published = repo / "repository"
    store = orbit_metadata_json({n: (published / n).read_bytes() for n in
                                 ("root.json", "targets.json", "snapshot.json", "timestamp.json")})  # fmt: skip
    assert got.pop("tuf-metadata.json") == store
    assert got == {}


# -- fleetctl's layout -----------------------------------------------------------------------------


def fleetctl_arguments() -> str:
    """The service Arguments of fleetctl's WiX template (reference fleet-packaging.md 3.3.2)
    for --fleet-url, --insecure, --debug, --update-url, --fleet-desktop, no host identifier,
    no end-user email (so the double space before --eua-token)."""
    return (
        '--root-dir "[ORBITROOT]." --log-file "[System64Folder]config\\systemprofile\\AppData'
        '\\Local\\FleetDM\\Orbit\\Logs\\orbit-osquery.log" --fleet-url "[FLEET_URL]" '
        '--enroll-secret-path "[ORBITROOT]secret.txt" --insecure --debug '
        '--update-url "https://tuf.example.com" --fleet-desktop="[FLEET_DESKTOP]" '
        '--desktop-channel stable --orbit-channel "stable" --osqueryd-channel "stable" '
        '--enable-scripts="[ENABLE_SCRIPTS]"  --eua-token="[EUA_TOKEN]"'
    )


FLEETCTL_SETTINGS = {
    "ORBIT_ROOT_DIR": "C:\\Program Files\\Orbit\\.",
    "ORBIT_LOG_FILE": LOG_FILE,
    "ORBIT_FLEET_URL": "https://fleet.example.com",
    "ORBIT_ENROLL_SECRET_PATH": "C:\\Program Files\\Orbit\\secret.txt",
    "ORBIT_INSECURE": "true",
    "ORBIT_DEBUG": "true",
    "ORBIT_UPDATE_URL": "https://tuf.example.com",
    "ORBIT_FLEET_DESKTOP": "True",
    "ORBIT_DESKTOP_CHANNEL": "stable",
    "ORBIT_ORBIT_CHANNEL": "stable",
    "ORBIT_OSQUERYD_CHANNEL": "stable",
    "ORBIT_ENABLE_SCRIPTS": "False",
    "ORBIT_EUA_TOKEN": "dummy",
}

WXS = """<?xml version="1.0" encoding="UTF-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="Fleet osquery" Language="1033" Version="1.40.0"
      Manufacturer="Fleet Device Management (fleetdm.com)"
      UpgradeCode="B681CB20-107E-428A-9B14-2D3C1AFED244">
    <Package Keywords="Fleet osquery" Description="Fleet osquery" InstallerVersion="500"
        Compressed="yes" InstallScope="perMachine" Languages="1033"/>
    <Media Id="1" Cabinet="cab1.cab" EmbedCab="yes"/>
    <Property Id="FLEET_URL" Value="https://fleet.example.com"/>
    <Property Id="FLEET_SECRET" Value="dummy"/>
    <Property Id="ENABLE_SCRIPTS" Value="False"/>
    <Property Id="FLEET_DESKTOP" Value="True"/>
    <Property Id="EUA_TOKEN" Value="dummy"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="ORBITROOT" Name="Orbit">
          <Component Id="C_ROOTFILES" Guid="11111111-2222-3333-4444-555555555501" Win64="yes">
            <File Id="filSECRET" Source="root/secret.txt"/>
            <File Id="filTUF" Source="root/tuf-metadata.json" KeyPath="yes"/>
            <File Id="filCERTS" Source="root/certs.pem"/>
          </Component>
          <Directory Id="ORBITBIN" Name="bin">
            <Directory Id="ORBITBINORBIT" Name="orbit">
              <Component Id="C_ORBITBIN" Guid="AF347B4E-B84B-4DD4-9C4D-133BE17B613D" Win64="yes">
                <File Id="filORBITSERVICE" Source="root/bin/orbit/orbit.exe" KeyPath="yes"/>
                <ServiceInstall Id="Fleet_osquery" Name="Fleet osquery" Account="LocalSystem"
                    ErrorControl="ignore" Start="auto" Type="ownProcess"
                    Arguments="ARGUMENTS"/>
                <ServiceControl Id="StartOrbitService" Name="Fleet osquery" Start="install"
                    Stop="both" Remove="uninstall"/>
              </Component>
              <Directory Id="dirORBITWIN" Name="windows">
                <Directory Id="dirORBITWINSTABLE" Name="stable">
                  <Component Id="cmpORBIT" Guid="11111111-2222-3333-4444-555555555502" Win64="yes">
                    <File Id="filORBIT" Source="root/bin/orbit/windows/stable/orbit.exe" KeyPath="yes"/>
                  </Component>
                </Directory>
              </Directory>
            </Directory>
            <Directory Id="dirOSQ" Name="osqueryd">
              <Directory Id="dirOSQWIN" Name="windows">
                <Directory Id="dirOSQWINSTABLE" Name="stable">
                  <Component Id="cmpOSQ" Guid="11111111-2222-3333-4444-555555555503" Win64="yes">
                    <File Id="filOSQ" Source="root/bin/osqueryd/windows/stable/osqueryd.exe" KeyPath="yes"/>
                  </Component>
                </Directory>
              </Directory>
            </Directory>
          </Directory>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Orbit" Title="Fleet osquery" Level="1" Display="hidden">
      <ComponentRef Id="C_ROOTFILES"/>
      <ComponentRef Id="C_ORBITBIN"/>
      <ComponentRef Id="cmpORBIT"/>
      <ComponentRef Id="cmpOSQ"/>
    </Feature>
  </Product>
</Wix>
"""


@pytest.mark.parametrize(
    ("secret_txt", "embedded"), [("fleetctl-canary-secret", True), ("dummy", False)]
)
def test_fleetctl_template_built_by_wixl(
    served, tmp_path: Path, secret_txt: str, embedded: bool
) -> None:
    """fleetctl's WiX-era layout: settings from the service's Arguments, the secret as
    secret.txt in the Orbit root (checked, never extracted). Built by wixl, not WiX."""
    assert shutil.which("wixl"), "wixl is missing: bash scripts/install-system-deps.sh --test"
    repo, _server = served
    root = tmp_path / "root"
    payload = {
        "bin/orbit/windows/stable/orbit.exe": served_target(repo, "orbit/windows/stable/orbit.exe"),
        "bin/orbit/orbit.exe": served_target(repo, "orbit/windows/stable/orbit.exe"),
        "bin/osqueryd/windows/stable/osqueryd.exe": served_target(
            repo, "osqueryd/windows/stable/osqueryd.exe"
        ),
        "tuf-metadata.json": (repo / "repository/root.json").read_bytes(),
        "certs.pem": CA_BUNDLE.read_bytes(),
    }
    for rel, data in {**payload, "secret.txt": secret_txt.encode()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    wxs = tmp_path / "main.wxs"
    wxs.write_text(WXS.replace("ARGUMENTS", fleetctl_arguments().replace('"', "&quot;")))
    msi = tmp_path / "fleet-osquery.msi"
    subprocess.run(
        ["wixl", "-a", "x64", "-o", str(msi), str(wxs)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )

    contents = read_msi(msi, tmp_path / "work")
    assert (contents.name, contents.version, contents.arch) == ("Fleet osquery", "1.40.0", "amd64")
    assert contents.settings == FLEETCTL_SETTINGS
    assert contents.enroll_secret is embedded
    assert "secret.txt" not in contents.files
    assert any("secret.txt" in note for note in contents.notes)
    assert_no_secret(contents, "fleetctl-canary-secret")
    got = {rel: path.read_bytes() for rel, path in contents.files.items()}
    assert got == payload
    extracted = msiextract(msi, tmp_path / "msiextract")
    assert extracted.pop("secret.txt") == secret_txt.encode()
    assert got == extracted


def test_command_line_split_as_go_reads_it() -> None:
    line = r'a "b c" d\e "f\"g" h\\"i j" "k""l "C:\Program Files\Orbit\." "C:\x\"  z'
    assert split_command_line(line) == [
        "a", "b c", r"d\e", 'f"g', "h\\i j", 'k"l', "C:\\Program Files\\Orbit\\.", 'C:\\x"  z',
    ]  # fmt: skip


# -- crafted MSIs: the Environment table, smart cabbing, MSZIP history, a large payload -----


def pseudo_text(size: int, seed: int) -> bytes:
    """Compressible bytes whose 32 KiB blocks repeat earlier blocks (history pays off)."""
    words = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:7].encode() for i in range(4000)]
    out = bytearray()
    i = 0
    while len(out) < size:
        out += words[(i * 7919) % len(words)] + b" "
        i += 1
    return bytes(out[:size])


def test_environment_table_smart_cabbing_and_mszip_history(tmp_path: Path) -> None:
    orbit = pseudo_text(200_000, 1)
    osqueryd = pseudo_text(90_000, 2)
    files = {
        "tuf-metadata.json": b'{"root.json": {}}',
        "bin/orbit/windows/stable/orbit.exe": orbit,
        "bin/orbit/orbit.exe": orbit,
        "bin/osqueryd/windows/stable/osqueryd.exe": osqueryd,
        "empty.txt": b"",
    }
    keys = [file_key(n, rel) for n, rel in enumerate(files)]
    # two folders; orbit.exe stored once, its copy pointing at the same bytes (WiX)
    cab = make_cab(
        [[(keys[0], files["tuf-metadata.json"]), (keys[1], orbit), (keys[4], b"")],
         [(keys[3], osqueryd)]],
        copies={keys[2]: keys[1]},
    )  # fmt: skip
    if shutil.which("cabextract"):  # the crafted cabinet is a valid one
        (tmp_path / "x.cab").write_bytes(cab)
        subprocess.run(
            ["cabextract", "-t", str(tmp_path / "x.cab")], check=True, capture_output=True
        )
    msi = craft_msi(
        tmp_path / "x.msi", files, cab=cab,
        file_names={"bin/osqueryd/windows/stable/osqueryd.exe": "OSQUER~1.EXE|osqueryd.exe"},
        dir_names={"bin/osqueryd": "OSQUER~1|osqueryd"},
        environment=(("=-*ORBIT_UPDATE_INTERVAL", "1h0m0s"), ("=-ORBIT_USER_ONLY", "x"),
                     ("=-*ORBIT_ORBIT_CHANNEL", "from-environment-table")),
        registry_environment="ORBIT_ORBIT_CHANNEL=edge[~]ORBIT_DEBUG=true[~]HTTPS_PROXY=http://p",
        arguments='--orbit-channel "beta" --host-identifier=instance -fleet-url "[FLEET_URL]" --insecure',
    )  # fmt: skip
    contents = read_msi(msi, tmp_path / "work")
    # Environment table < the service's Environment < its command-line flags
    assert contents.settings == {
        "ORBIT_UPDATE_INTERVAL": "1h0m0s",
        "ORBIT_ORBIT_CHANNEL": "beta",
        "ORBIT_DEBUG": "true",
        "ORBIT_HOST_IDENTIFIER": "instance",
        "ORBIT_FLEET_URL": "https://fleet.example.com",
        "ORBIT_INSECURE": "true",
    }
    assert any("HTTPS_PROXY" in note for note in contents.notes)
    assert any("ORBIT_USER_ONLY" in note for note in contents.notes)
    assert contents.enroll_secret is False
    assert {rel: p.read_bytes() for rel, p in contents.files.items()} == files


def test_secret_in_the_service_environment_is_not_kept(tmp_path: Path) -> None:
    files = {"tuf-metadata.json": b"{}"}
    msi = craft_msi(tmp_path / "x.msi", files, arguments='--enroll-secret "flag-canary"',
                    registry_environment="ORBIT_ENROLL_SECRET=env-canary[~]ORBIT_DEBUG=true")  # fmt: skip
    contents = read_msi(msi, tmp_path / "work")
    assert contents.enroll_secret is True and contents.settings == {"ORBIT_DEBUG": "true"}
    assert_no_secret(contents, "flag-canary", "env-canary")
    # a setting that refers to the secret's property is not resolved
    msi = craft_msi(tmp_path / "y.msi", files, properties={"FLEET_SECRET": "prop-canary"},
                    registry_environment="ORBIT_FLEET_URL=[FLEET_SECRET]")  # fmt: skip
    contents = read_msi(msi, tmp_path / "work2")
    assert contents.enroll_secret is True
    assert contents.settings == {"ORBIT_FLEET_URL": "[FLEET_SECRET]"}
    assert_no_secret(contents, "prop-canary")


def test_formatted_values(tmp_path: Path) -> None:
    """Windows Installer's Formatted syntax in the service's Environment (MSDN "Formatted")."""
    key = file_key(0, "tuf-metadata.json")
    entries = {
        "ORBIT_ESCAPES": (r"[\[]x[\]] [\{]y[\}]", "[x] {y}"),
        "ORBIT_GROUP": ("{<[FLEET_URL]>}", "<https://fleet.example.com>"),
        "ORBIT_GROUP_EMPTY": ("a{<[NOT_SET]>}b", "ab"),
        "ORBIT_GROUP_LITERAL": ("{plain}", "{plain}"),
        "ORBIT_INDIRECT": ("[[POINTER]]", "https://fleet.example.com"),
        "ORBIT_UNMATCHED": ("a[b", "a[b"),
        "ORBIT_FILE": (f"[#{key}]", "C:\\Program Files\\Orbit\\tuf-metadata.json"),
        "ORBIT_COMPONENT": (f"[$c{key}]", ORBIT),
        "ORBIT_FOLDER": ("[CommonAppDataFolder]x", "C:\\ProgramData\\x"),
        "ORBIT_ENVIRONMENT": ("[%TEMP]", "[%TEMP]"),
        "ORBIT_MISSING": ("<[NOT_SET]>", "<>"),
    }
    value = "[~]".join(f"{name}={raw}" for name, (raw, _want) in entries.items())
    msi = craft_msi(tmp_path / "x.msi", {"tuf-metadata.json": b"{}"}, registry_environment=value,
                    properties={"POINTER": "FLEET_URL"})  # fmt: skip
    contents = read_msi(msi, tmp_path / "work")
    assert contents.settings == {name: want for name, (_raw, want) in entries.items()}
    assert any("[%TEMP]" in note for note in contents.notes)
    assert any("NOT_SET" in note for note in contents.notes)


def test_inflates_only_what_the_files_declare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of 64 MiB of zeros whose only file is 10 bytes: one block is inflated."""
    zeros = bytes(32768)
    block = b"CK" + zlib.compress(zeros, 9)[2:-4]
    blocks = (
        struct.pack("<IHH", checksum(block, len(block) | 32768 << 16), len(block), 32768) + block
    )
    count = 2048
    files_at = 36 + 8
    name = b"f0_tuf_metadata_json\0"
    data_at = files_at + 16 + len(name)
    cab = (struct.pack("<4sIIIIIBBHHHHH", b"MSCF", 0, data_at + count * len(blocks), 0, files_at,
                       0, 3, 1, 1, 1, 0, 0, 0)
           + struct.pack("<IHH", data_at, count, 1)
           + struct.pack("<IIHHHH", 10, 0, 0, 0, 0, 0x20) + name + blocks * count)  # fmt: skip
    msi = craft_msi(tmp_path / "x.msi", {"tuf-metadata.json": bytes(10)}, cab=cab)
    inflated = []
    original = windows._FolderReader._next_block

    def counting(self: windows._FolderReader) -> None:
        inflated.append(1)
        original(self)

    monkeypatch.setattr(windows._FolderReader, "_next_block", counting)
    contents = read_msi(msi, tmp_path / "work")
    assert contents.files["tuf-metadata.json"].read_bytes() == bytes(10)
    assert len(inflated) == 1


def test_large_payload_is_streamed(tmp_path: Path) -> None:
    """A 24 MiB file goes to disk without the cabinet or the file in memory."""
    big = tmp_path / "big"
    with big.open("wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    cab = tmp_path / "x.cab"
    with cab.open("wb") as out:
        write_cab(
            out,
            [CabMember("f0_bin_orbit_orbit_exe", big, big.stat().st_size)],
            timestamp=0,
            level=1,
        )
    msi = craft_msi(tmp_path / "x.msi", {"bin/orbit/orbit.exe": b""}, cab=cab.read_bytes(),
                    sizes={"bin/orbit/orbit.exe": big.stat().st_size})  # fmt: skip
    tracemalloc.start()
    try:
        contents = read_msi(msi, tmp_path / "work")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert contents.files["bin/orbit/orbit.exe"].read_bytes() == big.read_bytes()
    assert peak < 8 * 1024 * 1024, peak


def test_sector_reader_follows_a_fragmented_chain(tmp_path: Path) -> None:
    """A stream whose sectors are out of order and not contiguous in the file (as a compound
    file rewritten in place has them) reads back in chain order, across sector edges."""
    sectors = [bytes([n]) * 512 for n in range(8)]
    chain = [5, 6, 2, 7, 0, 3]  # runs 5-6 and a lone 2, 7, 0, 3
    path = tmp_path / "f"
    path.write_bytes(bytes(512) + b"".join(sectors))  # the header sector, then sectors 0..7
    size = 5 * 512 + 100
    with path.open("rb") as fp:
        reader = windows._SectorReader(fp, array("I", chain), 512, size, "s")
        want = b"".join(sectors[n] for n in chain)[:size]
        for step in (700, 512, 1, 4096):
            reader.seek(0)
            got = b""
            while chunk := reader.read(step):
                got += chunk
            assert got == want
        reader.seek(1000)
        assert windows._read_exact(reader, 1200, "s") == want[1000:2200]  # type: ignore[arg-type]


# -- hostile MSIs --------------------------------------------------------------------------------

FILES = {"tuf-metadata.json": b"{}", "bin/orbit/orbit.exe": b"MZ" + bytes(5000)}
K_TUF, K_EXE = file_key(0, "tuf-metadata.json"), file_key(1, "bin/orbit/orbit.exe")


def _cab(**kwargs: object) -> bytes:
    return make_cab([[(K_TUF, b"{}"), (K_EXE, FILES["bin/orbit/orbit.exe"])]], **kwargs)  # type: ignore[arg-type]


def _flipped_checksum() -> bytes:
    """A stored (uncompressed) block whose first byte no longer matches its checksum."""
    cab = _cab(kind=0)
    start = struct.unpack_from("<I", cab, 36)[0] + 8
    return cab[:start] + bytes([cab[start] ^ 1]) + cab[start + 1 :]


CRAFTED: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "dotdot file name": (lambda: {"file_names": {"bin/orbit/orbit.exe": "ORBIT~1.EXE|.."}},
                         "unsafe member name"),
    "dotdot directory": (lambda: {"dir_names": {"bin/orbit": ".."}}, "unsafe member name"),
    "slash in a name": (lambda: {"file_names": {"tuf-metadata.json": "a/b"}}, "unsafe member name"),
    "a file twice (case)": (lambda: {"files": {**FILES, "bin/orbit/ORBIT.exe": b"x"}},
                            "appears twice"),
    "a cabinet name twice": (
        lambda: {"cab": make_cab([[(K_TUF, b"{}"), (K_EXE, FILES["bin/orbit/orbit.exe"])],
                                  [(K_TUF, b"{}")]])},
        "appears twice"),
    "files overlap": (lambda: {"cab": _cab(entries={K_EXE: (5002, 1, 0)})}, "overlaps"),
    "a file exceeds its folder": (
        lambda: {"cab": make_cab([[(K_TUF, b"{}"), (K_EXE, b"MZ")]],
                                 entries={K_EXE: (5002, 2, 0)})},
        "exceeds its folder"),
    "truncated cabinet": (lambda: {"cab": _cab()[:-40]}, "truncated|malformed"),
    "a block inflating past its size": (
        lambda: {"files": {"tuf-metadata.json": b"{}"},
                 "cab": make_cab([[(K_TUF, b"{}"), ("unlisted", bytes(5000))]],
                                 entries={"unlisted": (10, 2, 0)}, lie=100)},
        "does not hold the 100 bytes"),
    "a block inflating short of its size": (
        lambda: {"files": {"tuf-metadata.json": b"{}"},
                 "cab": make_cab([[(K_TUF, b"{}")]], lie=100)},
        "does not hold the 100 bytes"),
    "a block with a wrong checksum": (lambda: {"cab": _flipped_checksum()}, "checksum"),
    "not MSZIP": (lambda: {"cab": _cab(signature=b"XX")}, "is not MSZIP"),
    "LZX folder": (lambda: {"cab": _cab(kind=3)}, "compression"),
    "size differs from the File table": (lambda: {"sizes": {"bin/orbit/orbit.exe": 7}},
                                         "bytes in"),
    "no File table": (lambda: {"drop": ("File",)}, "no File table"),
    "no Media table": (lambda: {"drop": ("Media",)}, "no Media table"),
    "no Property table": (lambda: {"drop": ("Property",)}, "no Property table"),
    "cabinet stream missing": (lambda: {"cabinet": "#missing.cab"}, "no stream"),
    "external cabinet": (lambda: {"cabinet": "external.cab"}, "not in a cabinet embedded"),
    "directory loop": (lambda: {"directory_parent": {"d1": "d2", "d2": "d1"}}, "loops"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_hostile_msi_is_refused(tmp_path: Path, case: str) -> None:
    make, match = CRAFTED[case]
    kwargs = make()
    files = kwargs.pop("files", FILES)
    msi = craft_msi(tmp_path / "x.msi", files, **kwargs)
    refused(msi, tmp_path, match)


def _file_rows(data: bytes) -> int:
    return len(data) // 20  # File: s72 s72 l255 i4 S72 S20 I2 i4 with 2-byte string indexes


REWRITES: dict[str, tuple[Callable[[dict[str, bytes]], object], str]] = {
    "string index out of range (File.FileName)": (
        lambda s: s.__setitem__(
            table("File"),
            (lambda d, r: d[: 4 * r] + b"\xff\xff" + d[4 * r + 2 :])(
                s[table("File")], _file_rows(s[table("File")])
            ),
        ),
        "string index 65535 out of range in File",
    ),
    "string index out of range (Property.Value)": (
        lambda s: s.__setitem__(
            table("Property"),
            (lambda d: d[: len(d) // 2] + b"\xff\xff" * (len(d) // 4))(s[table("Property")]),
        ),
        "string index 65535 out of range in Property",
    ),
    "truncated table stream": (
        lambda s: s.__setitem__(table("File"), s[table("File")][:-1]),
        "File table is truncated",
    ),
    "string data shorter than the pool": (
        lambda s: s.__setitem__(table("_StringData"), s[table("_StringData")][:100]),
        "shorter than its pool",
    ),
    "truncated string pool": (
        lambda s: s.__setitem__(table("_StringPool"), s[table("_StringPool")][:-2]),
        "truncated",
    ),
    "no string pool": (lambda s: s.pop(table("_StringPool")), "no string pool"),
    "no _Columns": (lambda s: s.pop(table("_Columns")), "no _Columns"),
    "no SummaryInformation": (lambda s: s.pop("\x05SummaryInformation"), "no SummaryInformation"),
    "truncated cabinet stream": (
        lambda s: s.__setitem__(
            encode_stream_name("product.cab", table=False),
            s[encode_stream_name("product.cab", table=False)][:20000],
        ),
        "truncated|malformed",
    ),
}


@pytest.mark.parametrize("case", list(REWRITES))
def test_rewritten_msi_is_refused(built: dict[str, Path], tmp_path: Path, case: str) -> None:
    change, match = REWRITES[case]
    msi = rewrite(built["amd64"], tmp_path / "x.msi", change)
    refused(msi, tmp_path, match)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_file_is_refused(built: dict[str, Path], tmp_path: Path, cut: float) -> None:
    data = built["amd64"].read_bytes()
    msi = tmp_path / "x.msi"
    msi.write_bytes(data[: int(len(data) * cut)])
    refused(msi, tmp_path, ".")


def test_not_an_msi_is_refused(tmp_path: Path) -> None:
    msi = tmp_path / "x.msi"
    msi.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    refused(msi, tmp_path, "msi")
