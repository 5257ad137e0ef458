"""The benchmark's inputs: realistic agent binaries and a TUF repository made with our own
``updates init`` / ``updates add``.

Each binary is a fixture executable of the right OS and CPU (fixtures/executables) followed by
real machine code — the bytes of the shared libraries of this system and of the venv — so it
still parses as that executable (the appended bytes are an overlay lief ignores) and compresses
like a real binary, which random or zero padding would not (gzip time and ratio depend on it).
"""

from __future__ import annotations

import os
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parent.parent
EXE = ROOT / "fixtures" / "executables"
MIB = 1 << 20
PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "bench root",
    "FLEET_TARGETS_PASSPHRASE": "bench targets",
    "FLEET_SNAPSHOT_PASSPHRASE": "bench snapshot",
    "FLEET_TIMESTAMP_PASSPHRASE": "bench timestamp",
}
SOURCE_DATE_EPOCH = "1700000000"
ORBIT_VERSION = "1.40.0"
OSQUERY_VERSION = "5.13.1"
BIG_CHANNEL = "big"  # the ~1 GiB orbit of the peak-RSS measure, on its own channel
LIBRARY_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/usr/lib/aarch64-linux-gnu"),
    Path(sys.prefix) / "lib",
)


@dataclass(frozen=True)
class Scale:
    name: str
    orbit: int  # bytes of each orbit binary
    osqueryd: int  # bytes of each osqueryd binary (Linux, Windows)
    app_gz: int  # compressed size aimed at for osqueryd.app.tar.gz
    big: int  # the orbit of the peak-RSS measure
    add: int  # the file of the `updates add` measure


SCALES = {
    "full": Scale("full", 30 * MIB, 60 * MIB, 19 * MIB, 1024 * MIB, 100 * MIB),
    "small": Scale("small", 2 * MIB, 3 * MIB, 1 * MIB, 24 * MIB, 8 * MIB),
}


class CodePool:
    """Real code bytes (ELF shared libraries), read in order from a cursor that moves on, so
    each padded binary gets different bytes until the pool wraps around."""

    def __init__(self, dirs: tuple[Path, ...] = LIBRARY_DIRS, minimum: int = 64 * MIB) -> None:
        files: dict[Path, int] = {}
        for d in dirs:
            if not d.is_dir():
                continue
            for p in d.rglob("*.so*"):
                if p.is_symlink() or not p.is_file():
                    continue
                size = p.stat().st_size
                if size > 4096 and p.open("rb").read(4) == b"\x7fELF":
                    files[p.resolve()] = size
        self.files = sorted(files.items())
        self.total = sum(files.values())
        if self.total < minimum:
            raise RuntimeError(f"only {self.total} bytes of shared libraries found in {dirs}")
        self.cursor = 0

    def chunks(self, n: int) -> Iterator[bytes]:
        """The next ``n`` bytes of the pool, in chunks (wrapping around at its end)."""
        left = n
        while left:
            offset = self.cursor % self.total
            for path, size in self.files:
                if offset >= size:
                    offset -= size
                    continue
                with path.open("rb") as f:
                    f.seek(offset)
                    while left and (chunk := f.read(min(left, 4 * MIB))):
                        self.cursor += len(chunk)
                        left -= len(chunk)
                        yield chunk
                offset = 0
                if not left:
                    return

    def write_padded(self, out: BinaryIO, head: bytes, size: int) -> None:
        out.write(head)
        for chunk in self.chunks(max(0, size - len(head))):
            out.write(chunk)

    def deflate_ratio(self, sample: int = 8 * MIB) -> float:
        """gzip -6's compressed/original ratio of the pool's next bytes (the cursor is kept)."""
        cursor = self.cursor
        packer = zlib.compressobj(6)
        raw = out = 0
        for chunk in self.chunks(sample):
            raw += len(chunk)
            out += len(packer.compress(chunk))
        out += len(packer.flush())
        self.cursor = cursor
        return out / raw


def padded_executable(pool: CodePool, fixture: str, size: int, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)  # a measure run alone comes here first
    with dest.open("wb") as f:
        pool.write_padded(f, (EXE / fixture).read_bytes(), size)
    return dest


def app_tar_gz(pool: CodePool, compressed_size: int, dest: Path) -> Path:
    """osqueryd.app.tar.gz holding osquery.app/Contents/MacOS/osqueryd (a universal Mach-O),
    its osqueryd sized so that the archive is about ``compressed_size``."""
    size = int(compressed_size / pool.deflate_ratio())
    binary = dest.with_name("osqueryd-macos")
    padded_executable(pool, "orbit-macos-universal", size, binary)
    with tarfile.open(dest, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        for d in ("osquery.app", "osquery.app/Contents", "osquery.app/Contents/MacOS"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("osquery.app/Contents/MacOS/osqueryd")
        info.size, info.mode = size, 0o755
        with binary.open("rb") as f:
            tar.addfile(info, f)
    binary.unlink()
    return dest


def bench_env(work: Path) -> dict[str, str]:
    """The environment of every command: passphrases, SOURCE_DATE_EPOCH, an enroll secret and a
    private XDG cache, nothing of the caller's FLEET_* or ORBIT_PACKAGER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ORBIT_PACKAGER_"))}
    env.update(PASSPHRASES)
    env["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    env["ORBIT_PACKAGER_ENROLL_SECRET"] = "bench-enroll-secret"  # noqa: S105 - a dummy
    env["XDG_CACHE_HOME"] = str(work / "xdg-cache")
    return env


def packager(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "packager", *map(str, args)]


def add_args(
    repo: Path, target: Path, name: str, platform: str, version: str, *tags: str
) -> list[str]:
    tag_args = [a for t in tags for a in ("-t", t)]
    return packager(
        "updates", "add", "--path", repo, "--target", target, "--name", name,
        "--platform", platform, "--version", version, *tag_args,
    )  # fmt: skip


def targets_plan(pool: CodePool, scale: Scale, work: Path) -> list[tuple[Path, str, str, str]]:
    """Write the agent binaries; returns (file, name, platform, version) to add, stable channel."""
    src = work / "inputs"
    src.mkdir()
    return [
        (padded_executable(pool, "orbit-linux-x86_64", scale.orbit, src / "orbit-linux"),
         "orbit", "linux", ORBIT_VERSION),
        (padded_executable(pool, "orbit-linux-x86_64", scale.osqueryd, src / "osqueryd-linux"),
         "osqueryd", "linux", OSQUERY_VERSION),
        (padded_executable(pool, "orbit-windows-x86_64.exe", scale.orbit, src / "orbit.exe"),
         "orbit", "windows", ORBIT_VERSION),
        (padded_executable(pool, "orbit-windows-x86_64.exe", scale.osqueryd, src / "osqueryd.exe"),
         "osqueryd", "windows", OSQUERY_VERSION),
        (padded_executable(pool, "orbit-macos-universal", scale.orbit, src / "orbit-macos"),
         "orbit", "macos", ORBIT_VERSION),
        (app_tar_gz(pool, scale.app_gz, src / "osqueryd.app.tar.gz"),
         "osqueryd", "macos-app", OSQUERY_VERSION),
    ]  # fmt: skip


def big_orbit(pool: CodePool, scale: Scale, work: Path) -> Path:
    return padded_executable(
        pool, "orbit-macos-universal", scale.big, work / "inputs" / "orbit-big"
    )


def add_file(pool: CodePool, scale: Scale, work: Path) -> Path:
    return padded_executable(pool, "orbit-linux-x86_64", scale.add, work / "inputs" / "orbit-add")
