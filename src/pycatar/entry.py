"""The entry model shared by the encoder (a tree on disk), the decoder (a catar stream),
listing (list/mtree/stat), and extraction.

An :class:`Entry` holds exactly what one catar ENTRY and its follow-up records carry, after the
feature flags have been applied (the mode fixed up, the mtime rounded, owners zeroed when not
stored...).  Names and paths are ``str`` decoded with :func:`os.fsdecode` (surrogateescape), so
any byte string a Linux file name can be round-trips.
"""

from __future__ import annotations

import stat as _stat
from collections.abc import Callable, Iterable, Iterator

from .record import Record


class ACLEntry(Record):
    """One named ACL entry (ACL_USER, ACL_GROUP, ACL_DEFAULT_USER or ACL_DEFAULT_GROUP)."""

    __slots__ = ("id", "permissions", "name")

    def __init__(self, id: int, permissions: int, name: str | None = None) -> None:
        self.id = id  # uid or gid (0 when the archive stores no numeric ids)
        self.permissions = permissions  # bitmask of format.ACL_PERMISSION_*
        self.name = name


class ACLDefault(Record):
    """The ACL_DEFAULT record: the object permissions of a directory's default ACL.
    A field is ``format.ACL_PERMISSION_UNSET`` when that entry is absent."""

    __slots__ = ("user_obj", "group_obj", "other", "mask")

    def __init__(self, user_obj: int, group_obj: int, other: int, mask: int) -> None:
        self.user_obj = user_obj
        self.group_obj = group_obj
        self.other = other
        self.mask = mask


class Entry(Record):
    """One entry of an archive.  ``__slots__`` lists the fields in the order of ``__init__``'s
    parameters; the C decoder (pycatar._catar) fills the slots of that order directly."""

    __slots__ = ("path", "mode", "feature_flags", "flags", "uid", "gid", "mtime", "user", "group", "xattrs",
                 "acl_user", "acl_group", "acl_group_obj", "acl_default", "acl_default_user",
                 "acl_default_group", "selinux", "fcaps", "quota_projid", "size", "target", "rdev_major",
                 "rdev_minor", "offset", "payload_offset")

    def __init__(self, path: str, mode: int, feature_flags: int = 0, flags: int = 0, uid: int = 0,
                 gid: int = 0, mtime: int = 0, user: str | None = None, group: str | None = None,
                 xattrs: list[tuple[bytes, bytes]] | None = None, acl_user: list[ACLEntry] | None = None,
                 acl_group: list[ACLEntry] | None = None, acl_group_obj: int | None = None,
                 acl_default: ACLDefault | None = None, acl_default_user: list[ACLEntry] | None = None,
                 acl_default_group: list[ACLEntry] | None = None, selinux: str | None = None,
                 fcaps: bytes | None = None, quota_projid: int | None = None, size: int = 0,
                 target: str | None = None, rdev_major: int = 0, rdev_minor: int = 0,
                 offset: int | None = None, payload_offset: int | None = None) -> None:
        self.path = path  # relative to the archive root; "" for the root itself
        self.mode = mode
        self.feature_flags = feature_flags
        self.flags = flags  # chattr/FAT/subvolume bits, as feature flag values
        self.uid = uid
        self.gid = gid
        self.mtime = mtime  # nanoseconds since the epoch
        self.user = user
        self.group = group
        self.xattrs = [] if xattrs is None else xattrs  # sorted by name
        self.acl_user = [] if acl_user is None else acl_user
        self.acl_group = [] if acl_group is None else acl_group
        self.acl_group_obj = acl_group_obj
        self.acl_default = acl_default
        self.acl_default_user = [] if acl_default_user is None else acl_default_user
        self.acl_default_group = [] if acl_default_group is None else acl_default_group
        self.selinux = selinux
        self.fcaps = fcaps
        self.quota_projid = quota_projid
        self.size = size  # payload size of a regular file
        self.target = target  # symlink target
        self.rdev_major = rdev_major
        self.rdev_minor = rdev_minor
        self.offset = offset  # archive offset of the ENTRY record (decoder) or None
        self.payload_offset = payload_offset  # archive offset of a regular file's first payload byte, or None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def isdir(self) -> bool:
        return _stat.S_ISDIR(self.mode)

    def isreg(self) -> bool:
        return _stat.S_ISREG(self.mode)

    def issym(self) -> bool:
        return _stat.S_ISLNK(self.mode)

    def isdev(self) -> bool:
        return _stat.S_ISBLK(self.mode) or _stat.S_ISCHR(self.mode)

    def isfifo(self) -> bool:
        return _stat.S_ISFIFO(self.mode)

    def issock(self) -> bool:
        return _stat.S_ISSOCK(self.mode)


def select_subtree(entries: Iterable[Entry], path: str, missing: Callable[[], Exception]) -> Iterator[Entry]:
    """The entry at ``path`` and its descendants, picked out of a whole archive's entries read in
    order (for streams that cannot seek); raises ``missing()`` when there is no such entry."""
    prefix = path + "/"
    found = False
    for entry in entries:
        if entry.path == path or entry.path.startswith(prefix):
            found = True
            yield entry
        elif found:
            return
    if not found:
        raise missing()
