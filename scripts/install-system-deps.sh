#!/usr/bin/env bash
# Install the Debian packages orbit-packager needs, only those that are missing.
#   install-system-deps.sh          what building needs (python3-venv, wixl, msitools)
#   install-system-deps.sh --test   also what the tests use (rpm, lintian, rpmlint, dpkg, bsdtar, cpio)
# Runs `apt-get update` once, and only when something has to be installed.
set -euo pipefail

py=${PY:-python3}
need=()
command -v "$py" >/dev/null 2>&1 || need+=(python3)
if command -v "$py" >/dev/null 2>&1 && ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
command -v wixl >/dev/null 2>&1 || need+=(wixl)
command -v msibuild >/dev/null 2>&1 || need+=(msitools)
if [ "${1:-}" = "--test" ]; then
  command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
  command -v rpm >/dev/null 2>&1 || need+=(rpm)
  command -v lintian >/dev/null 2>&1 || need+=(lintian)
  command -v rpmlint >/dev/null 2>&1 || need+=(rpmlint)
  command -v bsdtar >/dev/null 2>&1 || need+=(libarchive-tools)
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${need[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "install-system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
