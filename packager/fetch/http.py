"""HTTP for the TUF client: requests with custom CA, client certificates, proxies from the
environment, connect/read timeouts, bounded retries with backoff, and a User-Agent.

python-tuf's default fetcher (urllib3) takes neither a client certificate nor a CA bundle per
repository, so ngclient gets this small FetcherInterface implementation instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface
from urllib3.util.retry import Retry

from packager import __version__

CHUNK = 256 * 1024
USER_AGENT = f"orbit-packager/{__version__}"


@dataclass(frozen=True)
class HttpOptions:
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5


ProgressHook = Callable[[str, int, int | None], None]  # (url, chunk bytes, total or None)


class RequestsFetcher(FetcherInterface):
    """ngclient fetcher on a requests session; remembers small metadata bodies for errors."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        retry = Retry(
            total=self.options.retries,
            connect=self.options.retries,
            read=0,  # a stalled read is a slow-retrieval attack or outage: fail, don't loop
            status=self.options.retries,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            backoff_factor=self.options.backoff,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Passed per request, not set on the session: requests lets REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE from the environment override Session.verify, which would silently
        # ignore --update-tls-certificate on machines that set them.
        self._verify: str | bool = str(self.options.ca_bundle) if self.options.ca_bundle else True
        self._cert: tuple[str, str] | str | None = None
        if self.options.client_cert:
            key = self.options.client_key
            self._cert = (
                (str(self.options.client_cert), str(key)) if key else str(self.options.client_cert)
            )
        self.progress: ProgressHook | None = None
        self.bytes_received = 0
        self.last_body: dict[str, bytes] = {}
        self.last_name = ""

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_name = url.rsplit("/", 1)[-1]
        try:
            response = self.session.get(
                url,
                stream=True,
                timeout=(self.options.connect_timeout, self.options.read_timeout),
                verify=self._verify,
                cert=self._cert,
            )
        except requests.exceptions.SSLError as exc:
            raise TlsError(url, exc, has_client_cert=self._cert is not None) from None
        except requests.exceptions.ConnectionError as exc:
            if "SSL" in str(exc):
                raise TlsError(url, exc, has_client_cert=self._cert is not None) from None
            raise ConnectError(url, exc) from None
        except requests.exceptions.Timeout:
            raise exceptions.SlowRetrievalError(f"timed out connecting to {url}") from None
        if response.status_code >= 400:
            response.close()
            raise exceptions.DownloadHTTPError(
                f"HTTP {response.status_code} for {url}", response.status_code
            )
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        return self._chunks(url, response, total)

    def _chunks(self, url: str, response: requests.Response, total: int | None) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        keep = name.endswith(".json")
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                self.bytes_received += len(chunk)
                if self.progress is not None:
                    self.progress(url, len(chunk), total)
                if keep and len(body) < 5_000_000:
                    body += chunk
                yield chunk
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if "timed out" in str(exc).lower() or isinstance(exc, requests.exceptions.Timeout):
                raise exceptions.SlowRetrievalError(
                    f"no data from {url} for {self.options.read_timeout:g}s"
                ) from None
            raise ConnectError(url, exc) from None
        finally:
            response.close()
        if keep:
            self.last_body[name] = bytes(body)


class ConnectError(exceptions.DownloadError):
    def __init__(self, url: str, cause: Exception) -> None:
        reason = "connection refused" if "refused" in str(cause).lower() else "cannot connect"
        super().__init__(f"{reason}: {url}")
        self.url = url


class TlsError(exceptions.DownloadError):
    def __init__(self, url: str, cause: Exception, *, has_client_cert: bool = False) -> None:
        text = str(cause)
        # With TLS 1.3 a server that wants a client certificate rejects it after the
        # handshake; the client sees the alert, or just the connection closing (EOF).
        dropped = "EOF occurred" in text or "reset by peer" in text.lower()
        if "CERTIFICATE_VERIFY_FAILED" in text:
            reason = "the server certificate is not trusted (pass --update-tls-certificate)"
        elif "CERTIFICATE_REQUIRED" in text or (dropped and not has_client_cert):
            reason = (
                "the server closed the connection: it requires a client certificate "
                "(pass --update-tls-client-certificate and --update-tls-client-key)"
            )
        else:
            token = re.search(r"\[SSL: ([A-Z0-9_]+)\]", text)
            reason = f"TLS handshake failed ({token.group(1) if token else type(cause).__name__})"
        super().__init__(f"TLS error for {url}: {reason}")
        self.url = url
