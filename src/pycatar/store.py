"""Chunk stores: the interface every kind of store implements, the local ``.castr`` directory,
and the compositions of stores (a search order, failover groups, a chunk cache in front).

A chunk with id ``<hex>`` (64 lower-case hex digits) lives at ``<store>/<hex[:4]>/<hex>.cacnk``,
compressed with zstd, xz or gzip (told apart by their magic bytes; spec/store.md), in a local
directory exactly as casync lays it out, and under the same relative path on an HTTP server
(:mod:`pycatar.httpstore`).  A local chunk file appears only complete: it is written to a temporary
name in the same directory and linked into place without replacing an existing file.  Every chunk
read, from any kind of store, is decompressed and its digest checked against its id
(:func:`decode_chunk`) before the data is handed out.
"""

from __future__ import annotations

import errno
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from . import compression as _compression
from . import digest as _digest
from ._fileio import make_dirs, read_file, read_files
from .errors import ChunkError, ChunkMissing, PycatarError, StoreUnavailable, UsageError
from .fileio import install_new_many, random_tag
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from typing import TextIO

CHUNK_SUFFIX = ".cacnk"


def chunk_id_hex(chunk_id: bytes) -> str:
    return chunk_id.hex()


def parse_chunk_id(text: str) -> bytes | None:
    """The id spelled by 64 lower-case hex digits, or None."""
    if len(text) == 64 and not text.strip("0123456789abcdef"):
        return bytes.fromhex(text)
    return None


def chunk_relpath(chunk_id: bytes, suffix: str = CHUNK_SUFFIX) -> str:
    """STORE-2: the path of a chunk file relative to the store directory."""
    h = chunk_id.hex()
    return f"{h[:4]}/{h}{suffix}"


# --------------------------------------------------------------------------- the interface


class StoreStats(Record):
    """What a store did: chunk reads and writes, and chunks it already had."""

    __slots__ = ("reads", "read_bytes", "writes", "written_bytes", "existing")

    def __init__(self, reads: int = 0, read_bytes: int = 0, writes: int = 0, written_bytes: int = 0,
                 existing: int = 0) -> None:
        self.reads = reads
        self.read_bytes = read_bytes
        self.writes = writes
        self.written_bytes = written_bytes
        self.existing = existing


def decode_chunk(raw, compressed: bool, chunk_id: bytes, size: int | None, digest: str, name: str) -> bytes:
    """STORE-8: the data of a stored chunk, decompressed and checked against its id.

    Raises :class:`ChunkError` (starting with ``name``) when the bytes are corrupt, have the wrong
    size (``size`` from the index) or their digest does not match the id."""
    data = decode_chunks([(raw, compressed, chunk_id, size, name)], digest)[0]
    if isinstance(data, ChunkError):
        raise data
    return data


def decode_chunks(items: list, digest: str) -> list:
    """:func:`decode_chunk` of each ``(raw, compressed, chunk_id, size, name)``: for each the data, or
    the :class:`ChunkError` it raises.  Decompression and digests a batch per call (the GIL released
    once for each)."""
    out: list = [None] * len(items)
    packed = [i for i, it in enumerate(items) if it[1]]
    for i, data in zip(packed, _compression.decompress_many([items[i][0] for i in packed],
                                                            [items[i][3] for i in packed],
                                                            [items[i][4] for i in packed])):
        out[i] = data
    for i, (raw, compressed, _cid, size, name) in enumerate(items):
        if compressed:
            continue
        if size is not None and len(raw) != size:
            out[i] = ChunkError(f"{name}: has {len(raw)} bytes, expected {size}")
        elif not raw:
            out[i] = ChunkError(f"{name}: empty chunk")
        else:
            out[i] = raw
    good = [i for i, d in enumerate(out) if not isinstance(d, ChunkError)]
    for i, actual in zip(good, _digest.digest_many(digest, [out[i] for i in good])):
        if actual != items[i][2]:
            out[i] = ChunkError(f"{items[i][4]}: content does not match its id (digest {actual.hex()})")
    return out


#: in a batch's answers: a chunk the store was not asked for (it could not be reached for an earlier one)
NOT_ASKED = object()


class ChunkStore:
    """What every kind of chunk store offers (local directories, HTTP servers, ...).

    ``digest`` is the digest chunk ids are checked with on read (normally taken from the index);
    ``compression`` is used for chunks written.  Implementations are thread-safe."""

    #: requests worth having in flight at once; 0 for a local store (as many as there are cores)
    concurrency: int = 0
    #: True where ``has`` costs a round trip (a search should not probe chunk by chunk)
    remote: bool = False
    #: True where :meth:`ahead` sends requests early (then a few threads can keep many in flight)
    fetches_ahead: bool = False

    def __init__(self, location: str, *, digest: str = "sha512-256", compression: str = "zstd"):
        self.location = location
        self.digest = digest
        self.compression = _compression.parse_compression(compression)
        self.stats = StoreStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def with_digest(self, digest: str) -> "ChunkStore":
        """This store, checking ids with ``digest`` (a copy if the digest differs)."""
        if digest == self.digest:
            return self
        other = object.__new__(type(self))  # a shallow copy (copy.copy, which would load copy and
        other.__dict__.update(self.__dict__)  # weakref at start-up: ~1 ms)
        other.digest = digest
        return other

    def describe(self, chunk_id: bytes) -> str:
        """Where the chunk would be (a path or URL), for messages."""
        return f"{self.location}/{chunk_relpath(chunk_id)}"

    # -- what a kind implements
    def get_raw(self, chunk_id: bytes, size: int | None = None) -> tuple[bytes, bool] | None:
        """The stored bytes of a chunk and whether they are compressed, or None if absent.
        ``size`` (the chunk's size from the index) bounds what a remote store accepts."""
        raise NotImplementedError

    def has(self, chunk_id: bytes) -> bool:
        """STORE-7: whether the store has the chunk."""
        raise NotImplementedError

    def put(self, chunk_id: bytes, data=None, *, compressed_data: bytes | None = None,
            compression: str | None = None) -> int:
        """STORE-4: store a chunk unless it is already there.

        Returns the size of the chunk file written, 0 if the chunk was there already (also when
        another writer installed it first), so the result is true exactly when a file was written.
        Give the uncompressed ``data`` (compressed here, only if the chunk is new) or
        ``compressed_data`` as it will be stored.  The caller vouches that the id matches."""
        raise NotImplementedError

    def ahead(self, chunk_id: bytes, size: int | None = None) -> None:
        """A hint: the chunk will be asked for soon (a remote store may request it now).  A store
        that sends requests ahead also gives them up when closed."""

    def __iter__(self) -> Iterator[bytes]:
        raise UsageError(f"the chunks of {self.location} cannot be listed")

    def remove(self, chunk_id: bytes) -> bool:
        """Remove the chunk (true if it was there); stores that cannot remove say so."""
        raise UsageError(f"chunks cannot be removed from {self.location}")

    def close(self) -> None:
        pass

    # -- common to all kinds
    def fetch(self, chunk_id: bytes, size: int | None = None, *, digest: str | None = None
              ) -> tuple[bytes, bytes, bool] | None:
        """``(data, stored bytes, compressed)`` of a chunk, verified (STORE-8), or None if absent."""
        got = self.fetch_many([(chunk_id, size)], digest=digest)[0]
        if isinstance(got, ChunkError):
            raise got
        return got

    def fetch_many(self, refs: list, *, digest: str | None = None) -> list:
        """:meth:`fetch` of each ``(chunk_id, size)``: for each its result, the
        :class:`ChunkError` it raises, or :data:`NOT_ASKED` (see :meth:`get_raw_many`).  The chunks
        are decoded a batch at a time."""
        raws = self.get_raw_many(refs)
        present = [i for i, r in enumerate(raws) if type(r) is tuple]
        decoded = decode_chunks([(raws[i][0], raws[i][1], refs[i][0], refs[i][1],
                                  f"chunk {refs[i][0].hex()} in {self.describe(refs[i][0])}") for i in present],
                                digest or self.digest)
        out = list(raws)
        reads = nbytes = 0
        for i, data in zip(present, decoded):
            if isinstance(data, ChunkError):
                out[i] = data
            else:
                out[i] = (data, raws[i][0], raws[i][1])
                reads += 1
                nbytes += len(data)
        with self._lock:
            self.stats.reads += reads
            self.stats.read_bytes += nbytes
        return out

    def get_raw_many(self, refs: list) -> list:
        """:meth:`get_raw` of each ``(chunk_id, size)``: for each its result, or the
        :class:`ChunkError` it raises; after the first error, :data:`NOT_ASKED` for the rest."""
        out: list = []
        for chunk_id, size in refs:
            try:
                out.append(self.get_raw(chunk_id, size))
            except ChunkError as e:  # (a remote store: the rest might only wait for the same timeouts)
                out.append(e)
                out += [NOT_ASKED] * (len(refs) - len(out))
                break
        return out

    def get(self, chunk_id: bytes, size: int | None = None, *, digest: str | None = None) -> bytes | None:
        """The verified, uncompressed data of a chunk, or None if this store does not have it
        (:class:`ChunkError` naming the chunk when it is corrupt)."""
        got = self.fetch(chunk_id, size, digest=digest)
        return None if got is None else got[0]

    def put_many(self, items: Iterable[tuple[bytes, object]], *, compression: str | None = None
                 ) -> tuple[int, int, int]:
        """:meth:`put` of each ``(chunk_id, data)``: (chunk files written, chunks there already,
        bytes written)."""
        new = existing = nbytes = 0
        for chunk_id, data in items:
            written = self.put(chunk_id, data, compression=compression)
            if written:
                new += 1
                nbytes += written
            else:
                existing += 1
        return new, existing, nbytes

    def _compressed(self, data, compressed_data, compression) -> bytes:
        if compressed_data is not None:
            return compressed_data
        if data is None:
            raise ValueError("no chunk data")
        return _compression.compress(data, compression or self.compression)


# --------------------------------------------------------------------------- a local directory


class LocalStore(ChunkStore):
    """One local chunk store directory; many threads and processes may read and write at once."""

    def __init__(self, path: str | os.PathLike, *, digest: str = "sha512-256", compression: str = "zstd"):
        super().__init__(os.fspath(path), digest=digest, compression=compression)
        self.path = self.location
        self._dirs_made: set[str] = set()
        self._sub_prefix = os.path.join(self.path, "")  # + a subdirectory's name: its path
        # subdirectories this object created: what is in them it wrote itself, so put() need not
        # look for a chunk there first (a chunk another writer put there meanwhile is still never
        # replaced: the final link fails and the chunk counts as present)
        self._fresh_dirs: set[str] = set()
        # one mkdir at a time: each locks the store directory, and a second thread waiting for
        # that lock in the kernel spins on a core (4 096 directories by two threads: twice the CPU)
        self._mkdir_lock = threading.Lock()
        # temporary names: a random prefix per store object and a counter (no getrandom per chunk)
        self._tmp_prefix = random_tag(4)
        self._tmp_counter = itertools.count()

    # -- paths
    def chunk_path(self, chunk_id: bytes, compressed: bool = True) -> str:
        return os.path.join(self.path, chunk_relpath(chunk_id, CHUNK_SUFFIX if compressed else ""))

    def describe(self, chunk_id: bytes) -> str:
        return self.path

    def has(self, chunk_id: bytes) -> bool:
        """STORE-7: whether a (compressed or uncompressed) file for the chunk exists."""
        for compressed in (True, False):
            try:
                os.lstat(self.chunk_path(chunk_id, compressed))
                return True
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                return False
        return False

    def _present(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored; an existing compressed file older than :data:`REFRESH_AGE`
        gets the current time as its modification time (STORE-20), so that ``gc`` with a grace
        period leaves it to the writer about to reference it."""
        path = self.chunk_path(chunk_id, True)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return self.has(chunk_id)
        if st.st_mtime < time.time() - REFRESH_AGE:
            try:
                os.utime(path, follow_symlinks=False)
            except OSError:
                pass  # another user's file in a shared store: its age stays (gc's grace still applies)
        return True

    # -- reading
    def _read_file(self, path: str) -> bytes | None:
        """The whole file (one C call, GIL released), or None if it is missing or a symlink (STORE-7)."""
        r = self._file_or_error(path, read_file(path, _compression.DECOMPRESSED_LIMIT))
        if isinstance(r, ChunkError):
            raise r
        return r

    @staticmethod
    def _file_or_error(path: str, r):
        """What read_file/read_files answered for ``path``: the bytes, None, or a ChunkError."""
        if r is None or isinstance(r, bytes):
            return r
        step, err = r
        if step == 2:
            return ChunkError(f"chunk file {path} is too large")
        return ChunkError(f"cannot {'open' if step == 0 else 'read'} chunk file {path}: {os.strerror(err)}")

    def get_raw(self, chunk_id: bytes, size: int | None = None) -> tuple[bytes, bool] | None:
        got = self.get_raw_many([(chunk_id, size)])[0]
        if isinstance(got, ChunkError):
            raise got
        return got

    def get_raw_many(self, refs: list) -> list:
        """The compressed files of a batch in one C call (the GIL released once), each read up to
        what its size allows (so a batch of hostile files never takes more memory than its chunks
        would); an uncompressed file is looked for where a compressed one is missing (STORE-2)."""
        paths = [self.chunk_path(chunk_id, True) for chunk_id, _ in refs]
        limits = [_compression.DECOMPRESSED_LIMIT if size is None else _compression.stored_limit(size)
                  for _, size in refs]
        out: list = []
        for (chunk_id, _), path, r in zip(refs, paths, read_files(paths, limits)):
            r = self._file_or_error(path, r)
            if r is None:
                try:
                    r = self._read_file(self.chunk_path(chunk_id, False))
                except ChunkError as e:
                    r = e
                out.append(r if r is None or isinstance(r, ChunkError) else (r, False))
            else:
                out.append(r if isinstance(r, ChunkError) else (r, True))
        return out

    # -- writing
    def _ensure_dir(self, sub: str) -> str:
        if sub not in self._dirs_made:
            self._make_dirs([sub])
        return self._sub_prefix + sub

    def _make_dirs(self, subs: Iterable[str]) -> None:
        """Make those of the chunk directories ``subs`` this object has not made or found yet, in one
        C call (the GIL released once: a fresh store needs a directory for nearly every new chunk),
        and the store itself first if it is missing."""
        todo = [sub for sub in dict.fromkeys(subs) if sub not in self._dirs_made]
        if not todo:
            return
        with self._mkdir_lock:
            todo = [sub for sub in todo if sub not in self._dirs_made]
            for first in (True, False):
                again = []
                for sub, err in zip(todo, make_dirs([self._sub_prefix + sub for sub in todo], 0o777)):
                    if err == 0:
                        self._fresh_dirs.add(sub)
                    elif first and err == errno.ENOENT:
                        again.append(sub)
                        continue
                    elif err != errno.EEXIST:
                        raise PycatarError(f"cannot create store directory {self._sub_prefix + sub}: "
                                           f"{os.strerror(err)}")
                    self._dirs_made.add(sub)
                if not again:
                    return
                self._make_store()  # the store itself is missing: make it, then the directories
                todo = again

    def _make_store(self) -> None:
        try:
            os.mkdir(self.path, 0o777)
        except FileExistsError:
            pass
        except FileNotFoundError:
            try:
                os.makedirs(self.path, 0o777, exist_ok=True)
            except OSError as e:
                raise PycatarError(f"cannot create store {self.path}: {e.strerror}") from None
        except OSError as e:
            raise PycatarError(f"cannot create store {self.path}: {e.strerror}") from None

    def put(self, chunk_id: bytes, data=None, *, compressed_data: bytes | None = None,
            compression: str | None = None) -> int:
        if not self._absent(chunk_id):
            with self._lock:
                self.stats.existing += 1
            return 0
        written = self._install_many([(chunk_id, self._compressed(data, compressed_data, compression))])[0]
        self._count(1 if written else 0, 0 if written else 1, written)
        return written

    def put_many(self, items: Iterable[tuple[bytes, object]], *, compression: str | None = None
                 ) -> tuple[int, int, int]:
        items = list(items)
        self._make_dirs([chunk_id.hex()[:4] for chunk_id, _ in items])
        absent = self._absent
        todo = [(chunk_id, data) for chunk_id, data in items if absent(chunk_id)]
        payloads = _compression.compress_many([data for _, data in todo], compression or self.compression)
        sizes = self._install_many([(chunk_id, p) for (chunk_id, _), p in zip(todo, payloads)])
        new = sum(1 for n in sizes if n)
        nbytes = sum(sizes)
        self._count(new, len(items) - new, nbytes)
        return new, len(items) - new, nbytes

    def _absent(self, chunk_id: bytes) -> bool:
        """Whether the chunk is to be written: not in the store (looked for only in directories
        this object did not create itself: one mkdir, no lookups, for a chunk in a new directory)."""
        sub = chunk_id.hex()[:4]
        if sub not in self._dirs_made:
            self._ensure_dir(sub)
        return sub in self._fresh_dirs or not self._present(chunk_id)

    def _count(self, new: int, existing: int, nbytes: int) -> None:
        with self._lock:
            self.stats.writes += new
            self.stats.written_bytes += nbytes
            self.stats.existing += existing

    def _temp(self, final: str) -> str:
        """A temporary name for the chunk file ``final``, in casync's form (STORE-4): a random prefix
        per store object and a counter."""
        return f"{final[:-len(CHUNK_SUFFIX)]}.{self._tmp_prefix}{next(self._tmp_counter) & 0xFFFFFFFF:08x}.tmp"

    def _install_many(self, pairs: list) -> list[int]:
        """Write the chunk file of each ``(chunk_id, payload)`` unless it exists (never replacing
        one): for each, its size, or 0 when another writer was first."""
        finals = []
        for chunk_id, _ in pairs:
            h = chunk_id.hex()
            finals.append(f"{self._ensure_dir(h[:4])}/{h}{CHUNK_SUFFIX}")
        results = install_new_many([(final, p) for final, (_, p) in zip(finals, pairs)], 0o444, temp=self._temp)
        sizes = []
        for final, (chunk_id, payload), r in zip(finals, pairs, results):
            for _ in range(15):
                if not isinstance(r, FileNotFoundError):
                    break
                sub = chunk_id.hex()[:4]
                self._dirs_made.discard(sub)  # the directory was removed meanwhile (gc): make it again
                self._fresh_dirs.discard(sub)
                self._ensure_dir(sub)
                r = install_new_many([(final, payload)], 0o444, temp=self._temp)[0]
            if isinstance(r, FileNotFoundError):
                raise PycatarError(f"cannot create chunk file in {os.path.dirname(final)}: {os.strerror(errno.ENOENT)}")
            if isinstance(r, OSError):
                raise PycatarError(f"cannot write chunk {chunk_id.hex()} to {self.path}: {r.strerror}")
            sizes.append(len(payload) if r else 0)
        return sizes

    def remove(self, chunk_id: bytes) -> bool:
        removed = False
        for compressed in (True, False):
            p = self.chunk_path(chunk_id, compressed)
            try:
                os.unlink(p)
                removed = True
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.dirname(self.chunk_path(chunk_id)))
        except OSError:
            pass
        return removed

    # -- listing
    def iter_chunk_files(self) -> Iterator[tuple[str, str]]:
        """(subdirectory, file name) of every ``*.cacnk`` regular file in the store."""
        try:
            top = os.scandir(self.path)
        except FileNotFoundError:
            raise PycatarError(f"store {self.path} does not exist") from None
        with top:
            for sub in sorted(top, key=lambda e: e.name):
                try:
                    if not sub.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                with os.scandir(sub.path) as it:
                    for f in sorted(it, key=lambda e: e.name):
                        if f.name.endswith(CHUNK_SUFFIX) and f.is_file(follow_symlinks=False):
                            yield sub.name, f.name

    def __iter__(self) -> Iterator[bytes]:
        """The ids of all compressed chunks in the store (files with unparsable names skipped)."""
        for _, name in self.iter_chunk_files():
            cid = parse_chunk_id(name.split(".", 1)[0])
            if cid is not None:
                yield cid


# --------------------------------------------------------------------------- several stores


class FailoverGroup(ChunkStore):
    """Stores holding the same chunks (mirrors), written ``a|b`` (desync's convention): requests go
    to the first member that answers; one that cannot be reached is skipped from then on while
    another member still answers.  A chunk missing from the member asked is missing."""

    def __init__(self, members: Sequence[ChunkStore]):
        if not members:
            raise UsageError("empty store failover group")
        super().__init__("|".join(m.location for m in members), digest=members[0].digest,
                         compression=members[0].compression)
        self.members = list(members)
        self.concurrency = max(m.concurrency for m in self.members)
        self.remote = any(m.remote for m in self.members)
        self.fetches_ahead = all(m.fetches_ahead for m in self.members)
        self._active = 0

    def with_digest(self, digest: str) -> "FailoverGroup":
        if digest == self.digest:
            return self
        return FailoverGroup([m.with_digest(digest) for m in self.members])

    def describe(self, chunk_id: bytes) -> str:
        return self.members[self._active].describe(chunk_id)

    def _call(self, op):
        first = self._active
        n = len(self.members)
        last: StoreUnavailable | None = None
        for k in range(n):
            i = (first + k) % n
            try:
                result = op(self.members[i])
            except StoreUnavailable as e:
                last = e
                continue
            if i != first:
                self._active = i
            return result
        assert last is not None
        raise last

    def get_raw(self, chunk_id: bytes, size: int | None = None):
        return self._call(lambda m: m.get_raw(chunk_id, size))

    def ahead(self, chunk_id: bytes, size: int | None = None) -> None:
        self.members[self._active].ahead(chunk_id, size)

    def fetch(self, chunk_id: bytes, size: int | None = None, *, digest: str | None = None):
        return self._call(lambda m: m.fetch(chunk_id, size, digest=digest or self.digest))

    def has(self, chunk_id: bytes) -> bool:
        return self._call(lambda m: m.has(chunk_id))

    def put(self, chunk_id: bytes, data=None, *, compressed_data: bytes | None = None,
            compression: str | None = None) -> int:
        return self._call(lambda m: m.put(chunk_id, data, compressed_data=compressed_data,
                                          compression=compression))

    def __iter__(self) -> Iterator[bytes]:
        return self._call(iter)

    def close(self) -> None:
        for m in self.members:
            m.close()


class StoreSet:
    """STORE-10: stores searched in order (the primary ``--store``, then every ``--extra-store``),
    optionally behind a chunk cache: a local store asked first, which keeps a verified copy of
    every chunk another store delivered (read-through; STORE-17)."""

    def __init__(self, stores: Sequence[ChunkStore | str | os.PathLike] | ChunkStore | str | os.PathLike,
                 *, digest: str | None = None, cache: "ChunkStore | str | os.PathLike | None" = None):
        if isinstance(stores, (ChunkStore, str, os.PathLike)):
            stores = [stores]
        out: list[ChunkStore] = []
        for s in stores:
            if not isinstance(s, ChunkStore):
                s = LocalStore(s, digest=digest or "sha512-256")
            elif digest is not None:
                s = s.with_digest(digest)
            out.append(s)
        if not out:
            raise UsageError("no chunk store given")
        self.stores: list[ChunkStore] = out
        self.digest = digest or out[0].digest
        if cache is not None and not isinstance(cache, ChunkStore):
            cache = LocalStore(cache, digest=self.digest)
        elif cache is not None:
            cache = cache.with_digest(self.digest)
        self.cache: ChunkStore | None = cache  # a local directory, or an object store shared by a site
        #: requests worth having in flight (0: as many as there are cores)
        self.concurrency = max(s.concurrency for s in out)
        #: whether asking ``has`` of every chunk is cheap (no remote store)
        self.remote = any(s.remote for s in out)
        #: whether :meth:`ahead` sends the requests of the chunks no earlier store has: the remote
        #: stores can, and the cache (if any) is quick to ask
        self.fetches_ahead = (self.remote and all(s.fetches_ahead for s in out if s.remote)
                              and (cache is None or not cache.remote))
        self._lock = threading.Lock()
        self.fetches = 0
        self.cache_hits = 0

    def __iter__(self):
        return iter(self.stores)

    def with_digest(self, digest: str) -> "StoreSet":
        if digest == self.digest:
            return self
        return StoreSet(self.stores, digest=digest, cache=self.cache)

    def has(self, chunk_id: bytes) -> bool:
        if self.cache is not None and self.cache.has(chunk_id):
            return True
        return any(s.has(chunk_id) for s in self.stores)

    def ahead(self, chunk_id: bytes, size: int | None = None) -> None:
        """The chunk will be asked for soon: the first remote store that :meth:`get` would ask (no
        local store or cache before it has the chunk) requests it now."""
        if not self.fetches_ahead or (self.cache is not None and self.cache.has(chunk_id)):
            return
        for s in self.stores:
            if s.remote:
                s.ahead(chunk_id, size)
                return
            if s.has(chunk_id):
                return

    def get(self, chunk_id: bytes, size: int | None = None) -> bytes:
        """The verified data of a chunk from the cache or the first store with a good copy.

        A corrupt copy (or an unreachable store) is skipped if a later store has a good one;
        otherwise the first error is reported.  Missing everywhere: :class:`ChunkError`."""
        if self.cache is not None:
            try:
                data = self.cache.get(chunk_id, size, digest=self.digest)
            except StoreUnavailable:
                data = None  # a remote cache that cannot be reached: the stores still can
            except ChunkError:
                data = None  # a damaged cached copy: fetch a good one, which replaces it below
                try:
                    self.cache.remove(chunk_id)
                except (ChunkError, UsageError):
                    pass
            if data is not None:
                with self._lock:
                    self.cache_hits += 1
                return data
        return self._from_stores(chunk_id, size)

    def _from_stores(self, chunk_id: bytes, size: int | None, first=NOT_ASKED) -> bytes:
        """:meth:`get` past the cache: the first store with a good copy.  ``first``: what the first
        store's :meth:`ChunkStore.fetch_many` gave for the chunk (it is not asked again)."""
        first_error: ChunkError | None = None
        for k, s in enumerate(self.stores):
            if k == 0 and first is not NOT_ASKED:
                got = first
                if isinstance(got, ChunkError):
                    first_error = got
                    continue
            else:
                try:
                    got = s.fetch(chunk_id, size, digest=self.digest)
                except ChunkError as e:
                    first_error = first_error or e
                    continue
            if got is not None:
                data, stored, compressed = got
                if self.cache is not None and s is not self.cache:
                    try:
                        if compressed:
                            self.cache.put(chunk_id, compressed_data=stored)
                        else:
                            self.cache.put(chunk_id, data)
                    except ChunkError:
                        pass  # a remote cache refusing or unreachable: the chunk itself is good
                with self._lock:
                    self.fetches += 1
                return data
        if first_error is not None:
            raise first_error
        where = ", ".join(s.describe(chunk_id) if s.remote else s.location for s in self.stores)
        absent = [s.location for s in self.stores if isinstance(s, LocalStore) and not os.path.isdir(s.path)]
        if len(absent) == len(self.stores):
            raise ChunkMissing(f"chunk {chunk_id.hex()} not found: store {', '.join(absent)} does not exist")
        raise ChunkMissing(f"chunk {chunk_id.hex()} not found in store {where}")

    def get_many(self, refs: list) -> list[bytes]:
        """:meth:`get` of each ``(chunk_id, size)``, in order (raising for the first that cannot be
        had).  Without a cache, the first store's copies are read and decoded a batch at a time
        (:meth:`ChunkStore.fetch_many`); a chunk it lacks or holds damaged is looked for in the
        next stores, as :meth:`get` does, without asking the first store again."""
        if self.cache is not None:
            return [self.get(chunk_id, size) for chunk_id, size in refs]
        firsts = self.stores[0].fetch_many(refs, digest=self.digest)
        out = []
        for (chunk_id, size), got in zip(refs, firsts):
            if type(got) is tuple:
                out.append(got[0])
                with self._lock:
                    self.fetches += 1
            else:
                out.append(self._from_stores(chunk_id, size, got))
        return out

    def close(self) -> None:
        for s in self.stores:
            s.close()


def as_store_set(stores, digest: str | None = None) -> StoreSet:
    if isinstance(stores, StoreSet):
        return stores.with_digest(digest) if digest is not None else stores
    return StoreSet(stores, digest=digest)


# --------------------------------------------------------------------------- garbage collection


#: ``gc``'s default grace period (STORE-19): a day, far longer than a ``make`` takes to store its
#: chunks and publish its index, so a concurrent writer's chunks are never taken away from it
DEFAULT_GRACE = 86400.0
#: a writer that finds a chunk already stored and older than this makes it young again (STORE-20)
REFRESH_AGE = 3600.0


class GcResult(Record):
    """What a garbage collection found and did."""

    __slots__ = ("references", "referenced", "removed", "remaining", "removed_dirs", "young", "messages")

    def __init__(self, references: int = 0, referenced: int = 0, removed: list[str] | None = None,
                 remaining: int = 0, removed_dirs: int = 0, young: int = 0,
                 messages: list[str] | None = None) -> None:
        self.references = references  # chunk references in all indexes
        self.referenced = referenced  # distinct chunk ids referenced
        self.removed = [] if removed is None else removed  # file names removed (or to remove)
        self.remaining = remaining  # chunk files kept
        self.removed_dirs = removed_dirs
        self.young = young  # unreferenced chunks kept because younger than the grace period
        self.messages = [] if messages is None else messages  # what casync would print


class _Candidate:
    """A chunk file gc may remove."""

    __slots__ = ("sub", "name", "chunk_id", "mtime", "handle")

    def __init__(self, sub: str, name: str, chunk_id: bytes | None, mtime: float, handle: object = None) -> None:
        self.sub = sub
        self.name = name
        self.chunk_id = chunk_id
        self.mtime = mtime
        self.handle = handle


def _local_candidates(store: LocalStore, grace: float) -> Iterator[_Candidate]:
    for sub, name in list(store.iter_chunk_files()):  # listed whole before anything is removed
        mtime = 0.0
        if grace > 0:
            try:
                mtime = os.lstat(os.path.join(store.path, sub, name)).st_mtime
            except FileNotFoundError:
                continue
        yield _Candidate(sub, name, parse_chunk_id(name.split(".", 1)[0]), mtime)


def _local_remove(store: LocalStore, batch: list[_Candidate], res: GcResult) -> list[tuple[_Candidate, str]]:
    failed = []
    for c in batch:
        try:
            os.unlink(os.path.join(store.path, c.sub, c.name))
        except OSError as e:
            failed.append((c, e.strerror))
            continue
        try:
            os.rmdir(os.path.join(store.path, c.sub))
            res.removed_dirs += 1
        except OSError:
            pass
    return failed


def gc(store: ChunkStore | str | os.PathLike, index_paths: Iterable[str | os.PathLike], *, dry_run: bool = False,
       verbose: bool = False, out: TextIO | None = None, err: TextIO | None = None,
       grace: float = DEFAULT_GRACE, now: float | None = None, on_chunk=None) -> GcResult:
    """STORE-11: remove every ``*.cacnk`` chunk of ``store`` that none of the indexes references and
    that is older than ``grace`` seconds (STORE-19; 0: every unreferenced chunk, as casync).

    ``store`` is a local store or one that lists its objects with their times and removes them in
    batches (:class:`pycatar.s3store.S3Store`).  All indexes are read (and validated) before
    anything is removed.  Lines are reported like ``casync gc``: with ``verbose`` one per chunk
    ("Removing chunk X.cacnk." / "Would remove chunk X.cacnk.") and a summary; with ``dry_run`` the
    summary "Would remove N chunks, M chunks remaining." always.  ``out`` receives those lines as
    they happen (they are also returned).  Chunks kept for their youth count as remaining.
    ``on_chunk()`` is called for every chunk file examined (a progress display)."""
    from .index import IndexReader

    if not isinstance(store, ChunkStore):
        store = LocalStore(store)
    if grace < 0:
        raise UsageError("the grace period cannot be negative")
    now = time.time() if now is None else now
    err = err or sys.stderr
    res = GcResult()

    def say(line: str) -> None:
        res.messages.append(line)
        if out is not None:
            print(line, file=out)

    used: set[bytes] = set()
    for p in index_paths:
        with IndexReader(p) as r:
            for c in r.chunks():
                res.references += 1
                used.add(c.id)
    res.referenced = len(used)
    if verbose:
        say(f"Chunk store usage: {res.references} references, {res.referenced} chunks")

    if isinstance(store, LocalStore):
        candidates = _local_candidates(store, grace)
        batch_size = 1

        def remove(batch):
            return _local_remove(store, batch, res)
    elif hasattr(store, "objects"):
        candidates = (_Candidate(o.sub, o.name, o.chunk_id, o.mtime, o) for o in store.objects())
        batch_size = store.gc_batch

        def remove(batch):
            return _remove_remote(store, batch)
    else:
        raise UsageError(f"gc cannot remove chunks from {store.location}")

    total = 0
    batch: list[_Candidate] = []

    def flush() -> None:
        for c, why in remove(batch):
            print(f'Failed to unlink chunk file "{c.name}", ignoring: {why}', file=err)
            res.removed.remove(c.name)
        batch.clear()

    for c in candidates:
        total += 1
        if on_chunk is not None:
            on_chunk()
        if c.chunk_id is None:
            print(f'Failed to parse chunk ID "{c.name.split(".", 1)[0]}", ignoring.', file=err)
            continue
        if c.chunk_id in used:
            continue
        if grace > 0 and c.mtime > now - grace:
            res.young += 1
            continue
        if verbose:
            say(f"{'Would remove' if dry_run else 'Removing'} chunk {c.name}.")
        res.removed.append(c.name)
        if not dry_run:
            batch.append(c)
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    res.remaining = total - len(res.removed)
    if dry_run:
        say(f"Would remove {len(res.removed)} chunks, {res.remaining} chunks remaining.")
    elif verbose:
        say(f"Removed {len(res.removed)} chunks, {res.removed_dirs} directories, {res.remaining} chunks remaining.")
    return res


def _remove_remote(store, batch: list[_Candidate]) -> list[tuple[_Candidate, str]]:
    by_handle = {id(c.handle): c for c in batch}
    return [(by_handle[id(o)], why) for o, why in store.remove_objects([c.handle for c in batch])]
