"""Reading, verifying and writing the four top-level TUF roles.

python-tuf's Metadata API is the model. Two things are added for repositories made by fleetctl:

* go-tuf writes ``expires`` in the signing machine's local zone (``...-03:00``) and python-tuf
  refuses anything but ``...Z``. We parse such files by normalising ``expires`` to UTC for the
  object while verifying signatures over the canonical bytes *as signed*, and remember the
  original so ``status`` can say which role must be re-signed.
* Signatures are checked against the bytes on disk, not a re-serialisation, so any field python-tuf
  would drop or reorder cannot make a bad file look good.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from securesystemslib.formats import encode_canonical
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from packager.errors import CorruptRepositoryError, PackagerError

ROLES = ("root", "targets", "snapshot", "timestamp")
SPEC_VERSION = "1.0"  # what go-tuf (fleetctl) writes; python-tuf reads X.Y with major 1
HASH_ALGORITHM = "sha512"  # go-tuf's only default; Orbit prefers sha512


def canonical(value: Any) -> bytes:
    """Canonical JSON (what TUF signatures cover)."""
    text = encode_canonical(value)
    if text is None:  # only when an output callback is given, which we never pass
        raise ValueError("canonical encoding failed")
    return text.encode()


def utc_z(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LoadedMetadata:
    """A role file as read from disk."""

    md: Metadata[Any]
    raw: bytes
    signed_canonical: bytes
    original_expires: str | None = None  # set when the file's expires is not UTC 'Z'

    @property
    def version(self) -> int:
        return int(self.md.signed.version)

    @property
    def expires(self) -> datetime:
        return self.md.signed.expires  # type: ignore[no-any-return]


def parse(raw: bytes, role: str, source: str) -> LoadedMetadata:
    """Parse a role file; raise CorruptRepositoryError with ``source`` on any defect."""
    try:
        doc = json.loads(raw)
        signed = doc["signed"]
        if signed.get("_type") != role:
            raise ValueError(f"_type is {signed.get('_type')!r}, expected {role!r}")
        signed_canonical = canonical(signed)
        original: str | None = None
        expires = signed.get("expires")
        if isinstance(expires, str) and not expires.endswith("Z"):
            parsed = datetime.fromisoformat(expires)
            if parsed.tzinfo is None:
                raise ValueError(f"expires {expires!r} has no time zone")
            original = expires
            doc = {**doc, "signed": {**signed, "expires": utc_z(parsed)}}
        md = Metadata.from_dict(doc)
    except CorruptRepositoryError:
        raise
    except Exception as exc:  # any parse defect becomes one clear line
        raise CorruptRepositoryError(f"{source} is not valid TUF {role} metadata: {exc}") from None
    return LoadedMetadata(
        md=md, raw=raw, signed_canonical=signed_canonical, original_expires=original
    )


def verify_signed_by(
    delegator: Root, role: str, loaded: LoadedMetadata, source: str, *, what: str = ""
) -> None:
    """Raise CorruptRepositoryError unless ``loaded`` meets the threshold ``delegator`` sets."""
    try:
        delegator.verify_delegate(role, loaded.signed_canonical, loaded.md.signatures)
    except UnsignedMetadataError as exc:
        raise CorruptRepositoryError(
            f"{source} does not verify{what}: {exc}",
            hint="restore it from a backup or re-sign it with the right key",
        ) from None


def serialize(md: Metadata[Any]) -> bytes:
    """Compact JSON, as go-tuf writes (signatures cover the canonical form, not these bytes)."""
    return md.to_bytes(JSONSerializer(compact=True))


def sign(md: Metadata[Any], signers: list[Any]) -> None:
    """Replace all signatures of ``md`` with one from each signer."""
    md.signatures.clear()
    for signer in signers:
        try:
            md.sign(signer, append=True)
        except UnsignedMetadataError as exc:
            # python-tuf wraps whatever the signer raised; a token's one-line error (wrong PIN,
            # token gone) is what the user must see.
            if isinstance(exc.__cause__, PackagerError):
                raise exc.__cause__ from None
            raise


def file_hash(data: bytes) -> dict[str, str]:
    return {HASH_ALGORITHM: hashlib.new(HASH_ALGORITHM, data).hexdigest()}
