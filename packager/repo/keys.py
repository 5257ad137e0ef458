"""Role key files in go-tuf's format, so repositories made by ``fleetctl updates`` keep working.

A key file ``keys/<role>.json`` holds a JSON *array* of ed25519 private keys (a role file
accumulates keys across rotations), wrapped in go-tuf's ``encrypted`` envelope: scrypt
(N=32768, r=8, p=1) derives a 32-byte key from the passphrase and NaCl secretbox
(XSalsa20-Poly1305) seals the array. No library implements this envelope (securesystemslib only
loads unencrypted PEM), so it is written here from go-tuf's documented format, using hashlib's
scrypt and PyNaCl's secretbox for the cryptography itself.

Key IDs follow go-tuf: sha256 over the canonical JSON of the public key *including*
``keyid_hash_algorithms``. That is what fleetctl looks up in root.json when it signs, so keys we
generate stay usable by fleetctl. Keys already listed in a root keep whatever ID root gives them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.signer import CryptoSigner, SSlibKey

from packager.errors import KeyFileError, PassphraseError
from packager.repo.metadata import canonical

KEYID_HASH_ALGORITHMS = ["sha256", "sha512"]
SCRYPT_N = 32768
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SALT_BYTES = 32


def gotuf_keyid_of(public: dict[str, Any]) -> str:
    """go-tuf's key ID: sha256 over the canonical JSON of the public key as root lists it."""
    return hashlib.sha256(canonical(public)).hexdigest()


@dataclass(frozen=True)
class RoleKey:
    """One ed25519 key pair as stored in a go-tuf key file.

    ``repr`` never shows the private seed, so a key can be logged or end up in a traceback safely.
    """

    public_hex: str
    seed: bytes

    def __repr__(self) -> str:
        return f"RoleKey(public={self.public_hex[:16]}...)"

    @classmethod
    def generate(cls) -> RoleKey:
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(public_hex=public.hex(), seed=seed)

    def public_dict(self) -> dict[str, Any]:
        """The public key as go-tuf writes it into root.json."""
        return {
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyid_hash_algorithms": list(KEYID_HASH_ALGORITHMS),
            "keyval": {"public": self.public_hex},
        }

    @property
    def gotuf_keyid(self) -> str:
        """The key ID go-tuf (and so fleetctl) computes for this key."""
        return gotuf_keyid_of(self.public_dict())

    def sslib_key(self, keyid: str | None = None) -> SSlibKey:
        """The public key for python-tuf metadata, under ``keyid`` (default: go-tuf's ID)."""
        return SSlibKey(
            keyid or self.gotuf_keyid,
            "ed25519",
            "ed25519",
            {"public": self.public_hex},
            {"keyid_hash_algorithms": list(KEYID_HASH_ALGORITHMS)},
        )

    def signer(self, keyid: str | None = None) -> CryptoSigner:
        """A signer whose signatures carry ``keyid`` (the ID root already lists, if any)."""
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        return CryptoSigner(private, self.sslib_key(keyid))

    def _to_private_dict(self) -> dict[str, Any]:
        # Go's ed25519.PrivateKey is seed || public, hex encoded.
        public = bytes.fromhex(self.public_hex)
        return {
            **self.public_dict(),
            "keyval": {"public": self.public_hex, "private": (self.seed + public).hex()},
        }

    @classmethod
    def _from_private_dict(cls, data: Any) -> RoleKey:
        if not isinstance(data, dict) or data.get("keytype") != "ed25519":
            raise ValueError("only ed25519 keys are supported")
        keyval = data.get("keyval") or {}
        public_hex = str(keyval.get("public", ""))
        private = bytes.fromhex(str(keyval.get("private", "")))
        if len(private) != 64 or len(public_hex) != 64:
            raise ValueError("malformed ed25519 key")
        seed = private[:32]
        derived = (
            Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
            .hex()
        )
        if derived != public_hex.lower():
            raise ValueError("private key does not match its public key")
        return cls(public_hex=public_hex.lower(), seed=seed)


def passphrase_bytes(passphrase: str) -> bytes:
    """The bytes scrypt derives the key from: the passphrase's UTF-8, or for one that is not
    valid UTF-8 (a variable holding other bytes, decoded by Python with surrogateescape) its
    bytes as they were, as fleetctl (Go) uses them. Never shows the passphrase."""
    try:
        return passphrase.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise PassphraseError(
            "the passphrase holds characters that cannot be encoded (unpaired surrogates)",
            hint="use a passphrase of valid UTF-8 text",
        ) from None


def is_utf8(passphrase: str) -> bool:
    try:
        passphrase.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _derive(passphrase: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        passphrase_bytes(passphrase),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=nacl.secret.SecretBox.KEY_SIZE,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _gotuf_indent(value: Any) -> bytes:
    # go-tuf writes json.MarshalIndent(v, "", "\t") plus a newline; keep byte parity.
    return (json.dumps(value, indent="\t") + "\n").encode()


def encrypt_keys(keys: list[RoleKey], passphrase: str | None) -> bytes:
    """Serialize ``keys`` as a go-tuf key file; encrypted unless ``passphrase`` is None."""
    items = [k._to_private_dict() for k in keys]
    if passphrase is None:
        return _gotuf_indent({"encrypted": False, "data": items})
    plaintext = json.dumps(items, indent="\t").encode()
    salt = nacl.utils.random(_SALT_BYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = nacl.secret.SecretBox(_derive(passphrase, salt)).encrypt(plaintext, nonce)
    envelope = {
        "encrypted": True,
        "data": {
            "kdf": {
                "name": "scrypt",
                "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": _b64(salt),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
            "ciphertext": _b64(sealed.ciphertext),
        },
    }
    return _gotuf_indent(envelope)


class WrongPassphrase(Exception):
    """The passphrase does not open the key file."""


def decrypt_keys(content: bytes, passphrase: str) -> list[RoleKey]:
    """Parse a go-tuf key file (encrypted or not). Raises WrongPassphrase or ValueError."""
    envelope = json.loads(content)
    if not isinstance(envelope, dict) or "data" not in envelope:
        raise ValueError("not a go-tuf key file (no 'data')")
    if envelope.get("encrypted") is False:
        plain: Any = envelope["data"]
    else:
        data = envelope["data"]
        kdf, cipher = data.get("kdf", {}), data.get("cipher", {})
        if kdf.get("name") != "scrypt":
            raise ValueError(f"unknown kdf {kdf.get('name')!r}")
        if cipher.get("name") != "nacl/secretbox":
            raise ValueError(f"unknown cipher {cipher.get('name')!r}")
        params = kdf.get("params", {})
        if (params.get("N"), params.get("r"), params.get("p")) != (SCRYPT_N, SCRYPT_R, SCRYPT_P):
            raise ValueError("unexpected scrypt parameters")
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(data["ciphertext"], validate=True)
        # PyNaCl reports these as CryptoError, which would read as a wrong passphrase
        if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
            raise ValueError("incorrect nonce size")
        if len(ciphertext) < nacl.secret.SecretBox.MACBYTES:
            raise ValueError("ciphertext shorter than its authentication tag")
        try:
            opened = nacl.secret.SecretBox(_derive(passphrase, salt)).decrypt(ciphertext, nonce)
        except nacl.exceptions.CryptoError:
            raise WrongPassphrase from None
        plain = json.loads(opened)
    if not isinstance(plain, list):
        raise ValueError("key file does not hold a list of keys")
    return [RoleKey._from_private_dict(item) for item in plain]


def is_encrypted(content: bytes) -> bool:
    try:
        return bool(json.loads(content).get("encrypted", True))
    except (ValueError, AttributeError):
        return True


class KeyStore:
    """The ``keys/`` directory: one go-tuf key file per role."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, role: str) -> Path:
        return self.directory / f"{role}.json"

    def read_raw(self, role: str) -> bytes:
        try:
            return self.path(role).read_bytes()
        except FileNotFoundError:
            raise KeyFileError(
                f"{role} key not found: {self.path(role)} does not exist",
                hint=f"copy keys/{role}.json into {self.directory} from your key storage",
            ) from None
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path(role)}: {exc.strerror}") from None

    def load(self, role: str, passphrase: str, *, source: str) -> list[RoleKey]:
        """Decrypt the role's keys. ``source`` names where the passphrase came from."""
        return self.open(role, self.read_raw(role), passphrase, source=source)

    def open(self, role: str, content: bytes, passphrase: str, *, source: str) -> list[RoleKey]:
        """Decrypt ``content``, read from the role's file; errors as :meth:`load` raises them.
        Safe in any thread (it touches no file): commands derive several keys at once."""
        try:
            return decrypt_keys(content, passphrase)
        except (WrongPassphrase, PassphraseError):
            hint = (
                None
                if is_utf8(passphrase)
                else "it is not valid UTF-8: check the encoding of the variable or the terminal"
            )
            raise PassphraseError(
                f"{role} passphrase from {source} is invalid", hint=hint
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"{self.path(role)} is not a valid go-tuf key file: {exc}") from None
