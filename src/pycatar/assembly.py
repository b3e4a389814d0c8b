"""Assembly: the data of an index's chunks from seeds first, then from the stores (spec/seeds.md).

:class:`Assembler` is a :class:`~pycatar.blob.ChunkSource`, so the existing pipelines use it as
they use stores: :func:`pycatar.blob.extract_blob` for blobs (fetching in the thread pool, writing
in order) and :class:`pycatar.blob.IndexStream` for ``.caidx`` trees (read-ahead in the pool).
For each chunk it tries, in order (SEED-6):

1. the *null seed* — a chunk of zeros is never fetched (SEED-8);
2. the *self seed* — a chunk that occurs more than once in the target is obtained once; later
   occurrences are read back from the output being written (blobs) or from a spill file (trees)
   (SEED-7);
3. every seed, in order (the pre-existing output first, then each ``--seed``);
4. the stores.

Bytes from a seed are used only after their digest matched the chunk id.

:func:`extract_blob` and :func:`extract_tree` wire this up for the ``extract`` verb and return a
:class:`Summary` of where every chunk came from.
"""

from __future__ import annotations

import os
import stat as st
import threading
import time
from .pool import Future, ThreadPool
from collections.abc import Callable, Iterable

from . import digest as _digest
from .blob import ChunkSource, IndexStream, default_threads, is_zero
from .errors import ChunkError, PycatarError
from .fileio import install, pread_full, temp_name
from .index import ChunkRef, IndexReader
from .record import Record
from .seeds import DirectorySeed, Seed, SeedCache, SeedError, Target, null_chunk_ids, open_seed
from .store import StoreSet, as_store_set, decode_chunks

#: where a chunk can come from, in the order of the summary
SOURCES = ("null", "self", "file", "directory", "index", "store")
#: chunks smaller than this (a file system block) are copied, never cloned from where they were found
CLONE_MIN = 4096
#: repeated chunks are kept in memory once obtained, up to this many bytes in all: a later occurrence
#: then costs a lookup, not a read back and a digest (SEED-7).  For a blob written to a file, only
#: chunks smaller than CLONE_MIN: a larger one is read back from the output, to be cloned from it.
REPEATS_MEMORY_BYTES = 32 << 20
#: seed kinds casync calls "local seed" in its summary
LOCAL_SEED_KINDS = ("file", "directory", "index")


# --------------------------------------------------------------------------- summary


def format_bytes(n: int) -> str:
    """Sizes as casync prints them (IEC units, one truncated decimal: 65.5K, 2.7M, 0B)."""
    for suffix, factor in (("E", 1 << 60), ("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30),
                           ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            return f"{n // factor}.{(n * 10 // factor) % 10}{suffix}"
    return f"{n}B"


def _format_seconds(s: float) -> str:
    ms = int(s * 1000)
    if ms < 1000:
        return f"{ms}ms"
    return f"{s:.3f}".rstrip("0").rstrip(".") + "s"


class Summary(Record):
    """Where the chunks of one extraction came from (SEED-10)."""

    __slots__ = ("sources", "seeds", "reflinked_bytes", "hardlinked_bytes", "hole_bytes", "seeding_seconds",
                 "seconds", "deferred", "reflink", "hardlink", "punch_holes")

    def __init__(self, sources: dict[str, list[int]] | None = None, seeds: list[Seed] | None = None,
                 reflinked_bytes: int = 0, hardlinked_bytes: int = 0, hole_bytes: int = 0,
                 seeding_seconds: float = 0.0, seconds: float = 0.0, deferred: bool = False,
                 reflink: bool = True, hardlink: bool = False, punch_holes: bool = True) -> None:
        self.sources = {k: [0, 0] for k in SOURCES} if sources is None else sources
        self.seeds = [] if seeds is None else seeds
        self.reflinked_bytes = reflinked_bytes
        self.hardlinked_bytes = hardlinked_bytes
        self.hole_bytes = hole_bytes
        self.seeding_seconds = seeding_seconds
        self.seconds = seconds
        self.deferred = deferred  # seeds were not chunked: the stores had every chunk
        self.reflink = reflink
        self.hardlink = hardlink
        self.punch_holes = punch_holes

    @property
    def chunks(self) -> int:
        return sum(v[0] for v in self.sources.values())

    @property
    def bytes(self) -> int:
        return sum(v[1] for v in self.sources.values())

    def as_dict(self) -> dict:
        return {
            "chunks": self.chunks,
            "bytes": self.bytes,
            "sources": {k: {"chunks": v[0], "bytes": v[1]} for k, v in self.sources.items()},
            "seeds": [s.describe() for s in self.seeds],
            "seeding_deferred": self.deferred,
            "hole_bytes": self.hole_bytes,
            "reflinked_bytes": self.reflinked_bytes,
            "hardlinked_bytes": self.hardlinked_bytes,
            "seeding_seconds": round(self.seeding_seconds, 6),
            "seconds": round(self.seconds, 6),
        }

    def short(self) -> str:
        """Where the bytes came from so far, in a few words (for a progress display)."""
        seed_b = sum(self.sources[k][1] for k in (*LOCAL_SEED_KINDS, "self"))
        return (f"seeds {format_bytes(seed_b)}, store {format_bytes(self.sources['store'][1])}, "
                f"zeros {format_bytes(self.sources['null'][1])}")

    def lines(self) -> list[str]:
        """The human summary: casync's lines first (its "local seed" is our file, directory and
        index seeds), then pycatar's own."""
        out = []
        total_c, total_b = self.chunks, self.bytes

        def pct(x, total):
            return x * 100 // total if total else 0

        if self.punch_holes:
            out.append(f"Zero bytes written as sparse files: {format_bytes(self.hole_bytes)}")
        if self.reflink:
            out.append(f"Bytes cloned through reflinks: {format_bytes(self.reflinked_bytes)}")
        if self.hardlink:
            out.append(f"Bytes cloned through hardlinks: {format_bytes(self.hardlinked_bytes)}")
        store_c, store_b = self.sources["store"]
        seed_c = sum(self.sources[k][0] for k in LOCAL_SEED_KINDS)
        seed_b = sum(self.sources[k][1] for k in LOCAL_SEED_KINDS)
        out.append(f"Chunk requests fulfilled from local store: {store_c} ({pct(store_c, total_c)}%)")
        out.append(f"Bytes used from local store: {format_bytes(store_b)} ({pct(store_b, total_b)}%)")
        out.append(f"Chunk requests fulfilled from local seed: {seed_c} ({pct(seed_c, total_c)}%)")
        out.append(f"Bytes used from local seed: {format_bytes(seed_b)} ({pct(seed_b, total_b)}%)")
        for kind, name in (("self", "self seed (repeated chunks)"), ("null", "null seed (zero chunks)")):
            c, b = self.sources[kind]
            out.append(f"Chunk requests fulfilled from the {name}: {c} ({pct(c, total_c)}%), "
                       f"{format_bytes(b)} ({pct(b, total_b)}%)")
        for s in self.seeds:
            what = "output, " if s.output else ""
            if s.how == "deferred":
                out.append(f"Seed {s.path} ({what}{s.kind}) was not read: the stores held every chunk the "
                           "other sources lacked, and reading it would have cost more than fetching them")
                continue
            out.append(f"Seed {s.path} ({what}{s.kind}, {s.how} in {_format_seconds(s.seconds)}): "
                       f"{s.chunks} chunks, {format_bytes(s.bytes)}, {s.stale} stale")
        if self.deferred:
            out.append("Seeds not chunked: the stores hold every chunk")
        out.append(f"Time spent seeding: {_format_seconds(self.seeding_seconds)} "
                   f"({pct(int(self.seeding_seconds * 1e6), int(self.seconds * 1e6))}%)")
        out.append(f"Total extract time: {_format_seconds(self.seconds)}")
        return out


# --------------------------------------------------------------------------- the chunks an index needs


class NeededChunks:
    """The distinct chunk ids of an index and which of them occur more than once, in 33 bytes an id
    (a dict of bytes and a counter took over 100): ids are spread over buckets by Python's randomised ``hash`` (an
    index cannot choose ids that pile up in one bucket) and kept sorted in each, a bucket's new ids
    sorted in and duplicates merged whenever they have doubled it.  ``in``, ``len`` and iteration
    work as on the dict of ids it replaces (seeds ask ``cid in needed``)."""

    _ID = 32
    _MERGE_AT = 4096 * 32  # bytes of new ids a bucket takes before they are sorted in

    def __init__(self, expected: int = 0):
        nb = 1
        while nb < 65536 and nb * 128 < expected:  # about 128 ids a bucket
            nb <<= 1
        self._mask = nb - 1
        self._ids = [bytearray() for _ in range(nb)]  # sorted, unique
        self._multi = [bytearray() for _ in range(nb)]  # 1 where the id occurs more than once
        self._new = [bytearray() for _ in range(nb)]  # ids not sorted in yet
        self._merge_at = [self._MERGE_AT] * nb
        self._len = 0

    @classmethod
    def of_index(cls, reader: IndexReader) -> "NeededChunks":
        needed = cls(len(reader))
        new, mask, merge_at = needed._new, needed._mask, needed._merge_at
        for cid in reader.chunk_ids():
            b = hash(cid) & mask
            bucket = new[b]
            bucket += cid
            if len(bucket) >= merge_at[b]:
                needed._merge(b)
        needed.seal()
        return needed

    def seal(self) -> None:
        """Sort in what was added last."""
        for b, new in enumerate(self._new):
            if new:
                self._merge(b)

    def _merge(self, b: int) -> None:
        k = self._ID
        ids, multi, new = self._ids[b], self._multi[b], self._new[b]
        old, new = bytes(ids), bytes(new)
        everything = [old[i:i + k] for i in range(0, len(old), k)]
        everything += [new[i:i + k] for i in range(0, len(new), k)]
        if 1 not in multi and len(set(everything)) == len(everything):  # nothing repeats (yet)
            everything.sort()
            out_ids, out_multi = bytearray().join(everything), bytearray(len(everything))
        else:
            recs = sorted(zip(everything, multi + bytes(len(new) // k)))
            out_ids, out_multi = bytearray(), bytearray()
            prev = None
            for cid, m in recs:
                if cid == prev:
                    out_multi[-1] = 1
                else:
                    out_ids += cid
                    out_multi.append(m)
                    prev = cid
        self._len += len(out_multi) - len(multi)
        self._ids[b], self._multi[b], self._new[b] = out_ids, out_multi, bytearray()
        self._merge_at[b] = max(self._MERGE_AT, 2 * len(out_ids))

    def _find(self, cid: bytes) -> tuple[int, int]:
        """(bucket, position) of ``cid``, position -1 when absent."""
        b = hash(cid) & self._mask
        ids = self._ids[b]
        k = self._ID
        lo, hi = 0, len(ids) // k
        while lo < hi:
            mid = (lo + hi) >> 1
            if ids[mid * k:mid * k + k] < cid:
                lo = mid + 1
            else:
                hi = mid
        return b, (lo if ids[lo * k:lo * k + k] == cid else -1)

    def __contains__(self, cid) -> bool:
        return self._find(cid)[1] >= 0

    def any_repeated(self) -> bool:
        """Whether any id occurs more than once in the index."""
        return any(1 in multi for multi in self._multi)

    def repeated(self, cid: bytes) -> bool:
        """Whether ``cid`` occurs more than once in the index."""
        b, i = self._find(cid)
        return i >= 0 and self._multi[b][i] == 1

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        k = self._ID
        for ids in self._ids:
            for i in range(0, len(ids), k):
                yield bytes(ids[i:i + k])


# --------------------------------------------------------------------------- the self seed's spill


class _Spill:
    """An unlinked temporary file holding one copy of each repeated chunk (trees, pipes)."""

    def __init__(self, directory: str | None):
        self._dir = directory
        self._f = None
        self._end = 0
        self._lock = threading.Lock()

    def put(self, data) -> int:
        with self._lock:
            if self._f is None:
                import tempfile  # only once 32 MiB of repeated chunks are kept: 3-4 ms of every start

                try:
                    self._f = tempfile.TemporaryFile(dir=self._dir, prefix="pycatar-self-")
                except OSError as e:
                    raise PycatarError(f"cannot create a temporary file: {e.strerror}") from None
            off = self._end
            self._end += len(data)
        mv = memoryview(data)
        pos = off
        while mv:
            n = os.pwrite(self._f.fileno(), mv, pos)
            mv = mv[n:]
            pos += n
        return off

    def fd(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = pread_full(fd, size, offset)
    return data + bytes(size - len(data)) if len(data) < size else data  # a hole not yet written


# --------------------------------------------------------------------------- the assembler


class Assembler(ChunkSource):
    """Chunk data from the null seed, the self seed, the seeds, then the stores (SEED-6).

    Build it with :meth:`open`; it is thread-safe (``fetch`` runs in worker threads)."""

    def __init__(self, reader: IndexReader, stores, seeds: list[Seed], target: Target, *,
                 null_seed: bool = True, reflink: bool = True,
                 spill_dir: str | None = None, cache: SeedCache | None = None,
                 threads: int | None = None, warn: Callable[[str], None] | None = None):
        self.reader = reader
        self.stores: StoreSet = as_store_set(stores, digest=reader.digest)
        self.concurrency = self.stores.concurrency
        self.fetches_ahead = self.stores.fetches_ahead
        self.seeds = seeds
        self.target = target
        self.digest = reader.digest
        self.reflink = reflink
        self.cache = cache
        self.spill_dir = spill_dir
        self.threads = threads
        self.warn = warn or (lambda msg: None)
        self.summary = Summary(seeds=seeds, reflink=reflink)
        self._lock = threading.Lock()
        self._null = null_chunk_ids(target.chunk_sizes, self.digest) if null_seed else {}
        self._zeros: dict[int, bytes] = {}
        #: the self seed's chunks: ids occurring more than once in the target (set by open())
        self._repeats: NeededChunks | None = None
        self._self_loc: dict[bytes, int] = {}
        self._kept: dict[bytes, bytes] = {}  # repeated chunks, verified (REPEATS_MEMORY_BYTES)
        self._kept_bytes = 0
        self._inflight: dict[bytes, Future] = {}
        self._spill = _Spill(spill_dir)
        self._readback: int | None = None  # descriptor on the blob being written
        self._out = None
        self._origins: dict[int, tuple[int, int]] = {}
        self._deferred: list[Seed] = []
        self._defer_lock = threading.Lock()
        self._deferred_done = False
        self._deferred_any = False

    # ------------------------------------------------------------------ building

    @classmethod
    def open(cls, reader: IndexReader, stores, seed_paths: Iterable[str] = (), *,
             output_seed: str | None = None, cache: str | None = None, null_seed: bool = True,
             self_seed: bool = True, reflink: bool = True, hardlinks: bool = False,
             encoder_options: dict | None = None, defer: bool = True, threads: int | None = None,
             warn: Callable[[str], None] | None = None,
             progress: Callable[[str], None] | None = None) -> "Assembler":
        """Index the seeds for ``reader``'s index and return the assembler.

        ``output_seed``: the pre-existing output (tried first, as casync does).  A seed that cannot
        be used is reported through ``warn`` and left out (SEED-3).  With ``defer``, seeds that
        would have to be chunked are not, as long as the stores hold every chunk the other seeds
        lack; they are chunked the first time a store cannot deliver (SEED-11)."""
        t0 = time.monotonic()
        warn = warn or (lambda msg: None)
        progress = progress or (lambda msg: None)
        needed = NeededChunks.of_index(reader)
        target = Target(reader.feature_flags, reader.chunk_sizes, reader.digest, needed,
                        dict(encoder_options or {}), hardlinks)
        seed_cache = SeedCache(cache) if cache else None
        spill_dir = seed_cache.path if seed_cache else None

        seeds: list[Seed] = []
        paths = ([(output_seed, True)] if output_seed else []) + [(p, False) for p in seed_paths]
        for path, is_output in paths:
            try:
                seed = open_seed(path, output=is_output)
            except SeedError as e:
                warn(_seed_failure(path, e))
                continue
            try:
                progress(f"Seeding {path}")
                seed.prepare(target, seed_cache, spill_dir)
            except (PycatarError, OSError) as e:
                seed.close()
                warn(_seed_failure(path, e))
                continue
            seeds.append(seed)

        asm = cls(reader, stores, seeds, target, null_seed=null_seed, reflink=reflink,
                  spill_dir=spill_dir, cache=seed_cache, threads=threads, warn=warn)
        if self_seed and needed.any_repeated():  # else no chunk needs a look-up (3 per chunk)
            asm._repeats = needed
        for s in seeds:
            s.select(needed)
        pending = [s for s in seeds if not s.ready]
        if pending:
            # SEED-11: probing remote stores chunk by chunk costs more than indexing local seeds
            if defer and not asm.stores.remote and not asm._anything_missing(needed):
                asm._deferred = pending
                for s in pending:
                    s.how = "deferred"
                asm.summary.deferred = True
            else:
                asm._index(pending, progress)
        asm.summary.seeding_seconds = time.monotonic() - t0
        return asm

    def _anything_missing(self, needed: NeededChunks) -> bool:
        ready = [s for s in self.seeds if s.ready]
        for cid in needed:
            if cid in self._null or any(s.locate(cid) is not None for s in ready):
                continue
            if not self.stores.has(cid):
                return True
        return False

    def _index(self, seeds: list[Seed], progress=None) -> None:
        with ThreadPool(self.threads or default_threads(), "pycatar-seed") as ex:
            for s in seeds:
                try:
                    s.index(self.target, self.cache, ex, self.spill_dir)
                except (PycatarError, OSError) as e:
                    self.warn(_seed_failure(s.path, e))
                    s.how = "failed"
                    s.close()
                    continue
                s.select(self.target.needed)
                if progress:
                    progress(f"Seeded {s.path}: {len(s.table)} chunks ({s.how}, {_format_seconds(s.seconds)})")

    def _index_deferred(self) -> bool:
        """SEED-11: chunk the deferred seeds now, once (other callers wait for it); True if there
        were any, so that trying the seeds again can help."""
        with self._defer_lock:
            if self._deferred_done:
                return self._deferred_any
            pending, self._deferred = self._deferred, []
            self._deferred_done, self._deferred_any = True, bool(pending)
            if pending:
                t0 = time.monotonic()
                self._index(pending)
                with self._lock:
                    self.summary.seeding_seconds += time.monotonic() - t0
                    self.summary.deferred = False
            return self._deferred_any

    # ------------------------------------------------------------------ fetching

    def _count(self, kind: str, size: int, chunks: int = 1) -> None:
        with self._lock:
            c = self.summary.sources[kind]
            c[0] += chunks
            c[1] += size

    def _zero(self, size: int) -> bytes:
        z = self._zeros.get(size)
        if z is None:
            z = self._zeros.setdefault(size, bytes(size))
        return z

    def ahead(self, ref: ChunkRef) -> None:
        """The stores request ahead the chunks no seed has; a chunk occurring more than once at its
        first occurrence only (the others take it from the self seed, SEED-7), so that on a distant
        server it costs no round trip of its own either."""
        cid, size = ref.id, ref.size
        if self._null.get(cid) == size:
            return
        if cid in self._self_loc or cid in self._inflight:  # (only repeated chunks are ever in these)
            return  # obtained, or being obtained, for an earlier occurrence (requests pending are the store's to merge)
        for seed in self.seeds:
            loc = seed.locate(cid)
            if loc is not None and loc[1] == size:
                return
        self.stores.ahead(cid, size)

    def fetch(self, ref: ChunkRef) -> bytes:
        cid, size = ref.id, ref.size
        if self._null.get(cid) == size:
            self._count("null", size)
            return self._zero(size)
        if self._repeated(cid):
            return self._fetch_repeated(ref)
        return self._obtain(ref)

    def fetch_many(self, refs: list[ChunkRef]) -> list:
        """:meth:`fetch` of each of ``refs``: those that only a store can give (no chunk of zeros, in no
        seed) are read from the stores a batch at a time, and so are the repeated chunks this call
        is the first to ask for (SEED-7: the later requests wait for them or take them from memory)."""
        out: list = [None] * len(refs)
        plain, seeded = [], []
        owned: dict[bytes, tuple[Future, list[int]]] = {}  # repeated chunks this call obtains
        waits: list[tuple[int, tuple]] = []  # and those another request obtains
        in_memory, kept, kept_bytes = self._kept, 0, 0
        try:  # (from the first claim on: a claimed chunk is published or abandoned, never left)
            for i, ref in enumerate(refs):
                cid, size = ref.id, ref.size
                data = in_memory.get(cid)  # (a repeated chunk obtained before: no lock for a dict lookup)
                if data is not None:
                    out[i] = data
                    kept += 1
                    kept_bytes += size
                    continue
                if self._null.get(cid) == size:
                    out[i] = self.fetch(ref)
                    continue
                if self._repeated(cid):
                    if cid in owned:
                        owned[cid][1].append(i)
                        continue
                    claim = self._claim(cid)
                    if not claim[3]:
                        waits.append((i, claim))
                        continue
                    owned[cid] = (claim[2], [i])
                if any(seed.locate(cid) is not None for seed in self.seeds):
                    seeded.append(i)
                else:
                    plain.append(i)
            if seeded:  # what no seed gives intact goes to the stores with the rest
                for i, data in zip(seeded, self._from_seeds([refs[i] for i in seeded])):
                    if data is None:
                        plain.append(i)
                    else:
                        out[i] = data
            if plain:
                try:
                    datas = self.stores.get_many([(refs[i].id, refs[i].size) for i in plain])
                except ChunkError:
                    if not self._index_deferred():  # SEED-11: with the deferred seeds indexed, try them first
                        raise
                    datas = [self._obtain(refs[i], retry=False) for i in plain]
                else:
                    for i in plain:
                        self._count("store", refs[i].size)
                for i, data in zip(plain, datas):
                    out[i] = data
            for fut, (first, *others) in owned.values():
                self._publish(refs[first], fut, out[first])
                for i in others:
                    out[i] = out[first]
                    kept += 1
                    kept_bytes += refs[i].size
        except BaseException as e:
            for cid, (fut, _) in owned.items():
                if not fut.done():
                    self._abandon(cid, fut, e)
            raise
        # only now, with none of this call's chunks unpublished, wait for other requests' (two calls
        # waiting for each other's chunks before handing over their own would wait forever)
        for i, claim in waits:
            out[i] = self._fetch_repeated(refs[i], claim)
        if kept:
            self._count("self", kept_bytes, kept)
        return out

    def _repeated(self, cid: bytes) -> bool:
        """SEED-7: the chunk occurs more than once in the target and is not a chunk of zeros."""
        return self._repeats is not None and cid not in self._null and self._repeats.repeated(cid)

    def _verified(self, cid: bytes, data) -> bool:
        return _digest.digest(self.digest, data) == cid

    def _from_seeds(self, refs: list[ChunkRef]) -> list:
        """Each chunk from the first seed that has it and gives it intact, or None.  A seed whose copy
        does not match is forgotten for that chunk (SEED-6: changed since it was indexed; never asked
        again) and the next seed is asked, in a round of its own: each round's reads are checked as a
        store's chunks are (store.decode_chunks: size, then digests in one call, several chunks at a
        time)."""
        out: list = [None] * len(refs)
        todo = range(len(refs))
        while todo:
            tries, datas = [], []
            for i in todo:
                ref = refs[i]
                for seed in self.seeds:
                    loc = seed.locate(ref.id)
                    if loc is not None and loc[1] == ref.size:
                        try:
                            datas.append(seed.read(loc[0], ref.size))
                        except OSError:
                            datas.append(b"")
                        tries.append((i, seed, loc[0]))
                        break
            checked = decode_chunks([(data, False, refs[i].id, refs[i].size, "seed chunk")
                                     for (i, _, _), data in zip(tries, datas)], self.digest)
            todo = []
            for (i, seed, offset), data in zip(tries, checked):
                ref = refs[i]
                if isinstance(data, ChunkError):
                    seed.forget(ref.id)
                    todo.append(i)
                    continue
                out[i] = data
                seed.count(ref.size)
                self._count(seed.kind, ref.size)
                if self._out is not None and self.reflink and ref.size >= CLONE_MIN:
                    origin = seed.origin(offset)
                    if origin is not None:
                        with self._lock:
                            self._origins[ref.index] = origin
        return out

    def _obtain(self, ref: ChunkRef, retry: bool = True) -> bytes:
        cid, size = ref.id, ref.size
        data = self._from_seeds([ref])[0]
        if data is not None:
            return data
        try:
            data = self.stores.get(cid, size)
        except ChunkError:
            if retry and self._index_deferred():
                return self._obtain(ref, retry=False)
            raise
        self._count("store", size)
        return data

    def _claim(self, cid: bytes) -> tuple:
        """SEED-7, a repeated chunk: ``(data, offset, future, owner)``: its copy in memory, or where it
        can be read back, or the future it arrives in: another request's, or (``owner``) a new one
        that this request fulfils (:meth:`_publish`) or fails (:meth:`_abandon`)."""
        with self._lock:
            data = self._kept.get(cid)
            loc = self._self_loc.get(cid)
            fut, owner = None, False
            if data is None and loc is None:
                fut = self._inflight.get(cid)
                if fut is None:
                    fut = self._inflight[cid] = Future()
                    owner = True
        return data, loc, fut, owner

    def _fetch_repeated(self, ref: ChunkRef, claim: tuple | None = None) -> bytes:
        """SEED-7: the first request obtains the chunk; the others wait for it or read it back."""
        cid, size = ref.id, ref.size
        data, loc, fut, owner = claim or self._claim(cid)
        if data is not None:
            self._count("self", size)
            return data
        if loc is not None:
            fd = self._readback if self._readback is not None else self._spill.fd()
            data = _pread(fd, size, loc)
            if self._verified(cid, data):
                self._count("self", size)
                if self._readback is not None and self.reflink and size >= CLONE_MIN:
                    with self._lock:
                        self._origins[ref.index] = (fd, loc)
                return data
            with self._lock:
                self._self_loc.pop(cid, None)
            return self._obtain(ref)
        if not owner:
            data = fut.result()
            self._count("self", size)
            return data
        try:
            data = self._obtain(ref)
        except BaseException as e:
            self._abandon(cid, fut, e)
            raise
        self._publish(ref, fut, data)
        return data

    def _abandon(self, cid: bytes, fut: Future, error: BaseException) -> None:
        """The request that claimed a repeated chunk could not obtain it: those waiting get ``error``,
        and the next request claims it anew."""
        with self._lock:
            if self._inflight.get(cid) is fut:
                del self._inflight[cid]
        fut.set_exception(error)

    def _publish(self, ref: ChunkRef, fut: Future, data) -> None:
        """Hand a repeated chunk this request obtained to those waiting for it, and keep it for the
        later occurrences: in memory up to REPEATS_MEMORY_BYTES, beyond that in the spill file (trees
        and pipes) or the output (blobs: its future stays until write() has put it there)."""
        cid, size = ref.id, ref.size
        fut.set_result(data)
        kept = ((size < CLONE_MIN or self._readback is None)
                and self._kept_bytes + size <= REPEATS_MEMORY_BYTES)
        if kept:
            with self._lock:
                self._kept[cid] = bytes(data)
                self._kept_bytes += size
        if self._readback is None:
            off = None if kept else self._spill.put(data)
            with self._lock:
                if off is not None:
                    self._self_loc[cid] = off
                self._inflight.pop(cid, None)

    # ------------------------------------------------------------------ writing blobs

    def bind_output(self, out) -> None:
        self._out = out
        self._readback = out.readback_fd()
        self.summary.punch_holes = bool(out.sparse)

    def release_output(self) -> None:
        if self._out is not None:
            self.summary.hole_bytes = self._out.holes
        if self._readback is not None:
            os.close(self._readback)
            self._readback = None
        self._out = None

    def write(self, out, ref: ChunkRef, data) -> None:
        origin = None
        if self._origins:  # set, if at all, by the fetch that returned ``data``
            with self._lock:
                origin = self._origins.pop(ref.index, None)
        if origin is not None and self.reflink and not (out.sparse and is_zero(data)):
            self.summary.reflinked_bytes += out.clone_from(origin[0], origin[1], data)
        else:
            out.write(data)
        if self._readback is not None and ref.id not in self._self_loc and self._repeated(ref.id):
            out.settle()  # every byte of the chunk in the file, where a later occurrence reads it back
            with self._lock:
                if ref.id not in self._self_loc:
                    self._self_loc[ref.id] = ref.start
                self._inflight.pop(ref.id, None)

    def close(self) -> None:
        self._spill.close()
        for s in self.seeds:
            s.close()


def _seed_failure(path: str, e: BaseException) -> str:
    msg = str(e) if isinstance(e, PycatarError) else (e.strerror or str(e))
    if msg.startswith("Failed to add seed"):
        return msg
    return f"Failed to add seed {path}, ignoring: {msg}"


# --------------------------------------------------------------------------- hardlinks


class _Hardlinker:
    """SEED-12: after a regular file is restored, replace it by a hard link to an identical file
    of a directory seed (same metadata records, same size, same bytes, same owner/mode/mtime)."""

    def __init__(self, dest: str, prefix: str, seeds: list[DirectorySeed], target: Target,
                 spill_dir: str | None, summary: Summary):
        self.dest = dest
        self.prefix = prefix
        self.summary = summary
        self.layouts = []
        for s in seeds:
            try:
                self.layouts.append(s.ensure_layout(target, spill_dir))
            except (PycatarError, OSError):
                continue

    def __call__(self, entry) -> None:
        if not entry.isreg() or entry.size == 0 or not entry.path.startswith(self.prefix):
            return
        from .encoder import entry_records

        key = (_digest.digest("sha256", entry_records(entry)), entry.size)
        for layout in self.layouts:
            for i in layout.links.get(key, ()):
                try:
                    if self._link(layout, i, entry.path[len(self.prefix):]):
                        self.summary.hardlinked_bytes += entry.size
                        return
                except OSError:
                    continue

    def _open_parent(self, rel: str) -> tuple[int, str]:
        parts = rel.split("/")
        fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for p in parts[:-1]:
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _link(self, layout, i: int, rel: str) -> bool:
        src_rel = layout.paths[i]
        s_seed = os.stat(src_rel, dir_fd=layout.root_fd, follow_symlinks=False)
        if (s_seed.st_dev, s_seed.st_ino, s_seed.st_size, s_seed.st_mtime_ns) != layout.file_stats[i]:
            return False  # changed since the walk
        dfd, name = self._open_parent(rel)
        try:
            s_new = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not (st.S_ISREG(s_new.st_mode) and st.S_ISREG(s_seed.st_mode)):
                return False
            if s_new.st_dev != s_seed.st_dev or s_new.st_ino == s_seed.st_ino:
                return False
            if (s_new.st_mode, s_new.st_uid, s_new.st_gid, s_new.st_size, s_new.st_mtime_ns) != \
                    (s_seed.st_mode, s_seed.st_uid, s_seed.st_gid, s_seed.st_size, s_seed.st_mtime_ns):
                return False
            if not self._same_bytes(layout.root_fd, src_rel, dfd, name):
                return False
            tmp = temp_name(name)
            os.link(src_rel, tmp, src_dir_fd=layout.root_fd, dst_dir_fd=dfd, follow_symlinks=False)
            install(tmp, name, dir_fd=dfd)
            return True
        finally:
            os.close(dfd)

    @staticmethod
    def _same_bytes(afd_dir: int, a: str, bfd_dir: int, b: str) -> bool:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        fa = os.open(a, flags, dir_fd=afd_dir)
        try:
            fb = os.open(b, flags, dir_fd=bfd_dir)
            try:
                off = 0
                while True:
                    x = os.pread(fa, 1 << 20, off)
                    y = os.pread(fb, 1 << 20, off)
                    if x != y:
                        return False
                    if not x:
                        return True
                    off += len(x)
            finally:
                os.close(fb)
        finally:
            os.close(fa)


# --------------------------------------------------------------------------- the extract verb


def extract_blob(index, output, stores, *, seeds: Iterable[str] = (), seed_output: bool = True,
                 cache: str | None = None, reflink: bool = True, sparse: bool = True,
                 threads: int | None = None, null_seed: bool = True, self_seed: bool = True,
                 defer: bool = True, warn=None, progress=None, on_bytes=None, on_summary=None) -> Summary:
    """Extract a blob index like :func:`pycatar.blob.extract_blob`, taking chunks from seeds
    where they have them; ``output`` is a path, a block device or a binary file object."""
    from . import blob

    t0 = time.monotonic()
    reader = index if isinstance(index, IndexReader) else IndexReader(index)
    out_seed = None
    if seed_output and isinstance(output, (str, bytes, os.PathLike)):
        p = os.fsdecode(output)
        try:
            s = os.stat(p)
            if st.S_ISREG(s.st_mode) or st.S_ISBLK(s.st_mode):
                out_seed = p
        except OSError:
            pass
    try:
        asm = Assembler.open(reader, stores, seeds, output_seed=out_seed, cache=cache, null_seed=null_seed,
                             self_seed=self_seed, reflink=reflink, defer=defer, threads=threads, warn=warn,
                             progress=progress)
        if on_summary is not None:
            on_summary(asm.summary)
        try:
            blob.extract_blob(reader, output, None, threads=threads, sparse=sparse, source=asm, on_bytes=on_bytes)
        finally:
            asm.close()
    finally:
        if reader is not index:
            reader.close()
    asm.summary.seconds = time.monotonic() - t0
    asm.summary.punch_holes = sparse
    return asm.summary


def extract_tree(index, dest, stores, subpath: str | None = None, *, seeds: Iterable[str] = (),
                 seed_output: bool = True, cache: str | None = None, reflink: bool = True,
                 hardlink: bool = False, threads: int | None = None, null_seed: bool = True,
                 self_seed: bool = True, defer: bool = True, warn=None, progress=None, on_bytes=None, on_summary=None,
                 **extract_options):
    """Extract a ``.caidx`` into the directory ``dest`` (see :func:`pycatar.extract.extract_archive`
    for ``subpath`` and ``extract_options``), taking chunks from seeds where they have them.
    Returns ``(ExtractStats, Summary)``."""
    t0 = time.monotonic()
    reader = index if isinstance(index, IndexReader) else IndexReader(index)
    out_seed = None
    if seed_output and os.path.isdir(dest):
        out_seed = os.fsdecode(dest)
    enc_opts = {k: extract_options[k] for k in ("uid_shift", "uid_range") if k in extract_options}
    try:
        asm = Assembler.open(reader, stores, seeds, output_seed=out_seed, cache=cache, null_seed=null_seed,
                             self_seed=self_seed, reflink=reflink, hardlinks=hardlink,
                             encoder_options=enc_opts, defer=defer, threads=threads, warn=warn,
                             progress=progress)
        summary = asm.summary
        if on_summary is not None:
            on_summary(summary)
        summary.hardlink = hardlink
        summary.punch_holes = extract_options.get("punch_holes", True)
        summary.reflink = reflink
        try:
            if hardlink:
                from .extract import normalize_subpath

                sub = normalize_subpath(subpath)
                prefix = sub.rpartition("/")[0] + "/" if sub and "/" in sub else ""
                link_seeds = [s for s in asm.seeds
                              if isinstance(s, DirectorySeed) and not s.output and s.how != "failed"]
                extract_options["on_entry"] = _Hardlinker(os.fsdecode(dest), prefix, link_seeds, asm.target,
                                                          asm.spill_dir, summary)
            with IndexStream(reader, asm, threads=threads or None, cache_size=8) as stream:
                stream.on_bytes = on_bytes
                if not subpath:
                    stream.start()  # the chunks are on their way while the extractor is loaded
                from .extract import extract_archive

                stats = extract_archive(stream, dest, subpath, **extract_options)
        finally:
            asm.close()
    finally:
        if reader is not index:
            reader.close()
    summary.hole_bytes = stats.hole_bytes
    summary.seconds = time.monotonic() - t0
    return stats, summary
