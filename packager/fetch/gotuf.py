"""Reading TUF metadata the way go-tuf v0.5.2 (Fleet's Orbit agent and fleetctl) reads it.

fleetctl signs with go-tuf, which writes ``expires`` in the signing machine's local time zone
(``"2029-11-24T03:50:09-03:00"``); every fleetctl repository made outside UTC has such metadata,
root included. Orbit (go-tuf v0.5.2) accepts it. python-tuf's Metadata API only parses
``YYYY-MM-DDTHH:MM:SSZ`` and refuses such a file with a DeserializationError, and because it
verifies signatures over a re-serialisation of the parsed object, rewriting ``expires`` to UTC
before parsing would break every signature.

How go-tuf v0.5.2 checks a file (``verify.VerifySignature``): it decodes the raw ``signed``
object as published and verifies each signature over that object's canonical JSON; ``expires`` is
a ``time.Time`` parsed from RFC 3339 and compared as an instant (``time.Until(t) <= 0``).

What this module does, for the files python-tuf cannot read, and only for those:

1. The signed bytes are the canonical JSON of the ``signed`` object *as published* (the bytes
   go-tuf verifies), computed once from the raw file.
2. ``expires`` is parsed as RFC 3339 (what go-tuf's ``time.Time`` accepts: ``Z`` or ``±hh:mm``,
   optional fractional seconds) and handed to python-tuf as the same instant in UTC (fractions of
   a second dropped, so it can only expire earlier, never later).
3. python-tuf builds its model from that UTC form, and the model is checked to be exactly the
   published ``signed`` object except for how ``expires`` is written: the canonical JSON of the
   model's ``to_dict()`` must equal the canonical JSON of the published object with only
   ``expires`` replaced. So nothing python-tuf drops, reorders or defaults can make what is used
   differ from what was signed — the guarantee python-tuf's own re-serialisation gives.
4. Signatures are verified by the delegating role's ``verify_delegate`` (python-tuf's threshold,
   key IDs and signature checks) over the bytes from step 1.

Everything else stays python-tuf's: the trusted set checks types, versions (rollback), hashes and
lengths over the published bytes, and expiry against the instant from step 2. Files whose
``expires`` python-tuf reads itself (every ``...Z`` file: what our ``updates`` commands write)
go through python-tuf's own loader unchanged.

The hook: python-tuf's ``TrustedMetadataSet`` loads every file through one function chosen in its
constructor (``_load_data``); ``GoTufTrustedMetadataSet`` substitutes ``load_metadata`` for it, and
``GoTufUpdater`` is python-tuf's ``Updater`` built with that trusted set.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from securesystemslib.signer import Signature
from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, T, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig
from tuf.ngclient import updater as _updater_module
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet, _load_from_metadata
from tuf.ngclient.config import EnvelopeType

from packager.repo.metadata import canonical, utc_z

ROLES = ("root", "targets", "snapshot", "timestamp")

# RFC 3339 as Go's time.Time.UnmarshalJSON parses it (layout time.RFC3339; fractional seconds
# allowed, '.' or ','). ASCII digits only.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:[.,](?P<fraction>[0-9]+))?(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})"
)
# What python-tuf's Signed.from_dict reads itself (strptime "%Y-%m-%dT%H:%M:%SZ").
_PYTHON_TUF_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_expires(value: str) -> datetime:
    """The instant an RFC 3339 ``expires`` names, in UTC; ValueError when it is not RFC 3339."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"expires {value!r} is not an RFC 3339 time")
    try:
        moment = datetime.strptime(f"{match['date']}T{match['time']}", "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:  # a day, hour or second out of range (Go refuses those too)
        raise ValueError(f"expires {value!r} is not a valid time: {exc}") from None
    fraction = match["fraction"]
    if fraction:
        moment += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    zone = match["zone"]
    if zone == "Z":
        offset = timedelta(0)
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"expires {value!r} has an invalid UTC offset")
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    return moment.replace(tzinfo=timezone(offset)).astimezone(timezone.utc)


def python_tuf_reads(expires: object) -> bool:
    """Whether python-tuf's Metadata API parses this ``expires`` value itself."""
    if not isinstance(expires, str):
        return False
    try:
        datetime.strptime(expires, _PYTHON_TUF_FORMAT)
    except ValueError:
        return False
    return True


def _raw_expires(data: bytes) -> object:
    try:
        doc = json.loads(data)
        return doc["signed"]["expires"]
    except (ValueError, KeyError, TypeError):
        return None


def load_metadata(
    role: type[T],
    data: bytes,
    delegator: Root | Targets | None = None,
    role_name: str | None = None,
) -> tuple[T, bytes, dict[str, Signature]]:
    """python-tuf's ``_load_from_metadata``, reading go-tuf's non-UTC ``expires`` too.

    Returns (python-tuf's model, the signed bytes, signatures) as python-tuf's loader does.
    With ``delegator``, the signatures must meet its threshold for ``role_name`` (default: the
    role type) over the published bytes. Raises python-tuf's RepositoryError subclasses."""
    expires = _raw_expires(data)
    if not isinstance(expires, str) or python_tuf_reads(expires):
        return _load_from_metadata(role, data, delegator, role_name)
    try:
        instant = parse_expires(expires)
        doc = json.loads(data.decode("utf-8"))
        published = doc["signed"]
        if not isinstance(published, dict):
            raise TypeError("signed is not an object")
        signed_bytes = canonical(published)  # exactly what go-tuf verifies
        as_utc = {**published, "expires": utc_z(instant)}
        md = Metadata[T].from_dict({**doc, "signed": copy.deepcopy(as_utc)})
    except Exception as exc:  # as python-tuf's JSONDeserializer does
        raise DeserializationError(f"Failed to deserialize JSON: {exc}") from exc
    if md.signed.type != role.type:
        raise exceptions.RepositoryError(f"Expected '{role.type}', got '{md.signed.type}'")
    if canonical(md.signed.to_dict()) != canonical(as_utc):
        raise exceptions.RepositoryError(
            f"{md.signed.type} metadata does not read back as it was signed"
        )
    if delegator is not None:
        delegator.verify_delegate(role_name or role.type, signed_bytes, md.signatures)
    return md.signed, signed_bytes, md.signatures


class GoTufTrustedMetadataSet(TrustedMetadataSet):
    """python-tuf's trusted metadata set, loading every file through ``load_metadata``."""

    def _load_trusted_root(self, data: bytes) -> None:
        # TrustedMetadataSet.__init__ has just chosen its loader and loads the trusted root next.
        if self._load_data is not _load_from_metadata:
            raise ValueError("only the plain metadata envelope is supported")
        self._load_data = load_metadata
        super()._load_trusted_root(data)


_CONSTRUCT = threading.Lock()


class GoTufUpdater(Updater):
    """python-tuf's ngclient ``Updater`` whose trusted metadata set is ``GoTufTrustedMetadataSet``.

    ``Updater.__init__`` creates its trusted set by the module-level name ``TrustedMetadataSet``;
    that name is pointed at our subclass for the duration of the constructor only (under a lock),
    and the result is checked."""

    def __init__(
        self,
        metadata_dir: str,
        metadata_base_url: str,
        target_dir: str | None = None,
        target_base_url: str | None = None,
        fetcher: FetcherInterface | None = None,
        config: UpdaterConfig | None = None,
        *,
        bootstrap: bytes,
    ) -> None:
        if config is not None and config.envelope_type is not EnvelopeType.METADATA:
            raise ValueError("GoTufUpdater reads plain TUF metadata only")
        with _CONSTRUCT:
            original = _updater_module.TrustedMetadataSet
            _updater_module.TrustedMetadataSet = GoTufTrustedMetadataSet  # type: ignore[misc]
            try:
                super().__init__(
                    metadata_dir,
                    metadata_base_url,
                    target_dir,
                    target_base_url,
                    fetcher,
                    config,
                    bootstrap=bootstrap,
                )
            finally:
                _updater_module.TrustedMetadataSet = original  # type: ignore[misc]
        if type(self._trusted_set) is not GoTufTrustedMetadataSet:
            raise RuntimeError("this python-tuf version builds its trusted set differently")


# -- what `verify` reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class NonUtcExpires:
    role: str
    expires: str  # as written in the trusted file


def non_utc_roles(metadata_dir: Path) -> list[NonUtcExpires]:
    """The trusted top-level roles in ngclient's ``metadata_dir`` whose ``expires`` is not UTC
    ``...Z`` (written by fleetctl/go-tuf on a machine not set to UTC)."""
    out = []
    for role in ROLES:
        try:
            expires = json.loads((metadata_dir / f"{role}.json").read_bytes())["signed"]["expires"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(expires, str) and not python_tuf_reads(expires):
            out.append(NonUtcExpires(role, expires))
    return out


def non_utc_warning(metadata_dir: Path) -> str | None:
    """One line naming the roles written outside UTC, or None."""
    found = non_utc_roles(metadata_dir)
    if not found:
        return None
    names = ", ".join(f"{r.role}.json ({r.expires})" for r in found)
    return (
        f"expires written outside UTC in {names}: Orbit and orbit-packager accept it, other "
        "python-tuf clients do not; `orbit-packager updates` re-signs in UTC"
    )
