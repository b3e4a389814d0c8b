"""Verification: every chunk of a store, or every chunk an index needs, read and checked against its id.

:func:`verify_store` decompresses and hashes every chunk file of a local store (in parallel: zstd
and the digests release the GIL) and can remove the bad ones (``--repair``); :func:`verify_index`
fetches every distinct chunk of an index from its stores, as an extraction would, and reports the
missing and the corrupt ones.  Neither writes anything else.
"""

from __future__ import annotations

import collections
import itertools
import os
from .pool import ThreadPool
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable

from .errors import ChunkError, ChunkMissing
from .index import IndexReader
from .store import CHUNK_SUFFIX, LocalStore, StoreSet, decode_chunks, parse_chunk_id

#: chunks a job checks: decompressed and hashed a batch per call (SHA-512/256 eight at a time, whose
#: lanes idle at the end of small batches: see blob.PREFETCH_BATCH; 32 against 16, the 192 MiB
#: blob's index, 15 alternating runs: 0.93 of the wall time, 7 % less CPU)
_BATCH = 32
#: jobs in flight at once (bounds memory: _BATCH * _WINDOW chunks)
_WINDOW = 4


@dataclass
class Problem:
    id: str          #: the chunk id (or the file name when it is not an id)
    error: str       #: what is wrong, in one line
    removed: bool = False

    def as_dict(self) -> dict:
        return {"id": self.id, "error": self.error, "removed": self.removed}


@dataclass
class VerifyResult:
    checked: int = 0                                   #: chunks examined
    bytes: int = 0                                     #: their uncompressed bytes (the good ones)
    missing: list[str] = field(default_factory=list)   #: ids an index needs that no store has
    bad: list[Problem] = field(default_factory=list)   #: corrupt chunks

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad

    def as_dict(self) -> dict:
        return {"checked": self.checked, "bytes": self.bytes, "ok": self.ok, "missing": list(self.missing),
                "bad": [p.as_dict() for p in self.bad]}


def _windowed(ex: ThreadPool, check, items: Iterable):
    """``check(batch)`` (a result or a ChunkError for each item of a list) in the pool for batches of
    :data:`_BATCH` items, at most :data:`_WINDOW` batches at once; yields (item, result or ChunkError)
    in order."""
    pending: collections.deque = collections.deque()
    it = iter(items)
    while batch := list(itertools.islice(it, _BATCH)):
        pending.append((batch, ex.submit(check, batch)))
        if len(pending) >= _WINDOW:
            batch, fut = pending.popleft()
            yield from zip(batch, fut.result())
    for batch, fut in pending:
        yield from zip(batch, fut.result())


def verify_store(store, *, digest: str = "sha512-256", repair: bool = False,
                 threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Check every ``*.cacnk`` file of ``store`` (a local store, or an object store listing its
    objects): it decompresses to a valid chunk whose ``digest`` equals the id in its name.  With
    ``repair`` a bad file is removed (a later ``make`` or fetch puts a good copy back).
    ``progress(done, bytes)`` is called as chunks are checked."""
    from .blob import default_threads

    if isinstance(store, (str, os.PathLike)):
        store = LocalStore(store, digest=digest)
    res = VerifyResult()
    if isinstance(store, LocalStore):
        entries = ((sub, name, None) for sub, name in store.iter_chunk_files())

        def remove(sub, name, _handle):
            os.unlink(os.path.join(store.path, sub, name))
    else:
        entries = ((o.sub, o.name, o) for o in store.objects())
        threads = threads or store.concurrency

        def remove(_sub, _name, handle):
            failed = store.remove_objects([handle])
            if failed:
                raise OSError(0, failed[0][1])

    def check(entries):
        out: list = [None] * len(entries)
        items, at = [], []
        for k, (sub, name, _) in enumerate(entries):
            cid = parse_chunk_id(name[: -len(CHUNK_SUFFIX)]) if name.endswith(CHUNK_SUFFIX) else None
            if cid is None or sub != name[:4]:
                out[k] = ChunkError(f"{sub}/{name}: not a chunk file name of this store")
                continue
            try:
                raw = store.get_raw(cid)
            except ChunkError as e:  # (unreadable, too large: this chunk's problem, not the batch's)
                out[k] = e
                continue
            if raw is None:
                out[k] = ChunkError(f"{sub}/{name}: vanished or not a regular file")
                continue
            items.append((raw[0], True, cid, None, f"chunk {cid.hex()}"))
            at.append(k)
        for k, data in zip(at, decode_chunks(items, digest)):
            out[k] = data if isinstance(data, ChunkError) else len(data)
        return out

    with ThreadPool(threads or default_threads(), "pycatar-verify") as ex:
        for (sub, name, handle), outcome in _windowed(ex, check, entries):
            res.checked += 1
            if isinstance(outcome, ChunkError):
                problem = Problem(name.split(".", 1)[0], str(outcome))
                if repair:
                    try:
                        remove(sub, name, handle)
                        problem.removed = True
                    except OSError as e:
                        problem.error += f" (not removed: {e.strerror})"
                res.bad.append(problem)
            else:
                res.bytes += outcome
            if progress is not None:
                progress(res.checked, res.bytes)
    return res


def verify_index(index: IndexReader, stores: StoreSet, *, threads: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Fetch every distinct chunk of ``index`` from ``stores`` (searched in order, as extraction
    does) and check it; missing and corrupt chunks are listed, nothing is written."""
    stores = stores.with_digest(index.digest)
    res = VerifyResult()
    seen: set[bytes] = set()

    def unique():
        for ref in index.chunks():
            if ref.id not in seen:
                seen.add(ref.id)
                yield ref

    def check(refs):
        try:  # the batch in one go; when something is wrong, each chunk alone to say which
            return [len(d) for d in stores.get_many([(r.id, r.size) for r in refs])]
        except ChunkError:
            pass
        out: list = []
        for r in refs:
            try:
                out.append(len(stores.get(r.id, r.size)))
            except ChunkError as e:
                out.append(e)
        return out

    n = threads or max(stores.concurrency, 2)
    with ThreadPool(n, "pycatar-verify") as ex:
        for ref, outcome in _windowed(ex, check, unique()):
            res.checked += 1
            if isinstance(outcome, ChunkError):
                if isinstance(outcome, ChunkMissing):
                    res.missing.append(ref.id.hex())
                else:
                    res.bad.append(Problem(ref.id.hex(), str(outcome)))
            else:
                res.bytes += outcome
            if progress is not None:
                progress(res.checked, res.bytes)
    return res
