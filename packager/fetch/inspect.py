"""Inspect downloaded executables with lief, without ever running them.

fleetctl checks a target by executing ``<target> --help`` on the build host; a compromised or
wrong target then runs with the builder's privileges. We parse headers instead: an orbit or
osqueryd must be an executable for the installer's OS and CPU, and Windows binaries' version
resource is read (the MSI File table needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packager import signals
from packager.errors import PackagerError

# An interrupt that surfaces inside lief's C++ module initialisation is a C++ exception no one
# catches: std::terminate, exit 134 and no cleanup. Signals wait until the import is done.
with signals.deferred():
    import lief

lief.logging.disable()

# Installer OS -> binary format; installer arch -> the CPU names lief reports.
_FORMAT = {"linux": "ELF", "windows": "PE", "macos": "Mach-O"}
_CPU = {
    "ELF": {"amd64": "X86_64", "arm64": "AARCH64"},
    "PE": {"amd64": "AMD64", "arm64": "ARM64"},
    "Mach-O": {"amd64": "X86_64", "arm64": "ARM64"},
}


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


def _name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def _elf_executable(elf: lief.ELF.Binary) -> bool:
    """EXEC, or a DYN that is a program (a PIE: an interpreter or DF_1_PIE), not a library."""
    kind = _name(elf.header.file_type)
    if kind == "EXEC":
        return True
    if kind != "DYN":
        return False
    if elf.has_interpreter:
        return True
    df_1_pie = 0x08000000  # static-PIE executables have no interpreter, only this flag
    return any(
        _name(entry.tag) == "FLAGS_1" and entry.value & df_1_pie for entry in elf.dynamic_entries
    )


def inspect_binary(path: Path) -> BinaryInfo:
    """Identify ``path``'s format and CPUs; raise TargetMismatchError if it is none we know."""
    p = str(path)
    if lief.is_elf(p):
        elf = lief.ELF.parse(p)
        if elf is not None:
            executable = _elf_executable(elf)
            return BinaryInfo("ELF", (_name(elf.header.machine_type),), executable)
    elif lief.is_pe(p):
        pe = lief.PE.parse(p)
        if pe is not None:
            dll = bool(pe.header.characteristics & 0x2000)  # IMAGE_FILE_DLL
            return BinaryInfo("PE", (_name(pe.header.machine),), not dll, _pe_version(pe))
    elif lief.is_macho(p):
        fat = lief.MachO.parse(p)
        if fat is not None:
            binaries = list(fat)
            cpus = tuple(_name(b.header.cpu_type) for b in binaries)
            executable = all(_name(b.header.file_type) == "EXECUTE" for b in binaries)
            return BinaryInfo("Mach-O", cpus, executable)
    return BinaryInfo("unknown", (), False)


def _pe_version(pe: lief.PE.Binary) -> str | None:
    if not pe.has_resources:
        return None
    manager = pe.resources_manager
    if not isinstance(manager, lief.PE.ResourcesManager):
        return None  # lief reports a malformed resource tree; the version is optional
    versions = manager.version
    for version in versions or []:
        info = version.file_info
        if info is not None and (info.file_version_ms or info.file_version_ls):
            ms, ls = info.file_version_ms, info.file_version_ls
            return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
    return None


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
