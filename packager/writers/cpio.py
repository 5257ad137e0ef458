"""A streaming writer for gzip'd odc cpio archives: the ``Payload`` and ``Scripts`` of a macOS
flat package.

No Linux tool writes these reproducibly with macOS's ownership (GNU cpio drops the ``./``
prefix Apple's tools write and stamps real inode numbers and times), and no maintained PyPI
library writes odc, so the format (POSIX.1 "070707") is written here. Each file is read once:
the bytes go to the compressor and, in the same pass, to the POSIX cksum the BOM needs.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from packager.writers.cksum import Cksum
from packager.writers.parallel import GZIP_OS_UNKNOWN, ParallelGzip

CHUNK = 1024 * 1024
ADMIN_GID = 80  # what Apple's installers and mkbom -g 80 record


@dataclass(frozen=True)
class TreeEntry:
    """One item of a staged tree, as recorded in cpio and BOM."""

    name: str  # "." or "./relative/path"
    kind: str  # file | dir | symlink
    mode: int  # permission bits only
    size: int = 0
    cksum: int = 0
    link: str = ""
    mtime: int = 0


def ordered_tree(root: Path) -> list[tuple[str, Path]]:
    """Depth-first order with every directory listed before its contents, siblings by name."""
    out: list[tuple[str, Path]] = [(".", root)]

    def visit(directory: Path, prefix: str) -> None:
        for child in sorted(directory.iterdir(), key=lambda p: p.name):
            name = f"{prefix}/{child.name}"
            out.append((name, child))
            if child.is_dir() and not child.is_symlink():
                visit(child, name)

    visit(root, ".")
    return out


def _header(
    ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, name: bytes, size: int
) -> bytes:
    return (
        b"070707"
        + b"%06o" % 0  # dev
        + b"%06o" % (ino & 0o777777)
        + b"%06o" % mode
        + b"%06o" % uid
        + b"%06o" % gid
        + b"%06o" % nlink
        + b"%06o" % 0  # rdev
        + b"%011o" % mtime
        + b"%06o" % (len(name) + 1)
        + b"%011o" % size
        + name
        + b"\0"
    )


def write_cpio_gz(
    root: Path, out: Path, *, mtime: int | None = None, uid: int = 0, gid: int = ADMIN_GID
) -> list[TreeEntry]:
    """Write ``root`` as a gzip'd odc cpio to ``out``; return the entries (for the BOM).

    ``mtime`` (SOURCE_DATE_EPOCH) replaces every entry's time when given. Memory stays bounded:
    files are streamed in 1 MiB chunks.
    """
    entries: list[TreeEntry] = []
    # Level 6, deflated on every core (writers.parallel); mtime 0 and no file name in the
    # gzip header, as Python's gzip module wrote them: reproducible output.
    gz = ParallelGzip(6, os_byte=GZIP_OS_UNKNOWN)
    with out.open("wb") as raw:

        def write(data: bytes) -> None:
            raw.write(gz.compress(data))

        for ino, (name, path) in enumerate(ordered_tree(root), start=1):
            st = path.lstat()
            when = mtime if mtime is not None else int(st.st_mtime)
            perm = stat.S_IMODE(st.st_mode)
            encoded = name.encode("utf-8")
            if stat.S_ISDIR(st.st_mode):
                write(_header(ino, stat.S_IFDIR | perm, uid, gid, 2, when, encoded, 0))
                entries.append(TreeEntry(name, "dir", perm, mtime=when))
            elif stat.S_ISLNK(st.st_mode):
                target = str(path.readlink()).encode("utf-8")
                write(_header(ino, stat.S_IFLNK | perm, uid, gid, 1, when, encoded, len(target)))
                write(target)
                summer = Cksum()
                summer.update(target)
                entries.append(
                    TreeEntry(
                        name, "symlink", perm, len(target), summer.value(), target.decode(), when
                    )
                )
            elif stat.S_ISREG(st.st_mode):
                write(_header(ino, stat.S_IFREG | perm, uid, gid, 1, when, encoded, st.st_size))
                summer = Cksum()
                copied = 0
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        write(chunk)
                        summer.update(chunk)
                        copied += len(chunk)
                if copied != st.st_size:
                    raise OSError(f"{path} changed size while being archived")
                entries.append(TreeEntry(name, "file", perm, copied, summer.value(), mtime=when))
            else:
                raise ValueError(f"{path}: devices, FIFOs and sockets cannot go in a payload")
        write(_header(0, 0, 0, 0, 1, 0, b"TRAILER!!!", 0))
        raw.write(gz.flush())
    return entries
