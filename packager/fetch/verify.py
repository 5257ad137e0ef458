"""``verify``: check a published repository the way an agent would, before agents see it."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api.metadata import TargetFile

from packager.errors import PackagerError
from packager.fetch import workers
from packager.fetch.client import EXIT_FETCH, UpdateClient
from packager.fetch.gotuf import non_utc_warning
from packager.fetch.http import CancelToken


@dataclass
class VerifyReport:
    update_url: str
    roles: list[dict[str, object]] = field(default_factory=list)
    targets: list[dict[str, object]] = field(default_factory=list)
    channels: dict[str, dict[str, str]] = field(default_factory=dict)  # name/platform -> ch -> ver
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # reported, not failing

    def to_json(self) -> dict[str, object]:
        return {
            "update_url": self.update_url,
            "roles": self.roles,
            "targets": self.targets,
            "channels": self.channels,
            "problems": self.problems,
            "failures": self.failures,
            "warnings": self.warnings,
            "ok": not self.problems and not self.failures,
        }


def verify_repository(
    client: UpdateClient,
    *,
    patterns: list[str],
    warn: timedelta,
    now: datetime,
    download_dir: Path | None,
) -> VerifyReport:
    """Refresh from the trusted root, then download and verify every (matching) target."""
    report = VerifyReport(update_url=client.update_url)
    for info in client.roles():
        left = info.expires - now
        state = "expired" if left <= timedelta(0) else "expiring" if left <= warn else "ok"
        report.roles.append(
            {
                "role": info.role,
                "version": info.version,
                "expires": info.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "state": state,
            }
        )
        if state != "ok":
            report.problems.append(f"{info.role}.json {state} ({info.expires:%Y-%m-%d %H:%M} UTC)")
    non_utc = non_utc_warning(client.metadata_dir)
    if non_utc:
        report.warnings.append(non_utc)
    with contextlib.ExitStack() as stack:
        keeper = stack.enter_context(DownloadDir(download_dir)) if download_dir else None
        targets = list(client.targets(patterns or None).items())
        checks = stack.enter_context(_checking(client, targets, keeper))
        for (path, tf), done in zip(targets, checks, strict=True):
            entry: dict[str, object] = {"path": path, "length": tf.length, "hashes": tf.hashes}
            version = (tf.unrecognized_fields.get("custom") or {}).get("version")
            entry["version"] = version
            try:
                done.result()
                entry["ok"] = True
            except PackagerError as exc:
                entry["ok"] = False
                entry["error"] = str(exc)
                report.failures.append(str(exc))
            report.targets.append(entry)
            parts = path.split("/")
            if len(parts) >= 4:
                key = "/".join(parts[:-2])
                report.channels.setdefault(key, {})[parts[-2]] = str(version)
    return report


@contextlib.contextmanager
def _checking(
    client: UpdateClient, targets: list[tuple[str, TargetFile]], keeper: DownloadDir | None
) -> Iterator[list[Future[None]]]:
    """Download and check every target, several at once (packager.fetch.workers): one Future
    per target, in target order, failing with that target's error. Leaving the block early (a
    signal, an unexpected error) stops the downloads still running; they leave no file."""
    token = CancelToken()
    futures: list[Future[None]] = [Future() for _ in targets]

    def check(index: int) -> None:
        path, tf = targets[index]
        done = futures[index]
        if not done.set_running_or_notify_cancel():
            return
        try:
            with client.http.cancellable(token):
                if keeper is None:
                    client.stream_verify(path, tf)
                else:
                    keeper.keep(path, functools.partial(client.stream_verify, path, tf))
        except BaseException as exc:  # reported by the calling thread, in target order
            done.set_exception(exc)
        else:
            done.set_result(None)

    threads = workers.start([functools.partial(check, i) for i in range(len(targets))], "verify")
    try:
        yield futures
    finally:
        if not all(f.done() for f in futures):
            workers.stop(token, futures, threads)


class KeepError(PackagerError):
    """A target could not be kept in --download-dir (reported with the target, exit 4)."""

    exit_code = EXIT_FETCH


def _shown(path: str) -> str:
    text = repr(path)
    return text if len(text) <= 120 else text[:117] + "..."


def target_parts(path: str) -> list[str]:
    """The components of target ``path`` as a relative path, or ValueError: absolute paths,
    ``..``, ``.``, empty components, backslashes and control characters are refused."""
    if not path or path.startswith("/"):
        raise ValueError("absolute or empty")
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in path):
        raise ValueError("backslash or control character")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("'..', '.' or empty component")
    return parts


class DownloadDir:
    """``verify --download-dir``: every target lands inside the directory or nowhere.

    Target paths come from the repository, so each is confined (see ``target_parts``), its
    directories are opened one by one without following symlinks, and the bytes are written to a
    private temporary directory inside the download directory and renamed to the real name only
    after the length and hashes matched: a tampered target leaves nothing under its name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> DownloadDir:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise PackagerError(
                f"cannot use --download-dir {self.root}: {exc.strerror or type(exc).__name__}"
            ) from None
        try:
            self.temp = Path(tempfile.mkdtemp(prefix=".orbit-packager-verify-", dir=self.root))
        except OSError as exc:
            os.close(self.fd)
            raise PackagerError(
                f"cannot write in --download-dir {self.root}: {exc.strerror or type(exc).__name__}"
            ) from None
        self._numbers = itertools.count(1)  # temporary names; next() is atomic (threads)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        os.close(self.fd)

    def keep(self, path: str, download: Callable[[Path], object]) -> None:
        """``download(temp)`` writes and verifies the target into ``temp`` (raising on any
        mismatch); then it is renamed to ``path`` inside the download directory."""
        try:
            parts = target_parts(path)
        except ValueError as exc:
            raise KeepError(
                f"target {_shown(path)} has an unsafe path ({exc}): refused, nothing written to "
                f"{self.root}"
            ) from None
        temp = self.temp / str(next(self._numbers))
        try:
            parent = self._open_parent(parts[:-1])
        except OSError as exc:
            raise KeepError(
                f"target {_shown(path)} cannot be kept in {self.root}: "
                f"{exc.strerror or type(exc).__name__} (a file or symlink is in the way)"
            ) from None
        try:
            try:
                download(temp)
                # Never writable by group or others, whatever the umask (0 in some cron and CI
                # setups): another local user must not be able to change a verified target.
                temp.chmod(stat.S_IMODE(temp.stat().st_mode) & ~0o022)
                temp_fd = os.open(self.temp, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.replace(temp.name, parts[-1], src_dir_fd=temp_fd, dst_dir_fd=parent)
                finally:
                    os.close(temp_fd)
            except OSError as exc:
                raise KeepError(
                    f"target {_shown(path)} cannot be kept in {self.root}: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
        finally:
            os.close(parent)
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _open_parent(self, parts: list[str]) -> int:
        """The directory ``root/parts...``, created as needed, never through a symlink."""
        fd = os.dup(self.fd)
        try:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd


def render_text(report: VerifyReport) -> str:
    lines = [f"update server: {report.update_url}"]
    for r in report.roles:
        lines.append(f"  {r['role']:<10} v{r['version']:<6} expires {r['expires']}  {r['state']}")
    for key, channels in sorted(report.channels.items()):
        shown = ", ".join(f"{ch}={v}" for ch, v in sorted(channels.items()))
        lines.append(f"  {key}: {shown}")
    ok = sum(1 for t in report.targets if t["ok"])
    lines.append(f"targets verified: {ok}/{len(report.targets)}")
    lines.extend(f"error: {f}" for f in report.failures)
    lines.extend(f"warning: {p}" for p in report.problems)
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)
