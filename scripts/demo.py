"""`make demo`: the update-repository commands end to end, then `verify` and `fetch` read the
result over HTTP through TUF, trusting only the first root.

Everything happens in a private temporary directory that is removed at the end; passphrases are
demo-only values passed through the FLEET_*_PASSPHRASE variables, exactly as in CI.
"""

from __future__ import annotations

import http.server
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLES = ROOT / "fixtures" / "executables"
DEMO_PASSPHRASES = {
    "FLEET_ROOT_PASSPHRASE": "demo-root",
    "FLEET_TARGETS_PASSPHRASE": "demo-targets",
    "FLEET_SNAPSHOT_PASSPHRASE": "demo-snapshot",
    "FLEET_TIMESTAMP_PASSPHRASE": "demo-timestamp",
}


def run(*args: str | Path, ok: tuple[int, ...] = (0,)) -> str:
    shown = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ orbit-packager {shown}", flush=True)
    env = {**os.environ, **DEMO_PASSPHRASES}
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: command failed with exit code {proc.returncode}")
    return proc.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="orbit-packager-demo-") as tmp:
        work = Path(tmp)
        repo = work / "fleet-updates"
        run("updates", "init", "--path", repo)
        for name, platform, exe, version, tags in [
            ("orbit", "linux", "orbit-linux-x86_64", "1.40.0", ["1.40", "1", "stable"]),
            ("osqueryd", "linux", "orbit-linux-x86_64", "5.13.1", ["5.13", "stable"]),
            ("orbit", "windows", "orbit-windows-x86_64.exe", "1.40.0", ["stable"]),
        ]:
            tag_args = [a for t in tags for a in ("-t", t)]
            run("updates", "add", "--path", repo, "--target", EXECUTABLES / exe, "--name", name,
                "--platform", platform, "--version", version, *tag_args)  # fmt: skip
        run("updates", "timestamp", "--path", repo)
        run("updates", "rotate", "targets", "--path", repo)
        run("updates", "remove", "--path", repo, "orbit/linux/1")
        run("updates", "status", "--path", repo, "--targets", ok=(0, 1))

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_Quiet, directory=str(repo / "repository"))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        roots = repo / "repository" / "1.root.json"  # trust only the first root
        try:
            run("verify", "--update-url", url, "--update-roots", roots)
            run("fetch", "--type", "deb", "--update-url", url, "--update-roots", roots,
                "--no-cache", "--outdir", work / "deb-targets")  # fmt: skip
        finally:
            server.shutdown()
            server.server_close()
        print("\ndemo: the repository stayed valid for TUF clients through every command.")


if __name__ == "__main__":
    main()
