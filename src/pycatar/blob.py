"""Streams, chunks and indexes: making and extracting blob indexes, and the plumbing for caidx.

The pieces compose into bounded-memory pipelines that keep both cores busy:

* :func:`iter_buffers` reads a file (large sequential reads) or coalesces an iterable of small
  buffers (an encoder's output) into large buffers;
* :func:`chunk_stream` cuts the buffers with the C chunker (GIL released) and hashes the chunks
  in a thread pool (a read buffer's chunks in one C call, the GIL released), yielding
  ``(end_offset, id, data)`` in stream order;
* :func:`write_chunks_to_store` deduplicates and then compresses and stores new chunks in the
  pool (a batch compressed, and its chunk files written, in one C call each) while the caller
  writes the index;
* :func:`fetch_chunks` and :class:`IndexStream` go the other way: fetch (read, decompress,
  verify; a pool job's chunks a batch at a time) chunks in the pool, in order, or give a seekable
  file view of an indexed stream.

Every queue is bounded by bytes in flight, so memory does not grow with the input.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import os
import queue
import stat
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator

from . import digest as _digest
from . import flags as _flags
from .chunker import DEFAULT_CHUNK_SIZES, Chunker
from .errors import PycatarError
from .fileio import WRITE_BATCH, AtomicFile, Payload
from .index import DIGEST_FLAGS, ChunkRef, IndexReader, IndexWriter, blob_index_flags
from .pool import CancelledError, Future, Inline, ThreadPool
from .record import Record
from .store import ChunkStore, LocalStore, StoreSet, as_store_set

#: size of sequential reads and of the buffers fed to the chunker
READ_SIZE = 4 << 20
#: bytes allowed in flight in each pipeline stage
MAX_PENDING_BYTES = 24 << 20
#: ... and at most this many jobs (chunks to fetch or store), however small the chunks
MAX_PENDING_JOBS = 1024
#: at most this many chunks per job of an index stream's prefetching pool: the eight lanes of
#: pycatar._sha's SHA-512/256 take a job's chunks longest first and run until the last one ends, so
#: they idle at the end of small jobs (python3.11's chunks, lanes busy, simulated: 71 % in jobs of
#: 16, 96 % in jobs of 32; its extraction in jobs of 32 with a 128-chunk window, 41 alternating
#: runs: 0.93 of the wall time of 16 in 64, 6 % less CPU; /usr/include's, 21 runs: 0.96, -5 %)
PREFETCH_BATCH = 32
#: chunks an index stream fetches ahead of its reader, at most (two jobs for each of two threads)
READAHEAD_CHUNKS = 128
#: chunks of the first prefetch job after a read that had to fetch its own chunk (a jump, a mount's
#: first read of a file) from a remote source: the reader then waits for the next chunk with these
#: few, not with a whole job of PREFETCH_BATCH requests (the later jobs are whole)
REMOTE_FIRST_JOB = 8
#: a local store's new chunks go to the pool in jobs of about this many bytes (compression and chunk
#: files): small enough that the workers finish together at the end of a stream
STORE_BATCH_BYTES = 1 << 20
#: fetch_chunks hands a source's chunks to the pool together, up to this many bytes / chunks (with 64 KiB
#: jobs, a 192 MiB blob's extraction spent a quarter of its CPU handing the GIL over and queueing;
#: with 512 KiB, eight chunks of 64 KiB a job, the SHA-512/256 lanes idled (see PREFETCH_BATCH): 2 MiB
#: took 0.81-0.85 of its wall time and 18 % less CPU, 15 and 21 alternating runs, peak RSS 21 -> 46 MB)
FETCH_BATCH_BYTES = 2 << 20
FETCH_BATCH_CHUNKS = 64
#: chunks requested ahead of the one being written, at most, from a source that sends requests
#: ahead (their answers wait in memory: this bounds them by count, MAX_PENDING_BYTES by size)
AHEAD_CHUNKS = 1024
#: chunks cut from one read buffer at most (the read shrinks for tiny average sizes), and chunks
#: waiting for their ids at most, whatever their size
MAX_BATCH_CHUNKS = 16384
MAX_PENDING_CHUNKS = 65536
#: how many recently seen chunk ids are remembered to skip in-stream duplicates
SEEN_CAPACITY = 1 << 16
#: ioctl sharing a range of one file's blocks with another (linux/fs.h)
_FICLONERANGE = 0x4020940D


def readahead_chunks(threads: int, avg_chunk_size: int) -> int:
    """How many chunks an index stream read by ``threads`` workers fetches ahead of its reader: enough
    to keep them busy, bounded by the bytes in flight (:data:`MAX_PENDING_BYTES`)."""
    return max(2, threads, min(READAHEAD_CHUNKS, MAX_PENDING_BYTES // max(1, avg_chunk_size)))


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


_INLINE = Inline()


# --------------------------------------------------------------------------- reading input


def iter_buffers(source, read_size: int = READ_SIZE) -> Iterator[memoryview]:
    """Large buffers from ``source``: a binary file object (read in ``read_size`` pieces), a
    single bytes-like object, or an iterable of bytes-like objects (small pieces are coalesced,
    large ones passed through).  Buffers handed over must not be modified afterwards."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        mv = memoryview(source).cast("B")
        if mv:
            yield mv
    elif hasattr(source, "read"):
        # read() returns a new, uninitialised buffer (a zeroed bytearray for readinto costs a
        # memset and a page fault per 4 KiB); short reads (pipes) are joined up to read_size
        parts: list = []
        have = 0
        while True:
            b = source.read(read_size - have)
            if not b:
                break
            if not have and len(b) == read_size:
                yield memoryview(b)
                continue
            parts.append(b)
            have += len(b)
            if have >= read_size:
                yield memoryview(b"".join(parts))
                parts, have = [], 0
        if parts:
            yield memoryview(b"".join(parts))
    else:
        acc = bytearray()
        for piece in source:
            mv = memoryview(piece).cast("B")
            if not mv:
                continue
            if len(mv) >= read_size:
                if acc:
                    yield memoryview(acc)
                    acc = bytearray()
                yield mv
                continue
            acc += mv
            if len(acc) >= read_size:
                yield memoryview(acc)
                acc = bytearray()
        if acc:
            yield memoryview(acc)


# --------------------------------------------------------------------------- chunking




def chunk_stream(
    source,
    chunker: Chunker,
    digest: str = "sha512-256",
    *,
    executor: ThreadPool | None = None,
    stream_hash=None,
    read_size: int = READ_SIZE,
    max_pending: int = MAX_PENDING_BYTES,
) -> Iterator[tuple[int, bytes, memoryview | bytes]]:
    """Cut ``source`` into chunks: yields ``(end_offset, chunk_id, data)`` in stream order.

    ``source`` is a binary file object or an iterable of buffers (see :func:`iter_buffers`).
    Chunk ids are computed in ``executor`` (inline if None), a batch per read buffer.  When
    ``stream_hash`` (a hash object) is given it is updated with every byte, in order, on a helper
    thread; it is complete when the iterator is exhausted.  ``data`` may be a memoryview into a
    read buffer: keep it only as long as needed."""
    ex = executor or _INLINE
    hasher = ThreadPool(1, "stream-digest") if stream_hash is not None and executor else None
    hash_jobs: deque[Future] = deque()
    pending: deque[tuple[Future, list]] = deque()
    pending_bytes = 0
    pending_chunks = 0
    # tiny chunks: smaller reads, so that one buffer's batch stays a bounded number of chunks
    read_size = min(read_size, max(1 << 16, chunker.sizes[1] * MAX_BATCH_CHUNKS))
    carry: list = []
    offset = 0
    chunker.reset()

    def flush(limit: int):
        # hashed batches go on at once (the next stage starts compressing early); a batch still
        # being hashed is waited for only when too much is in flight
        nonlocal pending_bytes, pending_chunks
        while pending and (pending[0][0].done() or pending_bytes > limit or pending_chunks > MAX_PENDING_CHUNKS):
            fut, batch = pending.popleft()
            ids = fut.result()
            pending_chunks -= len(batch)
            for (end, data), cid in zip(batch, ids):
                pending_bytes -= len(data)
                yield end, cid, data

    try:
        for mv in iter_buffers(source, read_size):
            if stream_hash is not None:
                if hasher is not None:
                    hash_jobs.append(hasher.submit(stream_hash.update, mv))
                    while len(hash_jobs) > max(2, max_pending // max(len(mv), 1)):
                        hash_jobs.popleft().result()
                else:
                    stream_hash.update(mv)
            cuts = chunker.feed(mv)
            batch = []
            start = 0
            for cut in cuts:
                if carry:
                    carry.append(mv[start:cut])
                    data = b"".join(carry)
                    carry = []
                else:
                    data = mv[start:cut]
                batch.append((offset + cut, data))
                start = cut
            if start < len(mv):
                carry.append(mv[start:])
            offset += len(mv)
            if batch:
                pending.append((ex.submit(_digest.digest_many, digest, [d for _, d in batch]), batch))
                pending_bytes += sum(len(d) for _, d in batch)
                pending_chunks += len(batch)
                yield from flush(max_pending)
        if carry:
            data = carry[0] if len(carry) == 1 else b"".join(carry)
            carry = []
            pending.append((ex.submit(_digest.digest_many, digest, [data]), [(offset, data)]))
            pending_bytes += len(data)
        chunker.reset()
        yield from flush(-1)
        while hash_jobs:
            hash_jobs.popleft().result()
    finally:
        if hasher is not None:
            hasher.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- storing


class ChunkStats(Record):
    """What chunking a stream into a store did."""

    __slots__ = ("chunks", "bytes", "new_chunks", "reused_chunks", "compressed_bytes")

    def __init__(self, chunks: int = 0, bytes: int = 0, new_chunks: int = 0, reused_chunks: int = 0,
                 compressed_bytes: int = 0) -> None:
        self.chunks = chunks  # chunks in the stream
        self.bytes = bytes  # bytes in the stream
        self.new_chunks = new_chunks  # chunk files written
        self.reused_chunks = reused_chunks  # chunks already in the store (or earlier in the stream)
        self.compressed_bytes = compressed_bytes  # bytes of chunk files written


def _store_batch(store: ChunkStore, items: list, compression: str | None) -> tuple[int, int, int]:
    return store.put_many(items, compression=compression)  # checks the store before compressing


def write_chunks_to_store(
    chunks: Iterable[tuple[int, bytes, object]],
    store: ChunkStore,
    *,
    executor: ThreadPool | None = None,
    compression: str | None = None,
    stats: ChunkStats | None = None,
    max_pending: int = MAX_PENDING_BYTES,
    batch_bytes: int = STORE_BATCH_BYTES,
) -> Iterator[tuple[int, bytes, int]]:
    """Store every chunk not yet in ``store``; yields ``(end_offset, chunk_id, size)`` in order.

    Chunks are yielded as soon as they are handed on (so the caller can write the index while
    compression runs); all writes are complete when the iterator is exhausted.  Duplicates
    (recently seen ids, or files already in the store) are never compressed."""
    ex = executor or _INLINE
    st = stats if stats is not None else ChunkStats()
    seen: OrderedDict[bytes, None] = OrderedDict()
    jobs: deque[tuple[Future, int]] = deque()
    pending = 0
    batch: list = []
    acc = 0

    def merge(fut: Future) -> None:
        new, existing, nbytes = fut.result()
        st.new_chunks += new
        st.reused_chunks += existing
        st.compressed_bytes += nbytes

    for end, cid, data in chunks:
        size = len(data)
        st.chunks += 1
        st.bytes += size
        if cid in seen:
            seen.move_to_end(cid)
            st.reused_chunks += 1
        else:
            seen[cid] = None
            if len(seen) > SEEN_CAPACITY:
                seen.popitem(last=False)
            batch.append((cid, data))
            acc += size
            if acc >= batch_bytes or len(batch) >= MAX_PENDING_JOBS:
                jobs.append((ex.submit(_store_batch, store, batch, compression), acc))
                pending += acc
                batch, acc = [], 0
                while jobs and (pending > max_pending or len(jobs) > MAX_PENDING_JOBS):
                    fut, n = jobs.popleft()
                    merge(fut)
                    pending -= n
        yield end, cid, size
    if batch:
        jobs.append((ex.submit(_store_batch, store, batch, compression), acc))
    while jobs:
        merge(jobs.popleft()[0])


# --------------------------------------------------------------------------- fetching


class ChunkSource:
    """Where the data of an index's chunks comes from (chunk stores, or seeds first: see
    :class:`pycatar.assembly.Assembler`).  ``fetch`` runs in worker threads and returns the
    verified bytes of a chunk; ``write`` puts a fetched chunk into an output, in stream order.
    ``concurrency``: fetches worth running at once (0: one per core; remote stores want more).
    ``fetches_ahead``: :meth:`ahead` sends the requests of chunks that will be fetched, so that
    the remote ones are under way without a thread waiting for each."""

    concurrency: int = 0
    fetches_ahead: bool = False

    def pool_size(self) -> int:
        """The size of the pool that fetches from this source: a thread per core for the chunk work,
        and where requests are not sent ahead, one per request worth having in flight."""
        return default_threads() if self.fetches_ahead else max(default_threads(), self.concurrency)

    def ahead(self, ref: ChunkRef) -> None:
        """A hint: ``ref`` will be fetched soon (called in stream order, ahead of :meth:`fetch`)."""

    def fetch(self, ref: ChunkRef) -> bytes:
        raise NotImplementedError

    def fetch_many(self, refs: list[ChunkRef]) -> list:
        """:meth:`fetch` of each of ``refs`` (a batch of a pool's job), in order."""
        return [self.fetch(r) for r in refs]

    def bind_output(self, out: "_Output") -> None:
        """Called once the output of :func:`extract_blob` is open, before the first fetch."""

    def release_output(self) -> None:
        """Called when the output is finished or abandoned."""

    def write(self, out: "_Output", ref: ChunkRef, data) -> None:
        out.write(data)


class StoreSource(ChunkSource):
    """Chunks from stores only."""

    def __init__(self, stores: StoreSet):
        self.stores = stores
        self.concurrency = stores.concurrency
        self.fetches_ahead = stores.fetches_ahead

    def ahead(self, ref: ChunkRef) -> None:
        self.stores.ahead(ref.id, ref.size)

    def fetch(self, ref: ChunkRef) -> bytes:
        return self.stores.get(ref.id, ref.size)

    def fetch_many(self, refs: list[ChunkRef]) -> list:
        return self.stores.get_many([(r.id, r.size) for r in refs])


def as_chunk_source(stores, digest: str | None = None) -> ChunkSource:
    """A :class:`ChunkSource` as given, or one over the stores (a StoreSet, a store, paths)."""
    if isinstance(stores, ChunkSource):
        return stores
    return StoreSource(as_store_set(stores, digest=digest))


def fetch_chunks(
    refs: Iterable[ChunkRef],
    stores,
    *,
    executor: ThreadPool | None = None,
    max_pending: int = MAX_PENDING_BYTES,
) -> Iterator[tuple[ChunkRef, bytes]]:
    """Fetch (read, decompress, verify) chunks in ``executor``; yields them in order.
    ``stores`` is a :class:`StoreSet` (or what :func:`as_store_set` accepts) or a :class:`ChunkSource`.

    Chunks go to the pool in batches (up to FETCH_BATCH_BYTES or FETCH_BATCH_CHUNKS a job), so
    that a job's cost is not all overhead.  A source that sends requests ahead is told of each chunk
    as it is queued (the requests run while the pool decodes the chunks before them); one that does
    not gets a chunk a job, its requests overlapping in the pool's threads.  In flight: at most
    ``max_pending`` bytes and MAX_PENDING_JOBS jobs."""
    ex = executor or _INLINE
    source = as_chunk_source(stores)
    fetch_batch = source.fetch_many
    ahead = source.ahead if source.fetches_ahead else None
    most = FETCH_BATCH_CHUNKS if not source.concurrency or ahead else 1

    q: deque[tuple[list[ChunkRef], int, Future]] = deque()
    pending = queued = 0
    max_queued = AHEAD_CHUNKS if ahead else MAX_PENDING_JOBS * most
    batch: list[ChunkRef] = []
    acc = 0
    for ref in refs:
        if ahead is not None:
            ahead(ref)
        batch.append(ref)
        acc += ref.size
        if acc < FETCH_BATCH_BYTES and len(batch) < most:
            continue
        q.append((batch, acc, ex.submit(fetch_batch, batch)))
        pending += acc
        queued += len(batch)
        batch, acc = [], 0
        while q and (pending > max_pending or len(q) > MAX_PENDING_JOBS or queued > max_queued):
            done, n, f = q.popleft()
            pending -= n
            queued -= len(done)
            yield from zip(done, f.result())
    if batch:
        q.append((batch, acc, ex.submit(fetch_batch, batch)))
    while q:
        done, _, f = q.popleft()
        yield from zip(done, f.result())


# --------------------------------------------------------------------------- output files


class _Output:
    """Where extracted bytes go: a temporary file renamed into place, a device written in place,
    or a caller's file object.  A regular file gets its bytes through the payload writer
    (:class:`pycatar.fileio.Payload`, the one that writes an extracted tree's files), which with
    ``sparse`` leaves all-zero blocks as holes; other outputs take them by their ``write()``.

    Chunks for the payload writer are collected up to :data:`pycatar.fileio.WRITE_BATCH` bytes and
    written together (with 64 KiB chunks, the writer spent more time waiting to get the GIL back
    than writing)."""

    def __init__(self, target, *, sparse: bool = False, mode: int = 0o666):
        self.path = None
        self._own = False
        self._atomic: AtomicFile | None = None  # our own file, under its temporary name until finish()
        self._payload: Payload | None = None     # the writer of a regular file
        self._written = 0                        # bytes written through write() (other outputs)
        self._batch: list = []                   # buffers for the payload writer, not written yet
        self._batched = 0                        # their bytes
        if isinstance(target, (str, bytes, os.PathLike)):
            self.path = os.fsdecode(target)
            st = None
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                pass
            if st is not None and not stat.S_ISREG(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    raise PycatarError(f"{self.path}: is a directory")
                self.f = open(self.path, "r+b" if stat.S_ISBLK(st.st_mode) else "wb")  # device: in place
            else:
                self._atomic = AtomicFile(self.path, mode, fsync=False, buffering=0)
                try:
                    self.f = self._atomic.open()
                except OSError as e:
                    raise PycatarError(f"cannot create {self.path}: {e.strerror}") from None
                self._payload = Payload(self.f.fileno(), sparse)
            self._own = True
        else:
            self.f = target
            if sparse and _appends_to_regular_file(target):  # holes: written from the position on
                self._payload = Payload(target.fileno(), True, target.tell())
        self._no_clone = False
        self._bs: int | None = None

    @property
    def tmp(self) -> str | None:
        """The temporary path of our own output file while it is written."""
        return self._atomic.tmp if self._atomic is not None else None

    @property
    def sparse(self) -> bool:
        return self._payload is not None and self._payload.sparse

    @property
    def size(self) -> int:
        """Bytes written (or left as holes)."""
        return self._payload.size + self._batched if self._payload is not None else self._written

    @property
    def holes(self) -> int:
        self._flush()
        return self._payload.holes if self._payload is not None else 0

    @property
    def name(self) -> str:
        """The output as the user named it (for messages)."""
        if self.path is not None:
            return self.path
        try:
            if self.f.fileno() == 1:
                return "standard output"
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass
        return str(getattr(self.f, "name", "the output"))

    def _failed(self, e: OSError) -> PycatarError:
        return PycatarError(f"Failed to write {self.name}: {e.strerror or e}")  # e.g. a full disk, named

    def write(self, data) -> None:
        """Append ``data`` (any buffer that nobody changes afterwards: not copied)."""
        if self._payload is not None:
            self._batch.append(data)
            self._batched += len(data) if isinstance(data, bytes) else memoryview(data).nbytes
            if self._batched >= WRITE_BATCH:
                self._flush()
            return
        try:
            mv = memoryview(data)
            self._written += mv.nbytes
            while mv:
                w = self.f.write(mv)
                if w is None:
                    raise PycatarError(f"Failed to write {self.name}: it would block")
                mv = mv[w:]
        except OSError as e:
            raise self._failed(e) from None

    def _flush(self) -> None:
        """Hand the collected buffers to the payload writer."""
        if self._batch:
            batch, self._batch, self._batched = self._batch, [], 0
            try:
                self._payload.write_many(batch)
            except OSError as e:
                raise self._failed(e) from None

    def settle(self) -> None:
        """Put everything written so far into the file, so that it can be read back."""
        if self._payload is not None:
            self._flush()
            try:
                self._payload.settle()
            except OSError as e:
                raise self._failed(e) from None

    def readback_fd(self) -> int | None:
        """A new read-only descriptor on the file being written (own temporary files only; the
        caller closes it), so what was written can be read again; None otherwise."""
        if self.tmp is None:
            return None
        try:
            return os.open(self.tmp, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def clone_from(self, src_fd: int, src_offset: int, data) -> int:
        """Append ``data``, which equals the bytes of ``src_fd`` at ``src_offset``, sharing the
        block-aligned middle with the source (FICLONERANGE) and copying the rest.  Returns the bytes
        shared; where the file system cannot share (or the offsets do not align) it copies all."""
        n = len(data)
        if self.tmp is None or self._no_clone:
            self.write(data)
            return 0
        bs = self._block_size()
        if n < bs:  # no whole block to share
            self.write(data)
            return 0
        dst = self.size
        head = (-dst) % bs
        mid = (n - head) // bs * bs if n > head else 0
        if mid == 0 or (src_offset - dst) % bs:
            self.write(data)
            return 0
        self.write(data[:head])
        self.settle()
        try:
            fcntl.ioctl(self.f.fileno(), _FICLONERANGE,
                        struct.pack("=qQQQ", src_fd, src_offset + head, mid, self._payload.offset))
        except OSError:
            self._no_clone = True  # not here: copy from now on, silently
            self.write(data[head:])
            return 0
        self._payload.skip(mid)
        self.write(data[head + mid:])
        return mid

    def _block_size(self) -> int:
        if self._bs is None:
            try:
                self._bs = os.fstat(self.f.fileno()).st_blksize or 4096
            except OSError:
                self._bs = 4096
        return self._bs

    def finish(self) -> None:
        """The end of the output: its last bytes written, our own file renamed into place."""
        try:
            if self._payload is not None:
                self._flush()
                self._payload.finish()
                if not self._own:  # the caller's file object: its position after what was written
                    self.f.seek(self._payload.offset)
            if self._atomic is not None:
                self._atomic.commit()
                return
            self.f.flush()
            if self._own:
                self.f.close()
        except OSError as e:
            raise self._failed(e) from None

    def abort(self) -> None:
        self._batch = []
        if self._atomic is not None:
            self._atomic.discard()
        elif self._own:
            try:
                self.f.close()
            except OSError:
                pass


def _appends_to_regular_file(f) -> bool:
    """Whether the file object ``f`` is a regular file positioned at its end, open for writing at
    any offset (not in append mode): the payload writer then writes through its descriptor.  Flushes
    ``f``."""
    try:
        f.flush()
        fd = f.fileno()
        st = os.fstat(fd)
        return (stat.S_ISREG(st.st_mode) and f.seekable() and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
                and f.tell() >= st.st_size)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


# --------------------------------------------------------------------------- blob index make/extract


@contextlib.contextmanager
def _store_executor(store: ChunkStore, executor: ThreadPool):
    """The pool that writes chunks: ``executor`` for a local store, a pool of the store's own
    concurrency for a remote one (uploads wait on the network, not on the cores)."""
    if not store.concurrency:
        yield executor
        return
    with ThreadPool(store.concurrency, "pycatar-put") as ex:
        yield ex


class MakeResult(Record):
    """What a make produced: the stream's digest and size, and its chunks."""

    __slots__ = ("digest", "digest_name", "size", "chunks", "new_chunks", "reused_chunks", "compressed_bytes")

    def __init__(self, digest: bytes, digest_name: str, size: int, chunks: int, new_chunks: int,
                 reused_chunks: int, compressed_bytes: int) -> None:
        self.digest = digest  # digest of the whole stream (what ``casync make`` prints)
        self.digest_name = digest_name
        self.size = size
        self.chunks = chunks
        self.new_chunks = new_chunks
        self.reused_chunks = reused_chunks
        self.compressed_bytes = compressed_bytes

    @property
    def hexdigest(self) -> str:
        return self.digest.hex()


def make_blob_index(
    source,
    index_path,
    store,
    *,
    chunk_size: tuple[int, int, int] | None = None,
    digest: str = "sha512-256",
    compression: str = "zstd",
    feature_flags: int | None = None,
    threads: int | None = None,
    index_mode: int | None = None,
    on_bytes=None,
) -> MakeResult:
    """Chunk ``source`` (a path, binary file object or iterable of buffers) into ``store`` and
    write the blob index ``index_path`` (a path, installed atomically, or a binary file object).

    The index carries ``feature_flags`` (default: what casync writes for a blob index, INDEX-4)
    with the digest bits set for ``digest``.  Returns the digest of the whole stream and counts.
    ``on_bytes(n)`` is called as chunks of ``n`` bytes are done (a progress display)."""
    _digest.new(digest)  # validates the name
    chunker = Chunker(*(chunk_size or DEFAULT_CHUNK_SIZES))
    fl = blob_index_flags(digest) if feature_flags is None else _flags.normalize(
        (int(feature_flags) & ~DIGEST_FLAGS) | _flags.digest_flags(digest)
    )
    if not isinstance(store, ChunkStore):
        store = LocalStore(store, digest=digest, compression=compression)
    close = None
    mode = 0o666
    if isinstance(source, (str, bytes, os.PathLike)):
        try:
            f = open(source, "rb", buffering=0)
        except OSError as e:
            raise PycatarError(f"cannot open {os.fsdecode(source)}: {e.strerror}") from None
        close = f
        src = f
        mode = os.fstat(f.fileno()).st_mode & 0o666
    else:
        src = source
        try:
            mode = os.fstat(source.fileno()).st_mode & 0o666
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass
    if index_mode is not None:
        mode = index_mode
    stream_hash = _digest.new(digest)
    stats = ChunkStats()
    try:
        with ThreadPool(threads or default_threads(), "pycatar") as ex, \
                _store_executor(store, ex) as store_ex:
            if isinstance(index_path, (str, bytes, os.PathLike)):
                writer = IndexWriter(index_path, feature_flags=fl, chunk_sizes=chunker.sizes, mode=mode)
            else:
                writer = IndexWriter(fileobj=index_path, feature_flags=fl, chunk_sizes=chunker.sizes)
            with writer:
                chunks = chunk_stream(src, chunker, digest, executor=ex, stream_hash=stream_hash)
                for _end, cid, size in write_chunks_to_store(
                        chunks, store, executor=store_ex, compression=compression, stats=stats,
                        batch_bytes=1 if store.concurrency else STORE_BATCH_BYTES):  # remote: a request per chunk
                    writer.append(cid, size)
                    if on_bytes is not None:
                        on_bytes(size)
    finally:
        if close is not None:
            close.close()
    return MakeResult(stream_hash.digest(), digest, stats.bytes, stats.chunks, stats.new_chunks,
                      stats.reused_chunks, stats.compressed_bytes)


class ExtractResult(Record):
    """What a blob extraction wrote."""

    __slots__ = ("size", "chunks", "digest")

    def __init__(self, size: int, chunks: int, digest: bytes | None) -> None:
        self.size = size
        self.chunks = chunks
        self.digest = digest  # digest of the extracted stream, if requested

    @property
    def hexdigest(self) -> str | None:
        return None if self.digest is None else self.digest.hex()


def extract_blob(
    index,
    output,
    stores,
    *,
    threads: int | None = None,
    sparse: bool = False,
    digest: str | None = None,
    source: ChunkSource | None = None,
    on_bytes=None,
) -> ExtractResult:
    """Reassemble the blob described by ``index`` (path, file object or :class:`IndexReader`)
    from ``stores`` (searched in order) into ``output`` (a path, replaced atomically, a block
    device written in place, or a binary file object).  With ``digest`` the stream digest is
    computed on the way.  ``source`` (e.g. an :class:`pycatar.assembly.Assembler` trying seeds
    first) replaces ``stores``.  Any missing or corrupt chunk raises :class:`ChunkError` and
    leaves no partial output file behind."""
    reader = index if isinstance(index, IndexReader) else IndexReader(index)
    try:
        src = source if source is not None else as_chunk_source(stores, digest=reader.digest)
        h = _digest.new(digest) if digest else None
        out = _Output(output, sparse=sparse)
        n = 0
        try:
            src.bind_output(out)
            with ThreadPool(threads or src.pool_size(), "pycatar") as ex:
                try:
                    for ref, data in fetch_chunks(reader.chunks(), src, executor=ex):
                        if h is not None:
                            h.update(data)
                        src.write(out, ref, data)
                        n += 1
                        if on_bytes is not None:
                            on_bytes(len(data))
                except BaseException:
                    ex.shutdown(wait=True, cancel_futures=True)  # the first failure stops the rest
                    raise
            out.finish()
        except BaseException:
            out.abort()
            raise
        finally:
            src.release_output()
        return ExtractResult(out.size, n, h.digest() if h else None)
    finally:
        if reader is not index:
            reader.close()


def stream_digest(index, stores, digest: str = "sha512-256", *, threads: int | None = None) -> bytes:
    """Digest of the stream an index describes (``casync digest x.caibx``; note casync hashes
    with its ``--digest=`` choice, default sha512-256, not with the index's chunk digest)."""
    res = extract_blob(index, _NullSink(), stores, threads=threads, digest=digest)
    return res.digest


class _NullSink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)


# --------------------------------------------------------------------------- random access


_ZEROS = bytes(1 << 20)


def is_zero(data) -> bool:
    """Whether ``data`` (bytes-like) holds only zero bytes (a memcmp for chunk-sized data)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    n = len(data)
    if n <= len(_ZEROS):
        return _ZEROS[:n] == data
    return data.count(0) == n


_REF_BLOCK_BITS = 10
_REF_BLOCK = 1 << _REF_BLOCK_BITS


def _joined(views: Iterable[memoryview]) -> bytes:
    """The views' bytes as one bytes object, copied once (a view of a whole chunk costs no copy)."""
    parts = list(views)
    if len(parts) == 1:
        obj = parts[0].obj
        if type(obj) is bytes and len(obj) == parts[0].nbytes:
            return obj
        return parts[0].tobytes()
    return b"".join(parts)


class _Prefetchers:
    """The threads of an index stream's prefetches: each takes the next job from a queue, in the
    order they were given (started on the first one).  Lighter than an executor, whose future,
    work item and idle-thread semaphore for every job cost the reading thread more, with the GIL
    held, than the rest of a chunk's bookkeeping; a job here is a call and nothing else (whoever
    waits for its result waits on the chunk's own future)."""

    def __init__(self, threads: int, name: str):
        self._n = threads
        self._name = name
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn, *args) -> None:
        if self._closed:
            raise RuntimeError("the stream is closed")
        if not self._threads:
            for i in range(self._n):
                # daemons: a stream left open never keeps the interpreter from exiting
                t = threading.Thread(target=self._run, name=f"{self._name}_{i}", daemon=True)
                t.start()
                self._threads.append(t)
        self._q.put((fn, args))

    def _run(self) -> None:
        get = self._q.get
        while True:
            job = get()
            if job is None:
                return
            fn, args = job
            fn(*args)

    def shutdown(self) -> None:
        """Wait for the threads to finish their jobs (the callers make not-started ones return at
        once) and end them."""
        self._closed = True
        for _ in self._threads:
            self._q.put(None)
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:  # (a stream closed by the collector in one of its own threads)
                t.join()
        self._threads = []


class IndexStream(io.RawIOBase):
    """A read-only, seekable file over the stream an index describes, its chunks from ``stores``
    (or a :class:`ChunkSource`).

    Reads fetch only the chunks covering the requested range (counted in
    :attr:`chunks_fetched`, their numbers in :attr:`fetched`), keeping the last ``cache_size``
    chunks (and, with ``cache_bytes``, at most that many bytes of them).  With ``threads`` (None: as
    many as the source wants, :meth:`ChunkSource.pool_size`; 0, the default: none), a pool of the
    stream's own fetches the chunks after the one being read, ``readahead`` of them (by default
    :func:`readahead_chunks`); they wait outside the cache until read.  :meth:`close` stops the pool.

    :meth:`read_at` may be called from many threads at once (the file position of ``read``/``seek``
    belongs to one caller): a chunk wanted by several readers is fetched once, the others wait for it."""

    def __init__(self, reader: IndexReader, stores, *, cache_size: int = 4, threads: int | None = 0,
                 readahead: int | None = None, cache_bytes: int | None = None):
        super().__init__()
        self.reader = reader
        self.source = as_chunk_source(stores, digest=reader.digest)
        if threads is None:
            threads = self.source.pool_size()
        self._ex = _Prefetchers(threads, "pycatar") if threads else None
        if readahead is None:
            readahead = readahead_chunks(threads, reader.chunk_sizes[1]) if threads else 0
        self.stores = self.source.stores if isinstance(self.source, StoreSource) else self.source
        self.size = reader.blob_size
        self._pos = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_bytes = 0
        self._readahead = readahead if self._ex is not None else 0
        self._send_ahead = self._readahead > 0 and self.source.fetches_ahead
        #: chunks per prefetch job: a few per thread and window, so that each job reads, decompresses
        #: and verifies several chunks a call (the GIL changing hands once for each, not per chunk)
        self._batch = max(1, min(PREFETCH_BATCH, self._readahead // (2 * threads))) if threads else 1
        self._cache_size = max(1, cache_size)
        self._cache_limit = cache_bytes
        self._inflight: dict[int, Future] = {}  # chunks being fetched: their results
        self._jobs: dict[int, Future] = {}  # prefetches submitted to the pool, not started yet
        self._closing = False
        self._ahead = 0  # the next chunk number to prefetch
        self._next_read = 0  # the chunk after the one the sequential reader (``drop``) read last
        self._ref_blocks: dict[int, list[ChunkRef]] = {}  # a few blocks of the chunk table
        self._cur: ChunkRef | None = None
        self.chunks_fetched = 0
        self.fetched: list[int] = []
        self.on_bytes = None  #: called with the number of bytes of every read (a progress display)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _ref(self, i: int) -> ChunkRef:
        """Chunk ``i``, read from the index a block of items at a time (call with the lock held)."""
        blk = i >> _REF_BLOCK_BITS
        refs = self._ref_blocks.get(blk)
        if refs is None:
            first = blk << _REF_BLOCK_BITS
            refs = list(itertools.islice(self.reader.chunks(first, batch=_REF_BLOCK), _REF_BLOCK))
            if len(self._ref_blocks) >= 4:  # reading and prefetching may straddle two blocks
                del self._ref_blocks[next(iter(self._ref_blocks))]
            self._ref_blocks[blk] = refs
        return refs[i & (_REF_BLOCK - 1)]

    def _locate(self, pos: int, cur: ChunkRef | None) -> ChunkRef:
        with self._lock:
            if cur is not None:
                if cur.start <= pos < cur.end:
                    return cur
                if pos == cur.end and cur.index + 1 < self.reader.count:
                    nxt = self._ref(cur.index + 1)
                    if nxt.start <= pos < nxt.end:
                        return nxt
            return self._ref(self.reader.find(pos))

    def _fetch(self, ref: ChunkRef, fut: Future) -> bytes:
        """Fetch a chunk this thread claimed (``fut``, in ``_inflight``), cache it and hand it to
        whoever waits."""
        with self._lock:
            self.chunks_fetched += 1
            self.fetched.append(ref.index)
        try:
            data = self.source.fetch(ref)
        except BaseException as e:
            self._failed(ref, fut, e)
            raise
        with self._lock:
            if self._inflight.get(ref.index) is fut:
                del self._inflight[ref.index]
            self._store(ref.index, data)
        fut.set_result(data)
        return data

    def _prefetch(self, refs: list[ChunkRef], futs: list[Future]) -> None:
        """A pool job: fetch the chunks of ``refs`` still wanted (those not dropped before the job
        started) in one :meth:`ChunkSource.fetch_many`, and hand each to its future (``futs``).  The
        fetched chunks wait in ``_inflight`` until read.  When the batch fails, its chunks are fetched
        one by one, so that each future holds its own chunk or its own error (whoever reads a failed
        chunk fetches it again and sees the error)."""
        with self._lock:
            jobs = self._jobs
            wanted = [(r, f) for r, f in zip(refs, futs) if jobs.get(r.index) is f]
            for r, _ in wanted:  # dropped ones (cancelled): the chunk may be wanted again since,
                del jobs[r.index]  # and another job, after this one, stands for it then
            self.chunks_fetched += len(wanted)
            self.fetched.extend(r.index for r, _ in wanted)
        if not wanted:
            return
        try:
            datas = self.source.fetch_many([r for r, _ in wanted])
        except BaseException as batch_error:  # noqa: BLE001 - one chunk of the batch: find out which
            for r, f in wanted:
                try:
                    if self._closing:  # (the reader gave up: an unreachable source is not asked again)
                        raise batch_error
                    f.set_result(self.source.fetch(r))
                except BaseException as e:  # noqa: BLE001 - the reader that waits for it sees it
                    self._failed(r, f, e)
            return
        for (_, f), data in zip(wanted, datas):
            f.set_result(data)

    def _failed(self, ref: ChunkRef, fut: Future, error: BaseException) -> None:
        """A fetch of ``ref`` failed: whoever waits for ``fut`` gets ``error``; the chunk leaves
        ``_inflight``, so that a later reader fetches it again."""
        with self._lock:
            if self._inflight.get(ref.index) is fut:
                del self._inflight[ref.index]
        fut.set_exception(error)

    def _store(self, idx: int, data: bytes) -> None:
        cache = self._cache
        if idx in cache:
            cache.move_to_end(idx)
            return
        cache[idx] = data
        self._cache_bytes += len(data)
        limit = self._cache_limit
        while len(cache) > self._cache_size or (limit is not None and self._cache_bytes > limit and len(cache) > 1):
            self._cache_bytes -= len(cache.popitem(last=False)[1])

    def _get(self, ref: ChunkRef, ahead: bool, drop: bool = False, until: int | None = None) -> bytes:
        """Chunk ``ref``'s data, from the cache, a fetch under way (prefetched or another thread's), or
        fetched now.  ``ahead``: then prefetch the chunks after it; ``drop``: also drop the prefetches
        outside that window (the one sequential reader of ``read`` skipped them)."""
        idx = ref.index
        while True:
            with self._lock:
                data = self._cache.get(idx)
                if data is not None:
                    self._cache.move_to_end(idx)
                    fut = mine = None
                else:
                    fut = self._inflight.get(idx)
                    mine = fut is None
                    if mine:
                        if ahead and self._readahead:  # the pool starts on the chunks after it meanwhile
                            self._prefetch_after(idx, drop, until,
                                                 REMOTE_FIRST_JOB if self._send_ahead else None)
                        fut = self._inflight[idx] = Future()
            if data is None:
                if mine:
                    data = self._fetch(ref, fut)
                else:
                    try:
                        data = fut.result()
                    except CancelledError:
                        continue  # a prefetch dropped before it started: fetch it now
                    with self._lock:
                        if self._inflight.get(idx) is fut:
                            del self._inflight[idx]
                        self._store(idx, data)
            if ahead and self._readahead:
                with self._lock:
                    self._prefetch_after(idx, drop, until)
            return data

    def _prefetch_after(self, idx: int, drop: bool, until: int | None = None, first: int | None = None) -> None:
        """Submit fetches of the next ``readahead`` chunks not cached or on the way, up to the one
        holding offset ``until`` (lock held); ``first``: the first job's chunks, if fewer."""
        lo, hi = idx + 1, min(idx + 1 + self._readahead, self.reader.count)
        inflight, jobs = self._inflight, self._jobs
        jumped = False
        if drop:  # the sequential reader: did it skip chunks since its last read?
            jumped = not lo - 1 <= self._next_read <= lo
            self._next_read = lo
        if (jumped and inflight) or len(inflight) > 2 * self._readahead + 16:
            # drop prefetches outside the window: not started ones are cancelled, finished ones
            # forgotten; (without ``drop``, only finished ones: other threads may wait for the rest).
            # A reader going through the chunks in order leaves none behind (each one it read left
            # the table): only after a jump is there anything to look for
            for i in [i for i in inflight if not lo <= i < hi]:
                if jobs.pop(i, None) is not None:  # not started: never will be
                    inflight.pop(i).cancel()
                elif drop or inflight[i].done():
                    del inflight[i]
        if not lo <= self._ahead <= hi:
            self._ahead = lo
        batch = self._batch
        if hi - self._ahead < batch and hi < self.reader.count:
            return  # the window moved on by less than a batch: wait for room for a whole one (the
            # chunks already submitted, at least half the window, keep the pool busy meanwhile)
        refs: list[ChunkRef] = []
        futs: list[Future] = []
        size = min(batch, first or batch)
        while self._ahead < hi:
            i = self._ahead
            self._ahead += 1
            if i not in self._cache and i not in inflight:
                nref = self._ref(i)
                if until is not None and nref.start >= until:
                    self._ahead = i
                    break
                pf = inflight[i] = Future()
                if self._send_ahead:
                    self.source.ahead(nref)
                refs.append(nref)
                futs.append(pf)
                jobs[i] = pf
                if len(refs) == size:
                    if not self._submit(refs, futs):
                        return
                    refs, futs, size = [], [], batch
        if refs:
            self._submit(refs, futs)

    def start(self, pos: int = 0) -> None:
        """Start fetching the readahead window from the chunk holding ``pos`` on, before a read asks
        for it (a reader with set-up of its own to do meanwhile: imports, opening the target)."""
        if not self._readahead or not 0 <= pos < self.size:
            return
        first = self._locate(pos, None).index
        with self._lock:
            self._prefetch_after(first - 1, False)

    def _submit(self, refs: list[ChunkRef], futs: list[Future]) -> bool:
        """Hand a batch of prefetches to the pool (lock held); False when the stream is closing (they
        are dropped)."""
        try:
            self._ex.submit(self._prefetch, refs, futs)
        except RuntimeError:  # the stream is closing: no more prefetching
            for r, f in zip(refs, futs):
                del self._inflight[r.index]
                del self._jobs[r.index]
                f.cancel()
            return False
        return True

    def _piece(self, pos: int, end: int, ahead: bool, cur: ChunkRef | None, drop: bool = False,
               until: int | None = None) -> tuple[memoryview, ChunkRef]:
        """The bytes from ``pos`` (< ``end``) to ``end`` or the end of the chunk holding ``pos``, whichever
        comes first: a view of the verified chunk (no copy), and that chunk."""
        ref = self._locate(pos, cur)
        data = self._get(ref, ahead, drop, until)
        off = pos - ref.start
        return memoryview(data)[off:off + min(end, ref.end) - pos], ref

    def _pieces(self, pos: int, size: int, ahead: bool, cur: ChunkRef | None = None,
                drop: bool = False, until: int | None = None) -> Iterator[memoryview]:
        """Up to ``size`` bytes from ``pos`` on, as views of the chunks.  ``_cur`` is left at the last
        chunk read (a hint for the next read: checked before use)."""
        end = min(self.size, pos + size)
        while pos < end:
            view, cur = self._piece(pos, end, ahead, cur, drop, until)
            pos += len(view)
            yield view
        self._cur = cur

    def read_at(self, pos: int, size: int, *, readahead: bool = True, ahead_until: int | None = None) -> bytes:
        """Up to ``size`` bytes at ``pos`` (short only at the end), without moving the file position;
        safe to call from several threads at once.  ``readahead``: prefetch the chunks that follow
        (for sequential reading), those starting before ``ahead_until`` if given."""
        return _joined(self._pieces(pos, size, readahead, until=ahead_until))

    def _consume(self, size: int) -> Iterator[memoryview]:
        pos = self._pos
        on_bytes = self.on_bytes
        for piece in self._pieces(pos, size, True, self._cur, drop=True):
            pos += len(piece)
            self._pos = pos
            if on_bytes is not None:
                on_bytes(len(piece))
            yield piece

    def readview(self, size: int) -> memoryview:
        """Up to ``size`` bytes from the file position on, but no further than the end of the chunk
        holding it: a read-only view of the verified chunk, without copying (empty at the end).  The
        view keeps that one chunk alive, not the cache."""
        pos = self._pos
        end = min(self.size, pos + size)
        if pos >= end:
            return memoryview(b"")
        view, self._cur = self._piece(pos, end, True, self._cur, drop=True)
        self._pos = pos + len(view)
        if self.on_bytes is not None:
            self.on_bytes(len(view))
        return view

    def readinto(self, b) -> int:
        mv = memoryview(b).cast("B")
        done = 0
        for piece in self._consume(len(mv)):
            mv[done:done + len(piece)] = piece
            done += len(piece)
        return done

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (short only at the end), copied once from the chunks."""
        if size is None or size < 0:
            return self.readall()
        return _joined(self._consume(size))

    def readall(self) -> bytes:
        return _joined(self._consume(max(0, self.size - self._pos)))

    def close(self) -> None:
        with self._lock:
            self._closing = True
            for i in self._jobs:  # prefetches not started: never will be
                fut = self._inflight.pop(i, None)
                if fut is not None:
                    fut.cancel()
            self._jobs.clear()
            self._cache.clear()
            self._cache_bytes = 0
        if self._ex is not None:
            self._ex.shutdown()
        super().close()
