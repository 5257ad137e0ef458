"""Keys in hardware through PKCS#11 (packager.repo.hsm), on a fresh SoftHSM2 token per test.

Signatures are checked by securesystemslib/python-tuf and by Orbit's own client, go-tuf v0.5.2
(tests/gotuf). go-tuf's client accepts any key ID in root.json (TAP 12), but go-tuf's repository
side (fleetctl) finds, signs with and revokes keys by the ID it computes itself: key IDs are
checked against go-tuf's own computation (a small Go program built here) and known answers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from pkcs11 import exceptions as p11e
from securesystemslib.exceptions import UnverifiedSignatureError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from packager.errors import EXIT_USAGE, PackagerError, UsageError
from packager.repo import hsm
from packager.repo.hsm import (
    HsmKey,
    PinError,
    PinSource,
    Pkcs11Uri,
    generate_on_token,
    is_pkcs11_uri,
)
from packager.repo.keys import RoleKey
from packager.repo.metadata import SPEC_VERSION, file_hash, serialize, sign
from tests.gotuf import harness
from tests.gotuf.harness import client_targets, gotuf_binary, run_client
from tests.helpers import client_fetch_all, serve
from tests.softhsm import MODULE, USER_PIN, SoftToken, init_token, make_token

PINS = {"FLEET_ROOT_PIN": USER_PIN}


@pytest.fixture(autouse=True)
def _no_module_left_open() -> Iterator[None]:
    """Every key is closed by the end of each test, whatever happened (so the module is
    finalised, its sessions closed, and the next test's token read afresh)."""
    yield
    left = hsm._open_modules()
    for path in left:  # clean up for the next test, then fail this one
        while path in hsm._open_modules():
            hsm._release(path)
    assert left == {}, "an HsmKey was left open"


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    monkeypatch.delenv("FLEET_ROOT_PIN", raising=False)
    monkeypatch.delenv(hsm.MODULE_ENV, raising=False)
    return make_token(tmp_path, monkeypatch)


def pins(**extra: str) -> PinSource:
    return PinSource(environ={**PINS, **extra}, terminal_available=lambda: False)


def no_pins() -> PinSource:
    def prompt(_: str) -> str:
        raise AssertionError("prompted")

    return PinSource(environ={}, prompt=prompt, terminal_available=lambda: False)


def one_line(exc: PackagerError) -> str:
    text = str(exc)
    assert "\n" not in text
    assert exc.exit_code == EXIT_USAGE
    return text


# --- URIs ----------------------------------------------------------------------------------------


def test_is_pkcs11_uri() -> None:
    assert is_pkcs11_uri("pkcs11:token=a")
    assert is_pkcs11_uri("PKCS11:token=a")
    assert not is_pkcs11_uri("keys/root.json")
    assert not is_pkcs11_uri("pkcs11")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "pkcs11:token=fleet;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so",
            {"token": "fleet", "object": "root", "module_path": "/usr/lib/softhsm/libsofthsm2.so"},
        ),
        # RFC 7512 section 3 examples (those without attributes we refuse)
        ("pkcs11:object=my-pubkey;type=public", {"object": "my-pubkey", "type": "public"}),
        (
            "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
            UsageError,
        ),
        (
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
            "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=",
            {
                "token": "The Software PKCS#11 Softtoken",
                "manufacturer": "Snake Oil, Inc.",
                "model": "1.0",
                "object": "my-certificate",
                "type": "cert",
                "id": bytes.fromhex("69953e5cf4bdec91"),
                "serial": "",
            },
        ),
        (
            "pkcs11:token=My%20token%25%20created%20by%20Joe;id=%01%02%03%Ba%dd%Ca%fe;object=my-object",
            {
                "token": "My token% created by Joe",
                "id": bytes.fromhex("010203badd cafe".replace(" ", "")),
                "object": "my-object",
            },
        ),
        (
            "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
            {"token": "A name with a substring %;", "object": "my-certificate"},
        ),
        (
            "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
            {"token": "Name with a small A with acute: \u00e1"},
        ),
        ("pkcs11:id=%01%02", {"id": b"\x01\x02", "token": None, "object": None, "serial": None}),
        ("pkcs11:id=%01%02?module-path=/opt/p%2011.so", {"module_path": "/opt/p 11.so"}),
        ("pkcs11:token=a&b;object=x", {"token": "a&b"}),  # '&' needs no encoding in the path
        ("pkcs11:", {"token": None, "object": None, "id": None}),
    ],
)
def test_uri_parse(text: str, expected: dict[str, Any] | type[Exception]) -> None:
    env = {hsm.MODULE_ENV: "/from/env.so"}
    if not isinstance(expected, dict):
        with pytest.raises(expected):
            Pkcs11Uri.parse(text, environ=env)
        return
    uri = Pkcs11Uri.parse(text, environ=env)
    for name, value in expected.items():
        assert getattr(uri, name) == value, name
    if "module-path" not in text:
        assert uri.module_path == "/from/env.so"
    assert Pkcs11Uri.parse(uri.to_text(), environ={}) == uri  # round trip


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("token=a", "pkcs11:"),
        ("pkcs11:token", "'token'"),
        ("pkcs11:token=a;token=b", "'token' appears twice"),
        ("pkcs11:id=%0", "'id'"),
        ("pkcs11:id=%zz", "'id'"),
        ("pkcs11:object=%ff", "'object'"),
        ("pkcs11:token=a b", "'token'"),
        ("pkcs11:token=a;b", "'b'"),
        ("pkcs11:token=a/b", "'token'"),
        ("pkcs11:token=a;", "unnamed"),
        ("pkcs11:=x", "name"),
        ("pkcs11:type=foo", "'type'"),
        ("pkcs11:type=secret-key", "type=secret-key"),
        ("pkcs11:colour=red", "'colour'"),
        ("pkcs11:x-vendor=1", "'x-vendor'"),
        ("pkcs11:slot-id=1", "'slot-id'"),
        ("pkcs11:library-version=3", "'library-version'"),
        ("pkcs11:token=a?module-name=softhsm2", "'module-name'"),
        ("pkcs11:token=a?module-path=lib.so", "module-path must be an absolute path"),
        ("pkcs11:token=a?module-path=/a.so&module-path=/b.so", "'module-path' appears twice"),
        ("pkcs11:token=a?module-path=/a.so&vendor=1", "'vendor'"),
        ("pkcs11:token=a?module-path=/a b.so", "'module-path'"),
    ],
)
def test_uri_malformed(text: str, names: str) -> None:
    with pytest.raises(UsageError) as err:
        Pkcs11Uri.parse(text, environ={hsm.MODULE_ENV: "/x.so"})
    assert names in one_line(err.value)


@pytest.mark.parametrize(
    "secret",
    [
        "pin-value=4711%2a",
        "pin-value=4711&module-path=/x.so",
        "module-path=/x.so&pin-value=47&11",
        "module-path=/x.so?pin-value=4711",
        "pin-value=4711 with spaces",
    ],
)
def test_uri_refuses_pin_value(secret: str) -> None:
    with pytest.raises(UsageError) as err:
        Pkcs11Uri.parse(f"pkcs11:token=a;object=b?{secret}", environ={})
    text = one_line(err.value)
    assert "pin-value" in text
    assert "FLEET_<ROLE>_PIN" in text
    assert "4711" not in text


def test_uri_module_path_missing() -> None:
    with pytest.raises(UsageError) as err:
        Pkcs11Uri.parse("pkcs11:token=a;object=b", environ={})
    text = one_line(err.value)
    assert "?module-path=" in text
    assert hsm.MODULE_ENV in text
    assert Pkcs11Uri.parse("pkcs11:token=a", environ={hsm.MODULE_ENV: "/m.so"}).module_path == (
        "/m.so"
    )
    with pytest.raises(UsageError, match="absolute"):
        Pkcs11Uri.parse("pkcs11:token=a", environ={hsm.MODULE_ENV: "m.so"})


# --- PINs ----------------------------------------------------------------------------------------


def test_pin_source() -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "1357"

    src = PinSource(environ={}, prompt=prompt, terminal_available=lambda: True)
    assert src.get("root", "tok-a") == "1357"
    assert src.get("root", "tok-a") == "1357"
    assert len(asked) == 1  # cached per (role, token)
    assert "tok-a" in asked[0]
    assert src.get("root", "tok-b") == "1357"
    assert len(asked) == 2
    assert "1357" not in repr(src)
    src.forget("root", "tok-a")
    src.get("root", "tok-a")
    assert len(asked) == 3

    env = PinSource(
        environ={"FLEET_ROOT_PIN": "2468"}, prompt=prompt, terminal_available=lambda: True
    )
    assert env.get("root", "tok-a") == "2468"
    assert len(asked) == 3

    with pytest.raises(PackagerError) as err:
        PinSource(environ={"FLEET_ROOT_PIN": ""}, prompt=prompt).get("root", "t")
    assert "FLEET_ROOT_PIN is set but empty" in one_line(err.value)


def test_pin_no_terminal_no_variable_fails_at_once() -> None:
    with pytest.raises(PackagerError) as err:
        no_pins().get("root", "tok")
    assert "FLEET_ROOT_PIN" in one_line(err.value)


def test_pin_prompt_empty_answers() -> None:
    src = PinSource(environ={}, prompt=lambda _: "", terminal_available=lambda: True)
    with pytest.raises(PackagerError, match="FLEET_TARGETS_PIN"):
        src.get("targets", "tok")


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (p11e.PinIncorrect(), "wrong PIN for token 'tok'"),
        (p11e.PinLocked(), "user PIN of token 'tok' is locked"),
        (p11e.PinLenRange(), "wrong length or characters"),
        (p11e.PinExpired(), "has expired"),
        (p11e.TokenNotPresent(), "token 'tok' was removed while signing"),
        (p11e.PKCS11Error("Unmapped error code 0x68"), "not allowed to sign"),
        (p11e.DeviceError(), "PKCS#11 error while signing on token 'tok': DeviceError"),
    ],
)
def test_module_errors_become_one_line(error: p11e.PKCS11Error, says: str) -> None:
    mapped = hsm._mapped(error, "signing", "tok")
    assert says in one_line(mapped)


# --- keys on the token ---------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_generate_sign_verify(token: SoftToken, key_type: str) -> None:
    source = pins()
    with generate_on_token(
        token.uri("root-key"), role="root", key_type=key_type, pins=source
    ) as key:
        assert key.label == "root-key"
        assert len(key.key_id) == 16
        assert key.uri.id == key.key_id
        public = key.public_dict()
        if key_type == "ed25519":
            assert public["keytype"] == public["scheme"] == "ed25519"
            assert len(bytes.fromhex(public["keyval"]["public"])) == 32
        else:
            assert public["keytype"] == public["scheme"] == "ecdsa-sha2-nistp256"
            assert public["keyval"]["public"].startswith("-----BEGIN PUBLIC KEY-----\n")
            assert public["keyval"]["public"].endswith("-----END PUBLIC KEY-----\n")
        assert public["keyid_hash_algorithms"] == ["sha256", "sha512"]
        payload = b'{"_type":"root","version":1}'
        signer = key.signer()
        sig = signer.sign(payload)
        assert sig.keyid == key.gotuf_keyid == signer.public_key.keyid
        key.sslib_key().verify_signature(sig, payload)
        if key_type == "ecdsa-p256":
            r, s = decode_dss_signature(bytes.fromhex(sig.signature))  # DER, not r || s
            assert r > 0 and s > 0
        with pytest.raises(UnverifiedSignatureError):
            key.sslib_key().verify_signature(sig, payload + b" ")
        assert key.signer("abc").sign(payload).keyid == "abc"

    # the private key never leaves the token
    objects = token.pkcs11_tool("--list-objects", "--type", "privkey").stdout
    assert "never extractable" in objects
    assert "always sensitive" in objects


def test_read_public_key_needs_no_pin(token: SoftToken) -> None:
    with generate_on_token(token.uri("root-key"), role="root", pins=pins()) as made:
        expected = made.gotuf_keyid
    with HsmKey.open(token.uri("root-key"), role="root", pins=no_pins()) as key:
        assert key.gotuf_keyid == expected
        assert key.public_dict()["keytype"] == "ecdsa-sha2-nistp256"
        with pytest.raises(PackagerError) as err:
            key.signer().sign(b"x")  # signing does need it
        assert "FLEET_ROOT_PIN" in one_line(err.value)
    # the same key by its ID alone, and by the ID with PIV-style labels on each object
    with HsmKey.open(token.uri(key_id=made.key_id), role="root", pins=pins()) as by_id:
        assert by_id.gotuf_keyid == expected
        by_id.sslib_key().verify_signature(by_id.signer().sign(b"x"), b"x")
    uri = token.uri("Private key for Digital Signature", key_id=made.key_id, extra=";type=private")
    with HsmKey.open(uri, role="root", pins=pins()) as piv:
        assert piv.gotuf_keyid == expected


def test_pin_from_environment(token: SoftToken, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    monkeypatch.setenv("FLEET_ROOT_PIN", USER_PIN)
    with HsmKey.open(token.uri("root-key"), role="root") as key:  # default PinSource: os.environ
        sig = key.signer().sign(b"payload")
        key.sslib_key().verify_signature(sig, b"payload")


def test_pin_prompted_once_per_token(token: SoftToken) -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return USER_PIN

    source = PinSource(environ={}, prompt=prompt, terminal_available=lambda: True)
    with generate_on_token(token.uri("root-key"), role="root", pins=source) as key:
        key.signer().sign(b"a")
        key.signer().sign(b"b")
    assert len(asked) == 1
    assert "fleet-root" in asked[0]


def test_wrong_pin(token: SoftToken) -> None:
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    with HsmKey.open(token.uri("root-key"), role="root", pins=pins(FLEET_ROOT_PIN="97531")) as key:
        with pytest.raises(PackagerError) as err:
            key.signer().sign(b"x")
        text = one_line(err.value)
        assert "wrong PIN for token 'fleet-root'" in text
        assert "FLEET_ROOT_PIN" in text
        assert "97531" not in text
        assert err.value.__cause__ is None and err.value.__suppress_context__
    # the failed login left nothing behind: the right PIN works afterwards
    with HsmKey.open(token.uri("root-key"), role="root", pins=pins()) as key:
        key.sslib_key().verify_signature(key.signer().sign(b"x"), b"x")


def test_a_pin_that_is_not_utf8_is_asked_again(token: SoftToken) -> None:
    """A typed PIN that is not UTF-8 (a terminal in another encoding) is refused in one line and
    forgotten: the next signature asks again instead of failing on the cached PIN."""
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    answers = iter(["12\udcff34", USER_PIN])
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return next(answers)

    source = PinSource(environ={}, prompt=prompt, terminal_available=lambda: True)
    with HsmKey.open(token.uri("root-key"), role="root", pins=source) as key:
        with pytest.raises(PinError, match=r"^the PIN for token 'fleet-root' is not valid UTF-8"):
            key.signer().sign(b"x")
        key.sslib_key().verify_signature(key.signer().sign(b"x"), b"x")
    assert len(asked) == 2


def test_a_token_error_while_signing_metadata_is_its_own_line(token: SoftToken) -> None:
    """python-tuf wraps whatever a signer raises in UnsignedMetadataError; a token's one-line
    error (here a wrong PIN) is what reaches the user, never the wrapper."""
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    md = Metadata(Timestamp(version=1, spec_version=SPEC_VERSION, expires=expires))
    wrong = pins(FLEET_ROOT_PIN="97531")
    with (
        HsmKey.open(token.uri("root-key"), role="root", pins=wrong) as key,
        pytest.raises(PinError) as err,
    ):
        sign(md, [key.signer()])
    assert "wrong PIN for token 'fleet-root'" in one_line(err.value)


def test_wrong_pin_through_the_command_line_process(token: SoftToken, tmp_path: Path) -> None:
    """In a child process, as the CLI will run: one line on stderr, exit 2, PIN nowhere."""
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    script = (
        "import sys\n"
        "from packager.errors import PackagerError\n"
        "from packager.repo.hsm import HsmKey\n"
        "try:\n"
        "    with HsmKey.open(sys.argv[1], role='root') as key:\n"
        "        key.signer().sign(b'x')\n"
        "except PackagerError as exc:\n"
        "    print(f'error: {exc}', file=sys.stderr)\n"
        "    sys.exit(exc.exit_code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, token.uri("root-key")],
        env={**token.env, "FLEET_ROOT_PIN": "86420"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "wrong PIN for token 'fleet-root'" in proc.stderr
    assert "86420" not in proc.stderr + proc.stdout


def test_missing_token_label(token: SoftToken) -> None:
    init_token(token.conf, "fleet-spare")
    uri = token.uri("root-key").replace("token=fleet-root", "token=nope")
    with pytest.raises(PackagerError) as err:
        HsmKey.open(uri, role="root", pins=no_pins())
    text = one_line(err.value)
    assert "no token labelled 'nope'" in text
    assert "'fleet-root'" in text and "'fleet-spare'" in text
    # without token=, two tokens are ambiguous
    with pytest.raises(PackagerError, match="2 tokens match"):
        HsmKey.open(f"pkcs11:object=root-key?module-path={MODULE}", role="root", pins=no_pins())


def test_missing_object(token: SoftToken) -> None:
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    generate_on_token(token.uri("other-key"), role="root", pins=pins()).close()
    with pytest.raises(PackagerError) as err:
        HsmKey.open(token.uri("nope"), role="root", pins=no_pins())
    text = one_line(err.value)
    assert "no key 'nope' on token 'fleet-root'" in text
    assert "'root-key'" in text and "'other-key'" in text
    with pytest.raises(UsageError, match="names no key"):
        HsmKey.open(token.uri(), role="root", pins=no_pins())


def test_missing_module_path(token: SoftToken) -> None:
    with pytest.raises(UsageError) as err:
        HsmKey.open("pkcs11:token=fleet-root;object=root-key", role="root", pins=no_pins())
    assert "module-path" in one_line(err.value)


def test_module_path_from_environment(token: SoftToken, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    monkeypatch.setenv(hsm.MODULE_ENV, str(MODULE))
    with HsmKey.open("pkcs11:token=fleet-root;object=root-key", role="root", pins=pins()) as key:
        assert key.uri.module_path == str(MODULE)


def test_module_missing_or_not_loadable(tmp_path: Path) -> None:
    with pytest.raises(PackagerError) as err:
        HsmKey.open("pkcs11:token=a;object=b?module-path=/nonexistent/p11.so", role="root")
    assert "/nonexistent/p11.so does not exist" in one_line(err.value)
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a shared object")
    with pytest.raises(PackagerError) as err:
        HsmKey.open(f"pkcs11:token=a;object=b?module-path={junk}", role="root")
    assert f"cannot load PKCS#11 module {junk}" in one_line(err.value)


def test_key_made_by_pkcs11_tool(token: SoftToken) -> None:
    """A key an administrator made with OpenSC's pkcs11-tool signs as well."""
    token.pkcs11_tool("--keypairgen", "--key-type", "EC:prime256v1", "--label", "admin", "--id", "0a",
                      "--usage-sign")  # fmt: skip
    with HsmKey.open(token.uri("admin"), role="root", pins=pins()) as key:
        assert key.key_id == b"\x0a"
        key.sslib_key().verify_signature(key.signer().sign(b"data"), b"data")


def test_key_not_for_signing(token: SoftToken) -> None:
    lib = pkcs11.lib(str(MODULE))  # a key pair made for key agreement only (CKA_SIGN false)
    try:
        with lib.get_token(token_label=token.label).open(rw=True, user_pin=token.pin) as session:
            session.generate_keypair(
                pkcs11.KeyType.EC, store=True, label="derive", id=b"\x0b",
                capabilities=pkcs11.MechanismFlag.DERIVE,
                public_template={pkcs11.Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")},
            )  # fmt: skip
    finally:
        lib.finalize()
    with HsmKey.open(token.uri("derive"), role="root", pins=pins()) as key:
        with pytest.raises(PackagerError) as err:
            key.signer().sign(b"x")
        assert "not allowed to sign" in one_line(err.value)


@pytest.mark.parametrize(("spec", "named"), [("EC:secp384r1", "P-384"), ("rsa:2048", "RSA")])
def test_unsupported_key_type(token: SoftToken, spec: str, named: str) -> None:
    token.pkcs11_tool("--keypairgen", "--key-type", spec, "--label", "odd", "--id", "0c")
    with pytest.raises(PackagerError) as err:
        HsmKey.open(token.uri("odd"), role="root", pins=no_pins())
    text = one_line(err.value)
    assert named in text
    assert "ECDSA P-256" in text


def test_certificate_instead_of_public_key(token: SoftToken, tmp_path: Path) -> None:
    """A token that shows only the private key and a certificate (as many PIV setups do)."""
    with generate_on_token(token.uri("root-key"), role="root", pins=pins()) as made:
        expected, key_id = made.gotuf_keyid, made.key_id
        public = serialization.load_pem_public_key(made.public_dict()["keyval"]["public"].encode())
    issuer = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet root")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(issuer, hashes.SHA256())
    )
    der = tmp_path / "cert.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    token.pkcs11_tool("--delete-object", "--type", "pubkey", "--id", key_id.hex())
    token.pkcs11_tool("--write-object", str(der), "--type", "cert", "--id", key_id.hex(),
                      "--label", "root-key")  # fmt: skip
    with HsmKey.open(token.uri("root-key"), role="root", pins=pins()) as key:
        assert key.gotuf_keyid == expected
        key.sslib_key().verify_signature(key.signer().sign(b"x"), b"x")


def test_generate_refuses_an_existing_label(token: SoftToken) -> None:
    generate_on_token(token.uri("root-key"), role="root", pins=pins()).close()
    with pytest.raises(PackagerError, match="already holds an object labelled 'root-key'"):
        generate_on_token(token.uri("root-key"), role="root", pins=pins())
    with pytest.raises(UsageError, match="object=LABEL"):
        generate_on_token(token.uri(), role="root", pins=pins())
    with pytest.raises(UsageError, match="key type"):
        generate_on_token(token.uri("x"), role="root", key_type="rsa", pins=pins())


# --- key IDs: go-tuf's ---------------------------------------------------------------------------

# go-tuf v0.5.2's own IDs (data.PublicKey.IDs(), computed by the Go program below) of two fixed
# public keys: the P-256 key with private scalar 0x1234...ef and the Ed25519 key of seed 0..31.
KNOWN_P256_SCALAR = 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF
KNOWN_ED25519_SEED = bytes(range(32))
KNOWN_IDS = {
    "ecdsa-p256": "d221668f8c1aa9eafabd982aeff06dfc7223b6aa0212eea09be06106062c50a7",
    "ed25519": "607f42135d7855e1145188a58aaf4c055fec1edbd7041680576e486f7ea574d1",
}


def _import_public(token: SoftToken, key_type: str) -> None:
    """Put the fixed public key of ``key_type`` on the token, labelled "known" (id 05)."""
    point: bytes
    if key_type == "ed25519":
        params, kind = bytes.fromhex("06032b6570"), pkcs11.KeyType.EC_EDWARDS
        point = (
            Ed25519PrivateKey.from_private_bytes(KNOWN_ED25519_SEED)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    else:
        params, kind = bytes.fromhex("06082a8648ce3d030107"), pkcs11.KeyType.EC
        point = (
            ec.derive_private_key(KNOWN_P256_SCALAR, ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
    lib = pkcs11.lib(str(MODULE))
    try:
        with lib.get_token(token_label=token.label).open(rw=True, user_pin=token.pin) as session:
            session.create_object({
                pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
                pkcs11.Attribute.KEY_TYPE: kind,
                pkcs11.Attribute.TOKEN: True,
                pkcs11.Attribute.LABEL: "known",
                pkcs11.Attribute.ID: b"\x05",
                pkcs11.Attribute.EC_PARAMS: params,
                pkcs11.Attribute.EC_POINT: bytes([4, len(point)]) + point,  # DER OCTET STRING
            })  # fmt: skip
    finally:
        lib.finalize()


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_known_key_ids(token: SoftToken, key_type: str, tmp_path: Path) -> None:
    _import_public(token, key_type)
    with HsmKey.open(token.uri("known"), role="root", pins=no_pins()) as key:
        assert key.gotuf_keyid == KNOWN_IDS[key_type]
        assert key.sslib_key().keyid == KNOWN_IDS[key_type]


KEYID_GO = """\
// Prints go-tuf's key IDs (data.PublicKey.IDs) of the public keys given as a JSON array on
// stdin, after go-tuf accepted each (keys.GetVerifier).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/theupdateframework/go-tuf/data"
	"github.com/theupdateframework/go-tuf/pkg/keys"
)

func main() {
	var in []*data.PublicKey
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := []string{}
	for _, k := range in {
		if _, err := keys.GetVerifier(k); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out = append(out, k.IDs()[0])
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


@functools.cache
def _keyid_binary() -> Path:
    gotuf_binary()  # fails (or skips off Debian) as the go-tuf tests do when Go is missing
    go_mod = (
        (harness.SOURCE_DIR / "go.mod")
        .read_text()
        .replace("module orbit-packager/tests/gotuf", "module orbit-packager/tests/hsmkeyid")
    )
    digest = hashlib.sha256((go_mod + KEYID_GO + harness._package_version()).encode()).hexdigest()
    cache = harness._cache_root()
    binary = cache / f"hsmkeyid-{digest[:16]}" / "hsmkeyid"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        Path(tmp, "go.mod").write_text(go_mod)
        Path(tmp, "main.go").write_text(KEYID_GO)
        built = Path(tmp, "hsmkeyid")
        proc = subprocess.run(
            ["go", "build", "-o", str(built), "."],
            cwd=tmp, env=harness._go_env(cache), capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        built.replace(binary)
    return binary


def gotuf_keyids(public_dicts: list[dict[str, Any]]) -> list[str]:
    proc = subprocess.run(
        [str(_keyid_binary())], input=json.dumps(public_dicts), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ids: list[str] = json.loads(proc.stdout)
    return ids


def test_key_ids_are_gotufs(token: SoftToken, tmp_path: Path) -> None:
    keys = [
        generate_on_token(token.uri("p256"), role="root", pins=pins()),
        generate_on_token(token.uri("ed"), role="root", key_type="ed25519", pins=pins()),
    ]
    try:
        role_key = RoleKey.generate()
        dicts = [k.public_dict() for k in keys] + [role_key.public_dict()]
        assert gotuf_keyids(dicts) == [k.gotuf_keyid for k in keys] + [role_key.gotuf_keyid]
    finally:
        for k in keys:
            k.close()
    for key_type in KNOWN_IDS:
        _import_public(token, key_type)
        with HsmKey.open(token.uri("known"), role="root", pins=no_pins()) as known:
            assert gotuf_keyids([known.public_dict()]) == [KNOWN_IDS[key_type]]
        token.pkcs11_tool("--delete-object", "--type", "pubkey", "--id", "05")


# --- a TUF repository whose root key is on the token, read by go-tuf and python-tuf --------------


def _root(version: int, root_keys: list[Any], online: dict[str, RoleKey], threshold: int) -> Root:
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    root = Root(
        version=version, spec_version=SPEC_VERSION, expires=expires, consistent_snapshot=False
    )
    for key in root_keys:
        root.add_key(key.sslib_key(), "root")
    root.roles["root"].threshold = threshold
    for role, key in online.items():
        root.add_key(key.sslib_key(), role)
    return root


def _write_repo(directory: Path, roots: list[bytes], online: dict[str, RoleKey]) -> None:
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
    (directory / "targets").mkdir(parents=True)
    content = b"signed through a PKCS#11 token\n"
    (directory / "targets" / "hello.txt").write_bytes(content)
    targets = Metadata(
        Targets(
            version=1, spec_version=SPEC_VERSION, expires=expires,
            targets={"hello.txt": TargetFile(len(content), file_hash(content), "hello.txt")},
        )
    )  # fmt: skip
    sign(targets, [online["targets"].signer()])
    targets_bytes = serialize(targets)
    snapshot = Metadata(
        Snapshot(
            version=1, spec_version=SPEC_VERSION, expires=expires,
            meta={"targets.json": MetaFile(1, len(targets_bytes), file_hash(targets_bytes))},
        )
    )  # fmt: skip
    sign(snapshot, [online["snapshot"].signer()])
    snapshot_bytes = serialize(snapshot)
    timestamp = Metadata(
        Timestamp(
            version=1, spec_version=SPEC_VERSION, expires=expires,
            snapshot_meta=MetaFile(1, len(snapshot_bytes), file_hash(snapshot_bytes)),
        )
    )  # fmt: skip
    sign(timestamp, [online["timestamp"].signer()])
    for version, raw in enumerate(roots, start=1):
        (directory / f"{version}.root.json").write_bytes(raw)
    (directory / "root.json").write_bytes(roots[-1])
    (directory / "targets.json").write_bytes(targets_bytes)
    (directory / "snapshot.json").write_bytes(snapshot_bytes)
    (directory / "timestamp.json").write_bytes(serialize(timestamp))


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_gotuf_trusts_a_root_signed_on_the_token(
    token: SoftToken, tmp_path: Path, key_type: str
) -> None:
    gotuf = gotuf_binary()
    online = {role: RoleKey.generate() for role in ("targets", "snapshot", "timestamp")}
    source = pins()
    first = generate_on_token(token.uri("root-1"), role="root", key_type=key_type, pins=source)
    second = generate_on_token(token.uri("root-2"), role="root", key_type=key_type, pins=source)
    with first, second:
        assert gotuf_keyids([first.public_dict(), second.public_dict()]) == [
            first.gotuf_keyid,
            second.gotuf_keyid,
        ]
        root_v1 = Metadata(_root(1, [first], online, 1))
        sign(root_v1, [first.signer()])
        v1 = serialize(root_v1)
        assert json.loads(v1)["signed"]["keys"][first.gotuf_keyid]["keytype"] == (
            "ed25519" if key_type == "ed25519" else "ecdsa-sha2-nistp256"
        )
        # rotation: v2 trusts only the second key, signed by the old and the new one
        root_v2 = Metadata(_root(2, [second], online, 1))
        sign(root_v2, [first.signer(), second.signer()])
        v2 = serialize(root_v2)
        # the same v2 signed by the new key alone: a client trusting v1 must refuse it
        sign(root_v2, [second.signer()])
        v2_new_only = serialize(root_v2)

    repo_v1 = tmp_path / "repo-v1"
    _write_repo(repo_v1, [v1], online)
    repo_v2 = tmp_path / "repo-v2"
    _write_repo(repo_v2, [v1, v2], online)
    repo_bad = tmp_path / "repo-bad"
    _write_repo(repo_bad, [v1, v2_new_only], online)

    for repo, root_version in ((repo_v1, 1), (repo_v2, 2)):
        with serve(repo) as url:
            out = client_targets(gotuf, url, v1)
            assert out["versions"]["root"] == root_version
            assert set(out["targets"]) == {"hello.txt"}
            fetched = client_fetch_all(url, v1)  # python-tuf's ngclient agrees
            assert set(fetched) == {"hello.txt"}
    with serve(repo_bad) as url:
        proc = run_client(gotuf, url, v1, check=False)
        assert proc.returncode != 0
        assert "valid signatures did not meet threshold" in proc.stderr


@pytest.mark.parametrize("text", ["file://pin-value=4711", "pkcs1://pin-value=4711"])
def test_not_a_pkcs11_uri_is_said_first(text: str) -> None:
    """Anything not starting with 'pkcs11:' is refused as such, before its parts are read."""
    with pytest.raises(UsageError) as err:
        Pkcs11Uri.parse(text, environ={})
    assert str(err.value) == "invalid PKCS#11 URI: it must start with 'pkcs11:'"
