"""A fresh SoftHSM2 token per test, for the PKCS#11 (keys in hardware) tests.

Each token lives in its own directory under the test's tmp_path, through its own SOFTHSM2_CONF
(``directories.tokendir`` there, ``objectstore.backend = file``), set in the environment for the
test's duration: the module reads it when it is initialised, which packager.repo.hsm does when the
first key on it is opened and undoes when the last one is closed.

SoftHSM2 and OpenSC's pkcs11-tool come from Debian's packages softhsm2 and opensc, installed by
``scripts/install-system-deps.sh --test`` (``make test`` runs it). When they are missing the tests
fail with the command to run; only on a machine that is not Debian (no apt-get, no
/etc/debian_version) do they skip, unless ORBIT_PACKAGER_REQUIRE_SOFTHSM=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
INSTALL = (
    "apt-get install softhsm2 opensc (as root; `make test` runs "
    "scripts/install-system-deps.sh --test)"
)
USER_PIN = "246810"
SO_PIN = "13579135"


def _is_debian() -> bool:
    return Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def require_softhsm() -> None:
    """Fail (skip off Debian) the calling test when SoftHSM2 or pkcs11-tool is missing."""
    missing = [] if MODULE.is_file() else [str(MODULE)]
    missing += [tool for tool in ("softhsm2-util", "pkcs11-tool") if not shutil.which(tool)]
    if not missing:
        return
    reason = (
        f"the PKCS#11 tests need SoftHSM2 and OpenSC; missing: {', '.join(missing)}; run: {INSTALL}"
    )
    if not _is_debian() and os.environ.get("ORBIT_PACKAGER_REQUIRE_SOFTHSM") != "1":
        pytest.skip(f"not a Debian machine: {reason}")
    pytest.fail(reason, pytrace=False)


@dataclass
class SoftToken:
    """One initialised token: its label, PINs and configuration."""

    label: str
    conf: Path
    pin: str = USER_PIN
    so_pin: str = SO_PIN

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def uri(self, obj: str | None = None, *, key_id: bytes | None = None, extra: str = "") -> str:
        """``pkcs11:token=LABEL;object=OBJ;id=..?module-path=...`` for this token."""
        parts = [f"token={quote(self.label, safe='')}"]
        if obj is not None:
            parts.append(f"object={quote(obj, safe='')}")
        if key_id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in key_id))
        return "pkcs11:" + ";".join(parts) + extra + f"?module-path={MODULE}"

    def pkcs11_tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """OpenSC's pkcs11-tool on this token, logged in (a test PIN on argv is fine here)."""
        proc = subprocess.run(
            ["pkcs11-tool", "--module", str(MODULE), "--token-label", self.label,
             "--login", "--pin", self.pin, *args],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"pkcs11-tool {args} failed: {proc.stdout}{proc.stderr}")
        return proc


def init_token(conf: Path, label: str, pin: str = USER_PIN, so_pin: str = SO_PIN) -> SoftToken:
    """Initialise one more token (in the next free slot) in the token directory of ``conf``."""
    token = SoftToken(label=label, conf=conf, pin=pin, so_pin=so_pin)
    proc = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label,
         "--pin", pin, "--so-pin", so_pin],
        env=token.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"softhsm2-util --init-token failed: {proc.stdout}{proc.stderr}")
    return token


def make_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str = "fleet-root"
) -> SoftToken:
    """A fresh token directory with one token ``label``; SOFTHSM2_CONF set for the test."""
    require_softhsm()
    base = tmp_path / "softhsm"
    (base / "tokens").mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    return init_token(conf, label)
