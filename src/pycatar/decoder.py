"""Reading catar streams (spec/catar.md).

:class:`CatarReader` walks a catar stream sequentially (the stream may be a pipe) and yields one
:class:`~pycatar.entry.Entry` per archived file, validating every record on the way.  On a seekable
stream it also answers random-access questions through the GOODBYE tables (:meth:`CatarReader.lookup`,
:meth:`CatarReader.iter_subtree`), reading only the directories on the way.

Everything a malformed stream can do ends as :class:`~pycatar.errors.FormatError` with a one-line
message naming the offset; memory stays bounded (payloads are streamed, never held whole).

The reader keeps the values of the archive as stored.  What the *user* asked for (casync's decoder
"mask", e.g. ``--without=user-names`` at list or extract time) only changes :attr:`CatarReader.replay_flags`:
consumers show or restore a property only when ``replay_flags`` carries it (listing.archive_view does this
exactly like casync's ``ca_decoder_current_*`` accessors).
"""

from __future__ import annotations

import os
import stat as _stat
from array import array
from collections.abc import Iterator


from . import _catar
from . import flags as _flags
from . import format as fmt
from . import validate as _validate
from .entry import ACLDefault, ACLEntry, Entry
from .errors import FormatError, UnsupportedError
from . import goodbye as _goodbye
from .goodbye import bst_layout, name_hash

__all__ = ["CatarReader", "name_hash", "bst_layout", "MAX_DEPTH", "PAYLOAD_PIECE"]

#: Pieces :meth:`CatarReader.read_payload` yields are at most this large.
PAYLOAD_PIECE = 1 << 20
#: casync keeps 64 decoder nodes (the root plus 63 levels below it); deeper archives are rejected.
MAX_DEPTH = _validate.MAX_DEPTH

_SEQ_READAHEAD = 1 << 20  # sequential iteration: large reads
# sequential iteration: children parsed in one call, at most.  A batch's objects (an Entry and five lists
# each) stay below the garbage collector's threshold of 700 allocations: iteration alone never makes it
# run (with 256 a batch, collections took a third of the time of `pycatar list`)
_BATCH = 64
_BATCH_UNMADE = 4096  # the same without entries (consume, list_text): nothing for the collector
# what _walk (and _catar.parse_children) makes of the entries: nothing (but directories and files with a
# payload, which iteration needs), every Entry, or the lines of casync's `list` (and those directories and files)
_MAKE_NONE, _MAKE_ENTRIES, _MAKE_LINES = 0, 1, 2
_RANDOM_READAHEAD = 4096  # lookups: read little beyond what is needed
# When the C parser needs more bytes it says how many, from the start of the entry (or batch) it parses
# again.  Below this, exactly those are read: a lookup without read-ahead reads no byte beyond its
# records (a mounted .caidx fetches no payload-only chunk).  From it on, twice as many each time it is
# asked again at the same place: a long entry (records spanning many reads) is parsed O(log n) times,
# not once a record
_GROW_FROM = 64 << 10

_U64_MAX = 0xFFFFFFFFFFFFFFFF
_T = fmt.RecordType
_USER = _T.USER
_GROUP = _T.GROUP
_XATTR = _T.XATTR
_ACL_USER = _T.ACL_USER
_ACL_GROUP = _T.ACL_GROUP
_ACL_GROUP_OBJ = _T.ACL_GROUP_OBJ
_ACL_DEFAULT = _T.ACL_DEFAULT
_ACL_DEFAULT_USER = _T.ACL_DEFAULT_USER
_ACL_DEFAULT_GROUP = _T.ACL_DEFAULT_GROUP
_FCAPS = _T.FCAPS
_QUOTA_PROJID = _T.QUOTA_PROJID
_SELINUX = _T.SELINUX
_SYMLINK = _T.SYMLINK
_DEVICE = _T.DEVICE
_GOODBYE = _T.GOODBYE
_TAIL_MARKER = _T.GOODBYE_TAIL_MARKER



_I = _flags.Flag

_HDR = fmt.HEADER_SIZE
_ITEM = fmt.GOODBYE_ITEM_SIZE
_GOODBYE_MIN = _HDR + _ITEM  # header plus tail, no items
_ACL_FIXED = fmt.ACL_ENTRY_FIXED_SIZE
_ITEMS = fmt.GOODBYE_ITEM  # struct of one GOODBYE item
_HEADER_AT = fmt.HEADER.unpack_from
_ENTRY_UNPACK_FROM = fmt.ENTRY.unpack_from
_ENTRY_SIZE = fmt.ENTRY_SIZE
_IFMT = 0o170000
_IFREG, _IFDIR = _stat.S_IFREG, _stat.S_IFDIR

_WITH_ANY = _flags.WITH_MASK
_ENTRY_FLAG_BITS = _flags.WITH_FAT_ATTRS | _flags.WITH_CHATTR | _I.WITH_SUBVOLUME | _I.WITH_SUBVOLUME_RO


class _Source:
    """A cursor over the stream with its own read buffer.

    The buffer is what one read of the file gave (or, for a record spanning reads, those joined): a
    stream that offers ``readview(n)`` (blob.IndexStream: a view of a verified chunk) is read
    without copying, and payloads are handed on as views of the buffer.  Several cursors may share
    one seekable file object: each one seeks to its own position before reading.  ``tap``, when set,
    receives every byte the cursor consumes, in stream order."""

    __slots__ = ("f", "seekable", "buf", "bpos", "pos", "readahead", "tap", "_size", "_read")

    def __init__(self, f, seekable: bool, pos: int = 0, readahead: int = _SEQ_READAHEAD):
        self.f = f
        self.seekable = seekable
        self.buf = b""  # bytes or a memoryview
        self.bpos = 0
        self.pos = pos  # stream offset of buf[bpos]
        self.readahead = readahead
        self.tap = None
        self._size: int | None = None
        self._read = getattr(f, "readview", None) or f.read

    # -- low level

    def size(self) -> int | None:
        if not self.seekable:
            return None
        if self._size is None:
            self._size = self.f.seek(0, os.SEEK_END)
        return self._size

    def _raw_read(self, n: int):
        """Up to n bytes after the end of the buffer (maybe fewer; empty only at the end)."""
        return self._read_after(n, len(self.buf) - self.bpos)

    def _read_after(self, n: int, skip: int):
        """Up to n bytes from ``skip`` bytes after the cursor on (maybe fewer; empty only at the end)."""
        if self.seekable:
            self.f.seek(self.pos + skip)
        return self._read(n) or b""

    def avail(self) -> int:
        return len(self.buf) - self.bpos

    def fill(self, n: int) -> int:
        """Make at least n bytes available if the stream has them; returns what is available."""
        have = len(self.buf) - self.bpos
        if have >= n:
            return have
        if not have:
            self.buf, self.bpos = self._raw_read(max(n, self.readahead)), 0
            have = len(self.buf)
            if have >= n or not have:
                return have
        # a record spanning reads: join what it needs (only that much is copied)
        self.buf, self.bpos = self._joined(memoryview(self.buf)[self.bpos:], n), 0
        return len(self.buf)

    def _joined(self, head: memoryview, n: int) -> bytes:
        """``head`` (the bytes at the cursor) and the reads after it, n bytes in all (fewer only at the
        end), joined: their one copy."""
        parts = [head]
        have = len(head)
        while have < n:
            data = self._read_after(n - have, have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def peek(self, n: int) -> bytes:
        b = self.bpos
        if len(self.buf) - b < n:
            self.fill(n)
            b = self.bpos
        return bytes(self.buf[b:b + n])

    def header(self) -> tuple[int, int] | None:
        """The (size, type) of the record header at the cursor, not consumed; None at the end."""
        b = self.bpos
        if len(self.buf) - b < _HDR:
            if self.fill(_HDR) < _HDR:
                return None
            b = self.bpos
        return _HEADER_AT(self.buf, b)

    def read(self, n: int, what: str = "record") -> bytes:
        b = self.bpos
        if len(self.buf) - b < n:
            if self.fill(n) < n:
                raise FormatError(
                    f"archive truncated: {what} at offset {self.pos} needs {n} bytes, only {self.avail()} left"
                )
            b = self.bpos
        data = self.buf[b:b + n]
        if type(data) is not bytes:
            data = data.tobytes()
        self.bpos = b + n
        self.pos += n
        if self.tap is not None:
            self.tap(data)
        return data

    def skip(self, n: int, what: str = "payload") -> None:
        have = self.avail()
        if n <= have:
            if self.tap is not None:
                self.tap(self.buf[self.bpos:self.bpos + n])
            self.bpos += n
            self.pos += n
            return
        if self.seekable and self.tap is None:
            end = self.pos + n
            size = self.size()
            if end > size:
                raise FormatError(f"archive truncated: {what} at offset {self.pos} runs past the end ({size})")
            self.buf, self.bpos, self.pos = b"", 0, end
            return
        for piece in self.stream(n, what):
            pass

    def stream(self, n: int, what: str = "payload"):
        """Consume n bytes, yielding them as read-only views of the buffer, read by read, in pieces of
        at most PAYLOAD_PIECE: no byte is copied (a view keeps its read, a chunk or ``readahead``,
        alive while it is held; the payload writer takes pieces of any size and alignment).  Those
        who keep pieces (the extractor's batches) keep those of consecutive files: together they
        hold the stretch of the stream they cover and at most one read beyond it."""
        start = self.pos
        while n > 0:
            buf, b = self.buf, self.bpos
            have = len(buf) - b
            if not have:  # the next read: no less than the readahead, up to a piece (never joined)
                self.buf, self.bpos = self._raw_read(max(min(n, PAYLOAD_PIECE), self.readahead)), 0
                have = len(self.buf)
                if not have:
                    raise FormatError(f"archive truncated: {what} starting at offset {start} ends early "
                                      f"at offset {self.pos}")
                buf, b = self.buf, self.bpos
            k = min(n, have, PAYLOAD_PIECE)
            data = (buf if type(buf) is memoryview else memoryview(buf))[b:b + k]
            if b + k == len(buf):
                self.buf, self.bpos = b"", 0  # the views keep it as long as they need it
            else:
                self.bpos = b + k
            self.pos += k
            n -= k
            if self.tap is not None:
                self.tap(data)
            yield data

    def seek(self, pos: int) -> None:
        if pos == self.pos:
            return
        if not self.seekable:
            raise UnsupportedError("random access needs a seekable archive")
        buf_start = self.pos - self.bpos
        if buf_start <= pos <= buf_start + len(self.buf):
            self.bpos = pos - buf_start  # still inside the buffer
            self.pos = pos
            return
        self.buf, self.bpos, self.pos = b"", 0, pos

    def at_eof(self) -> bool:
        if self.avail():
            return False
        if self.seekable:
            return self.pos >= self.size()
        return self.fill(1) == 0


class _Frame:
    """An open directory during iteration.  Its children tile it (each child's extent ends where the
    next FILENAME record, or the GOODBYE record, starts), so their FILENAME offsets and name hashes
    are all the GOODBYE check needs: two compact arrays, 16 bytes a child (CATAR-43)."""

    __slots__ = ("prefix", "entry_offset", "starts", "hashes", "last_name", "depth")

    def __init__(self, path: str, entry_offset: int, depth: int):
        self.prefix = f"{path}/" if path else ""  # of the children's paths
        self.entry_offset = entry_offset
        self.starts = array("Q")  # offsets of the children's FILENAME records, increasing
        self.hashes = array("Q")  # their names' goodbye hashes
        self.last_name: bytes | None = None
        self.depth = depth


def _declared_feature_flags(f) -> int | None:
    """The feature flags a container declares for the stream ``f``: a .caidx header (the stream of an
    index, blob.IndexStream, carries its IndexReader as ``reader``) -- the archive's MUST equal them
    (index.md INDEX-10)."""
    header = getattr(getattr(f, "reader", None), "header", None)
    ff = getattr(header, "feature_flags", None)
    # a .caibx (a blob index: no WITH_* bits, INDEX-4) declares nothing about a catar stored as a blob
    return ff if isinstance(ff, int) and ff & _WITH_ANY else None


def _seekable(f) -> bool:
    try:
        if not f.seekable():
            return False
        f.tell()
        return True
    except (AttributeError, OSError, ValueError):
        return False


class CatarReader:
    """Read a catar stream.

    ``feature_mask``: the feature flags the user asked for (casync's decoder mask, e.g. everything but
    ``--without=…``); ``None`` means everything.  It is widened with :func:`flags.normalize_mask` and only
    affects :attr:`replay_flags`.

    ``strict_casync``: reject, like casync 2 does, three kinds of archives that casync's own encoder writes
    but its decoder refuses (usec-time mtimes that are not multiples of a millisecond; user-names without
    uids and a file owned by root, i.e. without USER/GROUP records; numeric user names).  Off by default:
    pycatar reads what casync writes (spec/catar.md, CATAR-24).

    ``lookup_readahead``: how far beyond what it needs a lookup or listing reads (0: nothing more, for
    a stream where reading further may fetch a chunk, as a mounted ``.caidx``)."""

    def __init__(self, fileobj, *, feature_mask: int | None = None, strict_casync: bool = False,
                 lookup_readahead: int = _RANDOM_READAHEAD):
        self._seekable = _seekable(fileobj)  # a seekable archive starts at offset 0 of the file
        self._lookup_readahead = lookup_readahead
        self._src = _Source(fileobj, self._seekable, 0)
        self._mask = _U64_MAX if feature_mask is None else _flags.normalize_mask(feature_mask)
        self._strict = strict_casync
        self._declared = _declared_feature_flags(fileobj)
        self.feature_flags: int | None = None
        self._checked: set = set()  # ENTRY (mode, flags) pairs and ids found valid (feature flags are fixed)
        self.replay_flags: int | None = None
        self._root: Entry | None = None
        self._root_children = 0  # offset of the root's first FILENAME (or GOODBYE) record
        self._tiled: set[int] = set()  # directories whose GOODBYE items were found to tile them (CATAR-61)
        # the regular file just yielded: its cursor and how much payload is left unread
        self._payload_src: _Source | None = None
        self._payload_left = 0
        self._inline = None  # or its payload, when parsed with it (a view of the buffer)
        # the entry just yielded or parsed, and the buffer it was parsed from with the stream offset of
        # its first byte (entry_bytes)
        self._current: Entry | None = None
        self._entries_at: tuple = (b"", 0, None)  # and the extent end it was parsed with
        #: if set, called with every byte sequential iteration (``iter``, :meth:`iter_subtree`) consumes,
        #: in stream order, payloads included (they are then read rather than skipped)
        self.tap = None

    # ------------------------------------------------------------------ public API

    @property
    def seekable(self) -> bool:
        """Whether random access (:meth:`lookup`, :meth:`iter_subtree`) is possible."""
        return self._seekable

    def __iter__(self) -> Iterator[Entry]:
        return self._walk(self._src, 0, "", whole=True)

    def read_payload(self) -> Iterator[bytes]:
        """The payload of the regular file just yielded, in pieces of at most 1 MiB.  Call it before
        advancing the iterator; what is not consumed is skipped when iteration continues."""
        piece = self._inline  # a payload parsed with its entry: already consumed, a view of the buffer
        if piece is not None:
            self._inline = None
            return iter((piece,))
        return self._stream_payload()

    def _stream_payload(self) -> Iterator[bytes]:
        src = self._payload_src
        if src is None or self._payload_left <= 0:
            return
        for piece in src.stream(self._payload_left):
            self._payload_left -= len(piece)
            yield piece

    def lookup(self, path: str) -> Entry | None:
        """The entry at ``path`` (components separated by "/"), found through the GOODBYE tables, or
        None.  Reads only the GOODBYE tables and entries of the directories on the way."""
        src = self._random_source()
        entry, end = self._read_root(src), src.size()
        for comp in (c for c in path.split("/") if c):
            found = self._child(src, entry, end, os.fsencode(comp))
            if found is None:
                return None
            entry, end = found
        return entry

    def root(self) -> tuple[Entry, int]:
        """The root directory's entry and the end of its extent (the stream size).  Needs a seekable
        stream."""
        src = self._random_source()
        return self._read_root(src), src.size()

    def child(self, directory: Entry, end: int, name: bytes) -> tuple[Entry, int] | None:
        """The child ``name`` of ``directory`` (an entry from :meth:`root`, :meth:`child` or
        :meth:`children`, whose extent ends at ``end``) and the end of its extent, or None when there is
        none.  Reads the GOODBYE items a search visits and the entry found (CATAR-45)."""
        return self._child(self._random_source(), directory, end, name)

    def _child(self, src: _Source, directory: Entry, end: int, name: bytes) -> tuple[Entry, int] | None:
        if not directory.isdir() or not name or b"\0" in name or b"/" in name:
            return None
        dir_start = directory.offset
        goodbye_start, n_items = self._locate_goodbye(src, dir_start, end)
        if dir_start not in self._tiled:  # CATAR-61: an item found must be a child, not a grandchild
            self._check_tiling(src, dir_start, self._root_children if dir_start == 0 else None, goodbye_start,
                               n_items)
            self._tiled.add(dir_start)
        depth = directory.path.count("/") + 2 if directory.path else 1
        if depth > MAX_DEPTH:
            raise FormatError(f"archive nests deeper than {MAX_DEPTH} directories below offset {dir_start}")
        for offset, item_size in self._search(src, goodbye_start, n_items, name_hash(name)):
            start, item_end = self._item_extent(dir_start, goodbye_start, offset, item_size)
            src.seek(start)
            if self._read_filename(src, item_end) != name:
                continue  # a hash collision: try the next item with this hash
            return self._parse_child(src, directory, name, start, item_end), item_end
        return None

    def children(self, directory: Entry, end: int) -> list[tuple[Entry, int]]:
        """Every child of ``directory`` (as for :meth:`child`) with the end of its extent, in archive
        order.  Reads the directory's GOODBYE record and its children's entries, never their payloads
        or what lies below them (CATAR-46)."""
        if not directory.isdir():
            return []
        src = self._random_source()
        dir_start = directory.offset
        goodbye_start, n_items = self._locate_goodbye(src, dir_start, end)
        src.seek(goodbye_start + _HDR)
        table = src.read(n_items * _ITEM, "GOODBYE items")
        items = sorted(self._item_extent(dir_start, goodbye_start, offset, size) + (h,)
                       for offset, size, h in fmt.GOODBYE_ITEM.iter_unpack(table))
        out: list[tuple[Entry, int]] = []
        prev_end, prev_name = dir_start + fmt.ENTRY_SIZE, None
        for start, item_end, h in items:
            if start < prev_end:
                raise FormatError(f"GOODBYE items of the directory at offset {dir_start} overlap")
            src.seek(start)
            name = self._read_filename(src, item_end)
            if prev_name is not None and name <= prev_name:
                raise FormatError(f"file name at offset {start} is duplicate or out of order in its directory")
            if name_hash(name) != h:
                raise FormatError(f"GOODBYE item of the file name at offset {start} has the wrong hash")
            out.append((self._parse_child(src, directory, name, start, item_end), item_end))
            prev_end, prev_name = item_end, name
        return out

    @staticmethod
    def _item_extent(dir_start: int, goodbye_start: int, offset: int, size: int) -> tuple[int, int]:
        start = goodbye_start - offset
        end = start + size
        if offset > goodbye_start - dir_start or start < dir_start + fmt.ENTRY_SIZE or end > goodbye_start:
            raise FormatError(f"GOODBYE item of the directory at offset {dir_start} points outside it")
        return start, end

    def _parse_child(self, src: _Source, directory: Entry, name: bytes, start: int, end: int) -> Entry:
        depth = directory.path.count("/") + 2 if directory.path else 1
        if depth > MAX_DEPTH:
            raise FormatError(f"archive nests deeper than {MAX_DEPTH} directories at offset {start}")
        comp = os.fsdecode(name)
        child = self._parse_entry(src, f"{directory.path}/{comp}" if directory.path else comp,
                                  at_root=False, end=end)
        self._check_entry_end(src, child, end)
        return child

    def iter_subtree(self, entry: Entry) -> Iterator[Entry]:
        """``entry`` (as found by :meth:`lookup`) and then everything below it, in archive order, with
        paths relative to the archive root.  Needs a seekable stream."""
        if entry.offset is None:
            raise ValueError("entry has no archive offset")
        self._read_root(self._random_source())  # the archive's feature flags
        return self._walk(self._random_source(_SEQ_READAHEAD), entry.offset, entry.path, whole=False)

    # ------------------------------------------------------------------ iteration

    def consume(self, entry: Entry | None = None) -> None:
        """Read the whole archive (or ``entry``, found by :meth:`lookup`, and everything below it) as
        iteration does -- every record checked, every byte passed to :attr:`tap` -- without making an
        Entry for each file (``casync digest``)."""
        for _ in self._sequential(entry, _MAKE_NONE):  # only directories and files with a payload come out
            pass

    def list_text(self, entry: Entry | None = None) -> Iterator[str]:
        """The standard output of ``casync list`` for the whole archive (or for ``entry``, found by
        :meth:`lookup`, and everything below it), in pieces: a line per entry, its mode as ``ls -l``
        shows it and its path (escaped as in mtree files; the root is "."), made by the C parser
        as it reads the records -- every record checked as in iteration, no Entry made for a file.
        The lines of the entries before a malformed record come out before its FormatError."""
        return self._sequential(entry, _MAKE_LINES)

    def _sequential(self, entry: Entry | None, make: int) -> Iterator:
        if entry is None:
            return self._walk(self._src, 0, "", whole=True, make=make)
        if entry.offset is None:
            raise ValueError("entry has no archive offset")
        self._read_root(self._random_source())  # the archive's feature flags
        return self._walk(self._random_source(_SEQ_READAHEAD), entry.offset, entry.path, whole=False, make=make)

    def _walk(self, src: _Source, start: int, path: str, whole: bool, make: int = _MAKE_ENTRIES) -> Iterator:
        """Entries (make: _MAKE_ENTRIES), directories and files with a payload (_MAKE_NONE), or pieces of
        casync's list text (_MAKE_LINES), in archive order."""
        src.tap = self.tap
        lines = make == _MAKE_LINES
        try:
            src.seek(start)
            if whole and src.at_eof():
                raise FormatError("archive is empty")
            stack: list[_Frame] = []
            entry = self._parse_entry(src, path, at_root=whole)
            if lines:
                yield _list_line(entry.mode, entry.path)
            af, strict = self.feature_flags, self._strict
            limit = src.size() if src.seekable else None
            hasher = None if name_hash is _goodbye.name_hash else name_hash  # tests substitute a weak hash
            batch: list[Entry] = []
            inline: list | None = None
            depth = path.count("/") + 1 if path else 0
            max_n = _BATCH if make == _MAKE_ENTRIES else _BATCH_UNMADE
            payload_max = PAYLOAD_PIECE if make == _MAKE_ENTRIES else 0
            while True:
                # the entries of a batch but the last are neither directories nor files with a payload
                # still to read (a payload the buffer held whole came with its entry: ``inline``)
                if inline is None:
                    for e in batch:
                        self._current = e
                        yield e
                else:
                    for e, self._inline in zip(batch, inline):
                        self._current = e
                        yield e
                    self._inline = inline.pop() if entry is not None else None
                if entry is not None:
                    ftype = entry.mode & _IFMT
                    self._current = entry
                    if self._inline is not None:
                        yield entry
                        self._inline = None
                    elif ftype == _IFREG and entry.size:
                        if not lines:
                            self._payload_src = src
                            self._payload_left = entry.size
                            yield entry
                            # each iterator skips what is left of its own payload (its cursor: src)
                            if self._payload_src is src:
                                self._payload_src = None
                                self._payload_left = 0
                        left = entry.payload_offset + entry.size - src.pos
                        if left:
                            src.skip(left)
                    elif not lines:
                        yield entry
                    if ftype == _IFDIR:
                        stack.append(_Frame(entry.path, entry.offset, depth))
                    elif not stack:
                        return  # a non-directory subtree is complete
                # Records at directory level: FILENAME records and the children's entries, or GOODBYE (the
                # directory ends): as many children as the buffer holds, up to a directory or a payload.
                frame = stack[-1]
                eof, want = False, 0
                while True:
                    r = _parse_children(src.buf, src.bpos, src.pos, eof, frame.last_name, frame.depth + 1,
                                        frame.entry_offset, frame.prefix, limit, af, strict, hasher, max_n, make,
                                        payload_max)
                    if type(r) is tuple:
                        break
                    if r is False:  # the directory's GOODBYE record
                        self._read_goodbye(src, frame)
                        stack.pop()
                        if stack:
                            frame = stack[-1]
                            eof, want = False, 0
                            continue
                        if whole and not src.at_eof():
                            raise FormatError(f"trailing data after the end of the archive at offset {src.pos}")
                        return
                    want = r if r < _GROW_FROM else max(r, 2 * want)  # see _parse_entry
                    eof = src.fill(want) < want
                batch, consumed, frame.last_name, starts, hashes, text, inline = r
                frame.starts.frombytes(starts)
                frame.hashes.frombytes(hashes)
                buf, b = src.buf, src.bpos
                src.bpos = b + consumed
                src.pos += consumed
                self._entries_at = (buf, src.pos - b - consumed, None)
                if src.tap is not None:
                    src.tap(memoryview(buf)[b:b + consumed])
                # (not making entries: None when no directory or payload ended the batch)
                entry = batch.pop() if batch else None
                depth = frame.depth + 1
                if lines:
                    yield text  # every child's line, the directory's or payload's that ended the batch too
        finally:
            src.tap = None
            self._inline = None
            if self._payload_src is src:
                self._payload_src = None
                self._payload_left = 0

    # ------------------------------------------------------------------ records

    def _read_filename(self, src: _Source, end: int | None) -> bytes:
        off = src.pos
        eof, want = False, 0
        while True:
            r = _parse_filename(src.buf, src.bpos, off, eof, end)
            if type(r) is bytes:
                break
            want = r if r < _GROW_FROM else max(r, 2 * want)  # see _parse_entry
            eof = src.fill(want) < want
        src.read(len(r) + _HDR + 1)
        return r

    def _read_goodbye(self, src: _Source, frame: _Frame) -> None:
        """Read a directory's GOODBYE record and check it against what iteration saw (CATAR-43): one item
        per child, each giving that child's extent and name hash, laid out as the search tree of the
        items sorted by hash (_catar.check_goodbye)."""
        start = src.pos
        size, _ = fmt.HEADER.unpack(src.peek(_HDR))
        starts = frame.starts
        n = len(starts)
        expected = _HDR + _ITEM * (n + 1)
        if size != expected:
            raise FormatError(
                f"GOODBYE record at offset {start} has size {size}, expected {expected} for {n} entries"
            )
        data = src.read(size, "GOODBYE record")
        if n:
            starts.append(start)  # the last child ends where the GOODBYE record starts
        _check_goodbye(data, start, frame.entry_offset, starts, frame.hashes)

    def _locate_goodbye(self, src: _Source, dir_start: int, dir_end: int) -> tuple[int, int]:
        """Find a directory's GOODBYE record from the end of the directory (its tail comes last);
        returns the record's offset and its number of items."""
        if dir_end - dir_start < fmt.ENTRY_SIZE + _GOODBYE_MIN:
            raise FormatError(f"directory at offset {dir_start} is too short to hold a GOODBYE record")
        src.seek(dir_end - _ITEM)
        entry_offset, size, marker = fmt.GOODBYE_TAIL.unpack(src.read(_ITEM, "GOODBYE tail"))
        if marker != _TAIL_MARKER:
            raise FormatError(f"no GOODBYE tail marker before offset {dir_end}")
        room = dir_end - dir_start - fmt.ENTRY_SIZE - _GOODBYE_MIN
        n = (size - _GOODBYE_MIN) // _ITEM if size >= _GOODBYE_MIN else -1
        # every item stands for a FILENAME and an ENTRY record, at least 82 bytes
        if n < 0 or (size - _GOODBYE_MIN) % _ITEM or n * (_ITEM + _HDR + 2 + fmt.ENTRY_SIZE) > room:
            raise FormatError(f"GOODBYE tail before offset {dir_end} has invalid size {size}")
        goodbye_start = dir_end - size
        if entry_offset != goodbye_start - dir_start:
            raise FormatError(f"GOODBYE tail before offset {dir_end} does not point to its directory")
        src.seek(goodbye_start)
        hsize, htype = fmt.HEADER.unpack(src.read(_HDR, "GOODBYE header"))
        if htype != _GOODBYE or hsize != size:
            raise FormatError(f"GOODBYE record at offset {goodbye_start} has a bad header")
        return goodbye_start, n

    @staticmethod
    def _check_tiling(src: _Source, dir_start: int, children: int | None, goodbye_start: int, n: int) -> None:
        """CATAR-61: the extents of a directory's GOODBYE items, in offset order, follow each other
        without gap or overlap from its first FILENAME record to its GOODBYE record; so an item found
        by a lookup is a child of this directory, not an entry further down (a phantom sub-path)."""
        src.seek(goodbye_start + _HDR)
        table = src.read(n * _ITEM, "GOODBYE items")
        # one int an item (start << 64 | size; both < 2**64), sorted: a third of the memory of tuples
        extents = sorted([(goodbye_start - offset) << 64 | size for offset, size, _ in _ITEMS.iter_unpack(table)])
        del table
        pos = children if children is not None else (extents[0] >> 64 if extents else goodbye_start)
        for packed in extents:
            start, size = packed >> 64, packed & _U64_MAX
            if start != pos or size == 0:
                raise FormatError(f"GOODBYE items of the directory at offset {dir_start} do not tile its "
                                  f"children (an item at offset {start}, expected {pos})")
            pos = start + size
        if pos != goodbye_start:
            raise FormatError(f"GOODBYE items of the directory at offset {dir_start} do not tile its "
                              f"children (they end at offset {pos}, its GOODBYE record is at {goodbye_start})")

    @staticmethod
    def _search(src: _Source, goodbye_start: int, n: int, h: int) -> Iterator[tuple[int, int]]:
        """Every (offset, size) with hash h, in the order a search of the BST array meets them (the
        left subtree before the right one when a node's hash equals h).  Reads only the items visited."""
        todo = [0]
        while todo:
            i = todo.pop()
            if i >= n:
                continue
            src.seek(goodbye_start + _HDR + i * _ITEM)
            offset, size, p = fmt.GOODBYE_ITEM.unpack(src.read(_ITEM, "GOODBYE item"))
            if p == h:
                yield offset, size
            if h >= p:
                todo.append(2 * i + 2)
            if h <= p:
                todo.append(2 * i + 1)

    def _random_source(self, readahead: int | None = None) -> _Source:
        if not self._seekable:
            raise UnsupportedError("random access (lookup, subtrees) needs a seekable archive")
        if readahead is None:
            readahead = self._lookup_readahead
        s = _Source(self._src.f, True, 0, readahead)
        s._size = self._src._size
        return s

    def _read_root(self, src: _Source) -> Entry:
        if self._root is None:
            src.seek(0)
            if src.at_eof():
                raise FormatError("archive is empty")
            root = self._parse_entry(src, "", at_root=True)
            self._root_children = src.pos
            self._check_root_end(src, root)
            self._root = root
        return self._root

    def _check_root_end(self, src: _Source, root: Entry) -> None:
        # The top-level GOODBYE tail must lead back to offset 0 (CATAR-44).
        size = src.size()
        save = src.pos
        src.seek(size - _ITEM if size >= _ITEM else 0)
        tail = src.peek(_ITEM)
        src.seek(save)
        if len(tail) < _ITEM:
            raise FormatError("archive truncated: no GOODBYE tail at the end")
        entry_offset, gsize, marker = fmt.GOODBYE_TAIL.unpack(tail)
        if marker != _TAIL_MARKER or entry_offset + gsize != size:
            raise FormatError("the archive does not end with the top-level directory's GOODBYE record")

    @staticmethod
    def _check_entry_end(src: _Source, entry: Entry, end: int) -> None:
        if entry.isdir():
            return
        stop = entry.payload_offset + entry.size if entry.isreg() else src.pos
        if stop != end:
            raise FormatError(f"entry at offset {entry.offset} does not end where its GOODBYE item says ({end})")

    # ------------------------------------------------------------------ one entry

    def _parse_entry(self, src: _Source, path: str, *, at_root: bool, end: int | None = None) -> Entry:
        """Parse ENTRY and its follow-up records (CATAR-10..CATAR-31: _catar.parse_entry does it all).
        Leaves the cursor behind the PAYLOAD header, SYMLINK or DEVICE record, or before the
        FILENAME/GOODBYE record that follows."""
        off0 = src.pos
        limit = src.size() if src.seekable else None
        eof, want = False, 0
        while True:
            buf, b = src.buf, src.bpos
            r = _parse_entry(buf, b, off0, eof, end, limit, self.feature_flags, at_root, self._strict, path)
            if type(r) is tuple:
                break
            if r is None:  # the first ENTRY: its feature flags are the archive's
                self._check_feature_flags(_ENTRY_UNPACK_FROM(buf, b)[2], off0)
                continue
            # the records need r bytes: exactly those are read (see _GROW_FROM)
            want = r if r < _GROW_FROM else max(r, 2 * want)
            eof = src.fill(want) < want
        entry, consumed = r
        src.bpos = b + consumed
        src.pos = off0 + consumed
        self._entries_at = (buf, off0 - b, end)
        self._current = entry
        if src.tap is not None:
            src.tap(memoryview(buf)[b:b + consumed])
        return entry

    @property
    def entry_bytes(self) -> bytes:
        """Raw bytes of the records of the entry just yielded or parsed (ENTRY up to and including the
        PAYLOAD header, SYMLINK or DEVICE record): what casync's hardlink digest covers before the payload.
        They are still in the buffer the entry was parsed from; parsing them again gives their length."""
        entry = self._current
        if entry is None:
            return b""
        buf, base, end = self._entries_at
        b = entry.offset - base
        r = _parse_entry(buf, b, entry.offset, True, end, None, self.feature_flags, False, self._strict, entry.path)
        return bytes(buf[b:b + r[1]])

    # ------------------------------------------------------------------ field checks

    def _check_feature_flags(self, ff: int, off: int) -> None:
        """The first ENTRY's feature flags become the archive's (every later ENTRY must repeat them:
        _catar.parse_entry checks that)."""
        if ff == _U64_MAX or ff & ~_flags.FLAGS_MAX:
            raise FormatError(f"archive uses unsupported feature flags 0x{ff:x} (ENTRY at offset {off})")
        if ff & _I.SHA512_256 and ff & _I.DIGEST_BLAKE3:
            raise FormatError(f"feature flags 0x{ff:x} select two digests (ENTRY at offset {off})")
        if not _flags.is_normalized(ff):
            raise FormatError(f"feature flags 0x{ff:x} of the ENTRY at offset {off} are not normalized")
        if self._declared is not None and ff != self._declared:
            raise FormatError(f"ENTRY at offset {off} has feature flags 0x{ff:x}, the index header declares "
                              f"0x{self._declared:x}")
        self.feature_flags = ff
        replay = _flags.normalize_mask(ff) & self._mask
        self.replay_flags = _flags.normalize(replay & _flags.FLAGS_MAX)


# record type -> (size limit, size is fixed)
_LIMITS = {
    _USER: (fmt.USER_SIZE_MAX, False),
    _GROUP: (fmt.GROUP_SIZE_MAX, False),
    _XATTR: (fmt.XATTR_SIZE_MAX, False),
    _ACL_USER: (fmt.ACL_USER_SIZE_MAX, False),
    _ACL_DEFAULT_USER: (fmt.ACL_USER_SIZE_MAX, False),
    _ACL_GROUP: (fmt.ACL_GROUP_SIZE_MAX, False),
    _ACL_DEFAULT_GROUP: (fmt.ACL_GROUP_SIZE_MAX, False),
    _ACL_GROUP_OBJ: (fmt.ACLGroupObj.sizeof(), True),
    _ACL_DEFAULT: (fmt.ACLDefault.sizeof(), True),
    _SELINUX: (fmt.SELINUX_SIZE_MAX, False),
    _FCAPS: (fmt.FCAPS_SIZE_MAX, False),
    _QUOTA_PROJID: (fmt.QuotaProjID.sizeof(), True),
    _SYMLINK: (fmt.SYMLINK_SIZE_MAX, False),
    _DEVICE: (fmt.Device.sizeof(), True),
}

# metadata records in the order CATAR-11 prescribes
_RANK = {t: i for i, t in enumerate((
    _USER, _GROUP, _XATTR, _ACL_USER, _ACL_GROUP, _ACL_GROUP_OBJ, _ACL_DEFAULT, _ACL_DEFAULT_USER,
    _ACL_DEFAULT_GROUP, _SELINUX, _FCAPS, _QUOTA_PROJID), 1)}
_REPEATABLE = frozenset((_XATTR, _ACL_USER, _ACL_GROUP, _ACL_DEFAULT_USER, _ACL_DEFAULT_GROUP))

# file type -> feature flag it needs (0: always allowed)
_MODE_FEATURE = {
    _stat.S_IFREG: 0,
    _stat.S_IFDIR: 0,
    _stat.S_IFLNK: _I.WITH_SYMLINKS,
    _stat.S_IFBLK: _I.WITH_DEVICE_NODES,
    _stat.S_IFCHR: _I.WITH_DEVICE_NODES,
    _stat.S_IFIFO: _I.WITH_FIFOS,
    _stat.S_IFSOCK: _I.WITH_SOCKETS,
}


def c_constants() -> dict:
    """What the C parser (pycatar._catar, which holds no format knowledge of its own) is configured
    with: record types and names, field offsets, sizes and limits, feature flag bits, the record order
    rules, the Entry class -- all from format.py, flags.py, validate.py and entry.py.  (The predicates'
    own bits and bounds come from validate.py, which configures them at its import.)"""
    constants: dict = dict(fmt.RECORD_TYPES)
    for name, decl in (("Header", fmt.Header), ("Entry", fmt.Entry), ("ACLUser", fmt.ACLUser),
                       ("ACLGroupObj", fmt.ACLGroupObj), ("ACLDefault", fmt.ACLDefault),
                       ("QuotaProjID", fmt.QuotaProjID), ("Device", fmt.Device), ("GoodbyeItem", fmt.GoodbyeItem),
                       ("GoodbyeTail", fmt.GoodbyeTail)):
        constants.update((f"{name}.{field}", o) for field, o in fmt.offsets(decl).items())
    if list(fmt.offsets(fmt.ACLGroup).values()) != list(fmt.offsets(fmt.ACLUser).values()):
        raise ImportError("the C parser reads ACL_GROUP records with ACL_USER's layout")  # one layout for both
    constants.update((name, int(getattr(_I, name))) for name in (
        "WITH_USER_NAMES", "WITH_READ_ONLY", "WITH_PERMISSIONS", "WITH_SYMLINKS", "WITH_DEVICE_NODES",
        "WITH_SUBVOLUME", "WITH_XATTRS", "WITH_ACL", "WITH_SELINUX", "WITH_FCAPS", "WITH_QUOTA_PROJID"))
    if hasattr(Entry, "__post_init__"):
        raise ImportError("the C parser fills an Entry's slots directly: Entry.__init__ must only store them")
    constants.update(
        entry=Entry, entry_fields=list(Entry.__slots__),
        error=FormatError, hash_key=fmt.GOODBYE_HASH_KEY, max_depth=MAX_DEPTH, acl_entry=ACLEntry,
        acl_default=ACLDefault,
        header_size=_HDR, entry_size=_ENTRY_SIZE, acl_fixed=_ACL_FIXED, filename_max=fmt.FILENAME_SIZE_MAX,
        selinux_max=fmt.SELINUX_SIZE_MAX, symlink_max=fmt.SYMLINK_SIZE_MAX, item_size=_ITEM,
        xattr_names_max=_validate.XATTR_NAMES_MAX, xattr_bytes_max=_validate.XATTR_BYTES_MAX,
        acl_named_max=_validate.ACL_NAMED_MAX, acl_unset=fmt.ACL_PERMISSION_UNSET, entry_flag_bits=_ENTRY_FLAG_BITS,
        kinds=[(t, name, *_LIMITS.get(t, (0, False)), _RANK.get(t, 0), t in _REPEATABLE)
               for name, t in fmt.RECORD_TYPES.items()],
        file_types=list(_MODE_FEATURE.items()),
    )
    return constants


_catar.configure(c_constants())
_parse_entry = _catar.parse_entry
_parse_filename = _catar.parse_filename
_parse_children = _catar.parse_children
_check_goodbye = _catar.check_goodbye
_list_line = _catar.list_line
