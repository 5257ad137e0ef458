#!/usr/bin/env bash
# Builds the MSI's custom action DLLs from fleetca.c with mingw-w64 (Debian: apt-get install
# gcc-mingw-w64-x86-64-win32 gcc-mingw-w64-i686-win32):
#
#   fleetca-x64.dll  x86_64, for the x64 MSI
#   fleetca-x86.dll  i686, for the arm64 MSI (Windows on ARM runs x86 custom actions emulated)
#
# and BUILDINFO: the toolchain versions and the DLLs' sha256. The build is reproducible: no
# timestamp, build id, debug information or path ends up in the DLLs, so the same toolchain
# makes the same bytes in any directory; tests/test_windows_binaries.py rebuilds and compares.
#
#   bash packager/data/msi/build.sh [OUTDIR]   # OUTDIR defaults to this directory
#   bash packager/data/msi/build.sh --versions # only print the toolchain versions
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# One "tool: version" line per tool whose version decides the bytes: the compilers, the
# linkers and (on Debian) the packages, mingw-w64's headers and import libraries included.
versions() {
  local tool pkgs
  for tool in x86_64-w64-mingw32-gcc i686-w64-mingw32-gcc x86_64-w64-mingw32-ld \
    i686-w64-mingw32-ld; do
    if command -v "$tool" >/dev/null; then
      echo "$tool: $("$tool" --version | sed -n 1p)"
    else
      echo "$tool: not installed"
    fi
  done
  pkgs=(gcc-mingw-w64-x86-64-win32 gcc-mingw-w64-i686-win32 binutils-mingw-w64-x86-64
    binutils-mingw-w64-i686 mingw-w64-x86-64-dev mingw-w64-i686-dev)
  if command -v dpkg-query >/dev/null; then
    echo "packages: $(dpkg-query -W -f='${Package}=${Version} ' "${pkgs[@]}" 2>/dev/null | sed 's/ $//')"
  else
    echo "packages: unknown (no dpkg-query)"
  fi
}

if [[ ${1:-} == --versions ]]; then
  versions
  exit 0
fi
out=${1:-$here}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# -ffreestanding -nostdlib: no C runtime (fleetca.c brings the memset/memcpy gcc may call).
# -fno-ident drops the "GCC: version" strings. The x64 DLL keeps its unwind tables (.pdata):
# 64-bit Windows needs them to unwind through our frames; 32-bit SEH needs none, so the i686
# DLL drops gcc's DWARF ones (.eh_frame).
cflags=(-Os -s -std=gnu17 -Wall -Wextra -ffreestanding -fno-stack-protector -fno-ident
  -ffile-prefix-map="$here"=. -g0 -DUNICODE -D_UNICODE -D_WIN32_WINNT=0x0601)
# ld derives a DLL's default image base from the output path: fixed ones instead (Windows
# relocates the DLLs anyway: dynamicbase).
ldflags=(-shared -nostdlib -Wl,--subsystem,windows -Wl,--no-insert-timestamp
  -Wl,--disable-auto-image-base -Wl,--dynamicbase -Wl,--nxcompat)
if x86_64-w64-mingw32-ld --help | grep -q -- --build-id; then
  ldflags+=(-Wl,--build-id=none)
fi
libs=(-lkernel32 -ladvapi32 -lmsi)

cd "$here"
x86_64-w64-mingw32-gcc "${cflags[@]}" "${ldflags[@]}" -Wl,--image-base,0x180000000 \
  -Wl,--high-entropy-va -Wl,-e,DllMain \
  -o "$out/fleetca-x64.dll" fleetca.c "${libs[@]}"
# i686 stdcall symbols are decorated (_WriteSecret@4); --kill-at exports them as WriteSecret.
i686-w64-mingw32-gcc "${cflags[@]}" -fno-asynchronous-unwind-tables -fno-unwind-tables \
  "${ldflags[@]}" -Wl,--image-base,0x10000000 -Wl,--kill-at -Wl,-e,_DllMain@12 \
  -o "$out/fleetca-x86.dll" fleetca.c "${libs[@]}"

{
  echo "# Written by build.sh: the toolchain that made the DLLs, and their sha256."
  versions
  for dll in fleetca-x64.dll fleetca-x86.dll; do
    echo "sha256 $dll: $(sha256sum "$out/$dll" | cut -d' ' -f1)"
  done
} >"$out/BUILDINFO"
cat "$out/BUILDINFO"
