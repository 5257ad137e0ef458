"""Issue 3, acceptance 4 and 6: `verify` on good and broken repositories; mTLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import Expirations, UpdateRepository, utcnow
from tests.helpers import FIXTURES, TEST_PASSPHRASES, FaultServer, cli

EXE = FIXTURES / "executables"


def _lib(repo: Path, *, signed_at: datetime | None = None, **exp: timedelta) -> UpdateRepository:
    """The repository library; ``signed_at``: the clock it signs with (expiries count from it)."""
    return UpdateRepository(
        repo,
        PassphraseSource(environ=TEST_PASSPHRASES),
        Expirations(**exp) if exp else None,
        now=(lambda: signed_at) if signed_at else utcnow,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    lib = _lib(path)
    lib.init()
    lib.add(
        EXE / "orbit-linux-x86_64",
        name="orbit",
        platform="linux",
        version="1.2.3",
        tags=["1.2", "stable"],
    )
    lib.add(
        EXE / "orbit-windows-x86_64.exe",
        name="orbit",
        platform="windows",
        version="1.2.3",
        tags=["stable"],
    )
    lib.add(
        EXE / "orbit-linux-aarch64",
        name="osqueryd",
        platform="linux-arm64",
        version="5.0.1",
        tags=["stable"],
    )
    return path


def _verify(server: FaultServer, repo: Path, *extra: str | Path):
    return cli(
        "verify",
        "--update-url",
        server.url,
        "--update-roots",
        repo / "repository/1.root.json",
        *extra,
        check=False,
    )


def test_verify_good_repository(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    out = _verify(server, repo)
    assert out.returncode == 0, out.stderr
    assert "targets verified: 7/7" in out.stdout
    assert "orbit/linux: 1.2=1.2.3, 1.2.3=1.2.3, stable=1.2.3" in out.stdout
    assert "timestamp  v4" in out.stdout
    data = json.loads(_verify(server, repo, "--json").stdout)
    assert data["ok"] is True
    # In the order of trust, as the text report shows them: root first, timestamp last.
    assert [(r["role"], r["version"]) for r in data["roles"]] == [
        ("root", 1),
        ("targets", 4),
        ("snapshot", 4),
        ("timestamp", 4),
    ]
    assert data["channels"]["osqueryd/linux-arm64"] == {"5.0.1": "5.0.1", "stable": "5.0.1"}

    # --target filters; --download-dir keeps verified copies
    kept = tmp_path / "kept"
    out = _verify(server, repo, "--target", "orbit/windows/*", "--download-dir", kept)
    assert out.returncode == 0 and "targets verified: 2/2" in out.stdout
    assert (kept / "orbit/windows/stable/orbit.exe").read_bytes() == (
        EXE / "orbit-windows-x86_64.exe"
    ).read_bytes()
    # roots given inline as JSON work like a file
    inline = cli(
        "verify",
        "--update-url",
        server.url,
        "--update-roots",
        (repo / "repository/1.root.json").read_text(),
        "--target",
        "orbit/linux/1.2/*",
        check=False,
    )
    assert inline.returncode == 0 and "targets verified: 1/1" in inline.stdout


def test_verify_tampered_target(server: FaultServer, repo: Path) -> None:
    f = repo / "repository/targets/orbit/linux/1.2/orbit"
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    out = _verify(server, repo)
    assert out.returncode == 4
    assert "targets verified: 6/7" in out.stdout
    assert "error: target orbit/linux/1.2/orbit from http://127.0.0.1:" in out.stdout
    assert "does not match its TUF metadata" in out.stdout


def test_verify_expired_timestamp(server: FaultServer, repo: Path) -> None:
    # Signed 15 days ago with the default 14 days: expired a day ago, whatever the machine load.
    _lib(repo, signed_at=utcnow() - timedelta(days=15)).timestamp()
    out = _verify(server, repo)
    assert out.returncode == 4
    assert "timestamp.json" in out.stderr and "has expired" in out.stderr
    assert "orbit-packager updates timestamp" in out.stderr


def test_verify_warns_before_expiry(server: FaultServer, repo: Path) -> None:
    _lib(repo, timestamp=timedelta(hours=10)).timestamp()
    out = _verify(server, repo)  # default --warn 72h
    assert out.returncode == 1
    assert "warning: timestamp.json expiring" in out.stdout
    assert _verify(server, repo, "--warn", "1h").returncode == 0


def test_verify_wrong_root(server: FaultServer, repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _lib(other).init()
    out = cli(
        "verify",
        "--update-url",
        server.url,
        "--update-roots",
        other / "repository/root.json",
        check=False,
    )
    assert out.returncode == 4
    assert "bad signature" in out.stderr


def test_verify_needs_roots_for_custom_url(server: FaultServer) -> None:
    out = cli("verify", "--update-url", server.url, check=False)
    assert out.returncode == 2 and "--update-roots is required" in out.stderr


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, san_ip: bool = False):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if san_ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    path.write_bytes(data)
    return path


def test_mtls(repo: Path, tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _cert("test CA", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    srv_cert = _cert("127.0.0.1", ca_key, ca_name, srv_key, san_ip=True)
    cli_cert = _cert("agent builder", ca_key, ca_name, cli_key)
    ca_pem = _write(tmp_path / "ca.pem", ca)
    srv_pem = _write(tmp_path / "server.pem", srv_cert, srv_key)
    client_crt, client_key = (
        _write(tmp_path / "client.crt", cli_cert),
        _write(tmp_path / "client.key", key=cli_key),
    )

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(srv_pem)
    ctx.load_verify_locations(ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = FaultServer(repo / "repository", tls=ctx)
    try:
        roots = repo / "repository/1.root.json"
        base: list[str | Path] = ["verify", "--update-url", server.url, "--update-roots", roots]
        ok = cli(
            *base,
            "--update-tls-certificate",
            ca_pem,
            "--update-tls-client-certificate",
            client_crt,
            "--update-tls-client-key",
            client_key,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
        assert "targets verified: 7/7" in ok.stdout

        no_client = cli(*base, "--update-tls-certificate", ca_pem, check=False)
        assert no_client.returncode == 4
        assert "client certificate" in no_client.stderr, no_client.stderr
        assert len(no_client.stderr.strip().splitlines()) == 1

        untrusted = cli(
            *base,
            "--update-tls-client-certificate",
            client_crt,
            "--update-tls-client-key",
            client_key,
            check=False,
        )
        assert untrusted.returncode == 4
        assert "not trusted" in untrusted.stderr and "--update-tls-certificate" in untrusted.stderr

        half = cli(*base, "--update-tls-client-certificate", client_crt, check=False)
        assert half.returncode == 2 and "go together" in half.stderr
    finally:
        server.close()
