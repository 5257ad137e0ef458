"""Issue 18: checking a downloaded agent binary costs the same for 16 MiB as for 512 MiB, and
does not import lief.

* Peak RSS of a fresh child process that inspects one binary, for a small and a large binary of
  each format, the large one with what is read placed far into the file: an ELF with a sparse
  tail, a PE whose version resource (.rsrc) is moved to the end, a universal Mach-O whose second
  slice sits at the end. The whole-file lief parse this replaced grew by one to two times the
  growth of the file (480 to 1000 MiB here); the header reader must not grow by more than a few
  MiB.
* Inspecting binaries never imports lief (~0.4 s): the CPU names come from static tables,
  generated from lief 1.0.0's enums by :func:`binary_names_source` (run this file to rewrite
  them), and checked here against the installed lief's enums, so a lief that renames is caught.
* Hostile headers (truncated, offsets past the end, huge counts), every truncation of the sample
  binaries and every ELF class/byte-order/machine combination lief treats specially give the
  verdict lief gives when it parses the whole file (lief is the oracle here, called as the
  packager called it before), and a one-line refusal.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from enum import Enum
from importlib import metadata
from pathlib import Path

import lief
import pytest

from packager.fetch import binary_names
from packager.fetch.inspect import BinaryInfo, TargetMismatchError, _cpu_name, inspect_binary
from packager.fetch.inspect import require_executable as require
from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
EXE = FIXTURES / "executables"
STANDIN = FIXTURES / "windows-service" / "orbit-standin-1.0.0.exe"
MiB = 1024 * 1024
SMALL, LARGE = 16 * MiB, 512 * MiB
# Peak RSS differs by well under 1 MiB between two runs of the same child; the old whole-file
# parse differed by the file's size.
TOLERANCE_KIB = 4 * 1024

lief.logging.disable()


# -- building large binaries (sparse: only the headers and the moved data take disk) -----------


def _sparse(dest: Path, data: bytes, size: int, placed: dict[int, bytes] | None = None) -> Path:
    with open(dest, "wb") as f:
        f.write(data)
        for offset, chunk in (placed or {}).items():
            f.seek(offset)
            f.write(chunk)
        f.truncate(size)
    return dest


def _elf(dest: Path, size: int) -> Path:
    """The Linux fixture with a zero tail (the tail is what lief used to load)."""
    return _sparse(dest, (EXE / "orbit-linux-x86_64").read_bytes(), size)


def _rsrc_section(data: bytes | bytearray) -> tuple[int, int, int]:
    """(section header offset, SizeOfRawData, PointerToRawData) of the stand-in's .rsrc."""
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    nsections, opt_size = (
        struct.unpack_from("<H", data, pe + 6)[0],
        struct.unpack_from("<H", data, pe + 20)[0],
    )
    for i in range(nsections):
        at = pe + 24 + opt_size + 40 * i
        if data[at : at + 8].rstrip(b"\0") == b".rsrc":
            raw_size, raw_ptr = struct.unpack_from("<II", data, at + 16)
            return at, raw_size, raw_ptr
    raise AssertionError("the stand-in has no .rsrc section")


def _pe_rsrc_at_end(dest: Path, size: int) -> Path:
    """The stand-in .exe (it has a version resource) with its .rsrc raw data moved to the last
    FileAlignment boundary that holds it: the version is then read from the end of the file."""
    data = bytearray(STANDIN.read_bytes())
    at, raw_size, raw_ptr = _rsrc_section(data)
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    file_alignment = struct.unpack_from("<I", data, pe + 24 + 36)[0]
    moved = (size - raw_size) // file_alignment * file_alignment
    struct.pack_into("<I", data, at + 20, moved)
    return _sparse(dest, bytes(data), size, {moved: bytes(data[raw_ptr : raw_ptr + raw_size])})


def _fat_slice_at_end(dest: Path, size: int) -> Path:
    """The universal fixture with its second (arm64) slice moved to the end of the file."""
    data = bytearray((EXE / "orbit-macos-universal").read_bytes())
    assert struct.unpack_from(">II", data, 0) == (0xCAFEBABE, 2)
    offset, length, align = struct.unpack_from(">III", data, 8 + 20 + 8)
    moved = (size - length) // (1 << align) * (1 << align)
    struct.pack_into(">I", data, 8 + 20 + 8, moved)
    return _sparse(dest, bytes(data), size, {moved: bytes(data[offset : offset + length])})


BUILDERS: dict[
    str, tuple[Callable[[Path, int], Path], tuple[str, tuple[str, ...], bool, str | None]]
] = {
    "elf": (_elf, ("ELF", ("X86_64",), True, None)),
    "pe": (_pe_rsrc_at_end, ("PE", ("AMD64",), True, "1.0.0.0")),
    "macho": (_fat_slice_at_end, ("Mach-O", ("X86_64", "ARM64"), True, None)),
}

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from packager.fetch.inspect import inspect_binary
    info = inspect_binary(Path(sys.argv[1]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps([info.format, info.cpus, info.executable, info.version, peak]))
    """
)


def _inspect_in_child(path: Path) -> tuple[tuple[object, ...], int]:
    """(verdict, peak RSS in KiB) of a fresh interpreter that inspects ``path``."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    fmt, cpus, executable, version, peak = json.loads(done.stdout)
    return (fmt, tuple(cpus), executable, version), peak


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_peak_memory_does_not_grow_with_the_binary(tmp_path: Path, kind: str) -> None:
    build, expected = BUILDERS[kind]
    small, large = build(tmp_path / "small", SMALL), build(tmp_path / "large", LARGE)
    assert large.stat().st_size == LARGE
    peaks = {}
    for path in (small, large):  # each in a fresh interpreter: ru_maxrss is per process
        verdict, peaks[path] = _inspect_in_child(path)
        assert verdict == expected, path.name
    growth = peaks[large] - peaks[small]
    assert growth < TOLERANCE_KIB, f"peak RSS {peaks} KiB: +{growth} KiB for +{LARGE - SMALL} bytes"


# -- lief is never imported; its names come from tables -------------------------------------------


def test_inspecting_binaries_never_imports_lief() -> None:
    """A name from each table (ELF, PE, Mach-O), and a refusal's message, in a fresh process."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import packager.fetch.inspect as inspect
        exe = Path({str(EXE)!r})
        seen = [
            inspect.inspect_binary(exe / name).describe()
            for name in ("orbit-linux-x86_64", "orbit-windows-x86_64.exe", "orbit-macos-universal")
        ]
        try:
            inspect.require_executable(exe / "orbit-macos-universal", "t", "linux", ["arm64"])
        except inspect.TargetMismatchError as err:
            seen.append(err.message)
        assert seen == [
            "ELF X86_64 executable",
            "PE AMD64 executable",
            "Mach-O X86_64+ARM64 executable",
            "target t is a Mach-O X86_64+ARM64 executable, expected an ELF AARCH64 executable",
        ], seen
        assert "lief" not in sys.modules, "lief was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# The tables of packager.fetch.binary_names and the lief enums they were generated from.
NAME_TABLES: dict[str, type[Enum]] = {
    "ELF_ARCH": lief.ELF.ARCH,
    "PE_MACHINE_TYPES": lief.PE.Header.MACHINE_TYPES,
    "MACHO_CPU_TYPE": lief.MachO.Header.CPU_TYPE,
}


def _lief_table(enum_type: type[Enum]) -> dict[int, str]:
    """Every value ``enum_type`` knows, spelled as the packager spelled lief's enums."""
    return {member.value: _lief_name(enum_type(member.value)) for member in enum_type}


def binary_names_source() -> str:
    """packager/fetch/binary_names.py, generated from the installed lief's enums."""
    lines = [
        f'"""CPU names of binary headers, as lief {metadata.version("lief")} spells them.',
        "",
        "The packager showed lief's enum names in its messages (``X86_64``, ``AMD64``, ``ARM64``),",
        "and shows a value outside them as its number. These tables keep those names without",
        "importing lief (~0.4 s). Generated by ``python -m tests.test_binary_memory`` (which",
        "rewrites this file) and checked against the installed lief by that test module.",
        '"""',
        "",
        "from __future__ import annotations",
    ]
    for name, enum_type in NAME_TABLES.items():
        where = enum_type.__module__.replace("._lief", "")  # lief._lief.ELF: lief.ELF
        lines += ["", f"{name}: dict[int, str] = {{  # {where}.{enum_type.__qualname__}"]
        for value, spelled in _lief_table(enum_type).items():
            # e_machine numbers are decimal in elf.h; PE machines and Mach-O CPU types hex.
            number = str(value) if name == "ELF_ARCH" or value < 0 else f"0x{value:X}"
            lines.append(f'    {number}: "{spelled}",')
        lines.append("}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("table", sorted(NAME_TABLES))
def test_the_cpu_name_tables_are_lief_s_enums(table: str) -> None:
    """Same values, same names: a lief that renames, adds or drops a value fails here (then
    decide whether messages may change, and regenerate)."""
    ours, liefs = getattr(binary_names, table), _lief_table(NAME_TABLES[table])
    assert sorted(ours.items() ^ liefs.items()) == []  # the (value, name) pairs not in both


def _old_cpu_name(enum_type: type[Enum], value: int) -> str:
    """The name as the packager spelled it with lief: outside the enum, the number (a negative
    one as its 64-bit two's complement, as lief prints it)."""
    try:
        return _lief_name(enum_type(value))
    except ValueError:
        return str(value & ((1 << 64) - 1))


def test_cpu_names_are_spelled_as_with_lief() -> None:
    """Every 16-bit ELF e_machine and PE machine; Mach-O's signed 32-bit CPU types around the
    known ones and at the ends of the range."""
    known = {*binary_names.MACHO_CPU_TYPE, *_lief_table(lief.MachO.Header.CPU_TYPE)}
    macho = {v + d for v in known for d in (-1, 0, 1)}
    macho |= {0, -2, -(1 << 31), (1 << 31) - 1, 1 << 24}
    values = {
        "ELF_ARCH": range(1 << 16),
        "PE_MACHINE_TYPES": range(1 << 16),
        "MACHO_CPU_TYPE": sorted(macho),
    }
    for table, enum_type in NAME_TABLES.items():
        names = getattr(binary_names, table)
        wrong = [
            (v, _cpu_name(names, v), _old_cpu_name(enum_type, v))
            for v in values[table]
            if _cpu_name(names, v) != _old_cpu_name(enum_type, v)
        ]
        assert wrong == [], table


# -- hostile headers: lief's whole-file verdict, one-line refusals -------------------------------


def _lief_verdict(path: Path) -> tuple[object, ...]:
    """What the packager said before issue 18: lief parsing the whole file (the same steps)."""
    with warnings.catch_warnings():  # lief warns when it shows a value outside its enums
        warnings.simplefilter("ignore", RuntimeWarning)
        return _lief_parse(path)


def _lief_parse(path: Path) -> tuple[object, ...]:
    p = str(path)
    if lief.is_elf(p):
        elf = lief.ELF.parse(p)
        if elf is None:
            return ("unknown", (), False, None)
        kind = str(elf.header.file_type).rsplit(".", 1)[-1]
        executable = kind == "EXEC" or (
            kind == "DYN"
            and (
                elf.has_interpreter
                or any(
                    str(e.tag).endswith("FLAGS_1") and e.value & 0x08000000
                    for e in elf.dynamic_entries
                )
            )
        )
        return ("ELF", (_lief_name(elf.header.machine_type),), executable, None)
    if lief.is_pe(p):
        pe = lief.PE.parse(p)
        if pe is None:
            return ("unknown", (), False, None)
        version = None
        manager = pe.resources_manager if pe.has_resources else None
        for v in manager.version if isinstance(manager, lief.PE.ResourcesManager) else []:
            info = v.file_info
            if (
                version is None
                and info is not None
                and (info.file_version_ms or info.file_version_ls)
            ):
                ms, ls = info.file_version_ms, info.file_version_ls
                version = f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
        dll = bool(pe.header.characteristics & 0x2000)
        return ("PE", (_lief_name(pe.header.machine),), not dll, version)
    if lief.is_macho(p):
        parsed = lief.MachO.parse(p)
        if parsed is None:
            return ("unknown", (), False, None)
        fat = list(parsed)
        cpus = tuple(_lief_name(b.header.cpu_type) for b in fat)
        executable = all(_lief_name(b.header.file_type) == "EXECUTE" for b in fat)
        return ("Mach-O", cpus, executable, None)
    return ("unknown", (), False, None)


def _lief_name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def _patch(source: bytes, *edits: tuple[str, int, int]) -> bytes:
    data = bytearray(source)
    for fmt, offset, value in edits:
        struct.pack_into(fmt, data, offset, value)
    return bytes(data)


LINUX = (EXE / "orbit-linux-x86_64").read_bytes()
WINDOWS = STANDIN.read_bytes()
LFANEW = struct.unpack_from("<I", WINDOWS, 0x3C)[0]
UNIVERSAL = (EXE / "orbit-macos-universal").read_bytes()
HOSTILE: dict[str, tuple[bytes, str]] = {
    # ELF: e_type 3 (DYN) so that the program headers, PT_INTERP and PT_DYNAMIC are looked at.
    "elf-magic-only": (LINUX[:4], "an ELF NONE non-executable"),
    "elf-cut-in-e_machine": (LINUX[:19], "an ELF NONE executable"),
    "elf-phoff-past-eof": (
        _patch(LINUX, ("<H", 16, 3), ("<Q", 32, 1 << 62)),
        "an ELF X86_64 non-executable",
    ),
    "elf-65535-segments": (
        _patch(LINUX, ("<H", 16, 3), ("<H", 56, 0xFFFF)),
        "an ELF X86_64 non-executable",
    ),
    "elf-bad-class": (_patch(LINUX, ("B", 4, 9), ("<H", 18, 0x1234)), "an ELF NONE non-executable"),
    # A DYN whose 4th program header becomes a PT_INTERP: an empty interpreter string (its
    # first byte NUL, the next one not) makes no program; one starting with a character does.
    "elf-dyn-empty-interpreter": (
        _patch(LINUX, ("<H", 16, 3), ("<I", 232, 3), ("<Q", 240, 15), ("<Q", 264, 4)),
        "an ELF X86_64 non-executable",
    ),
    "elf-dyn-interpreter": (
        _patch(LINUX, ("<H", 16, 3), ("<I", 232, 3), ("<Q", 240, 16), ("<Q", 264, 3)),
        "an ELF X86_64 executable",
    ),
    # PE: the version resource is read through offsets the file gives.
    "pe-lfanew-past-eof": (
        _patch(WINDOWS, ("<I", 0x3C, 0xFFFFFFF0)),
        "an unknown unknown CPU non-executable",
    ),
    "pe-cut-in-optional-header": (
        WINDOWS[: LFANEW + 24 + 50],
        "an unknown unknown CPU non-executable",
    ),
    "pe-cut-after-headers": (WINDOWS[:1024], "a PE AMD64 executable"),
    "pe-65535-sections": (_patch(WINDOWS, ("<H", LFANEW + 6, 0xFFFF)), "a PE AMD64 executable"),
    "pe-resource-rva-past-eof": (
        _patch(WINDOWS, ("<I", LFANEW + 24 + 112 + 16, 0x7FFFFFF0)),
        "a PE AMD64 executable",
    ),
    "pe-dll": (_patch(WINDOWS, ("<H", LFANEW + 22, 0x2022)), "a PE AMD64 non-executable"),
    # Mach-O: slices where the fat header says.
    "fat-31-archs": (_patch(UNIVERSAL, (">I", 4, 31)), "a Mach-O unknown CPU executable"),
    "fat-2-billion-archs": (
        _patch(UNIVERSAL, (">I", 4, 0x7FFFFFFF)),
        "a Mach-O unknown CPU executable",
    ),
    "fat-slice-past-eof": (
        _patch(UNIVERSAL, (">I", 8 + 20 + 8, 0xFFFFF000)),
        "a Mach-O X86_64 executable",
    ),
    "fat-slice-size-past-eof": (
        _patch(UNIVERSAL, (">I", 8 + 12, 0xFFFFFFFF)),
        "a Mach-O ARM64 executable",
    ),
    "fat-cut-in-arch-table": (UNIVERSAL[:30], "a Mach-O unknown CPU executable"),
    # 0xCAFEBABE with 45..69 where a fat header counts its slices is a Java class file.
    "fat-44-archs": (_patch(UNIVERSAL, (">I", 4, 44)), "a Mach-O unknown CPU executable"),
    "fat-45-archs-java": (
        _patch(UNIVERSAL, (">I", 4, 45)),
        "an unknown unknown CPU non-executable",
    ),
    "fat-69-archs-java": (
        _patch(UNIVERSAL, (">I", 4, 69)),
        "an unknown unknown CPU non-executable",
    ),
    "fat-70-archs": (_patch(UNIVERSAL, (">I", 4, 70)), "a Mach-O unknown CPU executable"),
    "macho-cut-in-header": (
        (EXE / "orbit-macos-arm64").read_bytes()[:20],
        "a Mach-O ANY non-executable",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_get_lief_s_verdict_and_a_one_line_refusal(
    tmp_path: Path, case: str
) -> None:
    data, described = HOSTILE[case]
    path = tmp_path / case
    path.write_bytes(data)
    info = inspect_binary(path)
    assert (info.format, info.cpus, info.executable, info.version) == _lief_verdict(path)
    # A linux installer accepts none of these but the ELF x86_64 executables.
    try:
        require(path, "orbit/linux/stable/orbit", "linux", ["amd64"])
    except TargetMismatchError as err:
        assert (
            err.message
            == f"target orbit/linux/stable/orbit is {described}, expected an ELF X86_64 executable"
        )
        assert "\n" not in err.message
    else:
        assert described == "an ELF X86_64 executable"


def test_the_version_resource_is_read_where_the_section_table_puts_it(tmp_path: Path) -> None:
    """The stand-in with its .rsrc moved (the memory test's layout), at a small size: the
    version comes from the moved data, not from where it was."""
    moved = _pe_rsrc_at_end(tmp_path / "moved.exe", 1 * MiB)
    assert inspect_binary(moved) == BinaryInfo("PE", ("AMD64",), True, "1.0.0.0")
    data = bytearray(moved.read_bytes())
    _, raw_size, raw_ptr = _rsrc_section(data)
    data[raw_ptr : raw_ptr + raw_size] = bytes(raw_size)  # the headers still point there
    wiped = tmp_path / "wiped.exe"
    wiped.write_bytes(bytes(data))
    assert inspect_binary(wiped) == BinaryInfo("PE", ("AMD64",), True, None)
    assert _lief_verdict(wiped) == ("PE", ("AMD64",), True, None)


def test_what_cannot_be_opened_is_no_format(tmp_path: Path) -> None:
    """As when lief opened the file: a missing path or a directory is refused, not a crash."""
    unknown = BinaryInfo("unknown", (), False)
    assert inspect_binary(tmp_path / "missing") == unknown
    assert inspect_binary(tmp_path) == unknown
    assert _lief_verdict(tmp_path / "missing") == ("unknown", (), False, None)


def _differences(tmp_path: Path, variants: dict[str, bytes]) -> list[str]:
    path = tmp_path / "variant"
    found = []
    for label, data in variants.items():
        path.write_bytes(data)
        info = inspect_binary(path)
        new, old = (info.format, info.cpus, info.executable, info.version), _lief_verdict(path)
        if new != old:
            found.append(f"{label}: {new} (lief: {old})")
    return found


@pytest.mark.parametrize(
    "name",
    [
        *sorted(p.name for p in EXE.iterdir()),
        "../windows-service/orbit-standin-2.0.0.exe",
        "../../packager/data/msi/fleetca-x86.dll",
    ],
)
def test_every_truncation_gets_lief_s_verdict(tmp_path: Path, name: str) -> None:
    """Cut at every length through the headers (and a few further on): the verdict lief
    gives on the whole (cut) file."""
    data = (EXE / name).read_bytes()
    lengths = [*range(0, 1024, 3), *range(1024, len(data), 997), len(data) - 1]
    variants = {f"{name}[:{n}]": data[:n] for n in lengths}
    assert _differences(tmp_path, variants) == []


def test_every_elf_machine_class_and_byte_order_gets_lief_s_verdict(tmp_path: Path) -> None:
    """lief picks the header's byte order and class from e_machine before EI_DATA/EI_CLASS;
    the names of machines outside its enum are numbers."""
    variants = {}
    # The machines lief knows the class or byte order of, some it does not, and swapped ones.
    known = [2, 3, 4, 8, 20, 21, 22, 40, 41, 42, 43, 45, 46, 50, 62, 76, 92, 94, 113, 164, 183, 258]
    for machine in [*known, 0, 1, 5, 999, 0x9026, 0x3E00, 0xB700, 0x2800, 0x0300]:
        for ei_class in (1, 2, 7):
            for ei_data, order in ((1, "<"), (2, ">"), (0, "<"), (2, "<")):
                data = bytearray(LINUX)
                data[4], data[5] = ei_class, ei_data
                struct.pack_into(order + "H", data, 18, machine)
                variants[f"machine={machine} class={ei_class} data={ei_data}{order}"] = bytes(data)
    assert _differences(tmp_path, variants) == []


if __name__ == "__main__":
    # Regenerate the tables: the source is built before the file is opened, since building it
    # imports packager.fetch.inspect, which imports the tables.
    source = binary_names_source()
    (ROOT / "packager" / "fetch" / "binary_names.py").write_text(source)
