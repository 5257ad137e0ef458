from __future__ import annotations

import json

import pytest

from packager.repo.keys import RoleKey, WrongPassphrase, decrypt_keys, encrypt_keys


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
