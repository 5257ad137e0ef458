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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from packager import signals
from packager.errors import UsageError
from packager.fetch.client import UpdateClient, default_cache_dir, load_trusted_root
from packager.fetch.http import HttpOptions
from packager.fetch.progress import download_progress
from packager.fetch.targets import (
    FetchedTarget,
    TargetSelection,
    fetch_many,
    installer_version,
)
from packager.formats.base import BuildContext, Builder
from packager.layout import target_summary, write_orbit_root
from packager.options import LINUX_TYPES, BuildRequest
from packager.repo.fsutil import place_private_file
from packager.tooling import DockerTooling, Tooling, select_tooling

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
    # Each format's module is imported only when a build asks for it: an rpm build does not
    # pay for the MSI schema or the pkg writers.
    if package_type in LINUX_TYPES:
        from packager.formats.linux import LinuxBuilder

        return LinuxBuilder(package_type)
    if package_type == "msi":
        from packager.formats.msi import MsiBuilder

        return MsiBuilder()
    if package_type == "pkg":
        from packager.formats.pkg import PkgBuilder

        return PkgBuilder()
    raise UsageError(
        f"--type {package_type} is not supported", hint="use deb, rpm, pkg.tar.zst, pkg or msi"
    )


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


def _output_path(req: BuildRequest, created: list[Path]) -> tuple[Path, str | None]:
    """The output's directory (resolved) and file name (None: the builder's default); the
    directories made for ``--outdir`` are appended to ``created``, deepest last.

    Only the directory is resolved: a symbolic link at the output path itself is replaced by
    the installer, never followed (in a sticky /tmp it may belong to someone else)."""
    if req.outfile is None:
        if req.outdir is not None:
            missing = [d for d in (req.outdir, *req.outdir.parents) if not d.exists()]
            # Made private: the installer in it holds the enroll secret (fleetctl makes
            # build/ 0700 the same way).
            req.outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            created.extend(reversed(missing))
            return req.outdir.resolve(), None
        return Path.cwd().resolve(), None
    if req.outfile.is_dir() and not req.outfile.is_symlink():
        raise UsageError(f"--outfile {req.outfile} is a directory")
    return req.outfile.parent.resolve(), req.outfile.name


def build_package(req: BuildRequest, *, progress: bool | None = None) -> BuildResult:
    return build_packages([req], progress=progress)[0]


@dataclass
class _Job:
    """One installer of a run: what was asked, who builds it, where it goes."""

    request: BuildRequest
    builder: Builder
    tooling: Tooling
    out_dir: Path
    out_name: str | None


@dataclass
class _Staged:
    """A job with its verified targets staged: ready to build into ``built``."""

    job: _Job
    ctx: BuildContext
    built: Path
    final: Path


def build_packages(
    requests: Sequence[BuildRequest], *, progress: bool | None = None
) -> list[BuildResult]:
    """Build one installer per request. The requests come from one command line, so they share
    the update server, trusted root and cache: one TUF refresh, then every target downloaded
    once, all at the same time (the client's verified cache serves a shared target to the
    other installers). Builds run in parallel, each in its own private stage; the installers
    are put in place only once every build succeeded, so a failure leaves no output at all."""
    created: list[Path] = []  # --outdir directories this run made: removed again on failure
    try:
        return _build_packages(requests, created, progress)
    except BaseException:
        for directory in reversed(created):
            with contextlib.suppress(OSError):  # not empty: something else is in it now
                directory.rmdir()
        raise


def _build_packages(
    requests: Sequence[BuildRequest], created: list[Path], progress: bool | None
) -> list[BuildResult]:
    first = requests[0]
    jobs: list[_Job] = []
    for req in requests:
        builder = builder_for(req.type)
        builder.preflight(req)
        # Before any download: the tools (or the Docker image) must be there.
        tooling = select_tooling(
            req.tooling, req.tooling_image, builder.external_tools, builder.install_hint
        )
        out_dir, out_name = _output_path(req, created)
        if not out_dir.is_dir():
            raise UsageError(f"output directory {out_dir} does not exist")
        if not os.access(out_dir, os.W_OK):
            raise UsageError(f"output directory {out_dir} is not writable")
        jobs.append(_Job(req, builder, tooling, out_dir, out_name))
    sde = source_date_epoch()
    roots = load_trusted_root(first.update_url, first.update_roots)
    http = HttpOptions(
        ca_bundle=first.update_tls_certificate,
        client_cert=first.update_tls_client_certificate,
        client_key=first.update_tls_client_key,
    )
    cache = None if first.no_cache else (first.cache_dir or default_cache_dir())
    with private_directory("orbit-packager-build-") as top:
        staged: list[tuple[_Job, Path, list[FetchedTarget]]] = []
        with UpdateClient(
            first.update_url, roots, cache_dir=cache, http=http, offline=first.offline
        ) as client:
            wanted: list[tuple[TargetSelection, Path]] = []
            for index, job in enumerate(jobs):
                stage = top / f"{index}-{job.request.type}"
                stage.mkdir(mode=0o700)
                selection = TargetSelection(
                    job.request.type,
                    job.request.arch or "amd64",
                    job.request.orbit_channel,
                    job.request.osqueryd_channel,
                    job.request.desktop_channel,
                    job.request.fleet_desktop,
                )
                wanted.append((selection, job.builder.orbit_root(stage)))
            # Every target of every installer at once; one shared by several is downloaded
            # once (packager.fetch.targets.fetch_many).
            with download_progress(client.http, enabled=progress):
                fetched_all = fetch_many(client, wanted)
            for index, (job, fetched) in enumerate(zip(jobs, fetched_all, strict=True)):
                staged.append((job, top / f"{index}-{job.request.type}", fetched))
            trusted = client.trusted_metadata()
        ready: list[_Staged] = []
        for job, stage, fetched in staged:
            req, builder = job.request, job.builder
            version = installer_version(fetched)
            secret_file = builder.writes_secret_file
            write_orbit_root(req, builder.orbit_root(stage), trusted, write_secret_file=secret_file)
            ctx = BuildContext(req, version, stage, fetched, sde, job.tooling, verbose=req.verbose)
            name = builder.default_filename(req, version)
            final = job.out_dir / (job.out_name or name)
            ready.append(_Staged(job, ctx, stage / "out" / name, final))
        finals = [r.final for r in ready]
        for final in finals:
            if finals.count(final) > 1:
                raise UsageError(f"two installers of this run would both be written to {final}")
        _run_builds(ready)
        results = []
        for r in ready:
            size, sha = place_private_file(
                r.built, r.final, mode=OUTPUT_MODE, commit=_result_in_place
            )
            ran = r.job.tooling
            used = f"docker:{ran.image}" if isinstance(ran, DockerTooling) else "native"
            summary = target_summary(r.ctx.fetched)
            results.append(
                BuildResult(r.final, sha, size, r.ctx.version, r.job.request.type, summary, used)
            )
        return results


def _build_one(staged: _Staged) -> None:
    staged.built.parent.mkdir(mode=0o700)
    staged.job.builder.build(staged.ctx, staged.built)


def _run_builds(jobs: list[_Staged]) -> None:
    """Every build at once, each in a process of its own (packager.processes): one alone runs
    here."""
    if len(jobs) == 1:
        _build_one(jobs[0])
        return
    from packager.processes import run_each

    run_each(_build_one, jobs)
