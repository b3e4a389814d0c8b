"""A member of a catar archive as :mod:`tarfile` users know it: :class:`CatarInfo`, the counterpart of
:class:`tarfile.TarInfo`, made from (and turned back into) the decoder's :class:`~pycatar.entry.Entry`.

The names and meanings are tarfile's: ``name`` is the full path inside the archive without a leading
slash (the archive's top directory is ``"."``), ``mode`` holds the permission bits only and ``type``
the kind of file (tarfile's ``REGTYPE``, ``DIRTYPE``...), ``mtime`` is in seconds, ``linkname`` is a
symlink's target, ``uname``/``gname`` are ``""`` when the archive stores no names.  What catar adds
(nanosecond times, extended attributes, ACLs, file capabilities, SELinux labels, chattr flags) are
further attributes.

catar has no hard links: :meth:`CatarInfo.islnk` is always False (:meth:`CatarInfo.issym` is a
symbolic link), and there is no ``LNKTYPE`` member.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
import tarfile
from dataclasses import dataclass, field

from .entry import ACLDefault, ACLEntry, Entry
from .validate import U64_MAX, mtime_ns as _signed_ns

__all__ = ["CatarInfo", "CatarACL", "REGTYPE", "DIRTYPE", "SYMTYPE", "CHRTYPE", "BLKTYPE", "FIFOTYPE",
           "SOCKTYPE", "ROOT_NAME"]

REGTYPE = tarfile.REGTYPE
DIRTYPE = tarfile.DIRTYPE
SYMTYPE = tarfile.SYMTYPE
CHRTYPE = tarfile.CHRTYPE
BLKTYPE = tarfile.BLKTYPE
FIFOTYPE = tarfile.FIFOTYPE
#: a Unix socket: catar stores them, tar has no type for them
SOCKTYPE = b"s"

#: the name of the archive's top directory
ROOT_NAME = "."

_TYPE_OF_FMT = {stat.S_IFREG: REGTYPE, stat.S_IFDIR: DIRTYPE, stat.S_IFLNK: SYMTYPE, stat.S_IFCHR: CHRTYPE,
                stat.S_IFBLK: BLKTYPE, stat.S_IFIFO: FIFOTYPE, stat.S_IFSOCK: SOCKTYPE}
_FMT_OF_TYPE = {t: f for f, t in _TYPE_OF_FMT.items()}


def member_name(path: str) -> str:
    """The tarfile-style name of an archive path ("" is the top directory, ``"."``)."""
    return path or ROOT_NAME


def archive_path(name: str) -> str:
    """The archive path (``"a/b"``, ``""`` for the top directory) a member name stands for: leading
    ``./`` and ``/``, ``.`` components, repeated and trailing slashes are ignored, as tarfile's
    ``getmember`` ignores a trailing slash."""
    parts = [p for p in os.fsdecode(name).split("/") if p and p != "."]
    return "/".join(parts)


@dataclass
class CatarACL:
    """The POSIX ACL a member carries beyond its permission bits (archives made with ``acl``)."""

    user: list[ACLEntry] = field(default_factory=list)
    group: list[ACLEntry] = field(default_factory=list)
    group_obj: int | None = None  #: the group-owner permissions when a mask entry hides them
    default: ACLDefault | None = None  #: a directory's default ACL (its object entries)
    default_user: list[ACLEntry] = field(default_factory=list)
    default_group: list[ACLEntry] = field(default_factory=list)


@dataclass(eq=False)
class CatarInfo:
    """One member of a catar archive, with :class:`tarfile.TarInfo`'s attributes and methods.

    ``mode``, ``uid``, ``gid``, ``uname``, ``gname`` and ``mtime`` may be set to None by an extraction
    filter, meaning "do not restore" (as in tarfile)."""

    name: str = ""
    size: int = 0
    mode: int | None = 0o644  #: permission bits (``0o7777`` at most); the type is in :attr:`type`
    type: bytes = REGTYPE
    linkname: str = ""  #: a symlink's target
    uid: int | None = 0
    gid: int | None = 0
    uname: str | None = ""
    gname: str | None = ""
    mtime_ns: int | None = 0  #: the modification time in nanoseconds since the epoch
    devmajor: int = 0
    devminor: int = 0
    # -- what catar stores beyond tar's fields
    xattrs: dict[str, bytes] = field(default_factory=dict)  #: extended attributes (user.*, trusted.*...)
    acl: CatarACL | None = None
    fcaps: bytes | None = None  #: file capabilities (the ``security.capability`` value)
    selinux: str | None = None  #: SELinux label
    quota_projid: int | None = None
    #: chattr/FAT/subvolume flags, as feature flag bits (:mod:`pycatar.flags`)
    flags: int = 0
    #: the archive's feature flags
    feature_flags: int = 0
    #: where the member's ENTRY record starts in the archive stream
    offset: int | None = None
    _entry: Entry | None = field(default=None, repr=False)

    # -- tarfile's aliases and derived values

    @property
    def mtime(self) -> int | float | None:
        """The modification time in seconds: an int when it is a whole second, a float otherwise (as
        tarfile gives for ustar and pax members); :attr:`mtime_ns` is exact."""
        ns = self.mtime_ns
        if ns is None:
            return None
        return ns // 1_000_000_000 if ns % 1_000_000_000 == 0 else ns / 1e9

    @mtime.setter
    def mtime(self, value: int | float | None) -> None:
        self.mtime_ns = None if value is None else (
            value * 1_000_000_000 if isinstance(value, int) else round(value * 1e9))

    @property
    def path(self) -> str:
        """Alias for :attr:`name` (as tarfile)."""
        return self.name

    @path.setter
    def path(self, value: str) -> None:
        self.name = value

    @property
    def linkpath(self) -> str:
        """Alias for :attr:`linkname` (as tarfile)."""
        return self.linkname

    @linkpath.setter
    def linkpath(self, value: str) -> None:
        self.linkname = value

    def replace(self, *, deep: bool = True, **kwargs) -> "CatarInfo":
        """A copy with the given attributes changed (tarfile's ``TarInfo.replace``; ``deep=False``
        shares the xattrs and ACL with this member)."""
        mtime = kwargs.pop("mtime", dataclasses.MISSING)
        new = dataclasses.replace(self, **kwargs)
        if deep:
            new.xattrs = dict(new.xattrs)
            new.acl = copy.deepcopy(new.acl)
        if mtime is not dataclasses.MISSING:
            new.mtime = mtime
        return new

    # -- kinds, as tarfile names them

    def isfile(self) -> bool:
        return self.type == REGTYPE

    def isreg(self) -> bool:
        return self.type == REGTYPE

    def isdir(self) -> bool:
        return self.type == DIRTYPE

    def issym(self) -> bool:
        return self.type == SYMTYPE

    def islnk(self) -> bool:
        """A hard link: catar has none, so always False (see :meth:`issym` for symbolic links)."""
        return False

    def ischr(self) -> bool:
        return self.type == CHRTYPE

    def isblk(self) -> bool:
        return self.type == BLKTYPE

    def isfifo(self) -> bool:
        return self.type == FIFOTYPE

    def issock(self) -> bool:
        return self.type == SOCKTYPE

    def isdev(self) -> bool:
        """A character or block device or a FIFO (as tarfile counts them); sockets too."""
        return self.type in (CHRTYPE, BLKTYPE, FIFOTYPE, SOCKTYPE)

    # -- the decoder's entries

    @classmethod
    def from_entry(cls, entry: Entry) -> "CatarInfo":
        """The member an entry (as :class:`~pycatar.decoder.CatarReader` yields it) describes."""
        acl = None
        if (entry.acl_user or entry.acl_group or entry.acl_group_obj is not None or entry.acl_default is not None
                or entry.acl_default_user or entry.acl_default_group):
            acl = CatarACL(list(entry.acl_user), list(entry.acl_group), entry.acl_group_obj, entry.acl_default,
                           list(entry.acl_default_user), list(entry.acl_default_group))
        fmt = stat.S_IFMT(entry.mode)
        return cls(
            name=member_name(entry.path), size=entry.size if fmt == stat.S_IFREG else 0,
            mode=stat.S_IMODE(entry.mode), type=_TYPE_OF_FMT.get(fmt, REGTYPE), linkname=entry.target or "",
            uid=entry.uid, gid=entry.gid, uname=entry.user or "", gname=entry.group or "",
            mtime_ns=_signed_ns(entry.mtime), devmajor=entry.rdev_major, devminor=entry.rdev_minor,
            xattrs={os.fsdecode(k): v for k, v in entry.xattrs}, acl=acl, fcaps=entry.fcaps,
            selinux=entry.selinux, quota_projid=entry.quota_projid, flags=entry.flags,
            feature_flags=entry.feature_flags, offset=entry.offset, _entry=entry)

    @property
    def entry(self) -> Entry:
        """The decoder's entry this member was read from (unchanged by :meth:`replace`)."""
        if self._entry is None:
            raise ValueError(f"member {self.name!r} was not read from an archive")
        return self._entry

    def to_entry(self) -> Entry:
        """The entry with this member's (possibly changed) metadata, for extraction; a None attribute
        keeps the entry's value (the extraction decides what None means).  Names and types cannot
        change.  The entry itself when nothing changed."""
        e = self.entry
        if archive_path(self.name) != e.path or self.type != _TYPE_OF_FMT.get(stat.S_IFMT(e.mode)):
            raise ValueError(f"member {e.path or ROOT_NAME!r}: a filter may change metadata, not the name or type")
        acl = self.acl or CatarACL()
        xattrs = sorted((os.fsencode(k), v) for k, v in self.xattrs.items()) if self.xattrs else []
        values = {
            "mode": stat.S_IFMT(e.mode) | (stat.S_IMODE(e.mode) if self.mode is None else self.mode & 0o7777),
            "uid": e.uid if self.uid is None else self.uid, "gid": e.gid if self.gid is None else self.gid,
            "user": e.user if self.uname is None else (self.uname or None),
            "group": e.group if self.gname is None else (self.gname or None),
            "mtime": e.mtime if self.mtime_ns is None else self.mtime_ns & U64_MAX,
            "xattrs": xattrs, "acl_user": acl.user, "acl_group": acl.group, "acl_group_obj": acl.group_obj,
            "acl_default": acl.default, "acl_default_user": acl.default_user, "acl_default_group": acl.default_group,
            "fcaps": self.fcaps, "selinux": self.selinux, "quota_projid": self.quota_projid, "flags": self.flags}
        if all(getattr(e, k) == v for k, v in values.items()):
            return e
        new = copy.copy(e)
        for k, v in values.items():
            setattr(new, k, v)
        return new
