"""Inspect downloaded executables from their headers, without ever running them.

fleetctl checks a target by executing ``<target> --help`` on the build host; a compromised or
wrong target then runs with the builder's privileges. We parse headers instead: an orbit or
osqueryd must be an executable for the installer's OS and CPU, and Windows binaries' version
resource is read (the MSI File table needs it).

The headers are read here, not by lief: lief's parsers load the whole file into memory before
parsing (its file, bytes and io entry points all make one vector of it, and no ParserConfig
changes that), so an 800 MiB osqueryd cost 800 MiB and up to seconds. Handing lief only the
header region does not work either: the facts live far apart (a PE's version resource is at the
end, an ELF's dynamic table after the code, a universal Mach-O's slices anywhere). So this
module reads those few structures with bounded seeks and reads; memory and time do not depend
on the file's size. The reading follows lief 1.0's parsers step by step (same limits, same
"stop at the first unreadable entry" rules), so that verdicts and messages stay what they were
when lief parsed the whole file. lief is not imported at all (it cost ~0.4 s): the CPU names
it spelled come from tables generated from its enums (packager.fetch.binary_names).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packager.errors import PackagerError
from packager.fetch.binary_names import ELF_ARCH, MACHO_CPU_TYPE, PE_MACHINE_TYPES

# Installer OS -> binary format; installer arch -> the CPU names lief reports.
_FORMAT = {"linux": "ELF", "windows": "PE", "macos": "Mach-O"}
_CPU = {
    "ELF": {"amd64": "X86_64", "arm64": "AARCH64"},
    "PE": {"amd64": "AMD64", "arm64": "ARM64"},
    "Mach-O": {"amd64": "X86_64", "arm64": "ARM64"},
}

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class TargetMismatchError(PackagerError):
    """A target is not an executable for the installer's OS and CPU."""


@dataclass(frozen=True)
class BinaryInfo:
    format: str  # ELF | PE | Mach-O
    cpus: tuple[str, ...]  # lief's names, e.g. ("X86_64",) or ("X86_64", "ARM64")
    executable: bool
    version: str | None = None  # PE version resource (FileVersion), dotted

    def describe(self) -> str:
        kind = "executable" if self.executable else "non-executable"
        return f"{self.format} {'+'.join(self.cpus) or 'unknown CPU'} {kind}"


def _cpu_name(names: Mapping[int, str], value: int) -> str:
    """lief's spelling of ``value``; lief shows a value outside its enum as the number (a
    negative Mach-O CPU type as its 64-bit two's complement)."""
    name = names.get(value)
    return str(value & _U64) if name is None else name


class _File:
    """Bounded reads at absolute offsets; a read past the end gives None, as lief's stream
    reads fail."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = os.fstat(f.fileno()).st_size

    def fits(self, offset: int, size: int) -> bool:
        return offset >= 0 and size >= 0 and offset + size <= self.size

    def read(self, offset: int, size: int) -> bytes | None:
        if not self.fits(offset, size):
            return None
        self._f.seek(offset)
        data = self._f.read(size)
        return data if len(data) == size else None

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...] | None:
        data = self.read(offset, struct.calcsize(fmt))
        return None if data is None else struct.unpack(fmt, data)


def inspect_binary(path: Path) -> BinaryInfo:
    """Identify ``path``'s format and CPUs (format "unknown" if it is none we know)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError:
        return BinaryInfo("unknown", (), False)  # as with lief: what cannot be opened is no format
    with f:
        file = _File(f)
        head = file.read(0, 4) or b""
        if head == b"\x7fELF":  # lief.is_elf
            return _elf(file)
        if _is_pe(file):
            return _pe(file)
        if _is_macho(file):
            return _macho(file)
    return BinaryInfo("unknown", (), False)


# -- ELF (lief/src/ELF/Parser.cpp, Parser.tcc) ---------------------------------------------------

# e_machine values whose byte order lief knows, as it uses them to pick the header's order:
# big-endian only (H8_300 SPARC SPARCV9 S390 M68K OPENRISC), little-endian only (HEXAGON ALPHA
# ALTERA_NIOS2 CRIS I386 X86_64 LOONGARCH), either (AARCH64 ARM SH XTENSA ARC MIPS PPC PPC64 IA_64).
_ELF_MSB_ONLY = {46, 2, 43, 22, 4, 92}
_ELF_LSB_ONLY = {164, 41, 113, 76, 3, 62, 258}
_ELF_BI_ENDIAN = {183, 40, 42, 94, 45, 8, 20, 21, 50}
_ELF_64_MACHINES = {183, 62, 21, 43}  # AARCH64 X86_64 PPC64 SPARCV9
_ELF_32_MACHINES = {3, 40, 20}  # I386 ARM PPC
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_FLAGS_1 = 0, 0x6FFFFFFB
_DF_1_PIE = 0x08000000  # static-PIE executables have no interpreter, only this flag
_NB_MAX_SEGMENTS = 10000
_NB_MAX_DYNAMIC_ENTRIES = 1000
_MAX_SEGMENT_SIZE = 3 << 30


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


def _elf_big_endian(file: _File) -> bool:
    """lief's determine_elf_endianess: e_machine's known byte order wins over EI_DATA."""
    ident = file.read(0, 16)
    ei_data = ident[5] if ident is not None else 0
    raw = file.read(18, 2)
    if raw is not None:
        machine, machine_swap = struct.unpack("<H", raw)[0], struct.unpack(">H", raw)[0]
        for value in (machine, machine_swap):  # lief keeps the swapped read's order as is
            if value in _ELF_MSB_ONLY:
                return True
            if value in _ELF_LSB_ONLY:
                return False
        if machine in _ELF_BI_ENDIAN:
            return False  # the host's order (little-endian here)
        if machine_swap in _ELF_BI_ENDIAN:
            return True
    return ei_data == 2


def _elf_is_64(file: _File, end: str) -> bool | None:
    """lief's determine_elf_target: the class e_machine implies, else EI_CLASS; None: unknown."""
    ident = file.read(0, 16)
    from_ident = None
    if ident is not None and ident[4] in (1, 2):
        from_ident = ident[4] == 2
    fields = file.unpack(end + "HH", 16)
    if fields is None:
        return from_ident
    e_type, machine = fields
    from_machine = (
        True if machine in _ELF_64_MACHINES else False if machine in _ELF_32_MACHINES else None
    )
    if from_machine is not None and from_ident is not None:
        if from_machine == from_ident or e_type == 1:  # REL keeps EI_CLASS
            return from_ident
        if machine in (62, 183) and from_ident is False:  # x32, arm64ilp32
            return False
        return from_machine
    return from_machine if from_machine is not None else from_ident


def _elf(file: _File) -> BinaryInfo:
    end = ">" if _elf_big_endian(file) else "<"
    is_64 = _elf_is_64(file, end)
    e_type = machine = phoff = phnum = 0  # lief's defaults for fields it could not read
    if is_64 is not None:
        # lief reads the header field by field and stops at the first one past the end.
        if (value := file.unpack(end + "H", 16)) is not None:
            e_type = value[0]
            if (value := file.unpack(end + "H", 18)) is not None:
                machine = value[0]
        phoff_at, phnum_at, word = (32, 56, "Q") if is_64 else (28, 44, "I")
        if (value := file.unpack(end + word, phoff_at)) is not None:
            phoff = value[0]
            if (count := file.unpack(end + "H", phnum_at)) is not None:
                phnum = count[0]
            elif (byte := file.read(phnum_at, 1)) is not None:
                phnum = byte[0]  # lief's fallback when e_phnum is cut in half
    segments = _elf_segments(file, end, is_64 is True, phoff, phnum) if phoff > 0 else []
    arch = _cpu_name(ELF_ARCH, machine)
    return BinaryInfo("ELF", (arch,), _elf_executable(file, end, is_64 is True, e_type, segments))


def _elf_segments(file: _File, end: str, is_64: bool, phoff: int, phnum: int) -> list[_Segment]:
    size = 56 if is_64 else 32
    fmt = end + ("IIQQQQQQ" if is_64 else "IIIIIIII")
    segments = []
    for i in range(min(phnum, _NB_MAX_SEGMENTS)):
        fields = file.unpack(fmt, phoff + i * size)
        if fields is None:
            break
        if is_64:
            p_type, _flags, offset, vaddr, _paddr, filesz, memsz, _align = fields
        else:
            p_type, offset, vaddr, _paddr, filesz, memsz, _flags, _align = fields
        segments.append(_Segment(p_type, offset, vaddr, filesz, memsz))
    return segments


def _segment_extent(file: _File, seg: _Segment) -> int | None:
    """The size of what lief keeps of a segment's content, None when it keeps none."""
    if not 0 < seg.filesz < _MAX_SEGMENT_SIZE:
        return None
    size = min(seg.filesz, file.size)
    return size if file.fits(seg.offset, size) else None


def _elf_executable(
    file: _File, end: str, is_64: bool, e_type: int, segments: list[_Segment]
) -> bool:
    """EXEC, or a DYN that is a program (a PIE: an interpreter or DF_1_PIE), not a library."""
    if e_type == 2:  # EXEC
        return True
    if e_type != 3:  # DYN
        return False
    # has_interpreter: a PT_INTERP, and the string of the last readable one is not empty.
    interpreter = b""
    for seg in segments:
        if seg.type == _PT_INTERP and _segment_extent(file, seg) is not None:
            interpreter = file.read(seg.offset, 1) or b""
    if any(s.type == _PT_INTERP for s in segments) and interpreter not in (b"", b"\0"):
        return True
    return any(
        tag == _DT_FLAGS_1 and value & _DF_1_PIE
        for tag, value in _elf_dynamic(file, end, is_64, segments)
    )


def _elf_dynamic(
    file: _File, end: str, is_64: bool, segments: list[_Segment]
) -> list[tuple[int, int]]:
    """The first PT_DYNAMIC's entries, read where lief reads them: through the last PT_LOAD
    that wraps it, else at its file offset."""
    dynamic = next((s for s in segments if s.type == _PT_DYNAMIC), None)
    if dynamic is None:
        return []
    entry_size, fmt = (16, end + "qQ") if is_64 else (8, end + "iI")
    start, limit = dynamic.offset, file.size  # a stream over the whole file, from p_offset
    dyn_start = dynamic.vaddr
    dyn_end = (dyn_start + dynamic.memsz) & _U64
    loads = [
        s
        for s in segments
        if s.type == _PT_LOAD
        and s.vaddr <= dyn_start < ((s.vaddr + s.memsz) & _U64)
        and s.vaddr < dyn_end <= ((s.vaddr + s.memsz) & _U64)
    ]
    count_limit = _NB_MAX_DYNAMIC_ENTRIES
    if loads:
        load = loads[-1]
        extent = _segment_extent(file, load)
        rel = dyn_start - load.vaddr
        if extent is None or not 0 <= rel < extent:
            return []
        start, limit = load.offset + rel, load.offset + extent
        count_limit = min(count_limit, (limit - start) // entry_size)
    else:
        count_limit = min(count_limit, file.size // entry_size)
        if start > file.size:
            return []
    entries = []
    for i in range(count_limit):
        at = start + i * entry_size
        if at + entry_size > limit:
            break
        fields = file.unpack(fmt, at)
        if fields is None:
            break
        entries.append((fields[0], fields[1]))
        if fields[0] == _DT_NULL:
            break
    return entries


# -- PE (lief/src/PE/utils.cpp, Parser.cpp, Parser.tcc, ResourceNode.cpp, ResourceVersion.cpp) ---

_IMAGE_FILE_DLL = 0x2000
_NB_MAX_SECTIONS = 1000
_MAX_DATA_DIRECTORIES = 30
_RT_VERSION = 16
_MAX_RESOURCE_DEPTH = 60
# lief walks every resource node; a hostile tree can make millions. Past this many we stop
# looking for a version (it is optional), so time stays bounded.
_MAX_RESOURCE_ENTRIES = 20_000


def _is_pe(file: _File) -> bool:
    """lief.is_pe: an MZ DOS header whose e_lfanew points at "PE\\0\\0"."""
    dos = file.read(0, 64)
    if dos is None or dos[:2] != b"MZ":
        return False
    (lfanew,) = struct.unpack_from("<I", dos, 0x3C)
    return file.read(lfanew, 4) == b"PE\0\0"


@dataclass(frozen=True)
class _Section:
    vsize: int
    va: int
    raw_size: int
    raw_ptr: int


def _pe(file: _File) -> BinaryInfo:
    (lfanew,) = file.unpack("<I", 0x3C) or (0,)  # _is_pe read it
    header = file.read(lfanew, 24)  # signature + COFF file header
    opt_magic = file.unpack("<H", lfanew + 24)
    if header is None or opt_magic is None or not file.fits(lfanew + 24, 96):
        return BinaryInfo("unknown", (), False)  # lief.PE.parse gives None
    machine, nsections = struct.unpack_from("<HH", header, 4)
    opt_size, characteristics = struct.unpack_from("<HH", header, 20)
    if opt_magic[0] in (0x10B, 0x20B):
        pe64 = opt_magic[0] == 0x20B
    elif opt_size in (0xE0, 0xF0):
        pe64 = opt_size == 0xF0
    else:
        return BinaryInfo("unknown", (), False)
    cpu = _cpu_name(PE_MACHINE_TYPES, machine)
    version = _pe_version(file, lfanew, pe64, opt_size, nsections)
    return BinaryInfo("PE", (cpu,), not characteristics & _IMAGE_FILE_DLL, version)


def _pe_version(file: _File, lfanew: int, pe64: bool, opt_size: int, nsections: int) -> str | None:
    opt_at = lfanew + 24
    opt_struct = 112 if pe64 else 96
    opt = file.read(opt_at, opt_struct)
    if opt is None:
        return None  # lief stops after the headers
    section_alignment, file_alignment = struct.unpack_from("<II", opt, 32)
    (ndirs,) = struct.unpack_from("<I", opt, 108 if pe64 else 92)
    sections = []
    for i in range(min(nsections, _NB_MAX_SECTIONS)):
        at = opt_at + opt_size + i * 40  # IMAGE_SECTION_HEADER, read whole as lief does
        raw = file.unpack("<IIII", at + 8)
        if raw is None or not file.fits(at, 40):
            break
        sections.append(_Section(*raw))
    # Data directories follow the optional header's fixed part; all of them must be readable
    # for lief to go on to the resources (index 2).
    ndirs = min(ndirs, _MAX_DATA_DIRECTORIES)
    directories = file.read(opt_at + opt_struct, ndirs * 8)
    if directories is None or ndirs < 3:
        return None
    (rsrc_rva,) = struct.unpack_from("<I", directories, 16)
    if rsrc_rva == 0:
        return None
    if section_alignment < 0x1000:
        section_alignment = file_alignment

    def rva_to_offset(rva: int) -> int:
        for s in sections:
            if s.va <= rva < s.va + max(s.vsize, s.raw_size):
                va = _align(s.va, section_alignment)
                return (rva - va + _align(s.raw_ptr, file_alignment)) & _U64
        return rva

    tree = _ResourceTree(file, rva_to_offset)
    root = rva_to_offset(rsrc_rva) & _U32
    for content_offset, content_size in tree.versions(root):
        version = _fixed_file_version(file, content_offset, content_size)
        if version is not None:
            return version
    return None


def _align(value: int, align_on: int) -> int:
    if align_on == 0:
        return value
    remainder = value % align_on
    return value + (align_on - remainder) if remainder else value


@dataclass
class _ResourceDir:
    children: list[tuple[int, _ResourceDir | tuple[int, int]]]  # (id, directory | leaf)


class _ResourceTree:
    """lief's TreeParser, keeping only ids and where each leaf's data is (never the data)."""

    def __init__(self, file: _File, rva_to_offset: Callable[[int], int]) -> None:
        self.file = file
        self.rva_to_offset = rva_to_offset
        self.visited: set[int] = set()
        self.entries = 0

    def versions(self, root_offset: int) -> list[tuple[int, int]]:
        if self.file.read(root_offset, 16) is None:
            return []  # no resource tree: has_resources is false
        root = self._node(root_offset, root_offset, 0)
        if root is None:
            return []
        # ResourcesManager.version: the first root child with id 16, its directories' leaves.
        node = next((child for ident, child in root.children if ident == _RT_VERSION), None)
        if not isinstance(node, _ResourceDir):
            return []
        found = []
        for _ident, level1 in node.children:
            if isinstance(level1, _ResourceDir):
                found += [leaf for _i, leaf in level1.children if isinstance(leaf, tuple)]
        return found

    def _node(self, base: int, current: int, depth: int) -> _ResourceDir | None:
        if depth > _MAX_RESOURCE_DEPTH:
            return None
        key = (base + current) & _U32
        if key in self.visited:
            return None
        self.visited.add(key)
        table = self.file.read(current, 16)
        array_at = current + 16
        if table is None or self.file.read(array_at, 8) is None:
            return None
        named, ids = struct.unpack_from("<HH", table, 12)
        directory = _ResourceDir([])
        for i in range(named + ids):
            self.entries += 1
            if self.entries > _MAX_RESOURCE_ENTRIES:
                break
            entry = self.file.unpack("<II", array_at + i * 8)
            if entry is None:
                break
            ident, data_rva = entry
            if not data_rva & 0x80000000:  # a leaf: a data entry (RVA, size)
                offset = (base + data_rva) & _U32
                data_entry = self.file.unpack("<II", offset)
                if data_entry is None or not self.file.fits(offset, 16):
                    break
                if offset in self.visited:
                    break
                self.visited.add(offset)
                rva, size = data_entry
                content = self.rva_to_offset(rva)
                if size and not self.file.fits(content, size):
                    break
                directory.children.append((ident, (content, size)))
            else:
                offset = (base + (data_rva & 0x7FFFFFFF)) & _U32
                if self.file.read(offset, 16) is None:
                    break
                child = self._node(base, offset, depth + 1)
                if child is not None:
                    directory.children.append((ident, child))
        return directory


def _fixed_file_version(file: _File, offset: int, size: int) -> str | None:
    """VS_VERSIONINFO's VS_FIXEDFILEINFO file version, dotted; None if absent or zero."""
    key = "VS_VERSION_INFO\0".encode("utf-16-le")
    head = file.read(offset, min(size, 6 + len(key)))
    if head is None or len(head) < 6 + len(key):
        return None
    _length, value_length, value_type = struct.unpack_from("<HHH", head)
    if value_type not in (0, 1) or head[6:] != key or value_length == 0:
        return None
    value_at = 40  # the key's end, aligned on 32 bits
    if value_at + value_length > size or value_length < 52:
        return None  # the Value is cut (lief refuses the resource) or too short for the fields
    fixed = file.unpack("<IIII", offset + value_at)
    if fixed is None:
        return None
    _signature, _struct_version, ms, ls = fixed
    if not (ms or ls):
        return None
    return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"


# -- Mach-O (lief/src/MachO/utils.cpp, Parser.cpp, BinaryParser.cpp) ----------------------------

_MACHO_MAGICS = {0xFEEDFACE, 0xCEFAEDFE, 0xFEEDFACF, 0xCFFAEDFE, 0xCAFEBABE, 0xBEBAFECA, 0xBEF0FACE}
_FAT_MAGICS = {0xCAFEBABE, 0xBEBAFECA}
_MAX_FAT_ARCH = 30
_MH_EXECUTE = 2


def _macho_magic(head: bytes | None) -> bool:
    """lief.is_macho on the first 8 bytes: a Mach-O magic, and not a Java class file (which
    shares 0xCAFEBABE)."""
    if head is None or len(head) < 8:
        return False
    if head[:4] == b"\xca\xfe\xba\xbe" and 45 <= int.from_bytes(head[6:8], "big") <= 69:
        return False
    return struct.unpack_from("<I", head)[0] in _MACHO_MAGICS


def _is_macho(file: _File) -> bool:
    return _macho_magic(file.read(0, 8))


def _macho(file: _File) -> BinaryInfo:
    (magic,) = struct.unpack("<I", file.read(0, 4) or b"\0\0\0\0")
    slices: list[tuple[int, int]] = []  # (offset, size) of each Mach-O lief would parse
    if magic in _FAT_MAGICS:
        (count,) = struct.unpack(">I", file.read(4, 4) or b"\0\0\0\0")
        if count <= _MAX_FAT_ARCH:
            for i in range(count):
                arch = file.unpack(">IIIII", 8 + i * 20)
                if arch is None:
                    break
                _cpu, _sub, offset, size, _align = arch
                if (
                    size
                    and file.fits(offset, size)
                    and _macho_magic(file.read(offset, min(size, 8)))
                ):
                    slices.append((offset, size))
    else:
        slices.append((0, file.size))
    headers = [_macho_header(file, offset, size) for offset, size in slices]
    cpus = tuple(_cpu_name(MACHO_CPU_TYPE, cpu) for cpu, _ in headers)
    return BinaryInfo("Mach-O", cpus, all(kind == _MH_EXECUTE for _, kind in headers))


def _macho_header(file: _File, offset: int, size: int) -> tuple[int, int]:
    """(cputype, filetype) of the Mach-O at ``offset``; lief's defaults if the header is cut."""
    (magic,) = struct.unpack("<I", file.read(offset, 4) or b"\0\0\0\0")
    end = ">" if magic in (0xCEFAEDFE, 0xCFFAEDFE) else "<"
    header_size = 32 if magic in (0xFEEDFACF, 0xCFFAEDFE, 0xBEF0FACE) else 28
    if header_size > size:
        return -1, 0  # lief's defaults: CPU_TYPE.ANY, FILE_TYPE.UNKNOWN
    fields = file.unpack(end + "iII", offset + 4)
    if fields is None:
        return -1, 0
    cpu, _subtype, kind = fields
    return cpu, kind


def require_executable(path: Path, target: str, os_name: str, archs: list[str]) -> BinaryInfo:
    """Check ``path`` (TUF target ``target``) is an ``os_name`` executable for all ``archs``."""
    info = inspect_binary(path)
    wanted_format = _FORMAT[os_name]
    wanted_cpus = {_CPU[wanted_format][a] for a in archs}
    ok = (
        info.format == wanted_format
        and info.executable
        and wanted_cpus.issubset(set(info.cpus))
        and (wanted_format == "Mach-O" or len(info.cpus) == 1)
    )
    if not ok:
        expected = f"{wanted_format} {'+'.join(sorted(wanted_cpus))} executable"
        raise TargetMismatchError(
            f"target {target} is {_article(info.describe())}, expected {_article(expected)}",
            hint="check --arch and the target's platform in the update repository",
        )
    return info


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "AEIOUaeiou" else "a ") + noun
