"""Print a hash of everything the Docker image is built from (the image's source-hash label).

Tests compare it with the label, so a stale image is reported as such instead of failing in
puzzling ways. Only files git tracks (or, outside a checkout, every file) are hashed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "packager", "templates")


def source_hash(root: Path = ROOT) -> str:
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *INPUTS,
        ],
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0 and listed.stdout:
        names = sorted(n for n in listed.stdout.decode().split("\0") if n)
    else:
        names = sorted(
            str(p.relative_to(root))
            for name in INPUTS
            for p in ([root / name] if (root / name).is_file() else (root / name).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        )
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


if __name__ == "__main__":
    sys.stdout.write(source_hash() + "\n")
