"""``package``: validated request -> verified targets -> staged tree -> installer, atomically.

Everything happens in a private (0700) temporary directory removed on every exit path; the
installer is moved to its final name only once complete, with mode 0600 like fleetctl's (it
carries the enroll secret).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.errors import UsageError
from packager.fetch.client import UpdateClient, default_cache_dir, load_trusted_root
from packager.fetch.http import HttpOptions
from packager.fetch.progress import download_progress
from packager.fetch.targets import TargetSelection, fetch_agent_targets, installer_version
from packager.formats.base import BuildContext, Builder
from packager.formats.deb_rpm import LinuxBuilder
from packager.formats.msi import MsiBuilder
from packager.formats.pkg import PkgBuilder
from packager.layout import target_summary, write_orbit_root
from packager.options import BuildRequest
from packager.repo.fsutil import fsync_dir, move_into_place
from packager.tooling import DockerTooling, select_tooling

OUTPUT_MODE = 0o600


@dataclass
class BuildResult:
    path: Path
    sha256: str
    size: int
    version: str
    package_type: str
    targets: list[dict[str, object]]
    tooling: str  # "native", or "docker:<image>"

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "version": self.version,
            "type": self.package_type,
            "targets": self.targets,
            "tooling": self.tooling,
        }


def builder_for(package_type: str) -> Builder:
    if package_type in ("deb", "rpm"):
        return LinuxBuilder(package_type)
    if package_type == "msi":
        return MsiBuilder()
    if package_type == "pkg":
        return PkgBuilder()
    raise UsageError(f"--type {package_type} is not supported", hint="use deb, rpm, pkg or msi")


def source_date_epoch(environ: dict[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH as an int; a malformed value is an error (reproducible-builds spec)."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def build_package(req: BuildRequest, *, progress: bool | None = None) -> BuildResult:
    builder = builder_for(req.type)
    builder.preflight(req)
    # Before any download: the tools (or the Docker image) must be there.
    tooling = select_tooling(
        req.tooling, req.tooling_image, builder.external_tools, builder.install_hint
    )
    sde = source_date_epoch()
    if req.outfile is not None and req.outfile.is_dir():
        raise UsageError(f"--outfile {req.outfile} is a directory")
    out_dir = (req.outfile.parent if req.outfile else Path.cwd()).resolve()
    if not out_dir.is_dir():
        raise UsageError(f"output directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise UsageError(f"output directory {out_dir} is not writable")
    roots = load_trusted_root(req.update_url, req.update_roots)
    http = HttpOptions(
        ca_bundle=req.update_tls_certificate,
        client_cert=req.update_tls_client_certificate,
        client_key=req.update_tls_client_key,
    )
    cache = None if req.no_cache else (req.cache_dir or default_cache_dir())
    selection = TargetSelection(
        req.type,
        req.arch or "amd64",
        req.orbit_channel,
        req.osqueryd_channel,
        req.desktop_channel,
        req.fleet_desktop,
    )
    stage = Path(tempfile.mkdtemp(prefix="orbit-packager-build-"))
    try:
        os.chmod(stage, 0o700)
        orbit_root = builder.orbit_root(stage)
        with UpdateClient(
            req.update_url, roots, cache_dir=cache, http=http, offline=req.offline
        ) as client:
            with download_progress(client.http, enabled=progress):
                fetched = fetch_agent_targets(client, selection, orbit_root)
            trusted = client.trusted_metadata()
        version = installer_version(fetched)
        write_orbit_root(req, orbit_root, trusted, write_secret_file=builder.writes_secret_file)
        ctx = BuildContext(req, version, stage, fetched, sde, tooling, verbose=req.verbose)
        name = builder.default_filename(req, version)
        built = stage / "out" / name
        built.parent.mkdir()
        builder.build(ctx, built)
        os.chmod(built, OUTPUT_MODE)
        final = req.outfile.resolve() if req.outfile else out_dir / name
        sha, size = _sha256(built), built.stat().st_size
        move_into_place(built, final)
        with contextlib.suppress(OSError):
            fsync_dir(final.parent)
        used = f"docker:{tooling.image}" if isinstance(tooling, DockerTooling) else "native"
        return BuildResult(final, sha, size, version, req.type, target_summary(fetched), used)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
