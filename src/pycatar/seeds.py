"""Seeds: data already on this machine that holds chunks an index needs (spec/seeds.md).

A seed answers one question — "where, in data I can read, are the bytes of chunk X?" — with a
location (stream offset and size).  The caller (:mod:`pycatar.assembly`) reads those bytes and
checks their digest against X before using them (SEED-6), so a seed that changed after it was
indexed costs a store fetch, never a wrong byte.

Kinds (SEED-2):

* ``file`` — a regular file or block device, cut with the target index's chunker;
* ``directory`` — a tree, serialised as a catar stream with the target index's feature flags and
  cut the same way.  Only the *layout* of that stream is kept: the metadata bytes (entries, names,
  goodbye tables) go to a temporary spool file, file payloads stay where they are and are read
  from the tree when needed (SEED-4);
* ``index`` — an index plus its data, desync's convention: ``old.img.caibx`` describes the file
  ``old.img``, ``v1.caidx`` the directory ``v1``.  The index supplies ids and boundaries, so the
  data is not chunked; a ``.caidx`` seed only has its tree walked for the layout (SEED-5);
* ``self`` and ``null`` live in :mod:`pycatar.assembly` (they need the target, not a path).

Indexing a ``file`` or ``directory`` seed reads and hashes all of it; :class:`SeedCache` keeps the
result keyed by the seed's identity and reused while a fingerprint of the seed (stat data of every
file, all metadata bytes) is unchanged (SEED-9).
"""

from __future__ import annotations

import bisect
import os
import stat as st
import struct
import threading
import time
from array import array
from collections import OrderedDict

from . import digest as _digest
from ._fileio import read_file
from .chunker import Chunker
from .errors import PycatarError
from .fileio import pread_full, write_atomic
from .pool import ThreadPool
from .record import Record

INDEX_SUFFIXES = (".caibx", ".caidx")
_ID = 32
#: a cached chunk table larger than this is not read (a 4 GiB seed in 16 KiB chunks needs ~10 MiB)
_CACHE_FILE_MAX = 1 << 30
_O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a FIFO never blocks an open (SEED-3)


class SeedError(PycatarError):
    """A seed cannot be used; the seed is then left out (SEED-3)."""


class Target(Record):
    """What the seeds are indexed for: the target index's parameters and the chunks it needs."""

    __slots__ = ("feature_flags", "chunk_sizes", "digest", "needed", "encoder_options", "hardlinks")

    def __init__(self, feature_flags: int, chunk_sizes: tuple[int, int, int], digest: str,
                 needed: dict[bytes, int] | None = None, encoder_options: dict | None = None,
                 hardlinks: bool = False) -> None:
        self.feature_flags = feature_flags
        self.chunk_sizes = chunk_sizes
        self.digest = digest
        #: chunk id -> size of every chunk the target needs (None: keep every chunk of a seed)
        self.needed = needed
        self.encoder_options = {} if encoder_options is None else encoder_options
        #: record per-file hardlink candidates while walking directory seeds
        self.hardlinks = hardlinks


# --------------------------------------------------------------------------- chunk tables


class ChunkTable:
    """The chunks of a seed's stream, in order: ids (32 bytes each) and end offsets."""

    __slots__ = ("ids", "ends")

    def __init__(self, ids: bytes | bytearray = b"", ends: array | None = None):
        self.ids = bytearray(ids)
        self.ends = ends if ends is not None else array("Q")

    def append(self, chunk_id: bytes, end: int) -> None:
        self.ids += chunk_id
        self.ends.append(end)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0

    @classmethod
    def from_index(cls, reader) -> "ChunkTable":
        t = cls()
        for ref in reader.chunks():
            t.append(ref.id, ref.end)
        return t

    def select(self, needed: dict[bytes, int] | None) -> dict[bytes, tuple[int, int]]:
        """chunk id -> (offset, size) for the chunks in ``needed`` (all when None); the first
        occurrence wins."""
        out: dict[bytes, tuple[int, int]] = {}
        ids, ends = bytes(self.ids), self.ends
        start = 0
        for i, end in enumerate(ends):
            cid = ids[i * _ID:(i + 1) * _ID]
            if (needed is None or cid in needed) and cid not in out:
                out[cid] = (start, end - start)
            start = end
        return out

    # -- (de)serialisation for the cache
    _HEAD = struct.Struct("<8s32sQ")
    _MAGIC = b"PCSEED01"

    def dump(self, fingerprint: bytes) -> bytes:
        ends = array("Q", self.ends)
        if ends.itemsize != 8:  # pragma: no cover - every supported platform has 8-byte "Q"
            raise SeedError("unsupported platform for the seed cache")
        if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover - big-endian hosts
            ends.byteswap()
        return self._HEAD.pack(self._MAGIC, fingerprint, len(ends)) + bytes(self.ids) + ends.tobytes()

    @classmethod
    def load(cls, blob: bytes, fingerprint: bytes) -> "ChunkTable | None":
        h = cls._HEAD
        if len(blob) < h.size:
            return None
        magic, fp, n = h.unpack_from(blob)
        if magic != cls._MAGIC or fp != fingerprint or len(blob) != h.size + n * (_ID + 8):
            return None
        ids = blob[h.size:h.size + n * _ID]
        ends = array("Q")
        ends.frombytes(blob[h.size + n * _ID:])
        if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover
            ends.byteswap()
        prev = 0
        for e in ends:  # a damaged cache entry is a miss, never a crash
            if e <= prev:
                return None
            prev = e
        return cls(ids, ends)


class SeedCache:
    """SEED-9: chunk tables of file and directory seeds, kept in a directory across runs.

    An entry is named by a digest of the seed's identity and the chunking parameters, and holds
    the seed's fingerprint; it is used only when the fingerprint taken now is identical."""

    def __init__(self, directory: str | os.PathLike):
        self.path = os.fspath(directory)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise SeedError(f"cannot create cache directory {self.path}: {e.strerror}") from None

    @staticmethod
    def key(*parts) -> str:
        import json  # start-up: only a seed cache needs it

        return _digest.digest("sha256", json.dumps(parts, sort_keys=True, default=str).encode()).hex()

    def _file(self, key: str) -> str:
        return os.path.join(self.path, f"{key}.pcseed")

    def load(self, key: str, fingerprint: bytes) -> ChunkTable | None:
        # one C call: not following a symlink, never blocking on a FIFO, regular files only
        blob = read_file(self._file(key), _CACHE_FILE_MAX)
        if not isinstance(blob, bytes):
            return None
        return ChunkTable.load(blob, fingerprint)

    def save(self, key: str, fingerprint: bytes, table: ChunkTable) -> bool:
        try:
            write_atomic(self._file(key), table.dump(fingerprint), 0o600)
            return True
        except OSError:
            return False


# --------------------------------------------------------------------------- readable data



class FileData:
    """A regular file or block device, read with ``pread`` through one descriptor (which keeps
    reading the same inode even if the path is replaced meanwhile)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, _O_READ)
        except OSError as e:
            raise SeedError(f"Failed to open {path}: {e.strerror}") from None
        s = os.fstat(self.fd)
        if st.S_ISREG(s.st_mode):
            self.size = s.st_size
            self.fingerprint: bytes | None = _digest.digest("sha256", struct.pack(
                "<QQQQQ", s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
        elif st.S_ISBLK(s.st_mode):
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            self.fingerprint = None  # a device's content has no cheap witness: never cached
        else:
            os.close(self.fd)
            raise SeedError(f"{path}: not a regular file or block device")
        self.identity = (os.path.realpath(path), s.st_dev, s.st_ino)

    def read(self, offset: int, size: int) -> bytes:
        return pread_full(self.fd, size, offset)

    def origin(self, offset: int) -> tuple[int, int]:
        return self.fd, offset

    def open_stream(self):
        f = open(os.dup(self.fd), "rb", buffering=0)
        f.seek(0)
        return f

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _FdCache:
    """Open descriptors of recently read payload files (bounded; never closes one in use)."""

    def __init__(self, root_fd: int, capacity: int = 64):
        self.root_fd = root_fd
        self.capacity = capacity
        self._fds: OrderedDict[int, list] = OrderedDict()  # file number -> [fd, users]
        self._lock = threading.Lock()

    def acquire(self, num: int, relpath: str) -> int:
        with self._lock:
            hit = self._fds.get(num)
            if hit is not None:
                self._fds.move_to_end(num)
                hit[1] += 1
                return hit[0]
        fd = os.open(relpath, _O_READ | os.O_NOFOLLOW, dir_fd=self.root_fd)
        with self._lock:
            hit = self._fds.get(num)
            if hit is not None:  # another thread opened it meanwhile
                os.close(fd)
                hit[1] += 1
                return hit[0]
            self._fds[num] = [fd, 1]
            if len(self._fds) > self.capacity:
                for k in list(self._fds):
                    if len(self._fds) <= self.capacity:
                        break
                    v = self._fds[k]
                    if v[1] == 0:
                        os.close(v[0])
                        del self._fds[k]
            return fd

    def release(self, num: int) -> None:
        with self._lock:
            hit = self._fds.get(num)
            if hit is not None:
                hit[1] -= 1

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._fds.values():
                os.close(fd)
            self._fds.clear()


_ZERO_BLOCK = bytes(1 << 20)


def _placeholder(size: int):
    """``size`` zero bytes in pieces of at most 1 MiB, standing in for a payload nobody reads."""
    while size:
        n = min(len(_ZERO_BLOCK), size)
        yield memoryview(_ZERO_BLOCK)[:n]
        size -= n


class TreeLayout:
    """SEED-4: where each byte of a directory's catar stream comes from.

    Metadata bytes (everything but file payloads) are spooled to an unlinked temporary file;
    payload ``i`` is the file ``paths[i]`` (relative to the root) at stream offset
    ``pay_start[i]``.  The fingerprint covers every metadata byte and the stat data (device,
    inode, size, mtime, ctime) of every file with a payload."""

    def __init__(self, root: str, feature_flags: int, encoder_options: dict | None = None, *,
                 spool_dir: str | None = None, hardlinks: bool = False):
        self.root = root
        self.feature_flags = feature_flags
        self.encoder_options = dict(encoder_options or {})
        self.hardlinks = hardlinks
        self.pay_start = array("Q")
        self.pay_size = array("Q")
        self.pay_meta = array("Q")  # metadata bytes before payload i
        self.paths: list[str] = []
        self.file_stats: list[tuple[int, int, int, int]] = []  # (dev, ino, size, mtime_ns) when hardlinks
        self.links: dict[tuple[bytes, int], list[int]] = {}
        self.size = 0
        self.fingerprint = b""
        self._fp = _digest.new("sha256")
        self._pay_total = 0  # payload bytes recorded so far
        try:
            self.root_fd = os.open(root, _O_READ | os.O_DIRECTORY)
        except OSError as e:
            raise SeedError(f"Failed to open {root}: {e.strerror}") from None
        import tempfile  # only where a directory is indexed: its import is 3-4 ms of every start

        try:
            self._spool = tempfile.TemporaryFile(dir=spool_dir, prefix="pycatar-seed-")
        except OSError as e:
            os.close(self.root_fd)
            raise SeedError(f"cannot create a temporary file: {e.strerror}") from None
        self._fds = _FdCache(self.root_fd)

    # -- building
    def _meta(self, piece) -> None:
        mv = memoryview(piece)
        self._fp.update(mv)
        fd = self._spool.fileno()
        while mv:
            n = os.write(fd, mv)
            mv = mv[n:]

    def _add_file(self, entry, fd: int) -> None:
        s = os.fstat(fd)
        self.pay_start.append(entry.payload_offset)
        self.pay_size.append(entry.size)
        self.pay_meta.append(entry.payload_offset - self._pay_total)
        self._pay_total += entry.size
        self.paths.append(entry.path)
        self._fp.update(struct.pack("<QQQQQ", s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
        if self.hardlinks:
            from .encoder import entry_records  # start-up: see walk()

            key = (_digest.digest("sha256", entry_records(entry)), entry.size)
            self.links.setdefault(key, []).append(len(self.paths) - 1)
            self.file_stats.append((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns))

    def walk(self) -> None:
        """Record the layout: every metadata byte and where each payload lies (no payload is
        read): the encoder's serialisation of the tree with the payloads left out."""
        # start-up: imported here, only a directory seed needs the encoder (an extraction without
        # seeds does not)
        from .encoder import CatarSerializer, EncoderOptions, TreeWalker

        serializer = CatarSerializer(TreeWalker(self.root, EncoderOptions(self.feature_flags, **self.encoder_options)),
                                     payloads=False, on_payload=self._add_file)
        for piece in serializer:
            self._meta(piece)
        self.size = serializer.offset
        self.fingerprint = self._fp.digest()

    def replay(self, read_size: int = 4 << 20):
        """The stream again, from the layout: metadata from the spool, payloads read from the
        files now (a file that shrank since the walk is padded with zeros, so offsets hold; its
        chunks then simply do not match what the target needs)."""
        spool = self._spool.fileno()
        pos = meta = 0
        for i, start in enumerate(self.pay_start):
            if start > pos:
                yield from self._spool_pieces(spool, meta, start - pos, read_size)
                meta += start - pos
            size = self.pay_size[i]
            yield from self._file_pieces(i, size, read_size)
            pos = start + size
        if self.size > pos:
            yield from self._spool_pieces(spool, meta, self.size - pos, read_size)

    @staticmethod
    def _spool_pieces(fd: int, offset: int, n: int, read_size: int):
        while n:
            data = pread_full(fd, min(n, read_size), offset)
            if not data:
                raise SeedError("seed spool file truncated")
            offset += len(data)
            n -= len(data)
            yield data

    def _file_pieces(self, i: int, size: int, read_size: int):
        try:
            fd = os.open(self.paths[i], _O_READ | os.O_NOFOLLOW, dir_fd=self.root_fd)
        except OSError:
            fd = -1
        try:
            left = size
            while left:
                data = os.read(fd, min(left, read_size)) if fd >= 0 else b""
                if not data:
                    yield from _placeholder(left)
                    return
                left -= len(data)
                yield data
        finally:
            if fd >= 0:
                os.close(fd)

    # -- reading
    def read(self, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of the stream as the tree holds them now (short or wrong
        where files changed; the caller verifies)."""
        out = bytearray(size)
        pos, done = offset, 0
        starts, sizes = self.pay_start, self.pay_size
        while done < size and pos < self.size:
            i = bisect.bisect_right(starts, pos) - 1
            if i >= 0 and pos < starts[i] + sizes[i]:
                n = min(size - done, starts[i] + sizes[i] - pos)
                data = self._read_payload(i, pos - starts[i], n)
            else:
                nxt = starts[i + 1] if i + 1 < len(starts) else self.size
                n = min(size - done, nxt - pos)
                before = (starts[i] - self.pay_meta[i] + sizes[i]) if i >= 0 else 0  # payload bytes before pos
                data = pread_full(self._spool.fileno(), n, pos - before)
            out[done:done + len(data)] = data
            if len(data) < n:
                break
            done += n
            pos += n
        return bytes(out)

    def _read_payload(self, i: int, offset: int, n: int) -> bytes:
        try:
            fd = self._fds.acquire(i, self.paths[i])
        except OSError:
            return b""
        try:
            return pread_full(fd, n, offset)
        except OSError:
            return b""
        finally:
            self._fds.release(i)

    def close(self) -> None:
        self._fds.close()
        try:
            self._spool.close()
        finally:
            if self.root_fd >= 0:
                os.close(self.root_fd)
                self.root_fd = -1


# --------------------------------------------------------------------------- seeds


def _chunk_into_table(source, target: Target, executor: ThreadPool | None) -> ChunkTable:
    from .blob import chunk_stream  # late: blob imports nothing from here, but keep the graph simple

    table = ChunkTable()
    for end, cid, _data in chunk_stream(source, Chunker(*target.chunk_sizes), target.digest, executor=executor):
        table.append(cid, end)
    return table


class Seed:
    """One seed: a chunk table over readable data, with the counters of what it supplied."""

    kind = "seed"

    def __init__(self, path: str, *, output: bool = False):
        self.path = path
        self.output = output  #: the pre-existing output (--seed-output)
        self.table: ChunkTable | None = None
        self.how = "pending"  #: chunked, cache, index, deferred, failed
        self.seconds = 0.0  #: time spent indexing
        self.chunks = 0  #: chunks supplied (verified)
        self.bytes = 0
        self.stale = 0  #: chunks whose bytes no longer matched their id
        self._map: dict[bytes, tuple[int, int]] = {}
        self._lock = threading.Lock()

    # -- life cycle
    def prepare(self, target: Target, cache: SeedCache | None, spool_dir: str | None) -> None:
        """The cheap part: open, fingerprint, look in the cache (or read the seed's index)."""

    def index(self, target: Target, cache: SeedCache | None, executor: ThreadPool | None,
              spool_dir: str | None) -> None:
        """The expensive part: chunk the data (only if :meth:`prepare` left no table)."""

    @property
    def ready(self) -> bool:
        return self.table is not None

    def select(self, needed: dict[bytes, int] | None) -> None:
        self._map = self.table.select(needed) if self.table is not None else {}

    # -- lookups
    def locate(self, chunk_id: bytes) -> tuple[int, int] | None:
        return self._map.get(chunk_id)

    def forget(self, chunk_id: bytes) -> None:
        with self._lock:
            self._map.pop(chunk_id, None)
            self.stale += 1

    def count(self, size: int) -> None:
        with self._lock:
            self.chunks += 1
            self.bytes += size

    def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def origin(self, offset: int) -> tuple[int, int] | None:
        """(descriptor, offset) of these bytes in one file, for reflinks; None if not one file."""
        return None

    def layout(self) -> TreeLayout | None:
        return None

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "output": self.output, "indexed": self.how,
                "chunks": self.chunks, "bytes": self.bytes, "stale_chunks": self.stale,
                "index_seconds": round(self.seconds, 6)}


class FileSeed(Seed):
    """SEED-2: a regular file or block device, cut with the target's chunker."""

    kind = "file"

    def __init__(self, path: str, *, output: bool = False):
        super().__init__(path, output=output)
        self.data: FileData | None = None
        self._key = None

    def prepare(self, target, cache, spool_dir):
        t0 = time.monotonic()
        self.data = FileData(self.path)
        if cache is not None and self.data.fingerprint is not None:
            self._key = SeedCache.key("file", *self.data.identity, target.chunk_sizes, target.digest)
            table = cache.load(self._key, self.data.fingerprint)
            if table is not None and table.size == self.data.size:
                self.table, self.how = table, "cache"
        self.seconds += time.monotonic() - t0

    def index(self, target, cache, executor, spool_dir):
        if self.table is not None:
            return
        t0 = time.monotonic()
        f = self.data.open_stream()
        with f:
            self.table = _chunk_into_table(f, target, executor)
        self.how = "chunked"
        if cache is not None and self._key is not None:
            cache.save(self._key, self.data.fingerprint, self.table)
        self.seconds += time.monotonic() - t0

    def read(self, offset, size):
        return self.data.read(offset, size)

    def origin(self, offset):
        return self.data.origin(offset)

    def close(self):
        if self.data is not None:
            self.data.close()


class DirectorySeed(Seed):
    """SEED-2/SEED-4: a directory, serialised with the target's feature flags and chunked."""

    kind = "directory"

    def __init__(self, path: str, *, output: bool = False):
        super().__init__(path, output=output)
        self._layout: TreeLayout | None = None
        self._key = None

    def _new_layout(self, target, spool_dir, flags=None) -> TreeLayout:
        return TreeLayout(self.path, target.feature_flags if flags is None else flags, target.encoder_options,
                          spool_dir=spool_dir, hardlinks=target.hardlinks)

    def _replace_layout(self, layout: TreeLayout) -> None:
        if self._layout is not None:
            self._layout.close()
        self._layout = layout

    def prepare(self, target, cache, spool_dir):
        t0 = time.monotonic()
        if not os.path.isdir(self.path):
            raise SeedError(f"{self.path}: not a directory")
        if cache is not None:
            layout = self.ensure_layout(target, spool_dir)
            s = os.stat(self.path)
            self._key = SeedCache.key("directory", os.path.realpath(self.path), s.st_dev, s.st_ino,
                                      target.feature_flags, target.chunk_sizes, target.digest,
                                      sorted(target.encoder_options.items()))
            table = cache.load(self._key, layout.fingerprint)
            if table is not None and table.size == layout.size:
                self.table, self.how = table, "cache"
        self.seconds += time.monotonic() - t0

    def index(self, target, cache, executor, spool_dir):
        if self.table is not None:
            return
        t0 = time.monotonic()
        layout = self.ensure_layout(target, spool_dir)  # walked already when a cache was asked
        self.table = _chunk_into_table(layout.replay(), target, executor)
        self.how = "chunked"
        if cache is not None and self._key is not None and self.table.size == layout.size:
            cache.save(self._key, layout.fingerprint, self.table)
        self.seconds += time.monotonic() - t0

    def ensure_layout(self, target, spool_dir) -> TreeLayout:
        """The layout (walked now if indexing was deferred), e.g. for hardlink candidates."""
        if self._layout is None:
            layout = self._new_layout(target, spool_dir)
            self._replace_layout(layout)
            layout.walk()
        return self._layout

    def read(self, offset, size):
        return self._layout.read(offset, size)

    def layout(self):
        return self._layout

    def close(self):
        if self._layout is not None:
            self._layout.close()
            self._layout = None


class IndexSeed(Seed):
    """SEED-5: an index and its data (``x.caibx`` -> file ``x``, ``x.caidx`` -> directory ``x``).

    The index gives ids and boundaries, so nothing is chunked.  If the index cannot describe the
    data as it is now (another digest or chunk size than the target, or a size that differs from
    the data's), the data is chunked like a ``file``/``directory`` seed instead ("regenerated")."""

    kind = "index"

    def __init__(self, path: str, *, output: bool = False):
        super().__init__(path, output=output)
        self.data_path = path[: -len(".caibx")]
        self._data = None  # FileData or TreeLayout
        self._inner: Seed | None = None

    def prepare(self, target, cache, spool_dir):
        from .index import IndexReader

        t0 = time.monotonic()
        try:
            with IndexReader(self.path) as reader:
                blob = self.path.endswith(".caibx")
                if blob:
                    if not os.path.lexists(self.data_path):
                        raise SeedError(f"{self.path}: its data, the file {self.data_path}, is missing")
                    self._data = FileData(self.data_path)
                else:
                    if not os.path.isdir(self.data_path):
                        raise SeedError(f"{self.path}: its data, the directory {self.data_path}, is missing")
                    # the walk uses the seed index's own flags: that is how its stream was made
                    self._data = TreeLayout(self.data_path, reader.feature_flags, target.encoder_options,
                                            spool_dir=spool_dir, hardlinks=False)
                    self._data.walk()
                usable = (reader.digest == target.digest and reader.chunk_sizes == tuple(target.chunk_sizes)
                          and reader.blob_size == self._data.size)
                if usable:
                    self.table = ChunkTable.from_index(reader)
                    self.how = "index"
        except PycatarError as e:
            raise SeedError(str(e)) from None
        if self.table is None:  # the index does not fit: chunk the data instead
            self._close_data()
            self._inner = (FileSeed if blob else DirectorySeed)(self.data_path, output=self.output)
            self._inner.prepare(target, cache, spool_dir)
            self.table = self._inner.table
            if self.table is not None:
                self.how = "regenerated (cache)"
        self.seconds += time.monotonic() - t0

    def index(self, target, cache, executor, spool_dir):
        if self.table is not None:
            return
        t0 = time.monotonic()
        self._inner.index(target, cache, executor, spool_dir)
        self.table = self._inner.table
        self.how = "regenerated"
        self.seconds += time.monotonic() - t0

    def read(self, offset, size):
        if self._inner is not None:
            return self._inner.read(offset, size)
        return self._data.read(offset, size)

    def origin(self, offset):
        if self._inner is not None:
            return self._inner.origin(offset)
        return self._data.origin(offset) if isinstance(self._data, FileData) else None

    def _close_data(self):
        if self._data is not None:
            self._data.close()
            self._data = None

    def close(self):
        self._close_data()
        if self._inner is not None:
            self._inner.close()


def open_seed(path: str, *, output: bool = False) -> Seed:
    """SEED-2: the seed ``path`` stands for: an index (by suffix), a directory, a regular file or
    a block device.  Nothing is read yet."""
    try:
        s = os.stat(path)
    except OSError as e:
        raise SeedError(f"Failed to add seed {path}, ignoring: {e.strerror}") from None
    if st.S_ISREG(s.st_mode) and path.endswith(INDEX_SUFFIXES) and len(os.path.basename(path)) > 6 and not output:
        return IndexSeed(path, output=output)
    if st.S_ISDIR(s.st_mode):
        return DirectorySeed(path, output=output)
    if st.S_ISREG(s.st_mode) or st.S_ISBLK(s.st_mode):
        return FileSeed(path, output=output)
    raise SeedError(f"Failed to add seed {path}, ignoring: not a directory, regular file or block device")


def null_chunk_ids(chunk_sizes: tuple[int, int, int], digest: str) -> dict[bytes, int]:
    """SEED-8: ids of the all-zero chunks a chunker with these sizes produces inside long runs of
    zeros (the maximum size, and the size it cuts zeros at when that is smaller)."""
    mn, avg, mx = chunk_sizes
    sizes = {mx}
    if mx <= (32 << 20):
        sizes.add(Chunker(mn, avg, mx).split(bytes(mx + 1))[0])  # the first cut: at mx at the latest
    sizes = sorted(sizes)
    return dict(zip(_digest.digest_many(digest, [bytes(n) for n in sizes]), sizes))  # (both in one call)
