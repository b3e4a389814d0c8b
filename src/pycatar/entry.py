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
from dataclasses import dataclass, field


@dataclass(slots=True)
class ACLEntry:
    """One named ACL entry (ACL_USER, ACL_GROUP, ACL_DEFAULT_USER or ACL_DEFAULT_GROUP)."""

    id: int  # uid or gid (0 when the archive stores no numeric ids)
    permissions: int  # bitmask of format.ACL_PERMISSION_*
    name: str | None = None


@dataclass(slots=True)
class ACLDefault:
    """The ACL_DEFAULT record: the object permissions of a directory's default ACL.
    A field is ``format.ACL_PERMISSION_UNSET`` when that entry is absent."""

    user_obj: int
    group_obj: int
    other: int
    mask: int


@dataclass(slots=True)
class Entry:
    path: str  # relative to the archive root; "" for the root itself
    mode: int
    feature_flags: int = 0
    flags: int = 0  # chattr/FAT/subvolume bits, as feature flag values
    uid: int = 0
    gid: int = 0
    mtime: int = 0  # nanoseconds since the epoch
    user: str | None = None
    group: str | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # sorted by name
    acl_user: list[ACLEntry] = field(default_factory=list)
    acl_group: list[ACLEntry] = field(default_factory=list)
    acl_group_obj: int | None = None
    acl_default: ACLDefault | None = None
    acl_default_user: list[ACLEntry] = field(default_factory=list)
    acl_default_group: list[ACLEntry] = field(default_factory=list)
    selinux: str | None = None
    fcaps: bytes | None = None
    quota_projid: int | None = None
    size: int = 0  # payload size of a regular file
    target: str | None = None  # symlink target
    rdev_major: int = 0
    rdev_minor: int = 0
    #: archive offset of the ENTRY record (decoder) or None
    offset: int | None = None
    #: archive offset of the first payload byte of a regular file (decoder) or None
    payload_offset: int | None = None

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
