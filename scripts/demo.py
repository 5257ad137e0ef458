"""`make demo`: the update-repository commands end to end, then a real TUF client reads the result.

Everything happens in a private temporary directory that is removed at the end; passphrases are
demo-only values passed through the FLEET_*_PASSPHRASE variables, exactly as in CI.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

from tuf.ngclient import Updater

DEMO_PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "demo-root",
    "FLEET_TARGETS_PASSPHRASE": "demo-targets",
    "FLEET_SNAPSHOT_PASSPHRASE": "demo-snapshot",
    "FLEET_TIMESTAMP_PASSPHRASE": "demo-timestamp",
}


def run(*args: str) -> str:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"\n$ orbit-packager {shown}", flush=True)
    env = {**os.environ, **DEMO_PASSPHRASES}
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode not in (0, 1):  # status exits 1 on a warning, which the demo shows
        raise SystemExit(f"demo: command failed with exit code {proc.returncode}")
    return proc.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def client_check(repository: Path, root_v1: bytes, work: Path) -> None:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Quiet, directory=str(repository))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        md, tg = work / "client-metadata", work / "client-targets"
        md.mkdir()
        tg.mkdir()
        print(f"\n# python-tuf client, trusting only root v1, reads {url}")
        updater = Updater(str(md), url + "/", str(tg), url + "/targets/", bootstrap=root_v1)
        updater.refresh()
        listed = json.loads((md / "targets.json").read_bytes())["signed"]["targets"]
        for path in sorted(listed):
            info = updater.get_targetinfo(path)
            if info is None:
                raise SystemExit(f"demo: {path} vanished from targets")
            local = updater.download_target(
                info, str(tg / hashlib.sha256(path.encode()).hexdigest())
            )
            size = Path(local).stat().st_size
            print(f"  verified {path} ({size} bytes, sha512 ok)")
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="orbit-packager-demo-") as tmp:
        work = Path(tmp)
        repo = work / "fleet-updates"
        stand_ins = work / "bin"
        stand_ins.mkdir()
        orbit = stand_ins / "orbit"
        osqueryd = stand_ins / "osqueryd"
        orbit.write_bytes(b"#!/bin/sh\necho 'orbit stand-in 1.30.0'\n")
        osqueryd.write_bytes(b"#!/bin/sh\necho 'osqueryd stand-in 5.12.1'\n")

        run("updates", "init", "--path", str(repo))
        root_v1 = (repo / "repository" / "1.root.json").read_bytes()
        run(
            "updates",
            "add",
            "--path",
            str(repo),
            "--target",
            str(orbit),
            "--name",
            "orbit",
            "--platform",
            "linux",
            "--version",
            "1.30.0",
            "-t",
            "1.30",
            "-t",
            "1",
            "-t",
            "stable",
        )
        run(
            "updates",
            "add",
            "--path",
            str(repo),
            "--target",
            str(osqueryd),
            "--name",
            "osqueryd",
            "--platform",
            "linux",
            "--version",
            "5.12.1",
            "-t",
            "5.12",
            "-t",
            "stable",
        )
        run("updates", "timestamp", "--path", str(repo))
        run("updates", "rotate", "targets", "--path", str(repo))
        run("updates", "remove", "--path", str(repo), "orbit/linux/1")
        run("updates", "status", "--path", str(repo), "--targets")
        client_check(repo / "repository", root_v1, work)
        print("\ndemo: the repository stayed valid for a TUF client through every command.")


if __name__ == "__main__":
    main()
