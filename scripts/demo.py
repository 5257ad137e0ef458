"""`make demo`: build fleetd installers end to end, with no internet.

1. Copy the demo update repository (fixtures/demo-repo, made with our own `updates` commands from
   the stand-in executables) and re-sign its timestamp with its committed test-only keys.
2. Serve it on 127.0.0.1 and check it with `verify`, trusting only its first root.
3. Build every supported installer type from it with `package` into dist/.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.make_demo_repo import DEMO_PASSPHRASES, prepare_demo_repo

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
TYPES = ["deb", "rpm", "msi", "pkg"]


def run(*args: str | Path, ok: tuple[int, ...] = (0,)) -> str:
    shown = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ orbit-packager {shown}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "packager", *map(str, args)],
        # The secret goes through the environment: command lines are visible to every user.
        env={**os.environ, **DEMO_PASSPHRASES, "ORBIT_PACKAGER_ENROLL_SECRET": "demo-secret"},
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
    DIST.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orbit-packager-demo-") as tmp:
        repo = prepare_demo_repo(Path(tmp) / "demo-repo")
        print(f"demo: update repository copied to {repo}, timestamp re-signed")
        run("updates", "status", "--path", repo, ok=(0, 1))
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_Quiet, directory=str(repo / "repository"))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        roots = repo / "repository" / "1.root.json"
        built = []
        try:
            run("verify", "--update-url", url, "--update-roots", roots, "--warn", "1h")
            for kind in TYPES:
                out = run(
                    "package", "--type", kind, "--fleet-url", "https://fleet.example.com",
                    "--update-url", url,
                    "--update-roots", roots, "--fleet-desktop", "--no-cache",
                    "--outfile", DIST / f"fleet-osquery-demo.{kind}",
                )  # fmt: skip
                built.append(out.split()[1])
        finally:
            server.shutdown()
            server.server_close()
    print("\ndemo: installers built (stand-in agent binaries; for trying the tooling only):")
    for path in built:
        print(f"  {path}")


if __name__ == "__main__":
    main()
