"""Read and verify a *published* update repository over HTTP (``updates status --url``).

What a client does on its first refresh, without a local cache: the trusted root (from
``--update-roots``, else the published ``root.json`` as it is), then ``N+1.root.json`` upward
until a 404, each new root signed by the threshold of the previous one and of itself; then
``timestamp.json``, the snapshot and the targets it names (versioned names with consistent
snapshots), each verified under the newest root.

A file that does not verify raises :class:`CorruptRepositoryError` (exit 3); a URL that cannot be
fetched raises :class:`RemoteFetchError` (exit 4). Files that verify but do not fit together (a
timestamp naming another snapshot than the one published, a stale ``root.json``, ...) are
listed in :attr:`PublishedRepo.problems` (``status`` exits 1).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from tuf.api import exceptions
from tuf.api.metadata import MetaFile, Root

from packager.errors import EXIT_FETCH, CorruptRepositoryError, PackagerError
from packager.fetch.http import HttpOptions, RequestsFetcher
from packager.repo import metadata as meta
from packager.repo.repository import RepoState

MAX_ROOT_VERSIONS = 1000  # newer roots walked at most (python-tuf's max_root_rotations is 256)
MAX_BYTES = {  # per file, before any metadata names its length
    "root": 1_000_000,
    "timestamp": 1_000_000,
    "snapshot": 16_000_000,
    "targets": 50_000_000,  # as `fetch` and `package` allow
}
_HTTP_REASONS = {
    401: "authentication required: clients read the repository anonymously",
    403: "forbidden: clients read the repository anonymously",
    404: "not found",
}
LIST_BUCKET_HINT = (
    "clients treat that as an error: allow s3:ListBucket for anonymous reads on the bucket "
    "(or make your server answer 404)"
)


class RemoteFetchError(PackagerError):
    """A file of the published repository could not be downloaded."""

    exit_code = EXIT_FETCH


@dataclass
class PublishedRepo(RepoState):
    """The four top-level roles as served at ``url``, each verified under the newest root."""

    url: str = ""  # as shown: without user:password@
    root_chain: list[int] = field(default_factory=list)  # versions walked, the trusted one first
    trusted_from: str = "published"  # or "update-roots"
    problems: list[str] = field(default_factory=list)


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` (never printed)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def load_published(
    url: str,
    *,
    trusted_root: bytes | None = None,
    http: HttpOptions | None = None,
    max_root_versions: int = MAX_ROOT_VERSIONS,
) -> PublishedRepo:
    """Download and verify the repository published at ``url`` (see the module docstring).

    ``trusted_root``: the root.json to start the walk from (already checked to be a root signed
    by its own keys, e.g. by :func:`packager.fetch.client.load_trusted_root`); None: trust the
    published root.json as it is.
    """
    reader = _Reader(url, http)
    try:
        return reader.load(trusted_root, max_root_versions)
    finally:
        reader.close()


class _Reader:
    def __init__(self, url: str, http: HttpOptions | None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PackagerError(
                f"--url {display_url(url)!r} is not an http:// or https:// URL",
                hint="pass the base URL clients use, e.g. https://updates.example.com",
            )
        self.base = url.rstrip("/") + "/"
        self.shown = display_url(url.rstrip("/"))
        self.fetcher = RequestsFetcher(http)
        self.problems: list[str] = []

    def close(self) -> None:
        self.fetcher.session.close()

    # -- downloads ---------------------------------------------------------------------------
    def _where(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def get(self, name: str, limit: int, *, missing_ok: bool = False) -> bytes | None:
        """The body of ``name``; None for a 404 when ``missing_ok``; else RemoteFetchError."""
        where = self._where(name)
        try:
            return self.fetcher.download_bytes(self.base + name, limit)
        except exceptions.DownloadHTTPError as exc:
            status = exc.status_code
            if status == 404 and missing_ok:
                return None
            if status == 403 and missing_ok:
                raise RemoteFetchError(
                    f"{where} answered 403 for a missing file; {LIST_BUCKET_HINT}"
                ) from None
            reason = _HTTP_REASONS.get(status, "an error")
            raise RemoteFetchError(f"{where} answered HTTP {status} ({reason})") from None
        except exceptions.DownloadLengthMismatchError:
            raise RemoteFetchError(
                f"{where} is larger than {limit} bytes: not TUF metadata a client accepts"
            ) from None
        except exceptions.DownloadError as exc:
            text = str(exc).replace(self.base, self.shown + "/")
            if self.shown not in text:
                text = f"{where}: {text}"
            raise RemoteFetchError(text) from None

    def role(self, name: str, role: str) -> meta.LoadedMetadata:
        raw = self.get(name, MAX_BYTES[role])
        if raw is None:  # pragma: no cover - only with missing_ok
            raise RemoteFetchError(f"{self._where(name)} is missing")
        return meta.parse(raw, role, self._where(name))

    def optional_role(self, name: str, role: str) -> meta.LoadedMetadata | None:
        """``name`` parsed, or None when the server answers 404."""
        raw = self.get(name, MAX_BYTES[role], missing_ok=True)
        return None if raw is None else meta.parse(raw, role, self._where(name))

    # -- the walk ----------------------------------------------------------------------------
    def load(self, trusted_root: bytes | None, max_versions: int) -> PublishedRepo:
        published = self.role("root.json", "root")
        if trusted_root is None:
            current = published
            meta.verify_signed_by(
                current.md.signed, "root", current, self._where("root.json"), what=" (itself)"
            )
            trusted_from = "published"
        else:
            current = meta.parse(trusted_root, "root", "--update-roots")
            trusted_from = "update-roots"
        chain = [current.version]
        for version in range(current.version + 1, current.version + max_versions + 1):
            name = f"{version}.root.json"
            new = self.optional_role(name, "root")
            if new is None:
                break
            where = self._where(name)
            old_root: Root = current.md.signed
            meta.verify_signed_by(old_root, "root", new, where, what=f" (by root v{chain[-1]})")
            meta.verify_signed_by(new.md.signed, "root", new, where, what=" (by itself)")
            if new.version != version:
                raise CorruptRepositoryError(
                    f"{where} holds root version {new.version}, not {version}",
                    hint="publish each root under its own version",
                )
            current = new
            chain.append(version)
        else:
            raise RemoteFetchError(
                f"{self.shown} serves more than {max_versions} newer roots after root "
                f"v{chain[0]}: not a repository a client can follow"
            )
        # signed content, not bytes: --update-roots may hold the same root re-serialized
        if published.signed_canonical != current.signed_canonical:
            if published.version == current.version:
                meta.verify_signed_by(
                    current.md.signed, "root", published, self._where("root.json")
                )
                self.problems.append(
                    f"root.json differs from the root v{current.version} walked to "
                    f"({current.version}.root.json or --update-roots) under the same version"
                )
            elif published.version > current.version:
                self.problems.append(
                    f"root.json is v{published.version} but {current.version + 1}.root.json is "
                    f"missing: clients holding root v{current.version} cannot reach it"
                )
            else:
                self.problems.append(
                    f"root.json is v{published.version}, older than the newest root "
                    f"v{current.version} ({current.version}.root.json or --update-roots)"
                )
        root: Root = current.md.signed
        consistent = bool(root.consistent_snapshot)

        timestamp = self.role("timestamp.json", "timestamp")
        meta.verify_signed_by(root, "timestamp", timestamp, self._where("timestamp.json"))

        snap_meta: MetaFile = timestamp.md.signed.snapshot_meta
        snapshot = self._named(
            "snapshot", snap_meta, consistent, f"timestamp.json v{timestamp.version}", root
        )
        targets_meta: MetaFile | None = snapshot.md.signed.meta.get("targets.json")
        if targets_meta is None:  # clients stop here; read targets.json to report the rest
            self.problems.append(f"snapshot.json v{snapshot.version} does not list targets.json")
            targets = self.role("targets.json", "targets")
            meta.verify_signed_by(root, "targets", targets, self._where("targets.json"))
        else:
            targets = self._named(
                "targets", targets_meta, consistent, f"snapshot.json v{snapshot.version}", root
            )
        return PublishedRepo(
            url=self.shown,
            root=current,
            targets=targets,
            snapshot=snapshot,
            timestamp=timestamp,
            root_chain=chain,
            trusted_from=trusted_from,
            problems=self.problems,
        )

    def _named(
        self, role: str, info: MetaFile, consistent: bool, by: str, root: Root
    ) -> meta.LoadedMetadata:
        """The ``role`` file ``info`` (from ``by``) names, verified under ``root``; any mismatch
        with ``info`` is a problem."""
        name = f"{role}.json"
        loaded = None
        if consistent:
            versioned = f"{info.version}.{role}.json"
            loaded = self.optional_role(versioned, role)
            if loaded is None:
                self.problems.append(
                    f"{by} names {role} v{info.version} but {versioned} is missing (404)"
                )
            else:
                name = versioned
        if loaded is None:
            loaded = self.role(name, role)
        meta.verify_signed_by(root, role, loaded, self._where(name))
        if loaded.version != info.version:
            self.problems.append(
                f"{by} names {role} v{info.version} but {name} is v{loaded.version}"
            )
        else:
            try:
                info.verify_length_and_hashes(loaded.raw)
            except exceptions.LengthOrHashMismatchError:
                self.problems.append(
                    f"{name} does not match the length or hashes {by} records for it "
                    f"(half-synced or edited after signing)"
                )
        return loaded
