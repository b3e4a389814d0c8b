"""Reading and writing chunk index files (``.caibx`` for blobs, ``.caidx`` for archives).

Layout (spec/index.md): an INDEX record (feature flags, min/avg/max chunk size), a TABLE header
whose size field is UINT64_MAX, one 40-byte item per chunk (end offset of the chunk in the
stream, chunk id), and a 40-byte tail (two zero words, offset of the TABLE header, size of the
table, marker).  Writers stream items to a temporary file and rename it into place on close;
readers check every field and raise a one-line :class:`FormatError` for anything malformed.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from collections.abc import Iterator

from . import flags as _flags
from .errors import FormatError, PycatarError, UsageError
from .fileio import AtomicFile
from .format import (
    CHUNK_ID_SIZE,
    HEADER,
    INDEX,
    INDEX_SIZE,
    TABLE_HEADER_SIZE_FIELD,
    TABLE_ITEM,
    TABLE_ITEM_SIZE,
    TABLE_TAIL,
    RecordType,
)
from .record import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK_SIZE_LIMIT_MIN = 1
CHUNK_SIZE_LIMIT_MAX = 128 * 1024 * 1024

#: INDEX-2: bytes before the first table item (INDEX record + TABLE header)
HEAD_SIZE = INDEX_SIZE + HEADER.size  # 64
TAIL_SIZE = TABLE_TAIL.size  # 40
#: smallest valid index file: no items
MIN_FILE_SIZE = HEAD_SIZE + TAIL_SIZE  # 104
#: feature flag bits that select the chunk digest
DIGEST_FLAGS = int(_flags.Flag.SHA512_256 | _flags.Flag.DIGEST_BLAKE3)
#: INDEX-4: the flags casync puts into a blob index besides the digest bit (its default excludes)
BLOB_INDEX_FLAGS = int(_flags.Flag.EXCLUDE_NODUMP | _flags.Flag.EXCLUDE_FILE)

_ITEM = TABLE_ITEM
_WRITE_BUFFER = 1 << 20


def blob_index_flags(digest: str = "sha512-256") -> int:
    """Feature flags of a blob index as ``casync make x.caibx`` writes them by default (INDEX-4)."""
    return BLOB_INDEX_FLAGS | _flags.digest_flags(digest)


def check_feature_flags(value: int) -> None:
    """INDEX-5: flags must be known (casync's plus the BLAKE3 bit), normalised and name one digest."""
    unknown = value & ~_flags.FLAGS_MAX
    if unknown:
        raise FormatError(f"index has unknown feature flags 0x{unknown:x}")
    if value & DIGEST_FLAGS == DIGEST_FLAGS:
        raise FormatError("index feature flags select both SHA512-256 and BLAKE3")
    if not _flags.is_normalized(value):
        raise FormatError(f"index feature flags 0x{value:x} are not normalized")


def check_chunk_sizes(mn: int, avg: int, mx: int) -> None:
    for v in (mn, avg, mx):
        if not CHUNK_SIZE_LIMIT_MIN <= v <= CHUNK_SIZE_LIMIT_MAX:
            raise FormatError(f"index chunk size {v} out of range")
    if not mn <= avg <= mx:
        raise FormatError(f"index chunk sizes {mn}/{avg}/{mx} are not ordered min <= avg <= max")


class IndexHeader(FrozenRecord):
    """The INDEX record: the feature flags and the chunker's sizes."""

    __slots__ = ("feature_flags", "chunk_size_min", "chunk_size_avg", "chunk_size_max")

    def __init__(self, feature_flags: int, chunk_size_min: int, chunk_size_avg: int, chunk_size_max: int) -> None:
        object.__setattr__(self, "feature_flags", feature_flags)
        object.__setattr__(self, "chunk_size_min", chunk_size_min)
        object.__setattr__(self, "chunk_size_avg", chunk_size_avg)
        object.__setattr__(self, "chunk_size_max", chunk_size_max)

    @property
    def digest(self) -> str:
        return _flags.digest_name(self.feature_flags)

    @property
    def chunk_sizes(self) -> tuple[int, int, int]:
        return self.chunk_size_min, self.chunk_size_avg, self.chunk_size_max

    def pack(self) -> bytes:
        return INDEX.pack(
            INDEX_SIZE, RecordType.INDEX, self.feature_flags,
            self.chunk_size_min, self.chunk_size_avg, self.chunk_size_max,
        ) + HEADER.pack(TABLE_HEADER_SIZE_FIELD, RecordType.TABLE)

    @classmethod
    def unpack(cls, head: bytes) -> "IndexHeader":
        if len(head) < HEAD_SIZE:
            raise FormatError("index truncated: incomplete header")
        size, typ, fl, mn, avg, mx = INDEX.unpack_from(head, 0)
        if typ != RecordType.INDEX:
            raise FormatError(f"not an index file: bad INDEX type 0x{typ:016x}")
        if size != INDEX_SIZE:
            raise FormatError(f"bad INDEX header size {size} (expected {INDEX_SIZE})")
        check_feature_flags(fl)
        check_chunk_sizes(mn, avg, mx)
        tsize, ttype = HEADER.unpack_from(head, INDEX_SIZE)
        if ttype != RecordType.TABLE:
            raise FormatError(f"bad TABLE type 0x{ttype:016x}")
        if tsize != TABLE_HEADER_SIZE_FIELD:
            raise FormatError(f"bad TABLE header size 0x{tsize:x} (expected 0x{TABLE_HEADER_SIZE_FIELD:x})")
        return cls(fl, mn, avg, mx)


# --------------------------------------------------------------------------- writing


class IndexWriter:
    """Streams an index to ``path`` (via a temporary file renamed on :meth:`close`) or to ``fileobj``.

    ``append(chunk_id, size)`` adds one chunk; the end offsets are accumulated.  Memory use is
    constant.  Used as a context manager, an exception discards the temporary file."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        fileobj: BinaryIO | None = None,
        feature_flags: int,
        chunk_sizes: tuple[int, int, int],
        mode: int = 0o666,
    ):
        if (path is None) == (fileobj is None):
            raise ValueError("give exactly one of path and fileobj")
        mn, avg, mx = chunk_sizes
        try:
            check_chunk_sizes(mn, avg, mx)
            check_feature_flags(feature_flags)
        except FormatError as e:
            raise UsageError(str(e)) from None
        self.header = IndexHeader(feature_flags, mn, avg, mx)
        self.path = os.fspath(path) if path is not None else None
        self.offset = 0
        self.count = 0
        self._closed = False
        self._out = None
        if fileobj is not None:
            self._f = fileobj
            self._own = False
        else:
            self._out = AtomicFile(self.path, mode & 0o666, fsync=False, buffering=_WRITE_BUFFER)
            try:
                self._f = self._out.open()
            except OSError as e:
                raise PycatarError(f"cannot create index {self.path}: {e.strerror}") from None
            self._own = True
        self._f.write(self.header.pack())

    def append(self, chunk_id: bytes, size: int) -> None:
        """INDEX-6: add a chunk of ``size`` bytes (1..chunk_size_max) with id ``chunk_id``."""
        if len(chunk_id) != CHUNK_ID_SIZE:
            raise ValueError("chunk id must be 32 bytes")
        if size < 1:
            raise ValueError("empty chunk")
        if size > self.header.chunk_size_max:
            raise UsageError(
                f"chunk of {size} bytes exceeds the maximum chunk size {self.header.chunk_size_max}"
            )
        self.offset += size
        self._f.write(_ITEM.pack(self.offset, chunk_id))
        self.count += 1

    def close(self) -> None:
        """Write the tail and install the file under its final name."""
        if self._closed:
            return
        self._closed = True
        ok = False
        try:
            self._f.write(TABLE_TAIL.pack(
                0, 0, INDEX_SIZE, HEADER.size + self.count * TABLE_ITEM_SIZE + TAIL_SIZE,
                RecordType.TABLE_TAIL_MARKER,
            ))
            self._f.flush()
            if self._own:
                self._out.commit()
            ok = True
        except OSError as e:
            raise PycatarError(f"cannot write index {self.path or '<stream>'}: {e.strerror}") from None
        finally:
            if not ok:
                self._discard()

    def abort(self) -> None:
        """Drop the partial index (the final name is never touched)."""
        if self._closed:
            return
        self._closed = True
        self._discard()

    def _discard(self) -> None:
        if self._own:
            self._out.discard()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------- reading


@functools.lru_cache(maxsize=8)
def _ends_struct(n: int) -> struct.Struct:
    """Unpacks the end offsets of n table items (INDEX-3: each an end offset, then a 32-byte id)."""
    return struct.Struct("<" + "Q32x" * n)


class ChunkRef(FrozenRecord):
    """One chunk of an indexed stream: bytes [start, end) with id ``id``."""

    __slots__ = ("index", "start", "end", "id")

    def __init__(self, index: int, start: int, end: int, id: bytes) -> None:
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "id", id)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def hex(self) -> str:
        return self.id.hex()


class IndexReader:
    """A validated, random-access view of an index file.

    Opening checks the header, the tail and the file size (INDEX-7); items are checked as they
    are read (strictly increasing end offsets, no chunk larger than chunk_size_max).  Items are
    read on demand with ``pread``-style access, so memory does not grow with the index.  A
    non-seekable source (a pipe) is spooled to a temporary file first."""

    def __init__(self, source: str | os.PathLike | BinaryIO, *, name: str | None = None):
        self._own = False
        if isinstance(source, (str, bytes, os.PathLike)):
            self.name = name or os.fsdecode(source)
            try:
                f = open(source, "rb")
            except IsADirectoryError:
                raise FormatError(f"{self.name}: is a directory, not an index file") from None
            except OSError as e:
                raise PycatarError(f"cannot open index {self.name}: {e.strerror}") from None
            self._own = True
        else:
            self.name = name or getattr(source, "name", "<index>")
            f = source
        seekable = False
        try:
            seekable = f.seekable()
        except (AttributeError, OSError, ValueError):
            pass
        if not seekable:  # a pipe, also one given by name (<(cat x.caibx)): read it once, in order (INDEX-9)
            import tempfile  # only for a pipe: its import is 3-4 ms of every start (-X importtime)

            spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)
            try:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    spool.write(b)
            except OSError as e:
                spool.close()
                raise PycatarError(f"cannot read index {self.name}: {e.strerror or e}") from None
            finally:
                if self._own:
                    f.close()
            spool.seek(0)
            f = spool
            self._own = True
        self._f = f
        self._fd = None
        if seekable:  # (not the spool, whose file descriptor exists only once it is rolled over)
            try:
                self._fd = f.fileno()
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                pass
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _err(self, msg: str) -> FormatError:
        return FormatError(f"{self.name}: {msg}")

    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        self._f.seek(offset)
        return self._f.read(size)

    def _open(self) -> None:
        self._f.seek(0, os.SEEK_END)
        self.file_size = fsize = self._f.tell()
        head = self._pread(0, HEAD_SIZE)
        if len(head) < HEAD_SIZE:
            if len(head) >= 16 and HEADER.unpack_from(head)[1] != RecordType.INDEX:
                raise self._err(f"not an index file: bad INDEX type 0x{HEADER.unpack_from(head)[1]:016x}")
            raise self._err("index truncated: incomplete header")
        try:
            self.header = IndexHeader.unpack(head)
        except FormatError as e:
            raise self._err(str(e)) from None
        if fsize < MIN_FILE_SIZE:
            raise self._err("index truncated: no table tail")
        if (fsize - MIN_FILE_SIZE) % TABLE_ITEM_SIZE:
            tail = self._pread(fsize - TAIL_SIZE, TAIL_SIZE)
            if TABLE_TAIL.unpack(tail)[4] == RecordType.TABLE_TAIL_MARKER:
                raise self._err("index has trailing garbage or a partial item before the tail")
            raise self._err("index truncated or has trailing garbage (size is not header + n items + tail)")
        self.count = (fsize - MIN_FILE_SIZE) // TABLE_ITEM_SIZE
        z1, z2, index_offset, size, marker = TABLE_TAIL.unpack(self._pread(fsize - TAIL_SIZE, TAIL_SIZE))
        if marker != RecordType.TABLE_TAIL_MARKER:
            raise self._err(f"bad table tail marker 0x{marker:016x} (truncated or trailing garbage?)")
        if z1 or z2:
            raise self._err("bad table tail: non-zero fill")
        if index_offset != INDEX_SIZE:
            raise self._err(f"bad table tail: index offset {index_offset} (expected {INDEX_SIZE})")
        if size != HEADER.size + self.count * TABLE_ITEM_SIZE + TAIL_SIZE:
            raise self._err(f"bad table tail: table size {size} does not match the file size")
        if self.count:
            last_end, _ = _ITEM.unpack(self._pread(HEAD_SIZE + (self.count - 1) * TABLE_ITEM_SIZE, TABLE_ITEM_SIZE))
            self.blob_size = last_end
        else:
            self.blob_size = 0

    # -- properties
    @property
    def feature_flags(self) -> int:
        return self.header.feature_flags

    @property
    def digest(self) -> str:
        return self.header.digest

    @property
    def chunk_sizes(self) -> tuple[int, int, int]:
        return self.header.chunk_sizes

    def __len__(self) -> int:
        return self.count

    # -- items
    def _raw_items(self, first: int, n: int) -> list[tuple[int, bytes]]:
        data = self._pread(HEAD_SIZE + first * TABLE_ITEM_SIZE, n * TABLE_ITEM_SIZE)
        if len(data) != n * TABLE_ITEM_SIZE:
            raise self._err("index truncated while reading items")
        return list(_ITEM.iter_unpack(data))

    def _check_item(self, i: int, prev_end: int, end: int) -> None:
        if end <= prev_end:
            raise self._err(f"item {i}: end offset {end} not greater than the previous {prev_end}")
        if end - prev_end > self.header.chunk_size_max:
            raise self._err(
                f"item {i}: chunk of {end - prev_end} bytes exceeds chunk_size_max {self.header.chunk_size_max}"
            )

    def batches(self, first: int = 0, *, batch: int = 4096) -> Iterator[tuple[int, int, tuple, list[bytes]]]:
        """The items from number ``first`` on in checked batches (INDEX-8): (number of the batch's first
        item, end offset before it, the end offsets, the ids)."""
        if first < 0 or first > self.count:
            raise IndexError(first)
        prev = 0 if first == 0 else self._raw_items(first - 1, 1)[0][0]
        cmax = self.header.chunk_size_max
        i = first
        while i < self.count:
            n = min(batch, self.count - i)
            data = self._pread(HEAD_SIZE + i * TABLE_ITEM_SIZE, n * TABLE_ITEM_SIZE)
            if len(data) != n * TABLE_ITEM_SIZE:
                raise self._err("index truncated while reading items")
            ends = _ends_struct(n).unpack(data)
            sizes = list(map(int.__sub__, ends, (prev, *ends[:-1])))
            if min(sizes) <= 0 or max(sizes) > cmax:  # find the first bad item for the message
                p = prev
                for k, end in enumerate(ends):
                    self._check_item(i + k, p, end)
                    p = end
            yield i, prev, ends, [data[k:k + 32] for k in range(8, len(data), TABLE_ITEM_SIZE)]
            prev = ends[-1]
            i += n

    def chunks(self, first: int = 0, *, batch: int = 4096) -> Iterator[ChunkRef]:
        """The chunks from number ``first`` on, checked as they are read (INDEX-8)."""
        for i, prev, ends, ids in self.batches(first, batch=batch):
            for end, cid in zip(ends, ids):
                yield ChunkRef(i, prev, end, cid)
                prev = end
                i += 1

    def __iter__(self) -> Iterator[ChunkRef]:
        return self.chunks()

    def items(self) -> Iterator[tuple[int, bytes]]:
        """(end offset, chunk id) pairs in order."""
        for c in self.chunks():
            yield c.end, c.id

    def chunk(self, i: int) -> ChunkRef:
        """Chunk number ``i`` (checked against its predecessor)."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        if i == 0:
            end, cid = self._raw_items(0, 1)[0]
            prev = 0
        else:
            (prev, _), (end, cid) = self._raw_items(i - 1, 2)
        self._check_item(i, prev, end)
        return ChunkRef(i, prev, end, cid)

    def find(self, offset: int) -> int:
        """Number of the chunk containing stream byte ``offset`` (binary search over the items)."""
        if not 0 <= offset < self.blob_size:
            raise IndexError(offset)
        lo, hi = 0, self.count - 1
        while lo < hi:
            mid = (lo + hi) // 2
            end = _ITEM.unpack(self._pread(HEAD_SIZE + mid * TABLE_ITEM_SIZE, TABLE_ITEM_SIZE))[0]
            if end <= offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def validate(self) -> None:
        """Read and check every item (INDEX-8)."""
        for _ in self.chunks():
            pass

    def chunk_ids(self) -> Iterator[bytes]:
        for _, _, _, ids in self.batches(batch=65536):
            yield from ids

    def close(self) -> None:
        if self._own and self._f is not None:
            self._f.close()
        self._f = None

    def __enter__(self) -> "IndexReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_index(path) -> tuple[IndexHeader, list[ChunkRef]]:
    """Load and validate a whole index into memory (for small indexes and tests)."""
    with IndexReader(path) as r:
        return r.header, list(r.chunks())
