"""Encoder: entries in archive order become a catar stream, byte for byte as casync writes it.

One walker, one serialiser:

* a *source* yields the entries of a tree in archive order: :class:`TreeWalker` reads a directory
  on disk (children in strcmp order, filtered by the feature flags, nodump and .caexclude), and
  :class:`pycatar.tarconv.TarSource` reads a tar; both yield the same events (see
  :meth:`TreeWalker.events`) of :class:`~pycatar.entry.Entry` objects;
* :class:`CatarSerializer` writes any source's entries as records (:func:`entry_records`, the one
  place records are laid out, from :mod:`pycatar.format`) into large output buffers, payloads
  read straight into them, FILENAME records before every child and a GOODBYE table closing each
  directory.

:func:`iter_entries` is the walk alone (what ``list``/``mtree``/``stat`` of a directory show);
:func:`encode` and :class:`CatarEncoder` are the walk serialised.
"""

from __future__ import annotations

import errno
import os
import stat as st
import sys
from collections.abc import Callable, Iterator
from functools import lru_cache

from . import exclude, format as fmt, fsmeta, validate
from .entry import ACLDefault, ACLEntry, Entry
from .errors import PycatarError, UnsupportedError
from .flags import Flag as F
from .flags import WITH_CHATTR, WITH_FAT_ATTRS, WITH_UIDS, format_with_flags, from_chattr, from_fat_attrs
from .flags import from_fs_magic, normalize, time_granularity_ns
from .flags import BTRFS_SUPER_MAGIC, EXT2_SUPER_MAGIC, FUSE_SUPER_MAGIC, MSDOS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC
from .fsmeta import ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ
from .goodbye import goodbye_record, name_hash
from .record import Record

#: largest piece a payload is read in by sources that yield pieces (the tar source)
PAYLOAD_BLOCK = 1 << 20
#: size of the serialiser's output buffers (blob.READ_SIZE: the chunk pipeline takes them without copying)
OUT_BUFFER = 4 << 20

# file systems whose contents casync never serialises (kernel API file systems)
_VIRTUAL_FS = {
    0x42494E4D, 0x63677270, 0x27E0EB, 0x62656570, 0x64626720, 0x1CD1, 0xDE5E81E4, 0x65735543,
    0x958458F6, 0x19800202, 0x6E667364, 0x9FA0, 0x6165676C, 0x67596969, 0x73636673, 0xF97CFF8C,
    0x43415D53, 0x62656572,
}
_EXT4_XFS_FUSE = (EXT2_SUPER_MAGIC, XFS_SUPER_MAGIC, FUSE_SUPER_MAGIC)
#: file systems whose listxattr() names every xattr getxattr() can read (POSIX ACLs included; the
#: SELinux label too while SELinux is off: with it on, an unlabeled inode's label is not listed)
_LISTXATTR_COMPLETE = frozenset({EXT2_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC})
_XATTR_STORED_PREFIXES = ("user.", "trusted.")
_FCAPS_XATTR = "security.capability"
_SELINUX_XATTR = "security.selinux"
_CHATTR_OR_NODUMP = WITH_CHATTR | F.EXCLUDE_NODUMP
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, st.S_IFREG, st.S_IFDIR, st.S_IFLNK
#: O_NONBLOCK: a file replaced by a FIFO after the listing must not block the open (its type is
#: checked after opening); reads of regular files and directories ignore the flag
_O_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK
_O_DIR = _O_FILE | os.O_DIRECTORY
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class EncoderOptions(Record):
    """How the walk stores what it reads (see each field)."""

    __slots__ = ("feature_flags", "uid_shift", "uid_range", "owner", "group", "clamp_mtime_ns", "require_flags")

    def __init__(self, feature_flags: int, uid_shift: int = 0, uid_range: int = 0, owner: int | None = None,
                 group: int | None = None, clamp_mtime_ns: int | None = None, require_flags: int = 0):
        self.feature_flags = feature_flags
        self.uid_shift = uid_shift
        self.uid_range = uid_range  # 0: the full 32-bit range
        #: store this uid (gid) for every entry instead of the file's; not shifted (``--owner=``/``--group=``)
        self.owner = owner
        self.group = group
        #: mtimes later than this (ns) are stored as this, before rounding (``SOURCE_DATE_EPOCH``)
        self.clamp_mtime_ns = clamp_mtime_ns
        #: WITH_ bits every file system the walk reads MUST be able to store, else an error
        #: (``--reproducible``, spec/reproducible.md)
        self.require_flags = require_flags


class _Node:
    """A directory being walked: its Entry, open fd, stat, file system and exclude rules."""

    __slots__ = ("entry", "fd", "st", "magic", "rules", "mount_id")

    def __init__(self, entry, fd, stat_result, magic, rules=()):
        self.entry = entry
        self.fd = fd
        self.st = stat_result
        self.magic = magic
        self.rules = list(rules)
        self.mount_id = None


def type_stored(flags: int, fmt_bits: int) -> bool:
    """Whether an entry of this file type (``stat.S_IFMT``) goes into an archive with these flags."""
    if fmt_bits == st.S_IFLNK:
        return bool(flags & F.WITH_SYMLINKS)
    if fmt_bits in (st.S_IFBLK, st.S_IFCHR):
        return bool(flags & F.WITH_DEVICE_NODES)
    if fmt_bits == st.S_IFIFO:
        return bool(flags & F.WITH_FIFOS)
    if fmt_bits == st.S_IFSOCK:
        return bool(flags & F.WITH_SOCKETS)
    return True


@lru_cache(maxsize=1)
def _selinux_enabled() -> bool:
    """Whether SELinux may be active (then getxattr makes up labels listxattr does not name)."""
    if os.path.exists("/sys/fs/selinux"):
        return True
    for path in ("/proc/self/attr/selinux/current", "/proc/self/attr/current"):
        try:
            with open(path, "rb") as f:
                if b":" in f.read():  # an SELinux context (user:role:type:level)
                    return True
        except OSError:
            continue
    return False


class EntryPolicy:
    """How raw metadata (a stat result, a tar header...) becomes what an ENTRY stores under the
    feature flags and encoder options: the mode, owners and names, the rounded (and clamped) mtime.
    Shared by the tree walker and the tar source (tarconv)."""

    def __init__(self, options: EncoderOptions):
        self.flags = normalize(options.feature_flags)
        self.granularity = time_granularity_ns(self.flags)
        self.uid_shift = options.uid_shift
        self.uid_range = options.uid_range
        self.owner = options.owner
        self.group = options.group
        self.clamp = options.clamp_mtime_ns
        self.require = int(options.require_flags)
        #: (raw mode, uid, gid) -> (stored mode, uid, gid, user, group), with the system's names
        self._heads: dict[tuple[int, int, int], tuple] = {}

    def _shift(self, uid: int) -> int:
        if uid < self.uid_shift:
            raise UnsupportedError(f"UID/GID {uid} is below the UID shift")
        uid -= self.uid_shift
        if self.uid_range:
            uid %= self.uid_range
        return uid

    def _stored_name(self, name: str) -> str | None:
        # a name readers reject (CATAR-21, e.g. "john.doe") is left out when ids are stored (the id
        # says who it is); without ids it stays, and check_entry refuses the entry (CATAR-20, CATAR-60)
        if self.flags & WITH_UIDS and not validate.user_name_ok(os.fsencode(name) + b"\0"):
            return None
        return name

    def _name_for(self, ident: int, lookup) -> str | None:
        if ident == 0:
            return None
        name = lookup(ident)
        if name is not None:
            return self._stored_name(name)
        if self.flags & WITH_UIDS:
            return None
        return str(self._shift(ident))

    def _override_name(self, ident: int, lookup) -> str | None:
        # the name stored for an --owner=/--group= id: as if the file were owned by it, unshifted
        if ident == 0:
            return None
        name = lookup(ident)
        if name is not None:
            return self._stored_name(name)
        return None if self.flags & WITH_UIDS else str(ident)

    def _head(self, mode: int, uid: int, gid: int, user_lookup, group_lookup) -> tuple:
        """(stored mode, uid, gid, user name, group name) for these raw values."""
        flags = self.flags
        fmt_bits = mode & _S_IFMT
        if fmt_bits == _S_IFLNK:
            mode = _S_IFLNK | 0o777
        elif flags & (F.WITH_PERMISSIONS | F.WITH_ACL):
            mode &= 0o177777
        elif flags & F.WITH_READ_ONLY:
            is_dir = fmt_bits == _S_IFDIR
            writable = mode & 0o222
            mode = fmt_bits | ((0o777 if is_dir else 0o666) if writable else (0o555 if is_dir else 0o444))
        else:
            mode = fmt_bits | (0o777 if fmt_bits == _S_IFDIR else 0o666)

        owner, group = self.owner, self.group
        if flags & WITH_UIDS:
            suid = self._shift(uid) if owner is None else owner
            sgid = self._shift(gid) if group is None else group
        else:
            suid = sgid = 0
        user = gname = None
        if flags & F.WITH_USER_NAMES:
            user = (self._name_for(uid, user_lookup) if owner is None
                    else self._override_name(owner, fsmeta.user_name))
            gname = (self._name_for(gid, group_lookup) if group is None
                     else self._override_name(group, fsmeta.group_name))
        return mode, suid, sgid, user, gname

    def base_entry(self, path: str, mode: int, uid: int, gid: int, mtime_ns: int,
                   user_lookup=fsmeta.user_name, group_lookup=fsmeta.group_name) -> Entry:
        """The Entry for these raw values: mode, owners, names and mtime as the flags store them."""
        if user_lookup is fsmeta.user_name and group_lookup is fsmeta.group_name:
            key = (mode, uid, gid)
            head = self._heads.get(key)
            if head is None:
                head = self._head(mode, uid, gid, user_lookup, group_lookup)
                if len(self._heads) >= 4096:
                    self._heads.clear()
                self._heads[key] = head
        else:
            head = self._head(mode, uid, gid, user_lookup, group_lookup)
        if self.clamp is not None and mtime_ns > self.clamp:
            mtime_ns = self.clamp
        mtime = validate.file_mtime(path, mtime_ns, self.granularity)
        return Entry(path, head[0], self.flags, 0, head[1], head[2], mtime, head[3], head[4])


class TreeWalker(EntryPolicy):
    """The directory source: walks a tree like casync's encoder, children in strcmp order, filtered
    by the feature flags, nodump and .caexclude, and reads each node's metadata as the flags ask."""

    def __init__(self, root: str | os.PathLike, options: EncoderOptions):
        super().__init__(options)
        self.root = os.fspath(root)
        self.covering_flags = 0
        self._chattr_flags: dict[int, int] = {}
        self._selinux_listed = not _selinux_enabled()

    @property
    def feature_flags(self) -> int:
        return self.flags

    def _cover(self, path: str, magic: int) -> None:
        """Note what the file system at ``path`` can store; enforce ``require_flags``."""
        fs_flags = from_fs_magic(magic)
        self.covering_flags |= fs_flags
        missing = self.require & ~fs_flags
        if missing:
            raise UnsupportedError(
                f"{path or '.'}: its file system (type 0x{magic:x}) cannot store "
                f"{format_with_flags(missing)}, which the feature set requires")

    # ----------------------------------------------------------------- metadata

    def _acl(self, target, follow: bool, is_dir: bool, entry: Entry) -> None:
        value = fsmeta.get_xattr(target, fsmeta.ACL_XATTR_ACCESS, follow)
        if value is not None:
            users, groups, group_obj, mask = self._acl_entries(value)
            entry.acl_user, entry.acl_group = users, groups
            if group_obj is not None and mask is not None:
                entry.acl_group_obj = group_obj
        if is_dir:
            value = fsmeta.get_xattr(target, fsmeta.ACL_XATTR_DEFAULT, follow)
            if value is not None:
                users, groups, _, _ = self._acl_entries(value)
                objs = {tag: perm for tag, perm, _ in fsmeta.parse_acl_xattr(value)}
                unset = fmt.ACL_PERMISSION_UNSET
                d = ACLDefault(objs.get(ACL_USER_OBJ, unset), objs.get(ACL_GROUP_OBJ, unset),
                               objs.get(ACL_OTHER, unset), objs.get(ACL_MASK, unset))
                if (d.user_obj, d.group_obj, d.other, d.mask) != (unset,) * 4:
                    entry.acl_default = d
                entry.acl_default_user, entry.acl_default_group = users, groups

    def _acl_entries(self, value: bytes):
        users, groups = [], []
        group_obj = mask = None
        try:
            parsed = fsmeta.parse_acl_xattr(value)
        except ValueError as e:
            raise PycatarError(str(e)) from None
        with_ids = self.flags & WITH_UIDS
        with_names = self.flags & F.WITH_USER_NAMES
        for tag, perm, ident in parsed:
            perm &= 7
            if tag == ACL_GROUP_OBJ:
                group_obj = perm
            elif tag == ACL_MASK:
                mask = perm
            elif tag in (ACL_USER, ACL_GROUP):
                shifted = self._shift(ident)
                lookup = fsmeta.user_name if tag == ACL_USER else fsmeta.group_name
                name = self._name_for(ident, lookup) if with_names else None
                (users if tag == ACL_USER else groups).append(
                    ACLEntry(shifted if with_ids else 0, perm, name))
        key = lambda a: (a.id, a.name is not None, os.fsencode(a.name) if a.name else b"", a.permissions)
        users.sort(key=key)
        groups.sort(key=key)
        return users, groups, group_obj, mask

    def _xattrs(self, fd: int, names: list[str], is_reg: bool, entry: Entry) -> None:
        xattrs = []
        for name in names:
            store = name.startswith(_XATTR_STORED_PREFIXES) and validate.xattr_name_ok(os.fsencode(name))
            fcaps = is_reg and name == _FCAPS_XATTR
            if not (store or fcaps):
                continue
            value = fsmeta.get_xattr(fd, name)
            if value is None:
                continue
            if fcaps:
                if self.flags & F.WITH_FCAPS:
                    entry.fcaps = value
            elif self.flags & F.WITH_XATTRS:
                xattrs.append((os.fsencode(name), value))
        xattrs.sort()
        entry.xattrs = xattrs

    def _selinux(self, target, follow: bool) -> str | None:
        value = fsmeta.get_xattr(target, _SELINUX_XATTR, follow)
        if not value:
            return None
        return os.fsdecode(value.rstrip(b"\0"))

    def make_entry(self, path: str, s: os.stat_result, fd: int | None, parent_fd: int | None,
                   name: str | None, magic: int, target: str | None, chattr: int | None = None) -> Entry:
        """The Entry of one node: ``fd`` is open for directories and regular files (None for the
        other types, read through ``parent_fd`` and ``name``)."""
        flags = self.flags
        fmt_bits = s.st_mode & _S_IFMT
        is_dir, is_reg, is_lnk = fmt_bits == _S_IFDIR, fmt_bits == _S_IFREG, fmt_bits == _S_IFLNK
        if not type_stored(flags, fmt_bits):
            raise UnsupportedError(f"{path or '.'}: file type not permitted by the feature flags")

        entry = self.base_entry(path, s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns)

        if fd is not None:
            if flags & WITH_CHATTR:
                if chattr is None:
                    chattr = fsmeta.read_chattr(fd)
                if chattr:
                    bits = self._chattr_flags.get(chattr)
                    if bits is None:
                        bits = self._chattr_flags[chattr] = from_chattr(chattr) & flags
                    entry.flags |= bits
            if flags & WITH_FAT_ATTRS and magic in (MSDOS_SUPER_MAGIC, FUSE_SUPER_MAGIC):
                entry.flags |= from_fat_attrs(fsmeta.read_fat_attrs(fd)) & flags
            if is_dir and flags & F.WITH_SUBVOLUME and magic == BTRFS_SUPER_MAGIC and s.st_ino == 256:
                entry.flags |= (F.WITH_SUBVOLUME | (F.WITH_SUBVOLUME_RO if fsmeta.subvolume_read_only(fd) else 0)) & flags
            # the xattr names, once: what is not listed is not read (where the list is complete)
            names = listed = None
            if flags & (F.WITH_XATTRS | F.WITH_FCAPS | F.WITH_SELINUX | F.WITH_ACL):
                try:
                    names = os.listxattr(fd)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EBADF):
                        raise
                else:
                    if magic in _LISTXATTR_COMPLETE:
                        listed = names
            if names and flags & (F.WITH_XATTRS | F.WITH_FCAPS):
                self._xattrs(fd, names, is_reg, entry)
            if flags & F.WITH_SELINUX and (listed is None or not self._selinux_listed or _SELINUX_XATTR in listed):
                entry.selinux = self._selinux(fd, True)
            if flags & F.WITH_ACL and (listed is None or fsmeta.ACL_XATTR_ACCESS in listed
                                       or (is_dir and fsmeta.ACL_XATTR_DEFAULT in listed)):
                self._acl(fd, True, is_dir, entry)
            if flags & F.WITH_QUOTA_PROJID and magic in _EXT4_XFS_FUSE:
                projid = fsmeta.read_quota_projid(fd)
                if projid:
                    entry.quota_projid = projid
        elif parent_fd is not None:
            proc_path = f"/proc/self/fd/{parent_fd}/{name}"
            if flags & F.WITH_SELINUX:
                entry.selinux = self._selinux(proc_path, False)
            if flags & F.WITH_ACL and not is_lnk:
                self._acl(proc_path, True, is_dir, entry)

        if is_reg:
            entry.size = s.st_size if magic not in _VIRTUAL_FS else 0
        elif is_lnk:
            entry.target = target
        elif fmt_bits in (st.S_IFBLK, st.S_IFCHR):
            entry.rdev_major, entry.rdev_minor = os.major(s.st_rdev), os.minor(s.st_rdev)
        return entry

    # ----------------------------------------------------------------- walking

    def _shall_store(self, parent: _Node, name: str, bname: bytes, s: os.stat_result,
                     fd: int | None, chattr: int | None) -> tuple[bool, list]:
        flags = self.flags
        t = st.S_IFMT(s.st_mode)
        if t == st.S_IFLNK and not flags & F.WITH_SYMLINKS:
            return False, []
        if t in (st.S_IFBLK, st.S_IFCHR) and not flags & F.WITH_DEVICE_NODES:
            return False, []
        if t == st.S_IFIFO and not flags & F.WITH_FIFOS:
            return False, []
        if t == st.S_IFSOCK and not flags & F.WITH_SOCKETS:
            return False, []
        if chattr is not None and flags & F.EXCLUDE_NODUMP and chattr & 0x40:  # FS_NODUMP_FL
            return False, []
        if flags & F.EXCLUDE_SUBMOUNTS and fd is not None:
            if parent.mount_id is None:
                parent.mount_id = fsmeta.mount_id(parent.fd)
            child_mnt = fsmeta.mount_id(fd)
            if child_mnt >= 0 and parent.mount_id >= 0 and child_mnt != parent.mount_id:
                return False, []
        if parent.rules:
            excluded, sub = exclude.test(parent.rules, bname, t == st.S_IFDIR)
            if excluded:
                return False, []
            return True, sub
        return True, []

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as e:
            raise PycatarError(f"Failed to open {self.root}: {e.strerror}") from None

    def _root_node(self, root_fd: int) -> _Node:
        """The node of the top directory, open as ``root_fd`` (the caller closes it)."""
        s = os.fstat(root_fd)
        if not st.S_ISDIR(s.st_mode):
            raise PycatarError(f"{self.root}: not a directory")
        magic = fsmeta.fs_type(root_fd)
        self._cover("", magic)
        return _Node(self.make_entry("", s, root_fd, None, None, magic, None), root_fd, s, magic)

    def _children(self, node: _Node) -> Iterator[tuple[bytes, str, int]]:
        """(name as bytes, name, 1 regular file / 2 directory / 0 other or unknown), in strcmp order;
        loads the directory's .caexclude first."""
        if node.magic in _VIRTUAL_FS:
            return iter(())
        ents = []
        append = ents.append
        with os.scandir(node.fd) as it:
            for de in it:
                name = de.name
                kind = 1 if de.is_file(follow_symlinks=False) else 2 if de.is_dir(follow_symlinks=False) else 0
                append((name.encode(_FS_ENCODING, _FS_ERRORS), name, kind))
        ents.sort()
        if self.flags & F.EXCLUDE_FILE:
            for bname, _name, _kind in ents:
                if bname == b".caexclude":
                    node.rules.extend(exclude.load(node.fd))
                    break
        return iter(ents)

    def _open_child(self, dfd: int, bname: bytes, kind: int, shown: str):
        """(stat, fd) of a child: ``fd`` open for a directory or regular file, None for other types;
        None when the child vanished meanwhile.  A child replaced by another type since the listing
        is archived as what is there now."""
        fd = None
        if kind:
            try:
                fd = os.open(bname, _O_FILE if kind == 1 else _O_DIR, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):  # replaced by a symlink or file
                    raise PycatarError(f"Failed to open {shown}: {e.strerror}") from None
            else:
                s = os.fstat(fd)
                t = s.st_mode & _S_IFMT
                if t == _S_IFREG or t == _S_IFDIR:
                    return s, fd
                os.close(fd)  # replaced by a FIFO, device... meanwhile
                fd = None
        try:
            s = os.stat(bname, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        t = s.st_mode & _S_IFMT
        if t == _S_IFREG or t == _S_IFDIR:
            try:
                fd = os.open(bname, _O_DIR if t == _S_IFDIR else _O_FILE, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise PycatarError(f"Failed to open {shown}: {e.strerror}") from None
            s = os.fstat(fd)
            t = s.st_mode & _S_IFMT
            if t != _S_IFREG and t != _S_IFDIR:
                os.close(fd)
                raise PycatarError(f"{shown}: replaced while it was being archived")
        return s, fd

    def events(self) -> Iterator[tuple[int, Entry, int | None]]:
        """The tree in archive order: ``(0, entry, fd)`` for each entry (depth first, a directory
        before its children, siblings in strcmp order of their names; ``fd`` is an open, readable fd
        of a regular file, valid until the next event is asked for, else None) and
        ``(1, directory_entry, None)`` after a directory's last child."""
        root_fd = self._open_root()
        frames: list[tuple[_Node, Iterator, str]] = []
        try:
            root = self._root_node(root_fd)
            yield 0, root.entry, None
            frames.append((root, self._children(root), ""))
            while frames:
                node, children, prefix = frames[-1]
                dfd, pmagic, pdev = node.fd, node.magic, node.st.st_dev
                for bname, name, kind in children:
                    opened = self._open_child(dfd, bname, kind, prefix + name)
                    if opened is None:
                        continue  # vanished meanwhile
                    s, fd = opened
                    try:
                        chattr = None
                        if fd is not None and self.flags & _CHATTR_OR_NODUMP:
                            chattr = fsmeta.read_chattr(fd)
                        keep, sub = self._shall_store(node, name, bname, s, fd, chattr)
                        if not keep:
                            continue
                        path = prefix + name
                        if len(frames) > validate.MAX_DEPTH:  # the child's depth is len(frames)
                            raise validate.refusal(path, validate.depth_problem(path))
                        t = s.st_mode & _S_IFMT
                        magic = pmagic if fd is None or s.st_dev == pdev else fsmeta.fs_type(fd)
                        target = os.readlink(bname, dir_fd=dfd) if t == _S_IFLNK else None
                        entry = self.make_entry(path, s, fd, dfd, name, magic, os.fsdecode(target)
                                                if target is not None else None, chattr)
                        if magic != pmagic:  # the parent's file system is covered already
                            self._cover(path, magic)
                        if t == _S_IFDIR:
                            child = _Node(entry, fd, s, magic, sub)
                            frames.append((child, iter(()), path + "/"))
                            fd = None  # the frame owns it now
                            frames[-1] = (child, self._children(child), path + "/")
                            yield 0, entry, None
                            break
                        yield 0, entry, fd if t == _S_IFREG else None
                    finally:
                        if fd is not None:
                            os.close(fd)
                else:
                    frames.pop()
                    if node is not root:
                        os.close(dfd)
                        node.fd = None
                    yield 1, node.entry, None
        finally:
            for node, _, _ in frames:
                if node.fd is not None and node.fd != root_fd:
                    os.close(node.fd)
            os.close(root_fd)


def iter_entries(root, feature_flags: int, **options) -> Iterator[Entry]:
    """The entries of the tree at ``root``, in archive order, as an archive with these flags holds them;
    an entry no archive can hold is refused as the encoder refuses it (CATAR-60)."""
    for event, entry, _fd in TreeWalker(root, EncoderOptions(feature_flags, **options)).events():
        if event == 0:
            validate.check_entry(entry)
            yield entry


# --------------------------------------------------------------------------- records

_pack_header = fmt.HEADER.pack
_NUL = b"\0"
_T = fmt.RecordType
_T_FILENAME = _T.FILENAME
_T_PAYLOAD = _T.PAYLOAD
_HEADER_SIZE = fmt.HEADER_SIZE


@lru_cache(maxsize=1024)
def _string_record(rtype: int, text: str) -> bytes:
    data = os.fsencode(text) + _NUL
    return _pack_header(_HEADER_SIZE + len(data), rtype) + data


def _acl_records(rtype: int, entries: list[ACLEntry]) -> list[bytes]:
    out = []
    for a in entries:
        name = os.fsencode(a.name) + _NUL if a.name is not None else b""
        out.append(fmt.ACL_USER.pack(fmt.ACL_ENTRY_FIXED_SIZE + len(name), rtype, a.id, a.permissions) + name)
    return out


def entry_records(entry: Entry) -> bytes:
    """ENTRY and its follow-up records up to (and including) the PAYLOAD header, SYMLINK or DEVICE:
    the one place an entry's records are laid out."""
    head = fmt.ENTRY.pack(fmt.ENTRY_SIZE, _T.ENTRY, entry.feature_flags, entry.mode, entry.flags,
                          entry.uid, entry.gid, entry.mtime)
    if entry.user is not None:
        head += _string_record(_T.USER, entry.user)
    if entry.group is not None:
        head += _string_record(_T.GROUP, entry.group)
    if (entry.xattrs or entry.acl_user or entry.acl_group or entry.acl_group_obj is not None
            or entry.acl_default is not None or entry.acl_default_user or entry.acl_default_group
            or entry.selinux is not None or entry.fcaps is not None or entry.quota_projid):
        head += _extra_records(entry)
    mode = entry.mode & _S_IFMT
    if mode == _S_IFREG:
        return head + _pack_header(_HEADER_SIZE + entry.size, _T_PAYLOAD)
    if mode == _S_IFLNK:
        return head + _string_record(_T.SYMLINK, entry.target)
    if mode == st.S_IFBLK or mode == st.S_IFCHR:
        return head + fmt.DEVICE.pack(fmt.Device.sizeof(), _T.DEVICE, entry.rdev_major, entry.rdev_minor)
    return head


def _extra_records(entry: Entry) -> bytes:
    """The records between USER/GROUP and the PAYLOAD/SYMLINK/DEVICE record: xattrs, ACLs, label,
    capabilities, project id."""
    parts = []
    for name, value in entry.xattrs:
        parts.append(_pack_header(_HEADER_SIZE + len(name) + 1 + len(value), _T.XATTR) + name + _NUL + value)
    parts += _acl_records(_T.ACL_USER, entry.acl_user)
    parts += _acl_records(_T.ACL_GROUP, entry.acl_group)
    if entry.acl_group_obj is not None:
        parts.append(fmt.ACL_GROUP_OBJ.pack(fmt.ACLGroupObj.sizeof(), _T.ACL_GROUP_OBJ, entry.acl_group_obj))
    if entry.acl_default is not None:
        d = entry.acl_default
        parts.append(fmt.ACL_DEFAULT.pack(fmt.ACLDefault.sizeof(), _T.ACL_DEFAULT, d.user_obj, d.group_obj,
                                          d.other, d.mask))
    parts += _acl_records(_T.ACL_DEFAULT_USER, entry.acl_default_user)
    parts += _acl_records(_T.ACL_DEFAULT_GROUP, entry.acl_default_group)
    if entry.selinux is not None:
        parts.append(_string_record(_T.SELINUX, entry.selinux))
    if entry.fcaps is not None:
        parts.append(_pack_header(_HEADER_SIZE + len(entry.fcaps), _T.FCAPS) + entry.fcaps)
    if entry.quota_projid:
        parts.append(fmt.QUOTA_PROJID.pack(fmt.QuotaProjID.sizeof(), _T.QUOTA_PROJID, entry.quota_projid))
    return b"".join(parts)


def filename_record(bname: bytes) -> bytes:
    return _pack_header(_HEADER_SIZE + len(bname) + 1, _T_FILENAME) + bname + _NUL


# --------------------------------------------------------------------------- the serialiser


def new_buffer():
    """A fresh output buffer of :data:`OUT_BUFFER` zero bytes, writable.  On Linux, an anonymous
    mapping whose pages the kernel provides all at once (MAP_POPULATE) rather than one page fault per
    4 KiB as the serialiser first writes them: in a virtual machine a fault costs about 3 us, and a
    make of /usr/lib/python3.11 took 13 000 of them for its buffers (31 alternating runs: 2-3.5 %
    less CPU, wall time 0.96-0.97 of a zeroed bytearray's)."""
    try:  # start-up: only a serialiser needs mmap
        from mmap import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, mmap
    except ImportError:  # not Linux
        return bytearray(OUT_BUFFER)
    return mmap(-1, OUT_BUFFER, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)


class _Out:
    """The output: fixed-size buffers filled in order; full ones collect in ``ready``.  ``base`` is
    the stream offset of the current buffer; ``skipped`` counts payload bytes left out of the
    output (their offsets still count)."""

    __slots__ = ("alloc", "size", "mv", "pos", "base", "ready", "skipped")

    def __init__(self, alloc):
        self.alloc = alloc
        self.size = OUT_BUFFER
        self.mv = memoryview(alloc())
        self.pos = 0
        self.base = 0
        self.skipped = 0
        self.ready: list[memoryview] = []

    def tell(self) -> int:
        """The stream offset of the next byte."""
        return self.base + self.pos + self.skipped

    def put(self, data) -> None:
        pos = self.pos
        end = pos + len(data)
        if end <= self.size:
            self.mv[pos:end] = data
            self.pos = end
        else:
            self._spill(memoryview(data).cast("B"))

    def _spill(self, data: memoryview) -> None:
        while data:
            if self.pos == self.size:
                self._rotate()
            n = min(len(data), self.size - self.pos)
            self.mv[self.pos:self.pos + n] = data[:n]
            self.pos += n
            data = data[n:]

    def _rotate(self) -> None:
        self.ready.append(self.mv)
        self.base += self.size
        self.mv = memoryview(self.alloc())
        self.pos = 0

    def read_from(self, fd: int, size: int, off: int, path: str) -> int:
        """Read bytes ``off`` to ``size`` of ``fd`` into the output, up to the end of the current
        buffer (or of the next one, when the current one is full).  Returns the new offset."""
        if self.pos == self.size:
            self._rotate()
        preadv = os.preadv
        while off < size:
            pos = self.pos
            if pos == self.size:
                break
            end = min(self.size, pos + size - off)
            n = preadv(fd, [self.mv[pos:end]], off)
            if not n:
                raise PycatarError(f"{path}: file shrank while it was being archived")
            self.pos = pos + n
            off += n
        return off


class CatarSerializer:
    """The catar stream of a source of entries: ENTRY records and their follow-ups, a FILENAME
    record before every child, payloads, and the GOODBYE table closing each directory
    (spec/catar.md), written into :data:`OUT_BUFFER`-sized buffers.

    ``source`` has ``feature_flags``, ``covering_flags`` and ``events()`` (see
    :meth:`TreeWalker.events`); an event's token is an fd to read a regular file's payload from,
    or anything else that ``source.read_payload(entry, token)`` turns into pieces of bytes.
    ``on_payload(entry, token)`` is called before each non-empty payload (``entry.payload_offset``
    is set then); with ``payloads=False`` payloads are left out of the output, their offsets still
    counted (the layout of a tree without reading its files).  :attr:`offset` counts the stream's
    bytes handed out so far; iterate for the stream."""

    def __init__(self, source, *, payloads: bool = True,
                 on_payload: Callable[[Entry, object], None] | None = None):
        self.source = source
        self.payloads = payloads
        self.on_payload = on_payload
        self.offset = 0

    @property
    def feature_flags(self) -> int:
        return self.source.feature_flags

    @property
    def covering_flags(self) -> int:
        return self.source.covering_flags

    def __iter__(self) -> Iterator[memoryview]:
        return self.buffers()

    def buffers(self, alloc=None) -> Iterator[memoryview]:
        """The stream as :data:`OUT_BUFFER`-sized memoryviews (the last one shorter).

        ``alloc()`` returns a fresh :func:`new_buffer` to fill (default: a new one each time, so
        every buffer handed out stays valid); a caller may recycle the buffers it is done with
        through it."""
        out = _Out(alloc or new_buffer)
        ready = out.ready
        source = self.source
        events = source.events()
        # one frame a directory: [ENTRY offset, goodbye items]; an item: [name hash, start, end]
        stack: list[list] = []
        item = None
        put = out.put
        check_entry = validate.check_entry  # never write an entry a reader rejects (CATAR-60)
        try:
            for event, entry, token in events:
                if ready:
                    self.offset = out.base
                    yield from ready
                    ready.clear()
                if event == 1:
                    entry_offset, items = stack.pop()
                    here = out.tell()
                    out.put(goodbye_record(items, here, entry_offset))
                    if stack:
                        stack[-1][1][-1][2] = out.tell()
                    continue
                check_entry(entry)
                start = out.base + out.pos + out.skipped
                if stack:
                    bname = os.fsencode(entry.path.rpartition("/")[2])
                    item = [name_hash(bname), start, None]
                    stack[-1][1].append(item)
                    rec = filename_record(bname)
                    entry.offset = start + len(rec)
                    put(rec + entry_records(entry))
                else:
                    entry.offset = start
                    put(entry_records(entry))
                mode = entry.mode & _S_IFMT
                if mode == _S_IFDIR:
                    stack.append([entry.offset, []])
                    continue
                size = entry.size if mode == _S_IFREG else 0
                if size:
                    entry.payload_offset = out.tell()
                    if self.on_payload is not None:
                        self.on_payload(entry, token)
                    if not self.payloads:
                        out.skipped += size
                    elif type(token) is int:
                        off = 0
                        while True:
                            off = out.read_from(token, size, off, entry.path)
                            if off == size:
                                break
                            self.offset = out.base
                            yield from ready
                            ready.clear()
                    else:
                        end = entry.payload_offset + size
                        for piece in source.read_payload(entry, token):
                            if out.tell() + len(piece) > end:
                                raise PycatarError(f"{entry.path}: more payload than the {size} bytes announced")
                            out.put(piece)
                            if ready:
                                self.offset = out.base
                                yield from ready
                                ready.clear()
                        if out.tell() != end:
                            raise PycatarError(f"{entry.path}: payload ended {end - out.tell()} bytes short")
                if stack:
                    item[2] = out.tell()
            self.offset = out.tell()
            yield from ready
            ready.clear()
            if out.pos:
                yield out.mv[:out.pos]
        finally:
            events.close()


class CatarEncoder(CatarSerializer):
    """Serialises the tree at ``root`` into a catar stream.  Iterate over it for the stream's bytes."""

    def __init__(self, root, feature_flags: int, **options):
        super().__init__(TreeWalker(root, EncoderOptions(feature_flags, **options)))

    @property
    def walker(self) -> TreeWalker:
        return self.source


def encode(root, feature_flags: int, **options) -> Iterator[memoryview]:
    """The catar stream of the tree at ``root``."""
    return iter(CatarEncoder(root, feature_flags, **options))
