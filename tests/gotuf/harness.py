"""Orbit's own TUF client for the tests: tests/gotuf/main.go built against go-tuf v0.5.2.

``gotuf_binary()`` builds the Go program once into a cache directory keyed by the hash of its
sources, Go's version and the go-tuf package version (a rebuild takes a few seconds), and reuses
it afterwards. Go and go-tuf's source come from Debian's packages, installed by
``scripts/install-gotuf.sh`` (``make test`` runs it through ``install-system-deps.sh --test``).
When they are missing the tests fail with the command to run; only on a machine that is not
Debian (no apt-get, no /etc/debian_version) do they skip, unless ORBIT_PACKAGER_REQUIRE_GOTUF=1.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("go.mod", "main.go")
GOCODE = Path("/usr/share/gocode/src")
MODULES = (
    "github.com/theupdateframework/go-tuf",
    "github.com/secure-systems-lab/go-securesystemslib",
    "golang.org/x/crypto",
)
INSTALL = "bash scripts/install-gotuf.sh (as root; `make test` runs it)"
SAO_PAULO = "America/Sao_Paulo"  # UTC-03:00 all year (no DST since 2019)


def _is_debian() -> bool:
    return Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def _missing() -> list[str]:
    missing = [] if shutil.which("go") else ["go"]
    missing += [m for m in MODULES if not (GOCODE / m / "go.mod").is_file()]
    return missing


def _package_version() -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "golang-github-theupdateframework-go-tuf-dev"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip()


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orbit-packager-tests"


def _go_env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOCACHE": str(cache / "go-build"),
        "GOPATH": str(cache / "gopath"),
        "CGO_ENABLED": "0",
    }


@functools.cache
def gotuf_binary() -> Path:
    """The built Go program (skips or fails the calling test when it cannot be built)."""
    missing = _missing()
    if missing:
        reason = (
            f"Orbit's go-tuf client (tests/gotuf) needs Go and go-tuf v0.5.2's source from "
            f"Debian's packages; missing: {', '.join(missing)}; run: {INSTALL}"
        )
        if not _is_debian() and os.environ.get("ORBIT_PACKAGER_REQUIRE_GOTUF") != "1":
            pytest.skip(f"not a Debian machine: {reason}")
        pytest.fail(reason, pytrace=False)
    packaged = _package_version()
    if not packaged.startswith("0.5.2"):
        # Debian 13 ships go-tuf 2.x with 0.7.0's API under v0/: not Orbit's client. Debian 12
        # (bookworm-backports, what CI runs) has v0.5.2 itself.
        reason = (
            f"this machine's go-tuf source is {packaged or 'missing'}, not Orbit's v0.5.2 "
            "(Debian 12 bookworm-backports has it; the go-tuf tests run there)"
        )
        if os.environ.get("ORBIT_PACKAGER_REQUIRE_GOTUF") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    go_version = subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    digest.update(go_version.encode() + b"\0" + _package_version().encode())
    cache = _cache_root()
    binary = cache / f"gotuf-{digest.hexdigest()[:16]}" / "gotuf"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        for name in SOURCES:  # build from a copy: go never writes into the source tree
            shutil.copy(SOURCE_DIR / name, Path(tmp, name))
        built = Path(tmp, "gotuf")
        command = ["go", "build", "-o", str(built), "."]
        proc = subprocess.run(
            command,
            cwd=tmp,
            env=_go_env(cache),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"building tests/gotuf failed ({go_version}); to reproduce: cd tests/gotuf && "
                f"GOPROXY=off GOFLAGS=-mod=mod go build .\n{proc.stdout}{proc.stderr}",
                pytrace=False,
            )
        os.replace(built, binary)
    return binary


def run_client(
    binary: Path, url: str, trusted_root: bytes, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """go-tuf's client (as Orbit): Init(trusted_root), Update(), Download every target."""
    with tempfile.NamedTemporaryFile(suffix=".root.json") as root:
        root.write(trusted_root)
        root.flush()
        proc = subprocess.run(
            [str(binary), "client", url, root.name],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"go-tuf's client failed on {url}: {proc.stderr.strip()}")
    return proc


def client_targets(binary: Path, url: str, trusted_root: bytes) -> dict[str, Any]:
    """The JSON go-tuf's client prints: versions, expires and targets (length, sha512)."""
    result: dict[str, Any] = json.loads(run_client(binary, url, trusted_root).stdout)
    return result


def resign(
    binary: Path,
    repo: Path,
    passphrases: dict[str, str],
    *,
    tz: str = SAO_PAULO,
    roles: str = "root,targets,snapshot,timestamp",
    expires: str = "720h",
) -> None:
    """Re-sign ``roles`` of the repository at ``repo`` with go-tuf, as fleetctl on a machine whose
    time zone is ``tz`` (versions bumped; the roles listing a re-signed role are re-signed too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(passphrases)
    env["TZ"] = tz
    proc = subprocess.run(
        [str(binary), "resign", str(repo), "-roles", roles, "-expires", expires],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"go-tuf resign failed: {proc.stderr.strip()}")
