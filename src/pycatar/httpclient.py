"""Talking to HTTP(S) servers: one thread-safe client for chunk stores and index files.

Built on libcurl (the library casync's own HTTP helper uses), through :mod:`pycatar._curl`, which
receives bodies in C: a transfer needs the GIL only once it is over.  (pycurl hands every 16 KiB
piece of a body to a Python callback, which waits for the GIL while other threads run Python: on
loopback, the first 4 MiB batches of an extraction took 40 ms to arrive instead of a few.)  One
transfer thread drives every request of a client through libcurl's multi interface, up to
``concurrency`` at once over kept-alive connections, waiting in ``curl_multi_poll`` with the GIL
released, and retrying failed attempts after their backoff; a thread that wants a chunk hands it a
transfer and waits for it, or sends it ahead (:meth:`HTTPClient.start`) and collects it later.
(Measured on loopback, 1 864 GETs of 100 MB: one easy handle per thread in 16 threads, 0.34 s and
0.27 CPU-s; the multi interface, 0.18 s and 0.11 CPU-s; urllib3, 1.0 s and 0.7 CPU-s.)  Every
request is bounded: a
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
import ssl
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

from . import _curl
from .errors import ChunkError, PycatarError, StoreUnavailable, UsageError

#: the environment variable that supplies the Authorization header when no option does
AUTH_ENV = "PYCATAR_HTTP_AUTH"
#: statuses worth asking again for (the server may recover)
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))
#: statuses meaning "this resource does not exist"
MISSING_STATUSES = frozenset((404, 410))
MAX_REDIRECTS = 3
MAX_RETRY_AFTER = 10.0
_BUFFER = 1 << 19
#: transfers (so new connections) started at once by a new client; then this many more than the
#: connections that have carried an answer
_FIRST_CONNECTIONS = 4
#: CURLINFO_HTTP_VERSION's values for the HTTP of an answer (curl.h: CURL_HTTP_VERSION_1_0, _2_0)
_HTTP_1_0, _HTTP_2 = 1, 3
#: the longest the transfer thread sleeps when nothing happens (ms): new transfers and the
#: client's closing wake it at once, retries when they are due
_IDLE_MS = 1000
#: the most bytes kept of the answer to a PUT (its body is not used)
_ANSWER_LIMIT = 1 << 16

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


#: the libcurl builds tried, in this order (Debian's libcurl4, then the one casync uses)
LIBCURL_NAMES = ("libcurl.so.4", "libcurl-gnutls.so.4")


def _load_libcurl() -> str:
    """Load libcurl (once): its version string."""
    problems = []
    for name in LIBCURL_NAMES:
        try:
            return _curl.load(name)
        except OSError as e:
            problems.append(str(e))
    raise PycatarError(f"HTTP(S) needs libcurl (Debian: apt-get install libcurl4): {'; '.join(problems)}")


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
    ``failure`` is the error to raise, or ``status`` and ``answer`` hold the answer (the body of a
    GET, as a buffer; None when it went to ``sink``).  ``urgent``: somebody waits for it already
    (not sent ahead): it goes before the requests sent ahead that wait for a connection."""

    __slots__ = ("method", "url", "body", "content_type", "sink", "limit", "done", "status", "error",
                 "os_errno", "retry_after", "cancelled", "attempt", "failure", "answer", "too_large",
                 "write_errno", "born", "urgent")

    def __init__(self, method, url, body, content_type, sink, limit, urgent=False):
        self.method, self.url, self.body, self.content_type = method, url, body, content_type
        self.sink, self.limit, self.urgent = sink, limit, urgent
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.cancelled = False  #: nobody wants it any more: dropped unsent if it has not started
        self.attempt = 0
        self.failure: RemoteError | None = None
        self.born = time.monotonic()  #: when it was asked for
        self._clear()

    def _clear(self) -> None:
        self.status = 0
        self.error: tuple[int, str] | None = None
        self.os_errno = 0
        self.retry_after = 0
        self.answer = None
        self.too_large = False  #: the body went past ``limit``
        self.write_errno = 0  #: writing the body to ``sink`` failed with this errno

    def again(self) -> None:
        """Ready for another attempt: what the last one received is dropped."""
        self._clear()
        if self.sink is not None:
            self.sink.seek(0)
            self.sink.truncate()
        self.attempt += 1


class _Loop:
    """The transfer thread: libcurl's multi interface runs every transfer of the client, up to
    ``concurrency`` at once over kept-alive connections, in one thread that waits in
    ``curl_multi_poll`` (GIL released); callers hand it :class:`_Transfer` objects and wait for
    them to be done.

    A handle that ran a GET runs the next GET with only its URL and size limit set anew (every
    other option stays); any other method, or a failed transfer, starts from a reset handle.  A
    new transfer ends the thread's wait at once (``curl_multi_wakeup``).  A failed
    attempt worth repeating waits out its backoff here (in ``delayed``), not in a caller's thread:
    any number of requests retry at once however few threads wait for them."""

    def __init__(self, client: "HTTPClient"):
        self.client = client
        self.pid = os.getpid()
        self.multi = _curl.Multi()
        self.free = [_curl.Easy() for _ in range(client.options.concurrency)]
        self.handles = list(self.free)
        #: transfers allowed at once: a few more than the connections known to work, up to a handle
        #: each (so new connections come a few at a time: a server with a short listen queue, like
        #: Python's http.server with 5, would drop a burst of them and make each wait a second for
        #: the kernel to try again; a client that made many requests one at a time has one
        #: connection, and a reader that then jumps must not open 15 at once)
        self.limit = min(_FIRST_CONNECTIONS, len(self.handles))
        self.connections = 0  #: connections that have carried an answer (new ones, counted once)
        self.ready = dict.fromkeys(self.handles, False)  #: handles set up for a GET (reset otherwise)
        self.waiting: deque[_Transfer] = deque()
        #: transfers somebody waits for already (not sent ahead): started before ``waiting``, so that
        #: a reader that jumped does not wait behind the read-ahead of its new place
        self.urgent: deque[_Transfer] = deque()
        self.delayed: list[tuple[float, int, _Transfer]] = []  # (when, tie-breaker, transfer): a heap
        self.retries = itertools.count()
        #: server -> (when, why): a request to it failed for good, the server unreachable or silent;
        #: the requests to it made before then fail with it, without an attempt (more)
        self.down: dict[str, tuple[float, str]] = {}
        self.incoming: deque[_Transfer] = deque()
        self.active: dict[_curl.Easy, _Transfer] = {}
        self.closed = False
        self._gate = threading.Lock()  # submit() against the thread's last look at ``incoming``
        self._over = False
        self._handling: _Transfer | None = None  # the transfer being started or finished
        self.why = "the HTTP client was closed"  #: what a transfer handed in after the end is told
        self.thread = threading.Thread(target=self._run, name="pycatar-http", daemon=True)
        self.thread.start()

    def submit(self, t: _Transfer) -> None:
        with self._gate:
            if not self.ended:
                self.incoming.append(t)
                self.multi.wakeup()  # (a wake-up while the thread does not wait ends its next wait at once)
                return
        t.failure = RemoteError(f"{t.method} {redact(t.url)}: {self.why}")
        t.done.release()

    def close(self) -> None:
        self.closed = True
        self.multi.wakeup()
        self.thread.join(10)

    def _start(self, t: _Transfer) -> None:
        if self.down and self._given_up(t):
            t.done.release()
            return
        if t.cancelled:
            t.error = (_curl.E_ABORTED_BY_CALLBACK, "cancelled")
            self._settle(t)
            return
        c = self.free.pop()
        try:
            if t.method == "GET" and self.ready[c]:
                c.setopt(_curl.URL, t.url)
                c.setopt(_curl.MAXFILESIZE_LARGE, t.limit)
            else:  # a new or reset handle
                if self.ready[c]:  # set up for a GET: its size limit would apply to this answer too
                    c.reset()
                self.ready[c] = False
                self.client._configure(c, t)
                self.ready[c] = t.method == "GET"
            if t.sink is not None:
                t.sink.flush()
                c.receive(t.limit, t.sink.fileno())
            else:
                c.receive(t.limit if t.method == "GET" else _ANSWER_LIMIT)
        except _curl.error as e:
            self.free.append(c)
            t.error = (e.args[0], e.args[1])
            self._settle(t)
            return
        except (OSError, ValueError) as e:  # a sink that is not a file with a descriptor, or closed
            self.free.append(c)
            t.failure = RemoteError(f"{t.method} {redact(t.url)}: cannot keep the answer: {e}")
            t.done.release()
            return
        self.active[c] = t
        self.multi.add(c)

    def _finish(self, c: _curl.Easy, code: int) -> None:
        t = self.active.pop(c)
        self.multi.remove(c)
        t.too_large, t.write_errno = c.overflowed, c.write_errno
        if code == 0:
            version = c.getinfo(_curl.HTTP_VERSION)
            if version >= _HTTP_2:  # streams over one connection: more transfers open no more
                self.limit = len(self.handles)
            elif version != _HTTP_1_0 and c.getinfo(_curl.NUM_CONNECTS):
                # a new connection, kept open (HTTP/1.0 servers, Python's http.server among them,
                # close each one: a connection a request there, so never more than a few at once)
                self.connections += 1
                self.limit = max(self.limit, min(len(self.handles), self.connections + _FIRST_CONNECTIONS))
            t.status = c.getinfo(_curl.RESPONSE_CODE)
            if t.status in (429, 503):
                t.retry_after = c.getinfo(_curl.RETRY_AFTER)
            if t.method == "GET":
                t.answer = c.body()
        else:
            t.error = (code, c.error() or _curl.strerror(code))
            t.os_errno = c.getinfo(_curl.OS_ERRNO)
        c.receive(0)  # lets go of the body (a failed one is not wanted)
        if code != 0 or not self.ready[c]:
            c.reset()  # every option back to its default; the connections are kept
            self.ready[c] = False
        self.free.append(c)
        self._settle(t)

    def _settle(self, t: _Transfer) -> None:
        """Hand ``t`` back to its caller, or schedule its next attempt."""
        delay = self.client._verdict(t)
        if delay is not None and self.down and self._given_up(t):
            delay = None
        if delay is None:
            t.done.release()
            if t.error is not None and isinstance(t.failure, RemoteUnavailable) and not t.cancelled:
                self._server_down(t)
            return
        t.again()
        with self.client._lock:
            self.client.requests += 1
        heapq.heappush(self.delayed, (time.monotonic() + delay, next(self.retries), t))

    def _server_down(self, t: _Transfer) -> None:
        """``t`` failed for good without an answer (no connection, timeouts): every request to its
        server made before now fails too, those waiting for their next attempt at once.  A server
        that stopped answering would otherwise cost each request its timeouts, one connection slot
        after the other (an extraction with 64 chunks asked for ahead: minutes per slot before the
        first error).  Requests made later get attempts of their own (a mount outlives an outage)."""
        self.down[_server(t.url)] = (time.monotonic(), _describe(t.error[0], t.error[1], t.os_errno))
        delayed = self.delayed  # (changed in place: the transfer loop holds it)
        due = [d for d in delayed if self._given_up(d[2])]
        if due:
            delayed[:] = [d for d in delayed if d[2].failure is None]
            heapq.heapify(delayed)
            for d in due:
                d[2].done.release()

    def _given_up(self, t: _Transfer) -> bool:
        """Whether ``t`` was made before its server was found not answering (then ``t.failure``
        says so)."""
        server = _server(t.url)
        mark = self.down.get(server)
        if mark is None or t.born > mark[0]:
            return False
        t.failure = RemoteUnavailable(f"{t.method} {redact(t.url)}: given up, {server} did not answer "
                                      f"another request ({mark[1]})")
        return True

    @property
    def ended(self) -> bool:
        """Whether the thread has stopped taking transfers (closed, or failed)."""
        return not self.thread.is_alive() or self._over

    def _run(self) -> None:
        try:
            self._transfer()
        except Exception as e:  # libcurl failing (out of memory...) or a bug: every waiter hears it
            self.why = f"the HTTP client failed ({e})"
        with self._gate:
            self._over = True
        # whoever still waits hears it (rather than waiting for ever)
        handling = [] if self._handling is None or self._handling in self.active.values() else [self._handling]
        for t in [*handling, *self.active.values(), *self.urgent, *self.waiting, *self.incoming,
                  *(d[2] for d in self.delayed)]:
            if t.done.locked():
                t.failure = RemoteError(f"{t.method} {redact(t.url)}: {self.why}")
                t.done.release()
        self.active.clear()
        self.multi.close()

    def _transfer(self) -> None:
        multi = self.multi
        incoming, urgent, waiting, delayed = self.incoming, self.urgent, self.waiting, self.delayed
        while not self.closed:
            while incoming:
                t = incoming.popleft()
                (urgent if t.urgent else waiting).append(t)
            now = time.monotonic() if delayed else 0.0
            while delayed and delayed[0][0] <= now:
                t = heapq.heappop(delayed)[2]
                (urgent if t.urgent else waiting).appendleft(t)  # before the newer requests
            while (urgent or waiting) and len(self.active) < self.limit:
                self._handling = (urgent or waiting).popleft()
                self._start(self._handling)
            if self.active:
                multi.perform()
                for c, code in multi.info_read():
                    self._handling = self.active.get(c)
                    self._finish(c, code)
            self._handling = None
            if incoming or ((urgent or waiting) and len(self.active) < self.limit):
                continue
            # wait (C, GIL released) for the sockets, a new transfer or the closing (wakeup()), or
            # until the next retry is due
            wait = _IDLE_MS
            if delayed:
                wait = min(wait, max(0, int((delayed[0][0] - time.monotonic()) * 1000) + 1))
            if not self.closed:
                multi.poll(wait)


class HTTPClient:
    """Requests to any number of servers, from any number of threads: one transfer thread runs
    them all (libcurl's multi interface), up to ``options.concurrency`` at once."""

    def __init__(self, options: HTTPOptions | None = None):
        self.options = options or HTTPOptions()
        o = self.options
        _load_libcurl()
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

    def _configure(self, c: _curl.Easy, t: _Transfer) -> None:
        """Set up the curl handle ``c`` for the transfer ``t`` (in the transfer thread)."""
        o = self.options
        c.setopt(_curl.NOSIGNAL, 1)
        c.setopt(_curl.USERAGENT, "pycatar")
        c.setopt(_curl.PROTOCOLS, _curl.PROTO_HTTP | _curl.PROTO_HTTPS)
        c.setopt(_curl.REDIR_PROTOCOLS, _curl.PROTO_HTTP | _curl.PROTO_HTTPS)
        c.setopt(_curl.FOLLOWLOCATION, 1)
        c.setopt(_curl.MAXREDIRS, MAX_REDIRECTS)
        c.setopt(_curl.CONNECTTIMEOUT_MS, int(o.connect_timeout * 1000))
        c.setopt(_curl.LOW_SPEED_LIMIT, 1)
        c.setopt(_curl.LOW_SPEED_TIME, max(1, int(round(o.timeout))))
        c.setopt(_curl.TIMEOUT_MS, int(o.deadline * 1000))
        c.setopt(_curl.BUFFERSIZE, _BUFFER)
        if self._cafile:
            c.setopt(_curl.CAINFO, self._cafile)
        if self._capath:
            c.setopt(_curl.CAPATH, self._capath)
        if o.client_cert:
            c.setopt(_curl.SSLCERT, o.client_cert)
        if o.client_key:
            c.setopt(_curl.SSLKEY, o.client_key)
        c.setopt(_curl.URL, t.url)
        if t.method == "GET":
            c.setopt(_curl.HTTPHEADER, self._headers)
            c.setopt(_curl.MAXFILESIZE_LARGE, t.limit)
        elif t.method == "HEAD":
            c.setopt(_curl.HTTPHEADER, self._headers)
            c.setopt(_curl.NOBODY, 1)
        else:
            c.setopt(_curl.CUSTOMREQUEST, t.method)
            c.post(t.body or b"")
            c.setopt(_curl.HTTPHEADER, [*self._headers, f"Content-Type: {t.content_type}"])

    # ------------------------------------------------------------------ the one request loop

    def _submit(self, method: str, url: str, body: bytes | None, limit: int, sink: BinaryIO | None,
                content_type: str, urgent: bool) -> _Transfer:
        with self._lock:
            self.requests += 1
        t = _Transfer(method, url, body, content_type, sink if method == "GET" else None, limit, urgent)
        self._transfers().submit(t)
        return t

    def _request(self, method: str, url: str, *, body: bytes | None = None, limit: int = 0,
                 sink: BinaryIO | None = None, content_type: str = "application/octet-stream",
                 started: _Transfer | None = None) -> tuple[int, memoryview | None]:
        """``(status, body)``: the body (at most ``limit`` bytes, else an error) of a 2xx answer to
        a GET, as a read-only memoryview; None for other methods or when written to ``sink``;
        status 404/410 come back with no body.  Other failures raise :class:`RemoteUnavailable` or
        :class:`RemoteError`.  ``started``: the same request, already handed to the transfer
        thread by :meth:`start`."""
        t = started if started is not None and not started.cancelled else \
            self._submit(method, url, body, limit, sink, content_type, True)
        t.done.acquire()
        if t.failure is not None:
            raise t.failure
        answer, t.answer = t.answer, None
        if t.status in MISSING_STATUSES or answer is None:
            return t.status, None
        return t.status, memoryview(answer)

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
            if t.too_large or code == _curl.E_FILESIZE_EXCEEDED:
                t.failure = RemoteError(f"{what}: answer exceeds the limit of {t.limit} bytes")
                return None
            if t.write_errno:
                t.failure = RemoteError(f"{what}: cannot keep the answer: {os.strerror(t.write_errno).lower()}")
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
        return self._submit("GET", url, None, limit, None, "", False)

    @staticmethod
    def cancel(t: _Transfer) -> None:
        """Nobody will ask for ``t``: not sent if it has not started (its body is dropped if it has)."""
        t.cancelled = True

    def get(self, url: str, limit: int, *, started: _Transfer | None = None) -> memoryview | None:
        """The body of ``url`` (at most ``limit`` bytes, a read-only memoryview), or None if the
        server has no such resource.  ``started``: the same GET, sent earlier by :meth:`start`."""
        status, data = self._request("GET", url, limit=limit, started=started)
        return None if status in MISSING_STATUSES else data

    def download(self, url: str, sink: BinaryIO, limit: int) -> bool:
        """Write the body of ``url`` (at most ``limit`` bytes) to ``sink``, a binary file with a
        descriptor (written through it, from its position); False if it does not exist."""
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


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Content Too Large",
            416: "Range Not Satisfiable", 422: "Unprocessable Content", 429: "Too Many Requests",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}

#: libcurl errors another attempt cannot mend (TLS and configuration problems, refused redirects)
_FINAL_ERRORS = frozenset(getattr(_curl, name) for name in (
    "E_UNSUPPORTED_PROTOCOL", "E_URL_MALFORMAT", "E_TOO_MANY_REDIRECTS", "E_PEER_FAILED_VERIFICATION",
    "E_SSL_CACERT_BADFILE", "E_SSL_CERTPROBLEM", "E_SSL_CIPHER", "E_SSL_ENGINE_NOTFOUND",
    "E_SSL_CRL_BADFILE", "E_SSL_ISSUER_ERROR", "E_SSL_PINNEDPUBKEYNOTMATCH", "E_SSL_INVALIDCERTSTATUS",
    "E_LOGIN_DENIED", "E_REMOTE_ACCESS_DENIED"))


def _describe(code: int, message: str, errno: int = 0) -> str:
    """A short reason for a failed transfer, without the URL (the caller names it)."""
    if code == _curl.E_COULDNT_CONNECT:
        return f"cannot connect: {os.strerror(errno).lower()}" if errno else "cannot connect"
    if code == _curl.E_COULDNT_RESOLVE_HOST:
        return "host not found"
    if code == _curl.E_OPERATION_TIMEDOUT:
        return "timed out"
    if code == _curl.E_TOO_MANY_REDIRECTS:
        return "too many redirects"
    if code == _curl.E_UNSUPPORTED_PROTOCOL:
        return "redirected to an unsupported protocol"
    if code in (_curl.E_PEER_FAILED_VERIFICATION, _curl.E_SSL_CONNECT_ERROR, _curl.E_SSL_CACERT_BADFILE,
                _curl.E_SSL_CERTPROBLEM):
        return f"TLS error: {_strip_urls(message)}"
    if code in (_curl.E_PARTIAL_FILE, _curl.E_GOT_NOTHING, _curl.E_RECV_ERROR, _curl.E_SEND_ERROR):
        return "connection broken"
    return _strip_urls(message) or f"curl error {code}"


def _server(url: str) -> str:
    """The scheme, host and port of ``url`` (no credentials)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _strip_urls(message: str) -> str:
    """libcurl's message without anything that looks like credentials in a URL."""
    return " ".join(redact(w) if "://" in w else w for w in message.split())
