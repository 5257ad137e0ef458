from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import Key, Signature, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Timestamp

from packager.errors import PassphraseError
from packager.repo.keys import RoleKey, WrongPassphrase, decrypt_keys, encrypt_keys
from packager.repo.metadata import SPEC_VERSION, sign
from packager.repo.passphrase import PassphraseSource
from packager.repo.signing import load_key_file


def test_round_trip_and_wrong_passphrase() -> None:
    keys = [RoleKey.generate(), RoleKey.generate()]
    blob = encrypt_keys(keys, "pässwörd")
    assert decrypt_keys(blob, "pässwörd") == keys
    with pytest.raises(WrongPassphrase):
        decrypt_keys(blob, "password")
    assert "pässwörd" not in blob.decode()
    assert keys[0].seed.hex() not in blob.decode()


def test_unencrypted_variant() -> None:
    keys = [RoleKey.generate()]
    blob = encrypt_keys(keys, None)
    assert json.loads(blob)["encrypted"] is False
    assert decrypt_keys(blob, "ignored") == keys


def test_repr_hides_private_key() -> None:
    key = RoleKey.generate()
    assert key.seed.hex() not in repr(key)
    assert key.seed.hex() not in str([key])


def test_signer_uses_given_keyid() -> None:
    key = RoleKey.generate()
    assert key.signer("abc").public_key.keyid == "abc"
    assert key.signer().public_key.keyid == key.gotuf_keyid


def test_rejects_other_kdf_params() -> None:
    blob = json.loads(encrypt_keys([RoleKey.generate()], "x"))
    blob["data"]["kdf"]["params"]["N"] = 16384
    with pytest.raises(ValueError, match="scrypt"):
        decrypt_keys(json.dumps(blob).encode(), "x")


@pytest.mark.parametrize(
    ("phrase", "hint"),
    [("wrong", ""), ("wr\udcffong", " (it is not valid UTF-8)")],
    ids=["utf-8", "not-utf-8"],
)
def test_a_key_file_the_passphrase_does_not_open(tmp_path: Path, phrase: str, hint: str) -> None:
    """A ceremony's key file and a passphrase that does not open it: one line naming the role,
    where the passphrase came from and the file; "not valid UTF-8" only when it is not (a
    variable holding the byte 0xff arrives as the surrogate \\udcff)."""
    path = tmp_path / "root.json"
    path.write_bytes(encrypt_keys([RoleKey.generate()], "right"))
    source = PassphraseSource(environ={"FLEET_ROOT_PASSPHRASE": phrase})
    with pytest.raises(PassphraseError) as raised:
        load_key_file(path, "root", source)
    assert str(raised.value) == (
        f"root passphrase from FLEET_ROOT_PASSPHRASE does not open {path}{hint}"
    )


class _FailingSigner(Signer):
    """A signer whose key cannot sign (python-tuf wraps its error in UnsignedMetadataError)."""

    def __init__(self) -> None:
        self._public = RoleKey.generate().signer().public_key

    @property
    def public_key(self) -> Key:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        raise ValueError("this key cannot sign")

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None
    ) -> Signer:
        raise NotImplementedError


def test_a_signer_that_fails_is_never_skipped() -> None:
    """Metadata signed by two keys, one of which fails: an error, never metadata carrying one
    signature fewer than asked."""
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    md = Metadata(Timestamp(version=1, spec_version=SPEC_VERSION, expires=expires))
    with pytest.raises(UnsignedMetadataError):
        sign(md, [RoleKey.generate().signer(), _FailingSigner()])
