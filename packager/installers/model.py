"""What a reader finds in an installer: metadata, Orbit settings and the Orbit root's files."""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from packager.errors import PackagerError

# Readers never hold more than this of one member in memory (settings files, plists, tables);
# file contents are streamed to disk.
SMALL_LIMIT = 16 * 1024 * 1024
CHUNK = 1024 * 1024


class InstallerFormatError(PackagerError):
    """The file is not an installer we can read, or it is damaged."""


@dataclass
class InstallerContents:
    type: str  # deb | rpm | pkg.tar.zst | pkg | msi
    name: str  # package name (fleet-osquery) or MSI ProductName
    version: str
    arch: str  # amd64 | arm64 | universal
    # The ORBIT_* variables the agent receives, as it receives them. The enroll secret's value
    # is never kept: ORBIT_ENROLL_SECRET is left out and ``enroll_secret`` says whether one
    # is embedded (in the env file, secret.txt or the MSI's FLEET_SECRET property).
    settings: dict[str, str]
    enroll_secret: bool
    # Files of the Orbit root (/opt/orbit, C:\Program Files\Orbit), by their POSIX path
    # relative to it ("tuf-metadata.json", "bin/orbit/linux/stable/orbit"), extracted into the
    # work directory given to the reader.
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the reader noticed (not errors)


def orbit_relative(path: str, orbit_root: str) -> str | None:
    """``path`` (an absolute installed path, POSIX separators) relative to ``orbit_root``, or
    None outside it. Refuses names that could leave a directory."""
    parts = PurePosixPath("/" + path.lstrip("/")).parts
    root = PurePosixPath(orbit_root).parts
    if parts[: len(root)] != root or len(parts) == len(root):
        return None
    rel = parts[len(root) :]
    if any(p in ("", ".", "..") or "\0" in p for p in rel):
        raise InstallerFormatError(f"unsafe member name {path!r}")
    return "/".join(rel)


def extract_to(workdir: Path, rel: str, source: IO[bytes], size: int | None = None) -> Path:
    """Stream ``source`` to a new private file for Orbit-root path ``rel`` under ``workdir``.

    The file's name is derived from ``rel`` by us (its components were checked by
    :func:`orbit_relative`), it is created exclusively (O_EXCL, no symlink followed) and
    nothing outside ``workdir`` can be written."""
    dest = workdir / "root" / rel
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for parent in [dest.parent, *dest.parent.parents]:
        if parent == workdir:
            break
        if stat.S_ISLNK(os.lstat(parent).st_mode):  # only we create entries here
            raise InstallerFormatError(f"unsafe member name {rel!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(dest, flags, 0o600)
    except FileExistsError:
        raise InstallerFormatError(f"{rel} appears twice in the installer") from None
    written = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = source.read(CHUNK if size is None else min(CHUNK, size - written))
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
    if size is not None and written != size:
        raise InstallerFormatError(f"{rel} is truncated in the installer")
    return dest


def read_small(source: IO[bytes], what: str) -> bytes:
    """A metadata member (settings file, plist, table), refused beyond SMALL_LIMIT."""
    data = source.read(SMALL_LIMIT + 1)
    if len(data) > SMALL_LIMIT:
        raise InstallerFormatError(f"{what} is larger than {SMALL_LIMIT} bytes")
    return data


class BoundedReader(io.RawIOBase):
    """The next ``size`` bytes of ``source`` (one archive member's data); running out of
    bytes before that raises ``truncated`` as an InstallerFormatError."""

    def __init__(self, source: IO[bytes], size: int, truncated: str) -> None:
        self.source, self.left, self.truncated = source, size, truncated

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        data = self.source.read(n)
        if not data:
            raise InstallerFormatError(self.truncated)
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)
