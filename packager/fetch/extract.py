"""Safe extraction of ``.tar.gz`` targets (Fleet Desktop, osquery.app) next to the archive.

Archives are downloaded targets: hostile input, even signed. Every member is placed by its
*real* location, not its name:

* The archive is unpacked into a private temporary directory inside the destination, and
  only when every member has been accepted are its top-level entries renamed into place. A
  refused archive leaves nothing behind.
* Every path is opened one component at a time, relative to the directory opened before it
  (``openat``-style ``dir_fd`` calls) with ``O_NOFOLLOW``: no write, directory or link is ever
  made through a symlink, whether the archive planted it or not, and never outside.
* Symlinks are resolved against what is already extracted (following the links inside, as the
  kernel would) and refused when any step leaves the destination; they are resolved once more
  when everything is extracted, because a later member can change where an earlier link leads.
  Links that stay inside are kept, directory links included (``Versions/Current -> A`` in a
  macOS bundle).
* Hard links may only name a regular file already extracted, reached without any symlink.
* Device files, FIFOs, sparse files and unknown member types are refused; setuid, setgid and
  sticky bits are dropped (files are 0755 or 0644, directories 0755).
* Header data is bounded before it is read: names and link targets (GNU long names and pax
  ``path``/``linkpath`` included), extended headers, the number of members and the bytes
  unpacked. Errors show at most the first 200 characters of a name.

Why not ``tarfile.extractall(filter="data")``: the filter exists only from Python 3.10.12 and
3.11.4 (we support every 3.10), and it checks *paths* with ``os.path.realpath`` before writing
through them by path, which was bypassed by symlink chains longer than ``PATH_MAX``
(CVE-2025-4517, CVE-2025-4330, CVE-2025-4138, CVE-2024-12718; fixed only in 3.10.18, 3.11.13,
3.12.11 and 3.13.4). Nor does ``tarfile`` bound header data: it reads a whole GNU long name or
pax header into memory (a 450 KiB archive with a 100 MB name took 800 MB) and keeps every
member in ``TarFile.members``. So the stream is read here, with only the documented
``TarInfo.frombuf`` parsing each 512-byte header block, and written with ``dir_fd`` calls.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packager.errors import PackagerError

MAX_TOTAL_BYTES = 2 * 1024**3
# Fleet Desktop has a handful of members and osquery.app about a dozen.
MAX_MEMBERS = 20_000
# macOS's PATH_MAX is 1024: a longer name could not be installed there anyway.
MAX_NAME_BYTES = 1024
MAX_DEPTH = 64
MAX_PAX_HEADER_BYTES = 1024 * 1024
MAX_EXTENSION_HEADERS = 8  # pax / GNU long-name headers in a row before one member
MAX_LINK_HOPS = 40  # as Linux's symlink resolution
SHOWN_NAME_CHARS = 200

BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1024 * 1024
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_SPECIAL_TYPES = (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_EXTENSION_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XGLTYPE,
    *_PAX_TYPES,
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeArchiveError(PackagerError):
    """An archive target tries to write outside its destination, is malformed or too large."""


def shown_name(name: str) -> str:
    """``name`` for an error line: quoted, escaped, at most SHOWN_NAME_CHARS characters."""
    if len(name) > SHOWN_NAME_CHARS:
        return repr(name[:SHOWN_NAME_CHARS] + "…")
    return repr(name)


@dataclass
class _Member:
    index: int
    name: str
    type: bytes
    size: int
    mode: int
    linkname: str


def extract_tar_gz(
    archive: Path,
    dest: Path,
    *,
    label: str | None = None,
    max_total: int = MAX_TOTAL_BYTES,
    max_members: int = MAX_MEMBERS,
) -> list[str]:
    """Extract ``archive`` into ``dest`` (created); return the member paths written.

    Raises :class:`UnsafeArchiveError` (one line naming the archive and the member) and leaves
    ``dest`` as it was when any member is refused or the archive is malformed.
    """
    shown = label or archive.name
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        extractor = _Extractor(work, shown, max_total, max_members)
        extractor.run(archive)
        _publish(work, dest, shown)
        return extractor.written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(work: Path, dest: Path, shown: str) -> None:
    """Rename the top-level entries of ``work`` into ``dest``; all or nothing."""
    names = sorted(entry.name for entry in work.iterdir())
    for name in names:
        if os.path.lexists(dest / name):
            raise UnsafeArchiveError(
                f"{shown}: member {shown_name(name)} would replace an existing file"
            )
    moved: list[str] = []
    try:
        for name in names:
            (work / name).rename(dest / name)
            moved.append(name)
    except BaseException:
        for name in moved:
            with contextlib.suppress(OSError):
                (dest / name).rename(work / name)
        raise


class _Extractor:
    def __init__(self, root: Path, shown: str, max_total: int, max_members: int) -> None:
        self.root = root
        self.shown = shown
        self.max_total = max_total
        self.max_members = max_members
        self.written: list[str] = []
        self.members = 0
        self.total = 0
        self.symlinks: list[tuple[list[str], str]] = []

    def fail(self, message: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.shown}: {message}")

    # -- the archive stream ----------------------------------------------------------------
    def run(self, archive: Path) -> None:
        try:
            with gzip.open(archive, "rb") as stream:
                for member in self._members(stream):
                    self._extract(member, stream)
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            raise self.fail(f"is not a valid .tar.gz archive: {_reason(exc)}") from None
        # A later member can change where an earlier link leads: check every link again.
        for parts, target in self.symlinks:
            self._check_symlink(parts, target)

    def _members(self, stream: io.BufferedIOBase) -> Iterator[_Member]:
        index = 0
        extensions = 0
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        while True:
            buf = _read(stream, BLOCK)
            if not buf or buf == tarfile.NUL * BLOCK:
                return  # end of archive (or a stream without end blocks)
            if len(buf) < BLOCK:
                raise self.fail("is not a valid .tar.gz archive: truncated header")
            info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
            index += 1
            if info.size < 0:
                raise self.fail(f"header {index} has a negative size")
            if info.type in _EXTENSION_TYPES:
                extensions += 1
                if extensions > MAX_EXTENSION_HEADERS:
                    raise self.fail(
                        f"header {index}: more than {MAX_EXTENSION_HEADERS} extended headers "
                        "in a row"
                    )
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                what = "name" if info.type == tarfile.GNUTYPE_LONGNAME else "link target"
                if info.size > MAX_NAME_BYTES + 1:  # GNU tar counts the trailing NUL
                    raise self.fail(
                        f"header {index} declares a GNU long {what} of {info.size} bytes "
                        f"(limit {MAX_NAME_BYTES})"
                    )
                value = _text(self._data(stream, info.size).split(b"\0", 1)[0])
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = value
                else:
                    long_link = value
                continue
            if info.type in _PAX_TYPES or info.type == tarfile.XGLTYPE:
                if info.size > MAX_PAX_HEADER_BYTES:
                    raise self.fail(
                        f"header {index} declares a pax header of {info.size} bytes "
                        f"(limit {MAX_PAX_HEADER_BYTES})"
                    )
                records = self._pax(self._data(stream, info.size), index)
                if info.type == tarfile.XGLTYPE:
                    # Global headers (git archive's commit comment) name no member: only the
                    # keys that would change what is extracted are refused.
                    if records.keys() & {"path", "linkpath", "size"}:
                        raise self.fail(f"header {index}: a global pax header sets a path")
                    continue
                pax.update(records)
                continue
            extensions = 0
            self.members += 1
            if self.members > self.max_members:
                raise self.fail(f"more than {self.max_members} members")
            name = pax.get("path", long_name if long_name is not None else info.name)
            linkname = pax.get("linkpath", long_link if long_link is not None else info.linkname)
            size = info.size
            if "size" in pax:
                if not re.fullmatch(r"[0-9]{1,20}", pax["size"]):
                    raise self.fail(f"header {index}: bad pax size {shown_name(pax['size'])}")
                size = int(pax["size"])
            # Every member's data counts, extracted or skipped (a "./" entry, a link...).
            self.total += size
            if self.total > self.max_total:
                raise self.fail(f"more than {self.max_total} bytes unpacked")
            if any(key.startswith("GNU.sparse.") for key in pax):
                raise self.fail(f"member {shown_name(name)} is a sparse file (not supported)")
            long_name = long_link = None
            pax = {}
            member = _Member(index, name, info.type, size, info.mode, linkname)
            yield member
            # Whatever the member did not consume (data of links, directories...).
            self._skip(stream, member.size)

    def _data(self, stream: io.BufferedIOBase, size: int) -> bytes:
        """The ``size`` bytes of an extended header (bounded by the caller), padding skipped."""
        data = _read(stream, size)
        if len(data) < size:
            raise self.fail("is not a valid .tar.gz archive: unexpected end of data")
        self._skip(stream, 0, padding_of=size)
        return data

    def _skip(self, stream: io.BufferedIOBase, size: int, padding_of: int | None = None) -> None:
        length = padding_of if padding_of is not None else size
        remaining = size + (-length % BLOCK)
        while remaining > 0:
            chunk = stream.read(min(remaining, _CHUNK))
            if not chunk:
                raise self.fail("is not a valid .tar.gz archive: unexpected end of data")
            remaining -= len(chunk)

    def _pax(self, data: bytes, index: int) -> dict[str, str]:
        """Parse pax records ``"<len> <key>=<value>\\n"``."""
        records: dict[str, str] = {}
        data = data.rstrip(b"\0")
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 21)
            length_text = data[pos:space]
            if space < 0 or not length_text.isdigit():
                raise self.fail(f"header {index}: malformed pax record")
            length = int(length_text)
            record = data[space + 1 : pos + length]
            if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
                raise self.fail(f"header {index}: malformed pax record")
            key, sep, value = record[:-1].partition(b"=")
            if not sep:
                raise self.fail(f"header {index}: malformed pax record")
            records[_text(key)] = _text(value)
            pos += length
        return records

    # -- one member -------------------------------------------------------------------------
    def _parts(self, name: str, what: str = "member") -> list[str]:
        """The path components of a member name, or refuse it."""
        shown = shown_name(name)
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise self.fail(f"{what} {shown} is longer than {MAX_NAME_BYTES} bytes")
        if any("\udc80" <= c <= "\udcff" for c in name):
            raise self.fail(f"{what} {shown} is not valid UTF-8")
        if "\0" in name:
            raise self.fail(f"{what} {shown} contains a NUL character")
        if name.startswith("/") or "\\" in name:
            raise self.fail(f"{what} {shown} escapes the destination")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            depth = 0
            for part in parts:
                depth += -1 if part == ".." else 1
                if depth < 0:
                    raise self.fail(f"{what} {shown} escapes the destination")
            raise self.fail(f"{what} {shown} contains '..'")
        if len(parts) > MAX_DEPTH:
            raise self.fail(f"{what} {shown} is more than {MAX_DEPTH} directories deep")
        return parts

    def _extract(self, member: _Member, stream: io.BufferedIOBase) -> None:
        parts = self._parts(member.name)
        if not parts:
            return  # "./" itself
        shown = shown_name(member.name)
        kind = member.type
        if kind in _FILE_TYPES or kind == tarfile.DIRTYPE:
            pass
        elif kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
            if len(member.linkname.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise self.fail(f"link {shown} has a target longer than {MAX_NAME_BYTES} bytes")
        elif kind in _SPECIAL_TYPES:
            raise self.fail(f"member {shown} is a device, FIFO or other special file")
        else:
            raise self.fail(f"member {shown} has an unsupported type {kind!r}")
        try:
            parent = self._open_parent(parts, f"member {shown}")
        except OSError as exc:
            raise self.fail(f"cannot extract member {shown}: {_reason(exc)}") from None
        last = parts[-1]
        try:
            if kind == tarfile.DIRTYPE:
                self._make_dir(parent, last, shown)
            elif kind in _FILE_TYPES:
                self._write_file(parent, last, member, stream)
                member.size = 0  # consumed
            elif kind == tarfile.SYMTYPE:
                self._make_symlink(parent, parts, member)
            else:
                self._make_hardlink(parent, last, member)
        except FileExistsError:
            raise self.fail(f"member {shown} appears twice") from None
        except OSError as exc:
            raise self.fail(f"cannot extract member {shown}: {_reason(exc)}") from None
        finally:
            os.close(parent)
        self.written.append("/".join(parts))

    def _open_parent(self, parts: list[str], subject: str, *, create: bool = True) -> int:
        """Open the directory holding ``parts[-1]``, one component at a time without following
        any symlink (missing directories are created 0755 when ``create``). ``subject`` names
        the member in errors."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT and create:
                        os.mkdir(part, 0o700, dir_fd=fd)
                        next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                        os.fchmod(next_fd, 0o755)
                    elif exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                        where = shown_name("/".join(parts[: i + 1]))
                        raise self.fail(
                            f"{subject} goes through {where}, which is {what}"
                        ) from None
                    else:
                        raise
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _make_dir(self, parent: int, last: str, shown: str) -> None:
        try:
            os.mkdir(last, 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.stat(last, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"
                raise self.fail(f"directory member {shown} would replace {what}") from None
        fd = os.open(last, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)

    def _write_file(
        self, parent: int, last: str, member: _Member, stream: io.BufferedIOBase
    ) -> None:
        mode = 0o755 if member.mode & 0o111 else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(last, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            remaining = member.size
            while remaining:
                chunk = stream.read(min(remaining, _CHUNK))
                if not chunk:
                    raise self.fail("is not a valid .tar.gz archive: unexpected end of data")
                out.write(chunk)
                remaining -= len(chunk)
            os.fchmod(out.fileno(), mode)
        self._skip(stream, 0, padding_of=member.size)

    def _make_symlink(self, parent: int, parts: list[str], member: _Member) -> None:
        self._check_symlink(parts, member.linkname)
        os.symlink(member.linkname, parts[-1], dir_fd=parent)
        self.symlinks.append((parts, member.linkname))

    def _make_hardlink(self, parent: int, last: str, member: _Member) -> None:
        shown = shown_name(member.name)
        target = shown_name(member.linkname)
        refused = self.fail(f"link {shown} -> {target} points outside the destination")
        try:
            target_parts = self._parts(member.linkname, "link target")
        except UnsafeArchiveError:
            raise refused from None
        if not target_parts:
            raise refused
        subject = f"hard link {shown} -> {target}"
        try:
            source_dir = self._open_parent(target_parts, subject, create=False)
        except FileNotFoundError:
            raise self.fail(
                f"hard link {shown} -> {target} does not name a file extracted before it"
            ) from None
        try:
            st = os.stat(target_parts[-1], dir_fd=source_dir, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise self.fail(f"hard link {shown} -> {target} does not name a regular file")
            os.link(
                target_parts[-1],
                last,
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise self.fail(
                f"hard link {shown} -> {target} does not name a file extracted before it"
            ) from None
        finally:
            os.close(source_dir)

    def _check_symlink(self, parts: list[str], target: str) -> None:
        """Refuse the symlink at ``parts`` -> ``target`` if resolving it, through the links
        already extracted, steps outside the destination at any point."""
        name = "/".join(parts)
        refused = self.fail(
            f"link {shown_name(name)} -> {shown_name(target)} points outside the destination"
        )
        if not target or target.startswith("/") or "\\" in target or "\0" in target:
            raise refused
        # The link's own directory is resolved too (it holds no link, as _open_parent refused
        # any on the way, but this check does not rely on it). ``where`` only ever holds real
        # directories, so os.lstat below follows nothing; the root is our private directory.
        where: list[str] = []
        pending = list(reversed([*parts[:-1], *target.split("/")]))
        hops = 0
        missing = False  # past a missing component: the rest is resolved by name only
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not where:
                    raise refused
                where.pop()
                continue
            if missing:
                where.append(part)
                continue
            path = self.root.joinpath(*where, part)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                missing = True
                where.append(part)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise self.fail(f"link {shown_name(name)} -> {shown_name(target)} loops")
                inner = str(path.readlink())
                if inner.startswith("/"):
                    raise refused
                pending.extend(reversed(inner.split("/")))
            else:
                if not stat.S_ISDIR(st.st_mode):
                    missing = True  # a file used as a directory: resolution stops here
                where.append(part)


def _read(stream: io.BufferedIOBase, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _reason(exc: BaseException) -> str:
    """A short reason for an error line, never a (possibly huge) file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text if len(text) <= SHOWN_NAME_CHARS else text[:SHOWN_NAME_CHARS] + "…"
