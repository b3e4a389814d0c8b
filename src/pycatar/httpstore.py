"""A chunk store on an HTTP(S) server, laid out as a local store (``<url>/<hex[:4]>/<hex>.cacnk``).

Any static web server serving a store directory works for reading (as with casync); writing uses
``PUT`` of the compressed chunk file to the same URL, for a server that accepts it (``pycatar serve
--writable``), after a ``HEAD`` shows the chunk is not there yet.  Chunks are verified after
download like those of every store (:meth:`pycatar.store.ChunkStore.fetch`).
"""

from __future__ import annotations

import threading

from .compression import DECOMPRESSED_LIMIT
from .httpclient import HTTPClient, redact
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
        self._ahead: dict[bytes, object] = {}  # chunk id -> transfer sent by ahead(), oldest first
        self._ahead_lock = threading.Lock()

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
                self.client.cancel(self._ahead.pop(next(iter(self._ahead))))
            self._ahead[chunk_id] = self.client.start(self.chunk_url(chunk_id), compressed_limit(size))

    def get_raw(self, chunk_id: bytes, size: int | None = None) -> tuple[bytes, bool] | None:
        with self._ahead_lock:
            started = self._ahead.pop(chunk_id, None)
        url = started.url if started is not None else self.chunk_url(chunk_id)
        data = self.client.get(url, compressed_limit(size), started=started)
        return None if data is None else (data, True)

    def close(self) -> None:
        with self._ahead_lock:
            ahead, self._ahead = self._ahead, {}
        for t in ahead.values():
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
