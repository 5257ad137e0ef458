"""A TUF client for Fleet update repositories: python-tuf's ngclient plus a verified cache,
offline mode and one clear line for every failure.

Cache layout (default ``$XDG_CACHE_HOME/orbit-packager``)::

    metadata/<key>/          ngclient's metadata dir; <key> = hash of update URL and trusted root
    targets/<sha512>         target files by content hash, re-verified against metadata on use

Keying metadata by the trusted root as well as the URL keeps a re-initialized repository at the
same URL from tripping rollback protection against the old one's versions.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from tuf.api import exceptions
from tuf.api.metadata import Root, TargetFile
from tuf.api.serialization import DeserializationError
from tuf.ngclient import FetcherInterface, UpdaterConfig

from packager import signals
from packager.errors import PackagerError, UsageError
from packager.fetch.cache import (
    cache_name,
    copy_from_cache,
    new_private_file,
    open_cache_dir,
    private_subdir,
    remove_symlinks,
    write_private_text,
    write_verified,
)
from packager.fetch.gotuf import GoTufUpdater, load_metadata, parse_expires, python_tuf_reads
from packager.fetch.http import (
    CancelToken,
    HttpFailure,
    HttpOptions,
    RequestsFetcher,
    TransferTooSlow,
)
from packager.repo.fsutil import create_private_temp, make_dirs

FLEET_UPDATE_URL = "https://updates.fleetdm.com"
_EMBEDDED_ROOT = Path(__file__).resolve().parent.parent / "data" / "fleet-public-root-v6.json"
EXIT_FETCH = 4


class FetchError(PackagerError):
    """Metadata or a target could not be fetched or did not verify."""

    exit_code = EXIT_FETCH


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orbit-packager"


_ROOTS_HINT = "pass the root.json `orbit-packager updates roots` prints, unmodified"
_MAX_ROOTS_BYTES = 1024 * 1024


def load_trusted_root(update_url: str, update_roots: str | None) -> bytes:
    """The trusted root: ``--update-roots`` (JSON or a file path), or Fleet's embedded root.

    The root is checked here as the client will load it (structure, fields, its own signature
    threshold), so a damaged or tampered root is a usage error naming what is wrong, never an
    internal error later."""
    if update_roots:
        text = update_roots.strip()
        source = "--update-roots (inline JSON)"
        if not text.startswith("{"):
            source = f"--update-roots file {text}"
            data = _read_roots_file(text)
        else:
            data = text.encode("utf-8", "surrogateescape")
        return check_trusted_root(data, source)
    if update_url.rstrip("/") == FLEET_UPDATE_URL:
        return _EMBEDDED_ROOT.read_bytes()
    raise UsageError(
        f"--update-roots is required for the update server {update_url}",
        hint="pass the output of `orbit-packager updates roots` for that repository",
    )


def _read_roots_file(name: str) -> bytes:
    try:
        with open(name, "rb") as f:
            data = f.read(_MAX_ROOTS_BYTES + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read --update-roots file {name}: {exc.strerror or type(exc).__name__}",
            hint="pass the path of the root.json `orbit-packager updates roots` prints",
        ) from None
    except ValueError:  # e.g. a NUL byte in the name
        raise UsageError(f"--update-roots file {name!r} is not a usable path") from None
    if len(data) > _MAX_ROOTS_BYTES:
        raise UsageError(
            f"--update-roots file {name} is larger than 1 MiB: not a root.json", hint=_ROOTS_HINT
        )
    return data


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_trusted_root(data: bytes, source: str) -> bytes:
    """``data`` as the trusted root, or a UsageError naming ``source`` and what is wrong."""

    def bad(what: str) -> UsageError:
        return UsageError(f"{source} {what}", hint=_ROOTS_HINT)

    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("is not UTF-8 text, so not a root.json") from None
    except json.JSONDecodeError as exc:
        raise bad(f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise bad("is not JSON a TUF client can read (too deeply nested or too large)") from None
    if isinstance(doc, list):
        raise UsageError(
            f"{source} holds a list of keys (old `fleetctl updates roots` output)",
            hint="pass the whole signed root.json printed by `updates roots`",
        )
    if not isinstance(doc, dict):
        raise bad(f"is a JSON {type(doc).__name__}, not a signed TUF root.json")
    signed = doc.get("signed")
    if not isinstance(signed, dict):
        what = "has no" if signed is None else "has a non-object"
        raise bad(f"{what} 'signed' field: not a signed TUF root.json")
    if signed.get("_type") != "root":
        raise bad(f"is not a TUF root.json ('_type' is {_short(repr(signed.get('_type')), 40)})")
    if not isinstance(doc.get("signatures"), list):
        raise bad("has no 'signatures' list: not a signed root.json")
    version_problem = _version_problem(signed)
    if version_problem:
        raise bad(f"{version_problem}: not a valid TUF root.json")
    try:
        raw = json.dumps(doc).encode()
        root, signed_bytes, signatures = load_metadata(Root, raw)
    except (DeserializationError, exceptions.RepositoryError, ValueError, TypeError) as exc:
        raise bad(f"is not valid TUF root metadata: {_reason(exc)}") from None
    except RecursionError:
        raise bad("is not valid TUF root metadata: too deeply nested") from None
    try:
        root.verify_delegate(Root.type, signed_bytes, signatures)
    except exceptions.UnsignedMetadataError as exc:
        raise bad(
            f"is not signed by its own root keys ({exc}, threshold not met): "
            "tampered with, or signed by other keys"
        ) from None
    except Exception as exc:  # a key python-tuf cannot use to verify
        raise bad(f"has a root key that cannot verify its signatures ({_reason(exc)})") from None
    return raw


def _version_problem(signed: dict[str, Any]) -> str | None:
    """What is wrong with a role's ``version``, if anything. python-tuf reads null as 1 and
    verifies the signature over its own rewrite of the file, so the signature of version 1
    still holds; every other reader (go-tuf in the agent, `roles()` here) sees no number."""
    version = signed.get("version")
    if type(version) is int and version >= 1:
        return None
    return f"has 'version' {_short(repr(version), 40)}, not a positive integer"


def _reason(exc: BaseException) -> str:
    """The underlying cause of a python-tuf parse error, in a few words."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, KeyError):
        return f"missing field {_short(str(cause), 60)}"
    text = str(cause).removeprefix("Failed to deserialize JSON: ")
    return _short(text) or type(cause).__name__


@dataclass(frozen=True)
class RoleInfo:
    role: str
    version: int
    expires: datetime


class _OfflineFetcher(FetcherInterface):
    """Serves ngclient only what the cache holds, so offline runs are verified like online ones."""

    def __init__(self, metadata_dir: Path) -> None:
        self.metadata_dir = metadata_dir

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        local = self.metadata_dir / name
        if name.endswith(".json") and local.is_file():
            return iter([local.read_bytes()])
        if name.endswith(".root.json"):  # no newer root known offline
            raise exceptions.DownloadHTTPError("offline", 404)
        raise NotCachedError(
            f"--offline: {name} is not in the cache (run once without --offline to fill it)"
        )


class NotCachedError(exceptions.DownloadError):
    """Offline, and the cache does not hold what is needed."""


class UpdateClient:
    """Refreshes once from the trusted root, then looks up and fetches verified targets.

    After :meth:`refresh`, :meth:`fetch_verified` may run in several threads at once (the
    metadata is only read then; ngclient's Updater is never used outside the calling thread),
    as long as no two of them write the same cache entry (packager.fetch.targets groups the
    targets by :func:`~packager.fetch.cache.cache_name`)."""

    def __init__(
        self,
        update_url: str,
        trusted_root: bytes,
        *,
        cache_dir: Path | None = None,
        http: HttpOptions | None = None,
        offline: bool = False,
    ) -> None:
        self.update_url = update_url.rstrip("/")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cache_dir is None:
            if offline:
                raise UsageError("--offline needs the cache; drop --no-cache")
            with signals.deferred():  # no signal between its creation and its finalizer
                self._tmp = tempfile.TemporaryDirectory(prefix="orbit-packager-")
            cache_dir = Path(self._tmp.name)
        # Only the caller's own cache is used, and nothing in it through a symbolic link.
        self.cache_dir = cache_dir = open_cache_dir(cache_dir)
        key = hashlib.sha256(
            self.update_url.encode() + b"\n" + hashlib.sha256(trusted_root).digest()
        ).hexdigest()[:24]
        self.metadata_dir = private_subdir(cache_dir / "metadata" / key, cache_dir)
        self.targets_dir = private_subdir(cache_dir / "targets", cache_dir)
        remove_symlinks(self.metadata_dir)
        write_private_text(self.metadata_dir / "url", self.update_url + "\n")
        self.offline = offline
        self.http = RequestsFetcher(http)
        fetcher: FetcherInterface = _OfflineFetcher(self.metadata_dir) if offline else self.http
        # python-tuf's Updater, also reading what go-tuf (Orbit) reads: see packager.fetch.gotuf
        self.updater = GoTufUpdater(
            str(self.metadata_dir),
            self.update_url + "/",
            str(self.targets_dir),
            self.update_url + "/targets/",
            fetcher=fetcher,
            config=UpdaterConfig(targets_max_length=50_000_000),
            bootstrap=trusted_root,
        )
        # After refresh(): each verified role file as fetched, and its parsed "signed" part
        # (read and parsed once: targets.json can list thousands of targets).
        self._raw: dict[str, bytes] = {}
        self._signed: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        if self._tmp is not None:
            with signals.deferred():  # a signal does not cut the --no-cache cleanup short
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> UpdateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ----------------------------------------------------------------------------
    def refresh(self) -> None:
        if self._signed:
            return
        with self._explained():
            self.updater.refresh()
        raw: dict[str, bytes] = {}
        signed: dict[str, dict[str, Any]] = {}
        for role in ("root", "timestamp", "snapshot", "targets"):
            # The raw files are what the installers carry; roles() and targets() read them.
            raw[role] = (self.metadata_dir / f"{role}.json").read_bytes()
            signed[role] = json.loads(raw[role])["signed"]
            problem = _version_problem(signed[role])
            if problem:
                raise FetchError(
                    f"the update server's {role}.json {problem}",
                    hint="a TUF repository writes whole numbers: tampered with, or written by"
                    " a broken tool",
                )
        self._raw, self._signed = raw, signed

    def roles(self) -> list[RoleInfo]:
        self.refresh()
        out = []
        for role in ("root", "targets", "snapshot", "timestamp"):
            signed = self._signed[role]
            expires = parse_expires(signed["expires"])  # UTC, also for go-tuf's -03:00
            out.append(RoleInfo(role, int(signed["version"]), expires))
        return out

    def trusted_metadata(self) -> dict[str, bytes]:
        """The verified top-level role files, as fetched (for the agent's local store)."""
        self.refresh()
        return {
            f"{role}.json": self._raw[role] for role in ("root", "targets", "snapshot", "timestamp")
        }

    def targets(self, patterns: list[str] | None = None) -> dict[str, TargetFile]:
        """Every target path the trusted targets metadata lists (optionally glob-filtered)."""
        self.refresh()
        listed = self._signed["targets"]["targets"]
        out: dict[str, TargetFile] = {}
        for path in sorted(listed):
            if patterns and not any(fnmatch.fnmatchcase(path, p) for p in patterns):
                continue
            out[path] = TargetFile.from_dict(dict(listed[path]), path)
        return out

    def channels(self, name: str, platform: str) -> list[str]:
        prefix = f"{name}/{platform}/"
        return sorted(
            {p[len(prefix) :].split("/")[0] for p in self.targets() if p.startswith(prefix)}
        )

    def target_info(self, path: str) -> TargetFile:
        self.refresh()
        with self._explained(path):
            info = self.updater.get_targetinfo(path)
        if info is None:
            name, platform, *_ = [*path.split("/"), "", ""]
            existing = self.channels(name, platform)
            hint = (
                f"channels for {name}/{platform}: {', '.join(existing)}"
                if existing
                else f"the repository has no {name} target for {platform}"
            )
            raise FetchError(f"target {path} is not in the repository", hint=hint)
        return info

    # -- targets -----------------------------------------------------------------------------
    def fetch(self, path: str, dest: Path) -> TargetFile:
        """Write the verified target ``path`` to ``dest``, a new private file (0600), in one
        pass whose bytes are the bytes hashed: copied out of the cache and re-hashed in the same
        read, or hashed as they stream from the server (and kept in the cache as well). Nothing
        is linked to the cache, so changing a cache file later cannot change ``dest``."""
        info = self.target_info(path)
        self.fetch_verified(path, info, dest)
        return info

    def fetch_verified(
        self,
        path: str,
        info: TargetFile,
        dest: Path,
        cancel: CancelToken | None = None,
        *,
        shared: bool = False,
    ) -> None:
        """:meth:`fetch` for a target already looked up (``info``), safe to call from several
        threads at once after :meth:`refresh`. When ``cancel`` is cancelled, the copy or
        download stops within a chunk, raising :class:`~packager.fetch.http.Cancelled`, and
        leaves neither ``dest`` nor a partial cache entry behind. With ``--no-cache`` a
        download writes a (temporary) cache entry only when ``shared``: other installers of
        the run copy it from there; otherwise each byte is written once, to ``dest``."""
        make_dirs(dest.parent)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        with self._explained(path), self.http.cancellable(cancel):
            cached = self.targets_dir / cache_name(info)
            check = cancel.check if cancel is not None else None
            if copy_from_cache(cached, info, dest, path, check):
                return
            if self.offline:
                raise FetchError(
                    f"--offline: target {path} is not in the cache",
                    hint="run once without --offline to fill the cache",
                )
            self._download(path, info, dest, cached if self._tmp is None or shared else None)

    def _download(self, path: str, info: TargetFile, dest: Path, cached: Path | None) -> None:
        """Stream ``path`` from the server into ``dest`` and a new cache entry at once (none
        when ``cached`` is None), hashing as it goes; the entry replaces ``cached`` (never
        following a link there) once it verified, and nothing is left behind when it does
        not."""
        url = self._target_url(path, info)
        # The request first, the files once the server answered: a download cancelled while
        # it still waits for an answer (which only a timeout ends) holds no file.
        body = self.http.fetch(url)
        if cached is None:
            try:
                with new_private_file(dest) as out:
                    write_verified(body, info, [out], path)
            finally:
                _close(body)
            return
        try:
            partial, fd = create_private_temp(self.targets_dir, cached.name)
            try:
                with os.fdopen(fd, "wb") as entry, new_private_file(dest) as out:
                    write_verified(body, info, [out, entry], path)
                os.replace(partial, cached)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
                raise
        finally:
            _close(body)

    def stream_verify(self, path: str, info: TargetFile, keep: Path | None = None) -> int:
        """Download ``path`` and check length and every hash in one pass, keeping nothing
        unless ``keep`` is given. Memory stays bounded whatever the target size."""
        if self.offline:
            raise UsageError("verify checks the published repository; it cannot run --offline")
        url = self._target_url(path, info)
        with contextlib.ExitStack() as stack, self._explained(path):
            outputs: list[BinaryIO] = [stack.enter_context(keep.open("wb"))] if keep else []
            body = self.http.fetch(url)
            try:
                return write_verified(body, info, outputs, path)
            finally:
                _close(body)

    def _target_url(self, path: str, info: TargetFile) -> str:
        """Where ``path`` is served: hash-prefixed with consistent snapshots (as ngclient: the
        first hash listed)."""
        base = self.update_url + "/targets/"
        self.refresh()
        if not self._signed["root"].get("consistent_snapshot"):
            return base + path
        directory, sep, name = path.rpartition("/")
        return f"{base}{directory}{sep}{next(iter(info.hashes.values()))}.{name}"

    # -- errors ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _explained(self, target: str | None = None) -> Iterator[None]:
        try:
            yield
        except PackagerError:
            raise
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise FetchError(explain(exc, self, target)) from None


def _close(body: Iterator[bytes]) -> None:
    """Close a response body iterator (a generator releases its connection when closed)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


_FIXES = {
    "timestamp": "orbit-packager updates timestamp",
    "snapshot": "orbit-packager updates add/remove (re-signs snapshot)",
    "targets": "orbit-packager updates add/remove (re-signs targets)",
    "root": "orbit-packager updates rotate root",
}


def _role_of(message: str) -> str | None:
    lowered = message.lower()
    for role in ("timestamp", "snapshot", "targets", "root"):
        if role in lowered:
            return role
    return None


def _expires_of(client: UpdateClient, role: str) -> str | None:
    body = client.http.last_body.get(f"{role}.json")
    if body is None:
        local = client.metadata_dir / f"{role}.json"
        body = local.read_bytes() if local.exists() else None
    if body is None:
        return None
    try:
        value = json.loads(body)["signed"]["expires"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(value)


def explain(exc: Exception, client: UpdateClient, target: str | None) -> str:
    """One line naming what failed, why, and what fixes it."""
    return one_line(_explain(exc, client, target))


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a target path from the repository, ...)
    escaped, so an error is always one line, and any ``user:password@`` in a URL hidden."""
    text = _USERINFO.sub("://***@", text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_USERINFO = re.compile(r"://[^/@\s]+@")


def _explain(exc: Exception, client: UpdateClient, target: str | None) -> str:
    url = client.update_url
    message = str(exc)
    if isinstance(exc, NotCachedError | HttpFailure | TransferTooSlow):
        return message  # complete: names the URL and what happened
    role = _role_of(message)
    if isinstance(exc, exceptions.ExpiredMetadataError) and role:
        since = _expires_of(client, role)
        when = f" since {since}" if since else ""
        return f"{role}.json from {url} has expired{when}; re-sign it with `{_FIXES[role]}`"
    if isinstance(exc, exceptions.BadVersionNumberError):
        return (
            f"rollback refused: {message} ({url} serves older metadata than this machine already "
            "trusted: a stale mirror or restored backup; re-sign with `orbit-packager updates "
            "timestamp` until the version passes the old one)"
        )
    if isinstance(exc, exceptions.UnsignedMetadataError):
        return f"bad signature from {url}: {message} (threshold not met; wrong --update-roots?)"
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        what = target or role or client.http.last_name or "a file"
        return f"{what} from {url} is longer than its metadata allows: {message}"
    if isinstance(exc, exceptions.LengthOrHashMismatchError):
        what = f"target {target}" if target else client.http.last_name or "a file"
        return (
            f"{what} from {url} does not match its TUF metadata "
            "(hash or length differs: tampered, corrupted or half-synced)"
        )
    if isinstance(exc, exceptions.DownloadHTTPError):
        hint = " (missing files must answer 404, not 403)" if exc.status_code == 403 else ""
        return f"{message}{hint}"
    if isinstance(exc, exceptions.SlowRetrievalError):
        return f"{url} is too slow or stalled: {message}"
    if isinstance(exc, DeserializationError | exceptions.RepositoryError):
        offset = _non_utc(client)
        if offset:
            return offset
        return f"metadata from {url} is not valid: {message}"
    return f"download from {url} failed: {message}"


def _non_utc(client: UpdateClient) -> str | None:
    """Names the file whose ``expires`` neither python-tuf nor go-tuf (RFC 3339) can read."""
    for name, body in client.http.last_body.items():
        try:
            expires = json.loads(body)["signed"]["expires"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(expires, str) and not python_tuf_reads(expires):
            try:
                parse_expires(expires)
            except ValueError:
                return (
                    f"{name} from {client.update_url} has expires {expires!r}, which is not an "
                    "RFC 3339 time (Orbit refuses it too); re-sign it with `orbit-packager updates`"
                )
    return None
