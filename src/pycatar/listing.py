"""The text casync prints for ``list``, ``mtree``, ``stat`` and ``digest``.

casync produces these listings from one of two sources, and they do not show quite the same things:

* an **archive**: the values come from the decoder, filtered by the archive's feature flags and by what
  the user asked for (the decoder mask; see :attr:`CatarReader.replay_flags`) -- :func:`archive_view`;
* a **directory**: the values come from the encoder walking the tree with the requested feature flags --
  :func:`directory_view`.  It shows some values the archive would not store (for example ``ProjID: 0``,
  ``root`` as the name of uid 0, xattrs when only ``fcaps`` is enabled) and withholds others (no
  ``FATAttr`` line without FAT attribute flags; no xattrs at all without ``xattrs``/``fcaps``, which makes
  ``stat`` fail after its first lines).

Both sides are turned into a :class:`View` (what casync's ``ca_sync_current_*`` calls would report), and
the formatting functions (:func:`list_lines`, :func:`mtree_line`, :func:`stat_text`) render a view.  The
drivers :func:`list_archive` and :func:`list_directory` produce a verb's whole standard output, and
:func:`archive_digest`/:func:`stream_digest` what ``casync digest`` prints.

When casync would fail part-way through its output, the drivers raise :class:`ListingError`: its
message is casync's error message, everything printed before the failure has been yielded already.
"""

from __future__ import annotations

import os
import stat as _stat
import time
from collections.abc import Iterable, Iterator

from . import _catar
from . import digest as _digest
from . import flags as _flags
from .entry import Entry, select_subtree
from .errors import PycatarError
from .record import Record

__all__ = [
    "View", "ListingError", "archive_view", "directory_view", "mtree_escape", "ls_format_mode",
    "ls_format_chattr", "ls_format_fat_attrs", "digest_label", "list_line", "list_lines", "mtree_line", "stat_text",
    "list_archive", "list_directory", "archive_digest", "stream_digest", "VERBS",
]

VERBS = ("list", "mtree", "stat")


_I = _flags.Flag

_CHATTR_MAP = tuple((int(f), int(c)) for f, c in _flags.CHATTR_MAP)
_WITH_CHATTR = _flags.WITH_CHATTR
_FAT_MAP = tuple((int(f), int(a)) for f, a in _flags.FAT_MAP)


def _to_chattr(fl: int) -> int:
    return sum(c for f, c in _CHATTR_MAP if fl & f)


def _to_fat(fl: int) -> int:
    return sum(a for f, a in _FAT_MAP if fl & f)


_WITH_UIDS = _I.WITH_16BIT_UIDS | _I.WITH_32BIT_UIDS
_WITH_TIMES = _I.WITH_NSEC_TIME | _I.WITH_USEC_TIME | _I.WITH_SEC_TIME | _I.WITH_2SEC_TIME


class ListingError(PycatarError):
    """casync fails at this point of the listing; the output produced before stays valid.
    ``partial``: output of the failing step that casync prints before it fails (stat_text)."""

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial


# --------------------------------------------------------------------------- formatting helpers

def mtree_escape(value: str | bytes) -> str:
    """casync's mtree escaping: bytes <= space, >= 127, backslash and '#' become ``\\ooo`` (a str is
    escaped as its :func:`os.fsencode` bytes)."""
    return _catar.mtree_escape(value)


def _escape_cstr(value: bytes) -> str:
    # casync escapes C strings: the text ends at the first NUL
    nul = value.find(b"\0")
    return mtree_escape(value if nul < 0 else value[:nul])


def ls_format_mode(mode: int) -> str | None:
    """``drwxr-xr-x`` and friends, exactly as casync renders them (no sticky bit on non-directories);
    None for a mode of no known file type."""
    return _catar.ls_format_mode(mode)


_CHATTR_CHARS = (
    (_flags.FS_SYNC_FL, "S"), (_flags.FS_DIRSYNC_FL, "D"), (_flags.FS_IMMUTABLE_FL, "i"),
    (_flags.FS_APPEND_FL, "a"), (_flags.FS_NODUMP_FL, "d"), (_flags.FS_NOATIME_FL, "A"),
    (_flags.FS_COMPR_FL, "c"), (_flags.FS_NOCOMP_FL, "N"), (_flags.FS_NOCOW_FL, "C"),
    (_flags.FS_PROJINHERIT_FL, "P"),
)
_FAT_CHARS = ((_flags.ATTR_HIDDEN, "h"), (_flags.ATTR_SYS, "s"), (_flags.ATTR_ARCH, "a"))


def ls_format_chattr(chattr: int) -> str:
    """The ten-character FileAttr column (``S D i a d A c N C P``)."""
    return "".join(c if chattr & bit else "-" for bit, c in _CHATTR_CHARS)


def ls_format_fat_attrs(attrs: int) -> str:
    """The three-character FATAttr column (``h s a``)."""
    return "".join(c if attrs & bit else "-" for bit, c in _FAT_CHARS)


_DIGEST_LABELS = {"sha256": "sha256digest", "sha512-256": "sha512256digest", "blake3": "blake3digest"}


def digest_label(digest_name: str) -> str:
    """The mtree keyword for a payload digest.  casync picks it from its ``--digest=`` option, not
    from the archive: an archive made with sha256 listed without ``--digest=sha256`` shows a sha256
    value under ``sha512256digest=``."""
    return _DIGEST_LABELS[digest_name]


def _path_text(path: str) -> str:
    return mtree_escape(path) if path else "."


# --------------------------------------------------------------------------- views


class View(Record):
    """What casync reports for one entry; ``None`` means "not available" (the line or key is left out)."""

    __slots__ = ("path", "mode", "size", "target", "mtime", "uid", "gid", "user", "group", "rdev", "chattr",
                 "fat_attrs", "xattrs", "quota_projid", "offset")

    def __init__(self, path: str, mode: int, size: int | None = None, target: str | None = None,
                 mtime: int | None = None, uid: int | None = None, gid: int | None = None,
                 user: str | None = None, group: str | None = None, rdev: tuple[int, int] | None = None,
                 chattr: int | None = None, fat_attrs: int | None = None,
                 xattrs: list[tuple[bytes, bytes]] | None = None, quota_projid: int | None = None,
                 offset: int | None = None) -> None:
        self.path = path
        self.mode = mode
        self.size = size
        self.target = target
        self.mtime = mtime
        self.uid = uid
        self.gid = gid
        self.user = user
        self.group = group
        self.rdev = rdev
        self.chattr = chattr  # FS_*_FL bits
        self.fat_attrs = fat_attrs  # FAT ATTR_* bits
        #: (name, value) pairs; None when enumerating them fails (directory side without xattrs/fcaps)
        self.xattrs = xattrs
        self.quota_projid = quota_projid
        self.offset = offset


def _type_view(entry: Entry) -> View:
    """A View with what every side shows the same: path, mode, size, symlink target, device."""
    t = _stat.S_IFMT(entry.mode)
    v = View(path=entry.path, mode=entry.mode)
    if t == _stat.S_IFREG:
        v.size = entry.size
    elif t == _stat.S_IFLNK:
        v.target = entry.target
    elif t in (_stat.S_IFBLK, _stat.S_IFCHR):
        v.rdev = (entry.rdev_major, entry.rdev_minor)
    return v


def archive_view(entry: Entry, replay_flags: int | None = None) -> View:
    """The view of an entry read from an archive, as casync's decoder reports it.

    ``replay_flags``: :attr:`CatarReader.replay_flags` (the archive's flags limited by the user's mask);
    default: the archive's own flags.  Owners, names, times and the chattr/FAT attributes are shown only
    as far as they allow; xattrs, the project id, sizes, targets and devices are always shown."""
    archive_flags = entry.feature_flags
    replay = _flags.normalize(_flags.normalize_mask(archive_flags)) if replay_flags is None else replay_flags
    mode = entry.mode
    t = _stat.S_IFMT(mode)
    reg_or_dir = t in (_stat.S_IFREG, _stat.S_IFDIR)
    v = _type_view(entry)
    v.offset, v.xattrs, v.quota_projid = entry.offset, list(entry.xattrs), entry.quota_projid
    if replay & _WITH_TIMES:
        v.mtime = entry.mtime
    if replay & _WITH_UIDS:
        v.uid, v.gid = entry.uid, entry.gid
    if replay & _I.WITH_USER_NAMES:
        # root's name is not stored when uids are: casync names uid/gid 0 "root" again
        ids = archive_flags & _WITH_UIDS
        v.user = entry.user if entry.user is not None else ("root" if ids and entry.uid == 0 else None)
        v.group = entry.group if entry.group is not None else ("root" if ids and entry.gid == 0 else None)
    if reg_or_dir:
        v.chattr = _to_chattr(entry.flags & replay)
        v.fat_attrs = _to_fat(entry.flags & replay)
    return v


def directory_view(entry: Entry, feature_flags: int, *, raw_xattrs: list[tuple[bytes, bytes]] | None = None) -> View:
    """The view of an entry of a directory tree (an :func:`encoder.iter_entries` entry made with
    ``feature_flags``), as casync's encoder reports it.

    ``raw_xattrs``: the user./trusted. xattrs of the file as read from disk; casync shows them whenever
    ``xattrs`` or ``fcaps`` is enabled, while the entry only holds them with ``xattrs``.  Default:
    ``entry.xattrs``."""
    flags = _flags.normalize(feature_flags)
    mode = entry.mode
    t = _stat.S_IFMT(mode)
    reg_or_dir = t in (_stat.S_IFREG, _stat.S_IFDIR)
    v = _type_view(entry)
    v.offset = entry.offset if entry.offset is not None else (0 if entry.path == "" else None)
    if flags & _WITH_TIMES:
        v.mtime = entry.mtime
    ids = flags & _WITH_UIDS
    if ids:
        v.uid, v.gid = entry.uid, entry.gid
    if flags & _I.WITH_USER_NAMES:
        # The encoder stores no name for id 0 and, with uids, none for ids without a name; it reports
        # "root" for id 0 (without uids, every other id has a name: its number).
        v.user = entry.user if entry.user is not None else ("root" if not ids or entry.uid == 0 else None)
        v.group = entry.group if entry.group is not None else ("root" if not ids or entry.gid == 0 else None)
    if reg_or_dir:
        if flags & (_WITH_CHATTR | _I.EXCLUDE_NODUMP):
            v.chattr = _to_chattr(entry.flags & flags)
        if flags & _FAT_BITS:
            v.fat_attrs = _to_fat(entry.flags & flags)
        if flags & _I.WITH_QUOTA_PROJID:
            v.quota_projid = entry.quota_projid or 0
    if flags & (_I.WITH_XATTRS | _I.WITH_FCAPS) and t != _stat.S_IFLNK:
        v.xattrs = list(entry.xattrs if raw_xattrs is None else raw_xattrs)
    return v


# --------------------------------------------------------------------------- one entry


def list_lines(views: Iterable[View | Entry]) -> str:
    """Lines of ``casync list``: the mode and the path of each, which an entry and its view show alike."""
    line = _catar.list_line
    return "".join([line(v.mode, v.path) for v in views])


def list_line(view: View | Entry) -> str:
    """One line of ``casync list`` (the C decoder's :meth:`~pycatar.decoder.CatarReader.list_text`
    makes the same lines)."""
    return _catar.list_line(view.mode, view.path)


_MTREE_TYPES = {
    _stat.S_IFLNK: "link", _stat.S_IFDIR: "dir", _stat.S_IFREG: "file", _stat.S_IFSOCK: "socket",
    _stat.S_IFCHR: "char", _stat.S_IFBLK: "block", _stat.S_IFIFO: "fifo",
}
_MTREE_FLAGS = (
    (_I.WITH_FLAG_HIDDEN, "hidden"), (_I.WITH_FLAG_SYSTEM, "system"),
    (_I.WITH_FLAG_ARCHIVE, "archive"), (_I.WITH_FLAG_APPEND, "sappend"),
    (_I.WITH_FLAG_NODUMP, "nodump"), (_I.WITH_FLAG_IMMUTABLE, "simmutable"),
)
_MTREE_FLAG_MASK = sum(f for f, _ in _MTREE_FLAGS)
_FAT_BITS = _flags.WITH_FAT_ATTRS


def mtree_line(view: View, features: int, *, payload_digest: bytes | None = None,
               digest_name: str = "sha512-256") -> str:
    """One line of ``casync mtree``.

    ``features``: the archive's feature flags (archive side) or the requested, normalised flags
    (directory side) -- they decide which ``flags=`` keywords appear, the view decides their values.
    ``payload_digest``: for regular files, the payload digest (computed with the archive's digest);
    ``digest_name``: casync's ``--digest=`` option, which only names the keyword."""
    t = _stat.S_IFMT(view.mode)
    parts = [_path_text(view.path)]
    kind = _MTREE_TYPES.get(t)
    if kind:
        parts.append(f" type={kind}")
    parts.append(f" mode={view.mode & 0o7777:04o}")
    if view.size is not None:
        parts.append(f" size={view.size}")
    if view.target is not None:
        parts.append(f" link={mtree_escape(view.target)}")
    if view.rdev is not None:
        parts.append(f" device=linux,{view.rdev[0]},{view.rdev[1]}")
    if view.uid is not None:
        parts.append(f" uid={view.uid}")
    if view.gid is not None:
        parts.append(f" gid={view.gid}")
    if view.user is not None:
        parts.append(f" uname={mtree_escape(view.user)}")
    if view.group is not None:
        parts.append(f" gname={mtree_escape(view.group)}")
    if features & _MTREE_FLAG_MASK:
        # Unknown attributes (files that are neither regular nor directories) test as "all set".
        fat = 0xFFFFFFFF if view.fat_attrs is None else view.fat_attrs
        chattr = 0xFFFFFFFF if view.chattr is None else view.chattr
        words = []
        for flag, word in _MTREE_FLAGS:
            if not features & flag:
                continue
            on = fat & _to_fat(flag) if flag & _FAT_BITS else chattr & _to_chattr(flag)
            words.append(word if on else "no" + word)
        parts.append(" flags=" + ",".join(words))
    if view.mtime is not None:
        parts.append(f" time={view.mtime // 1_000_000_000}.{view.mtime % 1_000_000_000:09d}")
    if t == _stat.S_IFREG:
        parts.append(f" {digest_label(digest_name)}={(payload_digest or b'').hex()}\n")
    else:
        parts.append("\n")
    return "".join(parts)


def _local_time(mtime: int) -> str | None:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime // 1_000_000_000))
    except (OverflowError, OSError, ValueError):
        return None


def stat_text(view: View, *, payload_digest: bytes | None = None, hardlink_digest: bytes | None = None) -> str:
    """The block ``casync stat`` prints for one entry.

    For a non-directory pass the digests casync adds at the end: ``payload_digest`` for regular files
    and block devices (of a device: the digest of nothing), ``hardlink_digest`` for every non-directory.
    Raises :class:`ListingError` (with ``partial`` set to the text so far) when casync cannot enumerate
    the xattrs (``view.xattrs is None``)."""
    out = [f"    File: {_path_text(view.path)}\n", f"    Mode: {ls_format_mode(view.mode) or 'n/a'}\n"]
    if view.chattr is not None:
        out.append(f"FileAttr: {ls_format_chattr(view.chattr)}\n")
    if view.fat_attrs is not None:
        out.append(f" FATAttr: {ls_format_fat_attrs(view.fat_attrs)}\n")
    if view.offset is not None:
        out.append(f"  Offset: {view.offset}\n")
    if view.mtime is not None:
        when = _local_time(view.mtime)
        if when is not None:
            out.append(f"    Time: {when}.{view.mtime % 1_000_000_000:09d}\n")
    if view.size is not None:
        out.append(f"    Size: {view.size}\n")
    for label, ident, name in (("    User: ", view.uid, view.user), ("   Group: ", view.gid, view.group)):
        if ident is None and name is None:
            continue
        if ident is not None and name is not None:
            out.append(f"{label}{mtree_escape(name)} ({ident})\n")
        elif ident is not None:
            out.append(f"{label}{ident}\n")
        else:
            out.append(f"{label}{mtree_escape(name)}\n")
    if view.quota_projid is not None:
        out.append(f"  ProjID: {view.quota_projid}\n")
    if view.target is not None:
        out.append(f"  Target: {mtree_escape(view.target)}\n")
    if view.rdev is not None:
        out.append(f"  Device: {view.rdev[0]}:{view.rdev[1]}\n")
    if view.xattrs is None:
        raise ListingError("Failed to enumerate extended attributes: No data available", "".join(out))
    for name, value in view.xattrs:
        out.append(f"   XAttr: {_escape_cstr(name)} \u2192 {mtree_escape(value)}\n")
    if not _stat.S_ISDIR(view.mode):
        if payload_digest is not None:
            out.append(f"  Digest: {payload_digest.hex()}\n")
        if hardlink_digest is not None:
            out.append(f"HLDigest: {hardlink_digest.hex()}\n")
    return "".join(out)


def _stat_or_partial(view: View, **digests) -> Iterator[str]:
    try:
        yield stat_text(view, **digests)
    except ListingError as e:
        yield e.partial
        raise


# --------------------------------------------------------------------------- drivers


def _children_only(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The first entry and its immediate children (``--recursive=no`` on an archive)."""
    it = iter(entries)
    top = next(it, None)
    if top is None:
        return
    yield top
    if not top.isdir():
        return
    prefix = top.path + "/" if top.path else ""
    for e in it:
        rest = e.path[len(prefix):]
        if "/" not in rest:
            yield e


def _select(entries: Iterator[Entry], path: str) -> Iterator[Entry]:
    return select_subtree(entries, path, lambda: ListingError("Seek path not available in archive."))


def _list_batches(entries: Iterable[Entry], n: int = 512) -> Iterator[str]:
    """The lines of ``casync list`` for the entries, n at a time; the lines of the entries read before a
    failure are yielded before it propagates."""
    line = _catar.list_line
    lines: list[str] = []
    try:
        for e in entries:
            lines.append(line(e.mode, e.path))
            if len(lines) == n:
                yield "".join(lines)
                lines = []
    except Exception:
        if lines:
            yield "".join(lines)
        raise
    if lines:
        yield "".join(lines)


def list_archive(reader, verb: str, *, path: str | None = None, recursive: bool = True,
                 digest_name: str = "sha512-256") -> Iterator[str]:
    """The standard output of ``casync VERB ARCHIVE [PATH]`` (``verb``: list, mtree or stat), in pieces.

    ``reader``: a :class:`~pycatar.decoder.CatarReader` (its mask, if any, plays casync's
    ``--with=``/``--without=``); ``path`` selects a sub-tree (found through the GOODBYE tables when the
    archive is seekable, by reading through it otherwise); ``recursive=False`` makes ``list`` show only
    the top entry and its immediate children (mtree and stat ignore it, as casync does);
    ``digest_name`` is the ``--digest=`` option.  ``stat`` shows the top entry only, as casync does.
    Raises ListingError("Seek path not available in archive.") for a missing path."""
    if verb not in VERBS:
        raise ValueError(f"unknown listing verb {verb!r}")
    path = "/".join(c for c in (path or "").split("/") if c)
    top = None
    if path and reader.seekable:
        top = reader.lookup(path)
        if top is None:
            raise ListingError("Seek path not available in archive.")
    if verb == "list" and recursive and (top is not None or not path):
        # the C parser makes the lines as it reads the records (no Entry a file)
        yield from reader.list_text(top)
        return
    if top is not None:
        entries: Iterable[Entry] = reader.iter_subtree(top)
    elif path:
        entries = _select(iter(reader), path)
    else:
        entries = iter(reader)
    if verb == "list":  # --recursive= only matters to list
        if not recursive:
            entries = _children_only(entries)
        yield from _list_batches(entries)
        return
    for e in entries:
        algo = _flags.digest_name(reader.feature_flags)
        view = archive_view(e, reader.replay_flags)
        if verb == "mtree":
            payload = None
            if e.isreg():
                h = _digest.new(algo)
                for piece in reader.read_payload():
                    h.update(piece)
                payload = h.digest()
            yield mtree_line(view, reader.feature_flags, payload_digest=payload, digest_name=digest_name)
            continue
        # stat: the top entry only
        if e.isdir():
            yield from _stat_or_partial(view)
            return
        hl = _digest.new(algo)
        hl.update(reader.entry_bytes)
        payload = None
        if e.isreg():
            h = _digest.new(algo)
            for piece in reader.read_payload():
                h.update(piece)
                hl.update(piece)
            payload = h.digest()
        elif _stat.S_ISBLK(e.mode):
            payload = _digest.new(algo).digest()
        yield from _stat_or_partial(view, payload_digest=payload, hardlink_digest=hl.digest())
        return


def _read_raw_xattrs(path: str) -> list[tuple[bytes, bytes]]:
    out = []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        b = os.fsencode(name)
        dot = b.find(b".")
        if not (b.startswith((b"user.", b"trusted.")) and 0 < dot < len(b) - 1 and len(b) <= 255):
            continue
        try:
            out.append((b, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    out.sort()
    return out


def list_directory(root, entries: Iterable[Entry], feature_flags: int, verb: str, *, recursive: bool = True,
                   digest_name: str = "sha512-256") -> Iterator[str]:
    """The standard output of ``casync VERB DIRECTORY`` with ``--with=``/``--without=`` giving
    ``feature_flags`` (complete: including the EXCLUDE_* and digest bits casync adds).

    ``entries``: the tree's entries in archive order, e.g. ``encoder.iter_entries(root, feature_flags)``;
    payload digests are computed from the files below ``root``.  Like casync, ``stat`` shows the root
    only, and ``list`` with ``recursive=False`` shows the root and its first entry and then fails
    (casync's encoder cannot seek to the next sibling)."""
    if verb not in VERBS:
        raise ValueError(f"unknown listing verb {verb!r}")
    flags = _flags.normalize(feature_flags)
    root = os.fspath(root)
    algo = _flags.digest_name(flags)
    for n, e in enumerate(entries):
        if verb == "stat":
            raw = None
            if flags & _I.WITH_FCAPS and not flags & _I.WITH_XATTRS:
                raw = _read_raw_xattrs(os.path.join(root, e.path) if e.path else root)
            yield from _stat_or_partial(directory_view(e, flags, raw_xattrs=raw))
            return
        view = directory_view(e, flags)
        if verb == "list":
            yield list_line(view)
            if n == 1 and not recursive:
                raise ListingError("Failed to seek to next sibling: Inappropriate ioctl for device")
        else:
            payload = None
            if e.isreg():
                payload = _file_digest(os.path.join(root, e.path), e.size, algo)
            yield mtree_line(view, flags, payload_digest=payload, digest_name=digest_name)


def _file_digest(path: str, size: int, algo: str) -> bytes:
    h = _digest.new(algo)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    if not _stat.S_ISREG(os.fstat(fd).st_mode):  # replaced (by a FIFO: the open did not block)
        os.close(fd)
        raise PycatarError(f"{path}: replaced while it was being read")
    try:
        left = size
        while left > 0:
            data = os.read(fd, min(left, 1 << 20))
            if not data:
                raise PycatarError(f"{path}: file shrank while it was being read")
            h.update(data)
            left -= len(data)
    finally:
        os.close(fd)
    return h.digest()


class _LazyHash:
    """A tap for CatarReader that hashes the stream with the archive's digest, once that is known."""

    def __init__(self, reader):
        self._reader = reader
        self._pending: list[bytes] | None = []
        self.h = None

    def __call__(self, data: bytes) -> None:
        if self.h is None:
            flags = self._reader.feature_flags
            if flags is None:
                self._pending.append(bytes(data))
                return
            self.h = _digest.new(_flags.digest_name(flags))
            for p in self._pending:
                self.h.update(p)
            self._pending = None
        self.h.update(data)

    def hexdigest(self) -> str:
        if self.h is None:  # nothing could be read: the digest of an empty stream is not casync's business
            raise ListingError("Failed to get archive digest")
        return self.h.hexdigest()


def archive_digest(reader, path: str | None = None) -> str:
    """What ``casync digest ARCHIVE [PATH]`` prints (without the newline).

    Without ``path``: the digest of the whole (validated) catar stream.  With ``path``: for a directory,
    the digest of its serialisation (its ENTRY up to and including its GOODBYE record); for a regular
    file, the digest of its payload.  Other file types fail like casync."""
    path = (path or "").strip("/")
    if not path:
        tap = _LazyHash(reader)
        reader.tap = tap
        try:
            reader.consume()
        finally:
            reader.tap = None
        return tap.hexdigest()
    path = "/".join(c for c in path.split("/") if c)
    if not reader.seekable:
        raise ListingError("Failed to seek to a path: the archive is not seekable")
    top = reader.lookup(path)
    if top is None:
        raise ListingError("Seek path not available in archive.")
    algo = _flags.digest_name(reader.feature_flags)
    h = _digest.new(algo)
    if top.isreg():
        for _ in reader.iter_subtree(top):
            for piece in reader.read_payload():
                h.update(piece)
        return h.hexdigest()
    if not top.isdir():
        raise ListingError(f"Path {path} does not refer to a file or directory")
    reader.tap = h.update
    try:
        reader.consume(top)
    finally:
        reader.tap = None
    return h.hexdigest()


def stream_digest(chunks: Iterable[bytes], feature_flags: int) -> str:
    """What ``casync digest DIRECTORY`` prints: the digest of the catar stream the encoder produces
    (``chunks``, e.g. ``encoder.encode(root, feature_flags)``), with the flags' digest algorithm."""
    h = _digest.new(_flags.digest_name(feature_flags))
    for c in chunks:
        h.update(c)
    return h.hexdigest()
