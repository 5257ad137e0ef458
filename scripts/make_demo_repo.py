"""Regenerate fixtures/demo-repo: a TUF update repository made with our own `updates` commands
from the stand-in executables in fixtures/executables, for `make demo` and the tests.

Its keys are committed and their passphrases are public (DEMO_PASSPHRASES): test-only. Because
timestamp.json expires after 14 days, users of the fixture copy it and re-sign the timestamp
(`prepare_demo_repo`) before serving it.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXE = ROOT / "fixtures" / "executables"
DEST = ROOT / "fixtures" / "demo-repo"
DEMO_PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "demo-root",
    "FLEET_TARGETS_PASSPHRASE": "demo-targets",
    "FLEET_SNAPSHOT_PASSPHRASE": "demo-snapshot",
    "FLEET_TIMESTAMP_PASSPHRASE": "demo-timestamp",
}
ORBIT_VERSION = "1.40.0"
OSQUERY_VERSION = "5.13.1"
DESKTOP_VERSION = "1.40.0"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "packager", *map(str, args)],
        env={**os.environ, **DEMO_PASSPHRASES, **(env or {})},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def tar_gz(path: Path, members: dict[str, Path]) -> Path:
    """A deterministic .tar.gz (fixed mtimes, owners and gzip header)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(n).parent) for n in members} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, src in sorted(members.items()):
            data = src.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    with path.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return path


def prepare_demo_repo(dest: Path) -> Path:
    """Copy the committed demo repository to ``dest`` and re-sign its timestamp (it expires
    14 days after it was signed), so it can be served. Returns ``dest``."""
    from packager.repo.passphrase import PassphraseSource
    from packager.repo.repository import UpdateRepository

    shutil.copytree(DEST, dest)
    (dest / "staged" / "targets").mkdir(parents=True, exist_ok=True)
    UpdateRepository(dest, PassphraseSource(environ=DEMO_PASSPHRASES)).timestamp()
    return dest


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "demo-repo"
        run("updates", "init", "--path", repo)
        archives = {
            "osqueryd.app.tar.gz": {
                "osquery.app/Contents/MacOS/osqueryd": EXE / "orbit-macos-universal"
            },
            "desktop-linux.tar.gz": {"fleet-desktop/fleet-desktop": EXE / "orbit-linux-x86_64"},
            "desktop-linux-arm64.tar.gz": {
                "fleet-desktop/fleet-desktop": EXE / "orbit-linux-aarch64"
            },
            "desktop.app.tar.gz": {
                "Fleet Desktop.app/Contents/MacOS/fleet-desktop": EXE / "orbit-macos-universal"
            },
        }
        for name, members in archives.items():
            tar_gz(work / name, members)
        adds = [
            ("orbit", "linux", EXE / "orbit-linux-x86_64", ORBIT_VERSION),
            ("osqueryd", "linux", EXE / "orbit-linux-x86_64", OSQUERY_VERSION),
            ("desktop", "linux", work / "desktop-linux.tar.gz", DESKTOP_VERSION),
            ("orbit", "linux-arm64", EXE / "orbit-linux-aarch64", ORBIT_VERSION),
            ("osqueryd", "linux-arm64", EXE / "orbit-linux-aarch64", OSQUERY_VERSION),
            ("desktop", "linux-arm64", work / "desktop-linux-arm64.tar.gz", DESKTOP_VERSION),
            ("orbit", "windows", EXE / "orbit-windows-x86_64.exe", ORBIT_VERSION),
            ("osqueryd", "windows", EXE / "orbit-windows-x86_64.exe", OSQUERY_VERSION),
            ("desktop", "windows", EXE / "orbit-windows-x86_64.exe", DESKTOP_VERSION),
            ("orbit", "windows-arm64", EXE / "orbit-windows-aarch64.exe", ORBIT_VERSION),
            ("osqueryd", "windows-arm64", EXE / "orbit-windows-aarch64.exe", OSQUERY_VERSION),
            ("orbit", "macos", EXE / "orbit-macos-universal", ORBIT_VERSION),
            ("osqueryd", "macos-app", work / "osqueryd.app.tar.gz", OSQUERY_VERSION),
            ("desktop", "macos", work / "desktop.app.tar.gz", DESKTOP_VERSION),
        ]
        for name, platform, src, version in adds:
            major_minor = ".".join(version.split(".")[:2])
            run("updates", "add", "--path", repo, "--target", src, "--name", name,
                "--platform", platform, "--version", version, "-t", major_minor,
                "-t", "stable")  # fmt: skip
        (repo / ".orbit-packager.lock").unlink(missing_ok=True)
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.copytree(repo, DEST)
    print(f"wrote {DEST}")


if __name__ == "__main__":
    main()
