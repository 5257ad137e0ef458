"""A real S3 API server on 127.0.0.1 for the publish tests: moto's standalone server (PyPI
``moto[server]``), started as a child process, one per test session.

Buckets made here are readable anonymously (a bucket policy granting ``s3:GetObject``), as an
update repository's bucket is: agents fetch ``http://127.0.0.1:PORT/BUCKET/KEY`` without
credentials, and a missing key answers 404. The publisher uses the static test credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    # Never ask an instance-metadata address: tests talk to 127.0.0.1 only.
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        binary = Path(sys.executable).with_name("moto_server")
        self._log = log.open("wb")
        self._proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log}") from None
                time.sleep(0.1)
        self._count = 0

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )

    def bucket(self, *, public: bool = True) -> str:
        """A new, empty bucket; anonymously readable unless ``public`` is False."""
        self._count += 1
        name = f"fleet-tuf-{self._count}"
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if public:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject"],
                        "Resource": [f"arn:aws:s3:::{name}/*"],
                    }
                ],
            }
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` (names relative to it) with its bytes."""
        s3 = self.client()
        out: dict[str, bytes] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                out[key[len(prefix) :].lstrip("/")] = body
        return out

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


class CuttingProxy:
    """A TCP proxy to ``upstream`` that dies for good when a request starting with ``cut_at``
    comes through (that request never reaches the server): the endpoint stopping mid-publish,
    at a chosen upload. Every connection is closed and later ones are refused."""

    def __init__(self, upstream_port: int, cut_at: bytes) -> None:
        self._upstream = upstream_port
        self._cut_at = cut_at
        self.cut = threading.Event()
        self.heads: list[bytes] = []  # the head of every request that came through
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if requests and data.startswith(self._cut_at):
                    self.close()
                    return
                if requests and data[:8].split(b" ")[0] in (b"GET", b"PUT", b"HEAD", b"DELETE"):
                    self.heads.append(data.split(b"\r\n\r\n", 1)[0])
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.cut.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


@contextlib.contextmanager
def cutting_proxy(upstream_port: int, cut_at: bytes) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream_port, cut_at)
    try:
        yield proxy
    finally:
        proxy.close()
