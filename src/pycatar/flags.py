"""Feature flags: what metadata an archive carries, their names, sets and normalisation.

The values, the ``--with=``/``--without=`` names and the rules are casync's (spec/flags.md).
Bit 59 (``DIGEST_BLAKE3``) is pycatar's extension: chunk ids are BLAKE3 digests.
"""

from __future__ import annotations

from .errors import UsageError


class Flag:
    """The bits, as plain ints (an enum.IntFlag took most of this module's import and is slow in the
    hot paths' arithmetic; spec/flags.md names them)."""

    WITH_16BIT_UIDS = 0x1
    WITH_32BIT_UIDS = 0x2
    WITH_USER_NAMES = 0x4
    WITH_SEC_TIME = 0x8
    WITH_USEC_TIME = 0x10
    WITH_NSEC_TIME = 0x20
    WITH_2SEC_TIME = 0x40
    WITH_READ_ONLY = 0x80
    WITH_PERMISSIONS = 0x100
    WITH_SYMLINKS = 0x200
    WITH_DEVICE_NODES = 0x400
    WITH_FIFOS = 0x800
    WITH_SOCKETS = 0x1000
    WITH_FLAG_HIDDEN = 0x2000
    WITH_FLAG_SYSTEM = 0x4000
    WITH_FLAG_ARCHIVE = 0x8000
    WITH_FLAG_APPEND = 0x10000
    WITH_FLAG_NOATIME = 0x20000
    WITH_FLAG_COMPR = 0x40000
    WITH_FLAG_NOCOW = 0x80000
    WITH_FLAG_NODUMP = 0x100000
    WITH_FLAG_DIRSYNC = 0x200000
    WITH_FLAG_IMMUTABLE = 0x400000
    WITH_FLAG_SYNC = 0x800000
    WITH_FLAG_NOCOMP = 0x1000000
    WITH_FLAG_PROJINHERIT = 0x2000000
    WITH_SUBVOLUME = 0x4000000
    WITH_SUBVOLUME_RO = 0x8000000
    WITH_XATTRS = 0x10000000
    WITH_ACL = 0x20000000
    WITH_SELINUX = 0x40000000
    WITH_FCAPS = 0x80000000
    WITH_QUOTA_PROJID = 0x100000000
    #: pycatar extension: chunk ids are BLAKE3-256 digests (spec/flags.md, FLAGS-9)
    DIGEST_BLAKE3 = 0x800000000000000
    EXCLUDE_FILE = 0x1000000000000000
    SHA512_256 = 0x2000000000000000
    EXCLUDE_SUBMOUNTS = 0x4000000000000000
    EXCLUDE_NODUMP = 0x8000000000000000


F = Flag

WITH_BEST = (
    F.WITH_32BIT_UIDS | F.WITH_USER_NAMES | F.WITH_NSEC_TIME | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
    | F.WITH_FIFOS | F.WITH_SOCKETS | F.WITH_FLAG_HIDDEN | F.WITH_FLAG_SYSTEM | F.WITH_FLAG_ARCHIVE
    | F.WITH_FLAG_APPEND | F.WITH_FLAG_NOATIME | F.WITH_FLAG_COMPR | F.WITH_FLAG_NOCOW
    | F.WITH_FLAG_NODUMP | F.WITH_FLAG_DIRSYNC | F.WITH_FLAG_IMMUTABLE | F.WITH_FLAG_SYNC
    | F.WITH_FLAG_NOCOMP | F.WITH_FLAG_PROJINHERIT | F.WITH_SUBVOLUME | F.WITH_SUBVOLUME_RO
    | F.WITH_XATTRS | F.WITH_ACL | F.WITH_SELINUX | F.WITH_FCAPS | F.WITH_QUOTA_PROJID
)
WITH_UNIX = (
    F.WITH_16BIT_UIDS | F.WITH_PERMISSIONS | F.WITH_SEC_TIME | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
    | F.WITH_FIFOS | F.WITH_SOCKETS
)
WITH_FAT_ATTRS = F.WITH_FLAG_HIDDEN | F.WITH_FLAG_SYSTEM | F.WITH_FLAG_ARCHIVE
WITH_FAT = F.WITH_2SEC_TIME | F.WITH_READ_ONLY | WITH_FAT_ATTRS
WITH_CHATTR = (
    F.WITH_FLAG_APPEND | F.WITH_FLAG_NOATIME | F.WITH_FLAG_COMPR | F.WITH_FLAG_NOCOW | F.WITH_FLAG_NODUMP
    | F.WITH_FLAG_DIRSYNC | F.WITH_FLAG_IMMUTABLE | F.WITH_FLAG_SYNC | F.WITH_FLAG_NOCOMP
    | F.WITH_FLAG_PROJINHERIT
)
WITH_PRIVILEGED = (
    F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS | F.WITH_USER_NAMES | F.WITH_DEVICE_NODES | F.WITH_FLAG_SYSTEM
    | F.WITH_FLAG_APPEND | F.WITH_FLAG_IMMUTABLE | F.WITH_SUBVOLUME | F.WITH_SUBVOLUME_RO | F.WITH_ACL
    | F.WITH_SELINUX | F.WITH_FCAPS | F.WITH_QUOTA_PROJID
)
WITH_FUSE = (
    F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS | F.WITH_SEC_TIME | F.WITH_USEC_TIME | F.WITH_NSEC_TIME
    | F.WITH_2SEC_TIME | F.WITH_READ_ONLY | F.WITH_PERMISSIONS | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
    | F.WITH_FIFOS | F.WITH_SOCKETS | WITH_FAT_ATTRS | WITH_CHATTR | F.WITH_XATTRS
)
WITH_MASK = 0x1FFFFFFFF  # every WITH_ bit
WITH_UIDS = F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS
WITH_TIMES = F.WITH_SEC_TIME | F.WITH_USEC_TIME | F.WITH_NSEC_TIME | F.WITH_2SEC_TIME
DEFAULT = (WITH_BEST & ~F.WITH_FLAG_NODUMP) | F.EXCLUDE_NODUMP | F.EXCLUDE_FILE | F.SHA512_256
#: every bit casync knows
CASYNC_FLAGS_MAX = WITH_MASK | F.EXCLUDE_NODUMP | F.EXCLUDE_SUBMOUNTS | F.EXCLUDE_FILE | F.SHA512_256
#: every bit pycatar knows (casync's plus the BLAKE3 extension)
FLAGS_MAX = CASYNC_FLAGS_MAX | F.DIGEST_BLAKE3

#: The ``--with=``/``--without=`` names, in casync's order (single flags first, then the sets).
WITH_NAMES: tuple[tuple[str, int], ...] = (
    ("16bit-uids", F.WITH_16BIT_UIDS),
    ("32bit-uids", F.WITH_32BIT_UIDS),
    ("user-names", F.WITH_USER_NAMES),
    ("sec-time", F.WITH_SEC_TIME),
    ("usec-time", F.WITH_USEC_TIME),
    ("nsec-time", F.WITH_NSEC_TIME),
    ("2sec-time", F.WITH_2SEC_TIME),
    ("read-only", F.WITH_READ_ONLY),
    ("permissions", F.WITH_PERMISSIONS),
    ("symlinks", F.WITH_SYMLINKS),
    ("device-nodes", F.WITH_DEVICE_NODES),
    ("fifos", F.WITH_FIFOS),
    ("sockets", F.WITH_SOCKETS),
    ("flag-hidden", F.WITH_FLAG_HIDDEN),
    ("flag-system", F.WITH_FLAG_SYSTEM),
    ("flag-archive", F.WITH_FLAG_ARCHIVE),
    ("flag-append", F.WITH_FLAG_APPEND),
    ("flag-noatime", F.WITH_FLAG_NOATIME),
    ("flag-compr", F.WITH_FLAG_COMPR),
    ("flag-nocow", F.WITH_FLAG_NOCOW),
    ("flag-nodump", F.WITH_FLAG_NODUMP),
    ("flag-dirsync", F.WITH_FLAG_DIRSYNC),
    ("flag-immutable", F.WITH_FLAG_IMMUTABLE),
    ("flag-sync", F.WITH_FLAG_SYNC),
    ("flag-nocomp", F.WITH_FLAG_NOCOMP),
    ("flag-projinherit", F.WITH_FLAG_PROJINHERIT),
    ("subvolume", F.WITH_SUBVOLUME),
    ("subvolume-ro", F.WITH_SUBVOLUME_RO),
    ("xattrs", F.WITH_XATTRS),
    ("acl", F.WITH_ACL),
    ("selinux", F.WITH_SELINUX),
    ("fcaps", F.WITH_FCAPS),
    ("quota-projid", F.WITH_QUOTA_PROJID),
    ("best", WITH_BEST),
    ("unix", WITH_UNIX),
    ("fat", WITH_FAT),
    ("chattr", WITH_CHATTR),
    ("fat-attrs", WITH_FAT_ATTRS),
    ("privileged", WITH_PRIVILEGED),
    ("fuse", WITH_FUSE),
    ("all", WITH_MASK),
)
_BY_NAME = dict(WITH_NAMES)


def parse_with_name(name: str, option: str = "--with=") -> int:
    """The bits a ``--with=``/``--without=`` name stands for."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UsageError(f"Failed to parse {option} feature flag: {name}") from None


def format_with_flags(flags: int) -> str:
    """The names of the WITH_ bits in ``flags``, sets first where they match completely (as casync)."""
    flags = int(flags) & WITH_MASK
    names = []
    for name, bits in WITH_NAMES:
        if flags == 0:
            break
        if flags & bits == bits:
            names.append(name)
            flags &= ~bits
    return " ".join(names)


def normalize(flags: int) -> int:
    """Drop redundant bits so that the flags carry the minimum set expressing the features."""
    f = int(flags)
    if f & ~FLAGS_MAX:
        raise UsageError(f"unknown feature flags 0x{f & ~FLAGS_MAX:x}")
    if f & F.SHA512_256 and f & F.DIGEST_BLAKE3:
        raise UsageError("feature flags select two chunk digests (sha512-256 and blake3)")
    if f & F.WITH_ACL and not f & (WITH_UIDS | F.WITH_USER_NAMES):
        f |= F.WITH_32BIT_UIDS | F.WITH_USER_NAMES
    if f & F.WITH_32BIT_UIDS:
        f &= ~F.WITH_16BIT_UIDS
    if f & F.WITH_NSEC_TIME:
        f &= ~(F.WITH_USEC_TIME | F.WITH_SEC_TIME | F.WITH_2SEC_TIME)
    if f & F.WITH_USEC_TIME:
        f &= ~(F.WITH_SEC_TIME | F.WITH_2SEC_TIME)
    if f & F.WITH_SEC_TIME:
        f &= ~F.WITH_2SEC_TIME
    if f & F.WITH_ACL:
        f &= ~(F.WITH_PERMISSIONS | F.WITH_READ_ONLY)
    if f & F.WITH_PERMISSIONS:
        f &= ~F.WITH_READ_ONLY
    if f & F.EXCLUDE_NODUMP:
        f &= ~F.WITH_FLAG_NODUMP
    if f & F.WITH_SUBVOLUME_RO:
        f |= F.WITH_SUBVOLUME
    return f


def is_normalized(flags: int) -> bool:
    f = int(flags)
    if f & ~FLAGS_MAX:
        return False
    return normalize(f) == f


def normalize_mask(mask: int) -> int:
    """Widen a decoder mask so that every bit redundant with a requested one is allowed too."""
    m = int(mask) & FLAGS_MAX
    if m & WITH_UIDS:
        m |= WITH_UIDS
    if m & WITH_TIMES:
        m |= WITH_TIMES
    if m & F.WITH_PERMISSIONS:
        m |= F.WITH_READ_ONLY
    if m & F.WITH_ACL:
        m |= F.WITH_PERMISSIONS | F.WITH_READ_ONLY
    if m & F.WITH_SUBVOLUME_RO:
        m |= F.WITH_SUBVOLUME
    return m


def time_granularity_ns(flags: int) -> int | None:
    """The mtime granularity in nanoseconds, or None when no time is stored."""
    f = int(flags)
    if f & F.WITH_NSEC_TIME:
        return 1
    if f & F.WITH_USEC_TIME:
        return 1000
    if f & F.WITH_SEC_TIME:
        return 1_000_000_000
    if f & F.WITH_2SEC_TIME:
        return 2_000_000_000
    return None


# --------------------------------------------------------------------------- chattr / FAT mapping

# Linux FS_*_FL values
FS_APPEND_FL = 0x00000020
FS_NOATIME_FL = 0x00000080
FS_COMPR_FL = 0x00000004
FS_NOCOW_FL = 0x00800000
FS_NODUMP_FL = 0x00000040
FS_DIRSYNC_FL = 0x00010000
FS_IMMUTABLE_FL = 0x00000010
FS_SYNC_FL = 0x00000008
FS_NOCOMP_FL = 0x00000400
FS_PROJINHERIT_FL = 0x20000000

CHATTR_MAP: tuple[tuple[int, int], ...] = (
    (F.WITH_FLAG_APPEND, FS_APPEND_FL),
    (F.WITH_FLAG_NOATIME, FS_NOATIME_FL),
    (F.WITH_FLAG_COMPR, FS_COMPR_FL),
    (F.WITH_FLAG_NOCOW, FS_NOCOW_FL),
    (F.WITH_FLAG_NODUMP, FS_NODUMP_FL),
    (F.WITH_FLAG_DIRSYNC, FS_DIRSYNC_FL),
    (F.WITH_FLAG_IMMUTABLE, FS_IMMUTABLE_FL),
    (F.WITH_FLAG_SYNC, FS_SYNC_FL),
    (F.WITH_FLAG_NOCOMP, FS_NOCOMP_FL),
    (F.WITH_FLAG_PROJINHERIT, FS_PROJINHERIT_FL),
)

# FAT ATTR_* values
ATTR_HIDDEN = 2
ATTR_SYS = 4
ATTR_ARCH = 32
FAT_MAP: tuple[tuple[int, int], ...] = (
    (F.WITH_FLAG_HIDDEN, ATTR_HIDDEN),
    (F.WITH_FLAG_SYSTEM, ATTR_SYS),
    (F.WITH_FLAG_ARCHIVE, ATTR_ARCH),
)


def from_chattr(chattr: int) -> int:
    if not chattr:
        return 0
    return sum(f for f, c in CHATTR_MAP if chattr & c)


def to_chattr(flags: int) -> int:
    if not flags & _CHATTR_BITS:
        return 0
    r = 0
    for f, c in CHATTR_MAP:
        if flags & f:
            r |= c
    return r


_CHATTR_BITS = sum(f for f, _ in CHATTR_MAP)


def from_fat_attrs(attrs: int) -> int:
    if not attrs:
        return 0
    return sum(f for f, a in FAT_MAP if attrs & a)


def to_fat_attrs(flags: int) -> int:
    r = 0
    for f, a in FAT_MAP:
        if flags & f:
            r |= a
    return r


# --------------------------------------------------------------------------- what file systems store

MSDOS_SUPER_MAGIC = 0x4D44
EXT2_SUPER_MAGIC = 0xEF53  # also ext3 and ext4
XFS_SUPER_MAGIC = 0x58465342
BTRFS_SUPER_MAGIC = 0x9123683E
TMPFS_MAGIC = 0x01021994
FUSE_SUPER_MAGIC = 0x65735546

_FS_BASE = (
    WITH_UIDS | F.WITH_USER_NAMES | WITH_TIMES | F.WITH_READ_ONLY | F.WITH_PERMISSIONS | F.WITH_SYMLINKS
    | F.WITH_DEVICE_NODES | F.WITH_FIFOS | F.WITH_SOCKETS
)
_FS_FEATURES = {
    MSDOS_SUPER_MAGIC: F.WITH_2SEC_TIME | F.WITH_READ_ONLY | WITH_FAT_ATTRS,
    EXT2_SUPER_MAGIC: _FS_BASE | F.WITH_FLAG_APPEND | F.WITH_FLAG_NOATIME | F.WITH_FLAG_NODUMP
    | F.WITH_FLAG_DIRSYNC | F.WITH_FLAG_IMMUTABLE | F.WITH_FLAG_SYNC | F.WITH_XATTRS | F.WITH_ACL
    | F.WITH_SELINUX | F.WITH_FCAPS | F.WITH_QUOTA_PROJID,
    XFS_SUPER_MAGIC: _FS_BASE | F.WITH_FLAG_APPEND | F.WITH_FLAG_NOATIME | F.WITH_FLAG_NODUMP
    | F.WITH_FLAG_IMMUTABLE | F.WITH_FLAG_SYNC | F.WITH_XATTRS | F.WITH_ACL | F.WITH_SELINUX
    | F.WITH_FCAPS | F.WITH_QUOTA_PROJID,
    BTRFS_SUPER_MAGIC: _FS_BASE | F.WITH_FLAG_APPEND | F.WITH_FLAG_NOATIME | F.WITH_FLAG_COMPR
    | F.WITH_FLAG_NOCOW | F.WITH_FLAG_NODUMP | F.WITH_FLAG_DIRSYNC | F.WITH_FLAG_IMMUTABLE
    | F.WITH_FLAG_SYNC | F.WITH_FLAG_NOCOMP | F.WITH_XATTRS | F.WITH_ACL | F.WITH_SELINUX
    | F.WITH_SUBVOLUME | F.WITH_SUBVOLUME_RO | F.WITH_FCAPS,
    TMPFS_MAGIC: _FS_BASE | F.WITH_ACL | F.WITH_SELINUX,
    FUSE_SUPER_MAGIC: WITH_FUSE,
}


def from_fs_magic(magic: int) -> int:
    """The features a file system (by its statfs f_type) can store, as casync judges it."""
    return int(_FS_FEATURES.get(magic, _FS_BASE))


# --------------------------------------------------------------------------- digests


def digest_name(flags: int) -> str:
    """The chunk-id digest an archive or index with these flags uses."""
    if flags & F.DIGEST_BLAKE3:
        return "blake3"
    if flags & F.SHA512_256:
        return "sha512-256"
    return "sha256"


def digest_flags(name: str) -> int:
    try:
        return {"sha256": 0, "sha512-256": F.SHA512_256, "blake3": F.DIGEST_BLAKE3}[name]
    except KeyError:
        raise UsageError(f"Failed to parse --digest= parameter: {name}") from None


#: What casync (built with SELinux, as Debian's is) stores when no --with= is given.
SUPPORTED_WITH_MASK = WITH_MASK


def from_options(
    with_: list[str] | tuple[str, ...] = (),
    without: list[str] | tuple[str, ...] = (),
    *,
    digest: str = "sha512-256",
    exclude_nodump: bool = True,
    exclude_submounts: bool = False,
    exclude_file: bool = True,
    default_with: int = SUPPORTED_WITH_MASK,
    normalized: bool = True,
) -> int:
    """The (normalised) feature flags casync's command line options select.

    ``--with=`` names replace the default set (they are OR-ed together); ``--without=`` names are
    then removed; the exclude and digest bits are added."""
    w = 0
    for name in with_:
        w |= parse_with_name(name, "--with=")
    wo = 0
    for name in without:
        wo |= parse_with_name(name, "--without=")
    f = (w if w else int(default_with)) & ~wo
    if exclude_nodump:
        f |= F.EXCLUDE_NODUMP
    if exclude_submounts:
        f |= F.EXCLUDE_SUBMOUNTS
    if exclude_file:
        f |= F.EXCLUDE_FILE
    f |= digest_flags(digest)
    return normalize(f) if normalized else f
