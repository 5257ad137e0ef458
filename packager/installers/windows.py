"""Reader of Windows .msi installers, ours (``packager/formats/msi.py``) and fleetctl's (WiX).

An MSI is a Compound File holding a relational database: a string pool (``_StringPool``,
``_StringData``), a column catalogue (``_Columns``), one stream per table storing its rows
column by column, and the payload as an embedded MS-CAB cabinet of MSZIP blocks. olefile reads
the container; the rest is decoded here, because no maintained Python library reads MSI tables
(msilib was Windows-only and left the standard library in 3.13) and the one pure-Python cabinet
reader (cabarchive) holds the whole cabinet in memory, while ours are hundreds of MB. The
cabinet is streamed from the container's sectors, one 32 KiB block at a time.

Settings are what the "Fleet osquery" service receives: its ``Environment`` REG_MULTI_SZ (the
Registry table), the command-line flags of its ServiceInstall ``Arguments`` (fleetctl's WiX
template) and system variables of the Environment table, with MSI "Formatted" values resolved
as Windows Installer would with the MSI's own property defaults (``[ORBITROOT]`` is
``C:\\Program Files\\Orbit\\``). The enroll secret is never resolved or decoded into text:
``FLEET_SECRET`` and ``secret.txt`` only say whether one is embedded.
"""

from __future__ import annotations

import io
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import olefile

from packager.installers.model import (
    SMALL_LIMIT,
    InstallerContents,
    InstallerFormatError,
    extract_to,
    orbit_relative,
)
from packager.writers.cab import checksum

ORBIT_ROOT = "/C:/Program Files/Orbit"  # ProgramFiles64Folder\Orbit, POSIX separators
SERVICE_NAME = "Fleet osquery"
SECRET_PROPERTY = "FLEET_SECRET"  # noqa: S105 - the name of the property
SECRET_KEY = "ORBIT_ENROLL_SECRET"  # noqa: S105 - the name of the variable
SECRET_FILE = "secret.txt"  # noqa: S105 - a file name
PLACEHOLDER = "dummy"  # Fleet's "no value" for FLEET_URL, FLEET_SECRET, END_USER_EMAIL
ARCHES = {"x64": "amd64", "amd64": "amd64", "arm64": "arm64"}
MAX_ROWS = 100_000  # rows of one table we decode (an Orbit MSI has a few dozen)
MAX_FORMATTED = 65536  # characters of one Formatted value we resolve
MAX_NESTING = 16  # [[[PROPERTY]]] depth

# Where Windows Installer puts its standard folders on 64-bit Windows (x64 and arm64).
STANDARD_FOLDERS: dict[str, tuple[str, ...]] = {
    "TARGETDIR": ("C:",),
    "WindowsVolume": ("C:",),
    "ProgramFiles64Folder": ("C:", "Program Files"),
    "ProgramFilesFolder": ("C:", "Program Files (x86)"),
    "CommonFiles64Folder": ("C:", "Program Files", "Common Files"),
    "CommonAppDataFolder": ("C:", "ProgramData"),
    "WindowsFolder": ("C:", "Windows"),
    "System64Folder": ("C:", "Windows", "System32"),
    "SystemFolder": ("C:", "Windows", "SysWOW64"),
}

# Orbit's command-line flags in fleetctl's service Arguments (reference fleet-packaging.md
# 3.3.2), each the flag form of an ORBIT_* variable; True: a boolean flag (takes no value).
ORBIT_FLAGS: dict[str, tuple[str, bool]] = {
    "root-dir": ("ORBIT_ROOT_DIR", False),
    "log-file": ("ORBIT_LOG_FILE", False),
    "fleet-url": ("ORBIT_FLEET_URL", False),
    "fleet-certificate": ("ORBIT_FLEET_CERTIFICATE", False),
    "enroll-secret": (SECRET_KEY, False),
    "enroll-secret-path": ("ORBIT_ENROLL_SECRET_PATH", False),
    "insecure": ("ORBIT_INSECURE", True),
    "debug": ("ORBIT_DEBUG", True),
    "update-url": ("ORBIT_UPDATE_URL", False),
    "update-tls-certificate": ("ORBIT_UPDATE_TLS_CERTIFICATE", False),
    "disable-updates": ("ORBIT_DISABLE_UPDATES", True),
    "fleet-desktop": ("ORBIT_FLEET_DESKTOP", True),
    "desktop-channel": ("ORBIT_DESKTOP_CHANNEL", False),
    "fleet-desktop-alternative-browser-host": (
        "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST",
        False,
    ),
    "orbit-channel": ("ORBIT_ORBIT_CHANNEL", False),
    "osqueryd-channel": ("ORBIT_OSQUERYD_CHANNEL", False),
    "enable-scripts": ("ORBIT_ENABLE_SCRIPTS", True),
    "host-identifier": ("ORBIT_HOST_IDENTIFIER", False),
    "end-user-email": ("ORBIT_END_USER_EMAIL", False),
    "eua-token": ("ORBIT_EUA_TOKEN", False),
    "osquery-db": ("ORBIT_OSQUERY_DB", False),
    "disable-setup-experience": ("ORBIT_DISABLE_SETUP_EXPERIENCE", True),
    "bypass-end-user-auth": ("ORBIT_BYPASS_END_USER_AUTH", True),
}

# Parsing errors of the layers below us (olefile, zlib, struct): any of them means the file
# is not a readable MSI. Our own checks raise InstallerFormatError directly.
_DECODE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
    zlib.error,
)


def read_msi(path: Path, workdir: Path) -> InstallerContents:
    """Read the MSI at ``path``; the Orbit root's files are extracted under ``workdir``."""
    try:
        return _read_msi(path, workdir)
    except InstallerFormatError:
        raise
    except _DECODE_ERRORS as exc:
        # olefile's messages and OSError's are fixed texts and paths; others might quote
        # bytes of the file, so only their type is named.
        detail = str(exc)[:120] if isinstance(exc, OSError) else "malformed data"
        raise InstallerFormatError(
            f"{path.name} is not a readable msi ({type(exc).__name__}: {detail})"
        ) from None


def _read_msi(path: Path, workdir: Path) -> InstallerContents:
    with _Compound.open(path) as cf:
        db = _Database(cf)
        notes: list[str] = []
        arch = _arch(_template(cf.small("\x05SummaryInformation", "SummaryInformation")), notes)
        props, secret = _properties(db)
        name, version = props.get("ProductName"), props.get("ProductVersion")
        if not name or not version:
            raise InstallerFormatError(f"{path.name} has no ProductName or ProductVersion")
        layout = _Layout(db)
        fmt = _Formatter(props, layout)
        settings, env_secret = _settings(db, fmt, notes)
        secret = secret or env_secret
        files, file_secret = _extract(cf, db, layout, workdir, notes)
        secret = secret or file_secret
    if props.get("FLEET_URL") == PLACEHOLDER:
        notes.append(
            'FLEET_URL is Fleet\'s placeholder "dummy": the Fleet URL and enroll secret are '
            "given to msiexec (FLEET_URL=... FLEET_SECRET=...)"
        )
    if fmt.public_used:
        notes.append(
            "settings from the properties "
            + ", ".join(sorted(fmt.public_used))
            + " show the MSI's defaults; msiexec NAME=value overrides them at install"
        )
    notes.extend(fmt.notes)
    return InstallerContents(
        type="msi",
        name=name,
        version=version,
        arch=arch,
        settings=settings,
        enroll_secret=secret,
        files=files,
        notes=notes,
    )


# -- the compound file -------------------------------------------------------------------------

_MIME = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._"


def decode_stream_name(name: str) -> str:
    """Inverse of ``msidb.encode_stream_name``: U+3800..U+47FF hold two characters of
    [0-9A-Za-z._], U+4800..U+483F one, U+4840 marks a table ("!" here)."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0x3800 <= code < 0x4800:
            code -= 0x3800
            out.append(_MIME[code & 0x3F] + _MIME[code >> 6])
        elif 0x4800 <= code < 0x4840:
            out.append(_MIME[code - 0x4800])
        elif code == 0x4840:
            out.append("!")
        else:
            out.append(ch)
    return "".join(out)


class _Compound:
    """The MSI's streams by decoded name ("!Property" for a table)."""

    def __init__(self, ole: Any, path: Path) -> None:
        self.ole = ole
        self.path = path
        self.entries: dict[str, Any] = {}
        seen: set[str] = set()
        for entry in ole.root.kids:
            if entry.entry_type != olefile.STGTY_STREAM:
                continue
            folded = entry.name.lower()  # olefile finds streams case-insensitively
            name = decode_stream_name(entry.name)
            if folded in seen or name in self.entries:
                raise InstallerFormatError(f"the MSI holds the stream {name!r} twice")
            seen.add(folded)
            self.entries[name] = entry

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[_Compound]:
        if not olefile.isOleFile(str(path)):
            raise InstallerFormatError(f"{path.name} is not an msi (no compound file header)")
        ole = olefile.OleFileIO(str(path))
        try:
            yield cls(ole, path)
        finally:
            ole.close()

    def small(self, name: str, what: str, required: bool = True) -> bytes:
        """A metadata stream, read whole (refused beyond SMALL_LIMIT before it is read)."""
        entry = self.entries.get(name)
        if entry is None:
            if required:
                raise InstallerFormatError(f"the MSI has no {what}")
            return b""
        if entry.size > SMALL_LIMIT:
            raise InstallerFormatError(f"{what} is larger than {SMALL_LIMIT} bytes")
        data: bytes = self.ole.openstream([entry.name]).read()
        if len(data) != entry.size:
            raise InstallerFormatError(f"{what} is truncated")
        return data

    @contextmanager
    def large(self, name: str) -> Iterator[tuple[IO[bytes], int]]:
        """A payload stream as a seekable file object and its size. olefile's own stream
        object reads the whole stream into memory, so a large one is read here sector by
        sector along olefile's FAT."""
        entry = self.entries[name]
        size = int(entry.size)
        if size < self.ole.minisectorcutoff:  # in the mini stream: small by definition
            yield io.BytesIO(self.small(name, f"stream {name}")), size
            return
        sector = int(self.ole.sectorsize)
        fat = self.ole.fat
        chain = array("I")
        sect = int(entry.isectStart)
        for _ in range(-(-size // sector)):
            if sect >= len(fat):
                raise InstallerFormatError(f"stream {name} is truncated (bad sector chain)")
            chain.append(sect)
            sect = int(fat[sect])
        with open(self.path, "rb") as fp:
            yield cast(IO[bytes], _SectorReader(fp, chain, sector, size, name)), size


class _SectorReader(io.RawIOBase):
    """A stream of the compound file, read through its chain of sectors."""

    def __init__(self, fp: IO[bytes], chain: array[int], sector: int, size: int, name: str):
        self.fp, self.chain, self.sector, self.size, self.name = fp, chain, sector, size, name
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        if n <= 0:
            return 0
        index, within = divmod(self.pos, self.sector)
        # as many bytes as the sectors following each other in the file hold
        last = index
        while (
            (last + 1 - index) * self.sector - within < n
            and last + 1 < len(self.chain)
            and self.chain[last + 1] == self.chain[last] + 1
        ):
            last += 1
        n = min(n, (last + 1 - index) * self.sector - within)
        self.fp.seek((self.chain[index] + 1) * self.sector + within)
        data = self.fp.read(n)
        if len(data) != n:
            raise InstallerFormatError(f"stream {self.name} is truncated")
        view[:n] = data
        self.pos += n
        return n


def _read_exact(f: IO[bytes], n: int, what: str) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            raise InstallerFormatError(f"{what} is truncated")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# -- the database ------------------------------------------------------------------------------

Cell = str | int | None

# _Columns type bits (msiquery.h icd*): a string column holds a string-pool index, an object
# (binary) column a 2-byte marker of a stream, an integer column 2 or 4 bytes.
_STRING = 0x0800
_OBJECT_MASK = ~0x1000  # all but nullable
_BINARY = 0x0900


@dataclass(frozen=True)
class _Column:
    name: str
    type: int

    @property
    def is_string(self) -> bool:
        return bool(self.type & _STRING) and (self.type & _OBJECT_MASK) != _BINARY

    def width(self, ref: int) -> int:
        if (self.type & _OBJECT_MASK) == _BINARY:
            return 2
        if self.type & _STRING:
            return ref
        return 2 if (self.type & 0xFF) <= 2 else 4


class _Database:
    """The string pool and the tables of an MSI, decoded on demand."""

    def __init__(self, cf: _Compound) -> None:
        self.cf = cf
        pool = cf.small("!_StringPool", "string pool (_StringPool)")
        self.data = cf.small("!_StringData", "string data (_StringData)")
        if len(pool) < 4 or len(pool) % 4:
            raise InstallerFormatError("the MSI's string pool is truncated")
        codepage, flags = struct.unpack_from("<HH", pool)
        codepage |= (flags & 0x7FFF) << 16
        self.ref = 3 if flags & 0x8000 else 2  # 3-byte string indexes past 65535 strings
        self.encoding = "cp1252" if codepage == 0 else f"cp{codepage}"  # 0: neutral (ANSI)
        try:
            "".encode(self.encoding)
        except LookupError:
            raise InstallerFormatError(f"the MSI's codepage {codepage} is unknown") from None
        # starts[i]..starts[i + 1] are the bytes of string i (string 0 is the null string).
        starts = array("I", [0, 0])
        at, i, entries = 0, 4, len(pool)
        while i < entries:
            length, refs = struct.unpack_from("<HH", pool, i)
            if length == 0 and refs != 0:  # a long string: the next entry holds its length
                if i + 8 > entries:
                    raise InstallerFormatError("the MSI's string pool is truncated")
                low, high = struct.unpack_from("<HH", pool, i + 4)
                length = low | high << 16
                i += 8
            else:
                i += 4
            at += length
            if at > len(self.data):
                raise InstallerFormatError("the MSI's string data is shorter than its pool")
            starts.append(at)
        self.starts = starts
        self.cache: dict[int, str] = {}
        self.schema = self._schema()

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def raw(self, index: int, where: str) -> bytes:
        if not 0 <= index < self.count:
            raise InstallerFormatError(f"string index {index} out of range in {where}")
        return self.data[self.starts[index] : self.starts[index + 1]]

    def text(self, index: int, where: str) -> str:
        found = self.cache.get(index)
        if found is None:
            found = self.cache[index] = self.raw(index, where).decode(self.encoding, "replace")
        return found

    def _schema(self) -> dict[str, list[_Column]]:
        ref = self.ref
        names: set[str] | None = None
        tables = self.cf.small("!_Tables", "_Tables", required=False)
        if tables:
            if len(tables) % ref:
                raise InstallerFormatError("the MSI's _Tables is truncated")
            names = {
                self.text(int.from_bytes(tables[i : i + ref], "little"), "_Tables")
                for i in range(0, len(tables), ref)
            }
        columns = self.cf.small("!_Columns", "_Columns table")
        width = 2 * ref + 4
        if len(columns) % width:
            raise InstallerFormatError("the MSI's _Columns is truncated")
        rows = len(columns) // width
        cells = _unpack_columns(columns, rows, [ref, 2, ref, 2])
        found: dict[str, dict[int, _Column]] = {}
        for table_id, number, name_id, kind in zip(*cells, strict=True):
            table = self.text(table_id, "_Columns")
            column = _Column(self.text(name_id, "_Columns"), kind - 0x8000)
            slot = found.setdefault(table, {})
            if number - 0x8000 in slot:
                raise InstallerFormatError(f"table {table} declares column {number - 0x8000} twice")
            slot[number - 0x8000] = column
        schema: dict[str, list[_Column]] = {}
        for table, by_number in found.items():
            if sorted(by_number) != list(range(1, len(by_number) + 1)) or len(by_number) > 32:
                raise InstallerFormatError(f"table {table} has malformed columns")
            if names is None or table in names:
                schema[table] = [by_number[n] for n in sorted(by_number)]
        return schema

    def has(self, table: str) -> bool:
        return table in self.schema

    def rows(self, table: str, *, raw_column: str | None = None) -> list[dict[str, Cell]]:
        """The rows of ``table`` as dicts by column name. The column named ``raw_column`` is left
        as its raw string index, never decoded into text."""
        columns = self.schema.get(table)
        if columns is None:
            raise InstallerFormatError(f"the MSI has no {table} table")
        data = self.cf.small("!" + table, f"{table} table", required=False)
        widths = [c.width(self.ref) for c in columns]
        width = sum(widths)
        if len(data) % width:
            raise InstallerFormatError(f"the MSI's {table} table is truncated")
        count = len(data) // width
        if count > MAX_ROWS:
            raise InstallerFormatError(f"the MSI's {table} table has over {MAX_ROWS} rows")
        cells = _unpack_columns(data, count, widths)
        out: list[dict[str, Cell]] = []
        for stored in zip(*cells, strict=True):
            row: dict[str, Cell] = {}
            for column, value, size in zip(columns, stored, widths, strict=True):
                if column.name == raw_column:
                    self.raw(value, table)  # in range, not decoded
                    row[column.name] = value
                elif column.is_string:
                    row[column.name] = self.text(value, table) if value else None
                elif (column.type & _OBJECT_MASK) == _BINARY:
                    row[column.name] = None  # a stream named after the row's keys
                else:
                    row[column.name] = (
                        value - (0x8000 if size == 2 else 0x80000000) if value else None
                    )
            out.append(row)
        return out


def _unpack_columns(data: bytes, rows: int, widths: list[int]) -> list[list[int]]:
    """Column-major cells: all rows of the first column, then of the second..."""
    out, at = [], 0
    for width in widths:
        out.append(
            [
                int.from_bytes(data[at + i * width : at + (i + 1) * width], "little")
                for i in range(rows)
            ]
        )
        at += width * rows
    return out


def _properties(db: _Database) -> tuple[dict[str, str], bool]:
    """The Property table, FLEET_SECRET left out; whether it holds a real secret (not empty,
    not Fleet's "dummy"), decided on its bytes."""
    props: dict[str, str] = {}
    secret = False
    for row in db.rows("Property", raw_column="Value"):
        name, value = row["Property"], row["Value"]
        if not isinstance(name, str) or not isinstance(value, int):
            continue
        if name == SECRET_PROPERTY:
            secret = db.raw(value, "Property") not in (b"", PLACEHOLDER.encode())
        else:
            props[name] = db.text(value, "Property") if value else ""
    return props, secret


# -- SummaryInformation --------------------------------------------------------------------------


def _template(data: bytes) -> str:
    """PID 7 (Template, "x64;1033") of the SummaryInformation property set (MS-OLEPS)."""
    if len(data) < 48 or data[:2] != b"\xfe\xff":
        raise InstallerFormatError("the MSI's SummaryInformation is malformed")
    (offset,) = struct.unpack_from("<I", data, 44)
    if offset + 8 > len(data):
        raise InstallerFormatError("the MSI's SummaryInformation is truncated")
    _size, count = struct.unpack_from("<II", data, offset)
    if offset + 8 + 8 * count > len(data):
        raise InstallerFormatError("the MSI's SummaryInformation is truncated")
    props = dict(struct.unpack_from("<II", data, offset + 8 + 8 * i) for i in range(count))
    codepage = 1252
    if 1 in props and offset + props[1] + 6 <= len(data):
        kind, value = struct.unpack_from("<Ih", data, offset + props[1])
        if kind == 2:  # VT_I2
            codepage = value & 0xFFFF
    at = offset + props.get(7, len(data))
    if at + 8 > len(data):
        raise InstallerFormatError("the MSI's SummaryInformation has no Template")
    kind, length = struct.unpack_from("<II", data, at)
    if kind != 0x1E or at + 8 + length > len(data):  # VT_LPSTR
        raise InstallerFormatError("the MSI's SummaryInformation Template is malformed")
    raw = data[at + 8 : at + 8 + length].split(b"\0", 1)[0]
    try:
        return raw.decode(f"cp{codepage}", "replace")
    except LookupError:
        return raw.decode("latin-1")


def _arch(template: str, notes: list[str]) -> str:
    platform = template.split(";", 1)[0].strip()
    arch = ARCHES.get(platform.lower())
    if arch is None:
        notes.append(f"unknown MSI platform {platform[:40]!r} (Template)")
        return platform.lower()
    return arch


# -- where things are installed ----------------------------------------------------------------


def _long_name(value: str) -> str:
    """The target long name of a DefaultDir or FileName value: "target:source" and
    "short|long" (either part optional)."""
    return value.split(":", 1)[0].split("|")[-1]


def _check_name(name: str) -> str:
    if not name or any(ch in name for ch in "/\\\0") or name in (".", ".."):
        raise InstallerFormatError(f"unsafe member name {name!r} in the MSI")
    return name


class _Layout:
    """Directory, Component and File tables: install paths as tuples of Windows path
    components ("C:", "Program Files", "Orbit", ...)."""

    def __init__(self, db: _Database) -> None:
        self.dirs: dict[str, tuple[str | None, str]] = {}
        for row in db.rows("Directory"):
            key, parent, default = row["Directory"], row["Directory_Parent"], row["DefaultDir"]
            if not isinstance(key, str) or not isinstance(default, str):
                raise InstallerFormatError("the MSI's Directory table has an empty key")
            self.dirs[key] = (parent if isinstance(parent, str) else None, default)
        self.components: dict[str, str] = {}
        for row in db.rows("Component"):
            key, directory = row["Component"], row["Directory_"]
            if isinstance(key, str) and isinstance(directory, str):
                self.components[key] = directory
        self.files: dict[str, tuple[str, str, int, int]] = {}  # key: component, name, size, seq
        for row in db.rows("File"):
            key, comp, name = row["File"], row["Component_"], row["FileName"]
            size, seq = row["FileSize"], row["Sequence"]
            if not all(isinstance(v, str) for v in (key, comp, name)):
                raise InstallerFormatError("the MSI's File table has an empty key or name")
            if not isinstance(size, int) or size < 0:
                raise InstallerFormatError(f"file {key} has no size in the File table")
            self.files[str(key)] = (str(comp), str(name), size, seq if isinstance(seq, int) else 0)
        self._paths: dict[str, tuple[str, ...]] = {}

    def directory(self, key: str) -> tuple[str, ...] | None:
        """The install path of directory ``key`` (None: no such directory)."""
        chain: list[str] = []
        visited: set[str] = set()
        at: str = key
        parts: tuple[str, ...] = ()
        # Up to a standard folder, a directory already resolved or a root...
        while True:
            if at in self._paths:
                parts = self._paths[at]
                break
            if at in STANDARD_FOLDERS:
                parts = STANDARD_FOLDERS[at]
                break
            entry = self.dirs.get(at)
            if entry is None:
                if not chain:
                    return None
                raise InstallerFormatError(f"directory {chain[-1]} has no parent {at} in the MSI")
            if at in visited:
                raise InstallerFormatError(f"the MSI's Directory table loops at {at}")
            visited.add(at)
            chain.append(at)
            if entry[0] is None or entry[0] == at:
                break
            at = entry[0]
        # ...then down, adding each directory's long name ("." is its parent itself). A root
        # other than TARGETDIR is on the system drive; its DefaultDir names the source.
        for down in reversed(chain):
            parent, default = self.dirs[down]
            if parent is None or parent == down:
                parts = ("C:",)
            elif (name := _long_name(default)) != ".":
                parts = (*parts, _check_name(name))
            self._paths[down] = parts
        return parts

    def file(self, key: str) -> tuple[str, ...] | None:
        entry = self.files.get(key)
        if entry is None:
            return None
        directory = self.components.get(entry[0])
        parts = self.directory(directory) if directory is not None else None
        if parts is None:
            raise InstallerFormatError(f"file {key} has no directory in the MSI")
        return (*parts, _check_name(_long_name(entry[1])))

    def orbit_files(self) -> dict[str, str]:
        """File key -> path relative to the Orbit root, for the files installed under it."""
        root = tuple(ORBIT_ROOT.strip("/").split("/"))
        out: dict[str, str] = {}
        seen: dict[str, str] = {}
        for key in self.files:
            parts = self.file(key)
            if parts is None or tuple(p.casefold() for p in parts[: len(root)]) != tuple(
                p.casefold() for p in root
            ):
                continue
            rel = orbit_relative("/" + "/".join((*root, *parts[len(root) :])), ORBIT_ROOT)
            if rel is None:
                continue
            # Windows paths are case-insensitive: two names differing in case are one file.
            if rel.casefold() in seen:
                raise InstallerFormatError(f"{rel} appears twice in the installer")
            seen[rel.casefold()] = key
            out[key] = rel
        return out


def _windows_path(parts: tuple[str, ...]) -> str:
    return "\\".join(parts) + "\\"


# -- Formatted values ----------------------------------------------------------------------------


class _Formatter:
    """Windows Installer's resolution of a Formatted value, with the MSI's own property
    defaults: [NAME] a property or a directory, [\\x] the character x, [~] a NUL, [#file] and
    [!file] a file's path, [$component] its directory, {...[NAME]...} dropped when a property
    in it is empty. [FLEET_SECRET] is never resolved."""

    def __init__(self, props: dict[str, str], layout: _Layout) -> None:
        self.props = props
        self.layout = layout
        self.public_used: set[str] = set()  # public properties (msiexec may override them)
        self.notes: list[str] = []

    def __call__(self, value: str) -> str:
        if len(value) > MAX_FORMATTED:
            raise InstallerFormatError(f"a Formatted value of the MSI is over {MAX_FORMATTED}")
        return self._expand(value, 0)[0]

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _expand(self, value: str, depth: int) -> tuple[str, bool]:
        if depth > MAX_NESTING:
            raise InstallerFormatError("a Formatted value of the MSI nests too deeply")
        out: list[str] = []
        complete = True  # every property referred to has a value
        pairs = _pairs(value)
        i = 0
        while i < len(value):
            ch = value[i]
            end = pairs.get(i, -1)
            if end < 0:
                out.append(ch)
                i += 1
                continue
            inner = value[i + 1 : end]
            if ch == "[":
                text, found = self._bracket(inner, depth)
                complete = complete and found
                out.append(text)
            elif "[" not in inner:
                out.append(value[i : end + 1])  # {text} without properties stays as it is
            else:
                text, found = self._expand(inner, depth + 1)
                out.append(text if found else "")
            i = end + 1
        return "".join(out), complete

    def _bracket(self, inner: str, depth: int) -> tuple[str, bool]:
        if inner.startswith("\\"):
            return inner[1:2], True
        if inner == "~":
            return "\0", True
        if "[" in inner:  # [[NAME]]: the property named by NAME's value
            inner = self._expand(inner, depth + 1)[0]
        if inner[:1] in ("#", "!"):
            parts = self.layout.file(inner[1:])
            return ("\\".join(parts), True) if parts else ("", False)
        if inner[:1] == "$":
            directory = self.layout.components.get(inner[1:])
            parts = self.layout.directory(directory) if directory else None
            return (_windows_path(parts), True) if parts else ("", False)
        if inner[:1] == "%":
            self._note(f"[{inner[:40]}] is the installing machine's environment: left as is")
            return f"[{inner}]", True
        return self._property(inner)

    def _property(self, name: str) -> tuple[str, bool]:
        if name == SECRET_PROPERTY:
            self._note(f"[{SECRET_PROPERTY}] in a setting is left unresolved (the secret)")
            return f"[{name}]", True
        if name in self.layout.dirs or name in STANDARD_FOLDERS:
            parts = self.layout.directory(name)
            if parts is not None:
                return _windows_path(parts), True
        value = self.props.get(name)
        if value is None:
            self._note(f"[{name[:72]}] is not a property of the MSI: empty")
            return "", False
        if name.isupper():
            self.public_used.add(name)
        return value, bool(value)


def _pairs(value: str) -> dict[int, int]:
    """Opening bracket or brace -> its closing one, in one pass: nested pairs match inside
    out, a [\\x] escape is one unit (x may itself be a bracket), an unmatched one stays text."""
    pairs: dict[int, int] = {}
    brackets: list[int] = []
    braces: list[int] = []
    last = value.rfind("]")
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "[" and value.startswith("[\\", i) and i + 3 <= last:
            end = value.find("]", i + 3)  # the escaped character may itself be "]"
            pairs[i] = end
            i = end + 1
            continue
        if ch == "[":
            brackets.append(i)
        elif ch == "]" and brackets:
            pairs[brackets.pop()] = i
        elif ch == "{":
            braces.append(i)
        elif ch == "}" and braces:
            pairs[braces.pop()] = i
        i += 1
    return pairs


# -- settings ------------------------------------------------------------------------------------


def _settings(db: _Database, fmt: _Formatter, notes: list[str]) -> tuple[dict[str, str], bool]:
    """ORBIT_* variables as orbit sees them: system variables (Environment table), overridden
    by the service's Environment value, overridden by its command-line flags (urfave/cli
    prefers a flag to its variable)."""
    env: dict[str, str] = {}
    secret = False
    others: set[str] = set()

    def put(key: str, value: str) -> None:
        nonlocal secret
        if key == SECRET_KEY:
            secret = secret or value not in ("", PLACEHOLDER)
        elif key.startswith("ORBIT_"):
            env[key] = value
        else:
            others.add(key[:64])

    if db.has("Environment"):
        # Name: "=-*ORBIT_UPDATE_INTERVAL" (= set, - remove on uninstall, * system, ! remove
        # at install); a [~] at either end of the value appends to an existing one.
        for row in db.rows("Environment"):
            name, value = row["Name"], row["Value"]
            if not isinstance(name, str):
                continue
            key = name.lstrip("=+-!*")
            flags = name[: len(name) - len(key)]
            if "!" in flags or not key:
                continue
            if "*" not in flags:
                if key.startswith("ORBIT_"):
                    notes.append(f"{key[:64]} is a variable of the installing user: not Orbit's")
                continue
            text = fmt(value) if isinstance(value, str) else ""
            if "\0" in text:
                notes.append(f"{key[:64]} is appended to an existing system variable")
            put(fmt(key), text.replace("\0", ""))

    service = _service(db, fmt, notes)
    if service is not None:
        name, arguments = service
        for entry in _service_environment(db, fmt, name, notes):
            key, sep, value = entry.partition("=")
            if sep:
                put(key, value)
            else:
                notes.append("an entry of the service's Environment has no '='")
        if arguments:
            for key, value in _flags(fmt(arguments), notes):
                put(key, value)
    if others:
        notes.append("the service also receives " + ", ".join(sorted(others)))
    return env, secret


def _service(db: _Database, fmt: _Formatter, notes: list[str]) -> tuple[str, str | None] | None:
    """The Orbit service's name and raw Arguments (ServiceInstall)."""
    if not db.has("ServiceInstall"):
        notes.append("no ServiceInstall table: the MSI installs no service")
        return None
    rows = [(fmt(str(r["Name"])), r["Arguments"]) for r in db.rows("ServiceInstall") if r["Name"]]
    for name, arguments in rows:
        if name.casefold() == SERVICE_NAME.casefold():
            return name, arguments if isinstance(arguments, str) else None
    if len(rows) == 1:
        notes.append(f"the service is named {rows[0][0][:72]!r}, not {SERVICE_NAME!r}")
        return rows[0][0], rows[0][1] if isinstance(rows[0][1], str) else None
    notes.append(f"no {SERVICE_NAME!r} service in the MSI")
    return None


def _service_environment(
    db: _Database, fmt: _Formatter, service: str, notes: list[str]
) -> list[str]:
    """The entries of HKLM\\SYSTEM\\CurrentControlSet\\Services\\<service>\\Environment."""
    if not db.has("Registry"):
        return []
    key = rf"SYSTEM\CurrentControlSet\Services\{service}".casefold()
    for row in db.rows("Registry"):
        root, path, name, value = row["Root"], row["Key"], row["Name"], row["Value"]
        if root not in (2, -1) or not isinstance(path, str) or not isinstance(name, str):
            continue  # -1: HKLM for a per-machine install (ALLUSERS=1)
        if fmt(path).casefold() != key or fmt(name).casefold() != "environment":
            continue
        if not isinstance(value, str):
            return []
        if value.startswith("##"):
            value = value[1:]
        elif value.startswith("#"):
            notes.append("the service's Environment is not a string value: ignored")
            return []
        return [entry for entry in fmt(value).split("\0") if entry]
    return []


def split_command_line(line: str) -> list[str]:
    """The arguments Go's os.Args holds for a Windows command line (CommandLineToArgvW's
    backslash and quote rules, "" inside quotes a literal quote as Go reads it)."""
    args: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        out: list[str] = []
        quoted, slashes = False, 0
        while i < n:
            ch = line[i]
            if ch == "\\":
                slashes += 1
                i += 1
                continue
            if ch == '"':
                out.append("\\" * (slashes // 2))
                if slashes % 2:
                    out.append('"')
                else:
                    if quoted and i + 1 < n and line[i + 1] == '"':
                        out.append('"')
                        i += 1
                    quoted = not quoted
                slashes = 0
                i += 1
                continue
            out.append("\\" * slashes)
            slashes = 0
            if ch in " \t" and not quoted:
                break
            out.append(ch)
            i += 1
        out.append("\\" * slashes)
        args.append("".join(out))
    return args


def _flags(arguments: str, notes: list[str]) -> Iterator[tuple[str, str]]:
    """(ORBIT_* variable, value) for each of orbit's flags in the service's arguments, parsed
    as Go's flag package does: -name or --name, =value or the next argument, booleans bare."""
    args = split_command_line(arguments)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or not arg.startswith("-") or arg == "-":
            notes.append("the service's arguments end in non-flag arguments: not read")
            return
        name, sep, value = arg.lstrip("-").partition("=")
        known = ORBIT_FLAGS.get(name)
        if known is None:
            # Go's flag package stops orbit on an undefined flag; nothing after it is known.
            notes.append(f"the service's argument --{name[:40]} is not one of orbit's flags")
            return
        key, boolean = known
        if not sep:
            if boolean:
                value = "true"
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                notes.append(f"the service's argument --{name} has no value")
                return
        yield key, value


# -- the cabinet ---------------------------------------------------------------------------------

CFHEADER = struct.Struct("<4sIIIIIBBHHHHH")
CFFOLDER = struct.Struct("<IHH")
CFFILE = struct.Struct("<IIHHHH")
CFDATA = struct.Struct("<IHH")
BLOCK = 32768  # uncompressed bytes of a CFDATA block at most
MAX_DATA = BLOCK + 12  # compressed bytes of a CFDATA block at most (MSZIP's stored blocks)
FLAG_PREV, FLAG_NEXT, FLAG_RESERVE = 1, 2, 4
TYPE_NONE, TYPE_MSZIP = 0, 1
NAME_IS_UTF8 = 0x80


@dataclass(frozen=True)
class _CabFile:
    name: str
    size: int
    offset: int  # in the folder's uncompressed data
    folder: int


@dataclass(frozen=True)
class _Folder:
    start: int  # first CFDATA
    blocks: int
    kind: int


class _Cabinet:
    """An MS-CAB cabinet read from a seekable stream: its folders and files (headers only)."""

    def __init__(self, f: IO[bytes], size: int, what: str) -> None:
        self.f, self.size, self.what = f, size, what
        header = _read_exact(f, CFHEADER.size, what)
        (magic, _r1, _cb, _r2, coff_files, _r3, _minor, major, n_folders, n_files, flags,
         _set, _index) = CFHEADER.unpack(header)  # fmt: skip
        if magic != b"MSCF" or major != 1:
            raise InstallerFormatError(f"{what} is not a cabinet")
        if flags & (FLAG_PREV | FLAG_NEXT):
            raise InstallerFormatError(f"{what} spans several cabinets")
        folder_reserve = self.data_reserve = 0
        if flags & FLAG_RESERVE:
            header_reserve, folder_reserve, self.data_reserve = struct.unpack(
                "<HBB", _read_exact(f, 4, what)
            )
            f.seek(header_reserve, io.SEEK_CUR)
        self.folders = []
        for _ in range(n_folders):
            start, blocks, kind = CFFOLDER.unpack(_read_exact(f, CFFOLDER.size, what))
            f.seek(folder_reserve, io.SEEK_CUR)
            self.folders.append(_Folder(start, blocks, kind))
        # The file table in one bounded read (a name is 255 bytes at most, plus its NUL).
        f.seek(coff_files)
        want = min(n_files * (CFFILE.size + 256), SMALL_LIMIT, max(size - coff_files, 0))
        table = _read_exact(f, want, what)
        self.files: list[_CabFile] = []
        at = 0
        for _ in range(n_files):
            if at + CFFILE.size > len(table):
                raise InstallerFormatError(f"the file table of {what} is truncated")
            size_, offset, folder, _date, _time, attribs = CFFILE.unpack_from(table, at)
            end = table.find(b"\0", at + CFFILE.size, at + CFFILE.size + 257)
            if end < 0:
                raise InstallerFormatError(f"a file name in {what} is too long or truncated")
            raw = table[at + CFFILE.size : end]
            at = end + 1
            name = raw.decode("utf-8" if attribs & NAME_IS_UTF8 else "latin-1", "replace")
            if folder >= len(self.folders):  # 0xFFFD..0xFFFF: continued across cabinets
                raise InstallerFormatError(f"{name} in {what} has no folder in the cabinet")
            self.files.append(_CabFile(name, size_, offset, folder))

    def blocks(self, folder: _Folder) -> Iterator[tuple[int, int, int, int]]:
        """(checksum, data position, compressed size, uncompressed size) of each CFDATA."""
        at = folder.start
        for _ in range(folder.blocks):
            self.f.seek(at)
            csum, packed, unpacked = CFDATA.unpack(_read_exact(self.f, CFDATA.size, self.what))
            data = at + CFDATA.size + self.data_reserve
            limit = unpacked if folder.kind == TYPE_NONE else MAX_DATA
            if unpacked > BLOCK or packed > limit or data + packed > self.size:
                raise InstallerFormatError(f"a data block of {self.what} is malformed")
            yield csum, data, packed, unpacked
            at = data + packed

    def folder_size(self, folder: _Folder) -> int:
        return sum(block[3] for block in self.blocks(folder))


class _FolderReader(io.RawIOBase):
    """The uncompressed data of one folder, decoded block by block and never past ``limit``
    (the end of the last file wanted from it): a block holds 32 KiB at most, so memory does
    not grow with the payload and no more is inflated than the files declare."""

    def __init__(self, cab: _Cabinet, folder: _Folder, limit: int) -> None:
        self.cab, self.limit, self.kind = cab, limit, folder.kind & 0x0F
        if self.kind not in (TYPE_NONE, TYPE_MSZIP):
            raise InstallerFormatError(f"{cab.what} uses a compression we cannot read (LZX?)")
        self.blocks = cab.blocks(folder)
        self.pos = 0  # uncompressed bytes decoded so far
        self.buffer = b""
        self.history = b""  # MSZIP: the previous 32 KiB are the next block's dictionary

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self.buffer:
            if self.pos >= self.limit:
                return 0
            self._next_block()
        n = min(len(view), len(self.buffer))
        view[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n

    @property
    def position(self) -> int:
        """Bytes of the folder read so far."""
        return self.pos - len(self.buffer)

    def skip(self, count: int) -> None:
        while count > 0:
            chunk = self.read(min(count, BLOCK))
            if not chunk:
                raise InstallerFormatError(f"{self.cab.what} is truncated")
            count -= len(chunk)

    def _next_block(self) -> None:
        try:
            csum, at, packed, unpacked = next(self.blocks)
        except StopIteration:
            raise InstallerFormatError(f"{self.cab.what} is truncated") from None
        self.cab.f.seek(at)
        data = _read_exact(self.cab.f, packed, self.cab.what)
        if csum and checksum(data, packed | unpacked << 16) != csum:
            raise InstallerFormatError(f"a data block of {self.cab.what} fails its checksum")
        if self.kind == TYPE_NONE:
            out = data
        else:
            if data[:2] != b"CK":
                raise InstallerFormatError(f"a data block of {self.cab.what} is not MSZIP")
            inflate = (
                zlib.decompressobj(-15, zdict=self.history)
                if self.history
                else zlib.decompressobj(-15)
            )
            out = inflate.decompress(data[2:], unpacked)
            # more output than the block declares is an error, not more data
            if len(out) != unpacked or (
                not inflate.eof and inflate.decompress(inflate.unconsumed_tail, 1)
            ):
                raise InstallerFormatError(
                    f"a data block of {self.cab.what} does not hold the {unpacked} bytes "
                    "it declares"
                )
            self.history = (self.history + out)[-BLOCK:]
        self.pos += len(out)
        self.buffer = out


@dataclass
class _Extracted:
    files: dict[str, Path]
    secret: bool = False


def _extract(
    cf: _Compound, db: _Database, layout: _Layout, workdir: Path, notes: list[str]
) -> tuple[dict[str, Path], bool]:
    """Extract every file of the Orbit root from the MSI's embedded cabinets. secret.txt is
    only checked for a value, never written out."""
    wanted = layout.orbit_files()
    media = sorted(
        (int(r["LastSequence"] or 0), str(r["Cabinet"] or ""), int(r["DiskId"] or 0))
        for r in db.rows("Media")
    )
    by_cabinet: dict[str, dict[str, str]] = {}
    for key, rel in wanted.items():
        sequence = layout.files[key][3]
        cabinet = next((cab for last, cab, _disk in media if sequence <= last), None)
        if not cabinet or not cabinet.startswith("#"):
            raise InstallerFormatError(f"{rel} is not in a cabinet embedded in the MSI")
        by_cabinet.setdefault(cabinet[1:], {})[key] = rel
    result = _Extracted({})
    for stream, keys in sorted(by_cabinet.items()):
        if stream not in cf.entries:
            raise InstallerFormatError(f"the MSI has no stream {stream!r} (Media table)")
        with cf.large(stream) as (f, size):
            _extract_cabinet(_Cabinet(f, size, f"cabinet {stream}"), keys, layout, workdir, result)
    if any(rel == SECRET_FILE for rel in wanted.values()):
        notes.append(f"{SECRET_FILE} (the enroll secret) is in the Orbit root: not extracted")
    return result.files, result.secret


def _extract_cabinet(
    cab: _Cabinet, wanted: dict[str, str], layout: _Layout, workdir: Path, result: _Extracted
) -> None:
    by_name: dict[str, _CabFile] = {}
    for entry in cab.files:
        if entry.name in by_name:
            raise InstallerFormatError(f"{entry.name} appears twice in {cab.what}")
        by_name[entry.name] = entry
    for key, rel in wanted.items():
        member = by_name.get(key)
        if member is None:
            raise InstallerFormatError(f"{rel} (file {key}) is not in {cab.what}")
        if member.size != layout.files[key][2]:
            raise InstallerFormatError(
                f"{rel} is {member.size} bytes in {cab.what}, {layout.files[key][2]} in the "
                "File table"
            )
    by_folder: dict[int, list[tuple[int, int, str]]] = {}
    for e in cab.files:
        by_folder.setdefault(e.folder, []).append((e.offset, e.size, e.name))
    for index, unsorted in sorted(by_folder.items()):
        folder = cab.folders[index]
        members = sorted(unsorted)
        # Files of a folder follow each other; WiX stores identical files once and points
        # each copy at the same bytes, so only an exact repeat may share bytes.
        total = cab.folder_size(folder)
        end = 0
        for (offset, size, name), previous in zip(members, [None, *members[:-1]], strict=True):
            if offset + size > total:
                raise InstallerFormatError(f"{name} exceeds its folder in {cab.what}")
            if previous is not None and offset < end and (offset, size) != previous[:2]:
                raise InstallerFormatError(f"{name} overlaps another file in {cab.what}")
            end = max(end, offset + size)
        regions: dict[tuple[int, int], list[str]] = {}
        for offset, size, name in members:
            if name in wanted:
                regions.setdefault((offset, size), []).append(name)
        if not regions:
            continue
        limit = max(offset + size for offset, size in regions)
        reader = _FolderReader(cab, folder, limit)
        for (offset, size), names in sorted(regions.items()):
            reader.skip(offset - reader.position)
            _write_region(reader, size, [wanted[n] for n in names], workdir, result, cab.what)


def _write_region(
    reader: _FolderReader,
    size: int,
    rels: list[str],
    workdir: Path,
    result: _Extracted,
    what: str,
) -> None:
    """The ``size`` bytes at the reader's position, as each of ``rels`` (copies of one file)."""
    if SECRET_FILE in rels:
        if size > 65536:
            raise InstallerFormatError(f"{SECRET_FILE} in {what} is over 64 KiB")
        data = _read_exact(cast(IO[bytes], reader), size, what)
        # Fleet skips a secret that is empty or its placeholder "dummy".
        result.secret = result.secret or data.strip() not in (b"", PLACEHOLDER.encode())
        source: Callable[[], IO[bytes]] = lambda: io.BytesIO(data)  # noqa: E731
        rels = [rel for rel in rels if rel != SECRET_FILE]
        if not rels:
            return
        first = extract_to(workdir, rels[0], source(), size)
    else:
        first = extract_to(workdir, rels[0], cast(IO[bytes], reader), size)
    result.files[rels[0]] = first
    for rel in rels[1:]:
        with open(first, "rb") as copy:
            result.files[rel] = extract_to(workdir, rel, copy, size)
