"""``package``: validated request -> verified targets -> staged tree -> installer, atomically.

Everything happens in a private (0700) temporary directory removed on every exit path,
SIGINT/SIGTERM/SIGHUP included (packager.signals). The installer carries the enroll secret: it
has mode 0600 (like fleetctl's) before it leaves that directory, and is renamed to its final
name only once complete. Across file systems it is copied to a temporary name beside the output
created 0600 from the start (O_CREAT|O_EXCL|O_NOFOLLOW, whatever the umask). A symbolic link at
the output path is replaced, never followed (``place_private_file``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packager import signals
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
from packager.repo.fsutil import place_private_file
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


@contextlib.contextmanager
def private_directory(prefix: str) -> Iterator[Path]:
    """A new 0700 directory in $TMPDIR, removed on every exit path, signals included."""
    path: Path | None = None
    try:
        with signals.deferred():  # no signal between its creation and the name being known
            path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(path, 0o700)
        yield path
    finally:
        if path is not None:
            with signals.deferred():  # a second signal does not cut the cleanup short
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _result_in_place() -> Iterator[None]:
    """Around the rename that publishes the installer: signals wait until it is done, and once
    it is, the command completes (exit 0) whatever signal comes."""
    with signals.deferred():
        yield
        signals.finishing()


def _output_path(req: BuildRequest) -> tuple[Path, str | None]:
    """The output's directory (resolved) and file name (None: the builder's default).

    Only the directory is resolved: a symbolic link at the output path itself is replaced by
    the installer, never followed (in a sticky /tmp it may belong to someone else)."""
    if req.outfile is None:
        if req.outdir is not None:
            # Made private: the installer in it holds the enroll secret (fleetctl makes
            # build/ 0700 the same way).
            req.outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            return req.outdir.resolve(), None
        return Path.cwd().resolve(), None
    if req.outfile.is_dir() and not req.outfile.is_symlink():
        raise UsageError(f"--outfile {req.outfile} is a directory")
    return req.outfile.parent.resolve(), req.outfile.name


def build_package(req: BuildRequest, *, progress: bool | None = None) -> BuildResult:
    builder = builder_for(req.type)
    builder.preflight(req)
    # Before any download: the tools (or the Docker image) must be there.
    tooling = select_tooling(
        req.tooling, req.tooling_image, builder.external_tools, builder.install_hint
    )
    sde = source_date_epoch()
    out_dir, out_name = _output_path(req)
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
    with private_directory("orbit-packager-build-") as stage:
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
        built.parent.mkdir(mode=0o700)
        builder.build(ctx, built)
        final = out_dir / (out_name or name)
        size, sha = place_private_file(built, final, mode=OUTPUT_MODE, commit=_result_in_place)
        used = f"docker:{tooling.image}" if isinstance(tooling, DockerTooling) else "native"
        return BuildResult(final, sha, size, version, req.type, target_summary(fetched), used)
