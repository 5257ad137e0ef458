#!/usr/bin/env bash
# Install the Debian packages orbit-packager needs, only those that are missing.
# Runs `apt-get update` once, and only when something has to be installed.
set -euo pipefail

py=${PY:-python3}
need=()
command -v "$py" >/dev/null 2>&1 || need+=(python3)
if command -v "$py" >/dev/null 2>&1 && ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
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
