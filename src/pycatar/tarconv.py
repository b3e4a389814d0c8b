"""Conversion between tar and catar (spec/tar.md), with Python's :mod:`tarfile`.

* :class:`TarSource`: a tar stream (ustar, GNU, pax; gzip, bzip2, xz or zstd compressed) as a source
  of entries with the same metadata, under the encoder's metadata policy
  (:class:`~pycatar.encoder.EntryPolicy`); :class:`TarEncoder` serialises it into a catar stream
  with the encoder's one serialiser (:class:`~pycatar.encoder.CatarSerializer`).
  Members may come in any order: their metadata is kept in memory, their contents are read from the
  tar itself when it is an uncompressed regular file, else spooled into one unlinked temporary file.
* :func:`write_tar`: the entries of a catar (or of a sub-tree) become a deterministic pax tar.
"""

from __future__ import annotations

import os
import stat as st
import sys
import tarfile
import tempfile
from decimal import Decimal, InvalidOperation, ROUND_FLOOR

from .decoder import MAX_DEPTH
from .validate import mtime_ns, user_name_ok, xattr_name_ok
from .encoder import PAYLOAD_BLOCK, CatarSerializer, EncoderOptions, EntryPolicy, type_stored
from .entry import Entry
from .errors import FormatError, PycatarError, UsageError
from .flags import Flag

_ENCODING = sys.getfilesystemencoding()
_ERRORS = "surrogateescape"
_NS = 1_000_000_000
_I64 = 1 << 63

#: the exclude bits never apply to tar input (TAR-3)
_EXCLUDE_BITS = Flag.EXCLUDE_FILE | Flag.EXCLUDE_NODUMP | Flag.EXCLUDE_SUBMOUNTS
#: what a tar can carry (reported as the "covering" flags with -v)
TAR_COVERING = (Flag.WITH_16BIT_UIDS | Flag.WITH_32BIT_UIDS | Flag.WITH_USER_NAMES | Flag.WITH_SEC_TIME | Flag.WITH_USEC_TIME
                | Flag.WITH_NSEC_TIME | Flag.WITH_2SEC_TIME | Flag.WITH_READ_ONLY | Flag.WITH_PERMISSIONS | Flag.WITH_SYMLINKS
                | Flag.WITH_DEVICE_NODES | Flag.WITH_FIFOS | Flag.WITH_XATTRS | Flag.WITH_SELINUX | Flag.WITH_FCAPS)

_XATTR_PREFIX = "SCHILY.xattr."
_SELINUX_KEY = "RHT.security.selinux"  # GNU tar's --selinux
_MAGICS = (
    (b"\x1f\x8b\x08", "gz"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst"),
)


class TarError(PycatarError):
    """The tar input cannot be converted (malformed, unsafe or unsupported)."""


# --------------------------------------------------------------------------- reading tar


class _Prefixed:
    """A binary reader that yields ``head`` and then the rest of ``f``."""

    def __init__(self, head: bytes, f):
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._f.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            if len(data) < n:
                data += self._f.read(n - len(data))
            return data
        return self._f.read(n)

    def readable(self) -> bool:
        return True


class _FirstBlock:
    """Remembers the first tar block of a stream (to tell an empty tar from a broken one)."""

    def __init__(self, head: bytes, f=None):
        self.block = head[:tarfile.BLOCKSIZE]
        self._f = f

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if len(self.block) < tarfile.BLOCKSIZE:
            self.block += data[:tarfile.BLOCKSIZE - len(self.block)]
        return data

    def zero(self) -> bool:
        return len(self.block) == tarfile.BLOCKSIZE and not any(self.block)


def _read_head(f, n: int) -> bytes:
    head = b""
    while len(head) < n:
        data = f.read(n - len(head))
        if not data:
            break
        head += data
    return head


def _decompressor(comp: str, f):
    if comp == "gz":
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb")
    if comp == "bz2":
        import bz2

        return bz2.BZ2File(f, "rb")
    if comp == "xz":
        import lzma

        return lzma.LZMAFile(f, "rb")
    return _ZstdReader(f)


class _ZstdReader:
    """zstd frames (one or more) decompressed as a stream; input ending inside a frame is an error
    (zstandard's stream_reader would return the data so far).  Input is fed in pieces small enough
    that one call yields at most a few MiB, whatever the compression ratio."""

    _TARGET = 4 << 20

    def __init__(self, f):
        import zstandard

        self._f = f
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._d = self._new()
        self._in_frame = False
        self._buf = bytearray()
        self._pos = 0
        self._feed = 1 << 16
        self._eof = False

    def _fill(self) -> None:
        data = self._f.read(self._feed)
        if not data:
            self._eof = True
            if self._in_frame:
                raise EOFError("zstd stream ends inside a frame")
            return
        fed, out = len(data), 0
        while data:
            piece = self._d.decompress(data)
            out += len(piece)
            self._buf += piece
            self._in_frame = True
            if not self._d.eof:
                break
            data = self._d.unused_data
            self._d = self._new()
            self._in_frame = False
        ratio = max(1, out // fed)
        self._feed = max(256, min(1 << 16, self._TARGET // ratio))

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        while not self._eof and len(self._buf) - self._pos < n:
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._fill()
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += len(out)
        return out

    def close(self) -> None:
        pass


def _is_bzip2(head: bytes) -> bool:
    return head[:3] == b"BZh" and head[4:10] == b"1AY&SY"


class _TarInput:
    """A tar opened for reading: random access for uncompressed regular files, a stream otherwise."""

    def __init__(self, path: str | None):
        self.name = "standard input" if path is None else path
        self._close = []
        if path is None:
            raw = sys.stdin.buffer
            if raw.isatty():
                raise UsageError("Refusing to read a tar from a terminal.")
        else:
            try:
                raw = open(path, "rb")
            except OSError as e:
                raise PycatarError(f"Failed to open {path}: {e.strerror}") from None
            self._close.append(raw)
        head = _read_head(raw, tarfile.BLOCKSIZE)
        if not head:
            self.close()
            raise TarError(f"Failed to read the tar from {self.name}: empty input, not a tar")
        comp = next((c for magic, c in _MAGICS if head.startswith(magic)), "bz2" if _is_bzip2(head) else None)
        kw = dict(encoding=_ENCODING, errors=_ERRORS)
        self.random_access = comp is None and path is not None and st.S_ISREG(os.fstat(raw.fileno()).st_mode)
        first = _FirstBlock(head) if comp is None else None
        self.tar = None
        try:
            if self.random_access:
                raw.seek(0)
                self.tar = tarfile.open(fileobj=raw, mode="r:", **kw)
            else:
                stream = _Prefixed(head, raw)
                if comp is not None:  # decompressed here: tarfile's own stream mode ignores corrupt data
                    stream = _decompressor(comp, stream)
                    self._close.append(stream)
                    stream = first = _FirstBlock(b"", stream)
                self.tar = tarfile.open(fileobj=stream, mode="r|", **kw)
        except tarfile.ReadError as e:
            if not first.zero():  # a tar of nothing: only end-of-archive blocks (TAR-2)
                self.close()
                raise self.error(e) from None
        except Exception as e:
            self.close()
            raise self.error(e) from None
        if self.tar is not None:
            self._close.append(self.tar)

    def members(self):
        return iter(()) if self.tar is None else iter(self.tar)

    def error(self, e: BaseException) -> PycatarError:
        if isinstance(e, PycatarError):
            return e
        text = str(e) or type(e).__name__
        if isinstance(e, tarfile.ReadError) and "empty" in text:
            text = "no tar header at the start (not a tar, or truncated)"
        return TarError(f"Failed to read the tar from {self.name}: {text}")

    def close(self) -> None:
        for obj in reversed(self._close):
            try:
                obj.close()
            except Exception:
                pass
        self._close = []


def _read_errors():
    import lzma
    import zlib

    errors = [tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError]  # OSError: gzip, bz2, I/O
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - a dependency
        pass
    return tuple(errors)


class _Member:
    """One entry of the tree a tar describes, as read from its header (before the feature flags)."""

    __slots__ = ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "size", "target", "major",
                 "minor", "xattrs", "fcaps", "selinux", "payload", "children")

    def __init__(self, ftype: int, mode: int = 0, uid: int = 0, gid: int = 0, mtime: int | None = None):
        self.type = ftype
        self.mode = mode
        self.uid, self.gid = uid, gid
        self.uname = self.gname = None
        self.mtime = mtime  # ns; None for an implied directory (TAR-6)
        self.size = 0
        self.target = None
        self.major = self.minor = 0
        self.xattrs: dict[bytes, bytes] = {}
        self.fcaps = self.selinux = None
        self.payload = None  # (spool offset, size) or the TarInfo to read (random access)
        self.children: dict[bytes, _Member] | None = {} if ftype == st.S_IFDIR else None

    def copy(self) -> _Member:
        m = _Member(self.type)
        for name in _Member.__slots__:
            setattr(m, name, getattr(self, name))
        m.children = {} if self.type == st.S_IFDIR else None
        return m


def clean_member_name(name: str) -> str:
    """The archive path of a tar member name ("" for the root); unsafe names are refused (TAR-4)."""
    if name.startswith("/") or name == "":
        raise TarError(f"Refusing tar member {name!r}: absolute names are not allowed")
    if "\0" in name:
        raise TarError(f"Refusing tar member {name!r}: NUL byte in the name")
    comps = [c for c in name.split("/") if c not in ("", ".")]
    if ".." in comps:
        raise TarError(f"Refusing tar member {name!r}: '..' components are not allowed")
    for c in comps:
        if len(os.fsencode(c)) > 255:
            raise TarError(f"Refusing tar member {name!r}: a name component exceeds 255 bytes")
    if len(comps) > MAX_DEPTH:
        raise TarError(f"Refusing tar member {name!r}: nests deeper than {MAX_DEPTH} directories")
    return "/".join(comps)


def _pax_mtime(ti: tarfile.TarInfo) -> int:
    text = ti.pax_headers.get("mtime")
    if text is not None:
        try:
            d = Decimal(text) * _NS
            if not d.is_finite() or not -_I64 <= d < _I64:
                raise TarError(f"tar member {ti.name!r}: mtime {text} is beyond what catar can store "
                               "(1677 to 2262)")
            ns = int(d.to_integral_value(rounding=ROUND_FLOOR))
        except (InvalidOperation, ValueError):
            raise TarError(f"tar member {ti.name!r}: malformed pax mtime {text!r}") from None
    else:
        ns = int(ti.mtime) * _NS
    if not -_I64 <= ns < _I64:
        raise TarError(f"tar member {ti.name!r}: mtime beyond what catar can store (1677 to 2262)")
    return ns  # before 1970: negative, stored as casync stores it (TAR-5, catar.md CATAR-19)


def _valid_name(name: str) -> str | None:
    if not name:
        return None
    b = os.fsencode(name)
    return name if user_name_ok(b + b"\0") else None


class TarTree:
    """The tree a tar describes: every member placed by its (cleaned) path, later members replacing
    earlier ones as extraction would; payloads spooled or referenced (TAR-7)."""

    def __init__(self, tar_input: _TarInput, spool_dir: str | None = None):
        self.input = tar_input
        self.root = _Member(st.S_IFDIR)  # implied unless the tar has a "." member
        self.newest: int | None = None  # the newest member mtime (ns; negative before 1970)
        self.warnings: list[str] = []
        self._hardlinks: list[str] = []
        self._dropped: dict[str, list[str]] = {}
        self._spool = None
        self._spool_dir = spool_dir
        self._spool_size = 0
        try:
            self._read()
        except BaseException:
            if self._spool is not None:
                self._spool.close()
            raise

    # -- reading

    def _read(self) -> None:
        errors = _read_errors()
        try:
            for ti in self.input.members():
                self._add(ti)
        except errors as e:
            raise self.input.error(e) from None
        if self._spool is not None:
            self._spool.flush()  # payloads are read back with pread
        if self._hardlinks:
            n = len(self._hardlinks)
            self.warnings.append(f"{n} hard link{'s' if n > 1 else ''} stored as {'copies' if n > 1 else 'a copy'} "
                                 f"(catar has no hard links), e.g. {self._hardlinks[0]}")
        for what, paths in sorted(self._dropped.items()):
            self.warnings.append(f"{what} not converted for {len(paths)} member{'s' if len(paths) > 1 else ''}, "
                                 f"e.g. {paths[0] or '.'}")

    def _drop(self, what: str, path: str) -> None:
        self._dropped.setdefault(what, []).append(path)

    def _add(self, ti: tarfile.TarInfo) -> None:
        path = clean_member_name(ti.name)
        if ti.islnk():
            target_path = clean_member_name(ti.linkname)
            target = self._find(target_path)
            if target is None or target.type == st.S_IFDIR:
                raise TarError(f"tar member {ti.name!r}: hard link to {ti.linkname!r}, which is not a file "
                               "earlier in the tar")
            self._hardlinks.append(path or ".")
            self._place(path, target.copy(), ti.name)
            return
        if ti.isreg():
            ftype = st.S_IFREG
        elif ti.isdir():
            ftype = st.S_IFDIR
        elif ti.issym():
            ftype = st.S_IFLNK
        elif ti.ischr():
            ftype = st.S_IFCHR
        elif ti.isblk():
            ftype = st.S_IFBLK
        elif ti.isfifo():
            ftype = st.S_IFIFO
        elif ti.type == b"V":  # GNU volume label: not a file
            self._drop("GNU volume label", path)
            return
        else:
            raise TarError(f"tar member {ti.name!r}: unsupported member type {ti.type!r}")
        m = _Member(ftype, ti.mode & 0o7777, ti.uid, ti.gid, _pax_mtime(ti))
        self.newest = m.mtime if self.newest is None else max(self.newest, m.mtime)
        m.uname, m.gname = _valid_name(ti.uname), _valid_name(ti.gname)
        if ftype == st.S_IFLNK:
            target = os.fsencode(ti.linkname)
            if not target or b"\0" in target or len(target) > 4095:
                raise TarError(f"tar member {ti.name!r}: symlink target empty, with NUL or longer than 4095 bytes")
            m.target = ti.linkname
        elif ftype in (st.S_IFCHR, st.S_IFBLK):
            m.major, m.minor = ti.devmajor, ti.devminor
        self._pax_extras(ti, m, path)
        if ftype == st.S_IFREG:
            m.size = ti.size
            m.payload = ti if self.input.random_access else self._spool_member(ti)
        self._place(path, m, ti.name)

    def _pax_extras(self, ti: tarfile.TarInfo, m: _Member, path: str) -> None:
        for key, value in ti.pax_headers.items():
            if key.startswith(_XATTR_PREFIX):
                name = key[len(_XATTR_PREFIX):].encode("utf-8", _ERRORS)
                data = value.encode("utf-8", _ERRORS)
                if name == b"security.capability":
                    if len(data) <= 65536:
                        m.fcaps = data
                elif name == b"security.selinux":
                    m.selinux = data
                elif m.type == st.S_IFLNK:  # catar holds no xattrs of symlinks (catar.md CATAR-13)
                    self._drop("xattrs of symlinks", path)
                elif name.startswith((b"user.", b"trusted.")) and xattr_name_ok(name) and len(data) <= 65536:
                    m.xattrs[name] = data
                else:
                    self._drop(f"xattr {os.fsdecode(name)}", path)
            elif key == _SELINUX_KEY:
                m.selinux = value.encode("utf-8", _ERRORS)
            elif key.startswith("SCHILY.acl."):
                self._drop("ACLs (SCHILY.acl.*)", path)
        if m.selinux is not None:
            label = m.selinux.rstrip(b"\0")
            m.selinux = os.fsdecode(label) if label and b"\0" not in label and len(label) < 4096 else None

    def _spool_member(self, ti: tarfile.TarInfo):
        if self._spool is None:
            try:
                self._spool = tempfile.TemporaryFile(prefix=".pycatar-tar-spool-", dir=self._spool_dir)
            except OSError as e:
                raise PycatarError(f"Failed to create a spool file in {self._spool_dir or tempfile.gettempdir()}: "
                                   f"{e.strerror or e}") from None
        src = self.input.tar.extractfile(ti)
        start = self._spool_size
        left = ti.size
        while left:
            data = src.read(min(PAYLOAD_BLOCK, left))
            if not data:
                raise TarError(f"tar member {ti.name!r}: unexpected end of data")
            try:
                self._spool.write(data)
            except OSError as e:
                raise PycatarError(f"Failed to spool tar member {ti.name!r}: {e.strerror or e}") from None
            left -= len(data)
        self._spool_size += ti.size
        return (start, ti.size)

    def _find(self, path: str) -> _Member | None:
        node = self.root
        for comp in path.split("/") if path else ():
            if node.children is None:
                return None
            node = node.children.get(os.fsencode(comp))
            if node is None:
                return None
        return node

    def _place(self, path: str, m: _Member, shown: str) -> None:
        if not path:
            if m.type != st.S_IFDIR:
                raise TarError(f"tar member {shown!r}: the root of the tree must be a directory")
            m.children = self.root.children
            self.root = m
            return
        comps = path.split("/")
        node = self.root
        for i, comp in enumerate(comps[:-1]):
            key = os.fsencode(comp)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Member(st.S_IFDIR, 0o755, 0, 0, None)
            elif child.children is None:
                raise TarError(f"tar member {shown!r}: {'/'.join(comps[:i + 1])!r} is not a directory")
            node = child
        key = os.fsencode(comps[-1])
        old = node.children.get(key)
        if old is not None and old.children is not None:
            if m.children is not None:
                m.children = old.children  # a directory again: its metadata changes, its contents stay
            elif old.children:
                raise TarError(f"tar member {shown!r} would replace a directory that is not empty")
        node.children[key] = m

    # -- payloads

    def read_payload(self, m: _Member):
        if isinstance(m.payload, tarfile.TarInfo):
            f = self.input.tar.extractfile(m.payload)
            left = m.size
            while left:
                data = f.read(min(PAYLOAD_BLOCK, left))
                if not data:
                    raise TarError(f"tar member {m.payload.name!r}: unexpected end of data")
                left -= len(data)
                yield data
            return
        offset, left = m.payload
        fd = self._spool.fileno()
        while left:
            data = os.pread(fd, min(PAYLOAD_BLOCK, left), offset)
            if not data:
                raise TarError("the tar spool file shrank")
            offset += len(data)
            left -= len(data)
            yield data

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self.input.close()


class TarSource:
    """A tar (a path, or None for standard input) as a source of entries for
    :class:`~pycatar.encoder.CatarSerializer`: the same events as the directory walker's
    (:meth:`pycatar.encoder.TreeWalker.events`), each member's token for :meth:`read_payload`.

    ``feature_flags`` choose what is stored, as for a directory (the exclude bits are cleared, TAR-3);
    ``options`` are :class:`~pycatar.encoder.EncoderOptions` fields (``owner``, ``clamp_mtime_ns``...).
    ``spool_dir``: where to spool the payloads of a compressed or piped tar (default: ``$TMPDIR``)."""

    def __init__(self, source: str | None, feature_flags: int, *, spool_dir: str | None = None, **options):
        options.pop("require_flags", None)  # a property of trees on disk
        self.policy = EntryPolicy(EncoderOptions(int(feature_flags) & ~_EXCLUDE_BITS, **options))
        tar_input = _TarInput(source)
        try:
            self.tree = TarTree(tar_input, spool_dir)
        except BaseException:
            tar_input.close()
            raise

    @property
    def feature_flags(self) -> int:
        return self.policy.flags

    @property
    def covering_flags(self) -> int:
        return TAR_COVERING

    @property
    def warnings(self) -> list[str]:
        return self.tree.warnings

    def read_payload(self, entry: Entry, m: _Member):
        try:
            yield from self.tree.read_payload(m)
        except _read_errors() as e:
            raise self.tree.input.error(e) from None

    def entry(self, m: _Member, path: str) -> Entry:
        """The Entry of a member, as the feature flags store it."""
        p = self.policy
        flags = p.flags
        if m.mtime is None:  # an implied directory (TAR-6)
            newest = self.tree.newest
            e = p.base_entry(path, st.S_IFDIR | 0o755, p.uid_shift, p.uid_shift, 0 if newest is None else newest,
                             lambda _i: None, lambda _i: None)
            return e
        uname, gname = m.uname, m.gname
        e = p.base_entry(path, m.type | m.mode, m.uid, m.gid, m.mtime, lambda _i: uname, lambda _i: gname)
        if flags & Flag.WITH_XATTRS and m.xattrs:
            e.xattrs = sorted(m.xattrs.items())
        if flags & Flag.WITH_FCAPS and m.fcaps is not None and m.type == st.S_IFREG:
            e.fcaps = m.fcaps
        if flags & Flag.WITH_SELINUX and m.selinux is not None:
            e.selinux = m.selinux
        if m.type == st.S_IFREG:
            e.size = m.size
        elif m.type == st.S_IFLNK:
            e.target = m.target
        elif m.type in (st.S_IFCHR, st.S_IFBLK):
            e.rdev_major, e.rdev_minor = m.major, m.minor
        return e

    def events(self):
        """The tree's entries in archive order (see :meth:`pycatar.encoder.TreeWalker.events`)."""
        flags = self.policy.flags
        root = self.entry(self.tree.root, "")
        yield 0, root, self.tree.root
        stack = [(root, iter(sorted(self.tree.root.children.items())), "")]
        while stack:
            dentry, children, prefix = stack[-1]
            for bname, m in children:
                if not type_stored(flags, m.type):
                    continue
                path = prefix + os.fsdecode(bname)
                e = self.entry(m, path)
                yield 0, e, m
                if m.children is not None:
                    stack.append((e, iter(sorted(m.children.items())), path + "/"))
                    break
            else:
                stack.pop()
                yield 1, dentry, None

    def close(self) -> None:
        self.tree.close()


class TarEncoder(CatarSerializer):
    """The catar stream of a tar (:class:`TarSource`, same arguments).  Iterate for the bytes; use
    as a context manager (or call :meth:`close`) to release the tar and the spool file."""

    def __init__(self, source: str | None, feature_flags: int, *, spool_dir: str | None = None, **options):
        super().__init__(TarSource(source, feature_flags, spool_dir=spool_dir, **options))

    @property
    def warnings(self) -> list[str]:
        return self.source.warnings

    def close(self) -> None:
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --------------------------------------------------------------------------- writing tar


class _TarInfo(tarfile.TarInfo):
    """TarInfo whose pax records carry values that are not UTF-8 (binary xattr values, non-UTF-8 file
    names) as their raw bytes, as GNU tar and star write them, without the ``hdrcharset`` record
    tarfile would add (GNU tar warns about that keyword).  TAR-11."""

    @classmethod
    def _create_pax_generic_header(cls, pax_headers, type, encoding):  # noqa: A002 - tarfile's signature
        records = []
        for keyword, value in pax_headers.items():
            body = b" " + keyword.encode("utf-8") + b"=" + value.encode("utf-8", _ERRORS) + b"\n"
            n = len(body)
            size = n + len(str(n))
            size = n + len(str(size))  # the length field counts its own digits
            records.append(str(size).encode("ascii") + body)
        data = b"".join(records)
        info = {"name": "././@PaxHeader", "type": type, "size": len(data), "magic": tarfile.POSIX_MAGIC}
        return cls._create_header(info, tarfile.USTAR_FORMAT, "ascii", "replace") + cls._create_payload(data)


class _PieceReader:
    """A ``read(n)`` file object over an iterator of byte pieces (a catar payload)."""

    def __init__(self, pieces):
        self._it = iter(pieces)
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        out = []
        want = n
        while want != 0:
            if self._pos >= len(self._buf):
                self._buf = next(self._it, None)
                self._pos = 0
                if self._buf is None:
                    self._buf = b""
                    break
                continue
            end = len(self._buf) if want < 0 else min(len(self._buf), self._pos + want)
            piece = self._buf[self._pos:end]
            out.append(piece)
            self._pos = end
            if want > 0:
                want -= len(piece)
        return b"".join(out)


class TarStats:
    def __init__(self):
        self.members = 0
        self.skipped: dict[str, list[str]] = {}

    def skip(self, what: str, path: str) -> None:
        self.skipped.setdefault(what, []).append(path)

    def warnings(self) -> list[str]:
        out = []
        for what, paths in sorted(self.skipped.items()):
            n = len(paths)
            out.append(f"{what} for {n} entr{'ies' if n > 1 else 'y'}, e.g. {paths[0] or '.'}")
        return out


def _mtime_text(ns: int) -> str:
    sec, frac = divmod(abs(ns), _NS)
    return ("-" if ns < 0 else "") + f"{sec}.{frac:09d}".rstrip("0").rstrip(".")


def _tar_names(root_path: str, whole: bool):
    """How archive paths map to member names: "./…" for a whole archive (as ``tar -C DIR -c .``),
    the sub-tree's own name first for a sub-path (as ``extract ARCHIVE DIR SUBPATH`` creates it)."""
    if whole:
        return lambda p: "./" + p if p else "."
    cut = len(root_path) - len(root_path.rsplit("/", 1)[-1])
    return lambda p: p[cut:]


def tar_member(entry: Entry, name: str, replay: int, stats: TarStats) -> tarfile.TarInfo | None:
    """The TarInfo of one entry (None for a socket, which tar cannot hold)."""
    ti = _TarInfo(name)
    pax: dict[str, str] = {}
    mode = entry.mode
    if entry.isdir():
        ti.type = tarfile.DIRTYPE
    elif entry.isreg():
        ti.type = tarfile.REGTYPE
        ti.size = entry.size
    elif entry.issym():
        ti.type = tarfile.SYMTYPE
        ti.linkname = entry.target
    elif entry.isdev():
        ti.type = tarfile.CHRTYPE if st.S_ISCHR(mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = entry.rdev_major, entry.rdev_minor
    elif entry.isfifo():
        ti.type = tarfile.FIFOTYPE
    else:
        stats.skip("sockets left out (tar cannot hold them)", entry.path)
        return None
    ti.mode = mode & 0o7777
    if replay & (Flag.WITH_16BIT_UIDS | Flag.WITH_32BIT_UIDS):
        ti.uid, ti.gid = entry.uid, entry.gid
    if replay & Flag.WITH_USER_NAMES:
        ti.uname, ti.gname = entry.user or "", entry.group or ""
    if replay & (Flag.WITH_SEC_TIME | Flag.WITH_USEC_TIME | Flag.WITH_NSEC_TIME | Flag.WITH_2SEC_TIME):
        ns = mtime_ns(entry.mtime)  # before 1970: negative (catar.md CATAR-19)
        ti.mtime = ns // _NS
        if ns % _NS or ns < 0:
            pax["mtime"] = _mtime_text(ns)
    if replay & Flag.WITH_XATTRS:
        for xname, value in entry.xattrs:
            pax[_XATTR_PREFIX + xname.decode("utf-8", _ERRORS)] = value.decode("utf-8", _ERRORS)
    if replay & Flag.WITH_FCAPS and entry.fcaps is not None:
        pax[_XATTR_PREFIX + "security.capability"] = entry.fcaps.decode("utf-8", _ERRORS)
    if replay & Flag.WITH_SELINUX and entry.selinux is not None:
        pax[_SELINUX_KEY] = entry.selinux
    if replay & Flag.WITH_ACL and (entry.acl_user or entry.acl_group or entry.acl_group_obj is not None
                                or entry.acl_default is not None or entry.acl_default_user
                                or entry.acl_default_group):
        stats.skip("ACLs dropped (not written to tar)", entry.path)
    if entry.flags:
        stats.skip("chattr/FAT/subvolume flags dropped (tar cannot hold them)", entry.path)
    if entry.quota_projid:
        stats.skip("quota project ids dropped (tar cannot hold them)", entry.path)
    ti.pax_headers = pax
    return ti


def write_tar(reader, out, subpath: str | None = None) -> TarStats:
    """Write the entries of ``reader`` (a :class:`~pycatar.decoder.CatarReader`), or of the sub-tree at
    ``subpath``, to the binary file ``out`` as a pax tar (TAR-10…TAR-13)."""
    from .entry import select_subtree
    from .extract import normalize_subpath

    sub = normalize_subpath(subpath)
    missing = lambda: PycatarError(f"Failed to seek to {sub}: No such file or directory")  # noqa: E731
    if sub is None:
        entries = iter(reader)
    elif reader.seekable:
        entry = reader.lookup(sub)
        if entry is None:
            raise missing()
        entries = reader.iter_subtree(entry)
    else:
        entries = select_subtree(iter(reader), sub, missing)
    stats = TarStats()
    name_of = _tar_names(sub or "", sub is None)
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding=_ENCODING, errors=_ERRORS)
    try:
        for entry in entries:
            replay = reader.replay_flags if reader.replay_flags is not None else entry.feature_flags
            ti = tar_member(entry, name_of(entry.path), replay, stats)
            if ti is None:
                continue
            if entry.isreg():
                tf.addfile(ti, _PieceReader(reader.read_payload()))
            else:
                tf.addfile(ti)
            stats.members += 1
    except (UnicodeEncodeError, ValueError) as e:
        raise FormatError(f"Failed to write the tar: {e}") from None
    finally:
        tf.close()
    return stats
