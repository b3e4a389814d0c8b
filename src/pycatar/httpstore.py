"""A chunk store on an HTTP(S) server, laid out as a local store (``<url>/<hex[:4]>/<hex>.cacnk``).

Any static web server serving a store directory works for reading (as with casync); writing uses
``PUT`` of the compressed chunk file to the same URL, for a server that accepts it (``pycatar serve
--writable``), after a ``HEAD`` shows the chunk is not there yet.  Chunks are verified after
download like those of every store (:meth:`pycatar.store.ChunkStore.fetch`).

A server that offers batched reads (``pycatar serve``, SERVE-5) answers the chunks requested ahead
:data:`BATCH_IDS` at a time: one request instead of 64, which on a fast network is most of
the cost of a chunk on both sides.  Whether it does is asked once, with the first request ahead;
any other server gets a GET per chunk.
"""

from __future__ import annotations

import struct
import threading

from .compression import DECOMPRESSED_LIMIT
from .errors import ChunkError
from .httpclient import HTTPClient, RemoteError, RemoteUnavailable, redact
from .store import CHUNK_SUFFIX, ChunkStore, chunk_relpath


def compressed_limit(size: int | None) -> int:
    """The most bytes a stored chunk of ``size`` bytes may take: what zstd, xz or gzip need for
    incompressible data plus their headers (a larger answer is refused before it is read)."""
    if size is None:
        return DECOMPRESSED_LIMIT
    return size + size // 64 + 4096


#: GETs sent ahead (:meth:`HTTPStore.ahead`) and not asked for yet, at most; beyond, the oldest is
#: given up (its caller's window of chunks in flight is normally far smaller)
AHEAD_MAX = 4096
#: chunks asked for by one batched read (SERVE-5), at most (the most a server answers), and the
#: bytes they may take at most (a batch is sent once it reaches either)
BATCH_IDS = 64
BATCH_BYTES = 4 << 20
BATCH_PATH = ".chunks/"
BATCH_MAGIC = b"CACHUNKS"
_ABSENT = (1 << 64) - 1
_SINGLE = object()  # a batch the server did not answer: its chunks are read one by one


class _Batch:
    """Chunks requested together (SERVE-5): sent when full or when one of them is wanted; the first
    caller that wants one of them collects the answer for all."""

    __slots__ = ("ids", "limit", "transfer", "url", "lock", "parts", "error")

    def __init__(self):
        self.ids: list[bytes] = []
        self.limit = len(BATCH_MAGIC)
        self.transfer = None
        self.url = ""
        self.lock = threading.Lock()
        self.parts: dict | object | None = None  # id -> stored bytes (None: absent) once collected
        self.error: ChunkError | None = None

    def take(self, client: HTTPClient, chunk_id: bytes):
        """The stored bytes of ``chunk_id`` (None if the server does not have it), or _SINGLE when
        the server refused the batch (404, or another 4xx such as a proxy's 414 for a long URL):
        its chunks are then read one by one."""
        with self.lock:
            if self.parts is None and self.error is None:
                try:
                    body = client.get(self.url, self.limit, started=self.transfer)
                    self.parts = _SINGLE if body is None else self._parse(body)
                except RemoteUnavailable as e:  # the server fails: a mirror may take over
                    self.error = e
                except RemoteError as e:
                    if e.refused:
                        self.parts = _SINGLE
                    else:
                        self.error = e
            if self.error is not None:
                raise self.error
            if self.parts is _SINGLE:
                return _SINGLE
            return self.parts.pop(chunk_id, None)

    def _parse(self, body: bytes) -> dict:
        if body[:len(BATCH_MAGIC)] != BATCH_MAGIC:
            raise RemoteError(f"GET {redact(self.url)}: not an answer of batched chunks")
        parts, pos, n = {}, len(BATCH_MAGIC), len(body)
        view = memoryview(body)  # the chunks as views of the answer (no copy; it lives until the last is taken)
        for cid in self.ids:
            if pos + 8 > n:
                break
            (size,) = struct.unpack_from("<Q", body, pos)
            pos += 8
            if size == _ABSENT:
                continue
            if size > n - pos:
                break
            parts[cid] = view[pos:pos + size]
            pos += size
        else:
            if pos == n:
                return parts
        raise RemoteError(f"GET {redact(self.url)}: malformed answer of batched chunks")


class HTTPStore(ChunkStore):
    """The chunks under ``url`` (a directory URL; a trailing slash is implied)."""

    remote = True
    fetches_ahead = True

    def __init__(self, url: str, client: HTTPClient, *, digest: str = "sha512-256", compression: str = "zstd"):
        base = url if url.endswith("/") else url + "/"
        super().__init__(redact(base), digest=digest, compression=compression)
        self.base = base
        self.client = client
        self.concurrency = client.options.concurrency
        self._ahead: dict[bytes, object] = {}  # chunk id -> transfer or _Batch of ahead(), oldest first
        self._ahead_lock = threading.Lock()
        self._batched: bool | None = None  # whether the server offers batched reads (asked once)
        # ... asked now, answered by the time the first chunks are sent ahead (one round trip less:
        # it overlaps the index's download and the set-up of the seeds)
        self._probe = client.start(self.base + BATCH_PATH, len(BATCH_MAGIC))
        self._batch: _Batch | None = None  # the batch being filled

    def chunk_url(self, chunk_id: bytes) -> str:
        return self.base + chunk_relpath(chunk_id, CHUNK_SUFFIX)

    def describe(self, chunk_id: bytes) -> str:
        # the chunk's URL without credentials (the location is the base URL, redacted once: this
        # names every chunk fetched, in case its check fails)
        return self.location + chunk_relpath(chunk_id, CHUNK_SUFFIX)

    def ahead(self, chunk_id: bytes, size: int | None = None) -> None:
        with self._ahead_lock:
            if chunk_id in self._ahead:
                return
            if len(self._ahead) >= AHEAD_MAX:
                old = self._ahead.pop(next(iter(self._ahead)))
                if not isinstance(old, _Batch):
                    self.client.cancel(old)
            if self._batched is None:
                self._batched = self._offers_batches()
            if not self._batched:
                self._ahead[chunk_id] = self.client.start(self.chunk_url(chunk_id), compressed_limit(size))
                return
            batch = self._batch
            if batch is None:
                batch = self._batch = _Batch()
            batch.ids.append(chunk_id)
            batch.limit += 8 + compressed_limit(size)
            self._ahead[chunk_id] = batch
            if len(batch.ids) >= BATCH_IDS or batch.limit >= BATCH_BYTES:
                self._send(batch)

    def _offers_batches(self) -> bool:
        """SERVE-5: whether the server answers batched reads (one small request, once)."""
        try:
            return self.client.get(self.base + BATCH_PATH, len(BATCH_MAGIC), started=self._probe) == BATCH_MAGIC
        except ChunkError:
            return False

    def _send(self, batch: _Batch) -> None:
        """Send the batch being filled (under the lock)."""
        batch.url = self.base + BATCH_PATH + "".join(cid.hex() for cid in batch.ids)
        batch.transfer = self.client.start(batch.url, batch.limit)
        self._batch = None

    def get_raw(self, chunk_id: bytes, size: int | None = None) -> tuple[bytes, bool] | None:
        with self._ahead_lock:
            started = self._ahead.pop(chunk_id, None)
            if isinstance(started, _Batch) and started.transfer is None:
                self._send(started)
        if isinstance(started, _Batch):
            data = started.take(self.client, chunk_id)
            if data is not _SINGLE:
                return None if data is None else (data, True)
            self._batched = False  # refused: the rest one by one too
            started = None
        url = started.url if started is not None else self.chunk_url(chunk_id)
        data = self.client.get(url, compressed_limit(size), started=started)
        return None if data is None else (data, True)

    def close(self) -> None:
        self.client.cancel(self._probe)  # (if nothing asked for it yet)
        with self._ahead_lock:
            ahead, self._ahead, self._batch = self._ahead, {}, None
        for t in ahead.values():
            if isinstance(t, _Batch):
                if t.transfer is not None:
                    self.client.cancel(t.transfer)
            else:
                self.client.cancel(t)

    def has(self, chunk_id: bytes) -> bool:
        return self.client.exists(self.chunk_url(chunk_id))

    def put(self, chunk_id: bytes, data=None, *, compressed_data: bytes | None = None,
            compression: str | None = None) -> int:
        if self.has(chunk_id):
            with self._lock:
                self.stats.existing += 1
            return 0
        payload = self._compressed(data, compressed_data, compression)
        self.client.put(self.chunk_url(chunk_id), payload)
        with self._lock:
            self.stats.writes += 1
            self.stats.written_bytes += len(payload)
        return len(payload)
