"""What the records of a catar entry may hold (spec/catar.md CATAR-13, CATAR-18..CATAR-31, CATAR-37),
stated once.

The decoder rejects an archive that breaks one of these rules; the encoder (a tree on disk, a tar)
calls :func:`check_entry` before it writes an entry, so it never writes what the decoder rejects
(CATAR-60).  The predicates take the values as stored (an mtime as the u64 of the ENTRY record).
"""

from __future__ import annotations

import os

from . import _catar
from . import format as fmt
from .entry import Entry
from .errors import UnsupportedError
from .flags import Flag as _I

U64_MAX = 0xFFFFFFFFFFFFFFFF



# --------------------------------------------------------------------------- per-entry limits (CATAR-31)

#: the names of one entry's xattrs, each with its NUL, at most (Linux: XATTR_LIST_MAX, all listxattr returns)
XATTR_NAMES_MAX = 65536
#: the XATTR record bodies (name, NUL, value) of one entry, at most
XATTR_BYTES_MAX = 16 << 20
#: named entries of one ACL (ACL_USER + ACL_GROUP; ACL_DEFAULT_USER + ACL_DEFAULT_GROUP) at most: a
#: Linux ACL xattr holds at most (65536 - 4) / 8 entries, four of them the object entries
ACL_NAMED_MAX = (65536 - 4) // 8 - 4


#: casync keeps 64 decoder nodes (the root plus 63 levels below it): entries nest at most this deep
#: (CATAR-37); casync's encoder refuses deeper trees too
MAX_DEPTH = 63


def depth_problem(path: str) -> str | None:
    """What a reader rejects about the depth of the entry at ``path`` ("" for the root), or None."""
    if path and path.count("/") >= MAX_DEPTH:
        return f"it nests deeper than {MAX_DEPTH} directories (CATAR-37)"
    return None


# --------------------------------------------------------------------------- mtime representation

def mtime_ns(stored: int) -> int:
    """The time in nanoseconds since the epoch an ENTRY mtime stands for: the u64 read as signed, so
    values of 2⁶³ and above are times before 1970 (CATAR-19)."""
    return stored - (1 << 64) if stored >> 63 else stored


def round_mtime(ns: int, granularity: int | None) -> int:
    """The stored mtime of a file time ``ns`` (nanoseconds since the epoch, negative before 1970) under
    a time granularity (None: no times stored): its 64-bit two's complement, as casync writes
    ``(uint64_t) tv_sec * 10⁹ + tv_nsec``, rounded down as a u64 -- which for a time before 1970 is not
    the signed floor; casync does so, and so do we (CATAR-19)."""
    if granularity is None:
        return 0
    u = ns & U64_MAX
    return u - u % granularity


def file_mtime(path: str, ns: int, granularity: int | None) -> int:
    """:func:`round_mtime` of a file's time, refused (naming the file) when a reader could not read it
    back: outside the signed 64-bit range of nanoseconds (before 1677 or after 2262), where casync
    silently wraps, or -1 ns, which becomes the reserved 0xffffffffffffffff (CATAR-19, CATAR-60)."""
    if granularity is None:
        return 0
    if not -(1 << 63) <= ns < 1 << 63:
        raise refusal(path, f"modification time {ns} ns since 1970 is outside the signed 64-bit range "
                            "of nanoseconds (CATAR-19)")
    t = round_mtime(ns, granularity)
    if t == U64_MAX:
        raise refusal(path, mtime_problem(t, 0))
    return t


# --------------------------------------------------------------------------- predicates

# The rules are the C parser's own (pycatar._catar), given the bits and bounds they need here, so that
# the encoder checks an entry with exactly what the decoder applies (one copy of each rule):
#   id_ok(v, feature_flags)            CATAR-18: a uid/gid (also of an ACL entry) the flags can store
#   mtime_ok(t, feature_flags, strict) CATAR-19: a stored mtime (u64) valid under the flags' time
#                                      granularity; ``strict``: casync 2's stricter usec rule (CATAR-24)
#   device_ok(major, minor)            CATAR-29: a 12-bit major and a 20-bit minor number
#   cstr_ok(body, maximum)             CATAR-25, CATAR-28: NUL-terminated, at least one character, no NUL
#                                      inside, at most ``maximum`` bytes with the NUL
#   user_name_ok(body, strict)         CATAR-21 for a NUL-terminated name (casync's
#                                      validate_user_group_name; ``strict``: no digit first, CATAR-24)
#   xattr_name_ok(name)                CATAR-22: a dot that is neither first nor last, at most 255 bytes
_catar.configure_rules({"u64_max": U64_MAX, **{name: int(getattr(_I, name)) for name in (
    "WITH_16BIT_UIDS", "WITH_32BIT_UIDS", "WITH_SEC_TIME", "WITH_USEC_TIME", "WITH_NSEC_TIME", "WITH_2SEC_TIME")}})
id_ok = _catar.id_ok
mtime_ok = _catar.mtime_ok
device_ok = _catar.device_ok
cstr_ok = _catar.cstr_ok
user_name_ok = _catar.user_name_ok
xattr_name_ok = _catar.xattr_name_ok


# --------------------------------------------------------------------------- one entry

def owner_problem(uid: int, gid: int, user: str | None, group: str | None, feature_flags: int) -> str | None:
    """What in an entry's owner (ENTRY uid/gid, USER/GROUP names) a reader would reject, or None."""
    if not id_ok(uid, feature_flags):
        return f"uid {uid} cannot be stored (CATAR-18)"
    if not id_ok(gid, feature_flags):
        return f"gid {gid} cannot be stored (CATAR-18)"
    for what, name in (("user", user), ("group", group)):
        if name is not None and not user_name_ok(os.fsencode(name) + b"\0"):
            return f"{what} name {name!r} cannot be stored (CATAR-21)"
    return None


def mtime_problem(t: int, feature_flags: int) -> str | None:
    """What a reader would reject in a stored mtime, or None."""
    if mtime_ok(t, feature_flags):
        return None
    return f"modification time {mtime_ns(t)} ns since 1970 cannot be stored (CATAR-19)"


def entry_problem(entry: Entry) -> str | None:
    """The first rule of CATAR-18..CATAR-29 the entry breaks (what a reader would reject), or None."""
    af = entry.feature_flags
    problem = depth_problem(entry.path) or owner_problem(entry.uid, entry.gid, entry.user, entry.group, af)
    if problem:
        return problem
    problem = mtime_problem(entry.mtime, af)
    if problem:
        return problem
    if entry.issym():
        if entry.xattrs or entry.acl_user or entry.acl_group or entry.acl_group_obj is not None:
            return "xattrs or ACLs on a symlink cannot be stored (CATAR-13)"
        if entry.target is None or not cstr_ok(os.fsencode(entry.target) + b"\0", fmt.SYMLINK_SIZE_MAX - 16):
            return "symlink target cannot be stored (CATAR-28)"
    if entry.isdev() and not device_ok(entry.rdev_major, entry.rdev_minor):
        return f"device number {entry.rdev_major}:{entry.rdev_minor} cannot be stored (CATAR-29)"
    for name, value in entry.xattrs:
        if not xattr_name_ok(name) or fmt.HEADER_SIZE + len(name) + 1 + len(value) > fmt.XATTR_SIZE_MAX:
            return f"xattr {os.fsdecode(name)!r} cannot be stored (CATAR-22)"
    if entry.xattrs:
        names = sum(len(name) + 1 for name, _ in entry.xattrs)
        total = names + sum(len(value) for _, value in entry.xattrs)
        if names > XATTR_NAMES_MAX or total > XATTR_BYTES_MAX:
            return (f"its xattrs ({len(entry.xattrs)}, {names} bytes of names, {total} bytes in all) exceed "
                    f"the limits of {XATTR_NAMES_MAX} and {XATTR_BYTES_MAX} bytes (CATAR-31)")
    if (entry.acl_user or entry.acl_group) and entry.acl_group_obj is None:
        return "its ACL has named entries but no mask (CATAR-13)"
    if (entry.acl_default_user or entry.acl_default_group) and (
            entry.acl_default is None or entry.acl_default.mask == fmt.ACL_PERMISSION_UNSET):
        return "its default ACL has named entries but no mask (CATAR-13)"
    for what, n in (("ACL", len(entry.acl_user) + len(entry.acl_group)),
                    ("default ACL", len(entry.acl_default_user) + len(entry.acl_default_group))):
        if n > ACL_NAMED_MAX:
            return f"its {what} has {n} named entries, more than {ACL_NAMED_MAX} (CATAR-31)"
    for acl in (entry.acl_user, entry.acl_group, entry.acl_default_user, entry.acl_default_group):
        for a in acl:
            if not id_ok(a.id, af):
                return f"ACL entry for id {a.id} cannot be stored (CATAR-23)"
            if a.name is not None and not user_name_ok(os.fsencode(a.name) + b"\0"):
                return f"ACL entry name {a.name!r} cannot be stored (CATAR-21)"
    if entry.selinux is not None and not cstr_ok(os.fsencode(entry.selinux) + b"\0", fmt.SELINUX_SIZE_MAX - 16):
        return "SELinux label cannot be stored (CATAR-25)"
    if entry.fcaps is not None and fmt.HEADER_SIZE + len(entry.fcaps) > fmt.FCAPS_SIZE_MAX:
        return "file capabilities cannot be stored (CATAR-26)"
    if entry.quota_projid is not None and not 0 <= entry.quota_projid <= 0xFFFFFFFF:
        return f"project id {entry.quota_projid} cannot be stored (CATAR-27)"
    return None


def refusal(path: str, problem: str) -> UnsupportedError:
    """The error of an encoder that refuses an entry (names the file, like casync's refusal)."""
    return UnsupportedError(f"Refusing to archive {path or '.'!r}: {problem}")


def check_entry(entry: Entry) -> None:
    """Raise :func:`refusal` when a reader would reject the entry (CATAR-60)."""
    problem = entry_problem(entry)
    if problem:
        raise refusal(entry.path, problem)
