#!/usr/bin/env bash
# Install the Debian packages orbit-packager needs, only those that are missing.
#   install-system-deps.sh          what building needs (python3, python3-venv: every format,
#                                   the MSI included, is written by Python code or nfpm)
#   install-system-deps.sh --test   also what the tests use (rpm, lintian, rpmlint, dpkg, pacman,
#                                   bsdtar, cpio, SoftHSM2 and OpenSC's pkcs11-tool,
#                                   msitools, Wine's msiexec, mingw-w64 for the Windows binaries,
#                                   and Go with go-tuf through install-gotuf.sh)
# Runs `apt-get update` once, and only when something has to be installed. As root it runs
# apt-get itself; otherwise through `sudo -n` (never prompts), and when that is not possible it
# stops with one line naming the exact command to run.
set -euo pipefail

py=${PY:-python3}
need=()
if ! command -v "$py" >/dev/null 2>&1; then
  # A fresh Debian has no Python at all; python3 alone has no ensurepip, so `-m venv` needs both.
  need+=(python3 python3-venv)
elif ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ "${1:-}" = "--test" ]; then
  command -v msiinfo >/dev/null 2>&1 || need+=(msitools)
  command -v wixl >/dev/null 2>&1 || need+=(wixl)  # builds a WiX-style MSI for the inspect tests
  command -v gcab >/dev/null 2>&1 || need+=(gcab)
  command -v cabextract >/dev/null 2>&1 || need+=(cabextract)
  command -v 7zz >/dev/null 2>&1 || need+=(7zip)
  # Debian's wine64 puts its loader in /usr/lib/wine, not on PATH: ask dpkg, or every run would
  # call apt-get again (and fail without root or sudo)
  installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
  { command -v wine >/dev/null 2>&1 && installed wine64; } || need+=(wine wine64)
  # the MSI tests run Wine under ru_RU.UTF-8 (another ANSI codepage), built from these sources
  [ -d /usr/share/i18n/locales ] || need+=(locales)
  command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64-win32)
  command -v i686-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-i686-win32)
  command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
  command -v rpm >/dev/null 2>&1 || need+=(rpm)
  command -v lintian >/dev/null 2>&1 || need+=(lintian)
  command -v rpmlint >/dev/null 2>&1 || need+=(rpmlint)
  command -v bsdtar >/dev/null 2>&1 || need+=(libarchive-tools)
  command -v pacman >/dev/null 2>&1 || need+=(pacman-package-manager)
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
  # a software PKCS#11 token and OpenSC's pkcs11-tool, for the keys-in-hardware tests (tests/test_hsm.py)
  command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
  command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
  bash "$(dirname "$0")/install-gotuf.sh"  # Go and go-tuf v0.5.2's source, for tests/gotuf
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${need[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi

install_cmd="apt-get install -y --no-install-recommends ${need[*]}"
run=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-system-deps: missing ${need[*]} and no sudo here; as root run: apt-get update && $install_cmd" >&2
    exit 1
  fi
  if ! sudo -n true >/dev/null 2>&1; then
    echo "install-system-deps: missing ${need[*]} and sudo needs a password; run: sudo apt-get update && sudo $install_cmd" >&2
    exit 1
  fi
  run=(sudo -n)
fi
echo "install-system-deps: installing ${need[*]}${run:+ (with sudo)}" >&2
"${run[@]}" apt-get update -qq
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
