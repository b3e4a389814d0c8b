"""Archives and indexes as lazy, read-only FUSE file systems (``pycatar mount``).

* A ``.catar`` or ``.caidx`` shows its tree with everything the archive carries: modes, owners,
  nanosecond times, symlinks, devices, fifos, sockets, xattrs, ACLs (``system.posix_acl_access`` /
  ``_default`` in the kernel's binary form), file capabilities (``security.capability``), SELinux
  labels (``security.selinux``).  Looking up a name and listing a directory read only that
  directory's GOODBYE table and its children's entries (:meth:`CatarReader.child`,
  :meth:`CatarReader.children`); reading a file reads only its payload's bytes, i.e. for a
  ``.caidx`` only the chunks that hold them (:meth:`IndexStream.read_at`: shared cache bounded in
  bytes, a chunk fetched once however many readers want it, read-ahead in the pool for sequential
  reads).
* A ``.caibx`` shows the blob as one read-only file, named after the index without its suffix.

Inode numbers are the entry's archive offset plus one (the mounted root is inode 1).  A chunk that
cannot be fetched or fails its digest, or a malformed archive, gives EIO for that request and one
log line; the file system stays up.

The binding is pyfuse3 (libfuse3, trio), an optional dependency: ``pip install 'pycatar[mount]'``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as _stat
import threading
import time

from . import fsmeta
from .blob import IndexStream
from .decoder import CatarReader
from .entry import Entry
from .extract import shift_id
from .errors import PycatarError, UsageError
from .flags import Flag as _I
from .index import IndexReader

log = logging.getLogger("pycatar.mount")

#: bytes of decompressed chunks kept for all readers together
CACHE_BYTES = 128 << 20
#: how long the kernel may keep names and attributes (nothing ever changes)
_TIMEOUT = 3600.0
_REPEAT_QUIET = 1.0  # seconds: the same error again within this time is not logged again
_NOBODY = 65534  # the kernel's overflow id, for ids that do not map


def _pyfuse3():
    try:
        import pyfuse3
        import trio
    except ImportError:
        raise UsageError("mount needs pyfuse3 (pip install 'pycatar[mount]'; Debian: libfuse3-dev, fuse3)") from None
    return pyfuse3, trio


class _View:
    """A file object over an :class:`IndexStream` for the decoder: its own position, reads without
    read-ahead (metadata reads must not pull in the payload chunks that follow)."""

    def __init__(self, stream: IndexStream):
        self.stream = stream
        self.pos = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = offset if whence == os.SEEK_SET else (self.stream.size + offset if whence == os.SEEK_END
                                                          else self.pos + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.stream.size - self.pos
        data = self.stream.read_at(self.pos, n, readahead=False)
        self.pos += len(data)
        return data


class Image:
    """What a mount shows, independent of FUSE: nodes by inode number, their attributes, names,
    link targets, xattrs and bytes.  Every method may block (reads chunks) and is thread-safe."""

    def __init__(self, source: str, kind: str, stores=None, *, subpath: str | None = None,
                 feature_mask: int | None = None, seeds=(), seed_cache: str | None = None,
                 uid_shift: int = 0, uid_range: int = 0, threads: int | None = None,
                 cache_bytes: int = CACHE_BYTES):
        self.kind = kind
        self._uid_shift, self._uid_range = uid_shift, uid_range
        self._closers = []
        self._lock = threading.Lock()  # the decoder's state and its file position
        self.stream: IndexStream | None = None
        self._fd = -1
        try:
            if kind == "archive":
                f = open(source, "rb")
                self._closers.append(f)
                self._fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
                decoder_input = f
            else:
                index = IndexReader(source)
                self._closers.append(index)
                if seeds:  # chunks a seed holds come from the seed, as for extract (spec/seeds.md)
                    from .assembly import Assembler

                    stores = Assembler.open(index, stores, seeds, cache=seed_cache, self_seed=False, reflink=False,
                                            warn=log.warning)
                    self._closers.append(stores)
                self.stream = IndexStream(index, stores, threads=threads or None, cache_size=1 << 20,
                                          cache_bytes=cache_bytes)
                decoder_input = _View(self.stream)
            st = os.stat(source)
            self.time_ns = st.st_mtime_ns
            if kind == "blob-index":
                self.blob_name = os.fsencode(os.path.basename(source)[:-len(".caibx")] if source.endswith(".caibx")
                                             and len(os.path.basename(source)) > 6 else "blob")
                self.reader = None
                return
            # on a .caidx, reading past what a record needs could fetch the next (payload) chunk
            self.reader = CatarReader(decoder_input, feature_mask=feature_mask,
                                      lookup_readahead=0 if self.stream is not None else 4096)
            root, end = self.reader.root()
            for comp in (c for c in (subpath or "").split("/") if c):
                found = self.reader.child(root, end, os.fsencode(comp))
                if found is None:
                    raise PycatarError(f"{subpath}: no such path in the archive")
                root, end = found
            if not root.isdir():
                raise PycatarError(f"{subpath}: not a directory")
            self.replay = self.reader.replay_flags
            self._root_offset = root.offset
            self._nodes: dict[int, tuple[Entry, int, int]] = {1: (root, end, 1)}  # entry, end, lookups
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        for c in reversed(self._closers):
            c.close()
        self._closers = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # ------------------------------------------------------------------ the tree

    def ino(self, entry: Entry) -> int:
        return 1 if entry.offset == self._root_offset else entry.offset + 1

    def node(self, ino: int) -> tuple[Entry, int]:
        with self._lock:
            return self._nodes[ino][:2]

    def remember(self, node: tuple[Entry, int]) -> int:
        """Count one more kernel reference to a node (FUSE's lookup count); returns its inode."""
        ino = self.ino(node[0])
        if ino != 1:
            with self._lock:
                known = self._nodes.get(ino)
                self._nodes[ino] = (node[0], node[1], (known[2] if known else 0) + 1)
        return ino

    def forget(self, ino: int, n: int) -> None:
        if ino != 1:
            with self._lock:
                known = self._nodes.get(ino)
                if known is not None:
                    if known[2] <= n:
                        del self._nodes[ino]
                    else:
                        self._nodes[ino] = (known[0], known[1], known[2] - n)

    def lookup(self, parent: int, name: bytes) -> tuple[Entry, int] | None:
        entry, end = self.node(parent)
        with self._lock:
            return self.reader.child(entry, end, name)

    def children(self, ino: int) -> list[tuple[Entry, int]]:
        entry, end = self.node(ino)
        with self._lock:
            return self.reader.children(entry, end)

    # ------------------------------------------------------------------ attributes

    def _id(self, ident: int) -> int:
        r = shift_id(ident, self._uid_shift, self._uid_range)
        return _NOBODY if r is None else r

    def owner(self, entry: Entry) -> tuple[int, int]:
        """As extraction chooses them: a stored name known here gives its local id, else the stored
        id, shifted by ``--uid-shift``/``--uid-range``."""
        uid, gid = self._id(entry.uid), self._id(entry.gid)
        if self.replay & _I.WITH_USER_NAMES:
            if entry.user is not None:
                uid = _local_id(entry.user, False, uid)
            if entry.group is not None:
                gid = _local_id(entry.group, True, gid)
        return uid, gid

    def xattrs(self, entry: Entry) -> dict[bytes, bytes]:
        replay = self.replay
        out: dict[bytes, bytes] = {}
        if replay & _I.WITH_XATTRS:
            out.update(entry.xattrs)
        if replay & _I.WITH_ACL and not entry.issym():
            have_access = entry.acl_group_obj is not None or entry.acl_user or entry.acl_group
            values = dict(fsmeta.acl_xattrs(entry, entry.isdir(), self._acl_id))
            if have_access:
                out[fsmeta.ACL_XATTR_ACCESS.encode()] = values[fsmeta.ACL_XATTR_ACCESS]
            if entry.isdir() and entry.acl_default is not None and entry.acl_default.user_obj != 0xFFFFFFFFFFFFFFFF:
                out[fsmeta.ACL_XATTR_DEFAULT.encode()] = values[fsmeta.ACL_XATTR_DEFAULT]
        if replay & _I.WITH_FCAPS and entry.fcaps is not None:
            out[b"security.capability"] = entry.fcaps
        if replay & _I.WITH_SELINUX and entry.selinux is not None:
            out[b"security.selinux"] = os.fsencode(entry.selinux) + b"\0"
        return out

    def _acl_id(self, item, group: bool) -> int:
        ident = self._id(item.id)
        return _local_id(item.name, group, ident) if item.name is not None else ident

    # ------------------------------------------------------------------ bytes

    def read(self, entry: Entry | None, offset: int, size: int, sequential: bool) -> bytes:
        """``size`` bytes at ``offset`` of a file (``None``: the blob)."""
        if entry is None:
            base, length = 0, self.stream.size
        else:
            base, length = entry.payload_offset, entry.size
        if offset >= length or size <= 0:
            return b""
        size = min(size, length - offset)
        if self.stream is None:
            return os.pread(self._fd, size, base + offset)
        return self.stream.read_at(base + offset, size, readahead=sequential, ahead_until=base + length)


def _local_id(name: str, group: bool, default: int) -> int:
    found = fsmeta.group_id(name) if group else fsmeta.user_id(name)
    return default if found is None else found


# --------------------------------------------------------------------------- FUSE


def _fs_class(pyfuse3, trio):
    FUSEError = pyfuse3.FUSEError

    class CatarFS(pyfuse3.Operations):
        """The FUSE side: every request that may read the archive runs in a worker thread."""

        enable_writeback_cache = False

        def __init__(self, image: Image):
            super().__init__()
            self.image = image
            self.blob = image.kind == "blob-index"
            self._dirs: dict[int, list] = {}
            self._files: dict[int, list] = {}  # fh -> [entry, end of the last read]
            self._next_fh = 1
            self._limiter = trio.CapacityLimiter(32)
            self._last_error, self._last_error_at = "", 0.0

        async def _run(self, fn, *args):
            try:
                return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
            except FUSEError:
                raise
            except KeyError:  # a node the kernel has forgotten
                raise FUSEError(errno.ENOENT) from None
            except PycatarError as e:  # a chunk missing or corrupt, a malformed archive
                self._log(str(e))
                raise FUSEError(errno.EIO) from None
            except Exception as e:  # noqa: BLE001 - the file system stays up
                self._log(f"{type(e).__name__}: {e}")
                raise FUSEError(errno.EIO) from None

        def _log(self, message: str) -> None:
            """One line per failure: the kernel retries a failed read at once (a smaller one), which
            would repeat the same message; the same message is logged at most once a second."""
            now = time.monotonic()
            if message != self._last_error or now - self._last_error_at > _REPEAT_QUIET:
                log.error("%s", message)
                self._last_error, self._last_error_at = message, now

        # -- attributes

        def _attr(self, entry: Entry | None, ino: int):
            a = pyfuse3.EntryAttributes()
            img = self.image
            a.st_ino = ino
            a.generation = 0
            a.entry_timeout = a.attr_timeout = _TIMEOUT
            a.st_blksize = 4096
            if entry is None:  # the blob index's root or its one file
                if ino == pyfuse3.ROOT_INODE:
                    a.st_mode, a.st_nlink, a.st_size = _stat.S_IFDIR | 0o555, 2, 0
                else:
                    a.st_mode, a.st_nlink, a.st_size = _stat.S_IFREG | 0o444, 1, img.stream.size
                a.st_uid, a.st_gid = os.getuid(), os.getgid()
                a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = img.time_ns
            else:
                a.st_mode = entry.mode
                a.st_nlink = 1  # no hard links in an archive; directories: "unknown", as btrfs
                a.st_uid, a.st_gid = img.owner(entry)
                if entry.isreg():
                    a.st_size = entry.size
                elif entry.issym():
                    a.st_size = len(os.fsencode(entry.target))
                else:
                    a.st_size = 0
                if entry.isdev():
                    a.st_rdev = os.makedev(entry.rdev_major, entry.rdev_minor)
                a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = entry.mtime
            a.st_blocks = (a.st_size + 511) // 512
            return a

        def _entry(self, ino: int) -> Entry | None:
            if self.blob:
                if ino not in (pyfuse3.ROOT_INODE, 2):
                    raise FUSEError(errno.ENOENT)
                return None
            try:
                return self.image.node(ino)[0]
            except KeyError:
                raise FUSEError(errno.ENOENT) from None

        async def getattr(self, inode, ctx=None):
            return self._attr(self._entry(inode), inode)

        async def lookup(self, parent_inode, name, ctx=None):
            if self.blob:
                if parent_inode == pyfuse3.ROOT_INODE and name == self.image.blob_name:
                    return self._attr(None, 2)
                raise FUSEError(errno.ENOENT)
            if name in (b".", b".."):
                raise FUSEError(errno.ENOENT)
            node = await self._run(self.image.lookup, parent_inode, name)
            if node is None:
                raise FUSEError(errno.ENOENT)
            return self._attr(node[0], self.image.remember(node))

        async def forget(self, inode_list):
            if not self.blob:
                for ino, n in inode_list:
                    self.image.forget(ino, n)

        async def readlink(self, inode, ctx):
            entry = self._entry(inode)
            if entry is None or not entry.issym():
                raise FUSEError(errno.EINVAL)
            return os.fsencode(entry.target)

        async def getxattr(self, inode, name, ctx):
            entry = self._entry(inode)
            value = None if entry is None else self.image.xattrs(entry).get(name)
            if value is None:
                raise FUSEError(pyfuse3.ENOATTR)
            return value

        async def listxattr(self, inode, ctx):
            entry = self._entry(inode)
            return [] if entry is None else list(self.image.xattrs(entry))

        async def statfs(self, ctx):
            s = pyfuse3.StatvfsData()
            s.f_bsize = s.f_frsize = 4096
            s.f_namemax = 255
            return s

        # -- directories

        async def opendir(self, inode, ctx):
            entry = self._entry(inode)
            if self.blob:
                kids = [(self.image.blob_name, None)] if inode == pyfuse3.ROOT_INODE else []
            else:
                if not entry.isdir():
                    raise FUSEError(errno.ENOTDIR)
                kids = [(os.fsencode(k[0].name), k) for k in await self._run(self.image.children, inode)]
            fh = self._next_fh
            self._next_fh += 1
            self._dirs[fh] = kids
            return fh

        async def readdir(self, fh, start_id, token):
            kids = self._dirs.get(fh, [])
            for i in range(start_id, len(kids)):
                name, node = kids[i]
                ino = 2 if node is None else self.image.ino(node[0])
                if not pyfuse3.readdir_reply(token, name, self._attr(node and node[0], ino), i + 1):
                    break
                if node is not None:
                    self.image.remember(node)  # the kernel now holds a reference (readdirplus)

        async def releasedir(self, fh):
            self._dirs.pop(fh, None)

        # -- files

        async def open(self, inode, flags, ctx):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise FUSEError(errno.EROFS)
            entry = self._entry(inode)
            if entry is not None and not entry.isreg():
                raise FUSEError(errno.EINVAL)
            fh = self._next_fh
            self._next_fh += 1
            self._files[fh] = [entry, 0]
            return pyfuse3.FileInfo(fh=fh, keep_cache=True)

        async def read(self, fh, off, size):
            state = self._files.get(fh)
            if state is None:
                raise FUSEError(errno.EBADF)
            entry, last = state
            sequential = off == last  # read-ahead within the file
            data = await self._run(self.image.read, entry, off, size, sequential)
            state[1] = off + len(data)
            return data

        async def release(self, fh):
            self._files.pop(fh, None)

    return CatarFS


class Mount:
    """A mounted :class:`Image`: ``Mount(image, mountpoint).serve()`` runs until unmounted
    (``fusermount3 -u``) or, with ``signals``, until SIGINT/SIGTERM/SIGHUP, then unmounts."""

    def __init__(self, image: Image, mountpoint: str, *, fsname: str = "pycatar"):
        self.pyfuse3, self.trio = _pyfuse3()
        self.image = image
        self.mountpoint = mountpoint
        fs = _fs_class(self.pyfuse3, self.trio)(image)
        options = set(self.pyfuse3.default_options)
        options.add("ro")
        options.add("fsname=" + fsname.replace(",", "_").replace("\\", "_"))
        options.add("subtype=pycatar")
        try:
            self.pyfuse3.init(fs, mountpoint, options)
        except RuntimeError as e:
            raise PycatarError(f"cannot mount on {mountpoint}: {e}") from None

    def serve(self, signals: bool = True) -> None:
        pyfuse3, trio = self.pyfuse3, self.trio

        async def main():
            async with trio.open_nursery() as nursery:
                if signals:
                    nursery.start_soon(stop_on_signal)
                try:
                    await pyfuse3.main()
                except OSError as e:
                    # the kernel aborted the connection (umount -f, fusectl's abort, or now and then
                    # at an unmount): the file system is gone, as at the ENODEV of a plain unmount
                    if e.errno != errno.ECONNABORTED:
                        raise
                    log.info("the kernel ended the FUSE connection: %s", e)
                nursery.cancel_scope.cancel()

        async def stop_on_signal():
            import signal

            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as received:
                async for _ in received:
                    pyfuse3.terminate()
                    return

        try:
            trio.run(main)
        finally:
            pyfuse3.close(unmount=True)  # after an external unmount, only the session is closed


# --------------------------------------------------------------------------- the verb


def mount(source: str, kind: str, mountpoint: str, stores=None, *, subpath: str | None = None,
          feature_mask: int | None = None, seeds=(), seed_cache: str | None = None,
          uid_shift: int = 0, uid_range: int = 0, foreground: bool = False) -> None:
    """Mount ``source`` (a ``kind`` of "archive", "archive-index" or "blob-index") on ``mountpoint``.
    In the foreground: serve until unmounted or interrupted, logging to stderr.  Otherwise: return
    once the file system is mounted, a detached child serving it (logging to syslog)."""
    _pyfuse3()  # fail here, before forking, when the binding is missing

    def start() -> tuple[Image, Mount]:
        image = Image(source, kind, stores, subpath=subpath, feature_mask=feature_mask, seeds=seeds,
                      seed_cache=seed_cache, uid_shift=uid_shift, uid_range=uid_range)
        try:
            return image, Mount(image, mountpoint, fsname=os.path.abspath(source))
        except BaseException:
            image.close()
            raise

    if foreground:
        _log_to(logging.StreamHandler())
        image, m = start()
        try:
            m.serve()
        finally:
            image.close()
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid:  # the parent waits until the child has mounted (or failed), then returns
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            answer = pipe.read()
        if answer == b"ok":
            return
        os.waitpid(pid, 0)
        raise PycatarError(answer.decode(errors="replace") or "mount failed")
    code = 1
    try:
        os.close(r)
        try:
            os.setsid()
            image, m = start()
        except BaseException as e:  # noqa: BLE001 - reported by the parent
            os.write(w, (str(e) or type(e).__name__).encode())
            os._exit(1)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        try:
            from logging.handlers import SysLogHandler

            _log_to(SysLogHandler(address="/dev/log"))
        except OSError:
            pass  # no syslog here: errors are still EIO to the reader
        os.write(w, b"ok")
        os.close(w)
        try:
            m.serve()
            code = 0
        finally:
            image.close()
    finally:
        os._exit(code)


def _log_to(handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter("pycatar mount: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
