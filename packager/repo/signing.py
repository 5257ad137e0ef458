"""Signing keys wherever they live: go-tuf key files (``keys/<role>.json`` or a holder's own
file) and keys on a PKCS#11 token (``pkcs11:`` URIs, :mod:`packager.repo.hsm`).

Both kinds give the same small interface (:class:`SigningKey`), so a command signs with
whatever the user names. A key is matched to the keys a root lists by its type and public value
(:func:`key_identity`), never by key ID alone: a root keeps whatever ID it gave a key, and
fleetctl's and our IDs for the same key may differ in form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from securesystemslib.signer import Signer, SSlibKey
from tuf.api.metadata import Key, Root

from packager.errors import KeyFileError, PassphraseError, UsageError
from packager.repo.keys import (
    RoleKey,
    WrongPassphrase,
    decrypt_keys,
    encrypt_keys,
    gotuf_keyid_of,
    is_encrypted,
    is_utf8,
)
from packager.repo.passphrase import PassphraseSource


class SigningKey(Protocol):
    def public_dict(self) -> dict[str, Any]: ...

    @property
    def gotuf_keyid(self) -> str: ...

    def sslib_key(self, keyid: str | None = None) -> SSlibKey: ...

    def signer(self, keyid: str | None = None) -> Signer: ...


_ECDSA = ("ecdsa", "ecdsa-sha2-nistp256")


def key_identity(keytype: str, public: object) -> tuple[str, str]:
    """What makes two key entries the same key: type family and normalised public value."""
    value = str(public).strip()
    if keytype in _ECDSA:
        return "ecdsa", "".join(value.split())
    return keytype, value.lower()


def identity_of(key: SigningKey | Key) -> tuple[str, str]:
    if isinstance(key, Key):
        return key_identity(key.keytype, key.keyval.get("public", ""))
    d = key.public_dict()
    return key_identity(str(d["keytype"]), d["keyval"]["public"])


def role_key_ids(root: Root, role: str, key: SigningKey) -> list[str]:
    """The IDs under which ``root`` lists ``key`` for ``role`` (none: not one of its keys)."""
    mine = identity_of(key)
    return [k for k in root.roles[role].keyids if identity_of(root.keys[k]) == mine]


def signers_for(root: Root, role: str, keys: Sequence[SigningKey]) -> list[Signer]:
    """A signer for each held key that ``root`` lists for ``role``, under root's key IDs."""
    out: list[Signer] = []
    for key in keys:
        out += [key.signer(keyid) for keyid in role_key_ids(root, role, key)]
    return out


def is_key_uri(ref: str) -> bool:
    return ref.startswith("pkcs11:")


def open_key_ref(ref: str, role: str, passphrases: PassphraseSource) -> list[SigningKey]:
    """The keys a ``--key``/``--root-key``/``--targets-key`` value names: a PKCS#11 URI (one
    key on a token) or a go-tuf key file (every key in it; passphrase of ``role``)."""
    if is_key_uri(ref):
        from packager.repo.hsm import HsmKey

        return [HsmKey.open(ref, role=role)]
    return list(load_key_file(Path(ref), role, passphrases))


def load_key_file(path: Path, role: str, passphrases: PassphraseSource) -> list[RoleKey]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist",
            hint="give a go-tuf key file (keygen --out) or a pkcs11: URI",
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        if not is_encrypted(content):
            return decrypt_keys(content, "")
        phrase = passphrases.get(role)
        try:
            return decrypt_keys(content, phrase.value)
        except (WrongPassphrase, PassphraseError):
            hint = None if is_utf8(phrase.value) else "it is not valid UTF-8"
            raise PassphraseError(
                f"{role} passphrase from {phrase.source} does not open {path}", hint=hint
            ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a valid go-tuf key file: {exc}") from None


def write_new_key_file(path: Path, keys: list[RoleKey], passphrase: str) -> None:
    """A new key file, 0600 from its creation; an existing file is never overwritten."""
    data = encrypt_keys(keys, passphrase)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists", hint="choose another --out") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


PUBLIC_KEY_FORMAT = "orbit-packager public key"


def public_key_document(role: str, key: SigningKey) -> dict[str, Any]:
    """What travels to the root holders: the role, the key ID and the public key."""
    return {
        "format": PUBLIC_KEY_FORMAT,
        "role": role,
        "keyid": key.gotuf_keyid,
        "key": key.public_dict(),
    }


def read_public_key(path: Path, role: str) -> tuple[str, Key]:
    """(key ID, key) from a ``keygen --public-out`` file; the role in it must be ``role``."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"public key file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a public key file: {exc}") from None
    try:
        if doc.get("format") != PUBLIC_KEY_FORMAT:
            raise ValueError("not made by `updates keygen --public-out`")
        if doc.get("role") != role:
            raise ValueError(f"it is a {doc.get('role')} key, not a {role} key")
        body = doc["key"]
        keyid = str(doc["keyid"])
        key = Key.from_dict(keyid, dict(body))
        if gotuf_keyid_of(body) != keyid:
            raise ValueError("its key ID does not match its key")
        if key.keytype not in ("ed25519", *_ECDSA):
            raise ValueError(f"key type {key.keytype} is not supported")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    return keyid, key
