"""The public library API, shaped like :mod:`tarfile`: :func:`open` a ``.catar`` (or a ``.caidx`` with its
chunk store, local or remote) to read or write it, :func:`is_catar`.

>>> import pycatar
>>> with pycatar.open("tree.catar", "w") as ar:          # doctest: +SKIP
...     ar.add("tree", arcname=".")                     # the tree is the archive's top directory
>>> with pycatar.open("tree.catar") as ar:               # doctest: +SKIP
...     for member in ar:
...         if member.isfile():
...             data = ar.extractfile(member).read()
...     ar.extractall("out", filter="data")

Reading never loads a member's contents into memory: :meth:`CatarFile.extractfile` streams them, and
every iteration over an archive has a cursor of its own (nested loops, reading members while
iterating).  Extraction uses :mod:`pycatar.extract` (atomic, never following a symlink out of the
destination) and never deletes anything.  Writing uses :mod:`pycatar.encoder`: a tree added as the
archive's top directory gives the bytes ``casync make`` writes.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import io
import os
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Literal, Union

from . import flags as _flags
from .archive import MakeResult, write_archive, write_archive_index
from .blob import IndexStream
from .catarinfo import ROOT_NAME, CatarInfo, archive_path
from .decoder import CatarReader
from .encoder import CatarEncoder, CatarSerializer, EncoderOptions, EntryPolicy, TreeWalker
from .entry import Entry
from .errors import FormatError, PycatarError, UnsupportedError, UsageError
from .extract import ExtractStats, extract as _extract
from .format import HEADER, RecordType
from .fsmeta import fs_type
from .index import IndexReader
from .location import Remote, default_store_for, local_path, open_input, open_store, open_stores, shown, upload
from .store import ChunkStore, StoreSet

__all__ = ["CatarFile", "CatarInfo", "open", "is_catar", "FilterLike", "InTheWayError"]

PathLike = Union[str, bytes, os.PathLike]
#: a chunk store: a location (path or URL), several (tried in order), or a store object
StoreLike = Union[str, os.PathLike, Iterable[str], ChunkStore, StoreSet, None]
#: a named filter ("fully_trusted", "tar", "data") or a callable ``filter(member, dest_path)`` returning
#: the member to extract (possibly changed, see :meth:`CatarInfo.replace`) or None to skip it
FilterLike = Union[str, Callable[[CatarInfo, str], Union[CatarInfo, None]], None]

_NAMED_FILTERS = ("fully_trusted", "tar", "data")
#: what the "data" filter never restores: owners, ACLs, xattrs, labels, capabilities, chattr/FAT flags,
#: project ids, subvolumes, device nodes, FIFOs and sockets (it refuses those special files)
_DATA_DROPS = (_flags.WITH_PRIVILEGED | _flags.WITH_CHATTR | _flags.WITH_FAT_ATTRS | _flags.F.WITH_XATTRS
               | _flags.F.WITH_FIFOS | _flags.F.WITH_SOCKETS)
_OWNERS = _flags.WITH_UIDS | _flags.F.WITH_USER_NAMES
_MAX_SYMLINK_HOPS = 40


def _is_index(name: str | None, f) -> bool:
    """Whether the input is a .caidx: by its suffix, else by its first record's type."""
    if name and name.split("?", 1)[0].endswith(".caidx"):
        return True
    try:
        if not f.seekable():
            return False
        pos = f.tell()
        head = f.read(HEADER.size)
        f.seek(pos)
    except (AttributeError, OSError, ValueError):
        return False
    return len(head) == HEADER.size and HEADER.unpack(head)[1] == RecordType.INDEX


def is_catar(name: PathLike | BinaryIO) -> bool:
    """Whether ``name`` (a path or a seekable binary file object) holds a catar archive: its first
    record is a valid top-level ENTRY and it ends with the top directory's GOODBYE record.  An index
    (.caidx) is not an archive: False."""
    if not isinstance(name, (str, bytes, os.PathLike)):
        pos = name.tell()
        try:
            return _holds_catar(name)
        finally:
            name.seek(pos)
    try:
        with builtins.open(name, "rb") as f:
            return _holds_catar(f)
    except OSError:
        return False


def _holds_catar(f: BinaryIO) -> bool:
    try:
        CatarReader(f).root()
        return True
    except (PycatarError, OSError, ValueError):
        return False


class _PositionalReader:
    """Reads at an offset of the archive stream without moving anyone's cursor: ``read_at`` of an
    index stream, ``pread`` of a file, else seek and read under a lock."""

    def __init__(self, f):
        self._f = f
        self._lock = threading.Lock()
        self._fd: int | None = None
        if not hasattr(f, "read_at"):
            try:
                fd = f.fileno()
                os.pread(fd, 0, 0)
                self._fd = fd
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                pass

    def read_at(self, pos: int, n: int, until: int | None = None) -> bytes:
        """Up to ``n`` bytes at ``pos``; an index stream fetches the chunks ahead up to ``until``."""
        if self._fd is not None:
            return os.pread(self._fd, n, pos)
        f = self._f
        if hasattr(f, "read_at"):
            return f.read_at(pos, n, readahead=until is not None, ahead_until=until)
        with self._lock:
            f.seek(pos)
            return f.read(n)


class _Window(io.RawIOBase):
    """A read-only, seekable file over ``size`` bytes of a stream from ``start`` on: a member's contents,
    or the whole stream of an index for the decoder.  Chunks of an index are fetched ahead (up to the
    window's end) only while reads go on from where the last one stopped, not for scattered reads
    (lookups, seeks)."""

    def __init__(self, source: _PositionalReader, start: int, size: int, name: str | None = None, *,
                 ahead_from_start: bool = True, reader: IndexReader | None = None):
        super().__init__()
        self._source = source
        self._start = start
        self._size = size
        self._pos = 0
        self._last_end = 0 if ahead_from_start else -1  # whether a first read from the start goes on
        self.name = name
        #: the index of the stream (the decoder checks the archive's feature flags against its header)
        self.reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence ({whence})")
        pos = offset + {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        end = self._start + self._size
        data = self._source.read_at(self._start + self._pos, n, end if self._pos == self._last_end else None)
        if not data:
            raise FormatError(f"archive truncated: {self.name or 'the stream'} ends early")
        k = len(data)
        memoryview(b).cast("B")[:k] = data
        self._pos += k
        self._last_end = self._pos
        return k


class _Peekable:
    """An iterator with one item of look-ahead."""

    def __init__(self, it: Iterator[Entry]):
        self._it = it
        self._next: Entry | None = None
        self._have = False

    def peek(self) -> Entry | None:
        if not self._have:
            self._next = next(self._it, None)
            self._have = True
        return self._next

    def take(self) -> Entry | None:
        item = self.peek()
        self._have = False
        return item


@dataclasses.dataclass
class _Add:
    """One directory or file of the tree being written: a source on disk or a directory made up."""

    source: str | None = None
    recursive: bool = False
    children: dict[str, "_Add"] = dataclasses.field(default_factory=dict)


class CatarFile:
    """A catar archive opened with :func:`open`, for reading (``mode="r"``) or writing (``"w"``).

    Use it as a context manager (or call :meth:`close`).  Reading needs a seekable archive: a file, a
    URL (fetched whole), or the stream a .caidx describes (its chunks fetched as reads need them)."""

    def __init__(self, name: PathLike | BinaryIO | None = None, mode: Literal["r", "w"] = "r",
                 fileobj: BinaryIO | None = None,
                 *, store: StoreLike = None, chunk_cache: str | None = None,
                 feature_flags: int | Iterable[str] | None = None, feature_mask: int | None = None,
                 remote: Remote | None = None, chunk_size: tuple[int, int, int] | None = None,
                 compression: str = "zstd", **encoder_options):
        if mode not in ("r", "w"):
            raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")
        if name is not None and hasattr(name, "read" if mode == "r" else "write") and fileobj is None:
            name, fileobj = getattr(name, "name", None), name
        self.name: str | None = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else None
        self.mode = mode
        self.closed = False
        self._close: list = []
        self._remote = remote if remote is not None else Remote()
        if remote is None:
            self._close.append(self._remote)
        self._store = store
        other_mode: dict[str, object] = (
            {"chunk_size": chunk_size, "feature_flags": feature_flags, **encoder_options} if mode == "r"
            else {"chunk_cache": chunk_cache, "feature_mask": feature_mask})
        wrong = sorted(k for k, v in other_mode.items() if v is not None)
        if wrong:
            raise TypeError(f"open(mode={mode!r}) takes no {', '.join(wrong)}")
        try:
            if mode == "r":
                self._open_read(fileobj, chunk_cache, feature_mask)
            else:
                self._open_write(fileobj, feature_flags, chunk_size, compression, encoder_options)
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ opening

    def _open_read(self, fileobj, chunk_cache, feature_mask) -> None:
        if fileobj is None:
            if self.name is None:
                raise ValueError("nothing to open: give a name or a fileobj")
            fileobj = open_input(self.name, remote=self._remote, what="archive")
            self._close.append(fileobj)
        if _is_index(self.name, fileobj):
            index = IndexReader(fileobj)
            self._close.append(index)
            where = self._store if self._store is not None else default_store_for(self.name)
            if isinstance(where, (ChunkStore, StoreSet)):
                stores = where if isinstance(where, StoreSet) else StoreSet([where])
            else:
                locations = [where] if isinstance(where, (str, bytes, os.PathLike)) else list(where)
                stores = open_stores([os.fsdecode(s) for s in locations], cache=chunk_cache, remote=self._remote)
            # remote stores: chunks fetched ahead of the reader, in parallel, as the extraction of a
            # .caidx does (assembly.extract_tree)
            stream = IndexStream(index, stores, threads=None if stores.concurrency else 0, cache_size=8)
            self._close.append(stream)
            fileobj = _Window(_PositionalReader(stream), 0, stream.size, self.name, ahead_from_start=False,
                              reader=index)
        self.fileobj = fileobj
        self._feature_mask = feature_mask
        self.reader = CatarReader(fileobj, feature_mask=feature_mask)
        if not self.reader.seekable:
            raise UnsupportedError("reading an archive needs a seekable file (a pipe cannot be read this way)")
        self._positional = fileobj._source if isinstance(fileobj, _Window) else _PositionalReader(fileobj)
        self._root = self.reader.root()[0]
        self._cursor: Iterator[CatarInfo] | None = None
        self._members: list[CatarInfo] | None = None

    def _open_write(self, fileobj, feature_flags, chunk_size, compression, encoder_options) -> None:
        if fileobj is None and self.name is None:
            raise ValueError("nowhere to write: give a name or a fileobj")
        self.fileobj = fileobj
        self._path = None if self.name is None else local_path(self.name)
        self._index = self._store is not None or bool(self.name and self.name.split("?", 1)[0].endswith(".caidx"))
        if fileobj is None and self._path is None and not self._index:
            raise UsageError(f"a .catar is written to a local file or a file object, not {shown(self.name or '')}")
        if feature_flags is None:
            ff = _flags.DEFAULT
        elif isinstance(feature_flags, int):
            ff = int(feature_flags)
        else:
            ff = int(_flags.from_options(list(feature_flags)))
        self._write_flags = _flags.normalize(ff)
        self._chunk_size = chunk_size
        self._compression = compression
        self._encoder_options = encoder_options
        EncoderOptions(self.feature_flags, **encoder_options)  # unknown options fail now, not at close
        self._tree = _Add()
        self._opened_ns = time.time_ns()
        self.result: MakeResult | None = None

    # ------------------------------------------------------------------ reading: members

    def _check(self, mode: str) -> None:
        if self.closed:
            raise OSError("the archive is closed")
        if self.mode != mode:
            raise OSError(f"bad operation for mode {self.mode!r}")

    @property
    def feature_flags(self) -> int:
        """The archive's feature flags (:mod:`pycatar.flags`): read from it, or those it is written with."""
        if self.mode == "w":
            return self._write_flags
        flags = self.reader.feature_flags
        assert flags is not None  # read with the top directory when opened
        return flags

    def _walk(self) -> Iterator[Entry]:
        """Every entry, in archive order, through a cursor of its own."""
        return self.reader.iter_subtree(self._root)

    def __iter__(self) -> Iterator[CatarInfo]:
        """Every member in archive order, the top directory (``"."``) first.  Each iteration has its own
        cursor: loops may nest, and members may be read (:meth:`extractfile`) while iterating."""
        self._check("r")
        if self._members is not None:
            return iter(list(self._members))
        return (CatarInfo.from_entry(e) for e in self._walk())

    def next(self) -> CatarInfo | None:
        """The member after the one the previous call returned (the first one at first), or None at the
        end of the archive (tarfile's ``TarFile.next``)."""
        self._check("r")
        if self._cursor is None:
            self._cursor = iter(self)
        return next(self._cursor, None)

    def getmembers(self) -> list[CatarInfo]:
        """All members, in archive order (read once, then kept)."""
        self._check("r")
        if self._members is None:
            self._members = [CatarInfo.from_entry(e) for e in self._walk()]
        return list(self._members)

    def getnames(self) -> list[str]:
        """The names of all members, in archive order."""
        return [m.name for m in self.getmembers()]

    def getmember(self, name: str) -> CatarInfo:
        """The member called ``name`` (``"."`` or ``""`` is the top directory; leading ``./`` and
        trailing slashes are ignored), found through the archive's GOODBYE tables without reading the
        rest.  KeyError when there is none."""
        self._check("r")
        entry = self.reader.lookup(archive_path(name))
        if entry is None:
            raise KeyError(f"filename {name!r} not found")
        return CatarInfo.from_entry(entry)

    def _member(self, member: str | CatarInfo) -> CatarInfo:
        return self.getmember(member) if isinstance(member, str) else member

    # ------------------------------------------------------------------ reading: contents

    def extractfile(self, member: str | CatarInfo) -> io.BufferedReader | None:
        """A readable, seekable binary file object with the contents of a regular file member (a
        symlink is followed inside the archive; KeyError when its target is not in it), or None for
        other members.  The contents are read from the archive as the file is read, in bounded memory."""
        self._check("r")
        info = self._member(member)
        for _ in range(_MAX_SYMLINK_HOPS):
            if not info.issym():
                break
            target = info.linkname
            if target.startswith("/"):
                raise KeyError(f"linkname {target!r} not found (an absolute target is outside the archive)")
            parts: list[str] = []
            for comp in (archive_path(info.name).split("/")[:-1] + target.split("/")):
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if not parts:
                        raise KeyError(f"linkname {target!r} not found (it points outside the archive)")
                    parts.pop()
                else:
                    parts.append(comp)
            try:
                info = self.getmember("/".join(parts))
            except KeyError:
                raise KeyError(f"linkname {target!r} not found") from None
        else:
            raise KeyError(f"{info.name!r}: too many levels of symbolic links")
        if not info.isfile():
            return None
        start = info.entry.payload_offset
        assert start is not None  # every regular file read has one
        return io.BufferedReader(_Window(self._positional, start, info.size, info.name), buffer_size=64 << 10)

    # ------------------------------------------------------------------ reading: extraction

    def extract(self, member: str | CatarInfo, path: PathLike = "", set_attrs: bool = True, *,
                numeric_owner: bool = False, filter: FilterLike = None) -> None:
        """Extract one member (a directory alone, without what is below it) into ``path`` (default:
        the current directory) under its full name, creating missing parent directories.  See
        :meth:`extractall` for ``filter`` and what is restored; ``set_attrs=False`` restores no
        metadata beyond the contents (as tarfile)."""
        self._check("r")
        info = self._member(member)
        self._extract([info], path, numeric_owner=numeric_owner, filter=filter, set_attrs=set_attrs,
                      whole_dirs=False)

    def extractall(self, path: PathLike = ".", members: Iterable[str | CatarInfo] | None = None, *,
                   numeric_owner: bool = False, filter: FilterLike = None,
                   feature_mask: int | None = None) -> ExtractStats:
        """Extract the archive (or the ``members`` given: CatarInfo objects or names) into ``path``.
        Nothing already in ``path`` is deleted: a file of the archive replaces one of the same name,
        but a directory where the archive has a file is left alone (:class:`InTheWayError`).

        ``filter``: tarfile's named filters, applied by tarfile's own functions to each member:

        * ``"data"`` (the default, as in Python 3.14): refuses device nodes, FIFOs, sockets and
          symlinks that point outside ``path`` or to an absolute path (tarfile's ``FilterError``
          subclasses); clears set-id, sticky and group/other write bits, keeps directory modes as they
          are (new ones get the default), restores no owner; restores no xattrs, ACLs, SELinux
          labels, file capabilities, chattr/FAT flags or project ids.
        * ``"tar"``: clears set-id, sticky and group/other write bits; restores everything else the
          archive holds but file capabilities.
        * ``"fully_trusted"``: restores all the archive holds, as ``casync extract`` does.
        * a callable ``filter(member, path)`` returning the member (maybe changed with
          :meth:`CatarInfo.replace`; None for ``mode``, ``uid``/``gid``, ``uname``/``gname``,
          ``mtime`` means "do not restore") or None to skip it.  A directory skipped is created
          (with the default mode) when something below it is extracted, as tarfile does.

        Owners are restored only when running as root (as tarfile); without root, the privileged
        metadata (owners, ACLs, device nodes, capabilities, labels, immutable/append-only flags...)
        is not restored.  ``numeric_owner``: restore owners by id, not by user/group name.
        ``feature_mask`` limits what is restored further (feature flags, see :mod:`pycatar.flags`).
        Returns the extractor's statistics (summed over the runs)."""
        self._check("r")
        wanted = None if members is None else [self._member(m) for m in members]
        return self._extract(wanted, path, numeric_owner=numeric_owner, filter=filter, set_attrs=True,
                             whole_dirs=True, feature_mask=feature_mask)

    def _extract(self, wanted: list[CatarInfo] | None, path: PathLike, *, numeric_owner: bool, filter: FilterLike,
                 set_attrs: bool, whole_dirs: bool, feature_mask: int | None = None) -> ExtractStats:
        dest = os.fsdecode(path) or "."
        name = filter if filter is not None else "data"
        if isinstance(name, str):
            if name not in _NAMED_FILTERS:
                raise ValueError(f"unknown filter {name!r}: use one of {', '.join(_NAMED_FILTERS)} or a callable")
            fn = getattr(tarfile, f"{name}_filter", None)
            if fn is None:
                raise UnsupportedError(f"the {name!r} filter needs a Python whose tarfile has extraction filters")
        else:
            fn = name
        mask = _flags.FLAGS_MAX if feature_mask is None else int(feature_mask)
        root = os.geteuid() == 0
        if not root:
            mask &= ~_flags.WITH_PRIVILEGED
        if name == "data":
            mask &= ~_DATA_DROPS
        elif name == "tar":
            mask &= ~_flags.F.WITH_FCAPS
        if numeric_owner:
            mask &= ~_flags.F.WITH_USER_NAMES
        if not set_attrs:
            mask &= ~(_flags.WITH_MASK & ~(_flags.F.WITH_SYMLINKS | _flags.F.WITH_DEVICE_NODES
                                                      | _flags.F.WITH_FIFOS | _flags.F.WITH_SOCKETS))
        umask = os.umask(0)
        os.umask(umask)
        selected = None if wanted is None else {archive_path(m.name) for m in wanted}
        # a reader of the extraction's own: the payload it reads is that of the entry its walk is at
        # (read from the walk's buffer, fetched once)
        reader = CatarReader(self.fileobj, feature_mask=self._feature_mask)
        run = _Run(reader, dest, fn, selected, whole_dirs, mask, owners=root and bool(mask & _OWNERS), umask=umask)
        if wanted is not None and not whole_dirs:  # one member, found through the GOODBYE tables
            entry = reader.lookup(archive_path(wanted[0].name))
            if entry is None:
                raise KeyError(f"filename {wanted[0].name!r} not found")
            it = _Peekable(reader.iter_subtree(entry))
            it.take()  # the walk stands at the member: read_payload gives its contents
            chosen = run.decide(entry)
            if chosen is not None:
                run.one_run(chosen, it)
            if run.error is not None:
                raise run.error
        else:
            run.all(_Peekable(reader.iter_subtree(reader.root()[0])))
        return run.stats

    # ------------------------------------------------------------------ writing

    def add(self, name: PathLike, arcname: str | None = None, recursive: bool = True) -> None:
        """Add the file or directory ``name`` (with everything below it when ``recursive``) as
        ``arcname`` (default: ``name`` without a leading slash, as tarfile).

        A catar archive is one directory tree: ``arcname`` ``"."`` (or ``""``) makes ``name`` (a
        directory) the archive's top directory itself -- alone, this gives the archive ``casync make``
        writes of it; other names place files below the top directory, which is then a made-up
        directory (mode 0755, owned by the caller, the time of :func:`open`) unless ``"."`` was added,
        and so are the missing directories on the way to each name.  Adding below a directory added
        recursively, or the same name twice, is refused (catar holds each name once).

        The files are read when the archive is closed (catar orders a directory's entries by name),
        so they must still be there then."""
        self._check("w")
        source = os.path.normpath(os.fsdecode(name))
        if arcname is None:
            arcname = source.lstrip("/")
        parts = archive_path(arcname).split("/") if archive_path(arcname) else []
        if any(p == ".." for p in parts):
            raise UsageError(f"arcname {arcname!r}: '..' components are not allowed")
        try:
            st = os.lstat(source)
        except OSError as e:
            raise PycatarError(f"Failed to add {source}: {e.strerror}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        if not parts and not is_dir:
            raise UsageError(f"{source}: the archive's top directory ({arcname!r}) must be a directory")
        node = self._tree
        for i, comp in enumerate(parts):
            if node.source is not None and node.recursive:
                where = "/".join(parts[:i]) or ROOT_NAME
                raise UsageError(f"cannot add {'/'.join(parts)!r}: {where!r} was added with all its contents")
            if node.source is not None and not stat.S_ISDIR(os.lstat(node.source).st_mode):
                raise UsageError(f"cannot add {'/'.join(parts)!r}: {'/'.join(parts[:i])!r} is not a directory")
            node = node.children.setdefault(comp, _Add())
        if node.source is not None:
            raise UsageError(f"{'/'.join(parts) or ROOT_NAME!r} is in the archive already")
        if node.children and recursive and is_dir:
            raise UsageError(f"cannot add {source} with its contents as {'/'.join(parts) or ROOT_NAME!r}: "
                             "names below it were added already (add it with recursive=False)")
        if node.children and not is_dir:
            raise UsageError(f"cannot add {source} as {'/'.join(parts)!r}: names below it were added already")
        node.source, node.recursive = source, recursive and is_dir

    def _encoder(self) -> CatarSerializer:
        tree = self._tree
        if tree.source is not None and tree.recursive:
            return CatarEncoder(tree.source, self.feature_flags, **self._encoder_options)
        return CatarSerializer(_TreeSource(tree, self.feature_flags, self._opened_ns, self._encoder_options))

    def _write(self) -> None:
        encoder = self._encoder()
        output = self.fileobj if self.fileobj is not None else self._path
        upload_to = None
        if output is None:  # an index for a URL: made here, then uploaded (an index is small)
            output = upload_to = io.BytesIO()
        if self._index:
            where = self._store if self._store is not None else default_store_for(self.name)
            store = open_store(os.fsdecode(where), digest=_flags.digest_name(self.feature_flags),
                               compression=self._compression, remote=self._remote) \
                if isinstance(where, (str, bytes, os.PathLike)) else where
            self.result = write_archive_index(output, encoder, store=store, chunk_size=self._chunk_size,
                                              compression=self._compression)
        else:
            self.result = write_archive(output, encoder)
        if upload_to is not None and self.name is not None:
            upload(self.name, upload_to.getvalue(), remote=self._remote)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Write the archive (mode "w"), then release what the archive holds open."""
        if self.closed:
            return
        try:
            if self.mode == "w":
                self._write()
        finally:
            self.closed = True
            self._release()

    def _release(self) -> None:
        for obj in reversed(self._close):
            obj.close()
        self._close = []

    def __enter__(self) -> "CatarFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc_type is not None and self.mode == "w":
            self.closed = True  # nothing written after a failure
            self._release()
        else:
            self.close()
        return False

    def __repr__(self) -> str:
        return f"<pycatar.CatarFile {self.name!r} mode={self.mode!r}{' closed' if self.closed else ''}>"


class InTheWayError(PycatarError):
    """Extraction met a directory where the archive has a file of another kind: it would have to
    remove the directory and all it holds, which the library never does (the command does)."""


class _Run:
    """One extraction: the archive's entries, filtered, handed to :func:`pycatar.extract.extract` in
    runs -- a run is a selected entry and the selected entries below it whose directories are in the
    run; each run is extracted into its parent directory (created when missing)."""

    def __init__(self, reader: CatarReader, dest: str, fn, selected: set[str] | None, whole_dirs: bool, mask: int,
                 *, owners: bool, umask: int):
        self.reader = reader
        self.dest = dest
        self.fn = fn
        self.selected = selected
        self.whole_dirs = whole_dirs
        self.mask = mask
        self.owners = owners
        self.umask = umask
        self.stats = ExtractStats()
        #: a filter's refusal met inside a run: the run ends cleanly (what it made is complete), then
        #: it is raised, as tarfile raises it after the members before
        self.error: BaseException | None = None

    def _decide(self, entry: Entry) -> Entry | None:
        try:
            return self.decide(entry)
        except (tarfile.FilterError, InTheWayError) as e:
            self.error = e
            return None

    def decide(self, entry: Entry) -> Entry | None:
        """The entry to extract (metadata as the filter leaves it) or None to leave it out."""
        if self.selected is not None and entry.path not in self.selected:
            return None
        info = CatarInfo.from_entry(entry)
        out = self.fn(info, self.dest)
        if out is None:
            return None
        new = out.to_entry()
        kind = stat.S_IFMT(new.mode)
        keep: dict[str, object] = {}
        if kind != stat.S_IFDIR or out.mode is None or (out.uid is None or out.gid is None) and self.owners:
            try:
                st = os.lstat(os.path.join(self.dest, entry.path)) if entry.path else os.stat(self.dest)
            except OSError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode) and kind != stat.S_IFDIR:
                raise InTheWayError(f"{info.name!r}: a directory is in the way of the archive's "
                                    f"{'file' if kind == stat.S_IFREG else 'node'} (extraction never removes a directory)")
            if st is not None and stat.S_IFMT(st.st_mode) != kind:
                st = None  # it will be replaced
            # what None means, "not restored": what is there stays (a new node gets the defaults)
            if out.mode is None:
                keep["mode"] = kind | (stat.S_IMODE(st.st_mode) if st is not None else (
                    (0o777 if kind == stat.S_IFDIR else 0o666) & ~self.umask))
            if self.owners and out.uid is None:
                keep["uid"] = st.st_uid if st is not None else os.geteuid()
            if self.owners and out.gid is None:
                keep["gid"] = st.st_gid if st is not None else os.getegid()
        if out.uname is None:
            keep["user"] = None
        if out.gname is None:
            keep["group"] = None
        if out.mtime_ns is None:
            keep["mtime"] = time.time_ns()
        if keep:
            new = copy.copy(new) if new is entry else new
            for k, v in keep.items():
                setattr(new, k, v)
        return new

    def all(self, it: _Peekable) -> None:
        while True:
            entry = it.take()
            if entry is None:
                return
            chosen = self.decide(entry)
            if chosen is not None:
                self.one_run(chosen, it)
            if self.error is not None:
                raise self.error

    def one_run(self, first: Entry, it: _Peekable) -> None:
        parent = self.dest if not first.path else os.path.join(self.dest, os.path.dirname(first.path))
        os.makedirs(parent, exist_ok=True)

        def entries() -> Iterator[Entry]:
            yield first
            if not (first.isdir() and self.whole_dirs):
                return
            prefix = first.path + "/" if first.path else ""
            outside: list[str] = []  # directories left out: what is below them is not in this run
            while True:
                e = it.peek()
                if e is None or not e.path.startswith(prefix):
                    return
                it.take()
                if any(e.path.startswith(p) for p in outside):
                    chosen = self._decide(e)
                    if chosen is not None:
                        self.one_run(chosen, it)  # into a directory this run did not make
                    if self.error is not None:
                        return
                    continue
                chosen = self._decide(e)
                if self.error is not None:
                    return
                if chosen is None:
                    if e.isdir():
                        outside.append(e.path + "/")
                    continue
                yield chosen

        stats = _extract(entries(), self.reader.read_payload, parent, feature_flags=self.reader.feature_flags,
                         feature_mask=self.mask, delete=False)
        for name in ExtractStats.__slots__:
            if name in ("feature_flags", "replay_flags"):
                setattr(self.stats, name, getattr(stats, name))
            else:
                setattr(self.stats, name, getattr(self.stats, name) + getattr(stats, name))


class _TreeSource:
    """The entries of a tree put together with :meth:`CatarFile.add` (a source for
    :class:`~pycatar.encoder.CatarSerializer`): made-up directories where nothing was added, the
    walker's entries for what was."""

    def __init__(self, tree: _Add, feature_flags: int, opened_ns: int, options: dict):
        self.options = EncoderOptions(feature_flags, **options)
        self.policy = EntryPolicy(self.options)
        self.tree = tree
        self.opened_ns = opened_ns
        self.covering_flags = 0

    @property
    def feature_flags(self) -> int:
        return self.policy.flags

    def events(self) -> Iterator[tuple]:
        return self._events(self.tree, "")

    def _made_up(self, path: str) -> Entry:
        return self.policy.base_entry(path, stat.S_IFDIR | 0o755, os.geteuid(), os.getegid(), self.opened_ns)

    def _events(self, node: _Add, path: str) -> Iterator[tuple]:
        if node.source is None:
            entry = self._made_up(path)
            yield 0, entry, None
        elif node.recursive:
            walker = TreeWalker(node.source, self.options)
            try:
                for event, walked, node_token in walker.events():
                    placed = f"{path}/{walked.path}" if walked.path else path
                    yield event, walked.replace(path=placed), node_token
            finally:
                self.covering_flags |= walker.covering_flags
            return
        else:
            entry, fd = self._single(node.source, path)
            try:
                yield 0, entry, fd
            finally:
                if fd is not None:
                    os.close(fd)
            if not entry.isdir():
                return
        for name in sorted(node.children, key=os.fsencode):
            yield from self._events(node.children[name], f"{path}/{name}" if path else name)
        yield 1, entry, None

    def _single(self, source: str, path: str) -> tuple[Entry, int | None]:
        """The entry of one file or directory (not what is below it), and a regular file open."""
        walker = TreeWalker(os.path.dirname(source) or ".", self.options)
        try:
            parent_fd = os.open(os.path.dirname(source) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise PycatarError(f"Failed to add {source}: {e.strerror}") from None
        try:
            base = os.path.basename(source)
            s = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
            fd = None
            if stat.S_ISDIR(s.st_mode) or stat.S_ISREG(s.st_mode):
                fd = os.open(base, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent_fd)
                s = os.fstat(fd)
            try:
                magic = fs_type(fd if fd is not None else parent_fd)
                self.covering_flags |= int(_flags.from_fs_magic(magic))
                target = os.readlink(base, dir_fd=parent_fd) if stat.S_ISLNK(s.st_mode) else None
                entry = walker.make_entry(path, s, fd, parent_fd, base, magic, target)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
            if fd is None:
                return entry, None
            if stat.S_ISDIR(s.st_mode):
                os.close(fd)
                return entry, None
            return entry, fd
        except OSError as e:
            raise PycatarError(f"Failed to add {source}: {e.strerror}") from None
        finally:
            os.close(parent_fd)


def open(name: PathLike | BinaryIO | None = None, mode: Literal["r", "w"] = "r",  # noqa: A001 - as tarfile.open
         fileobj: BinaryIO | None = None, *, store: StoreLike = None, chunk_cache: str | None = None,
         feature_flags: int | Iterable[str] | None = None, feature_mask: int | None = None,
         remote: Remote | None = None, chunk_size: tuple[int, int, int] | None = None, compression: str = "zstd",
         **encoder_options) -> CatarFile:
    """Open a catar archive, as :func:`tarfile.open` opens a tar.

    ``name``: a path or URL (``file://``, ``http(s)://``, ``s3+http(s)://``) or a binary file object;
    a ``.caidx`` (by its suffix, or its header) is read through its chunk store: ``store=`` (a path,
    URL or several, default ``$CASYNC_STORE`` or ``default.castr`` beside the index), optionally
    ``chunk_cache=``.  ``mode``: ``"r"`` to read, ``"w"`` to write (a ``.caidx`` name or a ``store=``
    writes the chunked form).  Further keywords: ``feature_flags`` (writing: an int or feature names
    as ``--with=`` takes them, e.g. ``["unix"]``; default casync's), ``feature_mask`` (reading: what
    to decode), ``chunk_size``/``compression`` (writing a .caidx) and the encoder's options
    (``uid_shift``, ``owner``, ``clamp_mtime_ns``...).  See :class:`CatarFile`."""
    return CatarFile(name, mode, fileobj, store=store, chunk_cache=chunk_cache, feature_flags=feature_flags,
                     feature_mask=feature_mask, remote=remote, chunk_size=chunk_size, compression=compression,
                     **encoder_options)
