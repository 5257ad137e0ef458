"""Safe extraction of ``.tar.gz`` targets (Fleet Desktop, osquery.app) next to the archive.

Every member is checked before anything is written: no absolute paths, no ``..``, no device
files or FIFOs, no link that points outside the destination, and bounded totals (size and
count), so a hostile or broken archive can neither escape the destination nor fill the disk.
Members are streamed in one pass; setuid/setgid/sticky bits are dropped.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from packager.errors import PackagerError

MAX_TOTAL_BYTES = 2 * 1024**3
MAX_MEMBERS = 200_000


class UnsafeArchiveError(PackagerError):
    """An archive target tries to write outside its destination or is too large."""


def _safe_name(name: str, archive: str) -> str:
    normalized = posixpath.normpath(name)
    if name.startswith("/") or normalized.startswith("..") or "\\" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the destination")
    if any(part == ".." for part in name.split("/")):
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
    return "" if normalized == "." else normalized


def extract_tar_gz(
    archive: Path,
    dest: Path,
    *,
    label: str | None = None,
    max_total: int = MAX_TOTAL_BYTES,
    max_members: int = MAX_MEMBERS,
) -> list[str]:
    """Extract ``archive`` into ``dest`` (created); return the member paths written."""
    shown = label or archive.name
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = 0
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise UnsafeArchiveError(f"{shown}: more than {max_members} members")
                name = _safe_name(member.name, shown)
                if not name:
                    continue
                target = dest / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True, mode=0o755)
                elif member.isfile():
                    total += member.size
                    if total > max_total:
                        raise UnsafeArchiveError(f"{shown}: more than {max_total} bytes unpacked")
                    _check_parent(target, dest, shown)
                    source = tar.extractfile(member)
                    if source is None:
                        raise UnsafeArchiveError(f"{shown}: cannot read member {name!r}")
                    mode = 0o755 if member.mode & 0o111 else 0o644
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(source, out, 1024 * 1024)
                    os.chmod(target, mode)
                elif member.issym() or member.islnk():
                    link = member.linkname
                    base = posixpath.dirname(name) if member.issym() else ""
                    resolved = posixpath.normpath(posixpath.join(base, link))
                    if link.startswith("/") or resolved.startswith(".."):
                        raise UnsafeArchiveError(
                            f"{shown}: link {name!r} -> {link!r} points outside the destination"
                        )
                    _check_parent(target, dest, shown)
                    if member.issym():
                        target.symlink_to(link)
                    else:
                        os.link(dest / resolved, target)
                else:
                    raise UnsafeArchiveError(
                        f"{shown}: member {name!r} is a device, FIFO or other special file"
                    )
                written.append(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileExistsError):
            raise UnsafeArchiveError(f"{shown}: member {exc.filename} appears twice") from None
        raise UnsafeArchiveError(f"{shown} is not a valid .tar.gz archive: {exc}") from None
    return written


def _check_parent(target: Path, dest: Path, shown: str) -> None:
    """Refuse to write through a symlinked directory created by an earlier member."""
    target.parent.mkdir(parents=True, exist_ok=True)
    real_parent = target.parent.resolve()
    if real_parent != dest.resolve() and dest.resolve() not in real_parent.parents:
        raise UnsafeArchiveError(
            f"{shown}: {target.name!r} would be written outside the destination"
        )
