#!/usr/bin/env bash
# Install what the tests need to build Orbit's own TUF client (tests/gotuf/): Go and the source of
# go-tuf v0.5.2 with its dependencies, all from Debian's packages (no Go module proxy is used).
#
#   golang-go                                                Go (1.19 on bookworm)
#   golang-github-theupdateframework-go-tuf-dev              go-tuf (bookworm: 0.5.2 from backports)
#   golang-github-secure-systems-lab-go-securesystemslib-dev its canonical JSON and key code
#   golang-golang-x-crypto-dev                               ed25519, scrypt, nacl/secretbox
#
# Debian 12 (bookworm) ships go-tuf only in bookworm-backports: that suite is enabled for this one
# install (added to the Suites: line of /etc/apt/sources.list.d/debian.sources, or a temporary
# sources file when that file is absent) and the sources are restored byte for byte afterwards,
# whatever happens. Later Debian releases (13, trixie) carry the packages in their main suite.
# Does nothing when everything is installed. As root it runs apt-get itself; otherwise through
# `sudo -n`, and when that is not possible it stops with one line naming the exact command.
set -euo pipefail

packages=(
  golang-go
  golang-github-theupdateframework-go-tuf-dev
  golang-github-secure-systems-lab-go-securesystemslib-dev
  golang-golang-x-crypto-dev
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-gotuf: missing ${missing[*]} and no apt-get here (Debian or Ubuntu needed)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    exec sudo -n bash "$0" "$@"
  fi
  echo "install-gotuf: missing ${missing[*]}; as root run: bash $0" >&2
  exit 1
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1
install() {  # quiet unless it fails
  local log
  log=$(apt-get install -y -q --no-install-recommends "$@" 2>&1) || { printf '%s\n' "$log" >&2; return 1; }
}
echo "install-gotuf: installing ${missing[*]} (Debian ${codename:-unknown})" >&2

if [ "$codename" != bookworm ]; then
  # trixie and later: everything is in the main suite
  apt-get update -qq
  if ! apt-cache show golang-github-theupdateframework-go-tuf-dev >/dev/null 2>&1; then
    echo "install-gotuf: Debian ${codename:-?} has no golang-github-theupdateframework-go-tuf-dev package" >&2
    exit 1
  fi
  install "${packages[@]}"
else
  sources=/etc/apt/sources.list.d/debian.sources
  temporary=/etc/apt/sources.list.d/orbit-packager-bookworm-backports.sources
  suite_re='^Suites:(.*[[:space:]])?bookworm([[:space:]]|$)'
  backup=
  restore() {
    if [ -n "$backup" ]; then
      cat "$backup" >"$sources"  # the same bytes, inode, owner and mode as before
      rm -f "$backup"
    fi
    rm -f "$temporary"
  }
  trap restore EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if [ -f "$sources" ] && grep -Eq "$suite_re" "$sources"; then
    backup=$(mktemp /etc/apt/.orbit-packager-debian.sources.XXXXXX)
    cat "$sources" >"$backup"
    # The first stanza naming the bookworm suite (the main archive) gets backports too.
    sed -E "0,/$suite_re/{/$suite_re/s/\$/ bookworm-backports/}" "$backup" >"$sources"
  else
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$temporary"
  fi
  apt-get update -qq
  install golang-go
  install -t bookworm-backports golang-github-theupdateframework-go-tuf-dev \
    golang-github-secure-systems-lab-go-securesystemslib-dev golang-golang-x-crypto-dev
  restore
  trap - EXIT
fi
echo "install-gotuf: go-tuf $(dpkg-query -W -f='${Version}' golang-github-theupdateframework-go-tuf-dev), $(go version 2>/dev/null || echo 'go missing')" >&2
