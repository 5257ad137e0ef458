"""Where ``updates publish`` writes: an object store or a local directory, behind one interface.

Object stores (``s3://``, ``gs://``, ``az://``) go through obstore, the Python binding of the
Rust ``object_store`` crate: one library for S3 and every S3-compatible endpoint (MinIO, Ceph,
R2), Google Cloud Storage and Azure Blob, with each cloud's standard credential chain
(environment, web identity, instance metadata), its own retries, object attributes
(Cache-Control, Content-Type, user metadata) and conditional writes (If-Match, If-None-Match)
that keep two publishers from overwriting each other. fsspec needs one backend package per
cloud (s3fs, gcsfs, adlfs, each pulling an async stack) and boto3 covers S3 only.

A local directory (an nginx root, or the source of an rsync) is written by our own
:class:`DirectoryStore`, not obstore's local store: that one neither fsyncs nor gives files a
mode a web server running as another user can read.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from packager.errors import PackagerError, UsageError
from packager.repo.fsutil import CHUNK, exclusive_lock, fsync_dir, is_temp_name, temp_path

LOCK_NAME = ".orbit-packager-publish.lock"
# Every request gives up after this; a hung endpoint must not hang a cron job for ever.
REQUEST_TIMEOUT = "120s"
CONNECT_TIMEOUT = "10s"
RETRIES = 3
RETRY_WINDOW = timedelta(seconds=60)


class StoreError(PackagerError):
    """The destination refused or failed a request (exit 4, like a failed fetch)."""

    exit_code = 4


class ConflictError(StoreError):
    """A conditional write found the object changed since it was read: another publisher."""


@dataclass(frozen=True)
class RemoteObject:
    """One object at the destination, as listed."""

    name: str
    size: int
    etag: str | None
    modified: datetime


# Expected state of an object for a conditional write: None (no condition), ABSENT, or the
# ETag read when planning (If-Match).
ABSENT = "<absent>"


class Store(Protocol):
    url: str

    def list(self) -> dict[str, RemoteObject]: ...

    def read(self, name: str, limit: int) -> bytes | None: ...

    def same_content(self, obj: RemoteObject, path: Path, sha256: str) -> bool: ...

    def put(
        self,
        name: str,
        source: Path,
        *,
        sha256: str,
        content_type: str,
        cache_control: str,
        expect: str | None,
    ) -> None: ...

    def delete(self, name: str) -> None: ...

    @contextlib.contextmanager
    def session(self) -> Iterator[None]: ...


def file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file in one pass (md5 only because S3 ETags are MD5s)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def open_store(destination: str, *, endpoint_url: str | None = None) -> Store:
    """The store a ``--to`` value names: ``s3://``, ``gs://``, ``az://``, ``file://`` or a path."""
    parts = urlsplit(destination)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "gs", "az"):
        if not parts.netloc:
            raise UsageError(
                f"--to {destination}: no bucket", hint=f"write it as {scheme}://BUCKET/PREFIX"
            )
        if parts.query or parts.fragment:
            raise UsageError(f"--to {destination}: no query or fragment allowed")
        if endpoint_url is not None and scheme != "s3":
            raise UsageError("--endpoint-url is for s3:// destinations only")
        return ObjectStore(scheme, parts.netloc, parts.path.strip("/"), endpoint_url)
    if endpoint_url is not None:
        raise UsageError("--endpoint-url is for s3:// destinations only")
    if scheme == "file":
        return DirectoryStore(Path(parts.path))
    if scheme:
        raise UsageError(
            f"--to {destination}: unsupported scheme {scheme}://",
            hint="use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or a directory",
        )
    return DirectoryStore(Path(destination))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _aws_profile_credentials() -> dict[str, str]:
    """Static keys (and region) of the AWS CLI's profile when none are in the environment.

    object_store reads the environment, web identity and instance metadata, not the AWS CLI's
    shared files; static profiles are read here (SSO and role profiles: export them with
    ``aws configure export-credentials --format env``)."""
    out: dict[str, str] = {}
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path.home()
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        creds = configparser.RawConfigParser()
        creds.read(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws/credentials")
        if creds.has_section(profile):
            section = creds[profile]
            if section.get("aws_access_key_id") and section.get("aws_secret_access_key"):
                out["access_key_id"] = section["aws_access_key_id"]
                out["secret_access_key"] = section["aws_secret_access_key"]
                if section.get("aws_session_token"):
                    out["token"] = section["aws_session_token"]
    if not os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        config = configparser.RawConfigParser()
        config.read(os.environ.get("AWS_CONFIG_FILE") or home / ".aws/config")
        section_name = "default" if profile == "default" else f"profile {profile}"
        if config.has_section(section_name) and config[section_name].get("region"):
            out["region"] = config[section_name]["region"]
    return out


class ObjectStore:
    """An S3, GCS or Azure Blob prefix, through obstore."""

    def __init__(self, scheme: str, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        self.url = f"{scheme}://{bucket}/{prefix}".rstrip("/")
        self._conditional = True
        client_options: Any = {
            "timeout": REQUEST_TIMEOUT,
            "connect_timeout": CONNECT_TIMEOUT,
        }
        retry: Any = {"max_retries": RETRIES, "retry_timeout": RETRY_WINDOW}
        from obstore.store import AzureStore, GCSStore, S3Store

        store: Any
        try:
            if scheme == "s3":
                config: dict[str, Any] = _aws_profile_credentials()
                if endpoint_url is not None:
                    endpoint = urlsplit(endpoint_url)
                    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
                        raise UsageError(
                            f"--endpoint-url {endpoint_url}: not an http(s) URL",
                            hint="e.g. --endpoint-url https://minio.example.com:9000",
                        )
                    config["endpoint"] = endpoint_url
                    client_options["allow_http"] = endpoint.scheme == "http"
                    if not os.environ.get("AWS_REGION") and not os.environ.get(
                        "AWS_DEFAULT_REGION"
                    ):
                        config.setdefault("region", "us-east-1")  # what S3-compatibles expect
                store = S3Store(
                    bucket,
                    prefix=prefix or None,
                    client_options=client_options,
                    retry_config=retry,
                    **config,
                )
            elif scheme == "gs":
                store = GCSStore(
                    bucket, prefix=prefix or None, client_options=client_options, retry_config=retry
                )
            else:
                store = AzureStore(
                    bucket, prefix=prefix or None, client_options=client_options, retry_config=retry
                )
        except PackagerError:
            raise
        except Exception as exc:  # obstore reports configuration problems as plain exceptions
            raise UsageError(f"cannot use {self.url}: {_first_line(exc)}") from None
        self._store = store

    def _fail(self, what: str, name: str, exc: BaseException) -> StoreError:
        import obstore.exceptions as oe

        line = _first_line(exc)
        if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)):
            return StoreError(
                f"{self.url}: {what} {name} refused: {line}",
                hint="check the credentials in the environment (AWS_*, GOOGLE_*, AZURE_*) or the"
                " cloud CLI's config files and that they may write this prefix",
            )
        return StoreError(f"{self.url}: {what} {name} failed: {line}")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    def list(self) -> dict[str, RemoteObject]:
        import obstore

        objects: dict[str, RemoteObject] = {}
        try:
            for batch in obstore.list(self._store, chunk_size=1000):
                for meta in batch:
                    name = str(meta["path"])
                    objects[name] = RemoteObject(
                        name, int(meta["size"]), meta.get("e_tag"), meta["last_modified"]
                    )
        except Exception as exc:
            raise self._fail("listing", "", exc) from None
        return objects

    def read(self, name: str, limit: int) -> bytes | None:
        import obstore

        try:
            result = obstore.get(self._store, name)
            if int(result.meta["size"]) > limit:
                raise StoreError(f"{self.url}/{name} is larger than {limit} bytes")
            return bytes(result.bytes())
        except FileNotFoundError:
            return None
        except PackagerError:
            raise
        except Exception as exc:
            raise self._fail("reading", name, exc) from None

    def same_content(self, obj: RemoteObject, path: Path, sha256: str) -> bool:
        """Equal when our ``sha256`` attribute matches, else when the ETag is the file's MD5."""
        import obstore

        try:
            head = obstore.get(self._store, obj.name, options={"head": True})
            recorded = dict(head.attributes).get("sha256")
        except Exception as exc:
            raise self._fail("reading", obj.name, exc) from None
        if recorded is not None:
            return str(recorded) == sha256
        etag = (obj.etag or "").strip('"').lower()
        if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
            return file_digests(path)[0] == etag
        return False

    def put(
        self,
        name: str,
        source: Path,
        *,
        sha256: str,
        content_type: str,
        cache_control: str,
        expect: str | None,
    ) -> None:
        import obstore
        import obstore.exceptions as oe

        attributes: dict[str, str] = {
            "Content-Type": content_type,
            "Cache-Control": cache_control,
            "sha256": sha256,
        }
        mode: Any = None
        if expect is not None and self._conditional:
            mode = "create" if expect == ABSENT else {"e_tag": expect}
        try:
            try:
                obstore.put(self._store, name, source, attributes=attributes, mode=mode)
            except oe.NotSupportedError:
                if mode is None:
                    raise
                # An S3-compatible server without conditional writes: the planning-time
                # checks still hold; only a publisher racing this one is not caught.
                self._conditional = False
                obstore.put(self._store, name, source, attributes=attributes)
        except (oe.PreconditionError, oe.AlreadyExistsError):
            raise ConflictError(
                f"{self.url}/{name} changed while this publish ran (another publisher?)",
                hint="nothing was switched: run `updates publish` again",
            ) from None
        except Exception as exc:
            raise self._fail("uploading", name, exc) from None

    def delete(self, name: str) -> None:
        import obstore

        try:
            obstore.delete(self._store, name)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail("deleting", name, exc) from None


class DirectoryStore:
    """A local directory: files written to a temporary name, fsynced, renamed (0644)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = str(directory)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Create the directory (0755) and hold its publish lock: one publisher at a time."""
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {self.directory}: {exc.strerror}") from None
        if not self.directory.is_dir():
            raise UsageError(f"--to {self.directory} is not a directory")
        with exclusive_lock(self.directory / LOCK_NAME, str(self.directory)):
            yield

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"refusing the object name {name!r}")
        return self.directory.joinpath(*parts)

    def list(self) -> dict[str, RemoteObject]:
        objects: dict[str, RemoteObject] = {}
        for dirpath, dirs, files in os.walk(self.directory):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if file.startswith(".") or is_temp_name(file):
                    continue  # our lock and temporary names; dot-files are not ours
                full = Path(dirpath) / file
                st = full.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = full.relative_to(self.directory).as_posix()
                modified = datetime.fromtimestamp(st.st_mtime, timezone.utc)
                objects[name] = RemoteObject(name, st.st_size, None, modified)
        return objects

    def read(self, name: str, limit: int) -> bytes | None:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"{path} is larger than {limit} bytes")
        return data

    def same_content(self, obj: RemoteObject, path: Path, sha256: str) -> bool:
        return file_digests(self._path(obj.name))[1] == sha256

    def put(
        self,
        name: str,
        source: Path,
        *,
        sha256: str,
        content_type: str,
        cache_control: str,
        expect: str | None,
    ) -> None:
        # Headers are the web server's business here; the lock held by session() replaces
        # conditional writes.
        del content_type, cache_control, expect
        dest = self._path(name)
        try:
            for parent in reversed(dest.relative_to(self.directory).parents):
                directory = self.directory / parent
                if not directory.is_dir():
                    with contextlib.suppress(FileExistsError):  # uploads run in parallel
                        directory.mkdir(mode=0o755)
                        os.chmod(directory, 0o755)  # noqa: S103 - served to the world
                    fsync_dir(directory.parent)
            tmp = temp_path(dest)
            digest = hashlib.sha256()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with source.open("rb") as fin, os.fdopen(fd, "wb") as fout:
                    while chunk := fin.read(CHUNK):
                        digest.update(chunk)
                        fout.write(chunk)
                    fout.flush()
                    os.fchmod(fout.fileno(), 0o644)
                    os.fsync(fout.fileno())
                if digest.hexdigest() != sha256:
                    raise StoreError(f"{source} changed while it was being published")
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
            fsync_dir(dest.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {dest}: {exc.strerror}") from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)
