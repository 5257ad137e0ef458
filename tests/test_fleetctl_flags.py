"""Issue 15, flag compatibility: scripts written for `fleetctl package` run unchanged.

fleetctl parses with urfave/cli over Go's flag package: `--service=false`, `--debug=1` and
`-fleet-url URL` (one dash) are valid there, and its usage calls the Fleet URL "URL
(host:port)". The oracle for "the same meaning" is reproducibility: a build written in Go's
syntax is byte for byte the build written in ours (same SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest

from tests.helpers import FaultServer, cli

SDE = "1700000000"


def _package(
    served: tuple[Path, FaultServer], out: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    repo, server = served
    return cli(
        "package", "--type", "deb", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache", "--outfile", out, *flags,
        env={"SOURCE_DATE_EPOCH": SDE, **(env or {})}, check=False, timeout=300,
    )  # fmt: skip


def _env_file(deb: Path, tmp_path: Path) -> str:
    dest = tmp_path / f"x-{deb.stem}"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return (dest / "etc/default/orbit").read_text()


def test_go_syntax_builds_the_same_installer(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    ours = _package(
        served, tmp_path / "ours.deb",
        "--fleet-url", "https://fleet.example.com:8443", "--enroll-secret=-debug",
        "--no-service", "--debug", "--disable-updates",
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    go = _package(
        served, tmp_path / "go.deb",
        "-fleet-url", "fleet.example.com:8443", "--enroll-secret", "-debug",
        "--service=false", "-debug=1", "--disable-updates=T", "--enable-scripts=false",
        env={"FLEETCTL_ENABLE_SCRIPTS": "true"},  # the explicit =false wins over the variable
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    assert (tmp_path / "go.deb").read_bytes() == (tmp_path / "ours.deb").read_bytes()
    assert (
        "orbit-packager: note: --fleet-url 'fleet.example.com:8443' has no scheme: using "
        "'https://fleet.example.com:8443'\n"
    ) in go.stderr
    env = _env_file(tmp_path / "go.deb", tmp_path)
    assert 'ORBIT_FLEET_URL="https://fleet.example.com:8443"' in env
    assert 'ORBIT_ENROLL_SECRET="-debug"' in env  # a value is never read as a flag
    assert 'ORBIT_DEBUG="true"' in env
    assert "ENABLE_SCRIPTS" not in env


def test_environment_true_and_flag_absent(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    """The variable alone still turns the option on (Go's ParseBool spelling)."""
    out = _package(
        served, tmp_path / "e.deb", "--fleet-url", "https://f.example.com", "--enroll-secret", "s",
        env={"FLEETCTL_ENABLE_SCRIPTS": "TRUE"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert 'ORBIT_ENABLE_SCRIPTS="true"' in _env_file(tmp_path / "e.deb", tmp_path)


@pytest.mark.parametrize("value", ["yes!", "", "2", "on"])
def test_a_boolean_that_go_would_refuse(value: str, tmp_path: Path) -> None:
    out = cli("package", "--type", "deb", f"--debug={value}", check=False, cwd=tmp_path)
    assert out.returncode == 2
    assert f"{value!r} is not a boolean: use --debug=true or --debug=false" in out.stderr
    assert list(tmp_path.iterdir()) == []


def _commands() -> list[tuple[str, click.Command]]:
    from packager.cli import cli as root

    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        found.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", root)
    return found


@pytest.mark.parametrize("name,command", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help(name: str, command: click.Command) -> None:
    missing = [
        p.opts[0]
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert missing == [], f"{name or 'orbit-packager'}: {missing}"


def test_package_help_is_grouped_and_names_the_variables() -> None:
    out = cli("package", "--help").stdout
    titles = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert titles[1:] == [
        "Target:", "Fleet and Orbit settings:", "Updates:", "Signing (pkg):", "Output and build:",
    ]  # fmt: skip
    section = out.split("Fleet and Orbit settings:")[1].split("Updates:")[0]
    assert "--fleet-url" in section and "ORBIT_PACKAGER_FLEET_URL" in section
    for variable in (
        "FLEETCTL_ENABLE_SCRIPTS",
        "FLEETCTL_END_USER_EMAIL",
        "ORBIT_PACKAGER_TIMEOUT",
    ):
        assert variable in out


def _unit_and_env(deb: Path, tmp_path: Path) -> tuple[str, str]:
    dest = tmp_path / f"x-{deb.stem}"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    unit = (dest / "usr/lib/systemd/system/orbit.service").read_text()
    return unit, (dest / "etc/default/orbit").read_text()


def test_fleetctl_flags_with_meaning_here(served: tuple[Path, FaultServer], tmp_path: Path) -> None:
    """--fleet-managed-host-identity-certificate (by its variable), --cpu-quota, and the flags
    that mean nothing here, each with its note; --native-tooling puts the installer in build/
    (made 0700) under fleetctl's name, as fleetctl does."""
    repo, server = served
    work = tmp_path / "work"
    work.mkdir()
    out = cli(
        "package", "--type", "deb", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache",
        "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s",
        "--cpu-quota", "150", "--native-tooling", "--disable-open-folder",
        "--local-wix-dir", "C:/wix", "--notarize=false",
        env={"FLEETCTL_FLEET_MANAGED_HOST_IDENTITY_CERTIFICATE": "1"}, cwd=work, check=False,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    notes = [line for line in out.stderr.splitlines() if "note:" in line]
    assert notes == [
        "orbit-packager: note: --disable-open-folder changes nothing: orbit-packager never "
        "opens a folder",
        "orbit-packager: note: --local-wix-dir is unused: the MSI is written by orbit-packager, "
        "no WiX",
        "orbit-packager: note: --native-tooling: the installer goes to build/, as fleetctl puts it",
    ]
    (deb,) = (work / "build").iterdir()
    assert deb.name == "fleet-osquery_1.40.0_amd64.deb"
    assert (work / "build").stat().st_mode & 0o777 == 0o700
    unit, env = _unit_and_env(deb, tmp_path)
    assert "\nCPUQuota=150%\n" in unit
    assert 'ORBIT_FLEET_MANAGED_HOST_IDENTITY_CERTIFICATE="true"' in env


def _client_pair(cert_path: Path, key_path: Path) -> None:
    """A real certificate and its key, so the pair check passes and the next rule speaks."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--type", "msi", "--fleet-managed-host-identity-certificate"],
         "--fleet-managed-host-identity-certificate is only supported for deb/rpm/pkg.tar.zst "
         "packages"),
        (["--type", "deb", "--fleet-managed-client-certificate", "--fleet-tls-client-certificate",
          "CERT", "--fleet-tls-client-key", "KEY"],
         "--fleet-managed-host-identity-certificate and --fleet-tls-client-certificate may not "
         "be provided together"),
        (["--type", "deb", "--cpu-quota", "100001"], "--cpu-quota 100001 is out of range"),
        (["--type", "deb", "--cpu-quota", "-1"], "--cpu-quota -1 is out of range"),
        (["--type", "pkg", "--sign-identity", "Developer ID Installer: X"],
         "--sign-identity names a macOS keychain identity"),
        (["--type", "pkg", "--notarize"], "--notarize is not supported"),
        (["--type", "deb", "--native-tooling", "--tooling", "docker"],
         "--native-tooling and --tooling docker contradict each other"),
        (["--type", "deb", "--outfile", "x.deb", "--outdir", "d"],
         "give --outfile or --outdir, not both"),
        (["--type", "deb", "--macos-devid-pem-content", "x"],
         "--macos-devid-pem-content signs pkg installers only"),
        (["--type", "pkg", "--macos-devid-pem-content", "not a pem"],
         "--macos-devid-pem-content holds no PEM block"),
    ],
)  # fmt: skip
def test_fleetctl_flags_refused_with_one_line(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    _client_pair(tmp_path / "CERT", tmp_path / "KEY")
    out = cli("package", *flags, check=False, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr  # the line (and a hint)
    assert "not a pem" not in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CERT", "KEY"]


def test_devid_pem_content_signs_as_sign_pem_does(
    served: tuple[Path, FaultServer], tmp_path: Path
) -> None:
    """fleetctl's --macos-devid-pem-content (here by its variable, as CI passes it) signs as
    --sign-pem does with a file of that text: a signature that verifies, by that certificate. The text is never printed, and no copy of it stays on disk.
    (Signed pkgs are not byte-reproducible: the signing engine stamps the current time.)"""
    from apple_platform import certificates, reading

    cert = certificates.generate_self_signed("Orbit Test", profile="developer-id-installer")
    pem = cert.write_pem_bundle(tmp_path / "signer.pem")
    text = Path(pem).read_text()
    repo, server = served
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    common: list[str | Path] = [
        "package", "--type", "pkg", "--update-url", server.url,
        "--update-roots", repo / "repository/root.json", "--no-cache",
        "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s",
    ]  # fmt: skip
    env = {"SOURCE_DATE_EPOCH": SDE, "TMPDIR": str(tmp)}
    a = cli(*common, "--sign-pem", pem, "--outfile", tmp_path / "a.pkg", env=env, timeout=300)
    b = cli(
        *common, "--outfile", tmp_path / "b.pkg", "--verbose",
        env={**env, "FLEETCTL_MACOS_DEVID_PEM_CONTENT": text}, timeout=300,
    )  # fmt: skip
    common_name = cert_common_name(pem)
    for signed in (tmp_path / "a.pkg", tmp_path / "b.pkg"):
        toc = reading.read_signature(str(signed))[0]["entity"]["xar_table_of_contents"]
        assert toc["rsa_signature_verifies"] and toc["cms_signature_verifies"], signed
        (subject,) = [c["subject"] for c in toc["cms_signature"]["certificates"]]
        assert subject.startswith(f"CN={common_name}, "), (signed, subject)
    key_line = next(line for line in text.splitlines() if "BEGIN" not in line)
    assert key_line not in a.stdout + a.stderr + b.stdout + b.stderr
    assert list(tmp.iterdir()) == []


def cert_common_name(pem: Path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.load_pem_x509_certificate(Path(pem).read_bytes()).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_package_version() -> None:
    out = cli("package", "--version")
    assert out.stdout.startswith("orbit-packager, version ")
