"""Reading file system metadata the way casync does: chattr and FAT attributes, quota project ids,
file system types, mount ids, POSIX ACLs (from their xattr form) and user/group names.

The ACLs are read and written through the ``system.posix_acl_access``/``system.posix_acl_default``
xattrs in the kernel's binary form, so no libacl (and no C headers) is needed.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import struct
from functools import lru_cache

from . import _fileio

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FAT_IOCTL_GET_ATTRIBUTES = 0x80047210
FAT_IOCTL_SET_ATTRIBUTES = 0x40047211
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E  # struct btrfs_ioctl_vol_args: s64 fd + 4088 bytes of name
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419
BTRFS_IOC_SUBVOL_SETFLAGS = 0x4008941A
BTRFS_SUBVOL_RDONLY = 2
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of a subvolume's top directory
FICLONERANGE = 0x4020940D  # share a range of one file's blocks with another (struct file_clone_range)

_UNSUPPORTED = {errno.ENOTTY, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}

_U32 = struct.Struct("=I")
_FSXATTR = struct.Struct("=IIIII8s")


def _ioctl_u32(fd: int, request: int) -> int:
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, request, buf)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return 0
        raise
    return _U32.unpack_from(buf)[0]


def read_chattr(fd: int) -> int:
    """FS_IOC_GETFLAGS; 0 where the file system or node type has no such flags."""
    return _ioctl_u32(fd, FS_IOC_GETFLAGS)


def read_fat_attrs(fd: int) -> int:
    return _ioctl_u32(fd, FAT_IOCTL_GET_ATTRIBUTES)


def read_quota_projid(fd: int) -> int:
    buf = bytearray(_FSXATTR.size)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return 0
        raise
    return _FSXATTR.unpack_from(buf)[3]


def _subvolume_flags(fd: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf)
    return struct.unpack("=Q", buf)[0]


def subvolume_read_only(fd: int) -> bool:
    """Whether the btrfs subvolume whose top directory is ``fd`` is read-only."""
    return bool(_subvolume_flags(fd) & BTRFS_SUBVOL_RDONLY)


def set_subvolume_read_only(fd: int, read_only: bool) -> None:
    """Make the btrfs subvolume whose top directory is ``fd`` read-only or writable."""
    old = _subvolume_flags(fd)
    new = old | BTRFS_SUBVOL_RDONLY if read_only else old & ~BTRFS_SUBVOL_RDONLY
    if new != old:
        fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, bytearray(struct.pack("=Q", new)))


def create_subvolume(dir_fd: int, name: str) -> None:
    """A new btrfs subvolume ``name`` in the directory ``dir_fd`` (EINVAL for a name too long)."""
    raw = os.fsencode(name)
    if len(raw) > 4087:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    args = bytearray(4096)
    args[8:8 + len(raw)] = raw
    fcntl.ioctl(dir_fd, BTRFS_IOC_SUBVOL_CREATE, args)


def clone_range(dst_fd: int, dst_offset: int, src_fd: int, src_offset: int, length: int) -> None:
    """Share ``length`` bytes of ``src_fd`` at ``src_offset`` into ``dst_fd`` at ``dst_offset``
    (FICLONERANGE: block-aligned offsets and length; OSError where the file system cannot)."""
    fcntl.ioctl(dst_fd, FICLONERANGE, struct.pack("=qQQQ", src_fd, src_offset, length, dst_offset))


def write_chattr(fd: int, value: int) -> None:
    buf = bytearray(8)
    _U32.pack_into(buf, 0, value)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf)
    except OSError as e:
        if value == 0 and e.errno in _UNSUPPORTED:
            return
        raise


def write_fat_attrs(fd: int, value: int) -> None:
    buf = bytearray(4)
    _U32.pack_into(buf, 0, value)
    try:
        fcntl.ioctl(fd, FAT_IOCTL_SET_ATTRIBUTES, buf)
    except OSError as e:
        if value == 0 and e.errno in _UNSUPPORTED:
            return
        raise


def write_quota_projid(fd: int, projid: int) -> None:
    buf = bytearray(_FSXATTR.size)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    except OSError as e:
        if projid == 0 and e.errno in _UNSUPPORTED:
            return
        raise
    fields = list(_FSXATTR.unpack_from(buf))
    if fields[3] == projid:
        return
    fields[3] = projid
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytearray(_FSXATTR.pack(*fields)))


# --------------------------------------------------------------------------- statfs


@lru_cache(maxsize=1)
def _libc():
    """The C library, for the calls Python's os module lacks (fnmatch, renameat2): the one the
    interpreter is linked with (no ``ldconfig -p`` run by ctypes.util.find_library)."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


#: statfs f_type (32 bits) of the file system ``fd`` lives on (raises OSError)
fs_type = _fileio.fs_type


def mount_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"mnt_id:"):
                return int(line[7:].strip())
    return -1


# --------------------------------------------------------------------------- ACLs

ACL_XATTR_ACCESS = "system.posix_acl_access"
ACL_XATTR_DEFAULT = "system.posix_acl_default"
ACL_EA_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_HEAD = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")


def parse_acl_xattr(value: bytes) -> list[tuple[int, int, int]]:
    """[(tag, perm, id)] from the kernel's posix_acl xattr value."""
    if len(value) < 4 or (len(value) - 4) % 8 or _ACL_HEAD.unpack_from(value)[0] != ACL_EA_VERSION:
        raise ValueError("malformed POSIX ACL xattr")
    return [_ACL_ENTRY.unpack_from(value, off) for off in range(4, len(value), 8)]


def build_acl_xattr(entries: list[tuple[int, int, int]]) -> bytes:
    """The kernel's posix_acl xattr value; entries are sorted by tag, then id, as the kernel wants."""
    entries = sorted(entries, key=lambda e: (e[0], e[2] if e[0] in (ACL_USER, ACL_GROUP) else 0))
    out = [_ACL_HEAD.pack(ACL_EA_VERSION)]
    for tag, perm, ident in entries:
        out.append(_ACL_ENTRY.pack(tag, perm, ident if tag in (ACL_USER, ACL_GROUP) else ACL_UNDEFINED_ID))
    return b"".join(out)


_ACL_UNSET = 0xFFFFFFFFFFFFFFFF


def acl_xattrs(entry, is_dir: bool, ident) -> list[tuple[str, bytes]]:
    """The POSIX ACL xattr values an archive entry's mode and ACL records stand for: the access ACL
    and, for a directory, the default ACL (header only when it has none: setting that removes one).
    ``ident(item, group)`` gives the numeric id of a named entry (an ``entry.ACLEntry``)."""
    mode = entry.mode
    access = [(ACL_USER_OBJ, (mode >> 6) & 7, 0), (ACL_OTHER, mode & 7, 0)]
    if entry.acl_group_obj is not None:
        access.append((ACL_MASK, (mode >> 3) & 7, 0))
        access.append((ACL_GROUP_OBJ, entry.acl_group_obj & 7, 0))
    else:
        access.append((ACL_GROUP_OBJ, (mode >> 3) & 7, 0))
    access += _named_acl(entry.acl_user, entry.acl_group, ident)
    values = [(ACL_XATTR_ACCESS, build_acl_xattr(access))]
    if is_dir:
        default: list[tuple[int, int, int]] = []
        d = entry.acl_default
        if d is not None and d.user_obj != _ACL_UNSET:
            default = [(ACL_USER_OBJ, d.user_obj & 7, 0), (ACL_GROUP_OBJ, d.group_obj & 7, 0), (ACL_OTHER, d.other & 7, 0)]
            if d.mask != _ACL_UNSET:
                default.append((ACL_MASK, d.mask & 7, 0))
            default += _named_acl(entry.acl_default_user, entry.acl_default_group, ident)
        values.append((ACL_XATTR_DEFAULT, build_acl_xattr(default)))
    return values


def _named_acl(users, groups, ident) -> list[tuple[int, int, int]]:
    return [(tag, item.permissions & 7, ident(item, group))
            for tag, items, group in ((ACL_USER, users, False), (ACL_GROUP, groups, True)) for item in items]


def get_xattr(target, name: str, follow_symlinks: bool = True) -> bytes | None:
    """One xattr, or None when it is absent or the file system has none."""
    try:
        return os.getxattr(target, name, follow_symlinks=follow_symlinks)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTSUP):
            return None
        raise


# --------------------------------------------------------------------------- names


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def user_id(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
