"""Windows Installer database (.msi) writer: string pool, tables, streams, SummaryInformation.

An MSI is a Compound File (``cfb.py``) whose streams are the database: ``_StringPool`` and
``_StringData`` (every string once, with reference counts and the database codepage),
``_Tables`` and ``_Columns`` (the schema), one stream per table holding its rows column by
column, one stream per binary cell (``Binary.Key``) and any embedded cabinet. Stream names are
compressed into the CJK range (``encode_stream_name``). No Python library writes MSI databases
(msitools and Wine's msi.dll are C; Fleet's Go writer is unreleased), so this is written from
the formats' descriptions, kept to what an installer needs: no transforms, patches or
sub-storages.

Strings are stored in the database's codepage. The writer never guesses it: the caller
declares it (``choose_codepage`` finds one that carries every string) and a string the
codepage cannot carry is an error, so a value reads back exactly on any system locale.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from packager.writers.cfb import CompoundFileWriter

# The Windows ANSI codepages an MSI can declare, most common first: the first that encodes
# every string of a database is used (1252 for anything Western European).
WINDOWS_CODEPAGES = (1252, 1250, 1251, 1253, 1254, 1257, 1255, 1256, 1258, 874, 932, 936, 949, 950)

# The CLSID Windows Installer stamps on the root storage of an installer package.
MSI_CLSID = struct.pack("<IHH", 0x000C1084, 0, 0) + bytes.fromhex("C000000000000046")

# Column type bits, as _Columns.Type stores them (msiquery.h's icd* values).
_VALID = 0x0100
_LOCALIZABLE = 0x0200
_SHORT = 0x0400
_OBJECT = 0x0800
_STRING = 0x0C00
_NULLABLE = 0x1000
_KEY = 0x2000

_MIME = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._"


def encode_stream_name(name: str, *, table: bool) -> str:
    """Windows Installer's stream-name compression: pairs of [0-9A-Za-z._] packed into one
    code unit of U+3800..U+47FF, single ones into U+4800..U+483F, tables prefixed U+4840 (so a
    31-character storage name holds a 62-character table or stream name)."""
    out = ["\u4840"] if table else []
    i = 0
    while i < len(name):
        first = _MIME.find(name[i]) if name[i].isascii() else -1
        if first < 0:
            out.append(name[i])
            i += 1
            continue
        second = _MIME.find(name[i + 1]) if i + 1 < len(name) and name[i + 1].isascii() else -1
        if second >= 0:
            out.append(chr(0x3800 + first + (second << 6)))
            i += 2
        else:
            out.append(chr(0x4800 + first))
            i += 1
    encoded = "".join(out)
    if len(encoded) > 31:
        raise ValueError(f"MSI stream name {name!r} is too long")
    return encoded


def choose_codepage(strings: Iterable[str]) -> int | None:
    """The first Windows codepage that carries every string exactly, or None."""
    texts = [s for s in strings if not s.isascii()]
    for codepage in WINDOWS_CODEPAGES:
        try:
            for text in texts:
                text.encode(f"cp{codepage}")
        except UnicodeEncodeError:
            continue
        return codepage
    return None


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` is "s" (string), "l" (localizable string), "i2", "i4" or "v"
    (binary, stored as a stream); uppercase nullable, as in the SDK's .idt notation."""

    name: str
    spec: str  # e.g. "s72", "L0", "i2", "I4", "v0"
    key: bool = False
    category: str | None = None  # _Validation category (Identifier, Formatted, Guid, ...)
    key_table: str | None = None
    key_column: int | None = None
    min_value: int | None = None
    max_value: int | None = None
    values: str | None = None  # _Validation "Set" (semicolon-separated)

    @property
    def nullable(self) -> bool:
        return self.spec[0].isupper()

    @property
    def kind(self) -> str:
        return self.spec[0].lower()

    @property
    def width(self) -> int:
        return int(self.spec[1:])

    @property
    def type_bits(self) -> int:
        kind = self.kind
        if kind == "i":
            bits = _VALID | (_SHORT | 2 if self.width == 2 else 4)
        elif kind == "v":
            bits = _VALID | _OBJECT
        else:
            bits = _VALID | _STRING | self.width | (_LOCALIZABLE if kind == "l" else 0)
        return bits | (_NULLABLE if self.nullable else 0) | (_KEY if self.key else 0)


Value = str | int | None


@dataclass
class Table:
    name: str
    columns: Sequence[Column]
    rows: list[tuple[Value, ...]] = field(default_factory=list)

    def add(self, *values: Value) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{self.name}: {len(values)} values for {len(self.columns)} columns")
        for column, value in zip(self.columns, values, strict=True):
            if value is None or value == "":
                if not column.nullable:
                    raise ValueError(f"{self.name}.{column.name} cannot be empty")
            elif column.kind == "i":
                limit = 0x7FFF if column.width == 2 else 0x7FFFFFFF
                if not isinstance(value, int) or not -limit <= value <= limit:
                    raise ValueError(
                        f"{self.name}.{column.name}: {value!r} is not an i{column.width}"
                    )
            elif column.kind == "v":
                if not isinstance(value, str):
                    raise ValueError(f"{self.name}.{column.name}: name the stream's source")
            elif not isinstance(value, str):
                raise ValueError(f"{self.name}.{column.name}: {value!r} is not a string")
            elif column.width and len(value) > column.width:
                raise ValueError(f"{self.name}.{column.name}: {value!r} is over {column.width}")
        self.rows.append(values)

    @property
    def key_count(self) -> int:
        return sum(1 for c in self.columns if c.key)


VALIDATION = Table(
    "_Validation",
    [
        Column("Table", "s32", key=True, category="Identifier"),
        Column("Column", "s32", key=True, category="Identifier"),
        Column("Nullable", "s4", values="Y;N"),
        Column("MinValue", "I4", min_value=-2147483647, max_value=2147483647),
        Column("MaxValue", "I4", min_value=-2147483647, max_value=2147483647),
        Column("KeyTable", "S255", category="Identifier"),
        Column("KeyColumn", "I2", min_value=1, max_value=32),
        Column("Category", "S32"),
        Column("Set", "S255", category="Text"),
        Column("Description", "S255", category="Text"),
    ],
)


class _StringPool:
    """Strings by first use; id 0 is the null string."""

    def __init__(self, codepage: int) -> None:
        self.codepage = codepage
        self.ids: dict[str, int] = {}
        self.refs: list[int] = [0]
        self.data: list[bytes] = [b""]

    def ref(self, text: str) -> int:
        at = self.ids.get(text)
        if at is None:
            try:
                encoded = text.encode(f"cp{self.codepage}")
            except UnicodeEncodeError:
                raise ValueError(
                    f"the MSI string {text!r} cannot be stored in codepage {self.codepage}"
                ) from None
            at = self.ids[text] = len(self.data)
            self.data.append(encoded)
            self.refs.append(0)
        self.refs[at] += 1
        return at

    @property
    def long_refs(self) -> bool:
        return len(self.data) > 0xFFFF

    def streams(self) -> tuple[bytes, bytes]:
        flag = 0x80000000 if self.long_refs else 0
        pool = [struct.pack("<I", self.codepage | flag)]
        for encoded, refs in zip(self.data[1:], self.refs[1:], strict=True):
            if len(encoded) > 0xFFFF:
                # a long string: a zero-length entry carrying the high word of the length
                pool.append(struct.pack("<HH", 0, refs))
                pool.append(struct.pack("<HH", len(encoded) & 0xFFFF, len(encoded) >> 16))
            else:
                pool.append(struct.pack("<HH", len(encoded), refs))
        return b"".join(pool), b"".join(self.data[1:])


class Database:
    """Collects tables and streams; ``write`` lays them out (deterministically) in a compound
    file with the SummaryInformation given."""

    def __init__(self, codepage: int) -> None:
        if codepage not in WINDOWS_CODEPAGES:
            raise ValueError(f"unsupported MSI codepage {codepage}")
        self.codepage = codepage
        self.tables: dict[str, Table] = {}
        self.streams: dict[str, bytes | Path] = {}  # MSI stream name (unencoded) -> content

    def table(self, name: str, columns: Sequence[Column]) -> Table:
        if name not in self.tables:
            self.tables[name] = Table(name, columns)
        return self.tables[name]

    def add_stream(self, name: str, content: bytes | Path) -> None:
        if name in self.streams:
            raise ValueError(f"duplicate MSI stream {name!r}")
        self.streams[name] = content

    def _validation(self) -> Table:
        validation = Table(VALIDATION.name, VALIDATION.columns)
        for table in [*self.tables.values(), VALIDATION]:
            for column in table.columns:
                validation.add(
                    table.name,
                    column.name,
                    "Y" if column.nullable else "N",
                    column.min_value,
                    column.max_value,
                    column.key_table,
                    column.key_column,
                    column.category if column.kind != "v" else "Binary",
                    column.values,
                    None,
                )
        return validation

    def write(self, out: BinaryIO, summary: bytes) -> None:
        tables = dict(self.tables)
        tables[VALIDATION.name] = self._validation()
        names = sorted(tables)
        pool = _StringPool(self.codepage)
        # Every string is referenced (and counted) first; only then is the width of a string
        # reference known (2 bytes, or 3 when the pool outgrows 65535 strings).
        table_ids = sorted(pool.ref(name) for name in names)
        column_rows = sorted(
            (pool.ref(name), number | 0x8000, pool.ref(column.name), column.type_bits | 0x8000)
            for name in names
            for number, column in enumerate(tables[name].columns, start=1)
        )
        binaries: dict[str, bytes | Path] = {}
        cells = {name: self._cells(tables[name], pool, binaries) for name in names}
        ref = 3 if pool.long_refs else 2
        streams = {
            "_Tables": _pack_columns([table_ids], [ref]),
            "_Columns": _pack_columns([list(c) for c in zip(*column_rows, strict=True)],
                                      [ref, 2, ref, 2]),
        }  # fmt: skip
        for name in names:
            widths = [_cell_width(column, ref) for column in tables[name].columns]
            streams[name] = _pack_columns(cells[name], widths)
        pool_bytes, data_bytes = pool.streams()
        cfb = CompoundFileWriter(out, root_clsid=MSI_CLSID)
        cfb.add_stream("\x05SummaryInformation", summary)
        cfb.add_stream(encode_stream_name("_StringPool", table=True), pool_bytes)
        cfb.add_stream(encode_stream_name("_StringData", table=True), data_bytes)
        for name, data in streams.items():
            cfb.add_stream(encode_stream_name(name, table=True), data)
        others = {**self.streams, **binaries}
        if len(others) != len(self.streams) + len(binaries):
            raise ValueError("a binary cell's stream collides with another stream")
        for name, content in sorted(others.items()):
            stream = encode_stream_name(name, table=False)
            if isinstance(content, Path):
                cfb.add_stream_file(stream, content)
            else:
                cfb.add_stream(stream, content)
        cfb.close()

    @staticmethod
    def _cells(
        table: Table, pool: _StringPool, binaries: dict[str, bytes | Path]
    ) -> list[list[int]]:
        """The table's stored values, rows sorted by their stored keys, as columns."""
        stored: list[list[int]] = []
        for row in table.rows:
            cells = []
            for column, value in zip(table.columns, row, strict=True):
                if value is None or value == "":
                    cells.append(0)
                elif isinstance(value, int):  # Table.add checked the column's kind
                    cells.append(value + (0x8000 if column.width == 2 else 0x80000000))
                elif column.kind == "v":
                    # the stream is named after the row's keys; the cell only marks it present
                    names = [str(v) for c, v in zip(table.columns, row, strict=True) if c.key]
                    binaries[f"{table.name}.{'.'.join(names)}"] = Path(value)
                    cells.append(1)
                else:
                    cells.append(pool.ref(value))
            stored.append(cells)
        keys = table.key_count
        stored.sort(key=lambda stored_row: stored_row[:keys])
        return [list(column) for column in zip(*stored, strict=True)]


def _cell_width(column: Column, ref: int) -> int:
    if column.kind == "i":
        return column.width
    return 2 if column.kind == "v" else ref


def _pack_columns(columns: list[list[int]], widths: list[int]) -> bytes:
    out = bytearray()
    for values, width in zip(columns, widths, strict=False):
        for value in values:
            out += value.to_bytes(width, "little")
    return bytes(out)


# -- SummaryInformation (MS-OLEPS property set) ----------------------------------------------
_FMTID_SUMMARY = struct.pack("<IHH", 0xF29F85E0, 0x4FF9, 0x1068) + bytes.fromhex("AB9108002B27B3D9")
_EPOCH_AS_FILETIME = 116444736000000000  # 1970-01-01 in 100 ns ticks since 1601-01-01
VT_I2, VT_I4, VT_LPSTR, VT_FILETIME = 2, 3, 0x1E, 0x40


@dataclass(frozen=True)
class Summary:
    codepage: int
    title: str
    subject: str
    author: str
    keywords: str
    comments: str
    template: str  # platform;language, e.g. "x64;1033"
    package_code: str  # "{GUID}"
    timestamp: int  # Unix seconds: created and last saved
    page_count: int  # minimum Windows Installer version x 100
    word_count: int  # 2: long file names, compressed source
    app_name: str
    security: int = 2  # read-only recommended

    def encode(self) -> bytes:
        ticks = _EPOCH_AS_FILETIME + self.timestamp * 10_000_000
        text = [
            (2, self.title), (3, self.subject), (4, self.author), (5, self.keywords),
            (6, self.comments), (7, self.template), (8, self.author), (9, self.package_code),
            (18, self.app_name),
        ]  # fmt: skip
        blobs = {1: struct.pack("<IhH", VT_I2, self.codepage, 0)}
        for pid, value in text:
            encoded = value.encode(f"cp{self.codepage}") + b"\0"
            blob = struct.pack("<II", VT_LPSTR, len(encoded)) + encoded
            blobs[pid] = blob + b"\0" * (-len(blob) % 4)
        for pid in (12, 13):  # created, last saved
            blobs[pid] = struct.pack("<IQ", VT_FILETIME, ticks)
        for pid, number in ((14, self.page_count), (15, self.word_count), (19, self.security)):
            blobs[pid] = struct.pack("<Ii", VT_I4, number)
        props = sorted(blobs)
        values = [blobs[pid] for pid in props]
        header_size = 8 + 8 * len(props)
        offsets, at = [], header_size
        for blob in values:
            offsets.append(at)
            at += len(blob)
        section = struct.pack("<II", at, len(props))
        section += b"".join(
            struct.pack("<II", pid, off) for pid, off in zip(props, offsets, strict=True)
        )
        section += b"".join(values)
        header = struct.pack("<HHI", 0xFFFE, 0, 0x00020006) + bytes(16) + struct.pack("<I", 1)
        header += _FMTID_SUMMARY + struct.pack("<I", 48)
        return header + section
