"""Real components for tests: an HTTP server on 127.0.0.1 and python-tuf's ngclient."""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tuf.ngclient import Updater

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GOTUF_FIXTURE = FIXTURES / "gotuf-fleetctl-repo"
GOTUF_PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "root-pass",
    "FLEET_TARGETS_PASSPHRASE": "targets-pass",
    "FLEET_SNAPSHOT_PASSPHRASE": "snapshot-pass",
    "FLEET_TIMESTAMP_PASSPHRASE": "timestamp-pass",
}
TEST_PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "root secret",
    "FLEET_TARGETS_PASSPHRASE": "targets secret",
    "FLEET_SNAPSHOT_PASSPHRASE": "snapshot secret",
    "FLEET_TIMESTAMP_PASSPHRASE": "timestamp secret",
}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def client_fetch_all(base_url: str, trusted_root: bytes) -> dict[str, bytes]:
    """Bootstrap ngclient with ``trusted_root``, refresh, download and hash-check every target.

    Returns {target path: content}. Raises whatever python-tuf raises on any failure.
    """
    with tempfile.TemporaryDirectory() as tmp:
        md_dir, tgt_dir = Path(tmp, "md"), Path(tmp, "targets")
        md_dir.mkdir()
        tgt_dir.mkdir()
        updater = Updater(
            str(md_dir),
            base_url + "/",
            str(tgt_dir),
            base_url + "/targets/",
            bootstrap=trusted_root,
        )
        updater.refresh()
        listed = json.loads((md_dir / "targets.json").read_bytes())["signed"]["targets"]
        out: dict[str, bytes] = {}
        for path in listed:
            info = updater.get_targetinfo(path)
            assert info is not None, path
            local = updater.download_target(
                info, str(tgt_dir / hashlib.sha256(path.encode()).hexdigest())
            )
            data = Path(local).read_bytes()
            assert hashlib.sha512(data).hexdigest() == info.hashes["sha512"]
            out[path] = data
        return out


def served_client_fetch(repo_path: Path, trusted_root: bytes) -> dict[str, bytes]:
    with serve(repo_path / "repository") as url:
        return client_fetch_all(url, trusted_root)


def cli(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
    cwd: Path | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process (with ``umask`` when not -1)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        umask=umask,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def copy_gotuf_fixture(dest: Path) -> Path:
    shutil.copytree(GOTUF_FIXTURE, dest)
    for dirpath, _dirs, files in os.walk(dest):
        os.chmod(dirpath, 0o755)  # noqa: S103 - a served tree
        for name in files:
            os.chmod(Path(dirpath, name), 0o644)
    os.chmod(dest / "keys", 0o700)
    return dest


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every regular file below ``path`` with its content (to prove nothing changed)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def add_target(
    repo: Path,
    target: Path,
    name: str,
    platform: str,
    version: str,
    *tags: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`updates add` through the real command line."""
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    return cli(
        "updates", "add", "--path", repo, "--target", target, "--name", name,
        "--platform", platform, "--version", version, *tag_args,
        env=TEST_PASSPHRASES if env is None else env,
    )  # fmt: skip


class FaultServer:
    """A real HTTP server on 127.0.0.1 serving a directory, counting bytes per path, with
    optional faults per path: "stall" (headers, then silence), "endless" (never-ending body),
    "500-once" (one 500, then normal), "once:N" (one HTTP status N, then normal), an HTTP status code, "drip:S" (the file's headers, then
    one byte every S seconds), "drop" / "drop-once" (the full Content-Length, half the body, then
    the connection closes), "retry-after:V" / "retry-after-once:V" (503 with ``Retry-After: V``), "gzip" (the file
    gzip-compressed with ``Content-Encoding: gzip``), "gzip-bomb" (256 MiB of zeros, gzip'd)."""

    def __init__(self, directory: Path, tls: ssl.SSLContext | None = None) -> None:
        self.directory = directory
        self.faults: dict[str, str | int] = {}
        self.bytes_served: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.user_agents: set[str] = set()
        owner = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                owner.requests[path] += 1
                owner.user_agents.add(self.headers.get("User-Agent", ""))
                fault = owner.faults.get(path)
                if fault == "500-once":
                    del owner.faults[path]
                    self.send_error(500)
                    return
                if isinstance(fault, str) and fault.startswith("once:"):
                    del owner.faults[path]
                    self.send_error(int(fault.removeprefix("once:")))
                    return
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                if isinstance(fault, str) and fault.startswith("retry-after"):
                    kind, _, value = fault.partition(":")
                    if kind == "retry-after-once":
                        del owner.faults[path]
                    self.send_response(503)
                    self.send_header("Retry-After", value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if isinstance(fault, str) and fault.startswith(("drip:", "drop")):
                    if fault == "drop-once":
                        del owner.faults[path]
                    data = Path(self.translate_path(path)).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        if fault.startswith("drip:"):
                            interval = float(fault.split(":", 1)[1])
                            for i in range(len(data)):
                                self.wfile.write(data[i : i + 1])
                                self.wfile.flush()
                                owner.bytes_served[path] += 1
                                time.sleep(interval)
                        else:
                            self.wfile.write(data[: len(data) // 2])
                            owner.bytes_served[path] += len(data) // 2
                    self.close_connection = True
                    return
                if fault == "gzip-bomb":  # 256 MiB of zeros in about 256 KiB of gzip
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.end_headers()
                    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
                    zeros = bytes(1 << 20)
                    with contextlib.suppress(OSError):
                        for _ in range(256):
                            piece = packer.compress(zeros)
                            self.wfile.write(piece)
                            owner.bytes_served[path] += len(piece)
                        self.wfile.write(packer.flush())
                    self.close_connection = True
                    return
                if fault == "gzip":  # what a CDN with compression on sends for JSON
                    body = gzip.compress(Path(self.translate_path(path)).read_bytes())
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    owner.bytes_served[path] += len(body)
                    return
                if fault in ("stall", "endless"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.end_headers()
                    if fault == "stall":
                        time.sleep(5)
                        return
                    chunk = b"A" * 65536
                    with contextlib.suppress(OSError):
                        for _ in range(2000):  # bounded: 128 MiB at most
                            self.wfile.write(chunk)
                            owner.bytes_served[path] += len(chunk)
                    return
                super().do_GET()

            def copyfile(self, source, outputfile) -> None:
                data = source.read()
                owner.bytes_served[self.path] += len(data)
                outputfile.write(data)

        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory))
        )
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._server.handle_error = lambda *_: None  # type: ignore[method-assign]
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def target_bytes(self) -> int:
        return sum(n for p, n in self.bytes_served.items() if p.startswith("/targets/"))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def demo_repo(dest: Path) -> Path:
    """A servable copy of fixtures/demo-repo (timestamp freshly re-signed)."""
    from scripts.make_demo_repo import prepare_demo_repo

    return prepare_demo_repo(dest)


def build_installer(
    served: tuple[Path, FaultServer],
    package_type: str,
    out: Path,
    *extra: str | os.PathLike[str],
    secret: str,
    sde: str,
    env: dict[str, str] | None = None,
    umask: int = -1,
) -> Path:
    """``package`` against the served demo repository, secret from the environment."""
    repo, server = served
    cli("package", "--type", package_type, "--update-url", server.url, "--update-roots",
        repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
        "--no-cache", "--outfile", out, *extra,
        env={"SOURCE_DATE_EPOCH": sde, "ORBIT_PACKAGER_ENROLL_SECRET": secret, **(env or {})},
        umask=umask)  # fmt: skip
    return out


def write_tar_gz(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT
) -> Path:
    """A .tar.gz of ``members`` (headers as given; data sets the size), for archive tests."""
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path
