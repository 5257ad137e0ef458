"""HTTP for the TUF client: requests with custom CA, client certificates, proxies from the
environment, connect/read timeouts, bounded retries with backoff, and a User-Agent.

python-tuf's default fetcher (urllib3) takes neither a client certificate nor a CA bundle per
repository, so ngclient gets this small FetcherInterface implementation instead.

No server can hold a command for long: a ``Retry-After`` longer than ``retry_after_cap`` is
shortened to it, a body that arrives slower than ``min_rate`` bytes/s over ``rate_window`` seconds
is abandoned (a read timeout alone never trips on a byte every 20 s), and every request of a
command shares one deadline (``--timeout``). A connection dropped mid-body is retried like a
refused one, resuming the stream where it broke, so callers see one uninterrupted body.

One fetcher serves several threads at once (packager.fetch.targets downloads targets in
parallel): the per-request state is thread-local, and a :class:`CancelToken` stops every body
of a batch between chunks, cutting a read that waits on the network short.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface
from urllib3.util.retry import Retry

from packager import __version__

CHUNK = 256 * 1024
MAX_CONNECTIONS = 8  # connections kept per host: at least the parallel downloads
USER_AGENT = f"orbit-packager/{__version__}"
DEFAULT_TIMEOUT = 300.0  # seconds for all downloads of one command (--timeout)
RETRY_STATUSES = (429, 500, 502, 503, 504)

Clock = Callable[[], float]


@dataclass(frozen=True)
class HttpOptions:
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # longest silence on the socket
    retries: int = 3
    backoff: float = 0.5
    retry_after_cap: float = 30.0  # longest Retry-After obeyed
    min_rate: float = 1024.0  # bytes/s a body must average over every rate_window
    rate_window: float = 30.0
    # Seconds for every download of the command together; None: the command's --timeout
    # (see command_timeout), else DEFAULT_TIMEOUT; math.inf: no limit.
    timeout: float | None = None
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)


ProgressHook = Callable[[str, int, int | None], None]  # (url, chunk bytes, total or None)


class Cancelled(BaseException):
    """A download stopped because its batch was cancelled (another target failed, or the
    command was interrupted). Not an Exception: nothing on the way may take it for a failure to
    explain; the files it was writing are removed as the exception passes."""


class CancelToken:
    """Stops the downloads of one batch: each checks it between chunks and before a retry, and
    :meth:`cancel` shuts down the sockets bodies are being read from, so no read waits on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reading: set[requests.Response] = set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: raise Cancelled as soon as the batch is cancelled."""
        if self._event.wait(seconds):
            raise Cancelled

    def cancel(self) -> None:
        with self._lock:  # held: a tracked body's socket stays open until it is shut down
            self._event.set()
            for response in self._reading:
                _shut_down(response)

    def track(self, response: requests.Response) -> None:
        """``response``'s body is about to be read; Cancelled if the batch already is. Untrack
        it before closing it."""
        with self._lock:
            if self._event.is_set():
                raise Cancelled
            self._reading.add(response)

    def untrack(self, response: requests.Response) -> None:
        with self._lock:
            self._reading.discard(response)


def _shut_down(response: requests.Response) -> None:
    """Make a read blocked on ``response``'s socket (in another thread) return at once. The
    socket is shut down through a duplicate of its descriptor, not closed: its reader closes
    it. (Through the descriptor because the connection object may have handed its socket to
    the response already; for TLS this is the TCP socket underneath, which ends the TLS read
    too.)"""
    try:
        fd = response.raw.fileno()
    except (OSError, ValueError, AttributeError):  # closed meanwhile: nothing is waiting on it
        return
    with contextlib.suppress(OSError):
        duplicate = os.dup(fd)
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            raise
        with sock:
            sock.shutdown(socket.SHUT_RDWR)


class _RequestState(threading.local):
    """What one thread's current request needs (its URL for messages, the Retry-After the
    server asked for, the batch it belongs to)."""

    url = ""
    retry_after_asked = 0.0
    token: CancelToken | None = None


def format_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class Deadline:
    """The time budget all downloads of one command share (``--timeout``)."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.start = clock()

    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.start)

    def check(self, url: str) -> None:
        if self.remaining() <= 0:
            raise TimeoutExceeded(url, self.seconds)

    def bound(self, seconds: float) -> float:
        """``seconds``, shortened to what is left of the budget (never 0: that means forever)."""
        return max(min(seconds, self.remaining()), 0.001)


_COMMAND_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "orbit_packager_command_deadline", default=None
)


@contextlib.contextmanager
def command_timeout(seconds: float) -> Iterator[Deadline]:
    """Every fetcher created inside this block (without its own ``timeout``) shares one deadline
    of ``seconds`` from now (``math.inf``: none)."""
    deadline = Deadline(seconds)
    token = _COMMAND_DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _COMMAND_DEADLINE.reset(token)


class _BoundedRetry(Retry):
    """urllib3's retries, with the waits bounded: a Retry-After above the cap is shortened to it
    (and remembered for the error message), and no wait outlasts the command's deadline. A read
    timeout is never retried (a stalled read is an outage or a slow-retrieval attack)."""

    fetcher: RequestsFetcher | None = None

    def new(self, **kw: Any) -> _BoundedRetry:
        retry = super().new(**kw)
        retry.fetcher = self.fetcher
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> _BoundedRetry:
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_retry_after(self, response: Any) -> float | None:
        """The seconds the server asks for, uncapped (urllib3 would cap them at 6 hours before
        we could tell the user); None for no or a garbled header (then: backoff)."""
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)

    def sleep(self, response: Any = None) -> None:
        fetcher = self.fetcher
        asked = self.get_retry_after(response) if response is not None else None
        if fetcher is None:  # pragma: no cover - always set by RequestsFetcher
            super().sleep(response)
            return
        if asked is not None:
            fetcher.note_retry_after(asked)
            wait = min(asked, fetcher.options.retry_after_cap)
        else:
            wait = self.get_backoff_time()
        fetcher.pause(wait)


class RequestsFetcher(FetcherInterface):
    """ngclient fetcher on a requests session; remembers small metadata bodies for errors."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        opts = self.options
        ambient = _COMMAND_DEADLINE.get()
        if opts.timeout is not None or ambient is None:
            self.deadline = Deadline(
                DEFAULT_TIMEOUT if opts.timeout is None else opts.timeout, opts.clock
            )
        else:
            self.deadline = ambient
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        retry = _BoundedRetry(
            total=opts.retries,
            connect=opts.retries,
            read=opts.retries,  # connections dropped before the headers; timeouts never
            status=opts.retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            backoff_factor=opts.backoff,
            raise_on_status=False,
        )
        retry.fetcher = self
        # A connection per parallel download kept for reuse (the default pool keeps 10).
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=MAX_CONNECTIONS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Passed per request, not set on the session: requests lets REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE from the environment override Session.verify, which would silently
        # ignore --update-tls-certificate on machines that set them.
        self._verify: str | bool = str(opts.ca_bundle) if opts.ca_bundle else True
        self._cert: tuple[str, str] | str | None = None
        if opts.client_cert:
            key = opts.client_key
            self._cert = (str(opts.client_cert), str(key)) if key else str(opts.client_cert)
        self.progress: ProgressHook | None = None  # called from the downloading thread
        self.bytes_received = 0
        self._count_lock = threading.Lock()
        self.last_body: dict[str, bytes] = {}
        self.last_name = ""
        self._state = _RequestState()

    @contextlib.contextmanager
    def cancellable(self, token: CancelToken | None) -> Iterator[None]:
        """This thread's downloads inside the block stop when ``token`` is cancelled."""
        previous = self._state.token
        self._state.token = token
        try:
            yield
        finally:
            self._state.token = previous

    # -- waits -------------------------------------------------------------------------------
    def note_retry_after(self, seconds: float) -> None:
        state = self._state
        state.retry_after_asked = max(state.retry_after_asked, seconds)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before a retry, unless the deadline comes first (then fail now)."""
        if seconds <= 0:
            return
        if seconds >= self.deadline.remaining():
            raise TimeoutExceeded(
                self._state.url, self.deadline.seconds, self._asked_note(), wait=seconds
            )
        token = self._state.token
        if token is not None and self.options.sleep is time.sleep:
            token.wait(seconds)  # a cancelled batch does not sit out its retry waits
        else:
            self.options.sleep(seconds)
        if token is not None:
            token.check()

    def _asked_note(self) -> str:
        asked = self._state.retry_after_asked
        if asked <= self.options.retry_after_cap:
            return ""
        return (
            f"the server asked to retry after {_human(round(asked))}; orbit-packager waits at most "
            f"{format_seconds(self.options.retry_after_cap)}: try again later"
        )

    # -- requests ----------------------------------------------------------------------------
    def _get(self, url: str) -> requests.Response:
        """GET ``url`` (headers only, the body streams), with retries; raise DownloadErrors."""
        state = self._state
        if state.token is not None:
            state.token.check()  # a cancelled batch starts no request
        state.url = url
        state.retry_after_asked = 0.0
        self.deadline.check(url)
        opts = self.options
        timeout = (
            self.deadline.bound(opts.connect_timeout),
            self.deadline.bound(opts.read_timeout),
        )
        try:
            response = self.session.get(
                url, stream=True, timeout=timeout, verify=self._verify, cert=self._cert
            )
        except requests.exceptions.SSLError as exc:
            raise TlsError(url, exc, has_client_cert=self._cert is not None) from None
        except requests.exceptions.ConnectTimeout:
            self.deadline.check(url)
            raise exceptions.SlowRetrievalError(
                f"timed out connecting to {url} (no answer in {opts.connect_timeout:g}s)"
            ) from None
        except requests.exceptions.ReadTimeout:
            self.deadline.check(url)
            raise exceptions.SlowRetrievalError(
                f"no response from {url} for {opts.read_timeout:g}s"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if "SSL" in str(exc):
                raise TlsError(url, exc, has_client_cert=self._cert is not None) from None
            raise ConnectError(url, exc) from None
        except requests.exceptions.RequestException as exc:
            raise HttpFailure(f"request for {url} failed: {type(exc).__name__}", url) from None
        if response.status_code >= 400:
            response.close()
            note = self._asked_note()
            raise exceptions.DownloadHTTPError(
                f"HTTP {response.status_code} for {url}" + (f" ({note})" if note else ""),
                response.status_code,
            )
        return response

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_name = url.rsplit("/", 1)[-1]
        response = self._get(url)
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        return self._chunks(url, response, total)

    def _chunks(self, url: str, response: requests.Response, total: int | None) -> Iterator[bytes]:
        """The body, resumed on a new request (skipping what was delivered) when the connection
        drops, up to ``retries`` times."""
        name = url.rsplit("/", 1)[-1]
        keep = name.endswith(".json")
        body = bytearray()
        delivered = 0
        drops = 0
        token = self._state.token  # the generator runs in the thread that iterates it
        try:
            while True:
                if token is not None:
                    token.track(response)
                skip = delivered
                try:
                    for chunk in self._read(url, response, token):
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        delivered += len(chunk)
                        with self._count_lock:
                            self.bytes_received += len(chunk)
                        if self.progress is not None:
                            self.progress(url, len(chunk), total)
                        if keep and len(body) < 5_000_000:
                            body += chunk
                        yield chunk
                    break
                except _Dropped as exc:
                    if token is not None:
                        token.untrack(response)
                        token.check()  # a cancel shuts the socket: not a drop to retry
                    response.close()
                    drops += 1
                    if drops > self.options.retries:
                        got = f"{delivered} of {total}" if total is not None else f"{delivered}"
                        raise HttpFailure(
                            f"the connection to {url} broke off after {got} bytes, "
                            f"{drops} times ({exc.reason})",
                            url,
                        ) from None
                    self.pause(self.options.backoff * (2 ** (drops - 1)))
                    response = self._get(url)
        finally:
            if token is not None:
                token.untrack(response)
            response.close()
        if keep:
            self.last_body[name] = bytes(body)

    def _read(
        self, url: str, response: requests.Response, token: CancelToken | None
    ) -> Iterator[bytes]:
        """Raw body chunks as soon as they arrive, checking the transfer rate, the deadline and
        the batch's cancellation after each one."""
        opts = self.options
        raw = response.raw
        window_start, window_bytes = opts.clock(), 0
        while True:
            if token is not None:
                token.check()
            self.deadline.check(url)
            try:
                # read1: what has arrived, at most CHUNK decoded bytes (urllib3 >= 2.6 bounds
                # the decompression too, so a gzip bomb cannot balloon one read).
                data = raw.read1(CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                self.deadline.check(url)
                raise exceptions.SlowRetrievalError(
                    f"no data from {url} for {opts.read_timeout:g}s"
                ) from None
            except urllib3.exceptions.DecodeError as exc:
                if not response.headers.get("Content-Encoding"):
                    # Nothing to decode was announced, so the server did not send a bad
                    # encoding: seen (rarely, on loaded test machines) as a broken transfer,
                    # retried like one.
                    raise _Dropped(_reason(exc)) from None
                encoding = response.headers.get("Content-Encoding", "")[:40]
                raise HttpFailure(
                    f"{url} sent a body its Content-Encoding ({encoding!r}) cannot decode", url
                ) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Dropped(_reason(exc)) from None
            if not data:
                if token is not None:
                    token.check()  # a body without a length ends at the shut-down socket
                return
            window_bytes += len(data)
            elapsed = opts.clock() - window_start
            if elapsed >= opts.rate_window:
                if window_bytes < opts.min_rate * elapsed:
                    raise TransferTooSlow(
                        f"{url} sent {window_bytes} bytes in {elapsed:.1f}s, below the minimum "
                        f"of {opts.min_rate:g} bytes/s",
                        url,
                    )
                window_start, window_bytes = opts.clock(), 0
            yield data


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "IncompleteRead" in text or "Connection broken" in text:
        return "incomplete body"
    if "reset" in text.lower():
        return "connection reset"
    return type(exc).__name__


class _Dropped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpFailure(exceptions.DownloadError):
    """A download failed; the message is complete (names the URL and what happened)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class TransferTooSlow(exceptions.SlowRetrievalError):
    """A body arrived below the minimum rate: complete message, names the URL."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class TimeoutExceeded(TransferTooSlow):
    """The command's --timeout passed while downloading ``url``."""

    def __init__(
        self, url: str, seconds: float, note: str = "", *, wait: float | None = None
    ) -> None:
        limit = "no limit" if math.isinf(seconds) else format_seconds(seconds)
        what = (
            f"the downloads took longer than --timeout {limit}"
            if wait is None
            else f"waiting {_human(wait)} to retry would pass --timeout {limit}"
        )
        super().__init__(
            f"gave up on {url}: {what}"
            + (f" ({note})" if note else " (raise --timeout or ORBIT_PACKAGER_TIMEOUT)"),
            url,
        )
        self.seconds = seconds


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class ConnectError(exceptions.DownloadError):
    def __init__(self, url: str, cause: Exception) -> None:
        text = str(cause)
        if "refused" in text.lower():
            reason = "connection refused"
        elif "RemoteDisconnected" in text or "without response" in text:
            reason = "the server closed the connection without answering"
        elif "BadStatusLine" in text or "LineTooLong" in text:
            reason = "the server's answer is not HTTP"
        elif "NameResolution" in text or "Name or service not known" in text:
            reason = "cannot resolve the host name"
        else:
            reason = "cannot connect"
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
