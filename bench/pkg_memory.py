"""Peak memory of writing a .pkg (cpio Payload + BOM + xar) around a 1 GiB payload.

Runs the pkg writers in a child process on a staged tree holding one 1 GiB file of random bytes
(incompressible: the worst case for gzip buffers) plus a few small files, and reports the
child's peak RSS next to a baseline child that imports the same modules and writes nothing.
Run: .venv/bin/python bench/pkg_memory.py [size_mib]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
from pathlib import Path
from packager.writers.bom import write_bom
from packager.writers.cpio import write_cpio_gz
from packager.writers.xar import XarMember, write_xar
work = Path(sys.argv[1])
if sys.argv[2] == "build":
    base = work / "flat" / "base.pkg"
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    entries = write_cpio_gz(work / "root", base / "Payload", mtime=0)
    write_bom(entries, base / "Bom")
    (work / "flat" / "Distribution").write_text("<installer-gui-script/>")
    write_xar(work / "out.pkg", [XarMember("Distribution", work / "flat" / "Distribution"),
                                 XarMember("base.pkg/Bom", base / "Bom"),
                                 XarMember("base.pkg/Payload", base / "Payload")], timestamp=0)
    print(f"{time.perf_counter() - start:.1f}")
"""


def peak_rss_mib(args: list[str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024, out.stdout.strip()


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        big = work / "root" / "opt" / "orbit" / "bin" / "osqueryd"
        big.parent.mkdir(parents=True)
        chunk = os.urandom(1 << 20)
        with big.open("wb") as f:
            for i in range(size_mib):
                f.write(chunk[i % 7 :] + chunk[: i % 7])  # distinct chunks, still random
        for n in range(20):
            (big.parent / f"small{n}").write_bytes(os.urandom(1000))
        baseline, _ = peak_rss_mib([tmp, "baseline"])
        peak, seconds = peak_rss_mib([tmp, "build"])
        size = (work / "out.pkg").stat().st_size
        print(f"payload {size_mib} MiB -> pkg {size / 2**20:.0f} MiB in {seconds} s")
        print(f"peak RSS: baseline (imports only) {baseline:.0f} MiB, build {peak:.0f} MiB")


if __name__ == "__main__":
    main()
