"""Issue 15, part 3: the pkg reader (packager/installers/macos.py) on pkgs built by our command
line (plain, signed, per arch), on one laid out as fleetctl builds it (its xar TOC, GNU cpio's
payload, its plist template), on xar archives bsdtar writes with each compression, and on
damaged and hostile files. Extracted files are compared with what bsdtar and cpio extract."""

from __future__ import annotations

import gzip
import hashlib
import json
import plistlib
import struct
import subprocess
import tracemalloc
import zlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from packager.formats.pkg import launch_daemon
from packager.installers import read_installer
from packager.installers.macos import read_pkg
from packager.installers.model import InstallerContents, InstallerFormatError
from packager.options import BuildRequest
from tests.helpers import build_installer, cli

SECRET = 'pkg-inspect-canary-7d3 "q" <&> $x ü'
SDE = "1700000000"
FLAGS = ("--fleet-desktop", "--enable-scripts", "--debug", "--orbit-channel", "1.40",
         "--osqueryd-channel", "5.13", "--desktop-channel", "1.40", "--host-identifier",
         "instance", "--disable-keystore", "--osquery-db", "/var/db/Osquery DB",
         "--update-interval", "30m")  # fmt: skip
PLIST = "Library/LaunchDaemons/com.fleetdm.orbit.plist"


def expected_settings(update_url: str, **options: object) -> dict[str, str]:
    """What pkg.py puts in the LaunchDaemon's EnvironmentVariables for these options."""
    defaults: dict[str, object] = {
        "fleet_url": "https://fleet.example.com",
        "enroll_secret": SECRET,
        "fleet_desktop": True,
        "enable_scripts": True,
        "debug": True,
        "orbit_channel": "1.40",
        "osqueryd_channel": "5.13",
        "desktop_channel": "1.40",
        "host_identifier": "instance",
        "disable_keystore": True,
        "osquery_db": "/var/db/Osquery DB",
        "update_interval": timedelta(minutes=30),
    }
    defaults.update(options)
    req = BuildRequest(type="pkg", update_url=update_url, **defaults)  # type: ignore[arg-type]
    env = launch_daemon(req)["EnvironmentVariables"]
    assert isinstance(env, dict)
    return dict(env)


def read(path: Path, workdir: Path) -> InstallerContents:
    workdir.mkdir(exist_ok=True)
    contents = read_pkg(path, workdir)
    assert SECRET not in repr(contents)
    return contents


def file_bytes(contents: InstallerContents) -> dict[str, bytes]:
    return {rel: path.read_bytes() for rel, path in contents.files.items()}


def reference_tree(pkg: Path, out: Path) -> Path:
    """bsdtar extracts the xar (verifying its checksums), gzip and GNU cpio the Payload."""
    out.mkdir()
    subprocess.run(["bsdtar", "-xf", str(pkg), "-C", str(out)], check=True)
    payload = out / "payload"
    payload.mkdir()
    data = gzip.decompress((out / "base.pkg/Payload").read_bytes())
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=data,
                   cwd=payload, check=True)  # fmt: skip
    return payload


def reference_files(payload: Path) -> dict[str, bytes]:
    """Regular files of the Orbit root as cpio extracted them, secret.txt aside."""
    root = payload / "opt/orbit"
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(root).as_posix() != "secret.txt"
    }


def refused(path: Path, workdir: Path, *words: str) -> str:
    workdir.mkdir(exist_ok=True)
    with pytest.raises(InstallerFormatError) as info:
        read_pkg(path, workdir)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert SECRET not in message
    for word in words:
        assert word in message, message
    return message


# -- pkgs built by our command line ------------------------------------------------------------


@pytest.fixture(scope="module")
def built(served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from apple_platform import certificates

    out = tmp_path_factory.mktemp("pkgs")
    repo, server = served
    cert = certificates.generate_self_signed("Orbit Test", profile="developer-id-installer")
    pem = cert.write_pem_bundle(out / "signer.pem")
    pkgs = {
        "ours": build_installer(served, "pkg", out / "ours.pkg", *FLAGS, secret=SECRET, sde=SDE),
        "signed": build_installer(served, "pkg", out / "signed.pkg", *FLAGS, "--sign-pem", pem,
                                  secret=SECRET, sde=SDE),
    }  # fmt: skip
    bare = out / "bare.pkg"
    cli("package", "--type", "pkg", "--update-url", server.url, "--update-roots",
        repo / "repository/root.json", "--no-cache", "--outfile", bare,
        env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
    pkgs["bare"] = bare
    return pkgs


@pytest.fixture(scope="module")
def reference(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_tree(built["ours"], tmp_path_factory.mktemp("ref") / "x")


def test_metadata(built: dict[str, Path], tmp_path: Path) -> None:
    c = read(built["ours"], tmp_path / "w")
    assert (c.type, c.name, c.version, c.arch) == (
        "pkg",
        "com.fleetdm.orbit",
        "1.40.0",
        "universal",
    )
    assert c.notes == []
    assert read_installer(built["ours"], tmp_path / "w2").settings == c.settings  # dispatch


@pytest.mark.parametrize(("arch", "expected"), [("arm64", "arm64"), ("amd64", "amd64")])
def test_arch_from_host_architectures(served, tmp_path: Path, arch: str, expected: str) -> None:
    pkg = build_installer(served, "pkg", tmp_path / "a.pkg", "--arch", arch, "--identifier",
                          "com.example.agent", secret=SECRET, sde=SDE)  # fmt: skip
    c = read(pkg, tmp_path / "w")
    assert (c.arch, c.name) == (expected, "com.example.agent")


def test_settings_are_the_launch_daemons_environment(served, built: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    c = read(built["ours"], tmp_path / "w")
    expected = expected_settings(served[1].url)
    assert (
        expected["ORBIT_ORBIT_CHANNEL"] == "1.40" and expected["ORBIT_DISABLE_KEYSTORE"] == "true"
    )
    assert c.settings == expected
    assert list(c.settings) == list(expected)  # the plist's order


def test_enroll_secret_reported_never_its_value(built: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "w"
    c = read(built["ours"], work)
    assert c.enroll_secret is True
    assert c.settings["ORBIT_ENROLL_SECRET_PATH"] == "/opt/orbit/secret.txt"
    assert "ORBIT_ENROLL_SECRET" not in c.settings
    assert "secret.txt" not in c.files
    assert SECRET not in repr(c) and SECRET not in repr(c.files) and SECRET not in str(c.notes)
    for p in work.rglob("*"):  # written nowhere in the work directory
        assert "secret" not in p.name
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_without_fleet_url_no_secret(served, built: dict[str, Path], tmp_path: Path) -> None:
    c = read(built["bare"], tmp_path / "w")
    assert c.enroll_secret is False
    assert c.settings == expected_settings(
        served[1].url, fleet_url="", enroll_secret="", fleet_desktop=False, enable_scripts=False,
        debug=False, orbit_channel="stable", osqueryd_channel="stable", desktop_channel="stable",
        host_identifier="uuid", disable_keystore=False, osquery_db="",
        update_interval=timedelta(minutes=15),
    )  # fmt: skip
    assert "ORBIT_ENROLL_SECRET_PATH" not in c.settings and "ORBIT_FLEET_URL" not in c.settings


def test_files_identical_to_bsdtar_and_cpio(built: dict[str, Path], reference: Path,
                                           tmp_path: Path) -> None:  # fmt: skip
    c = read(built["ours"], tmp_path / "w")
    expected = reference_files(reference)
    assert "bin/orbit/macos/1.40/orbit" in expected and "tuf-metadata.json" in expected
    assert (reference / "opt/orbit/secret.txt").read_bytes() == SECRET.encode()
    assert file_bytes(c) == expected
    for rel, path in c.files.items():  # inside the work directory, under the same name
        assert path == tmp_path / "w" / "root" / rel


def test_signed_pkg_reads_like_the_unsigned_one(built: dict[str, Path], tmp_path: Path) -> None:
    signed, plain = read(built["signed"], tmp_path / "s"), read(built["ours"], tmp_path / "p")
    data = built["signed"].read_bytes()
    header = struct.unpack(">4sHHQQI", data[:28])
    assert b"<signature" in zlib.decompress(data[28 : 28 + header[3]])
    assert (signed.name, signed.version, signed.arch, signed.settings, signed.enroll_secret) == (
        plain.name, plain.version, plain.arch, plain.settings, plain.enroll_secret)  # fmt: skip
    assert file_bytes(signed) == file_bytes(plain)
    assert any("signed" in n for n in signed.notes) and plain.notes == []


def test_inspect_command_on_a_pkg(built: dict[str, Path]) -> None:
    out = cli("inspect", built["ours"], "--json", check=False)
    assert SECRET not in out.stdout + out.stderr and "Traceback" not in out.stderr
    report = json.loads(out.stdout)
    assert (report["type"], report["name"], report["enroll_secret_embedded"]) == (
        "pkg", "com.fleetdm.orbit", True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("compression", ["none", "gzip", "bzip2", "lzma", "xz"])
def test_xar_written_by_bsdtar(built: dict[str, Path], reference: Path, tmp_path: Path,
                               compression: str) -> None:  # fmt: skip
    """libarchive's xar writer: another TOC layout and each member encoding xar knows."""
    flat = reference.parent
    pkg = tmp_path / "bsdtar.pkg"
    subprocess.run(["bsdtar", "--format", "xar", "--options", f"xar:compression={compression}",
                    "-cf", str(pkg), "-C", str(flat), "Distribution", "base.pkg"], check=True)  # fmt: skip
    c = read(pkg, tmp_path / "w")
    assert (c.name, c.version, c.enroll_secret) == ("com.fleetdm.orbit", "1.40.0", True)
    assert file_bytes(c) == reference_files(reference)


# -- fleetctl's layout ------------------------------------------------------------------------

FLEET_PACKAGE_INFO = """<pkg-info format-version="2" identifier="com.fleetdm.orbit.base.pkg" version="{version}" install-location="/" auth="root">
  <payload/>
  <scripts>
    <postinstall file="./postinstall"/>
  </scripts>
  <bundle-version>
  </bundle-version>
</pkg-info>
"""
FLEET_DISTRIBUTION = """<?xml version="1.0" encoding="utf-8"?>
<installer-gui-script minSpecVersion="2">
\t<title>Fleet osquery</title>
\t<choices-outline>
\t    <line choice="choiceBase"/>
    </choices-outline>
    <choice id="choiceBase" title="Fleet osquery" enabled="false" selected="true" description="Standard installation for Fleet osquery.">
        <pkg-ref id="com.fleetdm.orbit.base.pkg"/>
    </choice>
    \n    <pkg-ref id="com.fleetdm.orbit.base.pkg" version="{version}" auth="root">#base.pkg</pkg-ref>
    \n    <pkg-ref id="com.fleetdm.orbit.base.pkg">
      <bundle-version>
        <bundle id="com.fleetdm.orbit" path="" />
      </bundle-version>
    </pkg-ref>
\t<options customize="never" hostArchitectures="{arches}" require-scripts="false" allow-external-scripts="false" />
</installer-gui-script>
"""


def fleet_plist(env: dict[str, str]) -> bytes:
    """fleetctl's launchd template (text/template, values not escaped), rendered."""
    pairs = "".join(f"\n\t\t<key>{k}</key>\n\t\t<string>{v}</string>" for k, v in env.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>EnvironmentVariables</key>
\t<dict>{pairs}
\t</dict>
\t<key>KeepAlive</key>
\t<true/>
\t<key>Label</key>
\t<string>com.fleetdm.orbit</string>
\t<key>ProgramArguments</key>
\t<array>
\t\t<string>/opt/orbit/bin/orbit/orbit</string>
\t</array>
\t<key>RunAtLoad</key>
\t<true/>
\t<key>StandardErrorPath</key>
\t<string>/var/log/orbit/orbit.stderr.log</string>
\t<key>StandardOutPath</key>
\t<string>/var/log/orbit/orbit.stdout.log</string>
\t<key>ThrottleInterval</key>
\t<integer>10</integer>
</dict>
</plist>
""".encode()


def fleet_xar(
    entries: Mapping[str, bytes | None],
    *,
    fields: dict[str, dict[str, str]] | None = None,
    edit: Callable[[str], str] | None = None,
) -> bytes:
    """A xar archive as fleetctl's pure-Go writer lays it out (xar.go): 28-byte header, zlib
    TOC with <checksum> size before offset, no creation-time, <data> children in its order,
    heap = SHA-1 of the compressed TOC then the files depth-first, names sorted. ``entries``
    maps archive paths to bytes (None: a directory); ``fields`` overrides <data> values per
    path, ``edit`` rewrites the TOC text (hostile variants)."""
    tree: dict[str, object] = {}
    for path, data in entries.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node.setdefault(leaf, {} if data is None else data)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<xar>", " <toc>",
             '  <checksum style="sha1">', "   <size>20</size>", "   <offset>0</offset>",
             "  </checksum>"]  # fmt: skip
    heap = bytearray()
    next_id = 1

    def emit(node: dict[str, object], depth: int, prefix: str) -> None:
        nonlocal next_id
        for name in sorted(node):
            value, ind, path = node[name], " " * depth, prefix + name
            lines.append(f'{ind}<file id="{next_id}">')
            next_id += 1
            lines.append(f"{ind} <name>{name}</name>")
            is_dir = isinstance(value, dict)
            lines.append(f"{ind} <type>{'directory' if is_dir else 'file'}</type>")
            lines.extend([f"{ind} <mode>0{0o755 if is_dir else 0o644:o}</mode>",
                         f"{ind} <uid>0</uid>", f"{ind} <gid>80</gid>"])  # fmt: skip
            if isinstance(value, dict):
                emit(value, depth + 1, path + "/")
            else:
                assert isinstance(value, bytes)
                digest = hashlib.sha1(value).hexdigest()  # noqa: S324 - xar's format
                data = {"size": str(len(value)), "offset": str(20 + len(heap)),
                        "length": str(len(value)), "style": "application/octet-stream"}  # fmt: skip
                data.update((fields or {}).get(path, {}))
                lines.extend(
                    [
                        f"{ind} <data>",
                        f'{ind}  <archived-checksum style="sha1">{digest}</archived-checksum>',
                        f'{ind}  <extracted-checksum style="sha1">{digest}</extracted-checksum>',
                        f"{ind}  <size>{data['size']}</size>",
                        f"{ind}  <offset>{data['offset']}</offset>",
                        f'{ind}  <encoding style="{data["style"]}"/>',
                        f"{ind}  <length>{data['length']}</length>",
                        f"{ind} </data>",
                    ]
                )
                heap.extend(value)
            lines.append(f"{ind}</file>")

    emit(tree, 2, "")
    lines.extend([" </toc>", "</xar>", ""])
    text = "\n".join(lines)
    toc = (edit(text) if edit else text).encode()
    compressed = zlib.compress(toc)
    header = struct.pack(">4sHHQQI", b"xar!", 28, 1, len(compressed), len(toc), 1)
    return header + compressed + hashlib.sha1(compressed).digest() + bytes(heap)  # noqa: S324


def gnu_cpio_gz(tree: Path) -> bytes:
    """fleetctl's Payload: `find . | cpio -o --format odc -R 0:80 | gzip -c` in the tree."""
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "--format", "odc", "-R", "0:80", "--quiet"],
                             input=names, cwd=tree, capture_output=True, check=True).stdout  # fmt: skip
    return gzip.compress(archive)


def fleet_pkg(out: Path, payload: bytes, *, version: str = "1.40.0",
              arches: str = "arm64,x86_64") -> Path:  # fmt: skip
    out.write_bytes(fleet_xar({
        "Distribution": FLEET_DISTRIBUTION.format(version=version, arches=arches).encode(),
        "base.pkg": None,
        "base.pkg/Bom": b"BOMStore" + bytes(24),  # not read
        "base.pkg/PackageInfo": FLEET_PACKAGE_INFO.format(version=version).encode(),
        "base.pkg/Payload": payload,
        "base.pkg/Scripts": gzip.compress(odc("./postinstall", b"#!/bin/bash\n") + TRAILER),
    }))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def fleet_tree(served, reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our payload with fleetctl's additions: its plist, updates-metadata.json (orbit <= 1.37)
    and an empty osquery.flags (fleetctl before #50720)."""
    tree = tmp_path_factory.mktemp("fleet") / "root"
    subprocess.run(["cp", "-a", str(reference), str(tree)], check=True)
    env = expected_settings(served[1].url)
    (tree / PLIST).write_bytes(fleet_plist(env))
    orbit = tree / "opt/orbit"
    (orbit / "updates-metadata.json").write_bytes((orbit / "tuf-metadata.json").read_bytes())
    (orbit / "osquery.flags").write_bytes(b"")
    return tree


def test_fleetctl_layout(served, fleet_tree: Path, tmp_path: Path) -> None:
    pkg = fleet_pkg(tmp_path / "fleet-osquery.pkg", gnu_cpio_gz(fleet_tree))
    listing = subprocess.run(["bsdtar", "-tf", str(pkg)], capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    assert listing == [
        "Distribution",
        "base.pkg",
        "base.pkg/Bom",
        "base.pkg/PackageInfo",
        "base.pkg/Payload",
        "base.pkg/Scripts",
    ]  # a valid xar for bsdtar too
    c = read(pkg, tmp_path / "w")
    assert (c.type, c.name, c.version, c.arch) == (
        "pkg",
        "com.fleetdm.orbit",
        "1.40.0",
        "universal",
    )
    assert c.settings == expected_settings(served[1].url)
    assert c.enroll_secret is True and "secret.txt" not in c.files
    expected = reference_files(reference_tree(pkg, tmp_path / "ref"))
    assert {"updates-metadata.json", "osquery.flags"} <= set(expected)
    assert file_bytes(c) == expected


def test_fleetctl_plist_with_the_secret_inline(fleet_tree: Path, tmp_path: Path) -> None:
    """A plist carrying ORBIT_ENROLL_SECRET itself (no secret.txt): reported, value dropped."""
    tree = tmp_path / "root"
    subprocess.run(["cp", "-a", str(fleet_tree), str(tree)], check=True)
    (tree / "opt/orbit/secret.txt").unlink()
    env = {"ORBIT_FLEET_URL": "https://fleet.example.com", "ORBIT_ENROLL_SECRET": SECRET}
    (tree / PLIST).write_bytes(plistlib.dumps({"EnvironmentVariables": env}))
    c = read(fleet_pkg(tmp_path / "x.pkg", gnu_cpio_gz(tree)), tmp_path / "w")
    assert c.enroll_secret is True
    assert c.settings == {"ORBIT_FLEET_URL": "https://fleet.example.com"}
    (tree / PLIST).write_bytes(plistlib.dumps({"EnvironmentVariables": {"ORBIT_DEBUG": "true"}}))
    c = read(fleet_pkg(tmp_path / "y.pkg", gnu_cpio_gz(tree)), tmp_path / "w2")
    assert c.enroll_secret is False and c.settings == {"ORBIT_DEBUG": "true"}


@pytest.mark.parametrize(("arches", "expected"),
                         [("arm64", "arm64"), ("x86_64", "amd64"), ("x86_64, arm64", "universal")])  # fmt: skip
def test_arch_of_a_fleetctl_distribution(tmp_path: Path, arches: str, expected: str) -> None:
    c = read(fleet_pkg(tmp_path / "x.pkg", payload(), arches=arches), tmp_path / "w")
    assert c.arch == expected


# -- crafted payloads ---------------------------------------------------------------------------


def odc(
    name: str | bytes, data: bytes = b"", mode: int = 0o100644, size: int | None = None
) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    length = len(data) if size is None else size
    return (b"070707" + b"%06o" % 0 + b"%06o" % 1 + b"%06o" % mode + b"%06o" % 0 + b"%06o" % 80
            + b"%06o" % 1 + b"%06o" % 0 + b"%011o" % 0 + b"%06o" % (len(raw) + 1)
            + b"%011o" % length + raw + b"\0" + data)  # fmt: skip


TRAILER = odc("TRAILER!!!", mode=0)
BASE = (odc(".", mode=0o40755) + odc("./opt", mode=0o40755) + odc("./opt/orbit", mode=0o40755)
        + odc(f"./{PLIST}", plistlib.dumps({"EnvironmentVariables": {"ORBIT_DEBUG": "true"}}))
        + odc("./opt/orbit/secret.txt", SECRET.encode(), 0o100600)
        + odc("./opt/orbit/certs.pem", b"pem\n"))  # fmt: skip


def payload(*entries: bytes) -> bytes:
    return gzip.compress(BASE + b"".join(entries) + TRAILER)


def test_crafted_payload_symlink_noted_and_skipped(tmp_path: Path) -> None:
    pkg = fleet_pkg(tmp_path / "x.pkg", payload(
        odc("./opt/orbit/bin", mode=0o40755), odc("./opt/orbit/bin/orbit", mode=0o40755),
        odc("./opt/orbit/bin/orbit/orbit", b"/opt/orbit/bin/orbit/macos/stable/orbit", 0o120755),
        odc("./usr/local/bin/orbit", b"/opt/orbit/bin/orbit/orbit", 0o120755),
        odc("./opt/orbit/fifo", mode=0o10644),
    ))  # fmt: skip
    c = read(pkg, tmp_path / "w")
    assert set(c.files) == {"certs.pem"} and c.enroll_secret is True
    assert c.settings == {"ORBIT_DEBUG": "true"}
    assert any("bin/orbit/orbit is a symbolic link" in n for n in c.notes), c.notes
    assert any("fifo is not a regular file" in n for n in c.notes), c.notes
    assert not any("usr/local" in n for n in c.notes)


def test_no_launch_daemon(tmp_path: Path) -> None:
    raw = odc(".", mode=0o40755) + odc("./opt/orbit/certs.pem", b"x") + TRAILER
    c = read(fleet_pkg(tmp_path / "x.pkg", gzip.compress(raw)), tmp_path / "w")
    assert (c.settings, c.enroll_secret) == ({}, False)
    assert any("no /Library/LaunchDaemons/com.fleetdm.orbit.plist" in n for n in c.notes)


def test_uncompressed_payload(tmp_path: Path) -> None:
    c = read(fleet_pkg(tmp_path / "x.pkg", BASE + TRAILER), tmp_path / "w")
    assert (set(c.files), c.enroll_secret, c.settings) == (
        {"certs.pem"},
        True,
        {"ORBIT_DEBUG": "true"},
    )


def launch_daemon_entry(env: dict[str, object]) -> bytes:
    return odc(f"./{PLIST}", plistlib.dumps({"EnvironmentVariables": env}))


def test_secret_path_elsewhere(tmp_path: Path) -> None:
    """ORBIT_ENROLL_SECRET_PATH naming another file of the Orbit root: that file is the secret
    (taken back out of ``files``); naming a file the pkg lacks: noted, no secret."""
    raw = (launch_daemon_entry({"ORBIT_ENROLL_SECRET_PATH": "/opt/orbit/enroll.key"})
           + odc("./opt/orbit/enroll.key", SECRET.encode(), 0o100600)
           + odc("./opt/orbit/certs.pem", b"pem") + TRAILER)  # fmt: skip
    c = read(fleet_pkg(tmp_path / "x.pkg", gzip.compress(raw)), tmp_path / "w")
    assert c.enroll_secret is True and set(c.files) == {"certs.pem"}
    assert not (tmp_path / "w/root/enroll.key").exists()
    raw = launch_daemon_entry({"ORBIT_ENROLL_SECRET_PATH": "/opt/orbit/secret.txt"}) + TRAILER
    c = read(fleet_pkg(tmp_path / "y.pkg", gzip.compress(raw)), tmp_path / "w2")
    assert c.enroll_secret is False
    assert any("ORBIT_ENROLL_SECRET_PATH names /opt/orbit/secret.txt" in n for n in c.notes)
    # named by ORBIT_ENROLL_SECRET_PATH but empty: no secret
    raw = (launch_daemon_entry({"ORBIT_ENROLL_SECRET_PATH": "/opt/orbit/secret.txt"})
           + odc("./opt/orbit/secret.txt", b"", 0o100600) + TRAILER)  # fmt: skip
    c = read(fleet_pkg(tmp_path / "z.pkg", gzip.compress(raw)), tmp_path / "w3")
    assert c.enroll_secret is False


def test_malformed_environment(tmp_path: Path) -> None:
    cases = [
        (launch_daemon_entry({"ORBIT_DEBUG": 1}), "'ORBIT_DEBUG' is not a string"),
        (odc(f"./{PLIST}", plistlib.dumps({"EnvironmentVariables": ["x"]})), "not a dictionary"),
        (odc(f"./{PLIST}", b"<plist><dict><key>x</key>"), "not a readable plist"),
    ]
    for i, (entry, words) in enumerate(cases):
        pkg = fleet_pkg(tmp_path / f"x{i}.pkg", gzip.compress(entry + TRAILER))
        refused(pkg, tmp_path / f"w{i}", words)
    # the secret's value is never described, whatever its type
    c = read(fleet_pkg(tmp_path / "s.pkg", gzip.compress(
        launch_daemon_entry({"ORBIT_ENROLL_SECRET": [SECRET]}) + TRAILER)), tmp_path / "ws")  # fmt: skip
    assert c.enroll_secret is True and c.settings == {}


def test_memory_does_not_grow_with_the_payload(tmp_path: Path) -> None:
    """The peak of a 4 MiB and of a 48 MiB file are the same (a few 1 MiB chunks in flight)."""
    peaks = []
    for mib in (4, 48):
        big = bytes(range(256)) * (4096 * mib)  # compressible: a small pkg, a long stream
        pkg = fleet_pkg(tmp_path / f"{mib}.pkg", payload(odc("./opt/orbit/big", big)))
        del big
        tracemalloc.start()
        try:
            c = read(pkg, tmp_path / f"w{mib}")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert c.files["big"].stat().st_size == mib << 20
    assert peaks[1] < 24 << 20 and peaks[1] - peaks[0] < 4 << 20, peaks


# -- damaged and hostile files ------------------------------------------------------------------


def test_bad_magic_and_truncated_toc(built: dict[str, Path], tmp_path: Path) -> None:
    data = built["ours"].read_bytes()
    (tmp_path / "magic.pkg").write_bytes(b"xaR!" + data[4:])
    refused(tmp_path / "magic.pkg", tmp_path / "w1", "no xar header")
    (tmp_path / "toc.pkg").write_bytes(data[:100])
    refused(tmp_path / "toc.pkg", tmp_path / "w2", "TOC is truncated")
    (tmp_path / "short.pkg").write_bytes(data[:10])
    refused(tmp_path / "short.pkg", tmp_path / "w3", "no xar header")


def test_truncated_heap(built: dict[str, Path], tmp_path: Path) -> None:
    data = built["ours"].read_bytes()
    (tmp_path / "x.pkg").write_bytes(data[: len(data) - 5000])  # inside the Payload
    refused(tmp_path / "x.pkg", tmp_path / "w", "lies outside the file")


def test_damaged_bytes(built: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(built["ours"].read_bytes())
    toc_length = struct.unpack(">Q", data[8:16])[0]
    stored = bytearray(data)
    stored[28 + toc_length] ^= 1  # the heap's copy of the TOC digest
    (tmp_path / "toc.pkg").write_bytes(stored)
    refused(tmp_path / "toc.pkg", tmp_path / "w1", "TOC does not match its checksum")
    distribution = bytearray(data)
    distribution[28 + toc_length + 20 + 10] ^= 1  # the first member, stored as is
    (tmp_path / "distribution.pkg").write_bytes(distribution)
    refused(tmp_path / "distribution.pkg", tmp_path / "w2", "Distribution does not match its TOC")
    compressed = bytearray(data)
    compressed[-2000] ^= 1  # deflate data of the Payload: gzip, cpio or the checksum objects
    (tmp_path / "payload.pkg").write_bytes(compressed)
    refused(tmp_path / "payload.pkg", tmp_path / "w3")


def test_member_outside_the_file(tmp_path: Path) -> None:
    for i, (field, value) in enumerate([("offset", "99999999"), ("length", "99999999"),
                                        ("offset", "-1"), ("offset", "1e3")]):  # fmt: skip
        pkg = tmp_path / f"x{i}.pkg"
        pkg.write_bytes(fleet_xar({"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(),
                                   "base.pkg/Payload": payload()},
                                  fields={"base.pkg/Payload": {field: value}}))  # fmt: skip
        refused(pkg, tmp_path / f"w{i}", "base.pkg/Payload")


def test_member_larger_or_smaller_than_its_toc_size(tmp_path: Path) -> None:
    for i, size in enumerate(["10", "99999999"]):
        pkg = tmp_path / f"x{i}.pkg"
        pkg.write_bytes(fleet_xar({"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(),
                                   "base.pkg/Payload": payload()},
                                  fields={"base.pkg/PackageInfo": {"size": size}}))  # fmt: skip
        refused(pkg, tmp_path / f"w{i}", "PackageInfo is")


def test_unsupported_encoding(tmp_path: Path) -> None:
    pkg = tmp_path / "x.pkg"
    pkg.write_bytes(fleet_xar({"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(),
                               "base.pkg/Payload": payload()},
                              fields={"base.pkg/Payload": {"style": "application/x-zstd"}}))  # fmt: skip
    refused(pkg, tmp_path / "w", "application/x-zstd", "does not support")


LAUGHS = ('<!DOCTYPE xar [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>\n<xar>')  # fmt: skip


def test_xml_entities_refused(tmp_path: Path) -> None:
    base = {"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(), "base.pkg/Payload": payload()}
    (tmp_path / "toc.pkg").write_bytes(fleet_xar(base, edit=lambda t: t.replace(
        "<xar>", LAUGHS, 1).replace("<name>Payload</name>", "<name>Pay&c;load</name>")))  # fmt: skip
    refused(tmp_path / "toc.pkg", tmp_path / "w1", "TOC declares a DTD or entities")
    external = '<!DOCTYPE xar [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<xar>'
    (tmp_path / "ext.pkg").write_bytes(
        fleet_xar(base, edit=lambda t: t.replace("<xar>", external, 1))
    )
    refused(tmp_path / "ext.pkg", tmp_path / "w2", "declares a DTD or entities")
    info = (
        '<?xml version="1.0"?>\n<!DOCTYPE pkg-info [<!ENTITY a "aaaa"><!ENTITY c "&a;&a;">]>'
        '\n<pkg-info identifier="&c;" version="1"/>'
    )
    (tmp_path / "info.pkg").write_bytes(fleet_xar({**base, "base.pkg/PackageInfo": info.encode()}))
    refused(tmp_path / "info.pkg", tmp_path / "w3", "PackageInfo declares a DTD")
    (tmp_path / "undefined.pkg").write_bytes(fleet_xar(
        base, edit=lambda t: t.replace("<name>Payload</name>", "<name>&c;</name>")))  # fmt: skip
    refused(tmp_path / "undefined.pkg", tmp_path / "w4", "not well-formed XML")


def test_plist_entities_refused(tmp_path: Path) -> None:
    laughs = fleet_plist({"ORBIT_DEBUG": "&c;"}).replace(
        b'"http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
        b'"http://www.apple.com/DTDs/PropertyList-1.0.dtd" [<!ENTITY a "aaaa">'
        b'<!ENTITY c "&a;&a;&a;&a;">]>',
    )
    raw = odc(".", mode=0o40755) + odc(f"./{PLIST}", laughs) + TRAILER
    refused(fleet_pkg(tmp_path / "x.pkg", gzip.compress(raw)), tmp_path / "w", "plist")


@pytest.mark.parametrize("name", ["./opt/orbit/../../../tmp/evil", "/opt/orbit/abs",
                                  "./opt/orbit/bin/../x", "opt/orbit//x", "./opt/./orbit/x",
                                  "../opt/orbit/x", "./etc/../opt/orbit/x"])  # fmt: skip
def test_traversal_names_in_the_payload(tmp_path: Path, name: str) -> None:
    pkg = fleet_pkg(tmp_path / "x.pkg", payload(odc(name, b"evil")))
    refused(pkg, tmp_path / "w", "unsafe member name")
    assert [p.name for p in (tmp_path / "w").rglob("*") if p.name in ("evil", "x", "abs")] == []


def test_file_twice(tmp_path: Path) -> None:
    pkg = fleet_pkg(tmp_path / "x.pkg", payload(odc("./opt/orbit/certs.pem", b"again")))
    refused(pkg, tmp_path / "w1", "certs.pem appears twice")
    pkg = fleet_pkg(tmp_path / "y.pkg", payload(odc("./opt/orbit/secret.txt", b"again")))
    refused(pkg, tmp_path / "w2", "secret.txt appears twice")
    toc = fleet_xar({"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(),
                     "base.pkg/Payload": payload()},
                    edit=lambda t: t.replace("<name>PackageInfo</name>", "<name>Payload</name>"))  # fmt: skip
    (tmp_path / "toc.pkg").write_bytes(toc)
    refused(tmp_path / "toc.pkg", tmp_path / "w3", "appears twice in the TOC")


def test_gzip_bomb_by_declared_size(tmp_path: Path) -> None:
    """A header declaring 4 GiB of zeros: refused before any of it is written."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = zeros.compress(odc(".", mode=0o40755) + odc("./opt/orbit/z", size=4 << 30))
    body += b"".join(zeros.compress(bytes(1 << 20)) for _ in range(8)) + zeros.flush()
    refused(fleet_pkg(tmp_path / "x.pkg", body), tmp_path / "w", "expands beyond")
    assert not (tmp_path / "w/root/z").exists()


def test_gzip_bomb_after_the_trailer(tmp_path: Path) -> None:
    """Declared sizes are small but zeros follow the trailer: every decompressed byte counts."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = zeros.compress(BASE + TRAILER)
    body += b"".join(zeros.compress(bytes(1 << 20)) for _ in range(80)) + zeros.flush()
    refused(fleet_pkg(tmp_path / "x.pkg", body), tmp_path / "w", "expands beyond")


def test_broken_payloads(tmp_path: Path) -> None:
    cases: list[tuple[bytes, str]] = [
        (gzip.compress(BASE), "ends before its cpio trailer"),
        (gzip.compress(BASE + b"070701" + bytes(100)), "not odc"),
        (gzip.compress(BASE + b"070707" + b"x" * 70 + TRAILER), "bad cpio header"),
        (gzip.compress(odc("./opt/orbit/a", b"abc", size=10)), "a is truncated in the Payload"),
        (gzip.compress(BASE + TRAILER)[:-30], ""),  # gzip's or cpio's end, whichever first
        (b"pbzx" + bytes(40), "pbzx"),
        (b"junk" * 10, "not a gzip'd cpio"),
        (gzip.compress(odc(b"./opt/orbit/\xff", b"x") + TRAILER), "not UTF-8"),
    ]
    for i, (body, words) in enumerate(cases):
        refused(fleet_pkg(tmp_path / f"x{i}.pkg", body), tmp_path / f"w{i}", words)


def test_not_an_installer_package(tmp_path: Path) -> None:
    (tmp_path / "a.pkg").write_bytes(fleet_xar({"Distribution": b"<x/>", "notes.txt": b"hi"}))
    refused(tmp_path / "a.pkg", tmp_path / "w1", "has no PackageInfo")
    (tmp_path / "b.pkg").write_bytes(
        fleet_xar({"base.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode()})
    )
    refused(tmp_path / "b.pkg", tmp_path / "w2", "has no base.pkg/Payload")
    (tmp_path / "c.pkg").write_bytes(fleet_xar({
        "a.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(), "a.pkg/Payload": payload(),
        "b.pkg/PackageInfo": FLEET_PACKAGE_INFO.encode(), "b.pkg/Payload": payload()}))  # fmt: skip
    refused(tmp_path / "c.pkg", tmp_path / "w3", "2 component packages")
    (tmp_path / "d.pkg").write_bytes(fleet_xar({"../PackageInfo": b"<pkg-info/>"}))
    refused(tmp_path / "d.pkg", tmp_path / "w4", "unsafe name")
