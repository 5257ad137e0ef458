"""The validated build request for ``package``: one dataclass, every flag rule in one place.

Checks run in ``fleetctl package``'s order with its messages, so scripts that parse them keep
working, then ours (URL shape, characters a value may hold, ...). All of it happens before any
download. The enroll secret never appears in ``repr`` or in any error message.
"""

from __future__ import annotations

import ntpath
import re
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from packager.errors import UsageError
from packager.fetch.client import FLEET_UPDATE_URL
from packager.repo.naming import check_component
from packager.tooling import DEFAULT_IMAGE, TOOLING_MODES

PACKAGE_TYPES = ("deb", "rpm", "pkg", "msi", "pkg.tar.zst")
LINUX_TYPES = ("deb", "rpm", "pkg.tar.zst")
FLEETCTL_TYPE_ORDER = ("pkg", "deb", "rpm", "msi", "pkg.tar.zst")  # as its error message lists them
COMPRESSIONS = {
    "deb": ("gzip", "xz", "zstd", "none"),
    "rpm": ("gzip", "xz", "zstd", "lzma"),
}
DEFAULT_COMPRESSION = {"deb": "gzip", "rpm": "gzip"}  # older dpkg cannot read zstd debs
_LOOSE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9][A-Za-z0-9-]*)+")
_HOST_PORT = re.compile(r"[A-Za-z0-9.\-\[\]:]+")
# host[:port][/path] without a scheme: a DNS name or IPv4 address, or a bracketed IPv6 one.
_BARE_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*)(:[0-9]{1,5})?(/[^\s]*)?")


def has_control_chars(value: str) -> bool:
    """C0/C1 controls, DEL and XML non-characters: never legitimate in a URL or secret, and
    each breaks a consumer (systemd ends lines at CR/LF, XML and MSI strings reject them)."""
    return any(unicodedata.category(c) in ("Cc", "Cs") or c in ("\ufffe", "\uffff") for c in value)


def check_value(value: str, flag: str) -> None:
    """A value that ends up in config files: printable, valid UTF-8, bounded."""
    if has_control_chars(value):
        raise UsageError(f"{flag} must not contain newlines or other control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{flag} is not valid UTF-8") from None
    if len(value) > 4096:
        raise UsageError(f"{flag} is longer than 4096 characters")


def go_duration(delta: timedelta) -> str:
    """Render like Go's time.Duration.String() (what fleetctl writes): 15m -> ``15m0s``."""
    total = delta.total_seconds()
    if total == 0:
        return "0s"
    whole = int(total)
    frac = round(total - whole, 9)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    sec = f"{seconds + frac:.9f}".rstrip("0").rstrip(".") if frac else str(seconds)
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"


def _check_pem_file(path: Path, what: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"failed to read {what} {str(path)!r}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise UsageError(f"failed to read {what} {str(path)!r}: invalid PEM file")


def _check_key_pair(cert: Path, key: Path, which: str) -> None:
    # Imported here: only builds with client certificates pay for cryptography's x509.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM certificate and key"
        raise UsageError(f"error loading {which} client certificate and key: {reason}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certificate.public_key().public_bytes(enc, public) != private.public_key().public_bytes(
        enc, public
    ):
        raise UsageError(
            f"error loading {which} client certificate and key: private key does not match "
            "public key"
        )


# [registry[:port]/]name[:tag][@digest]; docker checks the details, we make sure it starts with
# a letter or digit and holds no character a shell or docker's option parser would read.
_IMAGE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
MAX_SECRET_FILE = 64 * 1024


def read_secret_file(path: Path) -> str:
    """The enroll secret from a file: UTF-8, one trailing newline removed (``echo`` adds one)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise UsageError(f"--enroll-secret-file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE:
        raise UsageError(f"--enroll-secret-file {path} is larger than {MAX_SECRET_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--enroll-secret-file {path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise UsageError(f"--enroll-secret-file {path} is empty")
    return text


def parse_package_types(items: list[str]) -> tuple[str, ...]:
    """``["all"]`` or installer types, each known and named once (``--type`` and matrices)."""
    named = tuple(i.strip() for i in items)
    types = PACKAGE_TYPES if named == ("all",) else named
    for kind in types:
        if kind not in PACKAGE_TYPES:
            raise UsageError(f"{kind!r} is not one of {', '.join(PACKAGE_TYPES)} (or all)")
    if len(set(types)) != len(types):
        raise UsageError(f"{','.join(types)!r} names a type twice")
    return types


def fleetctl_only_flags(flags: dict[str, object]) -> list[str]:
    """Take fleetctl's flags that have no field here out of ``flags``: refuse the ones that
    cannot work on this machine, map the others to ours. Returns the notes to print."""
    if flags.pop("sign_identity", ""):
        raise UsageError(
            "--sign-identity names a macOS keychain identity, which only productsign on a Mac "
            "can use",
            hint="sign here with --sign-pem (or --sign-cert/--sign-key, or "
            "--macos-devid-pem-content) holding the Developer ID Installer certificate and key",
        )
    if flags.pop("notarize", False):
        raise UsageError(
            "--notarize is not supported: orbit-packager does not call Apple's notary service",
            hint="sign the pkg here, then run `rcodesign notarize --staple FILE.pkg` or "
            "`xcrun notarytool submit --wait` and `xcrun stapler staple`",
        )
    for key in (
        "app_store_connect_api_key_id",
        "app_store_connect_api_key_issuer",
        "app_store_connect_api_key_content",
    ):
        flags.pop(key, None)  # fleetctl reads them only for --notarize
    notes: list[str] = []
    if flags.pop("disable_open_folder", False):
        notes.append("--disable-open-folder changes nothing: orbit-packager never opens a folder")
    if flags.pop("local_wix_dir", None):
        notes.append("--local-wix-dir is unused: the MSI is written by orbit-packager, no WiX")
    if flags.pop("native_tooling", False):
        if flags.get("tooling") == "docker":
            raise UsageError("--native-tooling and --tooling docker contradict each other")
        flags["tooling"] = "native"
        if flags.get("outfile") is None and flags.get("outdir") is None:
            flags["outdir"] = Path("build")
            notes.append("--native-tooling: the installer goes to build/, as fleetctl puts it")
    return notes


@dataclass
class BuildRequest:
    """Everything ``package`` needs, validated. Field names follow fleetctl's flags."""

    type: str
    arch: str | None = None
    fleet_url: str = ""
    enroll_secret: str = field(default="", repr=False)
    enroll_secret_file: Path | None = None
    fleet_certificate: Path | None = None
    insecure: bool = False
    update_url: str = FLEET_UPDATE_URL
    update_roots: str | None = field(default=None, repr=False)
    update_tls_certificate: Path | None = None
    update_tls_client_certificate: Path | None = None
    update_tls_client_key: Path | None = None
    fleet_tls_client_certificate: Path | None = None
    fleet_tls_client_key: Path | None = None
    orbit_channel: str = "stable"
    osqueryd_channel: str = "stable"
    desktop_channel: str = "stable"
    fleet_desktop: bool = False
    fleet_desktop_alternative_browser_host: str = ""
    update_interval: timedelta = timedelta(minutes=15)
    disable_updates: bool = False
    service: bool = True
    debug: bool = False
    enable_scripts: bool = False
    host_identifier: str = "uuid"
    end_user_email: str = ""
    osquery_db: str = ""
    osquery_flagfile: Path | None = None
    disable_setup_experience: bool = False
    bypass_end_user_auth: bool = False
    identifier: str = "com.fleetdm.orbit"
    use_system_configuration: bool = False
    disable_keystore: bool = False
    fleet_managed_host_identity_certificate: bool = False
    cpu_quota: int = 0  # percent of one CPU for the systemd unit; 0: fleetctl's 20
    sign_pem: Path | None = None
    # fleetctl's --macos-devid-pem-content: a Developer ID certificate and key, as text.
    macos_devid_pem_content: str = field(default="", repr=False)
    sign_cert: Path | None = None
    sign_key: Path | None = None
    sign_timestamp_url: str | None = None
    outfile: Path | None = None
    outdir: Path | None = None  # where fleetctl's file name goes (default: the current dir)
    compression: str | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    offline: bool = False
    tooling: str = "auto"
    tooling_image: str = DEFAULT_IMAGE
    verbose: bool = False
    # What was read differently from how it was written (printed by the command line).
    notes: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.enroll_secret_file is not None:
            if self.enroll_secret:
                raise UsageError("give --enroll-secret or --enroll-secret-file, not both")
            self.enroll_secret = read_secret_file(self.enroll_secret_file)
        self.validate()

    # fleetctl's checks, in its order and words (reference fleet-packaging.md 1.1), then ours.
    def validate(self) -> None:
        if self.type not in PACKAGE_TYPES:
            listed = ", ".join(repr(t) for t in FLEETCTL_TYPE_ORDER)
            raise UsageError(f"type must be one of ({listed})")
        if bool(self.fleet_url) != bool(self.enroll_secret):
            raise UsageError("--enroll-secret and --fleet-url must be provided together")
        if self.insecure and self.fleet_certificate:
            raise UsageError("--insecure and --fleet-certificate may not be provided together")
        if self.insecure and self.update_tls_certificate:
            raise UsageError("--insecure and --update-tls-certificate may not be provided together")
        if self.host_identifier not in ("uuid", "instance"):
            raise UsageError(
                f"--host-identifier={self.host_identifier} is not supported, currently "
                "supported values are 'uuid' and 'instance'"
            )
        if bool(self.fleet_tls_client_certificate) != bool(self.fleet_tls_client_key):
            raise UsageError(
                "must specify both fleet-tls-client-certificate and fleet-tls-client-key"
            )
        if self.fleet_tls_client_certificate and self.fleet_tls_client_key:
            _check_key_pair(self.fleet_tls_client_certificate, self.fleet_tls_client_key, "fleet")
        if self.fleet_managed_host_identity_certificate:
            if self.type not in LINUX_TYPES:
                raise UsageError(
                    "--fleet-managed-host-identity-certificate is only supported for "
                    "deb/rpm/pkg.tar.zst packages"
                )
            if self.fleet_tls_client_certificate:
                raise UsageError(
                    "--fleet-managed-host-identity-certificate and "
                    "--fleet-tls-client-certificate may not be provided together"
                )
        if bool(self.update_tls_client_certificate) != bool(self.update_tls_client_key):
            raise UsageError(
                "must specify both update-tls-client-certificate and update-tls-client-key"
            )
        if self.update_tls_client_certificate and self.update_tls_client_key:
            _check_key_pair(
                self.update_tls_client_certificate, self.update_tls_client_key, "update"
            )
        if self.osquery_db:
            absolute = (
                ntpath.isabs(self.osquery_db)
                if self.type == "msi"
                else self.osquery_db.startswith("/")
            )
            if not absolute:
                raise UsageError(f"--osquery-db must be an absolute path: {self.osquery_db!r}")
        if self.end_user_email:
            if not _LOOSE_EMAIL.fullmatch(self.end_user_email):
                raise UsageError("Invalid email address specified for --end-user-email.")
            if self.type not in ("msi", *LINUX_TYPES):
                raise UsageError(
                    "Can only set --end-user-email when building an msi, deb, rpm, or "
                    "pkg.tar.zst package."
                )
        if self.fleet_certificate:
            _check_pem_file(self.fleet_certificate, "fleet server certificate")
        if self.update_tls_certificate:
            _check_pem_file(self.update_tls_certificate, "update server certificate")
        if self.use_system_configuration and self.type != "pkg":
            raise UsageError("--use-system-configuration is only available for pkg installers")
        if self.outfile is not None and not str(self.outfile).endswith(f".{self.type}"):
            raise UsageError(f"output file must end with .{self.type} for {self.type} packages")
        if self.arch is None:
            self.arch = "universal" if self.type == "pkg" else "amd64"
        if self.type == "pkg":
            if self.arch not in ("universal", "amd64", "arm64"):
                raise UsageError("arch for pkg must be one of ('universal', 'amd64', 'arm64')")
        elif self.arch not in ("amd64", "arm64"):
            raise UsageError("arch must be one of ('amd64', 'arm64')")
        self._validate_ours()

    def _validate_ours(self) -> None:
        if self.fleet_url:
            check_value(self.fleet_url, "--fleet-url")
            given = self.fleet_url
            if _BARE_HOST.fullmatch(given):
                # fleetctl's own usage says "URL (host:port)", and Orbit prefixes https:// to
                # such a value; the installer carries the full URL, so every reader agrees.
                self.fleet_url = "https://" + given
                self.notes.append(f"--fleet-url {given!r} has no scheme: using {self.fleet_url!r}")
            parts = urlsplit(self.fleet_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError(
                    f"--fleet-url {given!r} is not an http(s) URL",
                    hint="e.g. https://fleet.example.com",
                )
        if self.enroll_secret:
            check_value(self.enroll_secret, "--enroll-secret")
        parts = urlsplit(self.update_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--update-url {self.update_url!r} is not an http(s) URL")
        check_value(self.update_url, "--update-url")
        for flag, value in (
            ("--orbit-channel", self.orbit_channel),
            ("--osqueryd-channel", self.osqueryd_channel),
            ("--desktop-channel", self.desktop_channel),
        ):
            check_component(value, flag)
        host = self.fleet_desktop_alternative_browser_host
        if host and not _HOST_PORT.fullmatch(host):
            raise UsageError("--fleet-desktop-alternative-browser-host must be host[:port]")
        if self.osquery_db:
            check_value(self.osquery_db, "--osquery-db")
        if self.type == "msi":
            self._validate_msi_values()
        if not _IDENTIFIER.fullmatch(self.identifier):
            raise UsageError(
                f"--identifier {self.identifier!r} is not a reverse-DNS identifier",
                hint="e.g. com.example.orbit (letters, digits, '.', '-')",
            )
        signing = [self.sign_pem, self.sign_cert, self.sign_key, self.sign_timestamp_url]
        if any(signing) and self.type != "pkg":
            raise UsageError("--sign-pem/--sign-cert/--sign-key are only available for pkg")
        if self.sign_pem and (self.sign_cert or self.sign_key):
            raise UsageError("give either --sign-pem or --sign-cert with --sign-key, not both")
        if bool(self.sign_cert) != bool(self.sign_key):
            raise UsageError("--sign-cert and --sign-key go together")
        if self.macos_devid_pem_content:
            if self.type != "pkg":
                raise UsageError("--macos-devid-pem-content signs pkg installers only")
            if self.sign_pem or self.sign_cert:
                raise UsageError(
                    "give --macos-devid-pem-content or --sign-pem/--sign-cert, not both"
                )
            if "-----BEGIN " not in self.macos_devid_pem_content:
                raise UsageError(
                    "--macos-devid-pem-content holds no PEM block",
                    hint="it takes the PEM text itself (certificate and private key), "
                    "e.g. from FLEETCTL_MACOS_DEVID_PEM_CONTENT",
                )
        signed = self.sign_pem or self.sign_cert or self.macos_devid_pem_content
        if self.sign_timestamp_url and not signed:
            raise UsageError("--sign-timestamp-url needs --sign-pem or --sign-cert/--sign-key")
        if not 0 <= self.cpu_quota <= 100_000:
            raise UsageError(
                f"--cpu-quota {self.cpu_quota} is out of range",
                hint="a percentage of one CPU, 1 to 100000 (0: the default, 20)",
            )
        if self.cpu_quota and self.type not in LINUX_TYPES:
            self.notes.append(
                f"--cpu-quota sets the systemd unit of Linux packages: unused for {self.type}"
            )
        if self.outfile is not None and self.outdir is not None:
            raise UsageError("give --outfile or --outdir, not both")
        if self.update_interval < timedelta(seconds=1):
            raise UsageError("--update-interval must be at least 1s")
        if self.compression is not None:
            allowed = COMPRESSIONS.get(self.type)
            if allowed is None:
                raise UsageError(f"--compression is not supported for {self.type}")
            if self.compression not in allowed:
                raise UsageError(
                    f"--compression for {self.type} must be one of {', '.join(allowed)}"
                )
        if self.tooling not in TOOLING_MODES:
            raise UsageError(f"--tooling must be one of {', '.join(TOOLING_MODES)}")
        if not _IMAGE_REFERENCE.fullmatch(self.tooling_image):
            # Never let a value that docker would read as an option reach its command line.
            raise UsageError(
                f"--tooling-image {self.tooling_image!r} is not a Docker image reference",
                hint="e.g. orbit-packager:0.1.0 or registry.example.com/orbit-packager@sha256:…",
            )
        if self.no_cache and (self.cache_dir or self.offline):
            raise UsageError("--no-cache cannot be combined with --cache-dir or --offline")
        for f in fields(self):
            value = getattr(self, f.name)
            wants_file = f.name.endswith(("certificate", "key", "flagfile", "pem", "cert"))
            if isinstance(value, Path) and wants_file and not value.is_file():
                flag = "--" + f.name.replace("_", "-")
                raise UsageError(f"{flag} file {value} does not exist")

    def _validate_msi_values(self) -> None:
        """An MSI stores its strings in one Windows codepage, which it declares (see
        packager/writers/msidb.py): build-time values that no single codepage carries together
        (e.g. Greek and Cyrillic) cannot read back exactly, so they are refused; any of them
        can still be given when installing."""
        from packager.writers.msidb import choose_codepage

        values = {
            "--enroll-secret": self.enroll_secret,
            "--fleet-url": self.fleet_url,
            "--update-url": self.update_url,
            "--end-user-email": self.end_user_email,
            "--osquery-db": self.osquery_db,
            "--fleet-desktop-alternative-browser-host": self.fleet_desktop_alternative_browser_host,
            "--orbit-channel": self.orbit_channel,
            "--osqueryd-channel": self.osqueryd_channel,
            "--desktop-channel": self.desktop_channel,
        }
        if choose_codepage(values.values()) is not None:
            return
        flags = [flag for flag, value in values.items() if not value.isascii()]
        raise UsageError(
            f"{' and '.join(flags)} {'mixes' if len(flags) == 1 else 'mix'} characters that no "
            "single Windows codepage holds, and an MSI stores its strings in one",
            hint="use one script per build, or pass the value when installing: "
            "msiexec /i fleet-osquery.msi FLEET_SECRET=... FLEET_URL=...",
        )

    @property
    def effective_compression(self) -> str:
        return self.compression or DEFAULT_COMPRESSION.get(self.type, "gzip")

    @property
    def update_interval_go(self) -> str:
        return go_duration(self.update_interval)
