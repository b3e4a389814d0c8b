"""What an index holds and, given seeds and stores, where an extraction would take each chunk from.

:func:`index_info` reads the chunk table only (nothing is fetched); with seeds it indexes them as
``extract`` does (spec/seeds.md) and then asks, for every distinct chunk in the order extraction
tries them: the null chunk, each seed, the chunk cache, each store.  What no source has is missing.
The bytes an extraction downloads are exactly those counted for the stores.
"""

from __future__ import annotations

import os
from .pool import ThreadPool
from dataclasses import dataclass, field

from .index import IndexReader
from .store import LocalStore, StoreSet


@dataclass
class Source:
    name: str          #: "null", "seed PATH", "cache", "store LOCATION" or "missing"
    chunks: int = 0
    bytes: int = 0
    compressed_bytes: int | None = None  #: size of the chunk files, where the store can tell

    def as_dict(self) -> dict:
        d = {"source": self.name, "chunks": self.chunks, "bytes": self.bytes}
        if self.compressed_bytes is not None:
            d["compressed-bytes"] = self.compressed_bytes
        return d


@dataclass
class IndexInfo:
    size: int                      #: bytes of the blob or catar stream
    chunks: int                    #: chunk references in the index
    unique: int                    #: distinct chunks
    unique_bytes: int              #: bytes of the distinct chunks
    min_size: int                  #: smallest chunk (0 for an empty index)
    avg_size: int                  #: mean chunk size
    max_size: int                  #: largest chunk
    chunk_sizes: tuple[int, int, int]  #: the chunker's min:avg:max from the header
    digest: str
    kind: str                      #: "blob-index" or "archive-index"
    sources: list[Source] = field(default_factory=list)

    @property
    def dedup_ratio(self) -> float:
        return self.size / self.unique_bytes if self.unique_bytes else 1.0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size, "chunks": self.chunks, "unique-chunks": self.unique,
                "unique-bytes": self.unique_bytes, "dedup-ratio": round(self.dedup_ratio, 4),
                "chunk-size-min": self.min_size, "chunk-size-avg": self.avg_size, "chunk-size-max": self.max_size,
                "chunker": list(self.chunk_sizes), "digest": self.digest,
                "sources": [s.as_dict() for s in self.sources]}

    def lines(self) -> list[str]:
        from .assembly import format_bytes

        out = [f"Kind: {self.kind}", f"Size: {self.size} ({format_bytes(self.size)})",
               f"Chunks: {self.chunks}, {self.unique} unique ({format_bytes(self.unique_bytes)}), "
               f"dedup ratio {self.dedup_ratio:.2f}",
               f"Chunk sizes: min {self.min_size}, avg {self.avg_size}, max {self.max_size} "
               f"(chunker {':'.join(map(str, self.chunk_sizes))})", f"Digest: {self.digest}"]
        for s in self.sources:
            extra = f", {format_bytes(s.compressed_bytes)} compressed" if s.compressed_bytes is not None else ""
            out.append(f"From {s.name}: {s.chunks} chunks, {format_bytes(s.bytes)}{extra}")
        return out


def index_info(index: IndexReader, *, kind: str = "blob-index", stores: StoreSet | None = None, seeds=(),
               seed_cache: str | None = None, warn=None) -> IndexInfo:
    """Statistics of ``index`` (a ``kind`` of index, as its suffix says); with ``seeds`` and/or
    ``stores``, where each distinct chunk would come from in an extraction (see the module's text)."""
    sizes: dict[bytes, int] = {}
    n = total = 0
    mn, mx = None, 0
    for ref in index.chunks():
        n += 1
        total += ref.size
        mn = ref.size if mn is None else min(mn, ref.size)
        mx = max(mx, ref.size)
        sizes.setdefault(ref.id, ref.size)
    info = IndexInfo(size=total, chunks=n, unique=len(sizes), unique_bytes=sum(sizes.values()),
                     min_size=mn or 0, avg_size=total // n if n else 0, max_size=mx,
                     chunk_sizes=index.chunk_sizes, digest=index.digest, kind=kind)
    if stores is None and not seeds:
        return info
    _estimate(info, index, sizes, stores, list(seeds), seed_cache, warn)
    return info


def _estimate(info: IndexInfo, index: IndexReader, sizes: dict[bytes, int], stores: StoreSet | None,
              seeds: list, seed_cache: str | None, warn) -> None:
    from .assembly import Assembler
    from .seeds import null_chunk_ids

    null = null_chunk_ids(index.chunk_sizes, index.digest)
    opened = []
    if seeds:
        asm = Assembler.open(index, stores if stores is not None else StoreSet([os.devnull]), seeds,
                             cache=seed_cache, defer=False, warn=warn)
        opened = [s for s in asm.seeds if s.ready]
    else:
        asm = None
    try:
        null_src = Source("null chunks")
        seed_srcs = [Source(f"seed {s.path}") for s in opened]
        left: dict[bytes, int] = {}
        for cid, size in sizes.items():
            if null.get(cid) == size:
                null_src.chunks += 1
                null_src.bytes += size
                continue
            for s, src in zip(opened, seed_srcs):
                loc = s.locate(cid)
                if loc is not None and loc[1] == size:
                    src.chunks += 1
                    src.bytes += size
                    break
            else:
                left[cid] = size
        info.sources = [null_src, *seed_srcs]
        if stores is not None:
            info.sources += _from_stores(stores, left)
        else:
            missing = Source("stores (none given)", len(left), sum(left.values()))
            info.sources.append(missing)
    finally:
        if asm is not None:
            asm.close()


def _from_stores(stores: StoreSet, left: dict[bytes, int]) -> list[Source]:
    """Which of ``left`` the chunk cache and each store has (first match wins, as in extraction)."""
    tiers = ([("chunk cache", stores.cache)] if stores.cache is not None else []) + \
        [(f"store {s.location}", s) for s in stores.stores]
    out = []
    threads = max(stores.concurrency, 2)
    with ThreadPool(threads, "pycatar-info") as ex:
        for name, store in tiers:
            src = Source(name, compressed_bytes=0 if isinstance(store, LocalStore) else None)
            ids = list(left)
            for cid, has in zip(ids, ex.map(store.has, ids)):
                if has:
                    size = left.pop(cid)
                    src.chunks += 1
                    src.bytes += size
                    if src.compressed_bytes is not None:
                        try:
                            src.compressed_bytes += os.lstat(store.chunk_path(cid)).st_size
                        except OSError:
                            src.compressed_bytes += size  # stored uncompressed
            out.append(src)
    out.append(Source("nowhere (missing)", len(left), sum(left.values())))
    return out
