#!/usr/bin/env bash
# make fresh-test: prove that the README's two commands, `make demo` and `make test`, work on
# fresh Debian 12 (bookworm, Python 3.11) and Debian 13 (trixie, Python 3.13) machines that have
# only git, make and ca-certificates, as root and as a non-root user with sudo.
#
#   scripts/fresh-test.sh [COMBO...]     COMBO: bookworm-root bookworm-sudo trixie-root trixie-sudo
#                                        (default: all four, one after the other)
#
# Each combination runs in a new container from a minimal Debian image (`debootstrap
# --variant=minbase`, imported into Docker because no image registry is reachable; missing
# images are bootstrapped here, which needs root and debootstrap). In it: apt-get installs only
# git, make and ca-certificates (plus sudo and the users for the sudo variant), the committed
# HEAD is cloned from a read-only bind mount of this checkout's .git (uncommitted changes are
# not tested), and the README's commands run in the clone. Containers use --network host: `make
# install` needs the Debian mirror and PyPI.
#
# Every combination runs the full `make demo` and `make test`, one combination at a time (the
# crash trials and the tests' timeouts should not compete for the cores). On 2 cores one
# combination takes 8 to 11 minutes, all four about 41 minutes; `make fresh-test
# FRESH_TEST=trixie-root` runs one. No split: the sudo runs found failures the root runs could
# not (tests that assumed root), so every combination keeps the whole suite. On top of that:
#   root:  the installed machine, committed to a temporary image, runs `make demo` again with
#          --network none: the demo needs no network once `make install` has run.
#   sudo:  first a user whose sudo asks for a password runs scripts/install-system-deps.sh,
#          which must stop with its one-line error and install nothing; then a user with
#          passwordless sudo runs `make demo` and `make test` (apt-get goes through `sudo -n`),
#          and the venv must belong to that user.
#
# The host's pip settings reach pip in the containers: PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
# PIP_TRUSTED_HOST, PIP_DEFAULT_TIMEOUT, PIP_RETRIES and the proxy variables are passed through,
# and the CA bundle named by $PIP_CERT (e.g. a TLS-inspecting proxy's) is mounted read-only and
# named by PIP_CERT inside. With a proxy set, apt in the containers is configured to use it.
#
# Prints one PASS/FAIL line per combination with its wall time (and again in a summary at the
# end), keeps each combination's full output in a log file, and exits 1 when any failed, 2 when
# it could not start. FRESH_TEST_KEEP=1 keeps the containers of failed combinations.
set -euo pipefail

log() { printf 'fresh-test: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

all=(bookworm-root bookworm-sudo trixie-root trixie-sudo)
combos=("$@")
[ ${#combos[@]} -gt 0 ] || combos=("${all[@]}")
for c in "${combos[@]}"; do
  case " ${all[*]} " in *" $c "*) ;; *) die "unknown combination '$c'; choose from: ${all[*]}" ;; esac
done

top=$(git rev-parse --show-toplevel 2>/dev/null) || die "run it inside the orbit-packager checkout"
gitdir=$(git -C "$top" rev-parse --path-format=absolute --git-common-dir)
head=$(git -C "$top" rev-parse HEAD)
if [ -n "$(git -C "$top" status --porcelain --untracked-files=no)" ]; then
  log "note: uncommitted changes in $top are not tested; testing HEAD $(git -C "$top" log -1 --format='%h %s')"
fi

command -v docker >/dev/null 2>&1 || die "docker not found; on Debian, as root: ../shared/tools/start-docker.sh"
docker info >/dev/null 2>&1 || die "no Docker engine answers; start one (as root: ../shared/tools/start-docker.sh)"

mirror=${FRESH_TEST_MIRROR:-http://deb.debian.org/debian}

# The base image debian:SUITE-slim: a minbase debootstrap imported into Docker, when missing.
ensure_image() {
  local suite=$1 image=debian:$1-slim root
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "image $image is missing; bootstrapping it needs root: sudo $0 $*"
  command -v debootstrap >/dev/null 2>&1 \
    || die "image $image is missing and debootstrap is not installed; as root: apt-get install debootstrap"
  [ -e "/usr/share/debootstrap/scripts/$suite" ] \
    || die "image $image is missing and this debootstrap does not know $suite; install a newer debootstrap"
  log "bootstrapping $image from $mirror (about a minute)"
  root=$(mktemp -d /tmp/fresh-test-rootfs.XXXXXX)
  if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
    rm -rf "$root"
    die "debootstrap $suite failed; see $root.log"
  fi
  tar -C "$root" -c . | docker import - "$image" >/dev/null
  rm -rf "$root" "$root.log"
}

# Pass-through of the host's pip and proxy settings.
envs=() mounts=() proxy=""
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_RETRIES \
  http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!v:-}" ]; then envs+=(-e "$v=${!v}"); fi
done
if [ -n "${PIP_CERT:-}" ]; then
  [ -f "$PIP_CERT" ] || die "PIP_CERT=$PIP_CERT is not a file"
  mounts+=(-v "$(readlink -f "$PIP_CERT"):/etc/fresh-test/pip-cert.pem:ro")
  envs+=(-e PIP_CERT=/etc/fresh-test/pip-cert.pem)
fi
proxy=${http_proxy:-${HTTP_PROXY:-}}

logdir=${FRESH_TEST_LOGDIR:-$(mktemp -d /tmp/orbit-fresh-test.XXXXXX)}
mkdir -p "$logdir"
containers=() images=()
cleanup() {
  local c
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  for c in "${images[@]}"; do docker rmi -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# run_combo SUITE MODE LOG: everything of one combination; returns non-zero on the first failure,
# with the failing step in $failed.
failed=""
run_combo() {
  local suite=$1 mode=$2 out=$3 name=orbit-fresh-$1-$2-$$ user=root home=/root pyexp
  case $suite in bookworm) pyexp=3.11 ;; trixie) pyexp=3.13 ;; esac
  containers+=("$name")
  step() { # step DESCRIPTION -- docker exec arguments...
    failed=$1; shift 2
    printf '\n=== %s\n' "$failed" >>"$out"
    log "$suite-$mode: $failed"
    "$@" >>"$out" 2>&1 || return 1
    failed=""
  }
  # The bind-mounted .git belongs to the host's user: a non-root user's git refuses it unless
  # safe.directory lists it (in the global config: git drops -c settings for the local upload-pack).
  local clone="git config --global --add safe.directory /src.git
        git clone -q /src.git orbit-packager
        cd orbit-packager
        git checkout -q --detach $head"
  as_root() { docker exec "$name" bash -euo pipefail -c "$1"; }
  as_user() { docker exec --user "$user" -w "$home/orbit-packager" -e HOME="$home" "${envs[@]}" "$@"; }

  step "start a fresh debian:$suite-slim container" -- \
    docker run -d --init --name "$name" --network host -v "$gitdir:/src.git:ro" "${mounts[@]}" \
    "debian:$suite-slim" sleep infinity || return 1
  local extra=""
  [ "$mode" = sudo ] && extra=" sudo"
  # The last line checks that the machine is fresh: no Python yet.
  local setup="apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git make ca-certificates$extra
    if command -v python3; then echo 'python3 is already installed: not a fresh machine'; exit 1; fi"
  if [ -n "$proxy" ]; then
    setup="echo 'Acquire::http::Proxy \"$proxy\";' >/etc/apt/apt.conf.d/90fresh-test-proxy
    $setup"
  fi
  step "install only git, make, ca-certificates$extra" -- as_root "$setup" || return 1

  if [ "$mode" = sudo ]; then
    # A user whose sudo asks for a password: the script must stop with one line, install nothing.
    step "create the users: 'asks' (sudo with a password), 'tester' (passwordless sudo)" -- as_root "
      useradd -m -s /bin/bash asks && echo 'asks:not-typed' | chpasswd
      echo 'asks ALL=(ALL:ALL) ALL' >/etc/sudoers.d/asks
      useradd -m -s /bin/bash tester
      echo 'tester ALL=(ALL:ALL) NOPASSWD: ALL' >/etc/sudoers.d/tester
      chmod 0440 /etc/sudoers.d/asks /etc/sudoers.d/tester" || return 1
    step "user 'asks': install-system-deps.sh stops with a one-line sudo hint" -- \
      docker exec --user asks -w /home/asks -e HOME=/home/asks "$name" bash -euo pipefail -c "
        $clone
        if bash scripts/install-system-deps.sh 2>err; then echo 'expected a failure'; exit 1; fi
        cat err
        [ \$(wc -l <err) = 1 ] || { echo 'expected exactly one line'; exit 1; }
        grep -q 'run: sudo apt-get update && sudo apt-get install -y --no-install-recommends python3 python3-venv' err
        ! command -v python3" || return 1
    user=tester home=/home/tester
  fi

  step "clone HEAD ${head:0:12} as $user" -- docker exec --user "$user" -w "$home" -e HOME="$home" "$name" \
    bash -euo pipefail -c "$clone
      git log -1 --oneline" || return 1
  step "make demo as $user (fresh: installs, then the demo)" -- as_user "$name" make demo || return 1
  step "python3 is $pyexp" -- as_user "$name" bash -c "python3 -V | grep -F 'Python $pyexp.'" || return 1

  if [ "$mode" = root ]; then
    local image=orbit-fresh-tmp:$suite-$$
    images+=("$image")
    step "snapshot the installed machine" -- docker commit "$name" "$image" || return 1
    step "make demo again with --network none" -- docker run --rm --init --network none \
      --user "$user" -w "$home/orbit-packager" -e HOME="$home" "$image" make demo || return 1
    docker rmi -f "$image" >/dev/null 2>&1 || true
  fi
  step "make test as $user" -- as_user "$name" make test || return 1
  if [ "$mode" = sudo ]; then
    step "apt-get ran through sudo, the venv belongs to $user" -- bash -c "grep -q '^install-system-deps: installing python3 python3-venv .*(with sudo)\$' '$out' \
      && docker exec '$name' stat -c %U $home/orbit-packager/.venv/bin/python | grep -qx $user" || return 1
  fi
}

ensure_image bookworm
ensure_image trixie
log "testing HEAD ${head:0:12}; logs in $logdir"

results=() rc=0
for c in "${combos[@]}"; do
  suite=${c%-*} mode=${c#*-}
  case $suite in bookworm) what="Debian 12 (bookworm, Python 3.11)" ;; trixie) what="Debian 13 (trixie, Python 3.13)" ;; esac
  case $mode in root) what+=" as root" ;; sudo) what+=" as a user with sudo" ;; esac
  out=$logdir/$c.log
  : >"$out"
  start=$SECONDS
  if run_combo "$suite" "$mode" "$out"; then
    line="PASS $c: $what: make demo and make test ($(secs $((SECONDS - start))))"
  else
    line="FAIL $c: $what: '$failed' failed after $(secs $((SECONDS - start))); log: $out"
    tail -n 40 "$out" | sed 's/^/    /' >&2
    rc=1
  fi
  echo "fresh-test: $line"
  results+=("$line")
  if [ $rc = 1 ] && [ "${FRESH_TEST_KEEP:-}" = 1 ] && [[ $line = FAIL* ]]; then
    log "kept container orbit-fresh-$c-$$ (docker rm -f it when done)"
    containers=("${containers[@]/orbit-fresh-$c-$$/}")
  else
    docker rm -f "orbit-fresh-$c-$$" >/dev/null 2>&1 || true
  fi
done

echo "fresh-test: summary (HEAD ${head:0:12}, logs in $logdir)"
printf '  %s\n' "${results[@]}"
exit $rc
