"""Issue 5: the macOS .pkg written in pure Python, read back with bsdtar, cpio, pyapplebom,
apple-platform-py and plistlib."""

from __future__ import annotations

import gzip
import os
import plistlib
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pyapplebom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UsageError
from packager.formats.pkg import launch_daemon
from packager.options import BuildRequest, has_control_chars
from packager.writers.bom import write_bom
from packager.writers.cpio import write_cpio_gz
from tests.helpers import build_installer

SECRET = 'pkg-canary "q" <&> $x ü'
SDE = "1700000000"


def build(served, out: Path, *extra: str | Path, secret: str = SECRET) -> Path:
    return build_installer(served, "pkg", out, *extra, secret=secret, sde=SDE)


@pytest.fixture(scope="module")
def pkg(served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(served, tmp_path_factory.mktemp("pkg") / "x.pkg", "--fleet-desktop", "--debug")


@pytest.fixture(scope="module")
def extracted(pkg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("x")
    subprocess.run(["bsdtar", "-xf", str(pkg), "-C", str(out)], check=True)  # verifies checksums
    payload = out / "payload"
    payload.mkdir()
    data = gzip.decompress((out / "base.pkg/Payload").read_bytes())
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=data, cwd=payload, check=True
    )
    return out


def test_bsdtar_lists_the_product_archive(pkg: Path) -> None:
    listing = subprocess.run(
        ["bsdtar", "-tvf", str(pkg)], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["Distribution", "base.pkg", "base.pkg/Bom", "base.pkg/PackageInfo",
                     "base.pkg/Payload", "base.pkg/Scripts"]  # fmt: skip
    assert all(" root " in line and " admin " in line for line in listing.splitlines())


def test_payload_tree(extracted: Path) -> None:
    root = extracted / "payload"
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    assert {
        "opt/orbit/bin/orbit/macos/stable/orbit",
        "opt/orbit/bin/osqueryd/macos-app/stable/osqueryd.app.tar.gz",
        "opt/orbit/bin/osqueryd/macos-app/stable/osquery.app/Contents/MacOS/osqueryd",
        "opt/orbit/bin/desktop/macos/stable/desktop.app.tar.gz",
        "opt/orbit/bin/desktop/macos/stable/Fleet Desktop.app/Contents/MacOS/fleet-desktop",
        "opt/orbit/certs.pem", "opt/orbit/secret.txt", "opt/orbit/tuf-metadata.json",
        "Library/LaunchDaemons/com.fleetdm.orbit.plist",
    } == set(files)  # fmt: skip
    assert files["opt/orbit/secret.txt"].read_bytes() == SECRET.encode()
    assert files["opt/orbit/secret.txt"].stat().st_mode & 0o777 == 0o600
    assert files["opt/orbit/bin/orbit/macos/stable/orbit"].stat().st_mode & 0o777 == 0o755
    assert (root / "opt/orbit/staging").is_dir()
    exe = Path(__file__).resolve().parent.parent / "fixtures/executables/orbit-macos-universal"
    for rel in ("opt/orbit/bin/orbit/macos/stable/orbit",
                "opt/orbit/bin/osqueryd/macos-app/stable/osquery.app/Contents/MacOS/osqueryd",
                "opt/orbit/bin/desktop/macos/stable/Fleet Desktop.app/Contents/MacOS/fleet-desktop"):  # fmt: skip
        assert files[rel].read_bytes() == exe.read_bytes(), rel
    from packager.layout import CA_BUNDLE

    assert files["opt/orbit/certs.pem"].read_bytes() == CA_BUNDLE.read_bytes()


def test_bom_equals_payload(extracted: Path) -> None:
    bom = pyapplebom.parse_bom_file(str(extracted / "base.pkg/Bom"))
    assert bom["parse_errors"] is None
    data = gzip.decompress((extracted / "base.pkg/Payload").read_bytes())
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True
    ).stdout.decode()
    cpio_names = [line.split(None, 8)[8] for line in listing.splitlines()]
    bom_paths = {p["path"]: p for p in bom["paths"]}
    assert set(bom_paths) == set(cpio_names)
    root = extracted / "payload"
    for name, entry in bom_paths.items():
        assert (entry["user_id"], entry["group_id"]) == (0, 80), name
        path = root / name
        kind = "link" if path.is_symlink() else "directory" if path.is_dir() else "file"
        assert entry["path_type"] == kind, name
        assert entry["file_mode"] & 0o7777 == path.lstat().st_mode & 0o7777, name
        if path.is_file():
            content = path.read_bytes()
            assert entry["size"] == len(content), name
            expected = subprocess.run(
                ["cksum"], input=content, capture_output=True, check=True
            ).stdout.split()[0]
            assert entry["crc32"] == int(expected), name


def test_scripts_and_metadata(extracted: Path) -> None:
    data = gzip.decompress((extracted / "base.pkg/Scripts").read_bytes())
    scripts = extracted / "scripts"
    scripts.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=scripts, check=True)
    post = (scripts / "postinstall").read_text()
    assert post.startswith("#!/bin/bash")
    assert "ln -sf /opt/orbit/bin/orbit/macos/stable/orbit /opt/orbit/bin/orbit/orbit" in post
    assert 'launchctl bootstrap system "${DAEMON_PLIST}"' in post
    assert (scripts / "postinstall").stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(scripts / "postinstall")], check=True)  # valid bash
    info = (extracted / "base.pkg/PackageInfo").read_text()
    assert 'identifier="com.fleetdm.orbit.base.pkg" version="1.40.0"' in info


def test_plist(extracted: Path, served) -> None:
    plist = plistlib.loads(
        (extracted / "payload/Library/LaunchDaemons/com.fleetdm.orbit.plist").read_bytes()
    )
    assert plist["Label"] == "com.fleetdm.orbit"
    assert plist["ProgramArguments"] == ["/opt/orbit/bin/orbit/orbit"]
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    env = plist["EnvironmentVariables"]
    assert env["ORBIT_FLEET_URL"] == "https://fleet.example.com"
    assert env["ORBIT_ENROLL_SECRET_PATH"] == "/opt/orbit/secret.txt"
    assert env["ORBIT_UPDATE_URL"] == served[1].url
    assert env["ORBIT_FLEET_DESKTOP"] == "true" and env["ORBIT_DEBUG"] == "true"
    assert env["ORBIT_UPDATE_INTERVAL"] == "15m0s"
    assert (
        SECRET
        not in (extracted / "payload/Library/LaunchDaemons/com.fleetdm.orbit.plist").read_text()
    )


# The key order of Fleet's LaunchDaemon template (orbit/pkg/packaging/macos_templates.go):
# the top level sorted, the environment in the template's own order. Written out here, not
# derived from the code under test.
FLEET_TOP_LEVEL = [
    "EnvironmentVariables", "KeepAlive", "Label", "ProgramArguments", "RunAtLoad",
    "StandardErrorPath", "StandardOutPath", "ThrottleInterval",
]  # fmt: skip
FLEET_ENV_ORDER = [
    "ORBIT_DEBUG", "ORBIT_INSECURE", "ORBIT_FLEET_CERTIFICATE", "ORBIT_ENROLL_SECRET_PATH",
    "ORBIT_FLEET_URL", "ORBIT_USE_SYSTEM_CONFIGURATION", "ORBIT_ENABLE_SCRIPTS",
    "ORBIT_DISABLE_UPDATES", "ORBIT_ORBIT_CHANNEL", "ORBIT_OSQUERYD_CHANNEL", "ORBIT_UPDATE_URL",
    "ORBIT_UPDATE_TLS_CERTIFICATE", "ORBIT_FLEET_DESKTOP", "ORBIT_DESKTOP_CHANNEL",
    "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST", "ORBIT_UPDATE_INTERVAL",
    "ORBIT_HOST_IDENTIFIER", "ORBIT_DISABLE_KEYSTORE", "ORBIT_OSQUERY_DB",
]  # fmt: skip


def _keys(d: ET.Element) -> list[str]:
    return [k.text or "" for k in d.findall("key")]


def test_plist_keys_in_fleets_order(extracted: Path) -> None:
    """Read as XML (not plistlib), so the order written is the order seen."""
    top = ET.parse(extracted / "payload/Library/LaunchDaemons/com.fleetdm.orbit.plist")  # noqa: S314 - our own output
    root_dict = top.getroot().find("dict")
    assert root_dict is not None
    assert _keys(root_dict) == FLEET_TOP_LEVEL
    env = root_dict.find("dict")
    assert env is not None
    got = _keys(env)
    assert got == [k for k in FLEET_ENV_ORDER if k in got]
    assert {"ORBIT_DEBUG", "ORBIT_FLEET_DESKTOP", "ORBIT_UPDATE_INTERVAL"} <= set(got)


def test_plist_every_variable_in_fleets_order(tmp_path: Path) -> None:
    """Every optional variable switched on (but --insecure, which excludes a certificate): the
    whole environment, in Fleet's order."""
    from packager.formats.base import BuildContext
    from packager.formats.pkg import PkgBuilder
    from packager.tooling import NativeTooling

    pem = tmp_path / "c.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
    req = BuildRequest(
        type="pkg", fleet_url="https://f.example.com", enroll_secret="s", debug=True,
        fleet_certificate=pem, use_system_configuration=True,
        enable_scripts=True, disable_updates=True, update_tls_certificate=pem,
        fleet_desktop=True, fleet_desktop_alternative_browser_host="b.example.com",
        host_identifier="instance", disable_keystore=True, osquery_db="/var/db/o",
    )  # fmt: skip
    stage = tmp_path / "stage"
    (stage / "root").mkdir(parents=True)
    ctx = BuildContext(req, "1.0.0", stage, [], int(SDE), NativeTooling({}))
    PkgBuilder().build(ctx, tmp_path / "x.pkg")
    plist = stage / "root/Library/LaunchDaemons/com.fleetdm.orbit.plist"
    root_dict = ET.parse(plist).getroot().find("dict")  # noqa: S314 - our own output
    assert root_dict is not None and _keys(root_dict) == FLEET_TOP_LEVEL
    env = root_dict.find("dict")
    assert env is not None
    assert _keys(env) == [k for k in FLEET_ENV_ORDER if k != "ORBIT_INSECURE"]


def test_apple_platform_parses_product(pkg: Path) -> None:
    from apple_platform import packaging

    info = packaging.pkg_info(str(pkg))
    (component,) = info["components"]
    assert component["has_bom"] is True
    assert component["package_info"]["identifier"] == "com.fleetdm.orbit.base.pkg"
    assert component["package_info"]["version"] == "1.40.0"
    assert info["distribution"]["choice"][0]["pkg-ref"][0]["id"] == "com.fleetdm.orbit.base.pkg"
    assert info["flavor"] == "Product"
    assert info["files"] == ["Distribution", "base.pkg", "base.pkg/Bom", "base.pkg/PackageInfo",
                             "base.pkg/Payload", "base.pkg/Scripts"]  # fmt: skip
    assert info["distribution"]["choice"][0]["title"] == "Fleet osquery"


def test_signed_package_verifies_and_tampering_fails(served, tmp_path: Path) -> None:
    from apple_platform import certificates, reading

    cert = certificates.generate_self_signed("Orbit Test", profile="developer-id-installer")
    pem = cert.write_pem_bundle(tmp_path / "signer.pem")
    signed = build(served, tmp_path / "s.pkg", "--sign-pem", pem)

    def verdict(path: Path) -> dict[str, object]:
        toc = reading.read_signature(str(path))[0]["entity"]["xar_table_of_contents"]
        return {
            k: toc[k]
            for k in ("checksum_verifies", "rsa_signature_verifies", "cms_signature_verifies")
        }

    assert verdict(signed) == {
        "checksum_verifies": True,
        "rsa_signature_verifies": True,
        "cms_signature_verifies": True,
    }
    # One byte of the TOC: the TOC checksum no longer verifies.
    data = bytearray(signed.read_bytes())
    data[40] ^= 0x01
    (tmp_path / "toc.pkg").write_bytes(data)
    bad = subprocess.run(["bsdtar", "-tf", str(tmp_path / "toc.pkg")], capture_output=True)
    assert bad.returncode != 0 or verdict(tmp_path / "toc.pkg")["checksum_verifies"] is False
    # One byte of the Payload: bsdtar's checksum verification fails.
    data = bytearray(signed.read_bytes())
    data[-200] ^= 0x01
    (tmp_path / "payload.pkg").write_bytes(data)
    out = subprocess.run(
        ["bsdtar", "-xf", str(tmp_path / "payload.pkg"), "-C", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "Sumcheck error" in out.stderr


def test_reproducible(served, tmp_path: Path) -> None:
    a = build(served, tmp_path / "a.pkg")
    b = build(served, tmp_path / "b.pkg")
    assert a.read_bytes() == b.read_bytes()


def test_big_tree_bom_and_cpio(tmp_path: Path) -> None:
    """More than 5,000 entries: multi-leaf BOM, still equal to the payload."""
    root = tmp_path / "root"
    for i in range(55):
        d = root / f"dir{i:02d}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"file{j:03d}").write_bytes(os.urandom(j % 7))
    entries = write_cpio_gz(root, tmp_path / "Payload", mtime=1)
    write_bom(entries, tmp_path / "Bom")
    bom = pyapplebom.parse_bom_file(str(tmp_path / "Bom"))
    assert bom["parse_errors"] is None and len(bom["paths"]) == len(entries) == 5556
    assert {p["path"]: (p["size"], p["crc32"] or 0) for p in bom["paths"]} == {
        e.name: (e.size, e.cksum) for e in entries
    }
    names = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress((tmp_path / "Payload").read_bytes()),
                           capture_output=True, check=True).stdout.decode().split("\n")  # fmt: skip
    assert [n for n in names if n] == [e.name for e in entries]


text = st.lists(
    st.one_of(
        st.sampled_from([*"\"'<>&]]>$`\\#= \n\t", "ü", "😀", "\x00", "\x1b"]), st.text(max_size=3)
    ),
    max_size=10,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(secret=text, path=text)
def test_plist_values_round_trip_or_are_refused(secret: str, path: str) -> None:
    url = f"https://fleet.example.com/{path}"
    try:
        req = BuildRequest(type="pkg", fleet_url=url, enroll_secret=secret or "x")
    except UsageError as exc:
        assert "\n" not in str(exc)
        assert has_control_chars(secret + url), str(exc)
        return
    plist = plistlib.loads(plistlib.dumps(launch_daemon(req)))
    assert plist["EnvironmentVariables"]["ORBIT_FLEET_URL"] == url


def test_without_source_date_epoch_times_are_the_build_time(
    served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SOURCE_DATE_EPOCH unset: the build succeeds and the payload carries the real time (the
    stamping is skipped, not applied with a missing value)."""
    import time

    from tests.helpers import cli

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo, server = served
    started = int(time.time())
    cli("package", "--type", "pkg", "--update-url", server.url, "--update-roots",
        repo / "repository/root.json", "--no-cache", "--outfile", tmp_path / "x.pkg")  # fmt: skip
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["bsdtar", "-xf", str(tmp_path / "x.pkg"), "-C", str(out)], check=True)
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet", "--numeric-uid-gid"],
        input=gzip.decompress((out / "base.pkg/Payload").read_bytes()),
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    assert "./opt/orbit/bin" in listing
    payload = tmp_path / "payload"
    payload.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=payload,
                   input=gzip.decompress((out / "base.pkg/Payload").read_bytes()), check=True)  # fmt: skip
    stamps = {int(p.lstat().st_mtime) for p in payload.rglob("*")}
    assert stamps and min(stamps) >= started - 5, (started, sorted(stamps)[:3])


def test_cpio_entries_carry_the_posix_cksum_of_what_they_hold(tmp_path: Path) -> None:
    """The BOM records per file what coreutils' ``cksum`` prints for its bytes, and per
    symbolic link for its target text (as Apple's mkbom does): checked against ``cksum``."""
    root = tmp_path / "root"
    (root / "opt").mkdir(parents=True)
    (root / "opt" / "empty").write_bytes(b"")
    (root / "opt" / "data").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunks
    (root / "opt" / "link").symlink_to("data")
    entries = {e.name: e for e in write_cpio_gz(root, tmp_path / "Payload", mtime=0)}

    def cksum(data: bytes) -> tuple[int, int]:
        out = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout
        crc, size = out.split()[:2]
        return int(crc), int(size)

    for name in ("./opt/empty", "./opt/data"):
        data = (root / name).read_bytes()
        assert (entries[name].cksum, entries[name].size) == cksum(data), name
    link = entries["./opt/link"]
    assert (link.kind, link.link) == ("symlink", "data")
    assert (link.cksum, link.size) == cksum(b"data")


def test_signed_without_source_date_epoch(
    served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing without SOURCE_DATE_EPOCH: the signing engine takes the current time (the
    reproducible signing time is passed only when there is one), and the signature verifies."""
    from apple_platform import certificates, reading

    from tests.helpers import cli

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo, server = served
    pem = certificates.generate_self_signed("Orbit Test", profile="developer-id-installer")
    bundle = pem.write_pem_bundle(tmp_path / "signer.pem")
    out = tmp_path / "s.pkg"
    cli("package", "--type", "pkg", "--update-url", server.url, "--update-roots",
        repo / "repository/root.json", "--no-cache", "--sign-pem", bundle, "--outfile", out)  # fmt: skip
    toc = reading.read_signature(str(out))[0]["entity"]["xar_table_of_contents"]
    assert toc["rsa_signature_verifies"] is True and toc["cms_signature_verifies"] is True


def test_xml_templates_escape_every_value() -> None:
    """The values that reach the pkg's XML are validated before (identifier, version), and
    the XML templates escape them anyway: a value cannot add an attribute or an element."""
    from packager.render import render_xml

    hostile = "a\"b<c>&d'"
    info = render_xml("macos", "PackageInfo.j2", identifier=hostile, version=hostile,
                      number_of_files=1, install_kbytes=1)  # fmt: skip
    assert hostile not in info
    assert 'identifier="a&#34;b&lt;c&gt;&amp;d&#39;.base.pkg"' in info
    ET.fromstring(info)  # noqa: S314 - our own output: still well-formed XML


def test_cpio_payload_symlinks_and_files_read_back_by_gnu_cpio(tmp_path: Path) -> None:
    """GNU cpio (no code shared with ours) extracts a payload with a symbolic link, a file and
    a directory: each entry's header before its data, the link's target as its data."""
    root = tmp_path / "root"
    (root / "opt/orbit/bin").mkdir(parents=True)
    (root / "opt/orbit/bin/orbit").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    (root / "opt/orbit/link").symlink_to("bin/orbit")
    write_cpio_gz(root, tmp_path / "Payload", mtime=0)
    out = tmp_path / "out"
    out.mkdir()
    raw = gzip.decompress((tmp_path / "Payload").read_bytes())
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=raw,
        cwd=out,
        check=True,
        capture_output=True,
    )
    found = next(out.rglob("link"))
    assert found.is_symlink() and str(found.readlink()) == "bin/orbit"
    orbit = next(out.rglob("orbit/bin/orbit"))
    assert orbit.read_bytes() == (root / "opt/orbit/bin/orbit").read_bytes()
