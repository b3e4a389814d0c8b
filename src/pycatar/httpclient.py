"""Talking to HTTP(S) servers: one thread-safe client for chunk stores and index files.

Built on pycurl, i.e. libcurl (the library casync's own HTTP helper uses).  One transfer thread
drives every request of a client through libcurl's multi interface, up to ``concurrency`` at once
over kept-alive connections, waiting in ``select`` with the GIL released, and retrying failed
attempts after their backoff; a thread that wants a chunk hands it a transfer and waits for it, or
sends it ahead (:meth:`HTTPClient.start`) and collects it later.  (Measured on loopback, 1 864 GETs of 100 MB: one easy
handle per thread in 16 threads, 0.34 s and 0.27 CPU-s; the multi interface, 0.18 s and 0.11 CPU-s;
urllib3, 1.0 s and 0.7 CPU-s.)  Every request is bounded: a
connect timeout, a stall timeout (less than a byte a second for that long), a total deadline, a
limit on the body (refused unread when ``Content-Length`` announces more), at most 3 redirects and
only to http(s).  Connection errors, timeouts, broken-off bodies, 408, 429 and 5xx answers are
retried with exponential backoff (``Retry-After`` honoured up to a cap); a 404 or 410 is an answer
("not there"), not an error.

TLS certificates are verified against the system's trust store (or a given CA bundle).  What the
user gives as credentials (``Authorization`` header, ``user:password@`` in a URL) is sent but never
appears in a message: errors name URLs with their credentials removed, and libcurl does not send
them on to another host when redirected.
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import os
import random
import select
import ssl
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

import pycurl

from .errors import ChunkError, StoreUnavailable, UsageError

#: the environment variable that supplies the Authorization header when no option does
AUTH_ENV = "PYCATAR_HTTP_AUTH"
#: statuses worth asking again for (the server may recover)
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))
#: statuses meaning "this resource does not exist"
MISSING_STATUSES = frozenset((404, 410))
MAX_REDIRECTS = 3
MAX_RETRY_AFTER = 10.0
_BUFFER = 1 << 19
#: transfers (so new connections) started at once by a new client; more as they succeed
_FIRST_CONNECTIONS = 4
#: the longest a new transfer waits while others run and none of them is ready (seconds)
_POLL = 0.001

class RemoteError(ChunkError):
    """A request that failed (after its retries) for another reason than "not found"; ``status``:
    the HTTP status that refused it, if that was the reason."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status

    @property
    def refused(self) -> bool:
        """Whether the server answered, and refused the request (4xx)."""
        return 400 <= self.status < 500


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


class _Transfer:
    """A request, carried out (and retried) by the transfer thread; ``done`` is a lock held until
    it is over (a bare lock: cheaper to make, wait for and release than an Event): then either
    ``failure`` is the error to raise, or ``status`` and ``received`` hold the answer."""

    __slots__ = ("method", "url", "body", "content_type", "received", "limit", "done", "status", "error",
                 "os_errno", "retry_after", "cancelled", "attempt", "failure")

    def __init__(self, method, url, body, content_type, received, limit):
        self.method, self.url, self.body, self.content_type = method, url, body, content_type
        self.received, self.limit = received, limit
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.status = 0
        self.error: tuple[int, str] | None = None
        self.os_errno = 0
        self.retry_after = 0
        self.cancelled = False  #: nobody wants it any more: dropped unsent if it has not started
        self.attempt = 0
        self.failure: RemoteError | None = None

    def again(self) -> None:
        """Ready for another attempt: what the last one received is dropped."""
        self.status, self.error, self.os_errno, self.retry_after = 0, None, 0, 0
        r = self.received
        if r.sink is not None:
            r.sink.seek(0)
            r.sink.truncate()
        self.received = _Receiver(r.limit, r.sink)
        self.attempt += 1


class _Loop:
    """The transfer thread: libcurl's multi interface runs every transfer of the client, up to
    ``concurrency`` at once over kept-alive connections, in one thread that waits in ``select``
    (GIL released); callers hand it :class:`_Transfer` objects and wait for them to be done.

    A handle that ran a GET runs the next GET with only its URL, body callback and size limit set
    anew (every other option stays); any other method, or a failed transfer, starts from a reset
    handle.  The wake pipe is written only while the thread sleeps with nothing to do.  A failed
    attempt worth repeating waits out its backoff here (in ``delayed``), not in a caller's thread:
    any number of requests retry at once however few threads wait for them."""

    def __init__(self, client: "HTTPClient"):
        self.client = client
        self.pid = os.getpid()
        self.multi = pycurl.CurlMulti()
        self.free = [pycurl.Curl() for _ in range(client.options.concurrency)]
        self.handles = list(self.free)
        #: transfers allowed at once: a few at first, one more for each that succeeds, up to a
        #: handle each (so new connections come a few at a time: a server with a short listen
        #: queue, like Python's http.server with 5, would drop a burst of them and make each wait
        #: a second for the kernel to try again)
        self.limit = min(_FIRST_CONNECTIONS, len(self.handles))
        self.ready = dict.fromkeys(self.handles, False)  #: handles set up for a GET (reset otherwise)
        self.waiting: deque[_Transfer] = deque()
        self.delayed: list[tuple[float, int, _Transfer]] = []  # (when, tie-breaker, transfer): a heap
        self.retries = itertools.count()
        self.incoming: deque[_Transfer] = deque()
        self.active: dict[pycurl.Curl, _Transfer] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sleeping = False
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="pycatar-http", daemon=True)
        self.thread.start()

    def submit(self, t: _Transfer) -> None:
        self.incoming.append(t)  # deque appends are atomic
        if self.sleeping:  # set before the thread looks at ``incoming`` a last time: no lost wake-up
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.closed = True
        self._wake()
        self.thread.join(10)

    def _start(self, t: _Transfer) -> None:
        if t.cancelled:
            t.error = (pycurl.E_ABORTED_BY_CALLBACK, "cancelled")
            self._settle(t)
            return
        c = self.free.pop()
        try:
            if t.method == "GET" and self.ready[c]:
                c.setopt(pycurl.URL, t.url)
                c.setopt(pycurl.WRITEFUNCTION, t.received.write)
                c.setopt(pycurl.MAXFILESIZE_LARGE, t.limit)
            else:  # a new or reset handle
                self.ready[c] = False
                self.client._configure(c, t)
                self.ready[c] = t.method == "GET"
        except pycurl.error as e:
            self.free.append(c)
            t.error = (e.args[0], e.args[1] if len(e.args) > 1 else "")
            self._settle(t)
            return
        self.active[c] = t
        self.multi.add_handle(c)

    def _finish(self, c, error) -> None:
        t = self.active.pop(c)
        self.multi.remove_handle(c)
        if error is None:
            if self.limit < len(self.handles):
                self.limit += 1
            t.status = c.getinfo(pycurl.RESPONSE_CODE)
            if t.status in (429, 503):
                t.retry_after = c.getinfo(pycurl.RETRY_AFTER)
        else:
            t.error = error
            t.os_errno = c.getinfo(pycurl.OS_ERRNO)
        if error is not None or not self.ready[c]:
            c.reset()  # drops the callbacks (and with them the bodies); keeps the connections
            self.ready[c] = False
        self.free.append(c)
        self._settle(t)

    def _settle(self, t: _Transfer) -> None:
        """Hand ``t`` back to its caller, or schedule its next attempt."""
        delay = self.client._verdict(t)
        if delay is None:
            t.done.release()
            return
        t.again()
        with self.client._lock:
            self.client.requests += 1
        heapq.heappush(self.delayed, (time.monotonic() + delay, next(self.retries), t))

    def _run(self) -> None:
        multi = self.multi
        incoming, waiting, delayed = self.incoming, self.waiting, self.delayed
        while not self.closed:
            while incoming:
                waiting.append(incoming.popleft())
            now = time.monotonic() if delayed else 0.0
            while delayed and delayed[0][0] <= now:
                waiting.appendleft(heapq.heappop(delayed)[2])  # before the newer requests
            while waiting and len(self.active) < self.limit:
                self._start(waiting.popleft())
            while True:
                ret, _running = multi.perform()
                if ret != pycurl.E_CALL_MULTI_PERFORM:
                    break
            while True:
                queued, ok, failed = multi.info_read()
                for c in ok:
                    self._finish(c, None)
                for c, code, message in failed:
                    self._finish(c, (code, message))
                if not queued:
                    break
            if incoming or (waiting and len(self.active) < self.limit):
                continue
            if self.active:
                # wait for the sockets in libcurl (C, GIL released); a new transfer waits at most
                # this long when none of the running ones has anything to say
                multi.select(_POLL)
                continue
            self.sleeping = True
            if not incoming and not self.closed:
                # idle: sleep until a transfer is handed in, or a retry is due
                select.select([self.wake_r], [], [], *([max(0.0, delayed[0][0] - time.monotonic())]
                                                      if delayed else []))
            self.sleeping = False
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        for c in list(self.active):
            self.multi.remove_handle(c)
        # whoever still waits hears that the client is gone (rather than waiting for ever)
        for t in [*self.active.values(), *waiting, *incoming, *(d[2] for d in delayed)]:
            t.failure = RemoteError(f"{t.method} {redact(t.url)}: the HTTP client was closed")
            t.done.release()
        for c in self.handles:
            c.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


class HTTPClient:
    """Requests to any number of servers, from any number of threads: one transfer thread runs
    them all (libcurl's multi interface), up to ``options.concurrency`` at once."""

    def __init__(self, options: HTTPOptions | None = None):
        self.options = options or HTTPOptions()
        o = self.options
        self._lock = threading.Lock()
        self._loop: _Loop | None = None
        self.requests = 0  #: requests sent (retries included)
        paths = ssl.get_default_verify_paths()
        self._cafile = o.ca_file or next((f for f in (paths.cafile, paths.openssl_cafile) if f and os.path.exists(f)),
                                         None)
        self._capath = None if o.ca_file else next(
            (d for d in (paths.capath, paths.openssl_capath) if d and os.path.isdir(d)), None)
        self._headers = ["Expect:"]  # no 100-continue round trip before an upload
        if o.auth:
            self._headers.append(f"Authorization: {o.auth}")

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and loop.pid == os.getpid():
            loop.close()

    def _transfers(self) -> _Loop:
        """The transfer thread (started on first use, and again in a forked child)."""
        loop = self._loop
        if loop is None or loop.pid != os.getpid():
            with self._lock:
                loop = self._loop
                if loop is None or loop.pid != os.getpid():
                    loop = self._loop = _Loop(self)
        return loop

    def _configure(self, c, t: _Transfer) -> None:
        """Set up the curl handle ``c`` for the transfer ``t`` (in the transfer thread)."""
        o = self.options
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.USERAGENT, "pycatar")
        c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        c.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        c.setopt(pycurl.FOLLOWLOCATION, 1)
        c.setopt(pycurl.MAXREDIRS, MAX_REDIRECTS)
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(o.connect_timeout * 1000))
        c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        c.setopt(pycurl.LOW_SPEED_TIME, max(1, int(round(o.timeout))))
        c.setopt(pycurl.TIMEOUT_MS, int(o.deadline * 1000))
        c.setopt(pycurl.BUFFERSIZE, _BUFFER)
        if self._cafile:
            c.setopt(pycurl.CAINFO, self._cafile)
        if self._capath:
            c.setopt(pycurl.CAPATH, self._capath)
        if o.client_cert:
            c.setopt(pycurl.SSLCERT, o.client_cert)
        if o.client_key:
            c.setopt(pycurl.SSLKEY, o.client_key)
        c.setopt(pycurl.URL, t.url)
        if t.method == "GET":
            c.setopt(pycurl.HTTPHEADER, self._headers)
            c.setopt(pycurl.WRITEFUNCTION, t.received.write)
            c.setopt(pycurl.MAXFILESIZE_LARGE, t.limit)
        elif t.method == "HEAD":
            c.setopt(pycurl.HTTPHEADER, self._headers)
            c.setopt(pycurl.NOBODY, 1)
        else:
            c.setopt(pycurl.CUSTOMREQUEST, t.method)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(t.body or b""))
            c.setopt(pycurl.POSTFIELDS, t.body or b"")
            c.setopt(pycurl.HTTPHEADER, [*self._headers, f"Content-Type: {t.content_type}"])
            c.setopt(pycurl.WRITEFUNCTION, t.received.write)

    # ------------------------------------------------------------------ the one request loop

    def _submit(self, method: str, url: str, body: bytes | None, limit: int, sink: BinaryIO | None,
                content_type: str) -> _Transfer:
        with self._lock:
            self.requests += 1
        received = _Receiver(limit if method == "GET" else 1 << 16, sink if method == "GET" else None)
        t = _Transfer(method, url, body, content_type, received, limit)
        self._transfers().submit(t)
        return t

    def _request(self, method: str, url: str, *, body: bytes | None = None, limit: int = 0,
                 sink: BinaryIO | None = None, content_type: str = "application/octet-stream",
                 started: _Transfer | None = None) -> tuple[int, bytes | None]:
        """``(status, body)``: the body (at most ``limit`` bytes, else an error) of a 2xx answer to
        a GET, None for other methods or when written to ``sink``; status 404/410 come back with
        no body.  Other failures raise :class:`RemoteUnavailable` or :class:`RemoteError`.
        ``started``: the same request, already handed to the transfer thread by :meth:`start`."""
        t = started if started is not None and not started.cancelled else \
            self._submit(method, url, body, limit, sink, content_type)
        t.done.acquire()
        if t.failure is not None:
            raise t.failure
        if t.status in MISSING_STATUSES:
            return t.status, None
        return t.status, t.received.value() if method == "GET" else None

    def _verdict(self, t: _Transfer) -> float | None:
        """After an attempt of ``t`` (in the transfer thread): None if it is over (``t.failure`` set
        when it failed), else how long to wait before the next attempt."""
        status = t.status
        if t.error is None and (200 <= status < 300 or status in MISSING_STATUSES):
            return None
        what = f"{t.method} {redact(t.url)}"
        if t.error is None:
            problem = f"{status} {_REASONS.get(status, '')}".strip()
        else:
            code, message = t.error
            if t.received.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
                t.failure = RemoteError(f"{what}: answer exceeds the limit of {t.limit} bytes")
                return None
            status = 0
            problem = _describe(code, message, t.os_errno)
            if code in _FINAL_ERRORS or t.cancelled:
                t.failure = RemoteError(f"{what}: {problem}")
                return None
        if status != 0 and status not in RETRY_STATUSES:
            t.failure = RemoteError(f"{what}: {problem}", status)
            return None
        o = self.options
        if t.attempt >= o.retries:
            tries = f" (after {t.attempt + 1} attempts)" if t.attempt else ""
            t.failure = RemoteUnavailable(f"{what}: {problem}{tries}")
            return None
        delay = o.backoff * (2 ** t.attempt) * (0.5 + random.random())
        if t.retry_after:
            delay = max(delay, min(float(t.retry_after), MAX_RETRY_AFTER))
        return min(delay, MAX_RETRY_AFTER)

    # ------------------------------------------------------------------ verbs

    def start(self, url: str, limit: int) -> _Transfer:
        """A GET of ``url`` sent now, answered later: give it to :meth:`get` as ``started`` (which
        waits for it and retries it as any other), or :meth:`cancel` it.  Nothing waits for it in
        the meantime, so any number can be in flight without a thread each."""
        return self._submit("GET", url, None, limit, None, "")

    @staticmethod
    def cancel(t: _Transfer) -> None:
        """Nobody will ask for ``t``: not sent if it has not started (its body is dropped if it has)."""
        t.cancelled = True

    def get(self, url: str, limit: int, *, started: _Transfer | None = None) -> bytes | None:
        """The body of ``url`` (at most ``limit`` bytes), or None if the server has no such resource.
        ``started``: the same GET, sent earlier by :meth:`start`."""
        status, data = self._request("GET", url, limit=limit, started=started)
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
        status, _ = self._request("PUT", url, body=body, content_type=content_type)
        if status in MISSING_STATUSES:
            raise RemoteError(f"PUT {redact(url)}: {status} (the server does not accept uploads there)")


class _Receiver:
    """Collects a body (or writes it to a file), refusing more than ``limit`` bytes."""

    __slots__ = ("limit", "sink", "parts", "size", "too_large")

    def __init__(self, limit: int, sink):
        self.limit = limit
        self.sink = sink
        self.parts: list[bytes] = []
        self.size = 0
        self.too_large = False

    def write(self, data: bytes):
        self.size += len(data)
        if self.size > self.limit:
            self.too_large = True
            return 0  # aborts the transfer
        if self.sink is not None:
            self.sink.write(data)
        else:
            self.parts.append(data)
        return None

    def value(self) -> bytes | None:
        """The body received (None when written to a sink); the receiver lets go of it."""
        parts, sink = self.parts, self.sink
        self.parts, self.sink = [], None
        if sink is not None:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Content Too Large",
            416: "Range Not Satisfiable", 422: "Unprocessable Content", 429: "Too Many Requests",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}

#: libcurl errors another attempt cannot mend (TLS and configuration problems, refused redirects)
_FINAL_ERRORS = frozenset(getattr(pycurl, name) for name in (
    "E_UNSUPPORTED_PROTOCOL", "E_URL_MALFORMAT", "E_TOO_MANY_REDIRECTS", "E_PEER_FAILED_VERIFICATION",
    "E_SSL_CACERT_BADFILE", "E_SSL_CERTPROBLEM", "E_SSL_CIPHER", "E_SSL_ENGINE_NOTFOUND",
    "E_SSL_CRL_BADFILE", "E_SSL_ISSUER_ERROR", "E_SSL_PINNEDPUBKEYNOTMATCH", "E_SSL_INVALIDCERTSTATUS",
    "E_LOGIN_DENIED", "E_REMOTE_ACCESS_DENIED") if hasattr(pycurl, name))


def _describe(code: int, message: str, errno: int = 0) -> str:
    """A short reason for a failed transfer, without the URL (the caller names it)."""
    if code == pycurl.E_COULDNT_CONNECT:
        return f"cannot connect: {os.strerror(errno).lower()}" if errno else "cannot connect"
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return "host not found"
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return "timed out"
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return "too many redirects"
    if code == pycurl.E_UNSUPPORTED_PROTOCOL:
        return "redirected to an unsupported protocol"
    if code in (pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CONNECT_ERROR, pycurl.E_SSL_CACERT_BADFILE,
                pycurl.E_SSL_CERTPROBLEM):
        return f"TLS error: {_strip_urls(message)}"
    if code in (pycurl.E_PARTIAL_FILE, pycurl.E_GOT_NOTHING, pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR):
        return "connection broken"
    return _strip_urls(message) or f"curl error {code}"


def _strip_urls(message: str) -> str:
    """libcurl's message without anything that looks like credentials in a URL."""
    return " ".join(redact(w) if "://" in w else w for w in message.split())
