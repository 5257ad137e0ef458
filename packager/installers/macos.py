"""Reader of macOS flat packages (.pkg): ours (packager/formats/pkg.py) and fleetctl's.

A flat package is a xar archive (a 28-byte big-endian header, a zlib-compressed XML table of
contents, then the heap the TOC points into) holding ``Distribution`` and a component
``base.pkg/{PackageInfo, Payload, Scripts, Bom}``; the Payload is a gzip'd odc cpio of the
installed tree. No maintained Python library reads xar (PyPI's xar projects are abandoned or
write-only) and the readers must not need external tools (bsdtar is absent from many hosts), so
both layers are parsed here, streaming: the Payload goes once from the heap through gzip to the
Orbit root's files, and memory stays bounded whatever its size.

The enroll secret's value is never read: ``secret.txt`` is skipped by its cpio header (only its
size is looked at) and ORBIT_ENROLL_SECRET, if a plist carries it, is dropped on sight. (A file
elsewhere in the Orbit root that ORBIT_ENROLL_SECRET_PATH names is extracted before the plist
can be read, then deleted and left out of ``files``.)
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import plistlib
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, cast
from xml.etree import ElementTree as ET
from xml.parsers import expat

from packager.installers.model import (
    CHUNK,
    SMALL_LIMIT,
    BoundedReader,
    InstallerContents,
    InstallerFormatError,
    extract_to,
    orbit_relative,
    read_small,
)

ORBIT_ROOT = "/opt/orbit"
LAUNCH_DAEMON = "/Library/LaunchDaemons/com.fleetdm.orbit.plist"
SECRET_FILE = "secret.txt"  # noqa: S105 - a file name
SECRET_KEY = "ORBIT_ENROLL_SECRET"  # noqa: S105 - the name of the variable
SECRET_PATH_KEY = "ORBIT_ENROLL_SECRET_PATH"  # noqa: S105 - the name of the variable
ARCHES = {"arm64": "arm64", "x86_64": "amd64"}  # Distribution hostArchitectures -> ours

HEADER = struct.Struct(">4sHHQQI")
MAX_HEADER = 4096  # xar allows a longer header (a named checksum algorithm); never this long
MAX_XML_DEPTH = 256
MAX_NAME = 4096  # cpio name, NUL included (macOS PATH_MAX is 1024)
MAX_SYMLINK = 4096
MAX_ENTRIES = 500_000  # cpio entries; Orbit payloads have a few hundred
# Gzip bomb guard: the cpio stream may not expand beyond this many times the Payload's bytes
# in the file (binaries compress 2-4x; deflate's ceiling is about 1000x), with a floor for
# small payloads. Every decompressed byte counts (headers, names, data, padding).
MAX_EXPANSION = 100
EXPANSION_FLOOR = 64 * 1024 * 1024
_OCTAL = re.compile(rb"[0-7]+")
_DIGITS = re.compile(r"\s*[0-9]{1,19}\s*")
_HASHES = {"sha1", "md5", "sha256", "sha512"}
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000
# Decoding errors of the standard library (stream, compression and parsing); our own checks
# raise InstallerFormatError with a message of their own.
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, expat.ExpatError)
_VALUE_ERRORS = (ValueError, struct.error, OverflowError)


def _shown(text: str) -> str:
    """A name from the archive, fit for a one-line message."""
    text = text[:200]
    return text if text.isprintable() else repr(text)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class _Member:
    """A file of the xar archive, as its TOC describes it."""

    path: str  # "base.pkg/Payload"
    offset: int  # in the heap
    length: int  # bytes in the heap
    size: int  # bytes once decoded
    encoding: str
    checksum_style: str | None  # archived-checksum (of the heap bytes)
    checksum: str


# -- XML -----------------------------------------------------------------------------------


def _parse_xml(data: bytes, what: str) -> ET.Element:
    """``data`` as an element tree; DTDs and entity declarations are refused (billion laughs,
    external entities): none of the XML of a pkg (TOC, PackageInfo, Distribution) has one.

    expat is driven directly (defusedxml is not a dependency) so that the refusal happens in
    the parser, before any expansion."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise InstallerFormatError(f"{what} is nested too deeply")
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(tag)

    def refuse(*_args: object) -> int:
        raise InstallerFormatError(f"{what} declares a DTD or entities (refused)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) or "malformed"
        raise InstallerFormatError(f"{what} is not well-formed XML ({reason})") from None
    return builder.close()


def _number(text: str | None, what: str) -> int:
    if text is None or not _DIGITS.fullmatch(text):
        raise InstallerFormatError(f"{what} is not a number in the TOC")
    return int(text)


# -- xar -----------------------------------------------------------------------------------


def _toc_members(toc: ET.Element) -> dict[str, _Member]:
    """Every file of the TOC with data, by its archive path (nested <file> elements)."""
    members: dict[str, _Member] = {}
    seen: set[str] = set()
    stack = [(element, "") for element in reversed(toc.findall("file"))]
    while stack:  # iterative: the depth of nesting is the archive's choice
        element, parent = stack.pop()
        name = element.findtext("name") or ""
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise InstallerFormatError(f"unsafe name {name[:200]!r} in the TOC")
        path = f"{parent}/{name}" if parent else name
        if path in seen:
            raise InstallerFormatError(f"{_shown(path)} appears twice in the TOC")
        seen.add(path)
        data = element.find("data")
        if (element.findtext("type") or "file").strip() == "file" and data is not None:
            encoding = data.find("encoding")
            checksum = data.find("archived-checksum")
            style = checksum.get("style", "").lower() if checksum is not None else ""
            members[path] = _Member(
                path=path,
                offset=_number(data.findtext("offset"), f"{_shown(path)} offset"),
                length=_number(data.findtext("length"), f"{_shown(path)} length"),
                size=_number(data.findtext("size"), f"{_shown(path)} size"),
                encoding=(encoding.get("style", "") if encoding is not None else "").strip().lower()
                or "application/octet-stream",
                checksum_style=style if style in _HASHES else None,
                checksum=((checksum.text or "") if checksum is not None else "").strip().lower(),
            )
        stack.extend((child, path) for child in reversed(element.findall("file")))
    return members


class _Region(io.RawIOBase):
    """``length`` bytes of the archive from ``start``, hashed as they are read; reads never
    leave the region (the archive's file object is shared, so every read seeks)."""

    def __init__(self, f: IO[bytes], start: int, member: _Member) -> None:
        self.f, self.pos, self.left, self.member = f, start, member.length, member
        self.digest: _Digest | None = (
            hashlib.new(member.checksum_style) if member.checksum_style else None
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        self.f.seek(self.pos)
        data = self.f.read(n)
        if not data:
            raise InstallerFormatError(
                f"{_shown(self.member.path)} is truncated (the heap ends early)"
            )
        if self.digest is not None:
            self.digest.update(data)
        buffer[: len(data)] = data
        self.pos += len(data)
        self.left -= len(data)
        return len(data)

    def verify(self) -> None:
        """Read what is left and compare the archived checksum (bsdtar's "Sumcheck")."""
        while self.read(CHUNK):
            pass
        if self.digest is not None and self.digest.hexdigest() != self.member.checksum:
            raise InstallerFormatError(
                f"{_shown(self.member.path)} does not match its TOC checksum"
            )


class _ZlibReader(io.RawIOBase):
    """xar's "application/x-gzip" encoding: a zlib (or gzip) stream, inflated in chunks."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.inflater.eof:
            data = self.pending or self.raw.read(CHUNK)
            if not data:
                raise InstallerFormatError("a compressed member of the pkg is truncated")
            out = self.inflater.decompress(data, len(buffer))
            self.pending = self.inflater.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0


class _Capped(io.RawIOBase):
    """``source``, refused (``message``) once more than ``limit`` bytes come out of it."""

    def __init__(self, source: IO[bytes], limit: int, message: str) -> None:
        self.source, self.limit, self.message = source, limit, message
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(min(len(buffer), self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise InstallerFormatError(self.message)
        buffer[: len(data)] = data
        return len(data)


class _Xar:
    """An open xar archive: its members and a way to read each, decoded and verified."""

    def __init__(self, f: IO[bytes], name: str) -> None:
        self.f = f
        self.notes: list[str] = []
        header = f.read(HEADER.size)
        if len(header) != HEADER.size or header[:4] != b"xar!":
            raise InstallerFormatError(f"{name} is not a pkg (no xar header)")
        _magic, header_size, version, toc_length, toc_size, _alg = HEADER.unpack(header)
        if version != 1 or not HEADER.size <= header_size <= MAX_HEADER:
            raise InstallerFormatError(f"{name}: unsupported xar header (version {version})")
        if toc_length > SMALL_LIMIT or toc_size > SMALL_LIMIT:
            raise InstallerFormatError(f"{name}: the xar TOC is larger than {SMALL_LIMIT} bytes")
        f.seek(header_size)
        compressed = f.read(toc_length)
        if len(compressed) != toc_length:
            raise InstallerFormatError(f"{name}: the xar TOC is truncated")
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(compressed, SMALL_LIMIT + 1)
        except zlib.error:
            raise InstallerFormatError(f"{name}: the xar TOC is not zlib data") from None
        if len(text) > SMALL_LIMIT:
            raise InstallerFormatError(f"{name}: the xar TOC is larger than {SMALL_LIMIT} bytes")
        if not inflater.eof:
            raise InstallerFormatError(f"{name}: the xar TOC is truncated")
        root = _parse_xml(text, "the xar TOC")
        toc = root.find("toc")
        if root.tag != "xar" or toc is None:
            raise InstallerFormatError(f"{name}: the xar TOC has no <toc>")
        self.heap_start = header_size + toc_length
        self.heap_size = os.fstat(f.fileno()).st_size - self.heap_start
        self.members = _toc_members(toc)
        for member in self.members.values():
            self._check_bounds(member.path, member.offset, member.length)
        # The signature (productsign, rcodesign, apple-platform-py) covers the TOC checksum;
        # reading needs neither, and verifying the chain to Apple is not this reader's job.
        if toc.find("signature") is not None or toc.find("x-signature") is not None:
            self.notes.append("the pkg is signed (the signature is not verified by this reader)")
        self._verify_toc(toc, compressed)

    def _check_bounds(self, what: str, offset: int, length: int) -> None:
        if offset + length > self.heap_size:
            raise InstallerFormatError(
                f"{what} lies outside the file (heap offset {offset}, length {length}, "
                f"heap of {max(self.heap_size, 0)} bytes)"
            )

    def _verify_toc(self, toc: ET.Element, compressed: bytes) -> None:
        """The heap's copy of the compressed TOC's digest (what signatures sign)."""
        checksum = toc.find("checksum")
        if checksum is None:
            return
        style = checksum.get("style", "").lower()
        if style == "none":
            return
        if style not in _HASHES:
            self.notes.append(f"TOC checksum style {style[:20]!r} not verified")
            return
        offset = _number(checksum.findtext("offset"), "TOC checksum offset")
        size = _number(checksum.findtext("size"), "TOC checksum size")
        self._check_bounds("the TOC checksum", offset, size)
        self.f.seek(self.heap_start + offset)
        if self.f.read(size) != hashlib.new(style, compressed).digest():
            raise InstallerFormatError("the xar TOC does not match its checksum (damaged pkg)")

    def open(self, member: _Member) -> tuple[io.BufferedReader, _Region, _Capped]:
        """The decoded bytes of ``member`` (never more than its TOC size), the heap region
        (to verify once read) and the size counter."""
        region = _Region(self.f, self.heap_start + member.offset, member)
        raw: IO[bytes] = io.BufferedReader(region)
        encoding = member.encoding
        decoded: IO[bytes]
        if encoding == "application/octet-stream":
            decoded = raw
        elif encoding in ("application/x-gzip", "application/zlib", "application/x-zlib"):
            decoded = io.BufferedReader(_ZlibReader(raw))
        elif encoding == "application/x-bzip2":
            decoded = bz2.BZ2File(raw)
        elif encoding in ("application/x-lzma", "application/x-xz"):
            decoded = lzma.LZMAFile(raw)  # noqa: SIM115 - owns nothing: a view of the open archive
        else:
            raise InstallerFormatError(
                f"{_shown(member.path)} is stored with encoding {encoding[:60]!r}, which this "
                "reader does not support (octet-stream, gzip, bzip2, xz/lzma)"
            )
        capped = _Capped(decoded, member.size, f"{_shown(member.path)} is larger than its TOC says")
        return io.BufferedReader(capped), region, capped

    def read_small(self, member: _Member) -> bytes:
        stream, region, _capped = self.open(member)
        data = read_small(stream, member.path)
        region.verify()
        if len(data) != member.size:
            raise InstallerFormatError(f"{_shown(member.path)} is shorter than its TOC says")
        return data


# -- package metadata ----------------------------------------------------------------------


def _component(xar: _Xar, name: str) -> tuple[str, _Member, _Member]:
    """The component package: ``base.pkg/`` in a product archive (ours, fleetctl's), or the
    archive itself for a bare component package. Returns (prefix, PackageInfo, Payload)."""
    infos = sorted(
        p
        for p in xar.members
        if p == "PackageInfo" or (p.endswith("/PackageInfo") and p.count("/") == 1)
    )
    if not infos:
        raise InstallerFormatError(f"{name} has no PackageInfo: not an installer package")
    if len(infos) > 1:
        raise InstallerFormatError(
            f"{name} holds {len(infos)} component packages; fleetctl and orbit-packager "
            "write one (base.pkg)"
        )
    prefix = infos[0][: -len("PackageInfo")]
    payload = xar.members.get(prefix + "Payload")
    if payload is None:
        raise InstallerFormatError(f"{name} has no {_shown(prefix)}Payload")
    return prefix, xar.members[infos[0]], payload


def _arch(distribution: bytes | None) -> str:
    """hostArchitectures of the Distribution's <options>: arm64 -> arm64, x86_64 -> amd64,
    both (or none said) -> universal."""
    if distribution is None:
        return "universal"
    options = _parse_xml(distribution, "Distribution").find("options")
    wanted = options.get("hostArchitectures", "") if options is not None else ""
    arches = {ARCHES.get(a.strip(), a.strip()) for a in wanted.split(",") if a.strip()}
    return arches.pop() if len(arches) == 1 else "universal"


def _environment(data: bytes) -> tuple[dict[str, str], bool]:
    """The LaunchDaemon's EnvironmentVariables without the enroll secret, and whether it had
    one. plistlib refuses entity declarations itself (a plist legitimately has a DOCTYPE)."""
    try:
        plist = plistlib.loads(data)
    except (plistlib.InvalidFileException, expat.ExpatError, ValueError, EOFError):
        raise InstallerFormatError(f"{LAUNCH_DAEMON} is not a readable plist") from None
    env = plist.get("EnvironmentVariables", {}) if isinstance(plist, dict) else None
    if not isinstance(env, dict):
        raise InstallerFormatError(f"{LAUNCH_DAEMON}: EnvironmentVariables is not a dictionary")
    settings: dict[str, str] = {}
    secret = False
    for key, value in env.items():
        if key == SECRET_KEY:  # before the type check: no message ever describes the value
            secret = secret or bool(value)
            continue
        if not isinstance(value, str):
            raise InstallerFormatError(f"{LAUNCH_DAEMON}: {key[:80]!r} is not a string")
        settings[key] = value
    return settings, secret


# -- payload -------------------------------------------------------------------------------


def _octal(field: bytes, what: str) -> int:
    if not _OCTAL.fullmatch(field):
        raise InstallerFormatError(f"bad cpio header in the Payload ({what})")
    return int(field, 8)


def _payload_path(raw: bytes, is_dir: bool) -> str:
    """A cpio name ("./opt/orbit/x", "opt/orbit/x") as an absolute path; names that are
    absolute or carry ``..``, ``.`` or empty components are refused, wherever they point."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InstallerFormatError("a Payload name is not UTF-8") from None
    if text in (".", "./"):
        return "/"
    rel = text[2:] if text.startswith("./") else text
    if is_dir and rel.endswith("/"):
        rel = rel[:-1]
    if rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
        raise InstallerFormatError(f"unsafe member name {text[:200]!r} in the Payload")
    return "/" + rel


class _PayloadWalk:
    """What one pass over the Payload's cpio collects."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.files: dict[str, Path] = {}
        self.sizes: dict[str, int] = {}  # every regular file's size (duplicates, secret path)
        self.plist: bytes | None = None
        self.notes: list[str] = []

    def walk(self, cpio: IO[bytes], budget: int) -> None:
        """odc ("070707"): a 76-byte octal header, the NUL-terminated name, the data; no
        padding. Headers are parsed one at a time; data is streamed."""
        declared = 0
        for _ in range(MAX_ENTRIES):
            header = cpio.read(76)
            if len(header) != 76:
                raise InstallerFormatError("the Payload ends before its cpio trailer")
            if header[:6] != b"070707":
                raise InstallerFormatError("bad cpio header in the Payload (not odc)")
            mode = _octal(header[18:24], "mode")
            namesize = _octal(header[59:65], "name size")
            size = _octal(header[65:76], "file size")
            if not 1 <= namesize <= MAX_NAME:
                raise InstallerFormatError("bad cpio name size in the Payload")
            name = cpio.read(namesize)
            if len(name) != namesize or name[-1:] != b"\0" or b"\0" in name[:-1]:
                raise InstallerFormatError("bad cpio name in the Payload")
            if name == b"TRAILER!!!\0":
                return
            declared += size
            if declared > budget:  # refused before a byte of it is written
                raise InstallerFormatError(
                    f"the Payload expands beyond {budget} bytes (a decompression bomb?)"
                )
            kind = mode & _S_IFMT
            path = _payload_path(name[:-1], kind == _S_IFDIR)
            data = io.BufferedReader(
                BoundedReader(cpio, size, f"{_shown(path)} is truncated in the Payload")
            )
            self._entry(path, kind, size, data)
            while data.read(CHUNK):  # the rest of an entry nobody read
                pass
        raise InstallerFormatError(f"the Payload has more than {MAX_ENTRIES} entries")

    def _entry(self, path: str, kind: int, size: int, data: IO[bytes]) -> None:
        rel = orbit_relative(path, ORBIT_ROOT)
        if kind == _S_IFLNK:
            if rel is not None:
                if size > MAX_SYMLINK:
                    raise InstallerFormatError(f"symbolic link {_shown(path)} is too long")
                target = data.read(size).decode("utf-8", "replace")
                self.notes.append(
                    f"{_shown(rel)} is a symbolic link to {_shown(target)} (not extracted)"
                )
            return
        if kind != _S_IFREG:
            if kind != _S_IFDIR and rel is not None:
                self.notes.append(f"{_shown(rel)} is not a regular file (not extracted)")
            return
        if path in self.sizes:
            raise InstallerFormatError(f"{_shown(path)} appears twice in the Payload")
        self.sizes[path] = size
        if path == LAUNCH_DAEMON:
            self.plist = read_small(data, LAUNCH_DAEMON)
        elif rel == SECRET_FILE:
            pass  # its content is the enroll secret: never read, never extracted
        elif rel is not None:
            self.files[rel] = extract_to(self.workdir, rel, data, size)


def _walk_payload(xar: _Xar, payload: _Member, walk: _PayloadWalk) -> None:
    stream, region, decoded = xar.open(payload)
    budget = max(EXPANSION_FLOOR, MAX_EXPANSION * payload.length)
    bomb = f"the Payload expands beyond {budget} bytes (a decompression bomb?)"
    head = stream.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        unpacked = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    elif head.startswith(b"070707"):
        unpacked = stream  # an uncompressed payload (pkgbuild never writes one; cheap to read)
    elif head.startswith(b"pbzx"):
        raise InstallerFormatError(
            "the Payload is pbzx (Apple's LZMA chunks), which fleetctl and orbit-packager "
            "never write; this reader does not support it"
        )
    else:
        raise InstallerFormatError("the Payload is not a gzip'd cpio archive")
    cpio = io.BufferedReader(_Capped(unpacked, budget, bomb))
    walk.walk(cpio, budget)
    # What follows the trailer (cpio's block padding) is read too, within the same budget,
    # so gzip's CRC and the archived checksum cover every byte that was extracted.
    while cpio.read(CHUNK):
        pass
    region.verify()
    if decoded.count != payload.size:
        raise InstallerFormatError(f"{_shown(payload.path)} is shorter than its TOC says")


# -- entry point ---------------------------------------------------------------------------


def read_pkg(path: Path, workdir: Path) -> InstallerContents:
    """Read the flat package ``path``, extracting the Orbit root's files under ``workdir``."""
    try:
        return _read_pkg(path, workdir)
    except InstallerFormatError:
        raise
    except _STREAM_ERRORS as exc:
        raise InstallerFormatError(
            f"{path.name} is not a readable pkg ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    except _VALUE_ERRORS as exc:  # no detail: a value's text could come from the payload
        raise InstallerFormatError(
            f"{path.name} is not a readable pkg ({type(exc).__name__})"
        ) from None


def _read_pkg(path: Path, workdir: Path) -> InstallerContents:
    with open(path, "rb") as f:
        xar = _Xar(f, path.name)
        prefix, info_member, payload = _component(xar, path.name)
        info = _parse_xml(xar.read_small(info_member), "PackageInfo")
        if info.tag != "pkg-info":
            raise InstallerFormatError(f"{_shown(info_member.path)} is not a <pkg-info>")
        distribution = xar.members.get("Distribution")
        arch = _arch(xar.read_small(distribution) if distribution is not None else None)
        walk = _PayloadWalk(workdir)
        _walk_payload(xar, payload, walk)

    notes = [*xar.notes, *walk.notes]
    settings: dict[str, str] = {}
    secret = walk.sizes.get(f"{ORBIT_ROOT}/{SECRET_FILE}", 0) > 0
    if walk.plist is None:
        notes.append(f"no {LAUNCH_DAEMON} in the Payload (built without the service?)")
    else:
        settings, in_plist = _environment(walk.plist)
        secret = secret or in_plist
        secret_path = settings.get(SECRET_PATH_KEY)
        if secret_path is not None:
            secret = _secret_file(secret_path, walk, notes) or secret

    # Both builders name the component "<identifier>.base.pkg"; the identifier is what
    # --identifier set (com.fleetdm.orbit).
    identifier = info.get("identifier", "")
    if prefix == "base.pkg/":
        identifier = identifier.removesuffix(".base.pkg")
    return InstallerContents(
        type="pkg",
        name=identifier,
        version=info.get("version", ""),
        arch=arch,
        settings=settings,
        enroll_secret=secret,
        files=walk.files,
        notes=notes,
    )


def _secret_file(secret_path: str, walk: _PayloadWalk, notes: list[str]) -> bool:
    """Whether the file ORBIT_ENROLL_SECRET_PATH names holds a secret. Ours and fleetctl's
    name /opt/orbit/secret.txt (never extracted); another file of the Orbit root that it
    names is taken back out of ``files`` (the walk could not know before the plist)."""
    normalized = str(PurePosixPath("/" + secret_path.lstrip("/")))
    size = walk.sizes.get(normalized)
    if size is None:
        notes.append(f"{SECRET_PATH_KEY} names {_shown(secret_path)}, which the pkg lacks")
        return False
    rel = orbit_relative(normalized, ORBIT_ROOT)  # a Payload path: already checked as safe
    if rel is not None and rel in walk.files:
        walk.files.pop(rel).unlink()
    return size > 0
