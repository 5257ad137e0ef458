"""Readers of the Linux installers: deb, rpm and Arch (pkg.tar.zst), ours and fleetctl's.

Each is streamed once: metadata members are read (bounded), files under ``/opt/orbit`` are
written to the work directory, everything else is skipped. tarfile reads the deb's and Arch's
tar streams; rpm's headers (with ``writers.rpm.read_header``, the reader our rpm finisher uses)
and newc cpio payload are parsed here, since the one Python reader (rpmfile) holds a zstd payload
in memory and our rpms are up to hundreds of MB.
"""

from __future__ import annotations

import gzip
import io
import lzma
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from packager.installers.model import (
    BoundedReader,
    InstallerContents,
    InstallerFormatError,
    extract_to,
    orbit_relative,
    read_small,
)
from packager.writers.rpm import LEAD, LEAD_MAGIC, RpmFormatError, read_header

ORBIT_ROOT = "/opt/orbit"
ENV_FILE = "/etc/default/orbit"
ARCHES = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
SECRET_KEY = "ORBIT_ENROLL_SECRET"  # noqa: S105 - the name of the variable
_DECODE_ERRORS = (
    EOFError,
    tarfile.TarError,
    lzma.LZMAError,
    zlib.error,
    ValueError,
    struct.error,
    UnicodeDecodeError,
)


def parse_env_file(text: str) -> tuple[dict[str, str], bool]:
    """The variables of /etc/default/orbit as systemd's EnvironmentFile= reads them (our
    double-quoted values, fleetctl's raw ones); the enroll secret is dropped, and whether it
    was set is returned beside them."""
    env: dict[str, str] = {}
    secret = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            body = value[1:-1]
            value = _unescape(body) if value[0] == '"' else body
        if key == SECRET_KEY:
            secret = secret or bool(value)
            continue
        env[key] = value
    return env, secret


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


class _Tree:
    """What the member walk collects: the Orbit root's files and the env file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.files: dict[str, Path] = {}
        self.settings: dict[str, str] = {}
        self.secret = False
        self.env_seen = False

    def member(self, name: str, is_file: bool, size: int, data: Callable[[], IO[bytes]]) -> None:
        path = "/" + name.removeprefix("./").lstrip("/")
        if not is_file:
            return
        if path == ENV_FILE:
            text = read_small(data(), ENV_FILE).decode("utf-8", "replace")
            self.settings, self.secret = parse_env_file(text)
            self.env_seen = True
            return
        rel = orbit_relative(path, ORBIT_ROOT)
        if rel is not None:
            self.files[rel] = extract_to(self.workdir, rel, data(), size)

    def contents(self, kind: str, name: str, version: str, arch: str) -> InstallerContents:
        notes = [] if self.env_seen else [f"no {ENV_FILE} in the package"]
        return InstallerContents(
            type=kind,
            name=name,
            version=version,
            arch=ARCHES.get(arch, arch),
            settings=self.settings,
            enroll_secret=self.secret,
            files=self.files,
            notes=notes,
        )


def _walk_tar(stream: IO[bytes], tree: _Tree) -> dict[str, bytes]:
    """Feed every member of the tar ``stream`` to ``tree``; returns dot-files (.PKGINFO)."""
    dotfiles: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("."):
                bare = member.name.removeprefix("./")
                if bare in (".PKGINFO",):
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        dotfiles[bare] = read_small(extracted, bare)
                    continue

            def data(m: tarfile.TarInfo = member) -> IO[bytes]:
                f = tar.extractfile(m)
                if f is None:
                    raise InstallerFormatError(f"{m.name}: no data")
                return f

            tree.member(member.name, member.isfile(), member.size, data)
    return dotfiles


@contextmanager
def _decompressed(stream: IO[bytes], suffix: str) -> Iterator[IO[bytes]]:
    if suffix in ("", ".tar"):
        yield stream
    elif suffix == ".gz":
        with gzip.GzipFile(fileobj=stream) as f:
            yield cast(IO[bytes], f)
    elif suffix in (".xz", ".lzma"):
        with lzma.LZMAFile(stream) as f:
            yield f
    elif suffix in (".zst", ".zstd"):
        import zstandard  # lazy: only zstd members need it

        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        with reader:
            yield reader
    else:
        raise InstallerFormatError(f"unknown compression {suffix!r}")


def _guard(path: Path, kind: str, read: Callable[[], InstallerContents]) -> InstallerContents:
    try:
        return read()
    except InstallerFormatError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise  # the disk, not the installer (a full disk is named by the CLI)
        raise InstallerFormatError(
            f"{path.name} is not a readable {kind} ({type(exc).__name__})"
        ) from None
    except _DECODE_ERRORS as exc:
        # Only the type: the message may quote bytes of the installer (the secret is in there).
        raise InstallerFormatError(
            f"{path.name} is not a readable {kind} ({type(exc).__name__})"
        ) from None


# -- deb ---------------------------------------------------------------------------------------


def read_deb(path: Path, workdir: Path) -> InstallerContents:
    return _guard(path, "deb", lambda: _read_deb(path, workdir))


def _read_deb(path: Path, workdir: Path) -> InstallerContents:
    tree = _Tree(workdir)
    control: dict[str, str] = {}
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise InstallerFormatError(f"{path.name} is not a deb (no ar header)")
        while header := f.read(60):
            if len(header) != 60 or header[58:60] != b"`\n":
                raise InstallerFormatError(f"{path.name}: bad ar member header")
            name = header[0:16].rstrip(b" ").rstrip(b"/").decode("ascii", "replace")
            size = int(header[48:58].strip() or b"0")
            start = f.tell()
            member = io.BufferedReader(BoundedReader(f, size, "truncated archive member"))
            if name.startswith("control.tar"):
                with _decompressed(member, name[len("control.tar") :]) as stream:
                    control = _deb_control(stream)
            elif name.startswith("data.tar"):
                with _decompressed(member, name[len("data.tar") :]) as stream:
                    _walk_tar(stream, tree)
            f.seek(start + size + (size % 2))
    if not control:
        raise InstallerFormatError(f"{path.name} has no control file")
    return tree.contents(
        "deb",
        control.get("Package", ""),
        control.get("Version", ""),
        control.get("Architecture", ""),
    )


def _deb_control(stream: IO[bytes]) -> dict[str, str]:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.removeprefix("./") == "control":
                extracted = tar.extractfile(member)
                if extracted is None:
                    break
                text = read_small(extracted, "control").decode("utf-8", "replace")
                fields: dict[str, str] = {}
                for line in text.splitlines():
                    if line and not line[0].isspace() and ":" in line:
                        key, _, value = line.partition(":")
                        fields[key.strip()] = value.strip()
                return fields
    return {}


# -- Arch --------------------------------------------------------------------------------------


def read_archpkg(path: Path, workdir: Path) -> InstallerContents:
    return _guard(path, "pkg.tar.zst", lambda: _read_archpkg(path, workdir))


def _read_archpkg(path: Path, workdir: Path) -> InstallerContents:
    tree = _Tree(workdir)
    with open(path, "rb") as raw, _decompressed(raw, ".zst") as stream:
        dotfiles = _walk_tar(stream, tree)
    info: dict[str, str] = {}
    for line in dotfiles.get(".PKGINFO", b"").decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not line.startswith("#"):
            info.setdefault(key.strip(), value.strip())
    if not info:
        raise InstallerFormatError(f"{path.name} has no .PKGINFO")
    version = info.get("pkgver", "").rsplit("-", 1)[0]  # pkgrel dropped, as deb and rpm
    return tree.contents("pkg.tar.zst", info.get("pkgname", ""), version, info.get("arch", ""))


# -- rpm ---------------------------------------------------------------------------------------

_TAGS = {1000: "name", 1001: "version", 1002: "release", 1022: "arch", 1125: "compressor"}


def read_rpm(path: Path, workdir: Path) -> InstallerContents:
    return _guard(path, "rpm", lambda: _read_rpm(path, workdir))


def _rpm_header(f: IO[bytes], align: bool) -> dict[str, str]:
    try:
        header = read_header(f, padded=align)
    except RpmFormatError as exc:
        raise InstallerFormatError(str(exc)) from None
    out: dict[str, str] = {}
    for tag, name in _TAGS.items():
        value = header.string(tag)
        if value is not None:
            out[name] = value
    return out


def _read_rpm(path: Path, workdir: Path) -> InstallerContents:
    tree = _Tree(workdir)
    with open(path, "rb") as f:
        lead = f.read(LEAD)
        if len(lead) != LEAD or lead[:4] != LEAD_MAGIC:
            raise InstallerFormatError(f"{path.name} is not an rpm (no lead)")
        _rpm_header(f, align=True)  # the signature header
        tags = _rpm_header(f, align=False)
        suffix = {"gzip": ".gz", "xz": ".xz", "lzma": ".lzma", "zstd": ".zst"}.get(
            tags.get("compressor", "gzip"), "?"
        )
        with _decompressed(f, suffix) as payload:
            _walk_newc(payload, tree)
    return tree.contents("rpm", tags.get("name", ""), tags.get("version", ""), tags.get("arch", ""))


def _returning(f: IO[bytes]) -> Callable[[], IO[bytes]]:
    return lambda: f


def _walk_newc(stream: IO[bytes], tree: _Tree) -> None:
    """cpio "newc" (070701) and "crc" (070702): 110-byte ASCII headers, 4-byte alignment."""
    while True:
        header = stream.read(110)
        if len(header) != 110 or header[:5] != b"07070":
            raise InstallerFormatError("bad cpio header in the rpm payload")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        if namesize > 4096:
            raise InstallerFormatError("cpio name too long")
        name = stream.read(namesize)[:-1].decode("utf-8", "surrogateescape")
        stream.read((-(110 + namesize)) % 4)
        if name == "TRAILER!!!":
            return
        member = io.BufferedReader(BoundedReader(stream, size, "truncated archive member"))
        tree.member(name, (mode & 0o170000) == 0o100000, size, _returning(member))
        member.read()  # the rest, if the tree did not read it
        stream.read((-size) % 4)
