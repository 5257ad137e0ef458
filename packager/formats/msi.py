"""Windows .msi with Fleet's layout, built natively by wixl (msitools): no Docker, no Wine.

Where wixl 0.101 cannot author what Fleet's WiX installer has, the MSI is adjusted after
compilation with msibuild's SQL (its own database engine, the same library wixl uses):

* ``AllowDowngrades`` is ignored by wixl: the Upgrade table is rewritten to one row that finds
  every version (older and newer) so a Fleet-built or newer install is replaced, as Fleet's is.
* A custom action after InstallFiles makes wixl schedule RemoveExistingProducts after
  InstallFinalize, where the old product's uninstall would delete the service the new one just
  installed; it is moved back right after InstallValidate (WiX's default).
* ``HideTarget`` is ignored: the secret-writing action gets msidbCustomActionTypeHideTarget.

SummaryInformation is then normalised so builds are reproducible: the PackageCode is derived
from a hash of the content (any change of input changes it) and the dates come from
SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from markupsafe import Markup, escape

from packager import __version__
from packager.errors import UsageError
from packager.formats.base import BuildContext, ToolError, run_tool, stamp_tree
from packager.formats.msi_summary import normalise_summary
from packager.options import BuildRequest
from packager.render import render_xml, templates_dir

WIXL_HINT = (
    "install msitools' wixl: Debian/Ubuntu `apt-get install wixl`, macOS `brew install msitools`,"
    " or use --tooling docker"
)
# Namespace for our deterministic GUIDs (components by install path, product by content).
GUID_NAMESPACE = uuid.UUID("8a4c7c39-6e0f-4f44-9d3a-2b5e1c0f7a11")
HIDE_TARGET = 0x2000
LOG_FILE = (
    r"[System64Folder]config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"
)


def formatted(value: str) -> str:
    """Escape literal text for a Windows Installer Formatted column ([ ] { } are syntax)."""
    out = []
    for ch in value:
        out.append(f"[\\{ch}]" if ch in "[]{}" else ch)
    return "".join(out)


def orbit_environment(req: BuildRequest) -> list[str]:
    """Entries of the service's Environment (REG_MULTI_SZ), Fleet's names and order."""
    env = [
        "ORBIT_ROOT_DIR=[ORBITROOT].",
        f"ORBIT_LOG_FILE={LOG_FILE}",
        "ORBIT_FLEET_URL=[FLEET_URL]",
        "ORBIT_ENROLL_SECRET_PATH=[ORBITROOT]secret.txt",
        f"ORBIT_UPDATE_URL={formatted(req.update_url)}",
        f"ORBIT_UPDATE_INTERVAL={req.update_interval_go}",
        "ORBIT_FLEET_DESKTOP=[FLEET_DESKTOP]",
        f"ORBIT_DESKTOP_CHANNEL={req.desktop_channel}",
        f"ORBIT_ORBIT_CHANNEL={req.orbit_channel}",
        f"ORBIT_OSQUERYD_CHANNEL={req.osqueryd_channel}",
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
        (bool(req.end_user_email), "ORBIT_END_USER_EMAIL=[END_USER_EMAIL]"),
        (bool(req.osquery_db), f"ORBIT_OSQUERY_DB={formatted(req.osquery_db)}"),
        (req.disable_setup_experience, "ORBIT_DISABLE_SETUP_EXPERIENCE=true"),
        (req.bypass_end_user_auth, "ORBIT_BYPASS_END_USER_AUTH=true"),
    ]
    env += [entry for wanted, entry in optional if wanted]
    for entry in env:
        if "[~]" in entry:  # the separator of the multi-string
            raise UsageError("a Windows configuration value contains the sequence [~]")
    return env


def _id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:24].upper()


def _guid(key: str) -> str:
    return str(uuid.uuid5(GUID_NAMESPACE, key)).upper()


class MsiBuilder:
    package_type = "msi"
    writes_secret_file = False  # written at install time from FLEET_SECRET (CA_WriteSecret)
    external_tools: tuple[str, ...] = ("wixl", "msibuild")
    install_hint = WIXL_HINT

    def orbit_root(self, stage: Path) -> Path:
        return stage / "root"

    def default_filename(self, request: BuildRequest, version: str) -> str:
        return "fleet-osquery.msi"

    # -- WiX source ----------------------------------------------------------------------------
    def _tree(self, root: Path, stage: Path) -> tuple[str, list[str], str]:
        """Directory/Component XML for every file below ``root`` (sorted, stable IDs)."""
        components: list[str] = []
        service_dir = ""
        lines: list[str] = []

        def walk(directory: Path, rel: str, depth: int) -> None:
            nonlocal service_dir
            pad = "  " * depth
            entries = sorted(directory.iterdir(), key=lambda p: p.name)
            files = [p for p in entries if p.is_file()]
            dirs = [p for p in entries if p.is_dir()]
            if rel and not files and not dirs:
                cid = _id("C_", "dir:" + rel)
                components.append(cid)
                lines.append(
                    f'{pad}<Component Id="{cid}" Guid="{_guid("dir:" + rel)}" Win64="yes">'
                    f"<CreateFolder/></Component>"
                )
            for f in files:
                key = f"{rel}/{f.name}" if rel else f.name
                if key == "bin/orbit/orbit.exe":
                    continue  # authored in C_ORBITBIN with the service
                cid, fid = _id("C_", key), _id("F_", key)
                components.append(cid)
                # wixl resolves sources relative to its working directory (the stage) only
                source = escape(str(f.relative_to(stage)))
                lines.append(
                    f'{pad}<Component Id="{cid}" Guid="{_guid(key)}" Win64="yes">'
                    f'<File Id="{fid}" Name="{escape(f.name)}" Source="{source}" KeyPath="yes"/>'
                    "</Component>"
                )
            for d in dirs:
                key = f"{rel}/{d.name}" if rel else d.name
                did = _id("D_", key)
                if key == "bin/orbit":
                    service_dir = did
                lines.append(f'{pad}<Directory Id="{did}" Name="{escape(d.name)}">')
                walk(d, key, depth + 1)
                lines.append(f"{pad}</Directory>")

        walk(root, "", 5)
        return "\n".join(lines), components, service_dir

    def wxs(self, ctx: BuildContext, product_code: str) -> str:
        req = ctx.request
        root = self.orbit_root(ctx.stage)
        tree, components, service_dir = self._tree(root, ctx.stage)
        return render_xml(
            "windows",
            "main.wxs.j2",
            tool_version=__version__,
            product_code=product_code,
            version=msi_version(ctx.version),
            fleet_url=req.fleet_url or "dummy",
            fleet_secret=req.enroll_secret or "dummy",
            enable_scripts="True" if req.enable_scripts else "False",
            fleet_desktop="True" if req.fleet_desktop else "False",
            end_user_email=req.end_user_email,
            tree=Markup(tree),  # noqa: S704 - built above from escaped parts
            components=components,
            service_dir=service_dir,
            service_exe=str((root / "bin" / "orbit" / "orbit.exe").relative_to(ctx.stage)),
            environment="[~]".join(orbit_environment(req)),
        )

    # -- build ---------------------------------------------------------------------------------
    def prepare(self, ctx: BuildContext) -> None:
        """Add what only the MSI carries to the staged tree."""
        req = ctx.request
        root = self.orbit_root(ctx.stage)
        platform = "windows-arm64" if req.arch == "arm64" else "windows"
        channel_exe = root / "bin" / "orbit" / platform / req.orbit_channel / "orbit.exe"
        service_exe = root / "bin" / "orbit" / "orbit.exe"
        if not service_exe.exists():
            os.link(channel_exe, service_exe)
        script = root / "write-secret.ps1"
        shutil.copyfile(templates_dir() / "windows" / "write-secret.ps1", script)
        script.chmod(0o644)

    def preflight(self, request: BuildRequest) -> None:
        if request.arch == "arm64":
            raise UsageError(
                "--arch arm64 is not supported for msi: wixl 0.101 cannot build ARM64 installers"
            )

    def build(self, ctx: BuildContext, output: Path) -> None:
        self.preflight(ctx.request)
        self.prepare(ctx)
        stamp_tree(self.orbit_root(ctx.stage), ctx.source_date_epoch)
        content = self.content_hash(ctx, self.wxs(ctx, "{00000000-0000-0000-0000-000000000000}"))
        wxs_path = ctx.stage / "main.wxs"
        wxs_path.write_text(self.wxs(ctx, "{" + _guid("product:" + content) + "}"))
        run_tool(ctx, "wixl", ["-a", "x64", "-o", ctx.rel(output), ctx.rel(wxs_path)], what="wixl")
        self.fix_tables(output, ctx)
        normalise_summary(
            output,
            package_code="{" + _guid("package:" + content) + "}",
            timestamp=ctx.source_date_epoch,
        )

    def content_hash(self, ctx: BuildContext, wxs: str) -> str:
        """Hash of everything the MSI is made of: its WiX source and every staged file."""
        digest = hashlib.sha256(wxs.encode())
        root = self.orbit_root(ctx.stage)
        for path in sorted(root.rglob("*")):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            if path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    @staticmethod
    def fix_tables(msi: Path, ctx: BuildContext) -> None:
        queries = [
            # constant SQL: no value from the user is part of any query
            f"UPDATE CustomAction SET Type = {3122 | HIDE_TARGET} WHERE Action = 'CA_WriteSecret'",  # noqa: S608
            "DELETE FROM Upgrade WHERE ActionProperty = 'WIX_DOWNGRADE_DETECTED'",
            "UPDATE Upgrade SET VersionMin = '0.0.0', VersionMax = '', Attributes = 257",
            "DELETE FROM LaunchCondition WHERE Condition = 'NOT WIX_DOWNGRADE_DETECTED'",
            "UPDATE InstallExecuteSequence SET Sequence = 1401 "
            "WHERE Action = 'RemoveExistingProducts'",
        ]
        args = [ctx.rel(msi)]
        for query in queries:
            args += ["-q", query]
        run_tool(ctx, "msibuild", args, what="msibuild")


def msi_version(version: str) -> str:
    """ProductVersion: up to three numeric fields (Windows Installer compares only those)."""
    core = version.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise ToolError(f"orbit version {version!r} cannot be an MSI ProductVersion")
    return ".".join(parts[:3])


def table_rows(msi: Path, table: str) -> list[dict[str, str]]:
    """Rows of an MSI table, read with msiinfo (used by tests and the summary)."""
    out = subprocess.run(
        ["msiinfo", "export", str(msi), table], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    names = out[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in out[3:] if line]
