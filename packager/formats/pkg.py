"""macOS flat packages (.pkg), written in pure Python on any OS: cpio + BOM + xar.

Product archive (as fleetctl's)::

    Distribution
    base.pkg/PackageInfo   identifier <--identifier>.base.pkg, version = orbit version
    base.pkg/Bom           every payload path, uid 0 / gid 80, POSIX cksum
    base.pkg/Payload       gzip'd odc cpio of / : /opt/orbit/..., the LaunchDaemon plist
    base.pkg/Scripts       gzip'd odc cpio of ./postinstall

Payload bytes are read once (compressed and checksummed in one pass); memory stays bounded
whatever the payload size. Optional signing (RSA + CMS, as productsign) with apple-platform-py.
"""

from __future__ import annotations

import os
import plistlib
from datetime import datetime, timezone
from pathlib import Path

from packager.errors import UsageError
from packager.formats.base import BuildContext
from packager.layout import DIR_MODE, PUBLIC_MODE
from packager.options import BuildRequest
from packager.render import render, render_xml
from packager.writers.bom import write_bom
from packager.writers.cpio import write_cpio_gz
from packager.writers.xar import XarMember, write_xar

ORBIT_ROOT = "/opt/orbit"
LABEL = "com.fleetdm.orbit"
HOST_ARCHITECTURES = {"universal": "arm64,x86_64", "amd64": "x86_64", "arm64": "arm64"}


def launch_daemon(req: BuildRequest) -> dict[str, object]:
    """The LaunchDaemon plist, Fleet's keys and environment order; plistlib escapes values."""
    env: dict[str, str] = {}
    flags = [
        (req.debug, "ORBIT_DEBUG", "true"),
        (req.insecure, "ORBIT_INSECURE", "true"),
        (bool(req.fleet_certificate), "ORBIT_FLEET_CERTIFICATE", f"{ORBIT_ROOT}/fleet.pem"),
        (bool(req.enroll_secret), "ORBIT_ENROLL_SECRET_PATH", f"{ORBIT_ROOT}/secret.txt"),
        (bool(req.fleet_url), "ORBIT_FLEET_URL", req.fleet_url),
        (req.use_system_configuration, "ORBIT_USE_SYSTEM_CONFIGURATION", "true"),
        (req.enable_scripts, "ORBIT_ENABLE_SCRIPTS", "true"),
        (req.disable_updates, "ORBIT_DISABLE_UPDATES", "true"),
        (True, "ORBIT_ORBIT_CHANNEL", req.orbit_channel),
        (True, "ORBIT_OSQUERYD_CHANNEL", req.osqueryd_channel),
        (True, "ORBIT_UPDATE_URL", req.update_url),
        (
            bool(req.update_tls_certificate),
            "ORBIT_UPDATE_TLS_CERTIFICATE",
            f"{ORBIT_ROOT}/update.pem",
        ),
        (req.fleet_desktop, "ORBIT_FLEET_DESKTOP", "true"),
        (req.fleet_desktop, "ORBIT_DESKTOP_CHANNEL", req.desktop_channel),
        (
            req.fleet_desktop and bool(req.fleet_desktop_alternative_browser_host),
            "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST",
            req.fleet_desktop_alternative_browser_host,
        ),
        (True, "ORBIT_UPDATE_INTERVAL", req.update_interval_go),
        (req.host_identifier != "uuid", "ORBIT_HOST_IDENTIFIER", req.host_identifier),
        (req.disable_keystore, "ORBIT_DISABLE_KEYSTORE", "true"),
        (bool(req.osquery_db), "ORBIT_OSQUERY_DB", req.osquery_db),
    ]
    for wanted, key, value in flags:
        if wanted:
            env[key] = value
    # Fleet's template lists the top-level keys sorted and the environment in its own order.
    return {
        "EnvironmentVariables": env,
        "KeepAlive": True,
        "Label": LABEL,
        # Never /usr/local/bin/orbit: that path is writable by admin users (privilege escalation).
        "ProgramArguments": [f"{ORBIT_ROOT}/bin/orbit/orbit"],
        "RunAtLoad": True,
        "StandardErrorPath": "/var/log/orbit/orbit.stderr.log",
        "StandardOutPath": "/var/log/orbit/orbit.stdout.log",
        "ThrottleInterval": 10,
    }


class PkgBuilder:
    package_type = "pkg"
    writes_secret_file = True
    external_tools: tuple[str, ...] = ()  # pure Python: the tooling choice does not apply
    install_hint = ""

    def orbit_root(self, stage: Path) -> Path:
        return stage / "root" / ORBIT_ROOT.lstrip("/")

    def default_filename(self, request: BuildRequest, version: str) -> str:
        return "fleet-osquery.pkg"

    def preflight(self, request: BuildRequest) -> None:
        if request.sign_pem or request.sign_cert or request.macos_devid_pem_content:
            import apple_platform  # noqa: F401 - fail early if the signing engine is missing

    def build(self, ctx: BuildContext, output: Path) -> None:
        req = ctx.request
        root = ctx.stage / "root"
        if req.service:
            plist = root / "Library" / "LaunchDaemons" / f"{LABEL}.plist"
            plist.parent.mkdir(parents=True, exist_ok=True)
            plist.write_bytes(plistlib.dumps(launch_daemon(req), sort_keys=False))
            plist.chmod(PUBLIC_MODE)
        scripts = ctx.stage / "scripts"
        scripts.mkdir()
        post = scripts / "postinstall"
        post.write_text(
            render("macos", "postinstall.j2", orbit_channel=req.orbit_channel, service=req.service)
        )
        post.chmod(0o755)
        for top in (root, scripts):
            # The cpio payload takes its modes from the staged tree: every directory gets
            # exactly 0755 whatever the umask of this machine (umask 0 made /opt/orbit/bin
            # world-writable on the Mac; 077 made it unreadable and the pkg umask-dependent).
            for dirpath, _dirs, _files in os.walk(top):
                os.chmod(dirpath, DIR_MODE)

        flat = ctx.stage / "flat"
        base = flat / "base.pkg"
        base.mkdir(parents=True)
        entries = write_cpio_gz(root, base / "Payload", mtime=ctx.source_date_epoch)
        write_cpio_gz(scripts, base / "Scripts", mtime=ctx.source_date_epoch)
        write_bom(entries, base / "Bom")
        kbytes = (sum(e.size for e in entries) + 1023) // 1024
        common = {"identifier": req.identifier, "version": ctx.version, "install_kbytes": kbytes}
        (base / "PackageInfo").write_text(
            render_xml("macos", "PackageInfo.j2", number_of_files=len(entries), **common)
        )
        (flat / "Distribution").write_text(
            render_xml(
                "macos",
                "Distribution.j2",
                host_architectures=HOST_ARCHITECTURES[req.arch or "universal"],
                **common,
            )
        )
        members = [
            XarMember("Distribution", flat / "Distribution"),
            XarMember("base.pkg", None, 0o755),
            XarMember("base.pkg/Bom", base / "Bom"),
            XarMember("base.pkg/PackageInfo", base / "PackageInfo"),
            XarMember("base.pkg/Payload", base / "Payload"),
            XarMember("base.pkg/Scripts", base / "Scripts"),
        ]
        write_xar(output, members, timestamp=ctx.source_date_epoch)
        if req.macos_devid_pem_content:
            # The signing engine reads PEM files only: the text goes to a file created 0600
            # in the build's private directory, removed with it on every exit path.
            pem = ctx.stage / "devid.pem"
            fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(req.macos_devid_pem_content)
            sign_pkg(output, req, ctx.source_date_epoch, pem=pem)
        elif req.sign_pem or req.sign_cert:
            sign_pkg(output, req, ctx.source_date_epoch)


def sign_pkg(pkg: Path, req: BuildRequest, timestamp: int | None, pem: Path | None = None) -> None:
    """RSA + CMS signature over the TOC checksum (what productsign writes), on any OS."""
    from apple_platform import errors, signing
    from apple_platform.models import PemKey, Signer

    files: list[str | bytes | os.PathLike[str] | os.PathLike[bytes]] = [
        p for p in (pem or req.sign_pem, req.sign_cert, req.sign_key) if p is not None
    ]
    signing_time = (
        datetime.fromtimestamp(timestamp, tz=timezone.utc) if timestamp is not None else None
    )
    try:
        signing.sign(
            pkg,
            signer=Signer(pem=PemKey(files=files)),
            timestamp_url=req.sign_timestamp_url or "none",
            signing_time=signing_time,
        )
    except errors.ApplePlatformError as exc:
        raise UsageError(f"signing the pkg failed: {exc}") from None
