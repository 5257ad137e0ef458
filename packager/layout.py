"""What goes where in the installed tree, shared by every installer format.

The Orbit root (``/opt/orbit`` on Linux and macOS, ``C:\\Program Files\\Orbit`` on Windows)
holds the same files everywhere: certificates, the TUF metadata Orbit trusts, the fetched
targets under ``bin/<name>/<platform>/<channel>/<file>``, an empty ``staging/``. A format adds
its own entries (service files, symlinks) to the :class:`Payload`, the one model of package
contents every builder consumes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from packager.fetch.client import FLEET_UPDATE_URL
from packager.fetch.targets import FetchedTarget
from packager.options import BuildRequest
from packager.repo.fsutil import make_dirs

DIR_MODE = 0o755
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644

# The CA bundle installed as certs.pem: a pinned copy of Mozilla's bundle (certifi's cacert.pem),
# like the fixed bundle fleetctl embeds. Never the host's own bundle, which may hold local or
# TLS-inspection CAs (it did on our build machines) and changes under us, breaking reproducible
# builds. Refresh with scripts/update_certs.py, which also updates the hash below.
CA_BUNDLE = Path(__file__).resolve().parent / "data" / "certs.pem"
CA_BUNDLE_SOURCE = "certifi 2026.10.19.post1"
CA_BUNDLE_SHA256 = "d87887200c9a705dccc937b9b83b5e67e47024c4a4b7f9dd15700c72e0f55453"
EXEC_MODE = 0o755


@dataclass(frozen=True)
class Entry:
    """One item of the installed tree. ``path`` is absolute in the installed system."""

    path: str
    kind: str  # file | dir | symlink
    mode: int
    source: Path | None = None  # staged content, for files
    target: str | None = None  # for symlinks


@dataclass
class Payload:
    """Entries of an installer, in a stable order (sorted by path when built)."""

    entries: list[Entry] = field(default_factory=list)

    def add_tree(self, staged_root: Path, install_root: str) -> None:
        """Add every file, directory and symlink below ``staged_root`` at ``install_root``.

        A symlink, to a file or to a directory, becomes a symlink entry with its target as
        written and is never followed (``os.walk`` lists links to directories among the
        directories, so they were lost); real directories are walked."""
        self.entries.append(Entry(install_root, "dir", DIR_MODE))
        self._add_children(staged_root, install_root)

    def _add_children(self, directory: Path, base: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            path = Path(child.path)
            dest = f"{base}/{child.name}"
            if child.is_symlink():
                self.entries.append(Entry(dest, "symlink", 0o777, target=str(path.readlink())))
            elif child.is_dir(follow_symlinks=False):
                self.entries.append(Entry(dest, "dir", DIR_MODE))
                self._add_children(path, dest)
            elif child.is_file(follow_symlinks=False):
                mode = child.stat(follow_symlinks=False).st_mode & 0o777
                self.entries.append(Entry(dest, "file", mode, source=path))
            else:
                raise ValueError(f"{path}: not a file, directory or symlink")

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def sorted(self) -> list[Entry]:
        return sorted(self.entries, key=lambda e: e.path)


def _write(path: Path, data: bytes, mode: int) -> None:
    make_dirs(path.parent, DIR_MODE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _copy(src: Path, dst: Path, mode: int) -> None:
    make_dirs(dst.parent, DIR_MODE)
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)


def orbit_metadata_json(trusted: dict[str, bytes]) -> bytes:
    """Orbit's local TUF store: one JSON object of the raw role files (go-tuf's filestore)."""
    doc = {name: json.loads(raw) for name, raw in sorted(trusted.items())}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def write_orbit_root(
    req: BuildRequest,
    root: Path,
    trusted_metadata: dict[str, bytes],
    *,
    write_secret_file: bool,
) -> None:
    """Write the files every format puts in the Orbit root (targets are fetched separately)."""
    make_dirs(root / "staging", DIR_MODE)
    _copy(CA_BUNDLE, root / "certs.pem", PUBLIC_MODE)
    if req.fleet_certificate:
        _copy(req.fleet_certificate, root / "fleet.pem", PUBLIC_MODE)
    if req.update_tls_certificate:
        _copy(req.update_tls_certificate, root / "update.pem", PUBLIC_MODE)
    if req.fleet_tls_client_certificate and req.fleet_tls_client_key:
        _copy(req.fleet_tls_client_certificate, root / "fleet_client.crt", SECRET_MODE)
        _copy(req.fleet_tls_client_key, root / "fleet_client.key", SECRET_MODE)
    if req.update_tls_client_certificate and req.update_tls_client_key:
        _copy(req.update_tls_client_certificate, root / "update_client.crt", SECRET_MODE)
        _copy(req.update_tls_client_key, root / "update_client.key", SECRET_MODE)
    if req.osquery_flagfile:
        # Only when given: an empty file would override the host's flags (Fleet #50720).
        _copy(req.osquery_flagfile, root / "osquery.flags", SECRET_MODE)
    if write_secret_file and req.enroll_secret:
        _write(root / "secret.txt", req.enroll_secret.encode(), SECRET_MODE)
    store = orbit_metadata_json(trusted_metadata)
    if req.update_url.rstrip("/") == FLEET_UPDATE_URL:
        # Fleet's server: the current store plus the old name for downgrades to orbit <= 1.37.
        _write(root / "updates-metadata.json", store, SECRET_MODE)
        _write(root / "tuf-metadata.json", store, SECRET_MODE)
    else:
        _write(root / "tuf-metadata.json", store, SECRET_MODE)


def target_summary(fetched: list[FetchedTarget]) -> list[dict[str, object]]:
    return [
        {
            "path": f.spec.path,
            "version": f.version,
            "length": f.info.length,
            "hashes": dict(f.info.hashes),
        }
        for f in fetched
    ]
