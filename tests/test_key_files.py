"""Issue 14: key files checked against an independent implementation of go-tuf's format.

The oracle below is written from the specification (/work/shared/reference/fleet-updates.md
§A6 and go-tuf's ``encrypted`` package): ``hashlib.scrypt`` (N=32768, r=8, p=1, 32 bytes) and
PyNaCl's ``SecretBox`` (XSalsa20-Poly1305); it shares no code with ``packager.repo.keys``. It is
first proved on key files made by go-tuf itself (fixtures/gotuf-fleetctl-repo) and on the demo
repository's, then used to check the key files that `updates init` and `updates rotate` write:
they open with the passphrase, each private seed derives the public key root.json lists for the
role, every file has its own random salt and nonce, envelope and plaintext are laid out byte for
byte as go-tuf writes them (random values aside), and files are 0600 in a 0700 directory
whatever the umask.

Crafted bad key files (wrong passphrase, another KDF or scrypt parameters, the key file of
another repository, a seed that does not match its public key, truncated or resized fields) each
end `updates add` with exit 2 and one line on stderr, and change nothing. Three cases are
expected failures: bugs, reported as a wrong passphrase (see their reasons).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.signing
import nacl.utils
import pytest

from scripts.make_demo_repo import DEMO_PASSPHRASES
from tests.helpers import FIXTURES, GOTUF_FIXTURE, GOTUF_PASSPHRASES, TEST_PASSPHRASES, tree_bytes

ROLES = ("root", "targets", "snapshot", "timestamp")
SCRYPT_PARAMS = {"N": 32768, "r": 8, "p": 1}
SALT_BYTES, NONCE_BYTES, KEY_BYTES = 32, 24, 32


# -- the independent implementation -------------------------------------------------------------
def _scrypt(passphrase: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        passphrase.encode(),
        salt=salt,
        n=SCRYPT_PARAMS["N"],
        r=SCRYPT_PARAMS["r"],
        p=SCRYPT_PARAMS["p"],
        maxmem=64 * 1024 * 1024,
        dklen=KEY_BYTES,
    )


@dataclass(frozen=True)
class Envelope:
    salt: bytes
    nonce: bytes
    ciphertext: bytes


def envelope(content: bytes) -> Envelope:
    """The envelope of an encrypted key file, checked against go-tuf's format."""
    doc = json.loads(content)
    assert doc["encrypted"] is True
    data = doc["data"]
    assert data["kdf"]["name"] == "scrypt"
    assert data["kdf"]["params"] == SCRYPT_PARAMS
    assert data["cipher"]["name"] == "nacl/secretbox"
    return Envelope(
        base64.b64decode(data["kdf"]["salt"], validate=True),
        base64.b64decode(data["cipher"]["nonce"], validate=True),
        base64.b64decode(data["ciphertext"], validate=True),
    )


def open_key_file(content: bytes, passphrase: str) -> list[dict[str, Any]]:
    """Decrypt a go-tuf key file: the JSON array of private keys it holds."""
    env = envelope(content)
    box = nacl.secret.SecretBox(_scrypt(passphrase, env.salt))
    keys = json.loads(box.decrypt(env.ciphertext, env.nonce))
    assert isinstance(keys, list)
    return keys


def seal_key_file(
    keys: list[dict[str, Any]], passphrase: str, *, salt_bytes: int = SALT_BYTES
) -> bytes:
    """Encrypt like go-tuf (json.MarshalIndent with tabs, then a newline)."""
    salt = nacl.utils.random(salt_bytes)
    nonce = nacl.utils.random(NONCE_BYTES)
    sealed = nacl.secret.SecretBox(_scrypt(passphrase, salt)).encrypt(
        json.dumps(keys, indent="\t").encode(), nonce
    )
    doc = {
        "encrypted": True,
        "data": {
            "kdf": {
                "name": "scrypt",
                "params": SCRYPT_PARAMS,
                "salt": base64.b64encode(salt).decode(),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
            "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
        },
    }
    return (json.dumps(doc, indent="\t") + "\n").encode()


def public_of_seed(seed: bytes) -> str:
    return nacl.signing.SigningKey(seed).verify_key.encode().hex()


def gotuf_keyid(public_hex: str) -> str:
    """go-tuf's key ID: sha256 of the canonical JSON of the public key (with
    keyid_hash_algorithms); for these ASCII-only values canonical JSON is sorted and compact."""
    public = {
        "keyid_hash_algorithms": ["sha256", "sha512"],
        "keytype": "ed25519",
        "keyval": {"public": public_hex},
        "scheme": "ed25519",
    }
    return hashlib.sha256(
        json.dumps(public, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def check_key(key: dict[str, Any]) -> str:
    """A private key as go-tuf stores it; returns its public key (hex) derived from the seed."""
    assert key["keytype"] == "ed25519" and key["scheme"] == "ed25519"
    assert key["keyid_hash_algorithms"] == ["sha256", "sha512"]
    private = bytes.fromhex(key["keyval"]["private"])
    assert len(private) == 64, "Go's ed25519.PrivateKey is seed || public"
    derived = public_of_seed(private[:32])
    assert derived == key["keyval"]["public"] == private[32:].hex()
    return derived


def role_publics(root_json: bytes, role: str) -> dict[str, str]:
    """{key ID: public hex} of the keys root.json lists for ``role``."""
    signed = json.loads(root_json)["signed"]
    return {kid: signed["keys"][kid]["keyval"]["public"] for kid in signed["roles"][role]["keyids"]}


def skeleton(text: str) -> str:
    """A key file or its plaintext with every random value blanked: the layout go-tuf writes."""
    return re.sub(r'"(salt|nonce|ciphertext|public|private)": "[^"]*"', r'"\1": "…"', text)


# -- the oracle proved on key files other software made -----------------------------------------
@pytest.mark.parametrize(
    ("repo", "passphrases"),
    [(GOTUF_FIXTURE, GOTUF_PASSPHRASES), (FIXTURES / "demo-repo", DEMO_PASSPHRASES)],
    ids=["go-tuf", "demo"],
)
def test_oracle_opens_fixture_key_files(repo: Path, passphrases: dict[str, str]) -> None:
    root = (repo / "repository/root.json").read_bytes()
    for role in ROLES:
        keys = open_key_file(
            (repo / "keys" / f"{role}.json").read_bytes(),
            passphrases[f"FLEET_{role.upper()}_PASSPHRASE"],
        )
        publics = [check_key(k) for k in keys]
        listed = role_publics(root, role)
        assert listed == {gotuf_keyid(publics[-1]): publics[-1]}, role
        with pytest.raises(nacl.exceptions.CryptoError):
            open_key_file((repo / "keys" / f"{role}.json").read_bytes(), "not the passphrase")
    if repo == GOTUF_FIXTURE:  # rotated once: the first targets key is the one root v1 lists
        keys = open_key_file(
            (repo / "keys/targets.json").read_bytes(), GOTUF_PASSPHRASES["FLEET_TARGETS_PASSPHRASE"]
        )
        first = check_key(keys[0])
        assert role_publics((repo / "root-v1.json").read_bytes(), "targets") == {
            gotuf_keyid(first): first
        }


# -- key files our commands write ---------------------------------------------------------------
def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full_env.update(TEST_PASSPHRASES if env is None else env)
    return subprocess.run(
        [sys.executable, "-m", "packager", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=umask,
    )


def passphrase(role: str) -> str:
    return TEST_PASSPHRASES[f"FLEET_{role.upper()}_PASSPHRASE"]


@dataclass
class Made:
    first: Path  # init, then rotate targets and rotate root
    second: Path  # init only (another repository, same passphrases)
    before_rotation: dict[str, bytes]  # the first repository's key files after init


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    top = tmp_path_factory.mktemp("keyfiles")
    first, second = top / "first", top / "second"
    for repo in (first, second):
        done = run_cli("updates", "init", "--path", repo, umask=0)  # modes must not follow umask
        assert done.returncode == 0, done.stderr
    before = {role: (first / "keys" / f"{role}.json").read_bytes() for role in ROLES}
    for role in ("targets", "root"):
        done = run_cli("updates", "rotate", role, "--path", first, umask=0)
        assert done.returncode == 0, done.stderr
    return Made(first, second, before)


def test_init_key_files_open_and_match_root(made: Made) -> None:
    root = (made.second / "repository/root.json").read_bytes()
    for role in ROLES:
        keys = open_key_file((made.second / "keys" / f"{role}.json").read_bytes(), passphrase(role))
        assert len(keys) == 1
        public = check_key(keys[0])
        assert role_publics(root, role) == {gotuf_keyid(public): public}, role


def test_rotated_key_files_keep_the_old_key_and_root_lists_the_new(made: Made) -> None:
    root = (made.first / "repository/root.json").read_bytes()
    assert json.loads(root)["signed"]["version"] == 3
    for role in ROLES:
        keys = open_key_file((made.first / "keys" / f"{role}.json").read_bytes(), passphrase(role))
        publics = [check_key(k) for k in keys]
        old = [check_key(k) for k in open_key_file(made.before_rotation[role], passphrase(role))]
        if role in ("targets", "root"):
            assert publics[:-1] == old and len(publics) == 2, role
        else:
            assert publics == old, role
        assert role_publics(root, role) == {gotuf_keyid(publics[-1]): publics[-1]}, role


def _all_key_files(made: Made) -> dict[str, bytes]:
    files = {f"first/{r} (init)": c for r, c in made.before_rotation.items()}
    for name, repo in (("first", made.first), ("second", made.second)):
        for role in ROLES:
            files[f"{name}/{role}"] = (repo / "keys" / f"{role}.json").read_bytes()
    return files


def test_every_key_file_has_its_own_random_salt_and_nonce(made: Made) -> None:
    """Across every file of two repositories, and a role's file before and after rotation."""
    files = _all_key_files(made)
    written = set(files.values())  # snapshot and timestamp were not rotated: the same file
    assert len(files) == 12 and len(written) == 10
    envelopes = [envelope(content) for content in written]
    assert len({e.salt for e in envelopes}) == 10, "two key files share a salt"
    assert len({e.nonce for e in envelopes}) == 10, "two key files share a nonce"
    for e in envelopes:
        assert len(e.salt) == SALT_BYTES and len(e.nonce) == NONCE_BYTES
        assert e.salt.count(0) < SALT_BYTES // 2 and e.nonce.count(0) < NONCE_BYTES // 2


def test_envelope_and_plaintext_are_laid_out_as_gotuf_writes_them(made: Made) -> None:
    theirs = (GOTUF_FIXTURE / "keys/root.json").read_text()
    ours = (made.second / "keys/root.json").read_text()
    assert skeleton(ours) == skeleton(theirs)
    plain_theirs = json.dumps(
        open_key_file(theirs.encode(), GOTUF_PASSPHRASES["FLEET_ROOT_PASSPHRASE"])
    )
    plain_ours = json.dumps(open_key_file(ours.encode(), passphrase("root")))
    assert skeleton(plain_ours) == skeleton(plain_theirs)


def test_key_files_are_0600_in_a_0700_directory(made: Made) -> None:
    for repo in (made.first, made.second):
        assert stat.S_IMODE((repo / "keys").stat().st_mode) == 0o700
        for role in ROLES:
            assert stat.S_IMODE((repo / "keys" / f"{role}.json").stat().st_mode) == 0o600, role
        assert sorted(p.name for p in (repo / "keys").iterdir()) == sorted(
            f"{r}.json" for r in ROLES
        )


# -- crafted bad key files ----------------------------------------------------------------------
def _edit(content: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(content)
    change(doc["data"])
    return (json.dumps(doc, indent="\t") + "\n").encode()


def _b64_edit(field: str, change: Callable[[bytes], bytes]) -> Callable[[dict[str, Any]], None]:
    where = {
        "salt": ("kdf", "salt"),
        "nonce": ("cipher", "nonce"),
        "ciphertext": (None, "ciphertext"),
    }

    def apply(data: dict[str, Any]) -> None:
        parent, key = where[field]
        holder = data if parent is None else data[parent]
        holder[key] = base64.b64encode(change(base64.b64decode(holder[key]))).decode()

    return apply


def _swap_seed(content: bytes, _made: Made) -> bytes:
    """The role's public key as root.json lists it, with the seed of another key."""
    keys = open_key_file(content, passphrase("targets"))
    other = nacl.signing.SigningKey.generate()
    public = keys[0]["keyval"]["public"]
    keys[0]["keyval"]["private"] = other.encode().hex() + public
    return seal_key_file(keys, passphrase("targets"))


def _salt_of(size: int) -> Callable[[bytes, Made], bytes]:
    """The same ciphertext with the salt cut or padded to ``size`` bytes."""
    return lambda c, m: _edit(c, _b64_edit("salt", lambda b: (b + bytes(size))[:size]))


# name: (make the targets key file from the good one, extra environment, expected text)
CASES = [
    pytest.param(lambda c, m: c, {"FLEET_TARGETS_PASSPHRASE": "targets secreT"},
                 "targets passphrase from FLEET_TARGETS_PASSPHRASE is invalid", id="wrong passphrase"),
    pytest.param(lambda c, m: _edit(c, lambda d: d["kdf"].update(name="argon2")), {},
                 "unknown kdf 'argon2'", id="kdf argon2"),
    pytest.param(lambda c, m: _edit(c, lambda d: d["kdf"]["params"].update(N=16384)), {},
                 "unexpected scrypt parameters", id="scrypt N 16384"),
    pytest.param(lambda c, m: _edit(c, lambda d: d["kdf"]["params"].update(r=1)), {},
                 "unexpected scrypt parameters", id="scrypt r 1"),
    pytest.param(lambda c, m: _edit(c, lambda d: d["cipher"].update(name="aes-gcm")), {},
                 "unknown cipher 'aes-gcm'", id="cipher aes-gcm"),
    pytest.param(lambda c, m: m.before_rotation["targets"], {},
                 "holds no current targets key", id="key file of another repository"),
    pytest.param(_swap_seed, {}, "private key does not match its public key", id="seed of another key"),
    pytest.param(lambda c, m: _edit(c, _b64_edit("ciphertext", lambda b: b[: len(b) // 2])), {},
                 "targets passphrase from FLEET_TARGETS_PASSPHRASE is invalid",
                 id="ciphertext truncated"),
    pytest.param(_salt_of(16), {}, "targets passphrase from FLEET_TARGETS_PASSPHRASE is invalid",
                 id="salt of 16 bytes"),
    pytest.param(_salt_of(48), {}, "targets passphrase from FLEET_TARGETS_PASSPHRASE is invalid",
                 id="salt of 48 bytes"),
    pytest.param(lambda c, m: _edit(c, lambda d: d["kdf"].update(salt="%%%")), {},
                 "is not a valid go-tuf key file", id="salt not base64"),
    pytest.param(lambda c, m: _edit(c, _b64_edit("nonce", lambda b: b[:23])), {}, "nonce",
                 id="nonce of 23 bytes"),
    pytest.param(lambda c, m: _edit(c, _b64_edit("ciphertext", lambda b: b[:10])), {},
                 "ciphertext", id="ciphertext shorter than its tag"),
]  # fmt: skip


@pytest.mark.parametrize(("craft", "env", "expected"), CASES)
def test_bad_targets_key_file_is_one_line_exit_2(
    made: Made,
    tmp_path: Path,
    craft: Callable[[bytes, Made], bytes],
    env: dict[str, str],
    expected: str,
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(made.second, repo)
    key_file = repo / "keys/targets.json"
    key_file.write_bytes(craft(key_file.read_bytes(), made))
    payload = tmp_path / "orbit"
    payload.write_bytes(b"orbit")
    before = tree_bytes(repo)
    done = run_cli(
        "updates", "add", "--path", repo, "--target", payload, "--name", "orbit",
        "--platform", "linux", "--version", "1.0.0", env={**TEST_PASSPHRASES, **env},
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("orbit-packager: error: "), done.stderr
    assert expected in lines[0] and "targets" in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert tree_bytes(repo) == before, "a refused command changed the repository"
    assert not (repo / ".orbit-packager-txn").exists()
