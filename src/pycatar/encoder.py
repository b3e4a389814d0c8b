"""Encoder: a directory tree on disk becomes a catar stream, byte for byte as casync writes it.

:func:`iter_entries` walks the tree and yields :class:`~pycatar.entry.Entry` objects in archive
order (what ``list``/``mtree``/``stat`` of a directory show); :func:`encode` serialises the same walk
into the catar stream, as an iterator of ``bytes`` pieces in bounded memory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as st
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from . import exclude, format as fmt, fsmeta, validate
from siphash24 import siphash24

from .goodbye import goodbye_record, name_hash
from .entry import ACLDefault, ACLEntry, Entry
from .errors import PycatarError, UnsupportedError
from .flags import B as F
from .flags import WITH_CHATTR, WITH_FAT_ATTRS, WITH_UIDS, from_chattr, from_fat_attrs, from_fs_magic
from .flags import BTRFS_SUPER_MAGIC, EXT2_SUPER_MAGIC, FUSE_SUPER_MAGIC, MSDOS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC
from .flags import normalize, time_granularity_ns
from .fsmeta import ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ

PAYLOAD_BLOCK = 1 << 20

# file systems whose contents casync never serialises (kernel API file systems)
_VIRTUAL_FS = {
    0x42494E4D, 0x63677270, 0x27E0EB, 0x62656570, 0x64626720, 0x1CD1, 0xDE5E81E4, 0x65735543,
    0x958458F6, 0x19800202, 0x6E667364, 0x9FA0, 0x6165676C, 0x67596969, 0x73636673, 0xF97CFF8C,
    0x43415D53, 0x62656572,
}
_EXT4_XFS_FUSE = (EXT2_SUPER_MAGIC, XFS_SUPER_MAGIC, FUSE_SUPER_MAGIC)
_FD_NODES = (st.S_IFDIR, st.S_IFREG)
WITH_CHATTR, WITH_FAT_ATTRS, WITH_UIDS = int(WITH_CHATTR), int(WITH_FAT_ATTRS), int(WITH_UIDS)
_CHATTR_OR_NODUMP = WITH_CHATTR | F.EXCLUDE_NODUMP


@dataclass(slots=True)
class EncoderOptions:
    feature_flags: int
    uid_shift: int = 0
    uid_range: int = 0  # 0: the full 32-bit range
    #: store this uid (gid) for every entry instead of the file's; not shifted (``--owner=``/``--group=``)
    owner: int | None = None
    group: int | None = None
    #: mtimes later than this (ns) are stored as this, before rounding (``SOURCE_DATE_EPOCH``)
    clamp_mtime_ns: int | None = None
    #: WITH_ bits every file system the walk reads MUST be able to store, else an error
    #: (``--reproducible``, spec/reproducible.md)
    require_flags: int = 0


class _Node:
    """A node being walked: its Entry, open fd (dirs and regular files) and exclude rules."""

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


class EntryPolicy:
    """How raw metadata (a stat result, a tar header...) becomes what an ENTRY stores under the
    feature flags and encoder options: the mode, owners and names, the rounded (and clamped) mtime.
    Shared by the tree walker and the tar converter (tarconv)."""

    def __init__(self, options: EncoderOptions):
        self.flags = normalize(options.feature_flags)
        self.granularity = time_granularity_ns(self.flags)
        self.uid_shift = options.uid_shift
        self.uid_range = options.uid_range
        self.owner = options.owner
        self.group = options.group
        self.clamp = options.clamp_mtime_ns
        self.require = int(options.require_flags)

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

    def base_entry(self, path: str, mode: int, uid: int, gid: int, mtime_ns: int,
                   user_lookup=fsmeta.user_name, group_lookup=fsmeta.group_name) -> Entry:
        """The Entry for these raw values: mode, owners, names and mtime as the flags store them."""
        flags = self.flags
        fmt_bits = st.S_IFMT(mode)
        if fmt_bits == st.S_IFLNK:
            mode = st.S_IFLNK | 0o777
        elif flags & (F.WITH_PERMISSIONS | F.WITH_ACL):
            mode &= 0o177777
        elif flags & F.WITH_READ_ONLY:
            is_dir = fmt_bits == st.S_IFDIR
            writable = mode & 0o222
            mode = fmt_bits | ((0o777 if is_dir else 0o666) if writable else (0o555 if is_dir else 0o444))
        else:
            mode = fmt_bits | (0o777 if fmt_bits == st.S_IFDIR else 0o666)

        if self.clamp is not None and mtime_ns > self.clamp:
            mtime_ns = self.clamp
        mtime = validate.file_mtime(path, mtime_ns, self.granularity)

        owner, group = self.owner, self.group
        if flags & WITH_UIDS:
            suid = self._shift(uid) if owner is None else owner
            sgid = self._shift(gid) if group is None else group
        else:
            suid = sgid = 0

        entry = Entry(path=path, mode=mode, feature_flags=flags, uid=suid, gid=sgid, mtime=mtime)

        if flags & F.WITH_USER_NAMES:
            entry.user = (self._name_for(uid, user_lookup) if owner is None
                          else self._override_name(owner, fsmeta.user_name))
            entry.group = (self._name_for(gid, group_lookup) if group is None
                           else self._override_name(group, fsmeta.group_name))
        return entry


class TreeWalker(EntryPolicy):
    """Walks a tree like casync's encoder: children in strcmp order, filtered by feature flags,
    nodump and .caexclude, and reads each node's metadata as the flags ask."""

    def __init__(self, root: str | os.PathLike, options: EncoderOptions):
        super().__init__(options)
        self.root = os.fspath(root)
        self.covering_flags = 0

    def _cover(self, path: str, magic: int) -> None:
        """Note what the file system at ``path`` can store; enforce ``require_flags``."""
        fs_flags = from_fs_magic(magic)
        self.covering_flags |= fs_flags
        missing = self.require & ~fs_flags
        if missing:
            from .flags import format_with_flags

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

    def _xattrs(self, fd: int, is_reg: bool, entry: Entry) -> None:
        try:
            names = os.listxattr(fd)
        except OSError as e:
            if e.errno in (95, 9):  # EOPNOTSUPP, EBADF
                return
            raise
        xattrs = []
        for name in names:
            bname = os.fsencode(name)
            store = (bname.startswith((b"user.", b"trusted.")) and validate.xattr_name_ok(bname))
            fcaps = is_reg and name == "security.capability"
            if not (store or fcaps):
                continue
            value = fsmeta.get_xattr(fd, name)
            if value is None:
                continue
            if fcaps:
                if self.flags & F.WITH_FCAPS:
                    entry.fcaps = value
            elif self.flags & F.WITH_XATTRS:
                xattrs.append((bname, value))
        xattrs.sort()
        entry.xattrs = xattrs

    def _selinux(self, target, follow: bool) -> str | None:
        value = fsmeta.get_xattr(target, "security.selinux", follow)
        if not value:
            return None
        return os.fsdecode(value.rstrip(b"\0"))

    def make_entry(self, path: str, s: os.stat_result, fd: int | None, parent_fd: int | None,
                   name: str | None, magic: int, target: str | None, chattr: int | None = None) -> Entry:
        flags = self.flags
        fmt_bits = st.S_IFMT(s.st_mode)
        is_dir, is_reg = fmt_bits == st.S_IFDIR, fmt_bits == st.S_IFREG
        is_lnk = fmt_bits == st.S_IFLNK

        if not type_stored(flags, fmt_bits):
            raise UnsupportedError(f"{path or '.'}: file type not permitted by the feature flags")

        entry = self.base_entry(path, s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns)

        if fd is not None:
            if flags & WITH_CHATTR:
                if chattr is None:
                    chattr = fsmeta.read_chattr(fd)
                entry.flags |= from_chattr(chattr) & flags
            if flags & WITH_FAT_ATTRS and magic in (MSDOS_SUPER_MAGIC, FUSE_SUPER_MAGIC):
                entry.flags |= from_fat_attrs(fsmeta.read_fat_attrs(fd)) & flags
            if is_dir and flags & F.WITH_SUBVOLUME and magic == BTRFS_SUPER_MAGIC and s.st_ino == 256:
                entry.flags |= self._subvolume_flags(fd) & flags

        proc_path = None
        if fd is None and parent_fd is not None:
            proc_path = f"/proc/self/fd/{parent_fd}/{name}"

        if flags & F.WITH_SELINUX:
            entry.selinux = self._selinux(fd if fd is not None else proc_path, fd is not None)

        if flags & (F.WITH_XATTRS | F.WITH_FCAPS) and fd is not None:
            self._xattrs(fd, is_reg, entry)

        if flags & F.WITH_ACL and not is_lnk:
            if fd is not None:
                self._acl(fd, True, is_dir, entry)
            elif proc_path is not None:
                self._acl(proc_path, True, is_dir, entry)

        if flags & F.WITH_QUOTA_PROJID and fd is not None and magic in _EXT4_XFS_FUSE:
            projid = fsmeta.read_quota_projid(fd)
            if projid:
                entry.quota_projid = projid

        if is_reg:
            entry.size = s.st_size if magic not in _VIRTUAL_FS else 0
        elif is_lnk:
            entry.target = target
        elif fmt_bits in (st.S_IFBLK, st.S_IFCHR):
            entry.rdev_major, entry.rdev_minor = os.major(s.st_rdev), os.minor(s.st_rdev)
        return entry

    @staticmethod
    def _subvolume_flags(fd: int) -> int:
        import fcntl
        import struct

        buf = bytearray(8)
        fcntl.ioctl(fd, 0x80089419, buf)  # BTRFS_IOC_SUBVOL_GETFLAGS
        ro = struct.unpack("=Q", buf)[0] & 2  # BTRFS_SUBVOL_RDONLY
        return int(F.WITH_SUBVOLUME) | (int(F.WITH_SUBVOLUME_RO) if ro else 0)

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

    def walk(self) -> Iterator[tuple[int, Entry, _Node | None]]:
        """Yields (event, entry, node): event 0 = an entry (node.fd readable for regular files),
        1 = the end of a directory's children."""
        root_fd = self._open_root()
        try:
            yield from self._walk_dir(self._root_node(root_fd))
        finally:
            os.close(root_fd)

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

    def _walk_dir(self, node: _Node) -> Iterator[tuple[int, Entry, _Node | None]]:
        yield 0, node.entry, node
        if node.magic in _VIRTUAL_FS:
            yield 1, node.entry, node
            return
        dfd = node.fd
        if self.flags & F.EXCLUDE_FILE:
            node.rules.extend(exclude.load(dfd))
        names = sorted(os.fsencode(n) for n in os.listdir(dfd))
        prefix = node.entry.path + "/" if node.entry.path else ""
        for bname in names:
            name = os.fsdecode(bname)
            try:
                s = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished meanwhile
            t = st.S_IFMT(s.st_mode)
            fd = None
            if t in _FD_NODES:
                # O_NONBLOCK: replaced by a FIFO since the stat, the open must not block (_O_FILE)
                oflags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK
                if t == st.S_IFDIR:
                    oflags |= os.O_DIRECTORY
                try:
                    fd = os.open(name, oflags, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):  # replaced by a symlink or file
                        raise PycatarError(f"Failed to open {prefix}{name}: {e.strerror}") from None
                    fd = None
                if fd is not None:
                    s = os.fstat(fd)
                if fd is None or st.S_IFMT(s.st_mode) != t:  # replaced meanwhile: archive what is there now
                    if fd is not None:
                        os.close(fd)
                        fd = None
                    try:
                        s = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    t = st.S_IFMT(s.st_mode)
                    if t in _FD_NODES:
                        raise PycatarError(f"{prefix}{name}: replaced while it was being archived")
            try:
                chattr = fsmeta.read_chattr(fd) if fd is not None and self.flags & _CHATTR_OR_NODUMP else None
                keep, sub = self._shall_store(node, name, bname, s, fd, chattr)
                if not keep:
                    continue
                magic = node.magic
                if fd is not None and s.st_dev != node.st.st_dev:
                    magic = fsmeta.fs_type(fd)
                target = os.readlink(name, dir_fd=dfd) if t == st.S_IFLNK else None
                entry = self.make_entry(prefix + name, s, fd, dfd, name, magic, target, chattr)
                child = _Node(entry, fd, s, magic, sub)
                if magic != node.magic:  # the parent's file system is covered already
                    self._cover(entry.path, magic)
                if t == st.S_IFDIR:
                    yield from self._walk_dir(child)
                else:
                    yield 0, entry, child
            finally:
                if fd is not None:
                    os.close(fd)
        yield 1, node.entry, node


def iter_entries(root, feature_flags: int, **options) -> Iterator[Entry]:
    """The entries of the tree at ``root``, in archive order, as an archive with these flags holds them;
    an entry no archive can hold is refused as the encoder refuses it (CATAR-60)."""
    walker = TreeWalker(root, EncoderOptions(feature_flags, **options))
    for event, entry, _node in walker.walk():
        if event == 0:
            validate.check_entry(entry)
            yield entry


# --------------------------------------------------------------------------- serialisation

_pack_header = fmt.HEADER.pack
_NUL = b"\0"


def _string_record(rtype: int, text: str) -> bytes:
    data = os.fsencode(text) + _NUL
    return _pack_header(fmt.HEADER_SIZE + len(data), rtype) + data


def _acl_records(rtype: int, entries: list[ACLEntry]) -> list[bytes]:
    out = []
    for a in entries:
        name = os.fsencode(a.name) + _NUL if a.name is not None else b""
        out.append(fmt.ACL_USER.pack(fmt.ACL_ENTRY_FIXED_SIZE + len(name), rtype, a.id, a.permissions) + name)
    return out


def entry_records(entry: Entry) -> bytes:
    """ENTRY and its follow-up records up to (and including) the PAYLOAD header, SYMLINK or DEVICE."""
    T = fmt.RecordType
    parts = [fmt.ENTRY.pack(fmt.ENTRY_SIZE, T.ENTRY, entry.feature_flags, entry.mode, entry.flags,
                            entry.uid, entry.gid, entry.mtime)]
    if entry.user is not None:
        parts.append(_string_record(T.USER, entry.user))
    if entry.group is not None:
        parts.append(_string_record(T.GROUP, entry.group))
    for name, value in entry.xattrs:
        parts.append(_pack_header(fmt.HEADER_SIZE + len(name) + 1 + len(value), T.XATTR) + name + _NUL + value)
    parts += _acl_records(T.ACL_USER, entry.acl_user)
    parts += _acl_records(T.ACL_GROUP, entry.acl_group)
    if entry.acl_group_obj is not None:
        parts.append(fmt.ACL_GROUP_OBJ.pack(fmt.ACLGroupObj.sizeof(), T.ACL_GROUP_OBJ, entry.acl_group_obj))
    if entry.acl_default is not None:
        d = entry.acl_default
        parts.append(fmt.ACL_DEFAULT.pack(fmt.ACLDefault.sizeof(), T.ACL_DEFAULT, d.user_obj, d.group_obj,
                                          d.other, d.mask))
    parts += _acl_records(T.ACL_DEFAULT_USER, entry.acl_default_user)
    parts += _acl_records(T.ACL_DEFAULT_GROUP, entry.acl_default_group)
    if entry.selinux is not None:
        parts.append(_string_record(T.SELINUX, entry.selinux))
    if entry.fcaps is not None:
        parts.append(_pack_header(fmt.HEADER_SIZE + len(entry.fcaps), T.FCAPS) + entry.fcaps)
    if entry.quota_projid:
        parts.append(fmt.QUOTA_PROJID.pack(fmt.QuotaProjID.sizeof(), T.QUOTA_PROJID, entry.quota_projid))
    if entry.isreg():
        parts.append(_pack_header(fmt.HEADER_SIZE + entry.size, T.PAYLOAD))
    elif entry.islnk():
        parts.append(_string_record(T.SYMLINK, entry.target))
    elif entry.isdev():
        parts.append(fmt.DEVICE.pack(fmt.Device.sizeof(), T.DEVICE, entry.rdev_major, entry.rdev_minor))
    return b"".join(parts)


def checked_records(entry: Entry) -> bytes:
    """:func:`entry_records`, after :func:`validate.check_entry`: what every encoder writes, so that
    it never writes an entry a reader rejects (CATAR-60)."""
    validate.check_entry(entry)
    return entry_records(entry)


class CatarSerializer:
    """The catar stream of any source of entries in archive order: ENTRY records, FILENAME records
    before every child, payloads, and the GOODBYE table closing each directory (spec/catar.md).

    A source is an iterable of events ``(0, entry, token)`` for each entry (depth first, a directory
    before its children, siblings in strcmp order of their names) and ``(1, directory_entry, None)``
    after a directory's last child; ``read_payload(entry, token)`` yields the ``entry.size`` bytes of
    a regular file.  :attr:`offset` counts the bytes produced so far."""

    offset = 0

    def serialize(self, events, read_payload) -> Iterator[bytes]:
        # one frame a directory: [entry_offset, goodbye items, index of the open item or -1]
        stack: list[list] = []
        for event, entry, token in events:
            if event == 1:
                frame = stack.pop()
                data = goodbye_record(frame[1], self.offset, frame[0])
                self.offset += len(data)
                yield data
                if stack:
                    stack[-1][1][-1][2] = self.offset
                continue
            if stack:
                bname = os.fsencode(entry.name)
                rec = _pack_header(fmt.HEADER_SIZE + len(bname) + 1, fmt.RecordType.FILENAME) + bname + _NUL
                stack[-1][1].append([name_hash(bname), self.offset, None])
                self.offset += len(rec)
                yield rec
            data = checked_records(entry)
            entry.offset = self.offset
            self.offset += len(data)
            yield data
            if entry.isdir():
                stack.append([entry.offset, [], None])
                continue
            if entry.isreg() and entry.size:
                entry.payload_offset = self.offset
                end = self.offset + entry.size
                for piece in read_payload(entry, token):
                    self.offset += len(piece)
                    if self.offset > end:
                        raise PycatarError(f"{entry.path}: more payload than the {entry.size} bytes announced")
                    yield piece
                if self.offset != end:
                    raise PycatarError(f"{entry.path}: payload ended {end - self.offset} bytes short")
            if stack:
                stack[-1][1][-1][2] = self.offset


class CatarEncoder(CatarSerializer):
    """Serialises a tree into a catar stream.  Iterate over it for the stream's bytes."""

    def __init__(self, root, feature_flags: int, **options):
        self.walker = TreeWalker(root, EncoderOptions(feature_flags, **options))
        self.offset = 0

    @property
    def feature_flags(self) -> int:
        return self.walker.flags

    @property
    def covering_flags(self) -> int:
        return self.walker.covering_flags

    def __iter__(self) -> Iterator[bytes]:
        return self.buffers()

    def buffers(self, alloc=None) -> Iterator[memoryview]:
        """The catar stream as :data:`OUT_BUFFER`-sized memoryviews (the last one shorter).

        ``alloc()`` returns a fresh ``bytearray(OUT_BUFFER)`` to fill (default: a new one each
        time, so every buffer handed out stays valid); a caller may recycle the buffers it is
        done with through it.  Same bytes as :meth:`serialize` over :meth:`TreeWalker.walk`."""
        return _FastEncoder(self, alloc).run()

    @staticmethod
    def _payload(entry: Entry, node: _Node) -> Iterator[bytes]:
        fd = node.fd
        left = entry.size
        pos = 0
        while left:
            data = os.pread(fd, min(PAYLOAD_BLOCK, left), pos)
            if not data:
                raise PycatarError(f"{entry.path}: file shrank while it was being archived")
            pos += len(data)
            left -= len(data)
            yield data


def encode(root, feature_flags: int, **options) -> Iterator[bytes]:
    """The catar stream of the tree at ``root``."""
    return iter(CatarEncoder(root, feature_flags, **options))


# --------------------------------------------------------------------------- fast serialisation
#
# CatarEncoder's stream, made without an Entry per node: the walk of TreeWalker.walk and the
# records of CatarSerializer, fused into one loop that writes straight into large output buffers
# (payloads are read into them with preadv, no copies).  Nodes with anything beyond an ENTRY,
# USER and GROUP record (xattrs, ACLs, SELinux labels, fcaps, project ids, FAT or subvolume flags,
# virtual file systems) and nodes without an fd (symlinks, devices, fifos, sockets) take the
# general path (make_entry + entry_records), so the bytes are the same by construction.

#: size of the output buffers (blob.READ_SIZE: the chunk pipeline takes them without copying)
OUT_BUFFER = 4 << 20

_T_ENTRY = int(fmt.RecordType.ENTRY)
_T_USER = int(fmt.RecordType.USER)
_T_GROUP = int(fmt.RecordType.GROUP)
_T_PAYLOAD = int(fmt.RecordType.PAYLOAD)
_T_FILENAME = int(fmt.RecordType.FILENAME)
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, st.S_IFREG, st.S_IFDIR
#: O_NONBLOCK: a file replaced by a FIFO after the listing must not block the open (its type is
#: checked after opening); reads of regular files and directories ignore the flag
_O_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK
_O_DIR = _O_FILE | os.O_DIRECTORY
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
#: file systems whose listxattr() names every xattr getxattr() can read (POSIX ACLs included; the
#: SELinux label too while SELinux is off: with it on, an unlabeled inode's label is not listed)
_LISTXATTR_COMPLETE = frozenset({EXT2_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC})
_XATTR_STORED_PREFIXES = ("user.", "trusted.")
_U64_MASK = 0xFFFFFFFFFFFFFFFF


def _new_buffer() -> bytearray:
    return bytearray(OUT_BUFFER)


class _Out:
    """The output: fixed-size buffers filled in order; full ones collect in ``ready``."""

    __slots__ = ("alloc", "mv", "pos", "base", "ready")

    def __init__(self, alloc):
        self.alloc = alloc
        self.mv = memoryview(alloc())
        self.pos = 0
        self.base = 0  # stream offset of the current buffer
        self.ready: list[memoryview] = []

    def put(self, data) -> None:
        pos = self.pos
        end = pos + len(data)
        if end <= OUT_BUFFER:
            self.mv[pos:end] = data
            self.pos = end
        else:
            self._spill(memoryview(data))

    def _spill(self, data: memoryview) -> None:
        while data:
            if self.pos == OUT_BUFFER:
                self._rotate()
            n = min(len(data), OUT_BUFFER - self.pos)
            self.mv[self.pos:self.pos + n] = data[:n]
            self.pos += n
            data = data[n:]

    def _rotate(self) -> None:
        self.ready.append(self.mv)
        self.base += OUT_BUFFER
        self.mv = memoryview(self.alloc())
        self.pos = 0

    def payload(self, fd: int, size: int, path: str, off: int = 0) -> int:
        """Read bytes ``off`` to ``size`` of ``fd`` into the output, up to the end of the current
        buffer (or of the next one, when the current one is full).  Returns the new offset."""
        preadv = os.preadv
        if self.pos == OUT_BUFFER:
            self._rotate()
        while off < size:
            pos = self.pos
            if pos == OUT_BUFFER:
                break
            end = pos + size - off
            if end > OUT_BUFFER:
                end = OUT_BUFFER
            n = preadv(fd, [self.mv[pos:end]], off)
            if not n:
                raise PycatarError(f"{path}: file shrank while it was being archived")
            self.pos = pos + n
            off += n
        return off


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


class _FastEncoder:
    def __init__(self, encoder: "CatarEncoder", alloc=None):
        self.enc = encoder
        self.w = encoder.walker
        self.out = _Out(alloc or _new_buffer)
        self.heads: dict[tuple[int, int, int], tuple[int, int, int, bytes]] = {}
        self.chattr_flags: dict[int, int] = {}

    def _head(self, path: str, mode: int, uid: int, gid: int) -> tuple[int, int, int, bytes]:
        """(stored mode, uid, gid, USER and GROUP records) as base_entry makes them."""
        e = self.w.base_entry(path, mode, uid, gid, 0)
        problem = validate.owner_problem(e.uid, e.gid, e.user, e.group, e.feature_flags)
        if problem:
            raise validate.refusal(path, problem)
        ug = b""
        if e.user is not None:
            ug += _string_record(_T_USER, e.user)
        if e.group is not None:
            ug += _string_record(_T_GROUP, e.group)
        v = (e.mode, e.uid, e.gid, ug)
        if len(self.heads) >= 4096:
            self.heads.clear()
        self.heads[(mode, uid, gid)] = v
        return v

    def _list(self, dfd: int) -> list[tuple[bytes, str, int]]:
        """(name as bytes, name, 1 regular file / 2 directory / 0 other or unknown), in strcmp order."""
        ents = []
        append = ents.append
        with os.scandir(dfd) as it:
            for de in it:
                name = de.name
                kind = 1 if de.is_file(follow_symlinks=False) else 2 if de.is_dir(follow_symlinks=False) else 0
                append((name.encode(_FS_ENCODING, _FS_ERRORS), name, kind))
        ents.sort()
        return ents

    def _children(self, node: _Node) -> Iterator[tuple[bytes, str, int]]:
        if node.magic in _VIRTUAL_FS:
            return iter(())
        ents = self._list(node.fd)
        if self.w.flags & F.EXCLUDE_FILE:
            for bname, _name, _kind in ents:
                if bname == b".caexclude":
                    node.rules.extend(exclude.load(node.fd))
                    break
        return iter(ents)

    def run(self) -> Iterator[memoryview]:
        w, out, enc = self.w, self.out, self.enc
        flags = w.flags
        heads = self.heads
        chattr_flags = self.chattr_flags
        gran, clamp = w.granularity, w.clamp
        want_chattr = bool(flags & _CHATTR_OR_NODUMP)
        with_chattr = bool(flags & WITH_CHATTR)
        nodump = bool(flags & F.EXCLUDE_NODUMP)
        submounts = bool(flags & F.EXCLUDE_SUBMOUNTS)
        want_fat = bool(flags & WITH_FAT_ATTRS)
        want_subvol = bool(flags & F.WITH_SUBVOLUME)
        want_xattrs = bool(flags & (F.WITH_XATTRS | F.WITH_FCAPS))
        want_selinux = bool(flags & F.WITH_SELINUX)
        want_acl = bool(flags & F.WITH_ACL)
        want_projid = bool(flags & F.WITH_QUOTA_PROJID)
        selinux_listed = not _selinux_enabled()
        entry_pack = fmt.ENTRY.pack
        hdr_pack = _pack_header
        get_xattr = fsmeta.get_xattr
        os_open, os_close, os_fstat, listxattr = os.open, os.close, os.fstat, os.listxattr
        ioctl = fcntl.ioctl
        cbuf = bytearray(8)
        pbuf = bytearray(fsmeta._FSXATTR.size)
        u32_from = fsmeta._U32.unpack_from
        fsxattr_from = fsmeta._FSXATTR.unpack_from
        unsupported = fsmeta._UNSUPPORTED
        siphash, hash_key = siphash24, fmt.GOODBYE_HASH_KEY
        acl_access, acl_default = fsmeta.ACL_XATTR_ACCESS, fsmeta.ACL_XATTR_DEFAULT
        ready = out.ready

        root_fd = w._open_root()
        # one frame a directory: [node, children iterator, goodbye items, ENTRY offset, path prefix]
        frames: list[list] = []
        root = None
        try:
            root = w._root_node(root_fd)
            out.put(checked_records(root.entry))
            frames.append([root, self._children(root), [], 0, ""])
            while frames:
                frame = frames[-1]
                node, children, items, _, prefix = frame
                dfd = node.fd
                pmagic = node.magic
                pdev = node.st.st_dev
                descended = False
                for bname, name, kind in children:
                    if ready:
                        enc.offset = out.base
                        yield from ready
                        ready.clear()
                    fd = None
                    s = None
                    try:
                        if kind:
                            try:
                                fd = os_open(bname, _O_FILE if kind == 1 else _O_DIR, dir_fd=dfd)
                            except FileNotFoundError:
                                continue  # vanished meanwhile
                            except OSError as e:
                                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                                    raise PycatarError(f"Failed to open {prefix}{name}: {e.strerror}") from None
                            else:
                                s = os_fstat(fd)
                                t = s.st_mode & _S_IFMT
                                if t != _S_IFREG and t != _S_IFDIR:  # replaced meanwhile
                                    os_close(fd)
                                    fd = s = None
                        if s is None:
                            try:
                                s = os.stat(bname, dir_fd=dfd, follow_symlinks=False)
                            except FileNotFoundError:
                                continue
                            t = s.st_mode & _S_IFMT
                            if t == _S_IFREG or t == _S_IFDIR:
                                try:
                                    fd = os_open(bname, _O_DIR if t == _S_IFDIR else _O_FILE, dir_fd=dfd)
                                except FileNotFoundError:
                                    continue
                                except OSError as e:
                                    raise PycatarError(f"Failed to open {prefix}{name}: {e.strerror}") from None
                                s = os_fstat(fd)
                                t = s.st_mode & _S_IFMT
                                if t != _S_IFREG and t != _S_IFDIR:  # replaced again
                                    raise PycatarError(f"{prefix}{name}: replaced while it was being archived")
                        chattr = None
                        if fd is not None and want_chattr:  # fsmeta.read_chattr, with a reused buffer
                            try:
                                ioctl(fd, fsmeta.FS_IOC_GETFLAGS, cbuf)
                                chattr = u32_from(cbuf)[0]
                            except OSError as e:
                                if e.errno not in unsupported:
                                    raise
                                chattr = 0
                        if fd is None or submounts or node.rules:
                            keep, sub = w._shall_store(node, name, bname, s, fd, chattr)
                            if not keep:
                                continue
                        else:
                            if nodump and chattr & 0x40:  # FS_NODUMP_FL
                                continue
                            sub = ()
                        path = prefix + name
                        if len(frames) > validate.MAX_DEPTH:  # the child's depth is len(frames)
                            raise validate.refusal(path, validate.depth_problem(path))
                        start = out.base + out.pos
                        rec = hdr_pack(17 + len(bname), _T_FILENAME) + bname + b"\0"
                        entry_offset = start + len(rec)
                        if fd is None:
                            target = os.readlink(name, dir_fd=dfd) if t == st.S_IFLNK else None
                            out.put(rec + checked_records(w.make_entry(path, s, None, dfd, name, pmagic, target, chattr)))
                            items.append([siphash(bname, key=hash_key).intdigest() & _U64_MASK, start,
                                          out.base + out.pos])
                            continue
                        is_dir = t == _S_IFDIR
                        magic = pmagic if s.st_dev == pdev else fsmeta.fs_type(fd)
                        # does this node need more than ENTRY, USER, GROUP (and PAYLOAD)?
                        slow = (magic in _VIRTUAL_FS
                                or (want_fat and magic in (MSDOS_SUPER_MAGIC, FUSE_SUPER_MAGIC))
                                or (is_dir and want_subvol and magic == BTRFS_SUPER_MAGIC and s.st_ino == 256))
                        names = None
                        if not slow and want_xattrs:
                            try:
                                names = listxattr(fd)
                            except OSError as e:
                                if e.errno not in (95, 9):  # EOPNOTSUPP, EBADF
                                    raise
                            else:
                                for xname in names:
                                    if xname.startswith(_XATTR_STORED_PREFIXES) or (
                                            not is_dir and xname == "security.capability"):
                                        slow = True
                                        break
                                if magic not in _LISTXATTR_COMPLETE:
                                    names = None
                        if not slow and want_selinux:
                            if names is not None and selinux_listed:
                                slow = "security.selinux" in names
                            else:
                                slow = bool(get_xattr(fd, "security.selinux"))
                        if not slow and want_acl:
                            if names is not None:
                                slow = acl_access in names or (is_dir and acl_default in names)
                            else:
                                slow = get_xattr(fd, acl_access) is not None or (
                                    is_dir and get_xattr(fd, acl_default) is not None)
                        if not slow and want_projid and magic in _EXT4_XFS_FUSE:
                            try:  # fsmeta.read_quota_projid, with a reused buffer
                                ioctl(fd, fsmeta.FS_IOC_FSGETXATTR, pbuf)
                                slow = fsxattr_from(pbuf)[3] != 0
                            except OSError as e:
                                if e.errno not in unsupported:
                                    raise
                        if slow:
                            entry = w.make_entry(path, s, fd, dfd, name, magic, None, chattr)
                            size = entry.size
                            rec += checked_records(entry)
                        else:
                            mode = s.st_mode
                            head = heads.get((mode, s.st_uid, s.st_gid))
                            if head is None:
                                head = self._head(path, mode, s.st_uid, s.st_gid)
                            mtime = s.st_mtime_ns
                            if clamp is not None and mtime > clamp:
                                mtime = clamp
                            if gran is None:
                                mtime = 0
                            elif mtime < 0 or mtime >> 63:  # before 1970 or after 2262
                                mtime = validate.file_mtime(path, mtime, gran)
                            elif gran != 1:
                                mtime -= mtime % gran
                            eflags = 0
                            if with_chattr and chattr:
                                eflags = chattr_flags.get(chattr)
                                if eflags is None:
                                    eflags = chattr_flags[chattr] = from_chattr(chattr) & flags
                            rec += entry_pack(64, _T_ENTRY, flags, head[0], eflags, head[1], head[2], mtime) + head[3]
                            if is_dir:
                                size = 0
                            else:
                                size = s.st_size
                                rec += hdr_pack(16 + size, _T_PAYLOAD)
                        if magic != pmagic:  # the parent's file system is covered already
                            w._cover(path, magic)
                        out.put(rec)
                        h = siphash(bname, key=hash_key).intdigest() & _U64_MASK  # goodbye.name_hash
                        if is_dir:
                            items.append([h, start, None])
                            child = _Node(None, fd, s, magic, sub)
                            new_frame = [child, None, [], entry_offset, path + "/"]
                            frames.append(new_frame)
                            fd = None  # the frame owns it now
                            new_frame[1] = self._children(child)
                            descended = True
                            break
                        if size:
                            off = 0
                            while True:
                                off = out.payload(fd, size, path, off)
                                if off == size:
                                    break
                                enc.offset = out.base
                                yield from ready
                                ready.clear()
                        items.append([h, start, out.base + out.pos])
                    finally:
                        if fd is not None:
                            os_close(fd)
                if descended:
                    continue
                # the directory is complete: its GOODBYE record
                frames.pop()
                if node is not root:
                    os_close(dfd)
                off = out.base + out.pos
                out.put(goodbye_record(items, off, frame[3]))
                if frames:
                    frames[-1][2][-1][2] = out.base + out.pos
                if ready:
                    enc.offset = out.base
                    yield from ready
                    ready.clear()
            enc.offset = out.base + out.pos
            if out.pos:
                yield out.mv[:out.pos]
        finally:
            for frame in frames:
                if frame[0] is not root and frame[0].fd is not None:
                    os.close(frame[0].fd)
            os.close(root_fd)
