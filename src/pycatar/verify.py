"""Verification: every chunk of a store, or every chunk an index needs, read and checked against its id.

:func:`verify_store` decompresses and hashes every chunk file of a local store (in parallel: zstd
and the digests release the GIL) and can remove the bad ones (``--repair``); :func:`verify_index`
fetches every distinct chunk of an index from its stores, as an extraction would, and reports the
missing and the corrupt ones.  Neither writes anything else.
"""

from __future__ import annotations

import os
from .pool import ThreadPool
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable

from .errors import ChunkError, ChunkMissing
from .index import IndexReader
from .store import CHUNK_SUFFIX, LocalStore, StoreSet, decode_chunk, parse_chunk_id

#: chunks in flight at once (bounds memory: each holds one chunk)
_WINDOW = 64


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


def _windowed(ex: ThreadPool, fn, items: Iterable):
    """``fn(item)`` for each item in the pool, at most :data:`_WINDOW` at once; yields (item, result
    or exception) in order."""
    pending = []
    for item in items:
        pending.append((item, ex.submit(fn, item)))
        if len(pending) >= _WINDOW:
            yield _settle(*pending.pop(0))
    for p in pending:
        yield _settle(*p)


def _settle(item, fut):
    try:
        return item, fut.result()
    except ChunkError as e:
        return item, e


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

    def check(entry):
        sub, name, _ = entry
        cid = parse_chunk_id(name[: -len(CHUNK_SUFFIX)]) if name.endswith(CHUNK_SUFFIX) else None
        if cid is None or sub != name[:4]:
            raise ChunkError(f"{sub}/{name}: not a chunk file name of this store")
        raw = store.get_raw(cid)
        if raw is None:
            raise ChunkError(f"{sub}/{name}: vanished or not a regular file")
        return len(decode_chunk(raw[0], True, cid, None, digest, f"chunk {cid.hex()}"))

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

    def check(ref):
        return len(stores.get(ref.id, ref.size))

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
