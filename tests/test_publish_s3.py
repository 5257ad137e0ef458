"""`updates publish` to a real S3 API server (moto's, on 127.0.0.1): agents read the bucket over
anonymous HTTP, as they read S3 or a CDN in front of it."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.ngclient import Updater

from packager.repo.passphrase import PassphraseSource
from packager.repo.publish import CachePolicy, execute, plan_publish
from packager.repo.repository import UpdateRepository, utcnow
from packager.repo.stores import ConflictError, open_store
from tests.helpers import TEST_PASSPHRASES, cli, tree_bytes
from tests.s3server import CREDENTIALS, S3Server, cutting_proxy

ENV = {**TEST_PASSPHRASES, **CREDENTIALS}
CHANNEL = "orbit/linux/stable/orbit"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.close()


def _repo(path: Path, *, consistent: bool) -> UpdateRepository:
    repo = UpdateRepository(path, PassphraseSource(environ=TEST_PASSPHRASES))
    repo.init(consistent_snapshot=consistent)
    return repo


def _add(repo: UpdateRepository, tmp: Path, version: str) -> bytes:
    payload = tmp / f"orbit-{version}"
    payload.write_bytes(f"orbit {version}\n".encode() * 4000)
    repo.add(payload, name="orbit", platform="linux", version=version, tags=["stable"])
    return payload.read_bytes()


def _publish(s3: S3Server, repo: Path, bucket: str, *extra: str, check: bool = True) -> Any:
    return cli(
        "updates", "publish", "--path", repo, "--to", f"s3://{bucket}/tuf",
        "--endpoint-url", s3.endpoint, *extra, env=ENV, check=check,
    )  # fmt: skip


def _fresh_view(url: str, root_v1: bytes) -> tuple[int, bytes]:
    """(timestamp version, stable orbit) as a new agent reads the bucket."""
    with tempfile.TemporaryDirectory() as tmp:
        md, tg = Path(tmp, "md"), Path(tmp, "tg")
        md.mkdir()
        tg.mkdir()
        updater = Updater(str(md), url + "/", str(tg), url + "/targets/", bootstrap=root_v1)
        updater.refresh()
        info = updater.get_targetinfo(CHANNEL)
        assert info is not None
        data = Path(updater.download_target(info, str(tg / "orbit"))).read_bytes()
        version = json.loads((md / "timestamp.json").read_bytes())["signed"]["version"]
        return int(version), data


@pytest.mark.parametrize("consistent", [False, True], ids=["plain", "consistent-snapshot"])
def test_publish_to_s3_agents_verify_from_the_bucket(
    s3: S3Server, tmp_path: Path, consistent: bool
) -> None:
    from tests.gotuf.harness import client_targets, gotuf_binary

    repo = _repo(tmp_path / "repo", consistent=consistent)
    _add(repo, tmp_path, "1.0.0")
    bucket = s3.bucket()
    url = f"{s3.endpoint}/{bucket}/tuf"
    proc = _publish(s3, repo.path, bucket, "--verify-url", url)
    assert f"Verified {url}" in proc.stdout, proc.stdout + proc.stderr
    assert s3.objects(bucket, "tuf/") == tree_bytes(repo.repository)
    # Orbit's own client, from the bucket's anonymous HTTP endpoint.
    out = client_targets(gotuf_binary(), url, (repo.repository / "1.root.json").read_bytes())
    assert out["targets"][CHANNEL]["length"] == len((tmp_path / "orbit-1.0.0").read_bytes())
    client = s3.client()
    ts = client.head_object(Bucket=bucket, Key="tuf/timestamp.json")
    assert ts["CacheControl"] == "public, max-age=60"
    assert ts["ContentType"] == "application/json"
    root = client.head_object(Bucket=bucket, Key="tuf/1.root.json")
    assert root["CacheControl"] == "public, max-age=31536000"
    target = client.head_object(Bucket=bucket, Key=f"tuf/targets/{CHANNEL}")
    assert target["ContentType"] == "application/octet-stream"
    again = json.loads(_publish(s3, repo.path, bucket, "--json").stdout)
    assert again["uploads"] == []  # compared by length and the sha256 recorded at upload


@pytest.mark.parametrize("consistent", [False, True], ids=["plain", "consistent-snapshot"])
def test_agents_polling_during_publishes_never_see_a_broken_repository(
    s3: S3Server, tmp_path: Path, consistent: bool
) -> None:
    """Agents poll the bucket without pause while adds are published. One that keeps its
    metadata and its file (as Orbit does) never fails. A fresh one (a new install) never fails
    either with consistent snapshots; without them it may meet a name replaced in place during
    the upload (README: Publishing) -- counted, and then only as a length or hash refusal."""
    repo = _repo(tmp_path / "repo", consistent=consistent)
    payloads = [_add(repo, tmp_path, "1.0.0")]
    bucket = s3.bucket()
    url = f"{s3.endpoint}/{bucket}/tuf"
    _publish(s3, repo.path, bucket)
    root_v1 = (repo.repository / "1.root.json").read_bytes()
    agent: Counter[str] = Counter()
    fresh: Counter[str] = Counter()
    stop = threading.Event()
    store, downloads = tmp_path / "agent", tmp_path / "downloads"
    store.mkdir()
    downloads.mkdir()
    (store / "root.json").write_bytes(root_v1)

    def poll() -> None:
        while not stop.is_set():
            try:
                updater = Updater(
                    str(store), url + "/", str(downloads), url + "/targets/", bootstrap=None
                )
                updater.refresh()
                info = updater.get_targetinfo(CHANNEL)
                assert info is not None
                path = str(downloads / "orbit")
                if updater.find_cached_target(info, path) is None:
                    updater.download_target(info, path)
                agent["ok"] += 1
            except Exception as exc:  # any failure counts, and is shown
                agent[f"{type(exc).__name__}: {exc}"] += 1
            try:
                _fresh_view(url, root_v1)
                fresh["ok"] += 1
            except (
                exceptions.LengthOrHashMismatchError,
                exceptions.DownloadLengthMismatchError,
                exceptions.BadVersionNumberError,
            ) as exc:
                fresh["in-place window" if not consistent else f"{type(exc).__name__}: {exc}"] += 1
            except Exception as exc:
                fresh[f"{type(exc).__name__}: {exc}"] += 1

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(1, 4):
            payloads.append(_add(repo, tmp_path, f"1.{i}.0"))
            _publish(s3, repo.path, bucket, "--jobs", "2")
    finally:
        stop.set()
        poller.join()
    assert set(agent) == {"ok"}, agent
    assert set(fresh) <= {"ok", "in-place window"}, fresh
    assert agent["ok"] >= 10 and fresh["ok"] >= 5
    assert (downloads / "orbit").read_bytes() in payloads[-2:]
    assert _fresh_view(url, root_v1)[1] == payloads[-1]


def test_a_stale_copy_is_refused_and_the_bucket_is_unchanged(s3: S3Server, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", consistent=False)
    _add(repo, tmp_path, "1.0.0")
    stale = tmp_path / "stale"
    shutil.copytree(repo.path, stale)
    _add(repo, tmp_path, "1.1.0")
    bucket = s3.bucket()
    _publish(s3, repo.path, bucket)
    before = s3.objects(bucket)
    stale_repo = UpdateRepository(stale, PassphraseSource(environ=TEST_PASSPHRASES))
    for _ in range(3):
        stale_repo.timestamp()
    proc = _publish(s3, stale, bucket, check=False)
    assert proc.returncode == 2
    assert "published targets.json is version 3, this repository's is 2" in proc.stderr
    assert s3.objects(bucket) == before


def test_an_endpoint_dying_mid_publish_leaves_agents_the_old_repository(
    s3: S3Server, tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    bucket = s3.bucket()
    url = f"{s3.endpoint}/{bucket}/tuf"
    _publish(s3, repo.path, bucket)
    root_v1 = (repo.repository / "1.root.json").read_bytes()
    old = _fresh_view(url, root_v1)
    new_payload = _add(repo, tmp_path, "1.1.0")
    cut_at = f"PUT /{bucket}/tuf/snapshot.json ".encode()
    with cutting_proxy(s3.port, cut_at) as proxy:
        proc = cli(
            "updates", "publish", "--path", repo.path, "--to", f"s3://{bucket}/tuf",
            "--endpoint-url", proxy.endpoint, env=ENV, check=False, timeout=300,
        )  # fmt: skip
        assert proxy.cut.is_set()
    assert proc.returncode == 4, proc.stderr
    # what failed, in obstore's own first line (not a blank or "None")
    assert re.search(rf"s3://{bucket}/tuf: uploading \S+ failed: \w", proc.stderr), proc.stderr
    assert "failed: None" not in proc.stderr
    assert "agents still see the previous repository" in proc.stderr
    assert "run `updates publish` again" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _fresh_view(url, root_v1) == old
    _publish(s3, repo.path, bucket)
    assert _fresh_view(url, root_v1)[1] == new_payload


def test_a_publisher_racing_this_one_stops_it_before_the_switch(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timestamp.json is written only if it is still what was read when planning (If-Match)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    bucket = s3.bucket()
    _publish(s3, repo.path, bucket)
    _add(repo, tmp_path, "1.1.0")
    store = open_store(f"s3://{bucket}/tuf", endpoint_url=s3.endpoint)
    with repo.locked(), store.session():
        plan = plan_publish(repo, repo.load(), store, now=utcnow())
        raced = b'{"another": "publisher"}'
        s3.client().put_object(Bucket=bucket, Key="tuf/timestamp.json", Body=raced)
        with pytest.raises(ConflictError, match="changed while this publish ran"):
            execute(plan, store, CachePolicy())
    assert s3.objects(bucket, "tuf/")["timestamp.json"] == raced


def test_timestamp_if_expiring_within_publishes_what_cron_would(
    s3: S3Server, tmp_path: Path
) -> None:
    """The hourly job: `timestamp --if-expiring-within W --publish URL` is a no-op far from
    expiry (still publishing, so an earlier failed upload is finished) and re-signs and
    publishes once the timestamp is within W of expiring."""
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    bucket = s3.bucket()
    url = f"{s3.endpoint}/{bucket}/tuf"
    root_v1 = (repo.repository / "1.root.json").read_bytes()
    args = ["--publish", f"s3://{bucket}/tuf", "--endpoint-url", s3.endpoint, "--json"]
    first = json.loads(
        cli(
            "updates", "timestamp", "--path", repo.path, "--if-expiring-within", "1h", *args,
            env=ENV,
        ).stdout
    )  # fmt: skip
    assert first["signed"] is False
    assert len(first["published"]["uploads"]) == len(tree_bytes(repo.repository))
    version = _fresh_view(url, root_v1)[0]
    second = json.loads(
        cli(
            "updates", "timestamp", "--path", repo.path, "--if-expiring-within", "400h", *args,
            env=ENV,
        ).stdout
    )  # fmt: skip
    assert second["signed"] is True
    assert [u["name"] for u in second["published"]["uploads"]] == ["timestamp.json"]
    assert _fresh_view(url, root_v1)[0] == version + 1


def test_credentials_from_the_aws_cli_files_and_headers_as_configured(
    s3: S3Server, tmp_path: Path
) -> None:
    """No keys in the environment: the AWS CLI's credentials and config files (a static
    profile named by AWS_PROFILE) sign the requests. And --timestamp-max-age 0 / custom ages."""
    repo = _repo(tmp_path / "repo", consistent=True)
    _add(repo, tmp_path, "1.0.0")
    bucket = s3.bucket()
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = WRONGDEFAULT\naws_secret_access_key = x\n"
        "[publisher]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = s3cret\n"
    )
    (aws / "config").write_text("[profile publisher]\nregion = eu-west-3\n")
    env = {k: v for k, v in ENV.items() if not k.startswith("AWS_ACCESS") and k != "AWS_REGION"}
    env.pop("AWS_SECRET_ACCESS_KEY")
    env.update(
        AWS_ACCESS_KEY_ID="",  # set but empty, as unset: whatever the calling environment has
        AWS_SECRET_ACCESS_KEY="",
        AWS_SESSION_TOKEN="",
        AWS_REGION="",
        AWS_DEFAULT_REGION="",
        AWS_PROFILE="publisher",
        AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
        AWS_CONFIG_FILE=str(aws / "config"),
    )
    with cutting_proxy(s3.port, b"never") as proxy:
        cli(
            "updates", "publish", "--path", repo.path, "--to", f"s3://{bucket}/tuf",
            "--endpoint-url", proxy.endpoint, "--timestamp-max-age", "0",
            "--immutable-max-age", "1d", env=env,
        )  # fmt: skip
        heads = list(proxy.heads)
    puts = [h for h in heads if h.startswith(b"PUT ")]
    assert puts and all(b"Credential=AKIAFROMFILE/" in h and b"/eu-west-3/s3/" in h for h in puts)
    client = s3.client()
    assert client.head_object(Bucket=bucket, Key="tuf/timestamp.json")["CacheControl"] == (
        "no-cache"
    )
    assert client.head_object(Bucket=bucket, Key="tuf/2.snapshot.json")["CacheControl"] == (
        "public, max-age=86400"
    )
