"""TUF signing keys in hardware (YubiKey, Nitrokey, SmartCard-HSM, CloudHSM, SoftHSM) via PKCS#11.

A key is named by an RFC 7512 URI such as
``pkcs11:token=fleet;object=root?module-path=/usr/lib/x86_64-linux-gnu/libykcs11.so``.
The public key is read without a PIN (the ``CKO_PUBLIC_KEY`` object with the same ID or label,
else the certificate of a token that only holds the private key and a certificate); the token is
logged in only to sign, one short session per signature, closed on every path.

Keys look like go-tuf's (fleetctl's) own: ``ecdsa-sha2-nistp256`` with a PEM (PKIX) public key and
ASN.1 DER signatures over SHA-256, or ``ed25519`` with a hex public key, and go-tuf's key ID
(sha256 over the canonical JSON of the public key including ``keyid_hash_algorithms``). The
SHA-256 digest is computed here and the token signs it with ``CKM_ECDSA``, what PIV tokens such
as the YubiKey support; the token's raw ``r || s`` is converted to DER. Ed25519 keys sign with
``CKM_EDDSA`` where the token has it (SoftHSM2 2.6 does; most PIV tokens do not).

PINs come from ``FLEET_<ROLE>_PIN`` or a prompt on the terminal, never from the URI (a PIN in
argv is visible in ``ps``) and never from standard input. No PIN ever reaches a message.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e
from securesystemslib.signer import Key, Signature, Signer, SSlibKey

from packager.errors import PackagerError, UsageError
from packager.repo.keys import KEYID_HASH_ALGORITHMS
from packager.repo.metadata import canonical
from packager.repo.passphrase import has_terminal, tty_prompt

MODULE_ENV = "ORBIT_PACKAGER_PKCS11_MODULE"
ECDSA_P256 = "ecdsa-sha2-nistp256"
ED25519 = "ed25519"
KEY_TYPES = ("ecdsa-p256", "ed25519")  # what generate_on_token makes
MAX_PIN_ATTEMPTS = 3

# DER of the EC parameters (named curves) a token reports in CKA_EC_PARAMS
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")
_CURVE_NAMES = {
    bytes.fromhex("06052b81040022"): "P-384",
    bytes.fromhex("06052b81040023"): "P-521",
    bytes.fromhex("06052b8104000a"): "secp256k1",
    bytes.fromhex("06032b6571"): "Ed448",
    b"\x13\x0aedwards448": "Ed448",
}
_SUPPORTED = "only ECDSA P-256 and Ed25519 keys can sign metadata Orbit (go-tuf) verifies"


class HsmError(PackagerError):
    """A PKCS#11 module, token or key problem (exit code 2)."""


class PinError(HsmError):
    """No PIN could be obtained, or the token refused it."""


def is_pkcs11_uri(value: str) -> bool:
    """True when ``value`` is meant as a PKCS#11 URI (and not as a key file path)."""
    return value[:7].lower() == "pkcs11:"


# --- RFC 7512 URIs -------------------------------------------------------------------------------

_UNRESERVED = "A-Za-z0-9\\-._~"
_RES = ":\\[\\]@!$'()*+,="
_PATH_VALUE = re.compile(f"(?:[{_UNRESERVED}{_RES}&]|%[0-9A-Fa-f]{{2}})*")
_QUERY_VALUE = re.compile(f"(?:[{_UNRESERVED}{_RES}/?|]|%[0-9A-Fa-f]{{2}})*")
_NAME = re.compile("[A-Za-z0-9_-]+")
_PATH_ATTRS = ("token", "manufacturer", "model", "serial", "object", "type", "id")
_UNSUPPORTED_PATH = (
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
    "slot-id",
)
_TYPES = ("private", "public", "cert", "secret-key", "data")


def _uri_error(message: str, hint: str | None = None) -> UsageError:
    return UsageError(f"invalid PKCS#11 URI: {message}", hint=hint)


def _pct_decode(raw: str, name: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                raise _uri_error(f"attribute {name!r} has a bad percent-encoding")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(ord(raw[i]))
            i += 1
    return bytes(out)


def _pct_encode(value: bytes, safe: str) -> str:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~" + safe)
    return "".join(chr(b) if chr(b) in allowed else f"%{b:02X}" for b in value)


def _text(raw: str, name: str) -> str:
    try:
        return _pct_decode(raw, name).decode("utf-8")
    except UnicodeDecodeError:
        raise _uri_error(f"attribute {name!r} is not UTF-8 text once decoded") from None


def _split(part: str, sep: str, pattern: re.Pattern[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not part:
        return out
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq:
            label = name if _NAME.fullmatch(name) else "(unnamed)"
            raise _uri_error(f"{where} attribute {label!r} has no '=value'")
        if not _NAME.fullmatch(name):
            raise _uri_error(f"{where} has an attribute with a bad or empty name")
        if name in out:
            raise _uri_error(f"attribute {name!r} appears twice")
        if not pattern.fullmatch(value):
            raise _uri_error(
                f"attribute {name!r} holds characters that must be percent-encoded",
                hint="e.g. %20 for a space, %3B for ';'",
            )
        out[name] = value
    return out


@dataclass(frozen=True)
class Pkcs11Uri:
    """A key named by an RFC 7512 URI; ``module_path`` is the PKCS#11 library to load."""

    token: str | None
    object: str | None
    id: bytes | None
    serial: str | None
    module_path: str | None
    manufacturer: str | None = None
    model: str | None = None
    type: str | None = None

    @classmethod
    def parse(cls, text: str, *, environ: Mapping[str, str] | None = None) -> Pkcs11Uri:
        """Parse ``text``; UsageError (one line, never echoing the URI) when malformed.

        Without ``module-path`` the module is ``$ORBIT_PACKAGER_PKCS11_MODULE``."""
        env = os.environ if environ is None else environ
        if not is_pkcs11_uri(text):
            raise _uri_error("it must start with 'pkcs11:'")
        # refused before anything else, so no part of a PIN is ever parsed or shown
        for item in re.split("[;&?]", text[7:]):
            attr = item.partition("=")[0]
            if attr in ("pin-value", "pin-source"):
                raise _uri_error(
                    f"{attr} is refused: a PIN on the command line is visible to every user in ps",
                    hint="remove it and set FLEET_<ROLE>_PIN (e.g. FLEET_ROOT_PIN), "
                    "or type the PIN at the prompt",
                )
        path_part, _, query_part = text[7:].partition("?")
        query = _split(query_part, "&", _QUERY_VALUE, "query")
        path = _split(path_part, ";", _PATH_VALUE, "path")
        for name in path:
            if name in _UNSUPPORTED_PATH or name.startswith("x-"):
                raise _uri_error(
                    f"attribute {name!r} is not supported",
                    hint="name the token with token= (and serial=), the key with object= or id=",
                )
            if name not in _PATH_ATTRS:
                raise _uri_error(f"unknown path attribute {name!r}")
        for name in query:
            if name == "module-name":
                raise _uri_error(
                    "attribute 'module-name' is not supported",
                    hint="use module-path=/absolute/path/to/the/module.so",
                )
            if name != "module-path":
                raise _uri_error(f"unknown query attribute {name!r}")
        texts = {name: _text(value, name) for name, value in path.items() if name != "id"}
        key_type = texts.get("type")
        if key_type is not None and key_type not in _TYPES:
            raise _uri_error(
                f"attribute 'type' is {key_type!r}", hint="use private, public or cert"
            )
        if key_type in ("secret-key", "data"):
            raise _uri_error(
                f"type={key_type} names no key pair", hint="use type=private or leave type out"
            )
        if "module-path" in query:
            module: str | None = _text(query["module-path"], "module-path")
            source = "module-path"
        else:
            module = env.get(MODULE_ENV) or None
            source = MODULE_ENV
            if module is None:
                raise _uri_error(
                    "no PKCS#11 module given",
                    hint=f"add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV}",
                )
        if not module or not module.startswith("/"):
            raise _uri_error(
                f"{source} must be an absolute path", hint="e.g. /usr/lib/softhsm/libsofthsm2.so"
            )
        return cls(
            token=texts.get("token"),
            object=texts.get("object"),
            id=_pct_decode(path["id"], "id") if "id" in path else None,
            serial=texts.get("serial"),
            module_path=module,
            manufacturer=texts.get("manufacturer"),
            model=texts.get("model"),
            type=key_type,
        )

    def to_text(self) -> str:
        """The URI as text (module-path included), e.g. to print after keygen."""
        safe = ":[]@!$'()*+,=&"
        parts = []
        for name, value in (
            ("token", self.token),
            ("manufacturer", self.manufacturer),
            ("model", self.model),
            ("serial", self.serial),
            ("object", self.object),
            ("type", self.type),
        ):
            if value is not None:
                parts.append(f"{name}={_pct_encode(value.encode(), safe)}")
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        text = "pkcs11:" + ";".join(parts)
        if self.module_path is not None:
            text += "?module-path=" + _pct_encode(self.module_path.encode(), "/:[]@!$'()*+,=?|")
        return text

    def describe(self) -> str:
        """The key, for messages: ``'root' (id 0102)``."""
        bits = []
        if self.object is not None:
            bits.append(repr(self.object))
        if self.id is not None:
            bits.append(f"(id {self.id.hex() or 'empty'})")
        return " ".join(bits) or "(no object= or id=)"


# --- PINs ----------------------------------------------------------------------------------------


def pin_env_var(role: str) -> str:
    return f"FLEET_{role.upper()}_PIN"


class PinSource:
    """Hands out token PINs per (role, token): ``FLEET_<ROLE>_PIN``, else a terminal prompt.

    A set but empty variable is refused; with neither a variable nor a terminal it fails at once
    naming the variable (never reads standard input). ``repr`` never shows a PIN."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        prompt: Callable[[str], str] | None = None,
        terminal_available: Callable[[], bool] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._prompt = prompt or tty_prompt
        self._terminal_available = terminal_available or has_terminal
        self._cache: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"PinSource({len(self._cache)} cached)"

    def get(self, role: str, token_label: str) -> str:
        cached = self._cache.get((role, token_label))
        if cached is not None:
            return cached
        var = pin_env_var(role)
        if var in self._environ:
            value = self._environ[var]
            if not value:
                raise PinError(f"{var} is set but empty; empty PINs are refused")
        else:
            value = self._ask(role, token_label)
        self._cache[(role, token_label)] = value
        return value

    def source(self, role: str) -> str:
        """Where a PIN for ``role`` comes from, for messages."""
        var = pin_env_var(role)
        return var if var in self._environ else "the prompt"

    def forget(self, role: str, token_label: str) -> None:
        self._cache.pop((role, token_label), None)

    def _ask(self, role: str, token_label: str) -> str:
        var = pin_env_var(role)
        if not self._terminal_available():
            raise PinError(
                f"no terminal to ask for the PIN of token {token_label!r} ({role} key)",
                hint=f"set {var}",
            )
        for _ in range(MAX_PIN_ATTEMPTS):
            try:
                value = self._prompt(f"Enter PIN of token {token_label!r} ({role} key): ")
            except UnicodeDecodeError:
                print("The PIN is not valid text in the terminal's encoding.", file=sys.stderr)
                continue
            if value:
                return value
            print("The PIN must not be empty.", file=sys.stderr)
        raise PinError(
            f"no PIN for token {token_label!r} after {MAX_PIN_ATTEMPTS} attempts",
            hint=f"or set {var}",
        )


# --- modules -------------------------------------------------------------------------------------

_lock = threading.RLock()
_modules: dict[str, tuple[Any, int]] = {}  # module path -> (pkcs11.lib, open HsmKeys)


def _open_modules() -> dict[str, int]:
    """Module paths in use and how many keys hold each (for tests)."""
    with _lock:
        return {path: count for path, (_, count) in _modules.items()}


def _acquire(path: str) -> Any:
    with _lock:
        entry = _modules.get(path)
        if entry is not None:
            _modules[path] = (entry[0], entry[1] + 1)
            return entry[0]
        if not Path(path).is_file():
            raise HsmError(
                f"PKCS#11 module {path} does not exist",
                hint="install the token's PKCS#11 library or fix module-path in the key URI",
            )
        try:
            lib = pkcs11.lib(path)
        except p11e.PKCS11Error as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            prefix = f"OS exception while loading {path}: "
            detail = detail.removeprefix(prefix)
            raise HsmError(
                f"cannot load PKCS#11 module {path}: {detail}",
                hint="module-path must name the token vendor's PKCS#11 library (.so)",
            ) from None
        except (OSError, ValueError) as exc:
            raise HsmError(f"cannot load PKCS#11 module {path}: {exc}") from None
        _modules[path] = (lib, 1)
        return lib


def _release(path: str) -> None:
    with _lock:
        entry = _modules.get(path)
        if entry is None:
            return
        lib, count = entry
        if count > 1:
            _modules[path] = (lib, count - 1)
            return
        del _modules[path]
        with suppress(p11e.PKCS11Error):
            lib.finalize()  # closes every session this process still has on the module


def _reset_sessions(path: str) -> None:
    """Close every session on the module (C_Finalize + C_Initialize) when only one key uses it:
    a failed C_Login leaves python-pkcs11's just-opened session without a handle to close."""
    with _lock:
        entry = _modules.get(path)
        if entry is None or entry[1] != 1:
            return  # closed when the last key on the module is closed
        with suppress(p11e.PKCS11Error):
            entry[0].reinitialize()


def _token_str(value: bytes | str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.rstrip(" \0")


def _mapped(exc: p11e.PKCS11Error, doing: str, token: str) -> HsmError:
    """One line for an error of the PKCS#11 module; never carries a PIN."""
    if isinstance(exc, p11e.PinIncorrect):
        return PinError(f"wrong PIN for token {token!r}")
    if isinstance(exc, p11e.PinLocked):
        return PinError(
            f"the user PIN of token {token!r} is locked (too many wrong PINs)",
            hint="unblock it with the token's PUK or SO PIN (e.g. yubico-piv-tool -a unblock-pin)",
        )
    if isinstance(exc, (p11e.PinLenRange, p11e.PinInvalid)):
        return PinError(f"the PIN has the wrong length or characters for token {token!r}")
    if isinstance(exc, p11e.PinExpired):
        return PinError(f"the PIN of token {token!r} has expired", hint="change it first")
    if isinstance(exc, p11e.UserPinNotInitialized):
        return PinError(f"token {token!r} has no user PIN set", hint="initialize the user PIN")
    if isinstance(exc, (p11e.TokenNotPresent, p11e.DeviceRemoved)):
        return HsmError(f"token {token!r} was removed while {doing}", hint="plug it back in")
    if isinstance(exc, p11e.TokenWriteProtected):
        return HsmError(f"token {token!r} is write-protected; cannot {doing}")
    if isinstance(exc, (p11e.MechanismInvalid, p11e.FunctionNotSupported)):
        return HsmError(f"token {token!r} does not support {doing}", hint=_SUPPORTED)
    if isinstance(exc, p11e.KeyTypeInconsistent):
        return HsmError(f"the key on token {token!r} cannot be used for {doing}", hint=_SUPPORTED)
    if "0x68" in str(exc):  # CKR_KEY_FUNCTION_NOT_PERMITTED, which python-pkcs11 leaves unmapped
        return HsmError(f"the key on token {token!r} is not allowed to sign (CKA_SIGN is false)")
    return HsmError(f"PKCS#11 error while {doing} on token {token!r}: {type(exc).__name__}")


# --- public keys ---------------------------------------------------------------------------------


def _der_octets(data: bytes) -> bytes | None:
    """The contents of a DER OCTET STRING, or None when ``data`` is not exactly one."""
    if len(data) < 2 or data[0] != 0x04:
        return None
    length, body = data[1], data[2:]
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 2 or len(body) < n:
            return None
        length, body = int.from_bytes(body[:n], "big"), body[n:]
    return body if len(body) == length else None


def _ec_point(value: bytes, raw_sizes: tuple[int, ...]) -> bytes:
    """CKA_EC_POINT: DER OCTET STRING as PKCS#11 says, or the bare point some tokens return."""
    if len(value) in raw_sizes and (len(value) == 32 or value[0] in (2, 3, 4)):
        return value
    inner = _der_octets(value)
    if inner is None:
        raise ValueError("malformed CKA_EC_POINT")
    return inner


def _curve_name(params: bytes) -> str:
    return _CURVE_NAMES.get(params, f"EC parameters {params.hex()}")


def _public_from_object(obj: Any) -> ec.EllipticCurvePublicKey | Ed25519PublicKey:
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.EC:
        params = bytes(obj[Attribute.EC_PARAMS])
        if params != _P256_PARAMS:
            raise HsmError(f"the key is an ECDSA {_curve_name(params)} key", hint=_SUPPORTED)
        point = _ec_point(bytes(obj[Attribute.EC_POINT]), (65, 33))
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    if key_type == KeyType.EC_EDWARDS:
        params = bytes(obj[Attribute.EC_PARAMS])
        if params not in _ED25519_PARAMS:
            raise HsmError(f"the key is an EdDSA {_curve_name(params)} key", hint=_SUPPORTED)
        return Ed25519PublicKey.from_public_bytes(_ec_point(bytes(obj[Attribute.EC_POINT]), (32,)))
    name = getattr(key_type, "name", str(key_type))
    raise HsmError(f"the key is a {name} key", hint=_SUPPORTED)


def _public_from_certificate(der: bytes) -> ec.EllipticCurvePublicKey | Ed25519PublicKey:
    public = x509.load_der_x509_certificate(der).public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1):
            raise HsmError(f"the key is an ECDSA {public.curve.name} key", hint=_SUPPORTED)
        return public
    if isinstance(public, Ed25519PublicKey):
        return public
    raise HsmError(f"the key is a {type(public).__name__} key", hint=_SUPPORTED)


def _label(obj: Any) -> str:
    try:
        return str(obj[Attribute.LABEL])
    except p11e.PKCS11Error:
        return ""
    except UnicodeDecodeError:  # python-pkcs11 decodes labels strictly
        return "(label not UTF-8)"


def _object_id(obj: Any) -> bytes:
    try:
        return bytes(obj[Attribute.ID])
    except p11e.PKCS11Error:
        return b""


@contextmanager
def _session(token: Any) -> Iterator[Any]:
    """A read-only session on ``token``, not logged in, closed on every path."""
    session = token.open()
    try:
        yield session
    finally:
        with suppress(p11e.PKCS11Error):  # the token is gone or its module closed it already
            session.close()  # logs out too


@contextmanager
def _logged_in(
    token: Any, label: str, module: str, pins: PinSource, role: str, *, rw: bool = False
) -> Iterator[tuple[Any, str]]:
    """A session logged in with the role's PIN for ``token``, closed (logged out) on every path.

    A refused PIN is forgotten, so the next attempt asks again instead of reusing it."""
    pin = pins.get(role, label)
    try:
        pin.encode("utf-8")
    except UnicodeEncodeError:
        pins.forget(role, label)
        raise PinError(f"the PIN for token {label!r} is not valid UTF-8 text") from None
    try:
        session = token.open(rw=rw, user_pin=pin)
    except p11e.PKCS11Error as exc:
        pins.forget(role, label)
        _reset_sessions(module)
        error = _mapped(exc, "logging in", label)
        if isinstance(exc, p11e.PinIncorrect):
            error.hint = f"check {pin_env_var(role)} or the PIN typed"
            with suppress(p11e.PKCS11Error):
                if token.flags & TokenFlag.USER_PIN_FINAL_TRY:
                    error.hint += "; one more wrong PIN locks the token"
        raise error from None
    try:
        yield session, pin
    finally:
        with suppress(p11e.PKCS11Error):
            session.close()  # logs out too


@dataclass(frozen=True)
class _Found:
    token_serial: str
    label: str
    key_id: bytes
    public: ec.EllipticCurvePublicKey | Ed25519PublicKey


class HsmKey:
    """One key pair on a token, named by a URI."""

    def __init__(
        self,
        uri: Pkcs11Uri,
        role: str,
        pins: PinSource,
        lib: Any,
        token_label: str,
        found: _Found,
    ) -> None:
        self.uri = uri
        self.role = role
        self.token_label = token_label
        self.label = found.label
        self.key_id = found.key_id
        self._pins = pins
        self._lib: Any = lib
        self._public = found.public
        self._closed = False
        # how sign() finds the token again: by the label and serial found now
        self._token_uri = replace(uri, token=token_label, serial=found.token_serial)

    def __repr__(self) -> str:
        return f"HsmKey(token={self.token_label!r}, key={self.uri.describe()}, {self.keytype})"

    # -- opening

    @classmethod
    def open(cls, uri: str, *, role: str, pins: PinSource | None = None) -> HsmKey:
        """Find the key ``uri`` names and read its public key (no PIN needed)."""
        return cls._open(Pkcs11Uri.parse(uri), role=role, pins=pins)

    @classmethod
    def _open(cls, parsed: Pkcs11Uri, *, role: str, pins: PinSource | None) -> HsmKey:
        if parsed.object is None and parsed.id is None:
            raise UsageError(
                "the PKCS#11 URI names no key", hint="add object=LABEL or id=%XX to the URI"
            )
        module = str(parsed.module_path)
        lib = _acquire(module)
        try:
            token = _find_token(lib, parsed, module)
            label = _token_str(token.label)
            try:
                with _session(token) as session:
                    found = _find_public(session, parsed, label)
            except p11e.PKCS11Error as exc:
                raise _mapped(exc, "reading the public key", label) from None
            found = replace(found, token_serial=_token_str(token.serial))
            return cls(parsed, role, pins or PinSource(), lib, label, found)
        except BaseException:
            _release(module)
            raise

    def close(self) -> None:
        with _lock:
            if not self._closed:
                self._closed = True
                _release(str(self.uri.module_path))

    def __enter__(self) -> HsmKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public key

    @property
    def keytype(self) -> str:
        return ED25519 if isinstance(self._public, Ed25519PublicKey) else ECDSA_P256

    def _public_value(self) -> str:
        if isinstance(self._public, Ed25519PublicKey):
            return self._public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        pem = self._public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return pem.decode("ascii")

    def public_dict(self) -> dict[str, Any]:
        """The public key as go-tuf writes it into root.json."""
        return {
            "keytype": self.keytype,
            "scheme": self.keytype,
            "keyid_hash_algorithms": list(KEYID_HASH_ALGORITHMS),
            "keyval": {"public": self._public_value()},
        }

    @property
    def gotuf_keyid(self) -> str:
        """The key ID go-tuf (and so fleetctl) computes for this key."""
        return hashlib.sha256(canonical(self.public_dict())).hexdigest()

    def sslib_key(self, keyid: str | None = None) -> SSlibKey:
        """The public key for python-tuf metadata, under ``keyid`` (default: go-tuf's ID)."""
        return SSlibKey(
            keyid or self.gotuf_keyid,
            self.keytype,
            self.keytype,
            {"public": self._public_value()},
            {"keyid_hash_algorithms": list(KEYID_HASH_ALGORITHMS)},
        )

    def signer(self, keyid: str | None = None) -> Signer:
        """A signer whose signatures carry ``keyid`` (the ID root already lists, if any)."""
        return HsmSigner(self, self.sslib_key(keyid))

    # -- signing

    def sign_bytes(self, payload: bytes) -> bytes:
        """The signature of ``payload`` as TUF stores it (DER for ECDSA, raw for Ed25519)."""
        module = str(self.uri.module_path)
        with _lock:
            if self._closed:
                raise HsmError(f"the key {self.uri.describe()} was closed before signing")
            try:
                token = _find_token(self._lib, self._token_uri, module)
            except p11e.PKCS11Error as exc:
                raise _mapped(exc, "finding the token", self.token_label) from None
            with _logged_in(token, self.token_label, module, self._pins, self.role) as (
                session,
                pin,
            ):
                try:
                    signature = self._sign_in(session, token, payload, pin)
                except p11e.PKCS11Error as exc:
                    raise _mapped(exc, "signing", self.token_label) from None
        self._check(signature, payload)
        return signature

    def _sign_in(self, session: Any, token: Any, payload: bytes, pin: str) -> bytes:
        private = _find_private(session, self.uri, self.key_id, self.token_label)
        try:
            can_sign = bool(private[Attribute.SIGN])
        except p11e.PKCS11Error:
            can_sign = True  # unreadable: let the token decide
        if not can_sign:
            raise HsmError(
                f"the private key {self.uri.describe()} on token {self.token_label!r} is not "
                "allowed to sign (CKA_SIGN is false)",
                hint="use a key pair made for signing",
            )
        try:
            always_auth = bool(private[Attribute.ALWAYS_AUTHENTICATE])
        except p11e.PKCS11Error:
            always_auth = False
        ed = isinstance(self._public, Ed25519PublicKey)
        mechanism = Mechanism.EDDSA if ed else Mechanism.ECDSA
        try:
            supported = mechanism in token.slot.get_mechanisms()
        except p11e.PKCS11Error:
            supported = True
        if not supported:
            raise HsmError(
                f"token {self.token_label!r} cannot sign with "
                f"{'Ed25519 (CKM_EDDSA)' if ed else 'ECDSA (CKM_ECDSA)'}",
                hint="use an ECDSA P-256 key" if ed else _SUPPORTED,
            )
        data = payload if ed else hashlib.sha256(payload).digest()
        raw: bytes = private.sign(data, mechanism=mechanism, pin=pin if always_auth else None)
        if ed:
            if len(raw) != 64:
                raise HsmError(f"token {self.token_label!r} returned a malformed Ed25519 signature")
            return raw
        return _ecdsa_der(raw, self.token_label)

    def _check(self, signature: bytes, payload: bytes) -> None:
        try:
            if isinstance(self._public, Ed25519PublicKey):
                self._public.verify(signature, payload)
            else:
                self._public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise HsmError(
                f"the signature of private key {self.uri.describe()} on token "
                f"{self.token_label!r} does not match its public key",
                hint="the public key (or certificate) and private key objects differ: "
                "name the key pair by id= in the URI",
            ) from None


def _ecdsa_der(raw: bytes, token_label: str) -> bytes:
    """PKCS#11 gives ECDSA signatures as r || s (32 bytes each on P-256); TUF wants DER."""
    if len(raw) != 64:
        raise HsmError(f"token {token_label!r} returned a malformed ECDSA signature")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    return encode_dss_signature(r, s)


class HsmSigner(Signer):
    """A securesystemslib signer backed by an :class:`HsmKey`."""

    def __init__(self, key: HsmKey, public_key: SSlibKey) -> None:
        self._key = key
        self._public_key = public_key

    def __repr__(self) -> str:
        return f"HsmSigner({self._key!r}, keyid={self._public_key.keyid[:16]})"

    @property
    def public_key(self) -> Key:
        return self._public_key

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public_key.keyid, self._key.sign_bytes(payload).hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: Callable[[str], str] | None = None,
    ) -> Signer:
        raise NotImplementedError("use HsmKey.open(uri, role=...).signer()")


# --- lookups -------------------------------------------------------------------------------------


def _tokens(lib: Any) -> list[Any]:
    out = []
    for slot in lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except (p11e.TokenNotPresent, p11e.TokenNotRecognised):
            continue
        if token.flags & TokenFlag.TOKEN_INITIALIZED:
            out.append(token)
    return out


def _find_token(lib: Any, uri: Pkcs11Uri, module: str) -> Any:
    try:
        tokens = _tokens(lib)
    except p11e.PKCS11Error as exc:
        raise HsmError(
            f"cannot list the tokens of PKCS#11 module {module}: {type(exc).__name__}"
        ) from None
    wanted = {
        "token": uri.token,
        "serial": uri.serial,
        "manufacturer": uri.manufacturer,
        "model": uri.model,
    }

    def fields(token: Any) -> dict[str, str]:
        return {
            "token": _token_str(token.label),
            "serial": _token_str(token.serial),
            "manufacturer": _token_str(token.manufacturer_id),
            "model": _token_str(token.model),
        }

    matches = [t for t in tokens if all(v is None or fields(t)[k] == v for k, v in wanted.items())]
    if len(matches) == 1:
        return matches[0]
    found = ", ".join(repr(fields(t)["token"]) for t in tokens) or "none (is the token plugged in?)"
    if not matches:
        what = f"labelled {uri.token!r}" if uri.token is not None else "at all"
        if uri.token is not None and any(fields(t)["token"] == uri.token for t in tokens):
            what = f"labelled {uri.token!r} with that serial/manufacturer/model"
        raise HsmError(
            f"no token {what} in PKCS#11 module {module}; tokens found: {found}",
            hint="fix token= (or serial=) in the key URI",
        )
    serials = ", ".join(repr(fields(t)["serial"]) for t in matches)
    raise HsmError(
        f"{len(matches)} tokens match the key URI in {module} (serials {serials})",
        hint="add token= and serial= to the key URI",
    )


def _key_labels(session: Any) -> str:
    labels: list[str] = []
    for cls in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        for obj in session.get_objects({Attribute.CLASS: cls}):
            label = _label(obj) or f"(id {_object_id(obj).hex()})"
            if label not in labels:
                labels.append(label)
    return ", ".join(repr(x) for x in labels) or "none"


def _find_public(session: Any, uri: Pkcs11Uri, token_label: str) -> _Found:
    template: dict[Attribute, Any] = {}
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    # PIV tokens label the private and public key differently ("Private key for ..." vs
    # "Public key for ..."): with an ID, a label meant for the private key is not a filter.
    if uri.object is not None and (uri.id is None or uri.type in (None, "public")):
        template[Attribute.LABEL] = uri.object
    objects = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, **template}))
    certificate = False
    if not objects:
        objects = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, **template}))
        certificate = True
    if not objects:
        raise HsmError(
            f"no key {uri.describe()} on token {token_label!r}; "
            f"keys on the token (readable without PIN): {_key_labels(session)}",
            hint="fix object= or id= in the key URI",
        )
    if len(objects) > 1:
        ids = ", ".join(_object_id(o).hex() or "(none)" for o in objects)
        raise HsmError(
            f"{len(objects)} keys match {uri.describe()} on token {token_label!r} (ids {ids})",
            hint="add id= to the key URI",
        )
    obj = objects[0]
    try:
        if certificate:
            public = _public_from_certificate(bytes(obj[Attribute.VALUE]))
        else:
            public = _public_from_object(obj)
    except HsmError as exc:
        raise HsmError(
            f"key {uri.describe()} on token {token_label!r}: {exc.message}", hint=exc.hint
        ) from None
    except ValueError as exc:
        raise HsmError(
            f"cannot read the public key {uri.describe()} on token {token_label!r}: {exc}"
        ) from None
    return _Found(token_serial="", label=_label(obj), key_id=_object_id(obj), public=public)


def _find_private(session: Any, uri: Pkcs11Uri, key_id: bytes, token_label: str) -> Any:
    base = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if key_id:
        objects = list(session.get_objects({**base, Attribute.ID: key_id}))
        if len(objects) > 1 and uri.object is not None:
            objects = [o for o in objects if _label(o) == uri.object]
    elif uri.object is not None:
        objects = list(session.get_objects({**base, Attribute.LABEL: uri.object}))
    else:
        objects = []
    if not objects:
        raise HsmError(
            f"no private key for {uri.describe()} on token {token_label!r}",
            hint="the token holds only its public key or certificate: name the key pair "
            "whose private key is on the token",
        )
    if len(objects) > 1:
        raise HsmError(
            f"{len(objects)} private keys match {uri.describe()} on token {token_label!r}",
            hint="give each key pair its own id (CKA_ID)",
        )
    return objects[0]


# --- key generation ------------------------------------------------------------------------------


def generate_on_token(
    uri: str, *, role: str, key_type: str = "ecdsa-p256", pins: PinSource | None = None
) -> HsmKey:
    """Make a key pair on the token ``uri`` names, labelled ``object=`` (ID ``id=`` or random).

    The private key can sign and never leaves the token (sensitive, not extractable); the public
    key can verify. Returns the key opened (its ``uri`` carries the ID)."""
    if key_type not in KEY_TYPES:
        raise UsageError(f"unknown key type {key_type!r}", hint="use ecdsa-p256 or ed25519")
    parsed = Pkcs11Uri.parse(uri)
    if parsed.object is None:
        raise UsageError(
            "the PKCS#11 URI gives no label for the new key", hint="add object=LABEL to the URI"
        )
    if parsed.type not in (None, "private", "public"):
        raise UsageError(f"type={parsed.type} cannot name a new key pair", hint="leave type out")
    key_id = parsed.id if parsed.id else secrets.token_bytes(16)
    parsed = replace(parsed, id=key_id, type=None)
    pins = pins or PinSource()
    module = str(parsed.module_path)
    lib = _acquire(module)
    try:
        token = _find_token(lib, parsed, module)
        label = _token_str(token.label)
        with _logged_in(token, label, module, pins, role, rw=True) as (session, _):
            try:
                _generate(session, token, parsed, key_type, label)
            except p11e.PKCS11Error as exc:
                raise _mapped(exc, f"generating an {key_type} key", label) from None
        return HsmKey._open(parsed, role=role, pins=pins)
    finally:
        _release(module)


def _generate(session: Any, token: Any, uri: Pkcs11Uri, key_type: str, label: str) -> None:
    object_label = str(uri.object)
    for attr, value, what in (
        (Attribute.LABEL, object_label, f"labelled {object_label!r}"),
        (Attribute.ID, uri.id, f"with id {uri.id.hex() if uri.id else ''}"),
    ):
        if any(True for _ in session.get_objects({attr: value})):
            raise HsmError(
                f"token {label!r} already holds an object {what}",
                hint="choose another object= label (and id=), or use the existing key",
            )
    if key_type == "ed25519":
        kind, params, mechanism = (
            KeyType.EC_EDWARDS,
            _ED25519_PARAMS[0],
            (Mechanism.EC_EDWARDS_KEY_PAIR_GEN),
        )
    else:
        kind, params, mechanism = KeyType.EC, _P256_PARAMS, Mechanism.EC_KEY_PAIR_GEN
    try:
        supported = mechanism in token.slot.get_mechanisms()
    except p11e.PKCS11Error:
        supported = True
    if not supported:
        raise HsmError(
            f"token {label!r} cannot generate {key_type} keys", hint="try --key-type ecdsa-p256"
        )
    session.generate_keypair(
        kind,
        store=True,
        label=object_label,
        id=uri.id,
        mechanism=mechanism,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template={
            Attribute.EC_PARAMS: params,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: True,
        },
        private_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SIGN: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        },
    )
