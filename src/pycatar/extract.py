"""Extraction: turning a stream of catar entries back into a directory tree, as ``casync extract`` does.

The normative rules are in spec/extract.md (EXTRACT-n).  In short:

* What is restored is decided by the *replay flags*: the archive's feature flags, widened to all
  redundant bits, intersected with the caller's mask and normalised again (:func:`replay_flags`).
* Every node is created through the file descriptor of its parent directory (``*at()`` calls,
  ``O_NOFOLLOW``), so nothing in the target tree (a symlink planted where the archive has a
  directory, say) can redirect a write outside the destination.
* Everything but directories is built under a temporary name (``.#<name><16 hex digits>``) in the
  target directory and renamed into place once complete, so no file ever appears under its final
  name with partial content.  A failure removes the temporary names it leaves behind.
* Metadata is applied in casync's order: owner, mode, ACLs, xattrs, file capabilities, SELinux
  label, mtime, rename into place, then chattr flags (so immutable/append-only come last), FAT
  attributes, and finally a check that the file system kept the mtime at the archive's precision.
  Directories are finalised after their children, so their mtimes and flags stick.

Only Linux is supported.
"""

from __future__ import annotations

import collections
import errno
import gc
import itertools
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator

from .pool import Future, ThreadPool

from . import fsmeta
from . import _fileio
from .entry import Entry, select_subtree
from .errors import FormatError, PycatarError, UnsupportedError
from .fileio import Payload, create, random_tag, temp_name, write_pieces
from .flags import Flag as F
from .validate import mtime_ns
from .flags import (
    BTRFS_SUPER_MAGIC,
    FLAGS_MAX,
    FS_IMMUTABLE_FL,
    FS_NOATIME_FL,
    FS_COMPR_FL,
    FS_NOCOW_FL,
    FS_NOCOMP_FL,
    FS_PROJINHERIT_FL,
    FUSE_SUPER_MAGIC,
    MSDOS_SUPER_MAGIC,
    WITH_CHATTR,
    WITH_FAT_ATTRS,
    WITH_UIDS,
    normalize,
    normalize_mask,
    time_granularity_ns,
    to_chattr,
    to_fat_attrs,
)
from .record import Record

__all__ = ["ExtractStats", "extract", "extract_archive", "replay_flags", "normalize_subpath"]

#: chattr flags that only take (or are best applied) on an empty file or directory; they are set right
#: after creation, the others after the payload and the rename.
EARLY_CHATTR = FS_NOATIME_FL | FS_COMPR_FL | FS_NOCOW_FL | FS_NOCOMP_FL | FS_PROJINHERIT_FL


_UID_INVALID = 0xFFFFFFFF
_UNSUPPORTED = frozenset({errno.ENOTTY, errno.ENOSYS, errno.EBADF, errno.EOPNOTSUPP, errno.EINVAL})
_NO_XATTRS = frozenset({errno.EOPNOTSUPP, errno.EBADF})

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY

_RENAME_EXCHANGE = 2


_SELINUX_XATTR = "security.selinux"
_FCAPS_XATTR = "security.capability"


class ExtractStats(Record):
    """What an extraction did."""

    __slots__ = ("entries", "directories", "files", "symlinks", "devices", "fifos", "sockets", "skipped",
                 "payload_bytes", "hole_bytes", "deleted", "feature_flags", "replay_flags")

    def __init__(self, entries: int = 0, directories: int = 0, files: int = 0, symlinks: int = 0,
                 devices: int = 0, fifos: int = 0, sockets: int = 0, skipped: int = 0, payload_bytes: int = 0,
                 hole_bytes: int = 0, deleted: int = 0, feature_flags: int = 0, replay_flags: int = 0) -> None:
        self.entries = entries  # archive entries seen (within the extracted subtree)
        self.directories = directories
        self.files = files
        self.symlinks = symlinks
        self.devices = devices
        self.fifos = fifos
        self.sockets = sockets
        self.skipped = skipped  # entries of a type the replay flags exclude (symlinks, devices, fifos, sockets)
        self.payload_bytes = payload_bytes  # regular file bytes restored
        self.hole_bytes = hole_bytes  # of those, left as holes rather than written
        self.deleted = deleted  # pre-existing entries removed because the archive does not list them
        self.feature_flags = feature_flags  # the archive's feature flags
        self.replay_flags = replay_flags  # what was restored (see replay_flags())


# --------------------------------------------------------------------------- flags and paths


def replay_flags(archive_flags: int, feature_mask: int | None = None) -> int:
    """The feature flags an extraction restores: the archive's flags with every redundant bit set,
    restricted to ``feature_mask`` (itself widened the same way; None allows everything), and
    normalised again.  This is how casync decides, so ``--without=acl`` still restores permissions."""
    widened = normalize_mask(archive_flags)
    if feature_mask is not None:
        widened &= normalize_mask(feature_mask)
    return normalize(widened & FLAGS_MAX)


def normalize_subpath(subpath: str | None) -> str | None:
    """A sub-path argument as an archive path ("a/b"): empty components (leading, repeated and
    trailing slashes) are dropped; the root ("", "/") gives None, i.e. the whole archive."""
    if subpath is None:
        return None
    parts = [p for p in os.fsdecode(subpath).split("/") if p]
    return "/".join(parts) or None


_BAD_NAMES = frozenset(("", ".", ".."))


def _valid_name(name: str) -> bool:
    return name not in _BAD_NAMES and "/" not in name and "\0" not in name


def _uid_valid(uid: int) -> bool:
    return 0 <= uid <= 0xFFFFFFFF and uid not in (0xFFFFFFFF, 0xFFFF)


def shift_id(ident: int, uid_shift: int = 0, uid_range: int = 0) -> int | None:
    """An archived uid/gid mapped as casync's ``--uid-shift``/``--uid-range`` (modulo the range, plus
    the shift); None when it is invalid or leaves the 32-bit id space."""
    if not _uid_valid(ident):
        return None
    r = (ident % uid_range if uid_range else ident) + uid_shift
    return r if r < 0xFFFFFFFF else None


def _xattr_storable(name: str) -> bool:
    """Names casync archives as plain xattrs (others have records of their own, or none)."""
    dot = name.find(".")
    if dot <= 0 or dot == len(name) - 1 or len(os.fsencode(name)) > 255:
        return False
    return name.startswith("user.") or name.startswith("trusted.")


def _list_xattrs(fd: int) -> list[str]:
    """The xattr names of an open file; none where the file system has no xattrs."""
    try:
        return os.listxattr(fd)
    except OSError as e:
        if e.errno in _NO_XATTRS:
            return []
        raise


def _mask_chattr(fd: int, value: int, mask: int) -> bool:
    """Set the chattr bits in ``mask`` to those of ``value``; True if anything was written."""
    if not mask:
        return False
    old = fsmeta.read_chattr(fd)
    new = (old & ~mask) | (value & mask)
    if new == old:
        return False
    fsmeta.write_chattr(fd, new)
    return True


def _mask_fat_attrs(fd: int, value: int, mask: int) -> None:
    if not mask:
        return
    old = fsmeta.read_fat_attrs(fd)
    new = (old & ~mask) | (value & mask)
    if new != old:
        fsmeta.write_fat_attrs(fd, new)


def _create_mode(entry: Entry) -> int:
    """The mode a regular file is created with (by the batch writer or the extractor itself): its
    own permission bits, and read and write for us while its payload goes in."""
    return 0o600 | (entry.mode & 0o7777)


def _rename_exchange(dir_fd: int, a: str, b: str) -> None:
    fn = getattr(fsmeta._libc(), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if fn(dir_fd, os.fsencode(a), dir_fd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        import ctypes  # start-up: only a node of another type in the way needs it (fsmeta loaded it)

        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# --------------------------------------------------------------------------- the batch writer

#: regular files up to this size whose parent directory is clean go through the batch writer (so at
#: most about (WRITERS + 1) * (BATCH_BYTES + FAST_FILE_MAX) payload bytes wait for the writers);
#: larger ones are written by the decoding thread as it reads them.  2 MiB each: a batch's writes
#: still dwarf its hand-over, and few chunks stay alive (with 32 and 8 MiB, a python3.11 extraction
#: peaked at 43 MiB against 30, and took 9 000 page faults against 5 800: fresh memory for each)
FAST_FILE_MAX = 2 << 20
#: a batch is handed to a writer thread when it holds this many jobs (files and directories
#: waiting for their children) or this many payload bytes
BATCH_JOBS = 256
BATCH_BYTES = 2 << 20
#: writer threads: file creation runs on every core while the main thread decodes
WRITERS = max(2, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2))

#: one regular file for the C writer; the fields (and their order) are the C module's own list
FileJob = collections.namedtuple("FileJob", _fileio.JOB_FIELDS)
_FileJob = tuple.__new__  # FileJob from a tuple of all its fields, without the keyword call's cost

_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG
_FS_ENCODING = sys.getfilesystemencoding()


class _Batch:
    __slots__ = ("jobs", "entries", "after", "handed", "size")

    def __init__(self):
        self.jobs: list[FileJob] = []    # for _fileio.write_files
        self.entries: list[Entry] = []   # the entry of each job
        self.after: list[_Node] = []     # directories to finalise once this and every earlier batch is written
        self.handed: list[tuple[int, _Node]] = []  # (job number, directory) whose fd a job finishes and closes
        self.size = 0


class _Batcher:
    """Plain regular files in clean directories are created in batches by the C writer
    (pycatar._fileio) in up to :data:`WRITERS` threads at once, with the GIL released, while the main
    thread goes on decoding.  Batches finish in the order they were handed out: a directory is
    finalised (owner, mode, mtime, ...) only once every batch that may hold one of its children is
    written, and directories are finalised in the order they finish, so children still come before
    their parents."""

    def __init__(self, ex: "_Extractor", writers: int | None = None):
        self.ex = ex
        self.writers = writers = writers or WRITERS
        self.pool = ThreadPool(writers, "pycatar-write")
        self.current = _Batch()
        self.inflight: collections.deque[tuple[_Batch, Future | None]] = collections.deque()
        self.prefix = random_tag(4).encode()
        self.counter = itertools.count()
        self.finishing: _Batch | None = None  # the batch whose directories are being finalised

    def busy(self) -> bool:
        return bool(self.current.jobs or self.current.after or self.inflight)

    def add(self, job_entry: Entry, job: FileJob) -> None:
        b = self.current
        jobs = b.jobs
        jobs.append(job)
        b.entries.append(job_entry)
        b.size += job[4]  # size
        if len(jobs) + len(b.after) >= BATCH_JOBS or b.size >= BATCH_BYTES:
            self.submit()

    def defer(self, node: "_Node") -> None:
        b = self.current
        b.after.append(node)
        if len(b.jobs) + len(b.after) >= BATCH_JOBS:
            self.submit()

    def temp_name(self, raw: bytes) -> bytes:
        """A temporary name for the file ``raw``: a random prefix per extraction and a counter."""
        return temp_name(raw, b"%s%08x" % (self.prefix, next(self.counter) & 0xFFFFFFFF))

    def submit(self) -> None:
        """Hand the current batch to a writer; finish the batches already written, and wait while
        every writer is busy."""
        b = self.current
        self.current = _Batch()
        self.inflight.append((b, self.pool.submit(_fileio.write_files, b.jobs) if b.jobs else None))
        self._reap(self.writers)

    def _reap(self, limit: int) -> None:
        """Finish written batches, oldest first; block until at most ``limit`` are in flight."""
        inflight = self.inflight
        while inflight:
            b, fut = inflight[0]
            if fut is not None and not fut.done() and len(inflight) <= limit:
                return
            inflight.popleft()
            self._finish(b, fut.result() if fut is not None else None)

    def flush(self) -> None:
        while self.busy():  # finishing a batch may hand directories to the next one
            self.submit()
            self._reap(0)

    def _finish(self, b: _Batch, result) -> None:
        ex = self.ex
        self.finishing = b
        if result is not None:
            done, holes, failed, step, err = result
            ex.stats.hole_bytes += holes
            _settle(b, failed)
            if failed >= 0:
                entry = b.entries[failed]
                if step == _fileio.STEP_CREATE and err == errno.EEXIST:  # temporary name taken: retry the rest here
                    rest = [job._replace(tmp=self.temp_name(job.name)) if job.tmp else job for job in b.jobs[failed:]]
                    b.handed = [(i - failed, node) for i, node in b.handed if i >= failed]
                    b.jobs, b.entries = rest, b.entries[failed:]
                    self._finish(b, _fileio.write_files(rest))
                    return
                ex.what = _fileio.STEPS[step]
                if step == _fileio.STEP_VERIFY and err == 0:
                    raise _mtime_precision_error(entry.path or ".")
                raise _FastFailure(entry, err)
        nxt = self.current
        for node in b.after:  # a finalised directory's fd is closed (-1): abandon() skips it
            job = ex._finish_job(node)
            if job is not None:  # every child is written: a writer finishes the directory
                nxt.handed.append((len(nxt.jobs), node))
                nxt.jobs.append(job)
                nxt.entries.append(node.entry)
                continue
            ex.pending = node  # named in an error; abort() closes it
            ex._finalize(node)
            ex.pending = None
        b.after.clear()
        self.finishing = None

    def abandon(self) -> None:
        """After a failure: let the writers finish, then close every directory still waiting."""
        batches = [self.finishing, self.current]
        while self.inflight:
            b, fut = self.inflight.popleft()
            try:
                if fut is not None:
                    _settle(b, fut.result()[2])
            except BaseException:
                pass
            batches.append(b)
        self.pool.shutdown(wait=True)
        for b in batches:
            for node in b.after if b is not None else ():
                node.close()
            for _, node in b.handed if b is not None else ():
                node.close()
        self.current = _Batch()
        self.finishing = None

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _settle(b: _Batch, failed: int) -> None:
    """After ``b`` was written (``failed``: the job that failed, or -1): the directories whose jobs
    ran had their fds closed by the writer; those after a failure are left to abandon()."""
    ran = [item for item in b.handed if failed < 0 or item[0] <= failed]
    for _, node in ran:
        node.fd = -1
    b.handed = [item for item in b.handed if failed >= 0 and item[0] > failed]


def _mtime_precision_error(shown: str) -> UnsupportedError:
    return UnsupportedError(
        f"Failed to extract {shown!r}: the file system cannot store its modification time at the archive's precision")


class _FastFailure(OSError):
    """A batch job failed: the OSError of the file ``entry``."""

    def __init__(self, entry: Entry, err: int):
        super().__init__(err, os.strerror(err))
        self.entry = entry

# --------------------------------------------------------------------------- the extractor


class _Node:
    __slots__ = ("entry", "name", "tmp", "fd", "dir_fd", "names", "shown", "clean")

    def __init__(self, entry: Entry, name: str | None, dir_fd: int):
        self.entry = entry
        self.name = name  # final name in the parent directory; None for the destination itself
        self.tmp: str | None = None  # temporary name while being built
        self.fd = -1  # open for directories and regular files
        self.dir_fd = dir_fd  # the parent directory; -1 for the destination itself
        self.names: set[str] = set()  # directories: the children the archive lists
        self.shown = entry.path or "."
        #: directories: created by this extraction, empty, with no xattrs, no default ACL and no chattr
        #: flags (within the replay mask) for new children to inherit -- its plain regular files may
        #: go to the batch writer (see _Batcher)
        self.clean = False

    def close(self) -> None:
        """After a failure: close the node's fd (never the destination's, which the caller owns)."""
        if self.fd >= 0 and self.dir_fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    @property
    def current(self) -> str:
        return self.tmp if self.tmp is not None else self.name


class _Extractor:
    def __init__(self, replay: int, *, delete: bool, undo_immutable: bool, punch_holes: bool,
                 uid_shift: int, uid_range: int, on_entry: Callable[[Entry], None] | None):
        self.replay = replay
        self.delete = delete
        self.undo_immutable = undo_immutable
        self.punch_holes = punch_holes
        self.uid_shift = uid_shift
        self.uid_range = uid_range
        self.on_entry = on_entry
        self.stats = ExtractStats()
        self.stack: list[_Node] = []
        self.pending: _Node | None = None  # a non-directory node being built
        self.what = "extract"
        self._magic_dev: int | None = None
        self._magic = 0
        self._uids: dict[str, int] = {}
        self._owner_ids: dict[tuple, tuple[int, int]] = {}  # (uid, gid, user, group) -> ids on disk
        self._gids: dict[str, int] = {}
        self.batcher: _Batcher | None = None  # set by enable_batching()
        self.dest_clean = False
        replay_ = replay
        #: entry flags that keep a regular file out of the batch writer (chattr/FAT bits to set, subvolume)
        self._slow_flags = replay_ & (WITH_CHATTR | WITH_FAT_ATTRS | F.WITH_SUBVOLUME | F.WITH_SUBVOLUME_RO)
        self._owners = bool(replay_ & (WITH_UIDS | F.WITH_USER_NAMES))
        self._modes = bool(replay_ & (F.WITH_PERMISSIONS | F.WITH_ACL))
        self._granularity = time_granularity_ns(replay_)

    def enable_batching(self, dest_fd: int, dest_empty: bool) -> None:
        """Use the batch writer for plain regular files in directories this extraction creates, if the
        destination is empty and gives new nodes nothing to inherit (default ACL, xattrs such as
        security labels, chattr flags within the replay mask) and is not a FAT file system whose
        attributes would have to be set."""
        replay = self.replay
        if self.on_entry is not None or replay & F.WITH_READ_ONLY or not dest_empty:
            return
        try:
            names = _list_xattrs(dest_fd)
        except OSError:
            return
        if any(n.startswith("security.") or n == "system.posix_acl_default" for n in names):
            return
        if replay & WITH_CHATTR:
            try:
                if fsmeta.read_chattr(dest_fd) & to_chattr(replay):
                    return
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    return
        if replay & WITH_FAT_ATTRS:
            try:
                if fsmeta.fs_type(dest_fd) in (MSDOS_SUPER_MAGIC, FUSE_SUPER_MAGIC):
                    return
            except OSError:
                return
        self.dest_clean = True
        self.batcher = _Batcher(self)

    def _plain(self, e: Entry) -> bool:
        """Whether a regular file has nothing to restore beyond owner, mode and mtime."""
        replay = self.replay
        if e.flags & self._slow_flags:
            return False
        if replay & F.WITH_ACL and (e.acl_user or e.acl_group or e.acl_group_obj is not None):
            return False
        if replay & F.WITH_XATTRS and e.xattrs:
            return False
        if replay & F.WITH_FCAPS and e.fcaps is not None:
            return False
        if replay & F.WITH_SELINUX and e.selinux is not None:
            return False
        if replay & F.WITH_QUOTA_PROJID and e.quota_projid is not None:
            return False
        return True

    def _finish_job(self, node: "_Node") -> FileJob | None:
        """The writer's job finishing a directory this extraction made in a clean one when only its
        owner, mode and mtime are to be restored (what _finalize would do for it, then close it);
        None when _finalize must do it.  (Its subvolume check holds by construction: mkdir never makes
        a subvolume, and a plain entry is not one.)"""
        entry = node.entry
        if (not node.clean or node.dir_fd < 0 or node.fd < 0 or node.tmp is not None
                or not self._plain(entry) or entry.acl_default is not None
                or entry.acl_default_user or entry.acl_default_group):
            return None
        uid, gid = self._owner(entry) if self._owners else (-1, -1)
        granularity = self._granularity
        return FileJob(dir_fd=node.fd, tmp=b"", name=b"", pieces=(), size=0, open_mode=0, uid=uid, gid=gid,
                       mode=entry.mode & 0o7777 if self._modes else -1,
                       mtime_ns=mtime_ns(entry.mtime) if granularity is not None else -1,
                       granularity_ns=granularity or 0, sparse=False)

    def _owner(self, entry: Entry) -> tuple[int, int]:
        key = (entry.uid, entry.gid, entry.user, entry.group)
        known = self._owner_ids.get(key)
        if known is None:
            known = self._owner_ids[key] = self._map_owner(entry)
        return known

    def _map_owner(self, entry: Entry) -> tuple[int, int]:
        replay = self.replay
        if replay & F.WITH_USER_NAMES and entry.user is not None:
            uid = self._name_to_id(entry.user, False)
        else:
            uid = self._shifted(entry.uid, "user")
        if replay & F.WITH_USER_NAMES and entry.group is not None:
            gid = self._name_to_id(entry.group, True)
        else:
            gid = self._shifted(entry.gid, "group")
        return uid, gid

    # ------------------------------------------------------------------ driving

    def run(self, entries: Iterator[Entry], first: Entry, read_payload, base_fd: int) -> None:
        if first.path == "":
            if not first.isdir():
                raise FormatError("the archive's top-level entry is not a directory")
            root = _Node(first, None, -1)
            root.fd = base_fd
            root.clean = self.dest_clean
            self.stack.append(root)
            self.stats.entries += 1
            self.stats.directories += 1
        else:
            if not _valid_name(first.name):
                raise FormatError(f"invalid file name in archive: {first.path!r}")
            self._add(first, first.name, base_fd, read_payload)
        base = first.path
        prefix = base + "/" if base else ""
        stack = self.stack
        add = self._add
        for entry in entries:
            path = entry.path
            if not path.startswith(prefix) or path == base:
                raise FormatError(f"archive entry {path!r} lies outside the extracted tree {base or '/'!r}")
            parent_path, _, name = path.rpartition("/")
            if name in _BAD_NAMES or "\0" in name:  # (no "/": split there)
                raise FormatError(f"invalid file name in archive: {path!r}")
            if not stack or stack[-1].entry.path != parent_path:
                if not any(n.entry.path == parent_path for n in stack):
                    raise FormatError(f"archive entry {path!r} is out of order")
                while stack[-1].entry.path != parent_path:
                    self._finish_dir()
            add(entry, name, stack[-1].fd, read_payload)
        while self.stack:
            self._finish_dir()
        if self.batcher is not None:
            self.batcher.flush()
            self.batcher.close()

    def _finish_dir(self) -> None:
        batcher = self.batcher
        if batcher is not None and batcher.busy():
            batcher.defer(self.stack.pop())  # its children may still be in a batch
            return
        self._finalize(self.stack[-1])  # still on the stack if this fails, so abort() cleans it up
        self.stack.pop()

    def _add(self, entry: Entry, name: str, dir_fd: int, read_payload) -> None:
        """Create ``entry`` (its ``name`` checked by the caller) in the directory ``dir_fd``."""
        stack = self.stack
        parent = stack[-1] if stack else None
        self.stats.entries += 1
        mode = entry.mode
        kind = mode & _S_IFMT
        if parent is not None and parent.clean:
            if (kind == _S_IFREG and entry.size <= FAST_FILE_MAX and self.batcher is not None
                    and self._plain(entry)):
                self._add_batched(entry, name, dir_fd, read_payload)
                return
        elif parent is not None:
            parent.names.add(name)
        node = _Node(entry, name, dir_fd)
        replay = self.replay
        if (kind == stat.S_IFLNK and not replay & F.WITH_SYMLINKS
                or kind == stat.S_IFIFO and not replay & F.WITH_FIFOS
                or kind == stat.S_IFSOCK and not replay & F.WITH_SOCKETS
                or kind in (stat.S_IFBLK, stat.S_IFCHR) and not replay & F.WITH_DEVICE_NODES):
            self.stats.skipped += 1
            return
        if kind == stat.S_IFDIR:
            self._make_dir(node)
            self.stack.append(node)
            self.stats.directories += 1
            return
        self.pending = node
        self.what = "create"
        if kind == stat.S_IFREG:
            self._make_at(node, lambda tmp: create(tmp, _create_mode(entry), dir_fd))
            self._early_attrs(node)
            self.what = "write"
            writer = Payload(node.fd, self.punch_holes)  # the batch jobs' own writer
            write_pieces(writer, read_payload())
            writer.finish()
            if writer.size != entry.size:
                raise FormatError(f"payload of {entry.path!r} has {writer.size} bytes, its entry says {entry.size}")
            self.stats.files += 1
            self.stats.payload_bytes += writer.size
            self.stats.hole_bytes += writer.holes
        elif kind == stat.S_IFLNK:
            if entry.target is None:
                raise FormatError(f"symlink {entry.path!r} has no target")
            self._make_at(node, lambda tmp: os.symlink(entry.target, tmp, dir_fd=dir_fd))
            self.stats.symlinks += 1
        elif kind == stat.S_IFIFO:
            self._make_at(node, lambda tmp: os.mkfifo(tmp, mode & 0o7777, dir_fd=dir_fd))
            self.stats.fifos += 1
        elif kind in (stat.S_IFBLK, stat.S_IFCHR):
            rdev = os.makedev(entry.rdev_major, entry.rdev_minor)
            self._make_at(node, lambda tmp: os.mknod(tmp, kind | (mode & 0o7777), rdev, dir_fd=dir_fd))
            self.stats.devices += 1
        elif kind == stat.S_IFSOCK:
            self._make_at(node, lambda tmp: os.mknod(tmp, stat.S_IFSOCK | (mode & 0o7777), 0, dir_fd=dir_fd))
            self.stats.sockets += 1
        else:
            raise FormatError(f"archive entry {entry.path!r} has an unknown file type (mode 0{mode:o})")
        self._finalize(node)
        self.pending = None

    def _add_batched(self, entry: Entry, name: str, dir_fd: int, read_payload) -> None:
        pieces = list(read_payload())
        size = sum(map(len, pieces))
        if size != entry.size:
            raise FormatError(f"payload of {entry.path!r} has {size} bytes, its entry says {entry.size}")
        self.pending = None
        self.what = "set the owner of"
        uid, gid = self._owner(entry) if self._owners else (-1, -1)
        mode = entry.mode & 0o7777
        raw = name.encode(_FS_ENCODING, "surrogateescape")  # os.fsencode, without its checks
        stats = self.stats
        stats.files += 1
        stats.payload_bytes += size
        batcher = self.batcher
        if self._granularity is None:
            mtime, granularity = -1, 0
        else:
            mtime, granularity = entry.mtime, self._granularity
            if mtime >> 63:  # validate.mtime_ns: times before 1970
                mtime -= 1 << 64
        batcher.add(entry, _FileJob(FileJob, (dir_fd, batcher.temp_name(raw), raw, pieces, size, 0o600 | mode,
                                              uid, gid, mode if self._modes else -1, mtime, granularity,
                                              self.punch_holes)))

    def _make_at(self, node: _Node, create: Callable[[str], int | None]) -> None:
        """Create a node under a fresh temporary name (retrying on the unlikely name clash)."""
        for _ in range(16):
            tmp = temp_name(node.name)
            try:
                fd = create(tmp)
            except FileExistsError:
                continue
            node.tmp = tmp
            if isinstance(fd, int):
                node.fd = fd
            return
        raise OSError(errno.EEXIST, "cannot find a free temporary name")

    def _mkdir(self, node: _Node, name: str) -> None:
        if self.replay & node.entry.flags & F.WITH_SUBVOLUME:
            saved = os.umask(0o077)
            try:
                fsmeta.create_subvolume(node.dir_fd, name)
            finally:
                os.umask(saved)
        else:
            os.mkdir(name, 0o700, dir_fd=node.dir_fd)

    def _make_dir(self, node: _Node) -> None:
        """Create (or reuse) a directory; if something else is in the way, build the directory under a
        temporary name and swap it in when it is complete."""
        self.what = "create directory"
        subvolume = self.replay & node.entry.flags & F.WITH_SUBVOLUME
        existed = False
        if subvolume:
            try:
                self._mkdir(node, node.name)
            except FileExistsError:
                existed = True
        # mkdir (unless made above; FileExistsError: existed) and open, in one call keeping the GIL
        made, fd, err = _fileio.make_dir(node.dir_fd, node.name, 0o700, not subvolume)
        existed = existed or bool(made)
        if fd >= 0:
            node.fd = fd
        else:
            if err not in (errno.ENOTDIR, errno.ELOOP):
                raise OSError(err, os.strerror(err))
            existed = False
            self._make_at(node, lambda tmp: self._mkdir(node, tmp))
            try:
                node.fd = os.open(node.tmp, _O_DIR, dir_fd=node.dir_fd)
            except OSError:
                os.rmdir(node.tmp, dir_fd=node.dir_fd)
                node.tmp = None
                raise
        parent_clean = self.stack[-1].clean if self.stack else self.dest_clean
        node.clean = parent_clean and not existed and not node.entry.flags & self.replay & WITH_CHATTR
        if existed and self.undo_immutable:
            # an immutable directory from an earlier extraction would refuse our children
            self.what = "drop the immutable flag of"
            _mask_chattr(node.fd, 0, FS_IMMUTABLE_FL)
        if not node.clean or node.entry.quota_projid is not None:  # clean: no flags to set, none inherited
            self._early_attrs(node)

    def _early_attrs(self, node: _Node) -> None:
        entry = node.entry
        self.what = "set early file attributes of"
        _mask_chattr(node.fd, to_chattr(entry.flags), to_chattr(self.replay) & EARLY_CHATTR)
        if entry.quota_projid is not None and self.replay & F.WITH_QUOTA_PROJID:
            self.what = "set the quota project id of"
            fsmeta.write_quota_projid(node.fd, entry.quota_projid)

    # ------------------------------------------------------------------ ids

    def _shift(self, ident: int) -> int:
        r = shift_id(ident, self.uid_shift, self.uid_range)
        return _UID_INVALID if r is None else r

    def _shifted(self, ident: int, kind: str) -> int:
        r = self._shift(ident)
        if r == _UID_INVALID:
            raise PycatarError(f"invalid {kind} id {ident} in archive (after shifting)")
        return r

    def _name_to_id(self, name: str, group: bool) -> int:
        cache = self._gids if group else self._uids
        if name in cache:
            return cache[name]
        ident: int | None = None
        if name.isascii() and name.isdigit():
            value = int(name)
            if _uid_valid(value):
                ident = self._shifted(value, "group" if group else "user")
        if ident is None:
            ident = fsmeta.group_id(name) if group else fsmeta.user_id(name)
            if ident is None:
                raise PycatarError(f"unknown {'group' if group else 'user'} name {name!r}")
        cache[name] = ident
        return ident

    # ------------------------------------------------------------------ finalisation

    def _stat(self, node: _Node) -> os.stat_result:
        if node.fd >= 0:
            return os.fstat(node.fd)
        return os.stat(node.current, dir_fd=node.dir_fd, follow_symlinks=False)

    def _proc_path(self, node: _Node) -> str:
        """A path naming the node itself (never what a symlink points to) without an fd of its own."""
        return f"/proc/self/fd/{node.dir_fd}/{node.current}"

    def _fs_magic(self, node: _Node, st: os.stat_result) -> int:
        if st.st_dev != self._magic_dev:
            fd = node.fd if node.fd >= 0 else node.dir_fd
            if fd < 0:
                return 0
            self._magic = fsmeta.fs_type(fd)
            self._magic_dev = st.st_dev
        return self._magic

    def _finalize(self, node: _Node) -> None:
        entry = node.entry
        replay = self.replay
        mode = entry.mode
        fd = node.fd
        self.what = "inspect"
        st = self._stat(node)
        if stat.S_IFMT(st.st_mode) != stat.S_IFMT(mode):
            raise OSError(errno.EEXIST, "a node of another type is in the way")
        if stat.S_ISLNK(mode):
            if os.readlink(node.current, dir_fd=node.dir_fd) != entry.target:
                raise OSError(errno.EEXIST, "symlink target differs")

        if stat.S_ISDIR(mode) and self.delete and not node.clean:
            self.what = "remove stale entries in"
            self._delete_stale(node)

        self._finish_steps(node, _fileio.STEP_INSPECT, _fileio.STEP_MODE, *(
            self._owner(entry) if self._owners else (-1, -1)),
            -1 if stat.S_ISLNK(mode) else self._wanted_mode(entry, st))

        # a directory this extraction made in a clean one, with nothing but owner, mode and time to
        # restore: no ACL, xattr, label or chattr/FAT flag to set, and none there to remove
        bare = node.clean and node.dir_fd >= 0 and self._plain(entry) and not (
            entry.acl_default is not None or entry.acl_default_user or entry.acl_default_group)

        if bare:
            pass
        elif replay & F.WITH_ACL and not stat.S_ISLNK(mode):
            self.what = "set the ACLs of"
            self._apply_acls(node, st)

        if bare:
            pass
        elif replay & F.WITH_XATTRS and not stat.S_ISLNK(mode):
            self.what = "set the extended attributes of"
            self._apply_xattrs(node)

        if replay & F.WITH_FCAPS and stat.S_ISREG(mode) and fd >= 0:
            self.what = "set the file capabilities of"
            if entry.fcaps is not None:
                os.setxattr(fd, _FCAPS_XATTR, entry.fcaps)
            elif fsmeta.get_xattr(fd, _FCAPS_XATTR) is not None:
                os.removexattr(fd, _FCAPS_XATTR)

        if replay & F.WITH_SELINUX and not bare:
            self.what = "set the SELinux label of"
            self._apply_selinux(node)

        if not self._finish_steps(node, _fileio.STEP_MTIME, _fileio.STEP_RENAME):
            self._install(node.dir_fd, node.tmp, node.name)  # something in the way: replace it
        node.tmp = None

        if replay & WITH_CHATTR and fd >= 0 and not bare:
            self.what = "set the file attributes (chattr) of"
            _mask_chattr(fd, to_chattr(entry.flags), to_chattr(replay))

        if replay & WITH_FAT_ATTRS and fd >= 0 and not bare:
            self.what = "set the FAT attributes of"
            value, mask = to_fat_attrs(entry.flags), to_fat_attrs(replay)
            if self._fs_magic(node, st) in (MSDOS_SUPER_MAGIC, FUSE_SUPER_MAGIC):
                _mask_fat_attrs(fd, value, mask)
            elif value & mask:
                raise UnsupportedError(f"Failed to extract {node.shown!r}: FAT attributes need a FAT file system")

        if replay & F.WITH_SUBVOLUME:
            self.what = "check the subvolume state of"
            self._check_subvolume(node, st)

        # the destination directory's fd is the caller's: it stays open
        self._finish_steps(node, _fileio.STEP_VERIFY,
                           _fileio.STEP_CLOSE if fd >= 0 and node.dir_fd >= 0 else _fileio.STEP_VERIFY)
        if self.on_entry is not None:
            self.on_entry(entry)

    def _finish_steps(self, node: _Node, first: int, last: int, uid: int = -1, gid: int = -1,
                      mode: int = -1) -> bool:
        """Run the finishing steps ``first``..``last`` of ``node`` (owner, mode, mtime, rename, mtime
        check, close: :func:`pycatar._fileio.finish`, the batch jobs' own code).  False if the rename
        failed (the caller's :meth:`_install` deals with what is in the way); raises on other failures."""
        entry = node.entry
        granularity = self._granularity
        failed = _fileio.finish(node.fd, node.dir_fd, node.tmp, node.name, uid, gid, mode,
                                mtime_ns(entry.mtime) if granularity is not None else 0, granularity or 0,
                                first, last)
        if failed is None or failed[0] == _fileio.STEP_CLOSE:
            if last == _fileio.STEP_CLOSE:
                node.fd = -1  # closed, also when close() reported an error
        if failed is None:
            return True
        step, err = failed
        self.what = _fileio.STEPS[step]
        if step == _fileio.STEP_RENAME:
            return False
        if step == _fileio.STEP_VERIFY and err == 0:
            raise _mtime_precision_error(node.shown)
        raise OSError(err, os.strerror(err))

    def _wanted_mode(self, entry: Entry, st: os.stat_result) -> int:
        """The mode to give a node now at ``st`` (only its permission bits count, which a chown
        leaves), or -1 to leave it."""
        replay = self.replay
        entry_mode = entry.mode
        if replay & F.WITH_READ_ONLY:
            cur = st.st_mode
            is_dir = stat.S_ISDIR(cur)
            writable = bool(entry_mode & 0o222)
            if not cur & 0o400 or is_dir and not cur & 0o100 or writable != bool(cur & 0o200):
                new_mode = (cur & 0o444) | 0o400
                if is_dir:
                    new_mode |= 0o100
                if writable:
                    new_mode |= 0o200 | (0o020 if new_mode & 0o040 else 0) | (0o002 if new_mode & 0o004 else 0)
                # else: no write bits.  (casync clears the *read* bits here instead, leaving read-only
                # files at mode 0000 and read-only directories at 0100: a slip we do not reproduce.)
                return new_mode
            return -1
        if replay & (F.WITH_PERMISSIONS | F.WITH_ACL):
            return entry_mode & 0o7777
        return -1

    def _acl_id(self, item, group: bool) -> int:
        if item.name is not None:
            return self._name_to_id(item.name, group)
        return self._shifted(item.id, "group" if group else "user")

    def _apply_acls(self, node: _Node, st: os.stat_result) -> None:
        entry = node.entry
        have_acl = bool(entry.acl_user or entry.acl_group or entry.acl_group_obj is not None
                        or entry.acl_default is not None or entry.acl_default_user or entry.acl_default_group)
        target, follow = (node.fd, True) if node.fd >= 0 else (self._proc_path(node), False)
        values = fsmeta.acl_xattrs(entry, stat.S_ISDIR(st.st_mode), self._acl_id)
        for name, value in values:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno in _NO_XATTRS and not have_acl:
                    continue  # no ACL support here, and none needed
                raise

    def _apply_xattrs(self, node: _Node) -> None:
        wanted = node.entry.xattrs
        if node.fd >= 0:
            target, follow = node.fd, True
            present = _list_xattrs(target)
            keep = {os.fsdecode(n) for n, _ in wanted}
            for name in present:
                if _xattr_storable(name) and name not in keep:
                    os.removexattr(target, name)
        else:
            # devices, fifos, sockets: freshly made, so nothing stale to remove.  (casync neither
            # archives nor restores their xattrs; other writers may list some, and we keep them.)
            if not wanted:
                return
            target, follow = self._proc_path(node), False
        for name, value in wanted:
            os.setxattr(target, os.fsdecode(name), value, follow_symlinks=follow)

    def _apply_selinux(self, node: _Node) -> None:
        label = node.entry.selinux
        if node.fd >= 0:
            target, follow = node.fd, True
        else:
            target, follow = self._proc_path(node), False
        try:
            current = os.getxattr(target, _SELINUX_XATTR, follow_symlinks=follow)
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                if label is not None:
                    raise UnsupportedError(
                        f"Failed to extract {node.shown!r}: the file system cannot store SELinux labels") from None
                return
            if e.errno != errno.ENODATA:
                raise
            current = None
        if current is not None:
            current = current.rstrip(b"\0")
        want = os.fsencode(label) if label is not None else None
        if current == want:
            return
        if want is not None:
            os.setxattr(target, _SELINUX_XATTR, want + b"\0", follow_symlinks=follow)
        elif current is not None:
            try:
                os.removexattr(target, _SELINUX_XATTR, follow_symlinks=follow)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise

    def _check_subvolume(self, node: _Node, st: os.stat_result) -> None:
        entry = node.entry
        is_subvol = (stat.S_ISDIR(st.st_mode) and self._fs_magic(node, st) == BTRFS_SUPER_MAGIC
                     and st.st_ino == fsmeta.BTRFS_FIRST_FREE_OBJECTID)
        if bool(entry.flags & F.WITH_SUBVOLUME) != is_subvol:
            raise OSError(errno.EEXIST, "subvolume state differs from the archive's")
        if self.replay & F.WITH_SUBVOLUME_RO and is_subvol and node.fd >= 0:
            fsmeta.set_subvolume_read_only(node.fd, bool(entry.flags & F.WITH_SUBVOLUME_RO))

    # ------------------------------------------------------------------ replacing and removing

    def _drop_immutable(self, dir_fd: int, name: str) -> bool:
        """Clear the immutable flag of a regular file or directory; True if it was set."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK,
                         dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return False
            raise
        try:
            st = os.fstat(fd)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                return False
            return _mask_chattr(fd, 0, FS_IMMUTABLE_FL)
        finally:
            os.close(fd)

    def _install(self, dir_fd: int, tmp: str, name: str) -> None:
        """Rename ``tmp`` over ``name``; if the types differ (directory vs. not), swap the two
        atomically and remove the old one, falling back to remove-then-rename."""
        undo = self.undo_immutable

        def rename() -> OSError | None:
            try:
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as e:
                return e
            return None

        def exchange() -> OSError | None:
            try:
                _rename_exchange(dir_fd, tmp, name)
            except OSError as e:
                return e
            return None

        err = rename()
        if err is not None and err.errno == errno.EPERM and undo and self._drop_immutable(dir_fd, name):
            err = rename()
        if err is None:
            return
        if err.errno not in (errno.ENOTDIR, errno.EISDIR):
            raise err
        err = exchange()
        if err is not None and err.errno == errno.EPERM and undo and self._drop_immutable(dir_fd, name):
            err = exchange()
        if err is None:
            self._rm_rf_at(dir_fd, tmp)  # the old node now lives under the temporary name
            return
        try:
            self._rm_rf_at(dir_fd, name)
        except OSError:
            pass
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def _delete_stale(self, node: _Node) -> None:
        """Remove what the directory holds but the archive does not list."""
        with os.scandir(node.fd) as it:
            stale = [e.name for e in it if e.name not in node.names]
        for name in stale:
            self._rm_rf_at(node.fd, name)
            self.stats.deleted += 1

    def _unlink_at(self, dir_fd: int, name: str, is_dir: bool) -> None:
        try:
            if is_dir:
                os.rmdir(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
            return
        except FileNotFoundError:
            return
        except PermissionError as e:
            if e.errno != errno.EPERM or not self.undo_immutable:
                raise
            if not self._drop_immutable(dir_fd, name):
                raise
        if is_dir:
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _rm_rf_at(self, dir_fd: int, name: str) -> None:
        """Remove ``name`` and, if it is a directory, everything below it on the same file system;
        symlinks are removed, never followed.  Raises the first error after trying everything."""
        try:
            fd = os.open(name, _O_DIR | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            self._unlink_at(dir_fd, name, False)
            return
        try:
            first = self._rm_children(fd, os.fstat(fd).st_dev)
        finally:
            os.close(fd)
        try:
            self._unlink_at(dir_fd, name, True)
        except OSError as e:
            first = first or e
        if first is not None:
            raise first

    def _rm_children(self, fd: int, dev: int) -> OSError | None:
        first: OSError | None = None
        if self.undo_immutable:
            try:
                _mask_chattr(fd, 0, FS_IMMUTABLE_FL)
            except OSError as e:
                first = e
        with os.scandir(fd) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in children:
            try:
                if is_dir:
                    sub = os.open(name, _O_DIR | os.O_NONBLOCK, dir_fd=fd)
                    try:
                        if os.fstat(sub).st_dev != dev:
                            continue  # another file system is mounted here: leave it alone
                        err = self._rm_children(sub, dev)
                    finally:
                        os.close(sub)
                    if err is not None:
                        first = first or err
                self._unlink_at(fd, name, is_dir)
            except FileNotFoundError:
                pass
            except OSError as e:
                first = first or e
        return first

    def abort(self) -> None:
        """After a failure: remove temporary names (never final ones) and close what is open."""
        if self.batcher is not None:
            self.batcher.abandon()
        nodes = ([self.pending] if self.pending is not None else []) + self.stack[::-1]
        for node in nodes:
            node.close()
            if node.tmp is not None and node.dir_fd >= 0:
                try:
                    self._rm_rf_at(node.dir_fd, node.tmp)
                except OSError:
                    pass
                node.tmp = None
        self.pending = None
        self.stack.clear()


# --------------------------------------------------------------------------- public entry points


def _open_dest(dest) -> int:
    path = os.fspath(dest)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOCTTY
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise PycatarError(f"Output {os.fsdecode(path)!r} is not a directory; an archive extracts into a directory") from None
    except OSError as e:
        raise PycatarError(f"Failed to open {os.fsdecode(path)!r}: {e.strerror}") from None
    try:
        os.mkdir(path, 0o777)
    except FileExistsError:
        pass
    except OSError as e:
        raise PycatarError(f"Failed to create {os.fsdecode(path)!r}: {e.strerror}") from None
    try:
        return os.open(path, flags)
    except OSError as e:
        raise PycatarError(f"Failed to open {os.fsdecode(path)!r}: {e.strerror}") from None


def _is_empty_dir(fd: int) -> bool:
    try:
        with os.scandir(fd) as it:
            return next(it, None) is None
    except OSError:
        return False


def _select_subtree(entries: Iterable[Entry], subpath: str) -> Iterator[Entry]:
    return select_subtree(entries, subpath,
                          lambda: PycatarError(f"Failed to seek to {subpath}: No such file or directory"))


def extract(entries: Iterable[Entry], read_payload: Callable[[], Iterable[bytes]], dest, *,
            feature_flags: int | None = None, feature_mask: int | None = None, subpath: str | None = None,
            delete: bool = True, undo_immutable: bool = False, punch_holes: bool = True,
            uid_shift: int = 0, uid_range: int = 0,
            on_entry: Callable[[Entry], None] | None = None) -> ExtractStats:
    """Write the entries of a catar stream (archive order, as :class:`~pycatar.decoder.CatarReader`
    yields them) below ``dest``.

    ``read_payload()`` gives the payload pieces of the regular file entry just taken from ``entries``.
    If the first entry is the archive root (path ""), its metadata is applied to ``dest`` itself (which
    is created if missing); otherwise (a sub-tree, e.g. from ``CatarReader.iter_subtree``) the first
    entry is created *inside* ``dest`` under its own name, as ``casync extract ARCHIVE DEST PATH`` does.
    ``subpath`` picks such a sub-tree out of a full stream.

    ``feature_flags`` are the archive's (default: those of the first entry); ``feature_mask`` limits
    what is restored (see :func:`replay_flags`).  ``delete`` removes what a directory of the archive
    holds on disk but the archive does not list; ``undo_immutable`` clears the immutable flag of what
    has to be replaced or removed; ``punch_holes`` leaves all-zero 4 KiB blocks as holes.
    ``uid_shift``/``uid_range`` map archived ids as casync's ``--uid-shift``/``--uid-range``.
    ``on_entry`` is called with each entry once it is restored (a directory after its contents).

    Raises :class:`~pycatar.errors.PycatarError` (or a subclass) on any failure; no file is then left
    under its final name with partial content.
    """
    sub = normalize_subpath(subpath)
    it = iter(entries)
    if sub is not None:
        it = _select_subtree(it, sub)
    first = next(it, None)
    if first is None:
        raise FormatError("the archive holds no entries")
    flags = first.feature_flags if feature_flags is None else feature_flags
    replay = replay_flags(flags, feature_mask)
    ex = _Extractor(replay, delete=delete, undo_immutable=undo_immutable, punch_holes=punch_holes,
                    uid_shift=uid_shift, uid_range=uid_range, on_entry=on_entry)
    ex.stats.feature_flags = int(flags)
    ex.stats.replay_flags = replay
    base_fd = _open_dest(dest)
    # Entries are short-lived and form no reference cycles: the cyclic collector would only walk
    # the young objects again and again (about 4 % of an extraction's CPU time), so it pauses.
    collecting = gc.isenabled()
    gc.disable()
    try:
        ex.enable_batching(base_fd, _is_empty_dir(base_fd))
        ex.run(it, first, read_payload, base_fd)
    except OSError as e:
        node = ex.pending or (ex.stack[-1] if ex.stack else None)
        shown = node.shown if node is not None else os.fsdecode(os.fspath(dest))
        if isinstance(e, _FastFailure):
            shown = e.entry.path or "."
        ex.abort()
        hint = ""
        if e.errno == errno.EPERM and ex.what == "set the owner of":
            hint = " (restoring owners needs privileges; leave out the privileged feature flags)"
        raise PycatarError(f"Failed to {ex.what} {shown!r}: {e.strerror or e}{hint}") from None
    except (ValueError, OverflowError) as e:  # e.g. a NUL byte in a name the archive should not hold
        ex.abort()
        raise FormatError(f"Failed to {ex.what}: {e}") from None
    except BaseException:
        ex.abort()
        raise
    finally:
        os.close(base_fd)
        if collecting:
            gc.enable()
    return ex.stats


def extract_archive(source, dest, subpath: str | None = None, *, feature_mask: int | None = None,
                    **options) -> ExtractStats:
    """Extract a catar archive (a path or a readable binary file object) into ``dest``; ``subpath``
    selects one entry (and what is below it), created inside ``dest`` under its own name.  Seekable
    inputs find the sub-path through the goodbye tables; streams are read through.  ``options`` are
    those of :func:`extract`."""
    from .decoder import CatarReader  # imported late: decoding is only needed here

    own = isinstance(source, (str, bytes, os.PathLike))
    if own:
        try:
            f = open(source, "rb")
        except OSError as e:
            raise PycatarError(f"Failed to open {os.fsdecode(os.fspath(source))}: {e.strerror}") from None
    else:
        f = source
    try:
        reader = CatarReader(f, feature_mask=feature_mask)
        sub = normalize_subpath(subpath)
        seekable = getattr(f, "seekable", lambda: False)()
        if sub is not None and seekable:
            entry = reader.lookup(sub)
            if entry is None:
                raise PycatarError(f"Failed to seek to {sub}: No such file or directory")
            entries: Iterable[Entry] = reader.iter_subtree(entry)
            sub = None
        else:
            entries = iter(reader)
        it = iter(entries)
        first = next(it, None)
        if first is None:
            raise FormatError("the archive holds no entries")
        flags = getattr(reader, "feature_flags", None)
        if flags is None:
            flags = first.feature_flags
        return extract(itertools.chain((first,), it), reader.read_payload, dest, feature_flags=flags,
                       feature_mask=feature_mask, subpath=sub, **options)
    finally:
        if own:
            f.close()
