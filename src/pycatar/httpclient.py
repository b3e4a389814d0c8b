"""Talking to HTTP(S) servers: one pooled, thread-safe client for chunk stores and index files.

Built on urllib3 (connection pools with keep-alive shared by all threads, TLS with the system's
trust store, no HTTP parsing of our own).  Every request is bounded: a connect and a read timeout,
a total deadline, a limit on the body it will accept, a few redirects at most.  Connection errors,
timeouts, 408, 429 and 5xx answers are retried with exponential backoff (``Retry-After`` honoured up
to a cap); a 404 or 410 is an answer ("not there"), not an error.

What the user gives as credentials (``Authorization`` header, ``user:password@`` in a URL) is sent
but never appears in a message: errors name URLs with their credentials removed.
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO

import urllib3
from urllib3.exceptions import HTTPError as _Urllib3Error

from .errors import ChunkError, PycatarError, StoreUnavailable, UsageError

#: the environment variable that supplies the Authorization header when no option does
AUTH_ENV = "PYCATAR_HTTP_AUTH"
#: statuses worth asking again for (the server may recover)
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))
#: statuses meaning "this resource does not exist"
MISSING_STATUSES = frozenset((404, 410))
MAX_REDIRECTS = 3
MAX_RETRY_AFTER = 10.0
_READ_PIECE = 1 << 18


class RemoteError(ChunkError):
    """A request that failed (after its retries) for another reason than "not found"."""


class RemoteUnavailable(RemoteError, StoreUnavailable):
    """The server could not be reached or kept failing (connection errors, timeouts, 5xx, 429):
    a failover group moves on to its next member."""


@dataclass
class HTTPOptions:
    """How requests are made; the defaults suit a store on the internet."""

    concurrency: int = 16            #: requests in flight at once (also the pool size per host)
    connect_timeout: float = 10.0    #: seconds to establish a connection
    timeout: float = 30.0            #: seconds without any byte received before giving up
    deadline: float = 300.0          #: seconds a single request may take in all
    retries: int = 5                 #: further attempts after a failure that may pass
    backoff: float = 0.1             #: first backoff delay, doubled per attempt (with jitter)
    auth: str | None = None          #: the Authorization header (e.g. "Bearer …"); never echoed
    ca_file: str | None = None       #: trust this CA bundle instead of the system's
    client_cert: str | None = None   #: client certificate (PEM), for servers that ask for one
    client_key: str | None = None    #: its key, if not in the certificate file

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = os.environ.get(AUTH_ENV) or None
        if self.concurrency < 1:
            raise UsageError("--concurrency= must be at least 1")
        for name in ("ca_file", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise UsageError(f"{name.replace('_', ' ')} {path}: no such file")


def is_url(text: str) -> bool:
    """Whether ``text`` is an http:// or https:// URL."""
    return text[:8].lower().startswith(("http://", "https://"))


def redact(url: str) -> str:
    """``url`` without the user name and password it may carry."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class HTTPClient:
    """Requests to any number of servers over pooled keep-alive connections; thread-safe."""

    def __init__(self, options: HTTPOptions | None = None):
        self.options = options or HTTPOptions()
        o = self.options
        tls = {}
        if o.ca_file:
            tls["ca_certs"] = o.ca_file
        if o.client_cert:
            tls["cert_file"] = o.client_cert
        if o.client_key:
            tls["key_file"] = o.client_key
        self._pool = urllib3.PoolManager(
            num_pools=32, maxsize=o.concurrency, block=True, cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(connect=o.connect_timeout, read=o.timeout), **tls)
        self._lock = threading.Lock()
        self.requests = 0  #: requests sent (retries included)

    def close(self) -> None:
        self._pool.clear()

    # ------------------------------------------------------------------ the one request loop

    def _headers(self, url: str, extra: dict | None) -> tuple[str, dict]:
        headers = {"User-Agent": "pycatar"}
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            headers.update(urllib3.make_headers(basic_auth=f"{user}:{password}"))
            url = redact(url)
        elif self.options.auth:
            headers["Authorization"] = self.options.auth
        if extra:
            headers.update(extra)
        return url, headers

    def _request(self, method: str, url: str, *, body=None, headers: dict | None = None,
                 limit: int = 0, sink: BinaryIO | None = None) -> tuple[int, bytes | None]:
        """``(status, body)``: the body (at most ``limit`` bytes, else an error) of a 2xx answer to
        a GET, None for other methods or when written to ``sink``; status 404/410 come back with
        no body.  Other failures raise :class:`RemoteUnavailable` or :class:`RemoteError`."""
        o = self.options
        target, hdrs = self._headers(url, headers)
        shown = redact(url)
        attempt = 0
        while True:
            with self._lock:
                self.requests += 1
            t0 = time.monotonic()
            status = 0
            try:
                resp = self._pool.request(
                    method, target, body=body, headers=hdrs, preload_content=False,
                    retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                          redirect=MAX_REDIRECTS, raise_on_redirect=True,
                                          raise_on_status=False))
                reusable = False
                try:
                    status = resp.status
                    if 200 <= status < 300:
                        data = self._read_body(resp, method, shown, limit, sink, t0) if method == "GET" else None
                        reusable = True
                        return status, data
                    if status in MISSING_STATUSES:
                        reusable = True
                        return status, None
                    retry_after = resp.headers.get("Retry-After")
                finally:
                    _finish(resp, reusable)
                problem = f"{status} {resp.reason or ''}".strip()
            except (_Urllib3Error, OSError) as e:
                problem = _describe(e)
                status = 0  # no complete answer: worth another try
                retry_after = None
                if sink is not None:
                    sink.seek(0)
                    sink.truncate()
            except _BodyTooLarge as e:
                raise RemoteError(f"{method} {shown}: {e}") from None
            retryable = status == 0 or status in RETRY_STATUSES
            if not retryable:
                raise RemoteError(f"{method} {shown}: {problem}")
            if attempt >= o.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RemoteUnavailable(f"{method} {shown}: {problem}{tries}")
            delay = o.backoff * (2 ** attempt) * (0.5 + random.random())
            if retry_after:
                try:
                    delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
                except ValueError:
                    pass
            attempt += 1
            time.sleep(min(delay, MAX_RETRY_AFTER))

    def _read_body(self, resp, method: str, shown: str, limit: int, sink, t0: float):
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _BodyTooLarge(f"answer of {int(length)} bytes exceeds the limit of {limit}")
        parts = []
        got = 0
        deadline = t0 + self.options.deadline
        while True:
            piece = resp.read(min(_READ_PIECE, limit + 1 - got))
            if not piece:
                break
            got += len(piece)
            if got > limit:
                raise _BodyTooLarge(f"answer exceeds the limit of {limit} bytes")
            if sink is not None:
                sink.write(piece)
            else:
                parts.append(piece)
            if time.monotonic() > deadline:
                raise urllib3.exceptions.ReadTimeoutError(None, shown, "the request's deadline passed")
        if sink is not None:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ------------------------------------------------------------------ verbs

    def get(self, url: str, limit: int) -> bytes | None:
        """The body of ``url`` (at most ``limit`` bytes), or None if the server has no such resource."""
        status, data = self._request("GET", url, limit=limit)
        return None if status in MISSING_STATUSES else data

    def download(self, url: str, sink: BinaryIO, limit: int) -> bool:
        """Write the body of ``url`` (at most ``limit`` bytes) to ``sink``; False if it does not exist."""
        status, _ = self._request("GET", url, limit=limit, sink=sink)
        return status not in MISSING_STATUSES

    def exists(self, url: str) -> bool:
        """Whether the server has ``url`` (a HEAD request)."""
        status, _ = self._request("HEAD", url)
        return status not in MISSING_STATUSES

    def put(self, url: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Upload ``body`` to ``url``; any answer but 2xx is an error."""
        status, _ = self._request("PUT", url, body=body, headers={"Content-Type": content_type})
        if status in MISSING_STATUSES:
            raise RemoteError(f"PUT {redact(url)}: {status} (the server does not accept uploads there)")


class _BodyTooLarge(PycatarError):
    pass


def _finish(resp, reusable: bool) -> None:
    """Give the connection back to the pool if what is left of the answer is short, else close it
    (an endless or huge body is never read to its end)."""
    try:
        if reusable and resp.read(1 << 16, decode_content=False) == b"":
            resp.release_conn()
            return
    except (_Urllib3Error, OSError):
        pass
    resp.close()
    resp.release_conn()


def _describe(e: BaseException) -> str:
    """A short reason for a failed request, without the URL (the caller names it)."""
    reason = getattr(e, "reason", None)
    if isinstance(e, urllib3.exceptions.MaxRetryError) and reason is not None:
        if isinstance(reason, urllib3.exceptions.ResponseError):
            return "too many redirects"
        e = reason
    if isinstance(e, urllib3.exceptions.SSLError):
        return f"TLS error: {e}"
    if isinstance(e, urllib3.exceptions.NameResolutionError):
        return "host not found"
    if isinstance(e, urllib3.exceptions.NewConnectionError):  # (a subclass of ConnectTimeoutError)
        text = str(e).lower()
        if "refused" in text:
            return "connection refused"
        if "timed out" in text:
            return "connection timed out"
        return "cannot connect"
    if isinstance(e, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(e, urllib3.exceptions.ReadTimeoutError):
        return "timed out"
    if isinstance(e, (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead)):
        return "connection broken"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return type(e).__name__
