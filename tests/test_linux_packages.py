"""Issue 4: deb and rpm installers, built by the real CLI from the demo repository served on
127.0.0.1, inspected with dpkg-deb, dpkg, rpm, lintian and rpmlint; Arch packages (issue 15) with
bsdtar and installed into a root by pacman."""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import FaultServer, cli
from tests.systemd_env import parse_env_file

# Every character systemd or a shell might trip on, plus unicode.
CANARY = "canary-7f3a \"q\" 's' $HOME `id` \\ # ; = ünï"
SDE = "1700000000"
ORBIT = "/opt/orbit"


def package_args(served: tuple[Path, FaultServer], *extra: str | Path) -> list[str | Path]:
    repo, server = served
    return [
        "package", "--update-url", server.url, "--update-roots", repo / "repository/root.json",
        "--fleet-url", "https://fleet.example.com:8080", "--enroll-secret", CANARY,
        "--no-cache", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import certifi

    path = tmp_path_factory.mktemp("pem") / "fleet.pem"
    path.write_bytes(
        Path(certifi.where()).read_bytes()[:4000].rsplit(b"-----END", 1)[0]
        + b"-----END CERTIFICATE-----\n"
    )
    return path


@pytest.fixture(scope="module")
def built(served, pem, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("out")
    result = {}
    for kind in ("deb", "rpm", "pkg.tar.zst"):
        target = out / f"x.{kind}"
        cli(*package_args(served, "--type", kind, "--fleet-desktop", "--enable-scripts",
                          "--host-identifier", "instance", "--fleet-certificate", pem,
                          "--end-user-email", "it@example.com", "--outfile", target),
            env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
        result[kind] = target
    return result


EXPECTED_ENV = {
    "ORBIT_UPDATE_URL": None,  # the test server's URL
    "ORBIT_ORBIT_CHANNEL": "stable",
    "ORBIT_OSQUERYD_CHANNEL": "stable",
    "ORBIT_UPDATE_INTERVAL": "15m0s",
    "ORBIT_FLEET_DESKTOP": "true",
    "ORBIT_DESKTOP_CHANNEL": "stable",
    "ORBIT_FLEET_URL": "https://fleet.example.com:8080",
    "ORBIT_FLEET_CERTIFICATE": "/opt/orbit/fleet.pem",
    "ORBIT_ENROLL_SECRET": CANARY,
    "ORBIT_ENABLE_SCRIPTS": "true",
    "ORBIT_HOST_IDENTIFIER": "instance",
    "ORBIT_END_USER_EMAIL": "it@example.com",
}

D, F, L = "d", "-", "l"
EXPECTED_TREE = [
    # (type, mode, path, link target)
    (F, 0o600, "/etc/default/orbit", None),
    (D, 0o755, "/opt/orbit", None),
    (D, 0o755, "/opt/orbit/bin", None),
    (D, 0o755, "/opt/orbit/bin/desktop", None),
    (D, 0o755, "/opt/orbit/bin/desktop/linux", None),
    (D, 0o755, "/opt/orbit/bin/desktop/linux/stable", None),
    (F, 0o755, "/opt/orbit/bin/desktop/linux/stable/desktop.tar.gz", None),
    (D, 0o755, "/opt/orbit/bin/desktop/linux/stable/fleet-desktop", None),
    (F, 0o755, "/opt/orbit/bin/desktop/linux/stable/fleet-desktop/fleet-desktop", None),
    (D, 0o755, "/opt/orbit/bin/orbit", None),
    (D, 0o755, "/opt/orbit/bin/orbit/linux", None),
    (D, 0o755, "/opt/orbit/bin/orbit/linux/stable", None),
    (F, 0o755, "/opt/orbit/bin/orbit/linux/stable/orbit", None),
    (L, 0o755, "/opt/orbit/bin/orbit/orbit", "/opt/orbit/bin/orbit/linux/stable/orbit"),
    (D, 0o755, "/opt/orbit/bin/osqueryd", None),
    (D, 0o755, "/opt/orbit/bin/osqueryd/linux", None),
    (D, 0o755, "/opt/orbit/bin/osqueryd/linux/stable", None),
    (F, 0o755, "/opt/orbit/bin/osqueryd/linux/stable/osqueryd", None),
    (F, 0o644, "/opt/orbit/certs.pem", None),
    (F, 0o644, "/opt/orbit/fleet.pem", None),
    (D, 0o755, "/opt/orbit/staging", None),
    (F, 0o600, "/opt/orbit/tuf-metadata.json", None),
    (F, 0o644, "/usr/lib/systemd/system/orbit.service", None),
    (L, 0o755, "/usr/local/bin/orbit", "/opt/orbit/bin/orbit/orbit"),
    (D, 0o755, "/var/log/orbit", None),
    (D, 0o755, "/var/log/osquery", None),
]
# Parent directories that belong to the system: neither package may list them, or dpkg/rpm would
# remove them with the package once empty (on a fresh Debian nothing else owns /opt or
# /usr/local/bin). The deb's preinst creates the missing ones. Installs prove it in
# tests/acceptance/.
SYSTEM_DIRS = {"/etc", "/etc/default", "/opt", "/usr", "/usr/lib", "/usr/lib/systemd",
                 "/usr/lib/systemd/system", "/usr/local", "/usr/local/bin", "/var", "/var/log"}  # fmt: skip


def _perm(mode_string: str) -> int:
    bits = 0
    for i, ch in enumerate(mode_string[1:10]):
        if ch != "-":
            bits |= 1 << (8 - i)
    return bits


def _run(*argv: str | Path) -> str:
    env = {**os.environ, "HOME": os.environ.get("TMPDIR", "/tmp")}
    return subprocess.run(
        list(map(str, argv)), check=True, capture_output=True, text=True, env=env
    ).stdout


def test_deb_metadata_and_listing(built: dict[str, Path]) -> None:
    info = _run("dpkg-deb", "-I", built["deb"])
    for line in ("Package: fleet-osquery", "Version: 1.40.0", "Architecture: amd64",
                 "Description: Fleet osquery -- runtime and autoupdater", "Maintainer: Fleet Device Management"):  # fmt: skip
        assert line in info
    assert (
        re.search(r"postinst\s", info)
        and re.search(r"prerm\s", info)
        and re.search(r"postrm\s", info)
    )
    listing = []
    for line in _run("dpkg-deb", "-c", built["deb"]).splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        assert owner == "root/root", line
        path, _, link = rest.partition(" -> ")
        path = "/" + path.removeprefix("./").rstrip("/")
        listing.append((mode[0], _perm(mode), path, link or None))
    assert sorted(listing, key=lambda e: e[2]) == EXPECTED_TREE
    assert not {e[2] for e in listing} & SYSTEM_DIRS
    preinst = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", built["deb"]], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(preinst)) as control:
        script = control.extractfile("./preinst")
        assert script is not None
        text = script.read().decode()
    assert (
        "for dir in /etc/default /opt /usr/lib/systemd/system /usr/local/bin /var/log; do" in text
    )


def test_rpm_metadata_listing_and_scripts(built: dict[str, Path]) -> None:
    info = _run("rpm", "-qip", built["rpm"])
    for field, value in (("Name", "fleet-osquery"), ("Version", "1.40.0"), ("Release", "1"),
                         ("Architecture", "x86_64"), ("Vendor", "Fleet Device Management"),
                         ("Build Host", "orbit-packager")):  # fmt: skip
        assert re.search(rf"^{field}\s*: {re.escape(value)}$", info, re.M), (field, info)
    listing = []
    for line in _run("rpm", "-qlvp", built["rpm"]).splitlines():
        mode, _n, owner, group, _size, _m, _d, _t, rest = line.split(None, 8)
        assert (owner, group) == ("root", "root"), line
        path, _, link = rest.partition(" -> ")
        # nfpm's rpm writer stores symlinks without permission bits (fleetctl's too); Linux
        # ignores symlink modes, so only the target is compared.
        perm = 0o755 if mode[0] == L else _perm(mode)
        listing.append((mode[0], perm, path, link or None))
    assert sorted(listing, key=lambda e: e[2]) == EXPECTED_TREE
    scripts = _run("rpm", "-qp", "--scripts", built["rpm"])
    for kind in ("postinstall", "preuninstall", "postuninstall", "posttrans"):
        assert f"{kind} scriptlet (using /bin/sh)" in scripts


def test_file_names(served, tmp_path: Path) -> None:
    for kind, name in (
        ("deb", "fleet-osquery_1.40.0_arm64.deb"),
        ("rpm", "fleet-osquery-1.40.0.aarch64.rpm"),
        ("pkg.tar.zst", "fleet-osquery-1.40.0-1-aarch64.pkg.tar.zst"),
    ):
        out = cli(*package_args(served, "--type", kind, "--arch", "arm64"), cwd=tmp_path)
        assert (tmp_path / name).is_file(), out.stdout
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
        assert f"Generated {tmp_path / name}" in out.stdout


def _check_installed(root: Path, server_url: str) -> None:
    for kind, mode, path, link in EXPECTED_TREE:
        p = root / path.lstrip("/")
        if kind == L:
            assert p.is_symlink() and str(p.readlink()) == link, path
        elif kind == D:
            assert p.is_dir() and p.stat().st_mode & 0o777 == mode, path
        else:
            assert p.is_file() and not p.is_symlink(), path
            assert p.stat().st_mode & 0o777 == mode, (path, oct(p.stat().st_mode))
            # Unpacked by a non-root user (make test with sudo), files belong to that user: dpkg
            # cannot chown. The packages' root:root owners are checked by the listing tests.
            assert (p.stat().st_uid, p.stat().st_gid) == (
                (0, 0) if os.getuid() == 0 else (os.getuid(), os.getgid())
            ), path
    env = parse_env_file((root / "etc/default/orbit").read_text())
    assert env == {**EXPECTED_ENV, "ORBIT_UPDATE_URL": server_url}
    orbit = root / "opt/orbit/bin/orbit/linux/stable/orbit"
    exe = Path(__file__).resolve().parent.parent / "fixtures/executables/orbit-linux-x86_64"
    assert orbit.read_bytes() == exe.read_bytes()
    unit = (root / "usr/lib/systemd/system/orbit.service").read_text()
    assert (
        "EnvironmentFile=/etc/default/orbit" in unit
        and "ExecStart=/opt/orbit/bin/orbit/orbit" in unit
    )


def _bsdtar_listing(package: Path) -> list[tuple[str, int, str, str | None]]:
    listing = []
    for line in _run("bsdtar", "-tvf", package).splitlines():
        mode, _n, owner, group, _size, _mon, _day, _year, rest = line.split(None, 8)
        assert (owner, group) in (("0", "0"), ("root", "root")), line
        path, _, link = rest.partition(" -> ")
        if path.startswith("."):
            continue  # .PKGINFO, .MTREE, .INSTALL
        perm = 0o755 if mode[0] == L else _perm(mode)  # as rpm: nfpm stores symlinks mode 0
        listing.append((mode[0], perm, "/" + path.rstrip("/"), link or None))
    return sorted(listing, key=lambda e: e[2])


def _tar_times(package: Path) -> dict[str, float]:
    data = subprocess.run(["zstd", "-dc", str(package)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {"/" + m.name.rstrip("/"): float(m.mtime) for m in tar
                if not m.name.startswith(".") or m.name == ".PKGINFO"}  # fmt: skip


def _mtree_times(package: Path) -> dict[str, float]:
    mtree = gzip.decompress(
        subprocess.run(["bsdtar", "-xOf", str(package), ".MTREE"], capture_output=True,
                       check=True).stdout
    ).decode()  # fmt: skip
    out = {}
    for line in mtree.splitlines()[1:]:
        path, *fields = line.split()
        times = [float(f.removeprefix("time=")) for f in fields if f.startswith("time=")]
        out["/" + path.removeprefix("./").rstrip("/")] = times[0]
    return out


def test_arch_one_mtime_without_source_date_epoch(tmp_path: Path) -> None:
    """nfpm stamps tar members with the staged files' mtimes but .MTREE with its own clock
    unless the config names one mtime; a build crossing a second boundary then showed every
    file as altered to `pacman -Qkk` (seen on the booted systemd). The builder always names
    one for pkg.tar.zst."""
    from packager.formats.base import BuildContext
    from packager.formats.linux import LinuxBuilder
    from packager.layout import Payload
    from packager.options import BuildRequest
    from packager.tooling import NativeTooling

    builder = LinuxBuilder("pkg.tar.zst")
    ctx = BuildContext(BuildRequest(type="pkg.tar.zst"), "1.0.0", tmp_path, [], None,
                       NativeTooling({}))  # fmt: skip
    (tmp_path / "scripts").mkdir()
    config = builder.nfpm_config(ctx, Payload())
    assert isinstance(config["mtime"], str)
    assert abs(datetime.fromisoformat(config["mtime"]).timestamp() - time.time()) < 60


def test_arch_metadata_listing_and_manifest(built: dict[str, Path]) -> None:
    package = built["pkg.tar.zst"]
    listing = _bsdtar_listing(package)
    assert listing == EXPECTED_TREE
    assert not {e[2] for e in listing} & SYSTEM_DIRS
    info = _run("bsdtar", "-xOf", package, ".PKGINFO")
    for line in ("pkgname = fleet-osquery", "pkgver = 1.40.0-1", "arch = x86_64",
                 "builddate = 1700000000", "packager = Fleet Device Management"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}", info, re.M), (line, info)
    # .MTREE (what pacman -Qkk checks) lists exactly the members, the system directories
    # dropped from both.
    mtree = gzip.decompress(
        subprocess.run(["bsdtar", "-xOf", str(package), ".MTREE"], capture_output=True,
                       check=True).stdout
    ).decode()  # fmt: skip
    paths = {"/" + line.split()[0].removeprefix("./").rstrip("/")
             for line in mtree.splitlines()[1:] if line.strip()}  # fmt: skip
    assert paths == {e[2] for e in EXPECTED_TREE} | {"/.PKGINFO"}
    # The scriptlets parse under dash (Debian's pacman runs them with /bin/sh) and define
    # the four functions pacman calls.
    install = _run("bsdtar", "-xOf", package, ".INSTALL")
    subprocess.run(["dash", "-n"], input=install, text=True, check=True)
    assert re.findall(r"^(\w+)\(\) \{$", install, re.M) == [
        "post_install", "post_remove", "post_upgrade", "pre_remove"]  # fmt: skip


@pytest.mark.parametrize("reproducible", [True, False], ids=["sde", "no-sde-cached-targets"])
def test_arch_installs_into_a_root_and_removes_cleanly(
    built: dict[str, Path], served, pem, tmp_path: Path, reproducible: bool
) -> None:
    """pacman -U into a root (scriptlets off: they run chrooted), -Qkk against the manifest,
    then -R: everything of ours goes, the system's directories stay (we do not own them).
    Also without SOURCE_DATE_EPOCH and with targets from a cache made earlier (older mtimes):
    the manifest's times must still be the files' times."""
    if os.getuid() != 0:
        pytest.skip("pacman --root installs as root only (it chowns to root)")
    package = built["pkg.tar.zst"]
    if not reproducible:
        cache = tmp_path / "cache"
        args = [a for a in package_args(served, "--type", "pkg.tar.zst", "--fleet-desktop",
                 "--enable-scripts", "--host-identifier", "instance", "--fleet-certificate",
                 pem, "--end-user-email", "it@example.com") if a != "--no-cache"]  # fmt: skip
        cli(*args, "--cache-dir", cache, "--outfile", tmp_path / "first.pkg.tar.zst")
        for path in cache.rglob("*"):
            os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
        package = tmp_path / "x.pkg.tar.zst"
        cli(*args, "--cache-dir", cache, "--outfile", package)
        assert _mtree_times(package) == _tar_times(package)
    root = tmp_path / "root"
    db = root / "var/lib/pacman"
    db.mkdir(parents=True)
    for system_dir in SYSTEM_DIRS:
        (root / system_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    pacman = ["pacman", "--root", str(root), "--dbpath", str(db), "--noconfirm",
              "--config", "/dev/null"]  # fmt: skip
    _run(*pacman, "-U", "--noscriptlet", package)
    _check_installed(root, served[1].url)
    check = subprocess.run([*pacman, "-Qkk", "fleet-osquery"], capture_output=True, text=True)
    assert check.returncode == 0 and " 0 altered files" in check.stdout, check
    owners = subprocess.run([*pacman, "-Qo", str(root / "opt")], capture_output=True, text=True)
    assert "fleet-osquery" not in owners.stdout + owners.stderr
    _run(*pacman, "-R", "--noscriptlet", "fleet-osquery")
    assert not (root / "opt/orbit").exists() and not (root / "etc/default/orbit").exists()
    for system_dir in SYSTEM_DIRS:
        assert (root / system_dir.lstrip("/")).is_dir(), system_dir


def test_deb_unpacks_into_a_root(built: dict[str, Path], served, tmp_path: Path) -> None:
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").touch()
    # A system's own directories; the package does not own them (chrootless, the preinst would
    # create them on the host, so they are made here as the base system would have them).
    for system_dir in SYSTEM_DIRS:
        (root / system_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    _run("dpkg", f"--root={root}", f"--admindir={admin}", "--force-depends", "--force-script-chrootless",
         "--force-not-root", "--no-triggers", "--unpack", built["deb"])  # fmt: skip
    _check_installed(root, served[1].url)


def test_rpm_installs_into_a_root(built: dict[str, Path], served, tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("rpm -i --root needs root: rpm 4.20 chroots, and rpm -V checks root owners")
    root = tmp_path / "root"
    root.mkdir()
    db: list[str | Path] = [
        "--root",
        root,
        "--dbpath",
        "/var/lib/rpm",
    ]  # Debian's rpm defaults to ~/.rpmdb
    _run("rpm", *db, "--initdb")
    _run("rpm", *db, "-i", "--nodeps", "--noscripts", built["rpm"])
    _check_installed(root, served[1].url)
    verify = subprocess.run(
        ["rpm", *map(str, db), "-V", "fleet-osquery"], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout


def test_reproducible(served, pem, tmp_path: Path) -> None:
    for kind in ("deb", "rpm", "pkg.tar.zst"):
        digests = set()
        for n in range(2):
            out = tmp_path / f"{n}.{kind}"
            cli(*package_args(served, "--type", kind, "--fleet-certificate", pem, "--outfile", out),
                env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
            digests.add(out.read_bytes())
        assert len(digests) == 1, kind


def _allowlist(name: str) -> set[str]:
    text = (Path(__file__).parent / "lint" / name).read_text()
    return {
        line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")
    }


def test_lintian_and_rpmlint(built: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    lintian = subprocess.run(
        ["lintian", str(built["deb"])], capture_output=True, text=True, env=env
    )
    errors = {m.group(1) for m in re.finditer(r"^E: fleet-osquery: (\S+)", lintian.stdout, re.M)}
    assert errors, lintian.stdout  # the allowlisted ones do occur: the parse works
    assert errors <= _allowlist("lintian-allowlist.txt"), errors - _allowlist(
        "lintian-allowlist.txt"
    )
    # rpmlint.toml filters the spelling errors of Fleet's own words ("autoupdater", "fleetd").
    config = Path(__file__).parent / "lint" / "rpmlint.toml"
    rpmlint = subprocess.run(
        ["rpmlint", "--config", str(config), str(built["rpm"])],
        capture_output=True,
        text=True,
        env=env,
    )
    errors = {
        m.group(1) for m in re.finditer(r"^fleet-osquery\.\S+: E: (\S+)", rpmlint.stdout, re.M)
    }
    assert errors, rpmlint.stdout
    assert errors <= _allowlist("rpmlint-allowlist.txt"), errors - _allowlist(
        "rpmlint-allowlist.txt"
    )


def test_secret_never_in_output_args_or_env(served, tmp_path: Path) -> None:
    """The canary reaches the package, but no output, argument or child environment."""
    out = cli(*package_args(served, "--type", "deb", "--verbose", "--outfile", tmp_path / "v.deb"))
    assert "running " in out.stderr  # --verbose shows the tool command lines
    assert "canary" not in out.stdout + out.stderr
    # Every child process the build starts, with its arguments and environment, via audit hook.
    code = f"""
import sys, json
seen = []
def hook(event, args):
    if event == "subprocess.Popen":
        seen.append(repr(args))
sys.addaudithook(hook)
from packager.cli import main
try:
    main({[str(a) for a in package_args(served, "--type", "rpm", "--outfile", tmp_path / "a.rpm")]!r})
except SystemExit as e:
    assert e.code in (0, None), e.code
print(json.dumps(seen))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("nfpm" in s for s in seen), seen  # the real tool ran
    assert not any("canary" in s for s in seen)
    assert "canary" not in proc.stderr


def test_bad_values_refused_before_download(served, tmp_path: Path) -> None:
    server = served[1]
    before = sum(server.requests.values())
    cases: list[tuple[list[str | Path], str]] = [
        (["--enroll-secret", "line1\nline2"], "--enroll-secret must not contain newlines"),
        (["--fleet-url", "ftp://fleet.example.com"], "is not an http(s) URL"),
        (["--outfile", tmp_path / "x.rpm"], "output file must end with .deb for deb packages"),
        (["--host-identifier", "mac"], "--host-identifier=mac is not supported"),
        (["--osquery-db", "relative/db"], "--osquery-db must be an absolute path"),
        (["--use-system-configuration"], "--use-system-configuration is only available for pkg"),
        (["--compression", "lz4"], "--compression for deb must be one of"),
    ]
    for extra, message in cases:
        # a flag given twice: click takes the last value
        args: list[str | Path] = [*package_args(served, "--type", "deb"), *extra]
        out = cli(*args, check=False, cwd=tmp_path)
        assert out.returncode == 2, (extra, out.stderr)
        assert message in out.stderr, (message, out.stderr)
        assert "line1" not in out.stderr
    assert sum(server.requests.values()) == before  # validated before any download
    assert list(tmp_path.glob("*.deb")) == []


RELOAD = "systemctl daemon-reload"
ENABLE = "systemctl enable orbit.service"
RESTART = "systemctl restart orbit.service"
DISABLE = "systemctl disable --now orbit.service"
PKILL = "pkill fleet-desktop"
CLEANUP = (
    "rm -rf /var/lib/orbit /var/log/orbit /usr/local/bin/orbit /etc/default/orbit "
    "/usr/lib/systemd/system/orbit.service /opt/orbit"
)
SAFE_RESTART = (
    "systemd-run --on-active=60 --timer-property=AccuracySec=1s --working-directory=/ "
    "systemctl restart --no-block orbit.service"
)

# (scenario, [(package script, arguments)], extra environment, expected calls in order)
SCRIPT_TABLE: list[tuple[str, list[tuple[str, list[str]]], dict[str, str], list[str]]] = [
    ("deb install", [("deb:postinst", ["configure"])], {}, [RELOAD, ENABLE, RESTART]),
    (
        "deb upgrade",
        [
            ("deb:prerm", ["upgrade", "1.40.0"]),
            ("deb:postrm", ["upgrade", "1.40.0"]),
            ("deb:postinst", ["configure", "1.39.0"]),
        ],
        {},
        [RELOAD, ENABLE, RESTART],
    ),
    (
        "deb remove",
        [("deb:prerm", ["remove"]), ("deb:postrm", ["remove"])],
        {},
        [DISABLE, PKILL, CLEANUP, RELOAD],
    ),
    ("deb purge", [("deb:postrm", ["purge"])], {}, [CLEANUP, RELOAD]),
    (
        "rpm install",
        [("rpm:POSTIN", ["1"]), ("rpm:POSTTRANS", ["0"])],
        {},
        [RELOAD, RELOAD, ENABLE, RESTART],
    ),
    (
        "rpm upgrade",
        # new %post, old %preun and %postun with $1=1, then the new %posttrans
        [
            ("rpm:POSTIN", ["2"]),
            ("rpm:PREUN", ["1"]),
            ("rpm:POSTUN", ["1"]),
            ("rpm:POSTTRANS", ["0"]),
        ],
        {},
        [RELOAD, RELOAD, ENABLE, RESTART],
    ),
    (
        "rpm erase",
        [("rpm:PREUN", ["0"]), ("rpm:POSTUN", ["0"])],
        {},
        [DISABLE, PKILL, CLEANUP, RELOAD],
    ),
    (
        "deb self-update by orbit",
        [("deb:postinst", ["configure", "1.39.0"])],
        {"INSTALLER_PATH": "/opt/orbit/staging/x.deb"},
        [RELOAD, ENABLE, SAFE_RESTART],
    ),
    # pacman: install runs post_install NEW; upgrade (and reinstall) only the new package's
    # post_upgrade NEW OLD; removal pre_remove OLD and post_remove OLD.
    ("arch install", [("arch:post_install", ["1.40.0-1"])], {}, [RELOAD, ENABLE, RESTART]),
    (
        "arch upgrade",
        [("arch:post_upgrade", ["1.40.0-1", "1.39.0-1"])],
        {},
        [RELOAD, ENABLE, RESTART],
    ),
    (
        "arch remove",
        [("arch:pre_remove", ["1.40.0-1"]), ("arch:post_remove", ["1.40.0-1"])],
        {},
        [DISABLE, PKILL, CLEANUP, RELOAD],
    ),
    (
        "arch self-update by orbit",
        [("arch:post_upgrade", ["1.40.0-1", "1.39.0-1"])],
        {"INSTALLER_PATH": "/opt/orbit/staging/x.pkg.tar.zst"},
        [RELOAD, ENABLE, SAFE_RESTART],
    ),
]


@pytest.fixture(scope="module")
def scripts(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scripts")
    _run("dpkg-deb", "-e", built["deb"], out / "deb")
    found = {f"deb:{n}": out / "deb" / n for n in ("postinst", "prerm", "postrm")}
    for tag in ("POSTIN", "PREUN", "POSTUN", "POSTTRANS"):
        path = out / f"rpm-{tag}"
        path.write_text(_run("rpm", "-qp", "--qf", f"%{{{tag}}}", built["rpm"]))
        found[f"rpm:{tag}"] = path
    install = out / "arch.INSTALL"
    install.write_text(_run("bsdtar", "-xOf", built["pkg.tar.zst"], ".INSTALL"))
    for function in ("post_install", "post_upgrade", "pre_remove", "post_remove"):
        # what pacman runs: sh -c ". .INSTALL; FUNCTION NEW [OLD]"
        caller = out / f"arch-{function}"
        caller.write_text(f'. "{install}"\n{function} "$@"\n')
        found[f"arch:{function}"] = caller
    return found


def _fake_bin(directory: Path, calls: Path) -> None:
    directory.mkdir()
    for name in ("systemctl", "systemd-run", "pkill", "rm"):
        tool = directory / name
        tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{calls}"\n')
        tool.chmod(0o755)


@pytest.mark.parametrize(
    ("scenario", "steps", "env", "expected"), SCRIPT_TABLE, ids=[r[0] for r in SCRIPT_TABLE]
)
def test_maintainer_scripts(scripts, tmp_path: Path, scenario, steps, env, expected) -> None:
    calls = tmp_path / "calls"
    calls.touch()
    fake = tmp_path / "bin"
    _fake_bin(fake, calls)
    for script, args in steps:
        proc = subprocess.run(
            ["sh", str(scripts[script]), *args],
            env={"PATH": f"{fake}:/usr/bin:/bin", **env},
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, (scenario, script, proc.stderr)
    assert calls.read_text().splitlines() == expected, scenario


def test_scripts_without_systemd(scripts, tmp_path: Path) -> None:
    """Hosts without systemd (containers, old init): scripts succeed and call nothing."""
    calls = tmp_path / "calls"
    calls.touch()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("pkill", "rm"):
        (fake / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{calls}"\n')
        (fake / name).chmod(0o755)
    for script, args in [
        ("deb:postinst", ["configure"]),
        ("deb:prerm", ["remove"]),
        ("rpm:POSTTRANS", []),
        ("arch:post_install", ["1.40.0-1"]),
        ("arch:pre_remove", ["1.40.0-1"]),
    ]:
        proc = subprocess.run(["/bin/sh", str(scripts[script]), *args], env={"PATH": str(fake)},
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [PKILL, PKILL]


def test_no_service_scripts(tmp_path: Path) -> None:
    """--no-service: install only reloads units; removal still stops and disables."""
    from packager.render import render

    calls = tmp_path / "calls"
    calls.touch()
    fake = tmp_path / "bin"
    _fake_bin(fake, calls)
    for fmt, name, args in [
        ("deb", "postinstall", ["configure"]),
        ("rpm", "posttrans", ["0"]),
        ("pkg.tar.zst", "postinstall", ["1.40.0-1", "1.39.0-1"]),
    ]:
        script = tmp_path / f"{fmt}-{name}"
        script.write_text(
            render("linux", f"{name}.sh.j2", format=fmt, service=False, orbit_root=ORBIT)
        )
        subprocess.run(
            ["sh", str(script), *args], env={"PATH": f"{fake}:/usr/bin:/bin"}, check=True
        )
    assert calls.read_text().splitlines() == [RELOAD, RELOAD, RELOAD]
