"""Refresh packager/data/certs.pem (the CA bundle installed as certs.pem) from a certifi wheel.

    python scripts/update_certs.py [VERSION]

Downloads the certifi wheel from PyPI with pip (the newest, or VERSION), takes its cacert.pem
(Mozilla's bundle), writes it to packager/data/certs.pem and prints the CA_BUNDLE_SOURCE and
CA_BUNDLE_SHA256 lines to put into packager/layout.py. The wheel, not an installed certifi, is
the source: installed bundles get local CAs appended (TLS-inspecting proxies do this).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "packager" / "data" / "certs.pem"


def main(argv: list[str]) -> int:
    spec = f"certifi=={argv[0]}" if argv else "certifi"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
             ":all:", "--dest", tmp, spec],
            check=True,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("certifi-*.whl"))
        version = wheel.name.split("-")[1]
        bundle = zipfile.ZipFile(wheel).read("certifi/cacert.pem")
    if bundle.count(b"-----BEGIN CERTIFICATE-----") < 100:
        print(f"{wheel.name}: cacert.pem looks wrong; nothing written", file=sys.stderr)
        return 1
    DEST.write_bytes(bundle)
    print(f'CA_BUNDLE_SOURCE = "certifi {version}"')
    print(f'CA_BUNDLE_SHA256 = "{hashlib.sha256(bundle).hexdigest()}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
