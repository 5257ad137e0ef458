"""Kill a real orbit-packager command at an exact file-system call (issue 14, crash tests).

:data:`SITECUSTOMIZE` is written as ``sitecustomize.py`` into a directory put first on the
child's ``PYTHONPATH``, so Python imports it at start-up, before any project code; product code
is not changed. It wraps ``os.replace``, ``os.rename``, ``os.link``, ``os.unlink``,
``os.fsync``, ``os.mkdir`` and ``os.rmdir`` and reads, at every call, from the environment:

* ``KILL_OPS`` (default ``replace,rename``): the calls that are counted, 1, 2, 3, ...;
* ``KILL_AT=k`` and ``KILL_WHEN=before|after``: the process ends with ``os._exit(137)`` (no
  ``finally``, no ``atexit``, no flushing: what SIGKILL leaves) just before or just after the
  k-th counted call;
* ``KILL_TRACE=FILE``: every wrapped call is appended to FILE as one JSON line (before the call
  runs), with the inode of the file renamed and of the descriptor fsynced, so a test can check
  the order of fsyncs and renames;
* ``KILL_THREAD_FSYNC_DELAY=S``: an fsync outside the main thread waits S seconds first (traced
  runs set it), so a commit that does not wait for such an fsync renames before it is traced.

Counting is per process, so a process forked after start-up counts from 1 (see below).

Every command loads the same modules for about a second before its first file-system call, and
an exhaustive run kills one command per call boundary (a few hundred runs). :class:`CommandRunner`
therefore starts one interpreter with the sitecustomize on its path, imports ``packager.cli``
and the repository modules the commands load once, and forks a fresh child per command that
sets its environment and runs the command line's
own entry point (``packager.cli.main``) with its arguments. The child is a real process: its
exit code, its lock, its files and its death are its own. :func:`spawn` runs ``python -m
packager`` itself with the same sitecustomize, for a reference run to compare counts with.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KILLED = 137
COUNTED_DEFAULT = ("replace", "rename")
WRAPPED = ("replace", "rename", "link", "unlink", "fsync", "mkdir", "rmdir")

SITECUSTOMIZE = r'''
"""Kill points for crash tests (written by tests/killpoint.py; see its docstring)."""


def _install_kill_points():
    import json
    import os
    import stat
    import threading
    import time

    names = ("replace", "rename", "link", "unlink", "fsync", "mkdir", "rmdir")
    real = {name: getattr(os, name) for name in names}
    real_open, real_write, real_close, real_exit = os.open, os.write, os.close, os._exit
    counter = {"pid": -1, "n": 0}

    def fd_path(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None

    def full(path, dir_fd):
        path = os.fsdecode(os.fspath(path))
        if dir_fd is not None and not os.path.isabs(path):
            return os.path.join(fd_path(dir_fd) or "?", path)
        return os.path.abspath(path)

    def inode(path):
        try:
            return os.lstat(path).st_ino
        except OSError:
            return None

    def emit(event):
        trace = os.environ.get("KILL_TRACE")
        if not trace:
            return
        fd = real_open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            real_write(fd, (json.dumps(event) + "\n").encode())
        finally:
            real_close(fd)

    def wrap(op, describe):
        original = real[op]

        def wrapper(*args, **kwargs):
            counted = op in os.environ.get("KILL_OPS", "replace,rename").split(",")
            if counter["pid"] != os.getpid():  # a forked child counts from 1
                counter["pid"], counter["n"] = os.getpid(), 0
            number = None
            if counted:
                counter["n"] += 1
                number = counter["n"]
            slow = os.environ.get("KILL_THREAD_FSYNC_DELAY")
            if op == "fsync" and slow and threading.current_thread() is not threading.main_thread():
                time.sleep(float(slow))  # a sync the command must wait for shows up late if it does not
            event = {"op": op, "n": number, **describe(*args, **kwargs)}
            emit(event)
            kill = number is not None and os.environ.get("KILL_AT") == str(number)
            when = os.environ.get("KILL_WHEN", "after")
            if kill and when == "before":
                emit({"op": "killed", "n": number, "when": when})
                real_exit(137)
            try:
                return original(*args, **kwargs)
            finally:
                if kill:
                    emit({"op": "killed", "n": number, "when": when})
                    real_exit(137)

        # shutil.rmtree picks its symlink-safe variant only if os.unlink is in supports_dir_fd.
        for support in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks):
            if original in support:
                support.add(wrapper)
        setattr(os, op, wrapper)

    def size(path):
        try:
            return os.lstat(path).st_size
        except OSError:
            return None

    def two_paths(src, dst, *, src_dir_fd=None, dst_dir_fd=None, **_):
        source, target = full(src, src_dir_fd), full(dst, dst_dir_fd)
        return {"src": source, "dst": target, "ino": inode(source), "old": inode(target),
                "size": size(source)}

    def one_path(path, *_args, dir_fd=None, **_):
        path = full(path, dir_fd)
        return {"path": path, "ino": inode(path), "exists": os.path.lexists(path)}

    def descriptor(fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        st = os.fstat(fd)
        return {"path": fd_path(fd), "ino": st.st_ino, "dir": stat.S_ISDIR(st.st_mode),
                "size": st.st_size}

    for op in ("replace", "rename", "link"):
        wrap(op, two_paths)
    for op in ("unlink", "mkdir", "rmdir"):
        wrap(op, one_path)
    wrap("fsync", descriptor)


_install_kill_points()
del _install_kill_points
'''

# The command server: imports the command line once, then forks one child per request line.
_SERVER = r"""
import json, os, sys, traceback

import packager.cli
# Commands import the library when they run: load it here, once, not in every forked child.
import packager.repo.publish, packager.repo.repository

requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.environ.clear()
            os.environ.update(req["env"])
            os.chdir(req["cwd"])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                out = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(out, fd)
            try:
                packager.cli.main(req["argv"])
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "pid": pid}) + "\n")
    replies.flush()
"""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    pid: int

    @property
    def killed(self) -> bool:
        return self.rc == KILLED


@dataclass(frozen=True)
class Kill:
    """Die just ``when`` ("before" or "after") the ``at``-th call of ``ops``."""

    at: int
    when: str = "after"
    ops: tuple[str, ...] = COUNTED_DEFAULT


def write_sitecustomize(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def child_env(
    site_dir: Path,
    project_root: Path,
    env: dict[str, str],
    *,
    kill: Kill | None = None,
    ops: tuple[str, ...] = COUNTED_DEFAULT,
    trace: Path | None = None,
) -> dict[str, str]:
    """The environment of a command: ours (no FLEET_*, no KILL_*) plus ``env`` and the hooks."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "KILL_"))}
    python_path = [str(site_dir), str(project_root)]
    if full.get("PYTHONPATH"):
        python_path.append(full["PYTHONPATH"])
    full["PYTHONPATH"] = os.pathsep.join(python_path)
    full.update(env)
    full["KILL_OPS"] = ",".join(kill.ops if kill else ops)
    if kill is not None:
        full["KILL_AT"] = str(kill.at)
        full["KILL_WHEN"] = kill.when
    if trace is not None:
        full["KILL_TRACE"] = str(trace)
        # fsyncs in other threads (staged copies) are delayed, so a trace shows a rename that
        # did not wait for one (the order checks read the trace: an fsync emitted after the
        # rename is a file published before it was durable).
        full["KILL_THREAD_FSYNC_DELAY"] = "0.3"
    return full


def spawn(
    site_dir: Path,
    project_root: Path,
    argv: list[str],
    env: dict[str, str],
    *,
    kill: Kill | None = None,
    ops: tuple[str, ...] = COUNTED_DEFAULT,
    trace: Path | None = None,
    timeout: float = 120,
) -> Result:
    """``python -m packager ARGV`` in a fresh interpreter with the kill points installed."""
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *argv],
        env=child_env(site_dir, project_root, env, kill=kill, ops=ops, trace=trace),
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, 0)


class CommandRunner:
    """One interpreter that has imported the command line; each :meth:`run` forks a child."""

    def __init__(self, workdir: Path, project_root: Path) -> None:
        self.workdir = workdir
        self.project_root = project_root
        self.site_dir = write_sitecustomize(workdir / "site")
        self._count = 0
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            env=child_env(self.site_dir, project_root, {}),
            cwd=project_root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        kill: Kill | None = None,
        ops: tuple[str, ...] = COUNTED_DEFAULT,
        trace: Path | None = None,
        timeout: float = 120,
    ) -> Result:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._count += 1
        out = self.workdir / f"out-{self._count}"
        err = self.workdir / f"err-{self._count}"
        request = {
            "argv": [str(a) for a in argv],
            "env": child_env(
                self.site_dir, self.project_root, env, kill=kill, ops=ops, trace=trace
            ),
            "cwd": str(self.project_root),
            "stdout": str(out),
            "stderr": str(err),
        }
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise AssertionError(f"command {argv} did not finish in {timeout} s")
        line = self._proc.stdout.readline()
        if not line:
            raise AssertionError(f"the command server died (exit {self._proc.wait()})")
        reply = json.loads(line)
        result = Result(reply["rc"], out.read_text(), err.read_text(), reply["pid"])
        out.unlink()
        err.unlink()
        return result

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@dataclass(frozen=True)
class Event:
    op: str
    n: int | None
    src: str | None = None
    dst: str | None = None
    path: str | None = None
    ino: int | None = None  # of the file renamed, linked, unlinked or fsynced
    old: int | None = None  # of the file a rename replaces
    dir: bool = False
    exists: bool = False  # for unlink, mkdir, rmdir: whether the path existed before the call
    when: str | None = None
    size: int | None = None  # of the file fsynced (at the fsync) or renamed (at the rename)


def read_trace(path: Path) -> list[Event]:
    if not path.exists():
        return []
    return [Event(**json.loads(line)) for line in path.read_text().splitlines()]


def counted(events: list[Event], ops: tuple[str, ...]) -> int:
    """How many calls of ``ops`` a run made (its N for those ops); every call is traced."""
    return sum(1 for e in events if e.op in ops)
