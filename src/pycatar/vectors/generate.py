"""The generator of vectors/ (``pycatar vectors generate --out vectors``; needs root).

Every vector is defined here; its expected outputs are what pycatar produces (through the same
adapter the runner uses), and the test suite checks that casync produces them too.  Running the
generator twice gives the same bytes: all inputs are fixed (times, owners, modes, PRNG seeds), JSON
is written in one canonical form, and nothing about the moment or the machine is recorded except
the user and group names a vector's bytes depend on (listed in its ``environment``).

Synthetic inputs (archives with records no file system here can produce, malformed archives,
indexes and chunk stores) are built by the small writer below from record-level descriptions.
"""

from __future__ import annotations

import grp
import os
import pwd
import struct
import tempfile
import zlib
from pathlib import Path

from .. import format as fmt
from ..encoder import entry_records
from ..entry import ACLDefault, ACLEntry, Entry
from ..flags import DEFAULT, F, from_options, normalize
from ..goodbye import goodbye_record, name_hash
from . import harness as V

T = fmt.RecordType
MT = 1_600_000_000_123_456_789  # ns; every tree gets distinct, fixed times from here
DEF = DEFAULT
UNSET = fmt.ACL_PERMISSION_UNSET

# --------------------------------------------------------------------------- tree descriptions


def _entries(spec: list[tuple], *, ms_times: bool = False) -> list[dict]:
    """Tree entries from (path, type, attrs) tuples, with modes defaulted and distinct mtimes."""
    out = []
    for i, (path, typ, attrs) in enumerate(spec):
        e = {"path": path, "type": typ}
        e["mode"] = attrs.pop("mode", "0755" if typ == "dir" else ("0777" if typ == "symlink" else "0644"))
        e.update(uid=0, gid=0)
        step = 1_000_777_333 if not ms_times else 1_000_777_000_000
        e["mtime"] = (MT if not ms_times else MT - MT % 1_000_000) + i * step
        e.update(attrs)
        if typ == "symlink":
            del e["mode"]
        out.append(e)
    return {"entries": sorted(out, key=lambda e: [os.fsencode(c) for c in e["path"].split("/")] if e["path"] else [])}


def _text(s: str) -> dict:
    return {"text": s}


ODD_NAMES = ["with space", "tab\there", "back\\slash", "\u00fcn\u00efc\u00f6d\u00e9 \u2603", "#hash", "new\nline",
             "-dash", ".hidden", "\u00ff\u00fe"]

FCAPS_NET_RAW = "0100000200200000000000000000000000000000"  # VFS_CAP_REVISION_2, cap_net_raw+ep


def tree_basic(ms_times: bool = False) -> dict:
    spec = [
        ("", "dir", {}),
        ("file.txt", "file", {"content": _text("hello world\n" * 20), "mode": "0640"}),
        ("empty", "file", {"mode": "0600", "uid": 12345, "gid": 54321}),
        ("exec.sh", "file", {"content": _text("#!/bin/sh\necho hi\n"), "mode": "4755"}),
        ("readonly.txt", "file", {"content": _text("read only\n"), "mode": "0444"}),
        ("random.bin", "file", {"content": {"prng": {"seed": 1, "size": 4000}}}),
        ("zeros.bin", "file", {"content": {"zeros": 5000}, "mode": "0664"}),
        ("dir", "dir", {"mode": "0750", "uid": 1, "gid": 1}),
        ("dir/a", "file", {"content": _text("a\n"), "uid": 1, "gid": 1}),
        ("dir/nested", "dir", {"mode": "2775"}),
        ("dir/nested/deeper", "dir", {"mode": "0700"}),
        ("dir/nested/deeper/leaf.txt", "file", {"content": _text("leaf\n")}),
        ("emptydir", "dir", {"mode": "0555"}),
        ("sticky", "dir", {"mode": "1777"}),
        ("link", "symlink", {"target": "file.txt"}),
        ("dangling", "symlink", {"target": "does/not/exist", "uid": 1, "gid": 1}),
        ("dir/uplink", "symlink", {"target": "../file.txt"}),
        ("odd", "dir", {}),
    ]
    spec += [(f"odd/{n}", "file", {"content": _text(f"odd {i}\n")}) for i, n in enumerate(ODD_NAMES)]
    return _entries(spec, ms_times=ms_times)


def tree_special() -> dict:
    return _entries([
        ("", "dir", {}),
        ("file", "file", {"content": _text("regular\n")}),
        ("fifo", "fifo", {"mode": "0640", "uid": 1, "gid": 1}),
        ("socket", "socket", {"mode": "0755"}),
        ("blockdev", "block", {"mode": "0660", "rdev": [8, 1], "gid": 6}),
        ("chardev", "char", {"mode": "0666", "rdev": [1, 3]}),
        ("bigdev", "char", {"mode": "0600", "rdev": [4095, 1048575]}),
        ("sub", "dir", {}),
        ("sub/fifo2", "fifo", {}),
        ("sub/link", "symlink", {"target": "../file"}),
    ])


def tree_meta() -> dict:
    return _entries([
        ("", "dir", {"xattrs": {"user.root": _text("on the root"),
                                "security.selinux": _text("system_u:object_r:root_t:s0\0")}}),
        ("x.txt", "file", {"content": _text("xattrs\n"), "uid": 1, "gid": 1, "xattrs": {
            "user.comment": _text("a comment"), "user.empty": _text(""), "trusted.secret": {"hex": "0001ff"},
            "user.big": {"prng": {"seed": 2, "size": 3000}},
            "security.selinux": _text("system_u:object_r:tmp_t:s0\0")}}),
        ("caps", "file", {"content": _text("#!/bin/true\n"), "mode": "0755",
                          "xattrs": {"security.capability": {"hex": FCAPS_NET_RAW}}}),
        ("acl.txt", "file", {"content": _text("acl\n"), "mode": "0640", "acl": {"access": [
            ["user_obj", None, 6], ["user", 1, 4], ["user", 12345, 6], ["group_obj", None, 4],
            ["group", 1, 5], ["group", 54321, 2], ["mask", None, 4], ["other", None, 0]]}}),
        ("acldir", "dir", {"mode": "0750", "acl": {"default": [
            ["user_obj", None, 7], ["user", 1, 5], ["group_obj", None, 5], ["group", 54321, 7],
            ["mask", None, 5], ["other", None, 1]]}}),
        ("acldir/inner", "file", {}),
        ("acldir2", "dir", {"mode": "0755", "acl": {
            "default": [["user_obj", None, 7], ["group_obj", None, 5], ["other", None, 0]]}}),
        ("noatime.txt", "file", {"content": _text("A\n"), "chattr": "A"}),
        ("sync.txt", "file", {"content": _text("S\n"), "chattr": "S"}),
        ("append.log", "file", {"content": _text("a\n"), "chattr": "a"}),
        ("immutable.txt", "file", {"content": _text("i\n"), "chattr": "i"}),
        ("nodump.txt", "file", {"content": _text("not archived by default\n"), "chattr": "d"}),
        ("dirsync", "dir", {"chattr": "D"}),
        ("link", "symlink", {"target": "x.txt", "uid": 1, "gid": 1,
                             "xattrs": {"security.selinux": _text("system_u:object_r:link_t:s0\0")}}),
        ("fifo", "fifo", {"xattrs": {"security.selinux": _text("system_u:object_r:fifo_t:s0\0")}}),
    ])


def tree_exclude() -> dict:
    return _entries([
        ("", "dir", {}),
        ("excl", "dir", {}),
        ("excl/.caexclude", "file", {"content": _text("# comment\n  *.o  \n\n!keep/c.o\nbuild/\n")}),
        ("excl/a.o", "file", {}),
        ("excl/b.c", "file", {}),
        ("excl/build", "dir", {}),
        ("excl/build/x", "file", {}),
        ("excl/built", "file", {}),
        ("excl/keep", "dir", {}),
        ("excl/keep/c.o", "file", {}),
        ("excl/keep/d.o", "file", {}),
        ("excl/sub", "dir", {}),
        ("excl/sub/.caexclude", "file", {"content": _text("/only-here\n.hidden*\n")}),
        ("excl/sub/only-here", "file", {}),
        ("excl/sub/.hidden1", "file", {}),
        ("excl/sub/deeper", "dir", {}),
        ("excl/sub/deeper/only-here", "file", {}),
        ("excl/sub/deeper/x.o", "file", {}),
        ("nodump.txt", "file", {"chattr": "d"}),
        ("nodumpdir", "dir", {"chattr": "d"}),
        ("nodumpdir/inner", "file", {}),
        ("plain", "file", {"content": _text("kept\n")}),
    ])


def tree_many() -> dict:
    spec = [("", "dir", {})]
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 33):
        spec.append((f"n{n:02d}", "dir", {}))
        spec += [(f"n{n:02d}/{chr(97 + k % 26)}{k}", "file", {}) for k in range(n)]
    return _entries(spec)


def tree_deep(depth: int = 40) -> dict:
    spec = [("", "dir", {})]
    path = ""
    for i in range(depth):
        path = f"{path}/d{i}" if path else "d0"
        spec.append((path, "dir", {}))
    spec.append((path + "/bottom", "file", {"content": _text("the bottom\n")}))
    return _entries(spec)


def tree_bigfile() -> dict:
    return _entries([
        ("", "dir", {}),
        ("big.bin", "file", {"content": {"prng": {"seed": 3, "size": 150000, "zero_runs": [[40000, 30000]],
                                                   "copies": [[0, 100000, 30000]]}}}),
        ("small.txt", "file", {"content": _text("small\n")}),
    ])


def tree_longnames() -> dict:
    return _entries([
        ("", "dir", {}),
        ("x" * 255, "file", {"content": _text("a name of 255 bytes\n")}),
        ("\u00e9" * 127 + "z", "dir", {}),
        ("\u00e9" * 127 + "z/" + "y" * 254, "symlink", {"target": "../" + "x" * 255}),
    ])


TREES = {"longnames": tree_longnames, "basic": tree_basic, "special": tree_special, "meta": tree_meta, "exclude": tree_exclude,
         "many": tree_many, "deep": tree_deep, "mstimes": lambda: tree_basic(ms_times=True),
         "bigfile": tree_bigfile}

# (name, tree, casync options, requirements covered, flags); flags: "quirk" = casync cannot read
# the archive back (CATAR-24), "blake3" = needs the extension
TREE_VECTORS = [
    ("basic-default", "basic", [], "CATAR-1 CATAR-3 CATAR-10 CATAR-11 CATAR-14 CATAR-16 CATAR-20 CATAR-28 "
     "CATAR-30 CATAR-35 CATAR-36 CATAR-40 CATAR-41 CATAR-42 CATAR-43 CATAR-44 FLAGS-4 FLAGS-5 FLAGS-6", ""),
    ("special-default", "special", [], "CATAR-12 CATAR-29 FLAGS-8", ""),
    ("meta-default", "meta", [], "CATAR-13 CATAR-22 CATAR-23 CATAR-25 CATAR-26 FLAGS-7 FLAGS-8 EXCL-1", ""),
    ("exclude-default", "exclude", [], "FLAGS-8 EXCL-1 EXCL-2 EXCL-3 EXCL-4 EXCL-5 EXCL-6", ""),
    ("many-default", "many", [], "CATAR-41 CATAR-42 CATAR-43", ""),
    ("deep-default", "deep", [], "CATAR-35 CATAR-37 CATAR-43", ""),
    ("bigfile-default", "bigfile", [], "CATAR-30", ""),
    ("longnames-default", "longnames", [], "CATAR-35", ""),
    ("basic-unix", "basic", ["--with=unix"], "FLAGS-4 FLAGS-5 FLAGS-6 CATAR-18", ""),
    ("special-unix", "special", ["--with=unix"], "FLAGS-4 CATAR-29", ""),
    ("basic-without-all", "basic", ["--without=all"], "FLAGS-4 FLAGS-5 FLAGS-6 FLAGS-8 CATAR-16 CATAR-19", ""),
    ("special-without-all", "special", ["--without=all"], "FLAGS-8", ""),
    ("meta-xattrs", "meta", ["--with=xattrs"], "CATAR-22 FLAGS-4", ""),
    ("meta-acl", "meta", ["--with=acl"], "CATAR-23 FLAGS-2", ""),
    ("meta-selinux", "meta", ["--with=selinux"], "CATAR-25", ""),
    ("meta-fcaps", "meta", ["--with=fcaps"], "CATAR-26", ""),
    ("meta-chattr", "meta", ["--with=chattr"], "FLAGS-7 CATAR-17", ""),
    ("meta-fat", "meta", ["--with=fat"], "FLAGS-2 FLAGS-5 CATAR-19", ""),
    ("meta-fat-attrs", "meta", ["--with=fat-attrs", "--with=sec-time"], "FLAGS-7", ""),
    ("meta-quota-projid", "meta", ["--with=quota-projid"], "CATAR-27", ""),
    ("meta-subvolume", "meta", ["--with=subvolume", "--with=subvolume-ro"], "FLAGS-2 CATAR-17", ""),
    ("meta-best-without-names", "meta", ["--with=best", "--without=user-names"], "CATAR-23 FLAGS-2", ""),
    ("meta-without-privileged", "meta", ["--without=privileged"], "FLAGS-4", ""),
    ("meta-fuse", "meta", ["--with=fuse"], "FLAGS-4 FLAGS-2", ""),
    ("basic-16bit-uids", "basic", ["--with=16bit-uids"], "CATAR-18 FLAGS-6", ""),
    ("basic-32bit-uids", "basic", ["--with=32bit-uids"], "CATAR-18 FLAGS-6", ""),
    ("basic-user-names", "basic", ["--with=user-names"], "CATAR-20 CATAR-21 CATAR-24", "quirk"),
    ("basic-sec-time", "basic", ["--with=sec-time"], "CATAR-19 FLAGS-6", ""),
    ("basic-usec-time", "basic", ["--with=usec-time"], "CATAR-19 CATAR-24 FLAGS-6", "quirk"),
    ("mstimes-usec-time", "mstimes", ["--with=usec-time"], "CATAR-19 FLAGS-6", ""),
    ("basic-nsec-time", "basic", ["--with=nsec-time"], "CATAR-19 FLAGS-6", ""),
    ("basic-2sec-time", "basic", ["--with=2sec-time"], "CATAR-19 FLAGS-6", ""),
    ("basic-read-only", "basic", ["--with=read-only"], "CATAR-16 FLAGS-5", ""),
    ("basic-permissions", "basic", ["--with=permissions"], "CATAR-16 FLAGS-5", ""),
    ("special-symlinks", "special", ["--with=symlinks"], "FLAGS-8 CATAR-28", ""),
    ("special-device-nodes", "special", ["--with=device-nodes"], "FLAGS-8 CATAR-29", ""),
    ("special-fifos", "special", ["--with=fifos"], "FLAGS-8", ""),
    ("special-sockets", "special", ["--with=sockets"], "FLAGS-8", ""),
    ("basic-best", "basic", ["--with=best"], "FLAGS-4", ""),
    ("basic-fuse", "basic", ["--with=fuse"], "FLAGS-4", ""),
    ("exclude-nodump-no", "exclude", ["--exclude-nodump=no"], "FLAGS-2 FLAGS-4 FLAGS-8", ""),
    ("exclude-submounts", "exclude", ["--exclude-submounts=yes"], "FLAGS-4", ""),
    ("basic-sha256", "basic", ["--digest=sha256"], "FLAGS-4 DIGEST-1 DIGEST-2", ""),
    ("basic-blake3", "basic", ["--digest=blake3"], "FLAGS-9 DIGEST-1 DIGEST-2", "blake3"),
]


EXTRACT_COVERS = {
    "basic": ["EXTRACT-3", "EXTRACT-4", "EXTRACT-5"], "mstimes": ["EXTRACT-4", "EXTRACT-5"],
    "special": ["EXTRACT-2", "EXTRACT-3", "EXTRACT-5"],
    "meta": ["EXTRACT-5", "EXTRACT-6", "EXTRACT-7", "EXTRACT-8", "EXTRACT-9", "EXTRACT-11", "EXTRACT-13"],
    "longnames": ["EXTRACT-15"], "deep": ["EXTRACT-14"], "many": ["EXTRACT-2"], "exclude": ["EXTRACT-2"],
    "bigfile": ["EXTRACT-19"],
}


def _environment(tree: dict, options: list[str]) -> dict:
    """The user/group names make's output depends on (only with user-names)."""
    w = [o.split("=", 1)[1] for o in options if o.startswith("--with=")]
    wo = [o.split("=", 1)[1] for o in options if o.startswith("--without=")]
    if not from_options(w, wo) & F.WITH_USER_NAMES:
        return {}
    users, groups = set(), set()
    for e in tree["entries"]:
        users.add(e.get("uid", 0))
        groups.add(e.get("gid", 0))
        for entries in e.get("acl", {}).values():
            for tag, ident, _perm in entries:
                if tag == "user":
                    users.add(ident)
                elif tag == "group":
                    groups.add(ident)

    def name(lookup, i):
        try:
            return lookup(i)
        except KeyError:
            return None

    return {"users": {str(u): name(lambda i: pwd.getpwuid(i).pw_name, u) for u in sorted(users)},
            "groups": {str(g): name(lambda i: grp.getgrgid(i).gr_name, g) for g in sorted(groups)}}


# --------------------------------------------------------------------------- a record-level writer


class Node:
    """One entry of a synthetic archive: its records (ENTRY and what follows, PAYLOAD included)
    and, for a directory, its children [(name bytes, Node)] in stream order."""

    def __init__(self, records: list[bytes], children: list | None = None):
        self.records = records
        self.children = children
        #: edits the GOODBYE record: f(record bytes, items) -> bytes
        self.goodbye_hook = None


def _rec(rtype: int, body: bytes) -> bytes:
    return fmt.HEADER.pack(16 + len(body), rtype) + body


def _cstr(rtype: int, text: bytes) -> bytes:
    return _rec(rtype, text + b"\0")


def node(entry: Entry, payload: bytes = b"", children: list | None = None) -> Node:
    if entry.isreg():
        entry.size = len(payload)
    data = entry_records(entry)
    recs = _split_records(data)
    if entry.isreg():
        recs[-1] = recs[-1] + payload
    return Node(recs, children if entry.isdir() else None)


def _split_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size, rtype = fmt.HEADER.unpack_from(data, pos)
        if rtype == T.PAYLOAD:
            size = 16
        out.append(data[pos:pos + size])
        pos += size
    return out


def build(root: Node) -> bytes:
    out = bytearray()

    def emit(n: Node) -> None:
        start = len(out)
        for r in n.records:
            out.extend(r)
        if n.children is None:
            return
        items = []
        for name, child in n.children:
            fstart = len(out)
            out.extend(_cstr(T.FILENAME, name))
            emit(child)
            items.append((name_hash(name), fstart, len(out)))
        gb = goodbye_record(items, len(out), start)
        if n.goodbye_hook:
            gb = n.goodbye_hook(gb, items)
        out.extend(gb)

    emit(root)
    return bytes(out)


def E(mode: int, ff: int = DEF, **kw) -> Entry:
    """An Entry with feature flags ``ff`` (``flags=`` are the entry's chattr/FAT bits)."""
    kw.setdefault("mtime", MT)
    return Entry(path="", mode=mode, feature_flags=ff, **kw)


def reg(payload: bytes = b"", mode: int = 0o644, ff: int = DEF, **kw) -> Node:
    return node(E(0o100000 | mode, ff, **kw), payload)


def dirn(children: list, mode: int = 0o755, ff: int = DEF, **kw) -> Node:
    return node(E(0o040000 | mode, ff, **kw), children=[(n.encode() if isinstance(n, str) else n, c)
                                                        for n, c in children])


def lnk(target: str, ff: int = DEF, **kw) -> Node:
    return node(E(0o120777, ff, target=target, **kw))


def special(typ: int, mode: int = 0o644, ff: int = DEF, **kw) -> Node:
    return node(E(typ | mode, ff, **kw))


S_IFIFO, S_IFSOCK, S_IFBLK, S_IFCHR = 0o010000, 0o140000, 0o060000, 0o020000


def base_archive(flags: int = DEF) -> Node:
    """The small archive the malformed ones are derived from."""
    return dirn([
        ("a.txt", reg(b"hello\n", ff=flags)),
        ("d", dirn([("f", reg(b"x", ff=flags))], ff=flags)),
        ("l", lnk("a.txt", ff=flags)),
        ("p", special(S_IFIFO, ff=flags)),
    ], ff=flags)


def child(n: Node, name: str) -> Node:
    return next(c for nm, c in n.children if nm == name.encode())


def all_records_archive() -> Node:
    """Every catar record type in one archive (a synthetic one: quota project ids, FAT and
    subvolume flags cannot be had on this machine's file system)."""
    fl = DEF
    named = dict(uid=1, gid=1, user="daemon", group="daemon")
    acl_file = E(0o100640, fl, **named, xattrs=[(b"trusted.t", b"\x00\x01"), (b"user.a", b"1"), (b"user.b", b"")],
                 acl_user=[ACLEntry(1, 6, "daemon"), ACLEntry(12345, 4)],
                 acl_group=[ACLEntry(1, 5, "daemon"), ACLEntry(54321, 7)], acl_group_obj=4,
                 selinux="system_u:object_r:tmp_t:s0", fcaps=bytes.fromhex(FCAPS_NET_RAW), quota_projid=42,
                 flags=F.WITH_FLAG_NOATIME | F.WITH_FLAG_APPEND | F.WITH_FLAG_SYNC)
    acl_dir = E(0o040750, fl, acl_default=ACLDefault(7, 5, 1, 5),
                acl_default_user=[ACLEntry(1, 7, "daemon"), ACLEntry(12345, 5)],
                acl_default_group=[ACLEntry(54321, 4)], quota_projid=7,
                flags=F.WITH_FLAG_DIRSYNC | F.WITH_FLAG_NOCOW | F.WITH_FLAG_PROJINHERIT)
    fat_dir = E(0o040755, fl, flags=F.WITH_FLAG_HIDDEN | F.WITH_FLAG_SYSTEM | F.WITH_FLAG_ARCHIVE
                                        | F.WITH_SUBVOLUME | F.WITH_SUBVOLUME_RO)
    return dirn([
        ("acl.txt", node(acl_file, b"all the metadata\n")),
        ("acldir", node(acl_dir, children=[(b"inner", reg(b"in\n"))])),
        ("blk", special(S_IFBLK, 0o660, rdev_major=8, rdev_minor=1)),
        ("chr", special(S_IFCHR, 0o666, rdev_major=4095, rdev_minor=1048575)),
        ("compressed", reg(b"c" * 100, ff=fl, mode=0o600, **{"flags": (F.WITH_FLAG_COMPR | F.WITH_FLAG_NOCOMP
                                                                               | F.WITH_FLAG_IMMUTABLE)})),
        ("fatdir", node(fat_dir, children=[])),
        ("fifo", special(S_IFIFO, 0o600, selinux="system_u:object_r:fifo_t:s0")),
        ("link", lnk("acl.txt", selinux="system_u:object_r:link_t:s0", **named)),
        ("sock", special(S_IFSOCK, 0o755)),
    ], mode=0o755, selinux="system_u:object_r:root_t:s0", xattrs=[(b"user.root", b"r")])


# --------------------------------------------------------------------------- malformed archives


def _hdr_size(rec: bytes, size: int) -> bytes:
    return struct.pack("<Q", size) + rec[8:]


def _entry_field(rec: bytes, field: str, value: int) -> bytes:
    idx = ["size", "type", "feature_flags", "mode", "flags", "uid", "gid", "mtime"].index(field)
    return rec[:8 * idx] + struct.pack("<Q", value) + rec[8 * idx + 8:]


def _set_flags_everywhere(n: Node, value: int) -> None:
    n.records[0] = _entry_field(n.records[0], "feature_flags", value)
    for _, c in n.children or []:
        _set_flags_everywhere(c, value)


def _gb_item(gb: bytes, i: int, field: int, delta: int) -> bytes:
    off = 16 + 24 * i + 8 * field
    v = struct.unpack_from("<Q", gb, off)[0]
    return gb[:off] + struct.pack("<Q", (v + delta) % (1 << 64)) + gb[off + 8:]


def _gb_tail(gb: bytes, field: int, value: int) -> bytes:
    off = len(gb) - 24 + 8 * field
    return gb[:off] + struct.pack("<Q", value) + gb[off + 8:]


def _sorted_items(gb: bytes, items) -> bytes:
    n = len(items)
    body = [gb[16 + 24 * i:16 + 24 * i + 24] for i in range(n)]
    body.sort(key=lambda b: struct.unpack_from("<QQQ", b)[::-1])  # by hash: not the tree order
    return gb[:16] + b"".join(body) + gb[16 + 24 * n:]


def _nested(depth: int) -> Node:
    n = reg(b"bottom\n")
    for i in reversed(range(depth)):
        n = dirn([(f"d{i}", n)]) if i else dirn([("d0", n)])
    return n


def _mutate(fn):
    """A malformed archive: ``fn`` edits a fresh base archive (Node) and may return bytes."""
    def make():
        root = base_archive()
        res = fn(root)
        return res if isinstance(res, bytes) else build(root)
    return make


def _insert_meta(name: str, rec: bytes, pos: int = 1):
    def f(root):
        c = child(root, name)
        c.records.insert(pos, rec)
    return f


ACL_U = lambda rtype, ident, perm, name=b"": (fmt.ACL_USER.pack(32 + (len(name) + 1 if name else 0), rtype, ident, perm)  # noqa: E731
                                              + (name + b"\0" if name else b""))

# (name, requirements covered, what makes it malformed, the bytes, features needed)
BAD_ARCHIVES = [
    ("empty-stream", "CATAR-44 CATAR-50", "an empty stream", lambda: b"", "rejects-truncation"),
    ("header-size-below-16", "CATAR-2", "a record whose size field is 8",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(1, _hdr_size(child(r, "a.txt").records[1], 8))), ""),
    ("header-size-max", "CATAR-2", "a record whose size field is 0xffffffffffffffff",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(1, _hdr_size(child(r, "a.txt").records[1], 2**64 - 1))),
     ""),
    ("record-beyond-end", "CATAR-2 CATAR-50", "a payload whose size runs past the end of the stream",
     _mutate(lambda r: _truncate_payload(r)), "rejects-truncation"),
    ("unknown-type", "CATAR-4", "a record of an unknown type among the metadata",
     _mutate(_insert_meta("a.txt", _rec(0x1234567890ABCDEF, b"12345678"))), ""),
    ("index-type-in-archive", "CATAR-3 CATAR-4", "an INDEX record inside a catar stream",
     _mutate(_insert_meta("a.txt", fmt.INDEX.pack(48, T.INDEX, DEF, 16384, 65536, 262144))), ""),
    ("table-type-in-archive", "CATAR-3 CATAR-4", "a TABLE record inside a catar stream",
     _mutate(_insert_meta("a.txt", _rec(T.TABLE, b""))), ""),
    ("entry-size-72", "CATAR-3 CATAR-14", "an ENTRY record of 72 bytes",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(0, _hdr_size(child(r, "a.txt").records[0], 72)
                                                            + b"\0" * 8)), ""),
    ("second-entry", "CATAR-11", "a second ENTRY record inside an entry",
     _mutate(lambda r: child(r, "a.txt").records.insert(1, child(r, "a.txt").records[0])), ""),
    ("group-before-user", "CATAR-11", "GROUP before USER",
     _mutate(lambda r: (_insert_meta("a.txt", _cstr(T.GROUP, b"daemon") + _cstr(T.USER, b"daemon"))(r),
                        _set_owner(child(r, "a.txt"), 1))), ""),
    ("user-twice", "CATAR-11", "two USER records",
     _mutate(lambda r: (_insert_meta("a.txt", _cstr(T.USER, b"daemon") * 2)(r),
                        _set_owner(child(r, "a.txt"), 1, gid=0))), ""),
    ("group-obj-twice", "CATAR-11", "two ACL_GROUP_OBJ records",
     _mutate(_insert_meta("a.txt", fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 4) * 2)), ""),
    ("xattr-after-acl", "CATAR-11", "an XATTR record after an ACL_USER record",
     _mutate(_insert_meta("a.txt", fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 4) + _rec(T.XATTR, b"user.a\0v"))),
     ""),
    ("payload-for-directory", "CATAR-12", "a PAYLOAD record in a directory's entry",
     _mutate(lambda r: child(r, "d").records.append(_rec(T.PAYLOAD, b""))), ""),
    ("payload-for-fifo", "CATAR-12", "an empty PAYLOAD record after a fifo",
     _mutate(lambda r: child(r, "p").records.append(_rec(T.PAYLOAD, b""))), ""),
    ("payload-for-symlink", "CATAR-12", "a PAYLOAD record after a symlink's SYMLINK",
     _mutate(lambda r: child(r, "l").records.append(_rec(T.PAYLOAD, b"x"))), ""),
    ("file-without-payload", "CATAR-12", "a regular file without PAYLOAD",
     _mutate(lambda r: child(r, "a.txt").records.pop()), ""),
    ("symlink-without-target", "CATAR-12", "a symlink without SYMLINK",
     _mutate(lambda r: child(r, "l").records.pop()), ""),
    ("device-without-device", "CATAR-12", "a character device without DEVICE",
     _mutate(lambda r: child(r, "p").records.__setitem__(0, _entry_field(child(r, "p").records[0], "mode",
                                                                            S_IFCHR | 0o644))), ""),
    ("symlink-record-for-file", "CATAR-12", "a SYMLINK record for a regular file",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(-1, _cstr(T.SYMLINK, b"x"))), ""),
    ("device-record-for-fifo", "CATAR-12", "a DEVICE record for a fifo",
     _mutate(lambda r: child(r, "p").records.append(fmt.DEVICE.pack(32, T.DEVICE, 1, 3))), ""),
    ("fcaps-on-directory", "CATAR-13", "FCAPS on a directory",
     _mutate(lambda r: child(r, "d").records.append(_rec(T.FCAPS, bytes.fromhex(FCAPS_NET_RAW)))), ""),
    ("projid-on-symlink", "CATAR-13", "QUOTA_PROJID on a symlink",
     _mutate(lambda r: child(r, "l").records.insert(1, fmt.QUOTA_PROJID.pack(24, T.QUOTA_PROJID, 5))), ""),
    ("entry-flags-on-symlink", "CATAR-13 CATAR-17", "chattr flags on a symlink's ENTRY",
     _mutate(lambda r: child(r, "l").records.__setitem__(0, _entry_field(child(r, "l").records[0], "flags",
                                                                            F.WITH_FLAG_NOATIME))), ""),
    ("xattr-on-symlink", "CATAR-13", "an XATTR on a symlink",
     _mutate(_insert_meta("l", _rec(T.XATTR, b"user.a\0v"))), ""),
    ("acl-default-on-file", "CATAR-13", "ACL_DEFAULT on a regular file",
     _mutate(_insert_meta("a.txt", fmt.ACL_DEFAULT.pack(48, T.ACL_DEFAULT, 7, 5, 5, 5))), ""),
    ("acl-user-without-group-obj", "CATAR-13", "ACL_USER without ACL_GROUP_OBJ",
     _mutate(_insert_meta("a.txt", ACL_U(T.ACL_USER, 5, 4))), ""),
    ("acl-default-user-without-default", "CATAR-13", "ACL_DEFAULT_USER without ACL_DEFAULT",
     _mutate(_insert_meta("d", ACL_U(T.ACL_DEFAULT_USER, 5, 4))), ""),
    ("acl-default-user-unset-mask", "CATAR-13", "ACL_DEFAULT_USER with an ACL_DEFAULT without mask",
     _mutate(_insert_meta("d", fmt.ACL_DEFAULT.pack(48, T.ACL_DEFAULT, 7, 5, 5, UNSET)
                          + ACL_U(T.ACL_DEFAULT_USER, 5, 4))), ""),
    ("flags-unknown-bit", "CATAR-15 FLAGS-1", "feature flags with bit 40 set",
     _mutate(lambda r: _set_flags_everywhere(r, DEF | 1 << 40)), ""),
    ("flags-all-ones", "CATAR-15", "feature flags 0xffffffffffffffff",
     _mutate(lambda r: _set_flags_everywhere(r, 2**64 - 1)), ""),
    ("flags-not-normalised", "CATAR-15 FLAGS-2", "feature flags with both 16bit-uids and 32bit-uids",
     _mutate(lambda r: _set_flags_everywhere(r, DEF | F.WITH_16BIT_UIDS)), ""),
    ("flags-two-times", "CATAR-15 FLAGS-2", "feature flags with both sec-time and nsec-time",
     _mutate(lambda r: _set_flags_everywhere(r, DEF | F.WITH_SEC_TIME)), ""),
    ("flags-differ", "FLAGS-3 CATAR-15", "a child ENTRY with other feature flags than the root's",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(0, _entry_field(
         child(r, "a.txt").records[0], "feature_flags", DEF & ~F.WITH_FIFOS))), ""),
    ("flags-blake3-and-sha512", "CATAR-15 FLAGS-9", "feature flags naming two digests",
     _mutate(lambda r: _set_flags_everywhere(r, DEF | F.DIGEST_BLAKE3)), ""),
    ("mode-extra-bits", "CATAR-16", "a mode with a bit above the file type",
     _mutate(lambda r: child(r, "a.txt").records.__setitem__(0, _entry_field(
         child(r, "a.txt").records[0], "mode", 0o300644))), ""),
    ("mode-unknown-type", "CATAR-16", "a mode with an unknown file type",
     _mutate(lambda r: child(r, "p").records.__setitem__(0, _entry_field(
         child(r, "p").records[0], "mode", 0o130644))), ""),
    ("symlink-mode-not-777", "CATAR-16", "a symlink with mode 0755",
     _mutate(lambda r: child(r, "l").records.__setitem__(0, _entry_field(
         child(r, "l").records[0], "mode", 0o120755))), ""),
    ("mode-without-permissions", "CATAR-16 FLAGS-5", "mode 0644 in an archive without permissions",
     lambda: build(_unix_without_perms()), ""),
    ("symlink-without-flag", "CATAR-16", "a symlink in an archive without symlinks",
     lambda: build(_flagged(DEF & ~F.WITH_SYMLINKS)), ""),
    ("fifo-without-flag", "CATAR-16", "a fifo in an archive without fifos",
     lambda: build(_flagged(DEF & ~F.WITH_FIFOS)), ""),
    ("device-without-flag", "CATAR-16", "a device in an archive without device-nodes",
     lambda: build(_with_device(DEF & ~F.WITH_DEVICE_NODES)), ""),
    ("entry-flag-not-in-archive", "CATAR-17", "the immutable bit in an archive without it",
     lambda: build(_entry_flag(DEF & ~F.WITH_FLAG_IMMUTABLE, F.WITH_FLAG_IMMUTABLE)), ""),
    ("subvolume-on-file", "CATAR-17", "the subvolume bit on a regular file",
     lambda: build(_entry_flag(DEF, F.WITH_SUBVOLUME)), ""),
    ("uid-16bit-too-big", "CATAR-18", "uid 65536 with 16bit-uids",
     lambda: build(_owner_archive(int(normalize(F.WITH_16BIT_UIDS | F.WITH_SYMLINKS)), 65536)), ""),
    ("uid-16bit-ffff", "CATAR-18", "uid 65535 with 16bit-uids",
     lambda: build(_owner_archive(int(normalize(F.WITH_16BIT_UIDS)), 65535)), ""),
    ("uid-32bit-max", "CATAR-18", "uid 0xffffffff with 32bit-uids",
     lambda: build(_owner_archive(int(normalize(F.WITH_32BIT_UIDS)), 0xFFFFFFFF)), ""),
    ("uid-without-flag", "CATAR-18", "a non-zero uid without uid flags",
     lambda: build(_owner_archive(F.WITH_PERMISSIONS, 5)), ""),
    ("mtime-sec-granularity", "CATAR-19", "a nanosecond mtime with sec-time",
     lambda: build(_time_archive(F.WITH_SEC_TIME, MT)), ""),
    ("mtime-without-flag", "CATAR-19", "a non-zero mtime without a time flag",
     lambda: build(_time_archive(F.WITH_PERMISSIONS, 1_000_000_000)), ""),
    ("mtime-all-ones", "CATAR-19", "mtime 0xffffffffffffffff",
     lambda: build(_time_archive(F.WITH_NSEC_TIME, 2**64 - 1)), ""),
    ("user-without-flag", "CATAR-20", "a USER record without user-names",
     lambda: build(_user_archive(int(normalize(F.WITH_32BIT_UIDS)), b"daemon")), ""),
    ("user-name-space", "CATAR-21", "a user name with a space",
     lambda: build(_user_archive(DEF, b"dae mon")), ""),
    ("user-name-root", "CATAR-21", "the user name root",
     lambda: build(_user_archive(DEF, b"root")), ""),
    ("user-name-empty", "CATAR-21", "an empty user name",
     lambda: build(_user_archive(DEF, b"")), ""),
    ("user-name-too-long", "CATAR-3 CATAR-20", "a USER record of 16 + 257 bytes",
     lambda: build(_user_archive(DEF, b"u" * 256)), ""),
    ("xattr-name-without-dot", "CATAR-22", "an xattr name without a dot",
     _mutate(_insert_meta("a.txt", _rec(T.XATTR, b"user\0v"))), ""),
    ("xattr-name-ends-with-dot", "CATAR-22", "an xattr name ending in a dot",
     _mutate(_insert_meta("a.txt", _rec(T.XATTR, b"user.\0v"))), ""),
    ("xattr-without-nul", "CATAR-22", "an XATTR record without a NUL",
     _mutate(_insert_meta("a.txt", _rec(T.XATTR, b"user.a"))), ""),
    ("xattr-unsorted", "CATAR-22", "XATTR records out of order",
     _mutate(_insert_meta("a.txt", _rec(T.XATTR, b"user.b\0") + _rec(T.XATTR, b"user.a\0"))), ""),
    ("xattr-duplicate", "CATAR-22", "the same xattr twice",
     _mutate(_insert_meta("a.txt", _rec(T.XATTR, b"user.a\0") + _rec(T.XATTR, b"user.a\0"))), ""),
    ("xattr-without-flag", "CATAR-22", "an XATTR record without xattrs",
     lambda: build(_meta_without(F.WITH_XATTRS, _rec(T.XATTR, b"user.a\0v"))), ""),
    ("acl-bad-permission", "CATAR-23", "an ACL_USER with permission bit 8",
     _mutate(_insert_meta("a.txt", ACL_U(T.ACL_USER, 5, 8) + fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 4))), ""),
    ("acl-unsorted", "CATAR-23", "ACL_USER records out of order",
     _mutate(_insert_meta("a.txt", ACL_U(T.ACL_USER, 7, 4) + ACL_U(T.ACL_USER, 5, 4)
                          + fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 4))), ""),
    ("acl-without-flag", "CATAR-23", "an ACL_GROUP_OBJ record without acl",
     lambda: build(_meta_without(F.WITH_ACL, fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 4))), ""),
    ("acl-group-obj-size", "CATAR-3", "an ACL_GROUP_OBJ record of 32 bytes",
     _mutate(_insert_meta("a.txt", _rec(T.ACL_GROUP_OBJ, struct.pack("<QQ", 4, 0)))), ""),
    ("selinux-empty", "CATAR-3 CATAR-25", "an empty SELinux label",
     _mutate(_insert_meta("a.txt", _cstr(T.SELINUX, b""))), ""),
    ("selinux-without-flag", "CATAR-25", "a SELINUX record without selinux",
     lambda: build(_meta_without(F.WITH_SELINUX, _cstr(T.SELINUX, b"x_t"))), ""),
    ("fcaps-without-flag", "CATAR-26", "an FCAPS record without fcaps",
     lambda: build(_meta_without(F.WITH_FCAPS, _rec(T.FCAPS, bytes.fromhex(FCAPS_NET_RAW)))),
     "checks-fcaps-flag"),
    ("projid-without-flag", "CATAR-27", "a QUOTA_PROJID record without quota-projid",
     lambda: build(_meta_without(F.WITH_QUOTA_PROJID, fmt.QUOTA_PROJID.pack(24, T.QUOTA_PROJID, 5))),
     "checks-projid-flag"),
    ("projid-zero", "CATAR-27", "project id 0",
     _mutate(_insert_meta("a.txt", fmt.QUOTA_PROJID.pack(24, T.QUOTA_PROJID, 0))), ""),
    ("symlink-empty", "CATAR-28", "an empty symlink target",
     _mutate(lambda r: child(r, "l").records.__setitem__(-1, _cstr(T.SYMLINK, b""))), ""),
    ("symlink-inner-nul", "CATAR-28", "a symlink target with a NUL inside",
     _mutate(lambda r: child(r, "l").records.__setitem__(-1, _cstr(T.SYMLINK, b"a\0b"))), ""),
    ("symlink-too-long", "CATAR-3 CATAR-28", "a symlink target of 4096 bytes plus NUL",
     _mutate(lambda r: child(r, "l").records.__setitem__(-1, _cstr(T.SYMLINK, b"t" * 4096))), ""),
    ("device-major-4096", "CATAR-29", "a device with major number 4096",
     lambda: build(_with_device(DEF, 4096, 0)), ""),
    ("device-minor-2-20", "CATAR-29", "a device with minor number 2^20",
     lambda: build(_with_device(DEF, 0, 1 << 20)), ""),
    ("device-size-40", "CATAR-3", "a DEVICE record of 40 bytes",
     lambda: build(_with_device(DEF, 1, 3, extra=8)), ""),
    ("filename-dot", "CATAR-35", "the file name '.'", lambda: build(_named([b"."])), ""),
    ("filename-dotdot", "CATAR-35", "the file name '..'", lambda: build(_named([b".."])), ""),
    ("filename-slash", "CATAR-35", "a file name with a slash", lambda: build(_named([b"a/b"])), ""),
    ("filename-empty", "CATAR-35", "an empty file name", lambda: build(_named([b""])), ""),
    ("filename-inner-nul", "CATAR-35", "a file name with a NUL inside", lambda: build(_named([b"a\0b"])), ""),
    ("filename-too-long", "CATAR-3 CATAR-35", "a file name of 256 bytes plus NUL",
     lambda: build(_named([b"n" * 256])), "checks-name-length"),
    ("filename-without-nul", "CATAR-35", "a FILENAME record without the NUL",
     lambda: _filename_without_nul(), ""),
    ("payload-where-filename", "CATAR-35", "a PAYLOAD record where a FILENAME or GOODBYE must come",
     lambda: _record_between_children(_rec(T.PAYLOAD, b"x")), ""),
    ("names-unsorted", "CATAR-36", "children out of strcmp order",
     lambda: build(_named([b"b", b"a"])), "rejects-unsorted-names"),
    ("names-duplicate", "CATAR-36", "two children with the same name",
     lambda: build(_named([b"a", b"a"])), "rejects-unsorted-names"),
    ("depth-65", "CATAR-37", "directories nested 65 levels below the root",
     lambda: build(_nested(66)), ""),
    ("goodbye-missing", "CATAR-44 CATAR-50", "a stream that ends before the root's GOODBYE",
     lambda: _without_root_goodbye(), "rejects-truncation"),
    ("goodbye-wrong-hash", "CATAR-40 CATAR-41 CATAR-43", "a goodbye item with a wrong hash",
     lambda: _gb_edit(lambda gb, items: _gb_item(gb, 0, 2, 1)), "checks-goodbye-items"),
    ("goodbye-wrong-offset", "CATAR-41 CATAR-43", "a goodbye item with a wrong offset",
     lambda: _gb_edit(lambda gb, items: _gb_item(gb, 1, 0, 8)), "checks-goodbye-items"),
    ("goodbye-wrong-size", "CATAR-41 CATAR-43", "a goodbye item with a wrong size",
     lambda: _gb_edit(lambda gb, items: _gb_item(gb, 2, 1, -1)), "checks-goodbye-items"),
    ("goodbye-not-a-tree", "CATAR-42 CATAR-43", "goodbye items in sorted rather than tree order",
     lambda: _gb_edit(_sorted_items), "checks-goodbye-items"),
    ("goodbye-tail-marker", "CATAR-43", "a goodbye tail with a wrong marker",
     lambda: _gb_edit(lambda gb, items: _gb_tail(gb, 2, 0x57446FA533702942)), ""),
    ("goodbye-tail-entry-offset", "CATAR-43", "a goodbye tail with a wrong entry offset",
     lambda: _gb_edit(lambda gb, items: _gb_tail(gb, 0, struct.unpack_from("<Q", gb, len(gb) - 24)[0] - 8)), ""),
    ("goodbye-tail-size", "CATAR-43", "a goodbye tail with a wrong size",
     lambda: _gb_edit(lambda gb, items: _gb_tail(gb, 1, len(gb) - 24)), ""),
    ("goodbye-extra-item", "CATAR-43", "a goodbye record with one item too many",
     lambda: _gb_edit(lambda gb, items: _extra_item(gb)), "checks-goodbye-items"),
    ("goodbye-subdir-tail", "CATAR-43", "a subdirectory's goodbye tail with a wrong marker",
     lambda: _gb_edit(lambda gb, items: _gb_tail(gb, 2, 0), where="d"), ""),
    ("trailing-garbage", "CATAR-44", "bytes after the root's GOODBYE record",
     lambda: build(base_archive()) + b"\0" * 8, "rejects-trailing-data"),
    ("trailing-archive", "CATAR-44", "a second archive after the first",
     lambda: build(base_archive()) * 2, "rejects-trailing-data"),
    ("root-not-directory", "CATAR-44", "a stream whose root is a regular file",
     lambda: build(reg(b"not a directory\n")), ""),
    ("truncated-in-header", "CATAR-50", "a stream cut inside a record header",
     lambda: build(base_archive())[:70], "rejects-truncation"),
    ("truncated-in-payload", "CATAR-50", "a stream cut inside a payload",
     lambda: _cut_in_payload(), "rejects-truncation"),
    ("truncated-in-goodbye", "CATAR-50", "a stream cut inside the root's GOODBYE record",
     lambda: build(base_archive())[:-10], "rejects-truncation"),
]


def _truncate_payload(root: Node) -> bytes:
    c = child(root, "a.txt")
    c.records[-1] = _hdr_size(c.records[-1], 16 + 1_000_000)
    return build(root)


def _set_owner(n: Node, uid: int, gid: int | None = None) -> None:
    n.records[0] = _entry_field(n.records[0], "uid", uid)
    n.records[0] = _entry_field(n.records[0], "gid", uid if gid is None else gid)


def _unix_without_perms() -> Node:
    fl = int(normalize(F.WITH_16BIT_UIDS | F.WITH_SEC_TIME))
    return dirn([("f", reg(b"x", mode=0o644, ff=fl, mtime=1_600_000_000_000_000_000))], mode=0o777, ff=fl,
                mtime=1_600_000_000_000_000_000)


def _flagged(fl: int) -> Node:
    return base_archive(fl)


def _with_device(fl: int, major: int = 8, minor: int = 1, extra: int = 0) -> Node:
    dev = special(S_IFCHR, 0o644, ff=fl, rdev_major=major, rdev_minor=minor)
    if extra:
        dev.records[-1] = _hdr_size(dev.records[-1], 32 + extra) + b"\0" * extra
    return dirn([("dev", dev)], ff=fl)


def _entry_flag(fl: int, bit: int) -> Node:
    return dirn([("f", reg(b"x", ff=fl, flags=int(bit)))], ff=fl)


def _owner_archive(fl: int, uid: int) -> Node:
    mode = 0o644 if fl & (F.WITH_PERMISSIONS | F.WITH_ACL) else 0o666
    dmode = 0o755 if fl & (F.WITH_PERMISSIONS | F.WITH_ACL) else 0o777
    return dirn([("f", reg(b"x", mode=mode, ff=fl, uid=uid, gid=0, mtime=0))], mode=dmode, ff=fl, mtime=0)


def _time_archive(fl: int, mtime: int) -> Node:
    mode = 0o644 if fl & F.WITH_PERMISSIONS else 0o666
    dmode = 0o755 if fl & F.WITH_PERMISSIONS else 0o777
    root_mtime = 0 if not fl & (F.WITH_SEC_TIME | F.WITH_NSEC_TIME) else 1_600_000_000_000_000_000
    return dirn([("f", reg(b"x", mode=mode, ff=fl, mtime=mtime))], mode=dmode, ff=fl, mtime=root_mtime)


def _user_archive(fl: int, name: bytes) -> Node:
    f = reg(b"x", ff=fl, uid=1, gid=0, mtime=MT if fl & F.WITH_NSEC_TIME else 0)
    f.records.insert(1, _cstr(T.USER, name))
    if not fl & F.WITH_PERMISSIONS and not fl & F.WITH_ACL:
        f.records[0] = _entry_field(f.records[0], "mode", 0o100666)
    return dirn([("f", f)], ff=fl, mtime=MT if fl & F.WITH_NSEC_TIME else 0,
                mode=0o755 if fl & (F.WITH_PERMISSIONS | F.WITH_ACL) else 0o777)


def _meta_without(bit: int, rec: bytes) -> Node:
    # without the ACL feature the default flags would lose their permission bits too (ACLs imply
    # them): keep them, so that the archive is wrong only in the record the vector names
    fl = int(normalize(DEF & ~bit | (F.WITH_PERMISSIONS if bit == F.WITH_ACL else 0)))
    r = base_archive(fl)
    c = child(r, "a.txt")
    c.records.insert(1, rec)
    return r


def _named(names: list[bytes]) -> Node:
    return dirn([(n, reg(b"x")) for n in names])


def _filename_without_nul() -> bytes:
    good = build(_named([b"abc"]))
    i = good.index(b"abc\0")
    hdr = i - 16
    # replace "abc\0" by "abcd" (the record keeps its size, the NUL is gone)
    return good[:hdr] + good[hdr:i] + b"abcd" + good[i + 4:]


def _record_between_children(rec: bytes) -> bytes:
    r = _named([b"a"])
    data = build(r)
    # insert the record right before the root's GOODBYE (its offsets then no longer matter: the
    # reader must stop at the foreign record)
    gsize = struct.unpack_from("<Q", data, len(data) - 16)[0]
    return data[:len(data) - gsize] + rec + data[len(data) - gsize:]


def _without_root_goodbye() -> bytes:
    data = build(base_archive())
    gsize = struct.unpack_from("<Q", data, len(data) - 16)[0]
    return data[:len(data) - gsize]


def _gb_edit(hook, where: str | None = None) -> bytes:
    r = base_archive()
    target = r if where is None else child(r, where)
    target.goodbye_hook = hook
    return build(r)


def _extra_item(gb: bytes) -> bytes:
    n = (len(gb) - 40) // 24
    items = gb[16:16 + 24 * n]
    size = len(gb) + 24
    tail = gb[-24:]
    entry_off = struct.unpack_from("<Q", tail)[0]
    new_tail = struct.pack("<QQQ", entry_off, size, T.GOODBYE_TAIL_MARKER)
    return fmt.HEADER.pack(size, T.GOODBYE) + items + items[:24] + new_tail


def _cut_in_payload() -> bytes:
    big = dirn([("big", reg(b"p" * 5000))])
    data = build(big)
    return data[:3000]


# --------------------------------------------------------------------------- decode vectors

# (name, archive builder, requirements, outputs [(verb, sub-path, options)], needs)
FULL_OUTPUTS = [("list", None, []), ("mtree", None, []), ("digest", None, [])]


def _quirk_archive(kind: str) -> Node:
    if kind == "usec":
        fl = int(normalize(F.WITH_USEC_TIME | F.WITH_PERMISSIONS))
        return dirn([("f", reg(b"x", ff=fl, mtime=1_600_000_000_123_456_000))], ff=fl,
                    mtime=1_600_000_000_000_001_000)
    fl = int(normalize(F.WITH_USER_NAMES | F.WITH_PERMISSIONS))
    return dirn([("digits", reg(b"x", ff=fl, mtime=0, user="12345", group="54321")),
                 ("named", reg(b"y", ff=fl, mtime=0, user="daemon", group="daemon"))], ff=fl, mtime=0)


DECODE_VECTORS = [
    ("all-records", all_records_archive,
     "CATAR-1 CATAR-3 CATAR-10 CATAR-11 CATAR-13 CATAR-14 CATAR-17 CATAR-20 CATAR-22 CATAR-23 CATAR-25 "
     "CATAR-26 CATAR-27 CATAR-28 CATAR-29 CATAR-30 CATAR-35 CATAR-43 CONST-1 DIGEST-2 DIGEST-3",
     FULL_OUTPUTS, ""),
    ("all-records-subpaths", all_records_archive, "CATAR-45 DIGEST-3",
     [("list", "acldir", []), ("mtree", "acldir/inner", []), ("digest", "acldir", []), ("digest", "acl.txt", []),
      ("list", "fatdir", []), ("mtree", "link", [])], ""),
    ("all-records-masks", all_records_archive, "CATAR-52",
     [("mtree", None, ["--without=user-names"]), ("mtree", None, ["--with=unix"]),
      ("mtree", None, ["--without=all"]), ("list", None, ["--with=sec-time", "--with=symlinks"]),
      ("mtree", None, ["--without=chattr", "--without=fat-attrs"])], "casync-options"),
    ("base", base_archive, "CATAR-44", FULL_OUTPUTS, ""),
    ("limits", lambda: _limits_archive(), "CATAR-3 CATAR-20 CATAR-22 CATAR-28 CATAR-35", FULL_OUTPUTS, ""),
    ("quirk-usec-time", lambda: _quirk_archive("usec"), "CATAR-19 CATAR-24", FULL_OUTPUTS, "reads-casync-quirks"),
    ("quirk-digit-names", lambda: _quirk_archive("names"), "CATAR-21 CATAR-24", FULL_OUTPUTS,
     "reads-casync-quirks"),
]


def _limits_archive() -> Node:
    """Records at their size limits."""
    fl = DEF
    f = reg(b"limits\n", uid=1, gid=1, user="u" * 255, group="g" * 255,
            xattrs=[(b"user." + b"n" * 250, b"v" * 65536)])
    return dirn([("l", lnk("t" * 4095)), (b"n" * 255, f)], ff=fl)


# --------------------------------------------------------------------------- chunk vectors


def _prng(seed, size, zero_runs=(), copies=()):
    d = {"seed": seed, "size": size}
    if zero_runs:
        d["zero_runs"] = [list(z) for z in zero_runs]
    if copies:
        d["copies"] = [list(c) for c in copies]
    return {"prng": d}


# (name, input spec, chunk size triple or None, digest, compression, requirements, expect error)
CHUNK_VECTORS = [
    ("empty", {"hex": ""}, None, None, None, "CHUNK-9 INDEX-1 INDEX-3", False),
    ("one-byte", {"hex": "2a"}, None, None, None, "CHUNK-9 INDEX-3", False),
    ("shorter-than-min", _prng(10, 1000), None, None, None, "CHUNK-7 CHUNK-9", False),
    ("exactly-window", _prng(11, 48), [16, 32, 64], None, None, "CHUNK-5", False),
    ("zeros-no-cut-before-max", {"zeros": 1048576}, None, None, None, "CHUNK-5 CHUNK-7 STORE-2", False),
    ("zeros-max-plus-one", {"zeros": 262145}, None, None, None, "CHUNK-7 CHUNK-9", False),
    ("default-sizes", _prng(12, 1200000), None, None, None, "CHUNK-1 CHUNK-3 CHUNK-4 CHUNK-5 CHUNK-6 INDEX-4", False),
    ("small-sizes", _prng(13, 300000, zero_runs=[(1000, 50000)]), [1024, 4096, 16384], None, None,
     "CHUNK-1 CHUNK-4 CHUNK-5 CHUNK-7", False),
    ("tiny-sizes", _prng(14, 6000), [48, 96, 192], None, None, "CHUNK-1 CHUNK-4 CHUNK-5", False),
    ("odd-sizes", _prng(15, 100000), [1000, 3000, 9000], None, None, "CHUNK-1 CHUNK-2 CHUNK-4", False),
    ("min-equals-avg", _prng(16, 50000), [2048, 2048, 8192], None, None, "CHUNK-2 CHUNK-4", False),
    ("fixed-size", _prng(17, 20000), [4096, 4096, 4096], None, None, "CHUNK-8", False),
    ("dedup", _prng(18, 200000, copies=[(0, 100000, 60000)]), [4096, 16384, 65536], None, None,
     "CHUNK-1 CHUNK-6 STORE-1", False),
    ("large-avg", _prng(19, 1500000), [65536, 524288, 1048576], None, None, "CHUNK-1 CHUNK-4", False),
    ("sha256", _prng(20, 300000), [4096, 16384, 65536], "sha256", None, "INDEX-4 INDEX-5 DIGEST-1", False),
    ("sha512-256", _prng(20, 300000), [4096, 16384, 65536], "sha512-256", None, "INDEX-5 DIGEST-1", False),
    ("blake3", _prng(20, 300000), [4096, 16384, 65536], "blake3", None, "INDEX-4 INDEX-5 FLAGS-9 DIGEST-1", False),
    ("compression-xz", _prng(21, 60000), [4096, 16384, 65536], None, "xz", "STORE-3 STORE-5", False),
    ("compression-gzip", _prng(21, 60000), [4096, 16384, 65536], None, "gzip", "STORE-3 STORE-5", False),
    ("max-below-window", _prng(22, 1000), [16, 24, 32], None, None, "CHUNK-5", True),
]


# --------------------------------------------------------------------------- stores and indexes


def zstd_raw_frame(data: bytes) -> bytes:
    """A zstd frame holding ``data`` in raw (stored) blocks: no library-version dependence."""
    out = [b"\x28\xb5\x2f\xfd", b"\x00", bytes([17 << 3])]  # FHD: no FCS; window 2^27
    pieces = [data[i:i + 131072] for i in range(0, len(data), 131072)] or [b""]
    for k, p in enumerate(pieces):
        last = 1 if k == len(pieces) - 1 else 0
        out.append((last | (len(p) << 3)).to_bytes(3, "little") + p)
    return b"".join(out)


def gzip_stored(data: bytes) -> bytes:
    c = zlib.compressobj(0, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def xz_stored(data: bytes) -> bytes:
    """An .xz stream with one block of LZMA2 uncompressed chunks and a CRC32 check."""
    crc = lambda b: zlib.crc32(b).to_bytes(4, "little")  # noqa: E731
    flags = b"\x00\x01"
    head = b"\xfd7zXZ\x00" + flags + crc(flags)
    bh = b"\x00\x21\x01\x00"  # block flags (1 filter), LZMA2, 1 property byte, dictionary 4 KiB
    bh = bytes([(len(bh) + 1 + 3) // 4 * 4 // 4]) + bh
    bh += b"\0" * (-(len(bh)) % 4)
    bh = bytes([len(bh) // 4]) + bh[1:]  # header size byte: (size incl. CRC) / 4 - 1
    bh += crc(bh)
    comp = bytearray()
    for k in range(0, len(data), 65536):
        p = data[k:k + 65536]
        comp += bytes([1 if k == 0 else 2]) + (len(p) - 1).to_bytes(2, "big") + p
    comp += b"\x00"
    block = bh + bytes(comp) + b"\0" * (-len(comp) % 4) + crc(data)
    unpadded = len(bh) + len(comp) + 4
    index = b"\x00" + _varint(1) + _varint(unpadded) + _varint(len(data))
    index += b"\0" * (-len(index) % 4)
    index += crc(index)
    back = (len(index) // 4 - 1).to_bytes(4, "little")
    foot = crc(back + flags) + back + flags + b"YZ"
    return head + block + index + foot


STORE_BLOB = _prng(30, 10000)
STORE_CUTS = [3000, 7000, 10000]
STORE_SIZES = (1024, 4096, 16384)


def index_bytes(flags: int, sizes, items: list[tuple[int, bytes]]) -> bytes:
    out = [fmt.INDEX.pack(48, T.INDEX, flags, *sizes), fmt.HEADER.pack(2**64 - 1, T.TABLE)]
    out += [fmt.TABLE_ITEM.pack(end, cid) for end, cid in items]
    out.append(fmt.TABLE_TAIL.pack(0, 0, 48, 16 + 40 * len(items) + 40, T.TABLE_TAIL_MARKER))
    return b"".join(out)


def _store_base():
    blob = V.make_bytes(STORE_BLOB)
    items, chunks, start = [], [], 0
    for end in STORE_CUTS:
        data = blob[start:end]
        cid = V.chunk_digest("sha512-256", data)
        items.append((end, cid))
        chunks.append((cid, data))
        start = end
    return blob, items, chunks


def _store_files(chunks, how=("zstd", "zstd", "zstd")) -> dict[str, bytes]:
    files = {}
    for (cid, data), h in zip(chunks, how):
        hx = cid.hex()
        if h == "plain":
            files[f"store/{hx[:4]}/{hx}"] = data
            continue
        enc = {"zstd": zstd_raw_frame, "gzip": gzip_stored, "xz": xz_stored}[h](data)
        files[f"store/{hx[:4]}/{hx}.cacnk"] = enc
    return files


BLOB_FLAGS = F.EXCLUDE_NODUMP | F.EXCLUDE_FILE | F.SHA512_256

# (name, requirements, index edit (flags, sizes, items) -> bytes, needs)
BAD_INDEXES = [
    ("index-too-short", "INDEX-7", lambda f, s, it: index_bytes(f, s, it)[:40], ""),
    ("index-wrong-type", "INDEX-1 INDEX-7", lambda f, s, it: _patch(index_bytes(f, s, it), 8, 0x96824D9C7B129FF8), ""),
    ("index-record-size", "INDEX-1 INDEX-7", lambda f, s, it: _patch(index_bytes(f, s, it), 0, 56), ""),
    ("index-unknown-flag", "INDEX-7 FLAGS-1", lambda f, s, it: index_bytes(f | 1 << 40, s, it), ""),
    ("index-flags-not-normalised", "INDEX-7 FLAGS-2",
     lambda f, s, it: index_bytes(f | (F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS), s, it), ""),
    ("index-two-digests", "INDEX-5 INDEX-7", lambda f, s, it: index_bytes(f | F.DIGEST_BLAKE3, s, it), ""),
    ("index-min-zero", "INDEX-7 CHUNK-2", lambda f, s, it: index_bytes(f, (0, s[1], s[2]), it), ""),
    ("index-max-too-big", "INDEX-7 CHUNK-2", lambda f, s, it: index_bytes(f, (s[0], s[1], 2**27 + 1), it), ""),
    ("index-sizes-unordered", "INDEX-7", lambda f, s, it: index_bytes(f, (s[1], s[0], s[2]), it), ""),
    ("index-table-type", "INDEX-1 INDEX-7", lambda f, s, it: _patch(index_bytes(f, s, it), 56, 0xE75B9E112F17417C), ""),
    ("index-table-size", "INDEX-2 INDEX-7", lambda f, s, it: _patch(index_bytes(f, s, it), 48, 16 + 40 * 4), ""),
    ("index-trailing-byte", "INDEX-7", lambda f, s, it: index_bytes(f, s, it) + b"\0", ""),
    ("index-truncated-item", "INDEX-7", lambda f, s, it: index_bytes(f, s, it)[:-60], ""),
    ("index-tail-marker", "INDEX-1 INDEX-7", lambda f, s, it: _patch_tail(index_bytes(f, s, it), 4, 0x4B4F050E5549ECD0), ""),
    ("index-tail-offset", "INDEX-1 INDEX-7", lambda f, s, it: _patch_tail(index_bytes(f, s, it), 2, 64), ""),
    ("index-tail-size", "INDEX-1 INDEX-7", lambda f, s, it: _patch_tail(index_bytes(f, s, it), 3, 16 + 40 * 3), ""),
    ("index-tail-nonzero", "INDEX-1 INDEX-7", lambda f, s, it: _patch_tail(index_bytes(f, s, it), 0, 1), ""),
    ("index-offsets-equal", "INDEX-8", lambda f, s, it: index_bytes(f, s, [it[0], (it[0][0], it[1][1]), it[2]]),
     ""),
    ("index-offsets-decrease", "INDEX-8", lambda f, s, it: index_bytes(f, s, [(8000, it[0][1]), it[1], it[2]]),
     ""),
    ("index-first-offset-zero", "INDEX-8", lambda f, s, it: index_bytes(f, s, [(0, it[0][1])] + it), ""),
    ("index-chunk-over-max", "INDEX-8", lambda f, s, it: index_bytes(f, (1024, 2048, 3500), it), ""),
]


def _patch(data: bytes, off: int, value: int) -> bytes:
    return data[:off] + struct.pack("<Q", value) + data[off + 8:]


def _patch_tail(data: bytes, field: int, value: int) -> bytes:
    return _patch(data, len(data) - 40 + 8 * field, value)


# (name, requirements, store edits: chunks -> files, needs)
BAD_STORES = [
    ("chunk-wrong-content", "STORE-8", lambda ch: _store_files([(ch[0][0], ch[0][1][::-1])] + ch[1:]), ""),
    ("chunk-missing", "STORE-2 STORE-8", lambda ch: _store_files(ch[1:], ("zstd", "zstd")), ""),
    ("chunk-bad-magic", "STORE-6", lambda ch: _edit_file(_store_files(ch), 0, lambda b: b"\x00" + b[1:]), ""),
    ("chunk-truncated", "STORE-6", lambda ch: _edit_file(_store_files(ch), 1, lambda b: b[:-10]), ""),
    ("chunk-trailing-data", "STORE-6", lambda ch: _edit_file(_store_files(ch), 1, lambda b: b + b"\0" * 8),
     ""),
    ("chunk-too-long", "STORE-8", lambda ch: _store_files([(ch[0][0], ch[0][1] + b"x")] + ch[1:]), ""),
]


def _edit_file(files: dict, k: int, fn) -> dict:
    key = sorted(files)[k]
    files = dict(files)
    files[key] = fn(files[key])
    return files


# --------------------------------------------------------------------------- the generator


class _Writer:
    def __init__(self, out: Path):
        self.out = out
        self.count = 0

    def vector(self, kind: str, name: str, data: dict, files: dict[str, bytes]) -> None:
        vid = f"{kind}/{name}"
        d = self.out / kind / name
        d.mkdir(parents=True)
        data = {"id": vid, "kind": kind, **data}
        data["covers"] = sorted(set(data.get("covers", [])), key=_req_key)
        data["requires"] = sorted(set(data.get("requires", [])))
        for rel, content in sorted(files.items()):
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
        (d / V.VECTOR_FILE).write_bytes(V.canonical_json(data))
        self.count += 1

    def manifest(self) -> None:
        files = {}
        for p in sorted(self.out.rglob("*")):
            rel = p.relative_to(self.out).as_posix()
            if p.is_file() and rel != V.MANIFEST and rel.split("/")[0] not in V.UNMANAGED:
                files[rel] = V._sha256_file(p)
        (self.out / V.MANIFEST).write_bytes(V.canonical_json({
            "files": files, "format": 1, "generator": "pycatar vectors generate --out DIR"}))


def _req_key(r: str):
    area, _, num = r.rpartition("-")
    return (area, int(num)) if num.isdigit() else (r, 0)


def _ok(what: str, r: V.Run) -> V.Run:
    if r.rc != 0 or r.crashed:
        raise RuntimeError(f"generator: pycatar failed to {what}: {r.why()}")
    return r


def _outputs(ad: V.Adapter, path: str, outputs, store: str | None = None) -> tuple[list, dict]:
    listed, files = [], {}
    for k, (verb, sub, opts) in enumerate(outputs):
        r = _ok(f"{verb} {path}", ad.show(verb, path, subpath=sub, options=opts, store=store))
        fname = f"expect/{k:02d}-{verb}.txt"
        files[fname] = r.stdout
        o = {"verb": verb, "file": fname}
        if sub:
            o["path"] = sub
        if opts:
            o["options"] = list(opts)
        listed.append(o)
    return listed, files


def _covers(s: str) -> list[str]:
    return s.split()


def _needs(s: str) -> list[str]:
    return s.split() if s else []


def gen_trees(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    for name, tname, options, covers, flag in TREE_VECTORS:
        tree = TREES[tname]()
        work = tempfile.mkdtemp(dir=tmp)
        try:
            root = V.materialise_tree(tree, os.path.join(work, "tree"))
            out = os.path.join(work, "out.catar")
            r = _ok(f"make {name}", ad.make_catar(root, out, options))
            archive = Path(out).read_bytes()
            requires = ["casync-options"] if options else []
            if flag == "blake3":
                requires.append("blake3")
            files = {"expect/archive.catar": archive}
            wanted = FULL_OUTPUTS + [("mtree", None, [o]) for o in options if o.startswith("--digest=")]
            outputs, ofiles = ([], {}) if flag == "quirk" else _outputs(ad, out, wanted)
            files.update(ofiles)
            w.vector("tree", name, {
                "description": f"the {tname} tree made with {' '.join(options) or 'the default options'}",
                "covers": _covers(covers) + ["CATAR-44", "DIGEST-2"] + ([] if flag == "quirk" else ["DIGEST-3"]),
                "requires": requires, "tree": tree, "options": options,
                "environment": _environment(tree, options),
                "expect": {"archive": "expect/archive.catar", "make_output": r.stdout.decode(), "outputs": outputs},
            }, files)
            ex_requires = requires + (["reads-casync-quirks"] if flag == "quirk" else []) + (
                ["extracts-long-names"] if tname == "longnames" else [])
            w.vector("extract", name, {
                "description": f"extracting the archive of tree/{name}, which must archive again to the same bytes",
                "covers": EXTRACT_COVERS.get(tname, []) + ["EXTRACT-1", "EXTRACT-2", "EXTRACT-10", "EXTRACT-14"]
                + (["CATAR-24"] if flag == "quirk" else []),
                "requires": ex_requires, "archive_of": f"tree/{name}", "options": options,
                "environment": _environment(tree, options)}, {})
            if flag == "quirk":
                # casync writes these but cannot read them back: reading them is a vector of its own
                outputs, ofiles = _outputs(ad, out, FULL_OUTPUTS)
                w.vector("decode", f"tree-{name}", {
                    "description": f"reading the archive of tree/{name} (casync 2 writes it but rejects it)",
                    "covers": ["CATAR-24"], "requires": ["reads-casync-quirks"], "input": "archive.catar",
                    "expect": {"outputs": outputs}}, {"archive.catar": archive, **ofiles})
        finally:
            V.remove_tree(work)


CAIDX_VECTORS = [
    ("basic-small-chunks", "basic", [], [1024, 4096, 16384], None, None, "INDEX-1 INDEX-3 INDEX-4 INDEX-6 CHUNK-1"),
    ("basic-default", "basic", [], None, None, None, "INDEX-4 INDEX-6"),
    ("bigfile-unix", "bigfile", ["--with=unix"], [2048, 8192, 32768], None, None, "INDEX-4 CHUNK-1"),
    ("basic-sha256", "basic", [], [1024, 4096, 16384], "sha256", None, "INDEX-4 INDEX-5 DIGEST-1 DIGEST-2"),
    ("basic-blake3", "basic", [], [1024, 4096, 16384], "blake3", None, "INDEX-4 INDEX-5 FLAGS-9 DIGEST-2"),
    ("special-gzip", "special", [], [64, 256, 1024], None, "gzip", "STORE-3 STORE-5"),
]


def gen_caidx(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    for name, tname, options, sizes, digest, comp, covers in CAIDX_VECTORS:
        tree = TREES[tname]()
        work = tempfile.mkdtemp(dir=tmp)
        try:
            root = V.materialise_tree(tree, os.path.join(work, "tree"))
            out, store = os.path.join(work, "out.caidx"), os.path.join(work, "store")
            p = V.IndexParams(tuple(sizes) if sizes else None, digest, comp)
            r = _ok(f"make {name}", ad.make_archive_index(root, out, store, options, p))
            idx = Path(out).read_bytes()
            _f, _s, chunks = V.parse_index(idx)
            catar_path = os.path.join(work, "stream.catar")
            full_opts = options + ([f"--digest={digest}"] if digest else [])
            _ok("make the archive stream", ad.make_catar(root, catar_path, full_opts))
            stream = Path(catar_path).read_bytes()
            V.check_store(store, stream, chunks, digest or "sha512-256", comp or "zstd")
            outputs, ofiles = _outputs(ad, out, [("list", None, []), ("digest", None, [])], store)
            requires = (["casync-options"] if options else []) + (["blake3"] if digest == "blake3" else [])
            data = {"description": f"the {tname} tree as a chunked archive", "covers": _covers(covers) + ["STORE-2"],
                    "requires": requires, "tree": tree, "options": options,
                    "environment": _environment(tree, options),
                    "expect": {"index": "expect/index.caidx", "archive": "expect/archive.catar",
                               "make_output": r.stdout.decode(), "chunks": [list(c) for c in chunks],
                               "outputs": outputs}}
            for k, v in (("chunk_size", sizes), ("digest", digest), ("compression", comp)):
                if v:
                    data[k] = v
            w.vector("caidx", name, data, {"expect/index.caidx": idx, "expect/archive.catar": stream, **ofiles})
        finally:
            V.remove_tree(work)


def gen_chunks(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    for name, spec, sizes, digest, comp, covers, error in CHUNK_VECTORS:
        work = tempfile.mkdtemp(dir=tmp)
        try:
            blob = os.path.join(work, "blob")
            data = V.make_bytes(spec)
            Path(blob).write_bytes(data)
            out, store = os.path.join(work, "out.caibx"), os.path.join(work, "store")
            p = V.IndexParams(tuple(sizes) if sizes else None, digest, comp)
            r = ad.make_blob_index(blob, out, store, [], p)
            vec = {"description": f"chunking {len(data)} bytes", "covers": _covers(covers),
                   "requires": ["blake3"] if digest == "blake3" else [], "input": spec}
            for k, v in (("chunk_size", sizes), ("digest", digest), ("compression", comp)):
                if v:
                    vec[k] = v
            if error:
                if r.rc == 0 or r.crashed:
                    raise RuntimeError(f"generator: pycatar accepted the chunk sizes of {name}")
                vec["expect"] = {"error": True}
                w.vector("chunk", name, vec, {})
                continue
            _ok(f"make {name}", r)
            idx = Path(out).read_bytes()
            _f, _s, chunks = V.parse_index(idx)
            V.check_store(store, data, chunks, digest or "sha512-256", comp or "zstd")
            outputs, ofiles = _outputs(ad, out, [("digest", None, [])], store)
            vec["covers"] += ["INDEX-1", "INDEX-2", "INDEX-3", "STORE-2", "STORE-12", "DIGEST-1", "CONST-1"]
            vec["expect"] = {"index": "expect/index.caibx", "make_output": r.stdout.decode(),
                             "chunks": [list(c) for c in chunks], "outputs": outputs}
            w.vector("chunk", name, vec, {"expect/index.caibx": idx, **ofiles})
        finally:
            V.remove_tree(work)


#: CATAR-53: why each malformed input must be refused, so that a rejection for another reason (a usage
#: error, a missing file) does not pass: (the errno casync 2 reports, None where casync lacks the check;
#: a regular expression, matched case-insensitively, that the one-line error of an implementation
#: describing its errors (pycatar) must match).  The expressions name the rule the vector breaks.
REJECT_REASONS = {
    "acl-bad-permission": ("EBADMSG", r"ACL_USER .*permission"),
    "acl-default-on-file": ("EBADMSG", r"default ACL on a file that is not a directory"),
    "acl-default-user-unset-mask": ("EBADMSG", r"named default ACL entries without a default ACL mask"),
    "acl-default-user-without-default": ("EBADMSG", r"named default ACL entries without a default ACL"),
    "acl-group-obj-size": ("EBADMSG", r"ACL_GROUP_OBJ record has size 32"),
    "acl-unsorted": ("EBADMSG", r"ACL_USER records are not strictly ordered"),
    "acl-user-without-group-obj": ("EBADMSG", r"named ACL entries without ACL_GROUP_OBJ"),
    "acl-without-flag": ("EBADMSG", r"ACL_GROUP_OBJ record without the acl feature"),
    "caidx-bad-stream": ("EBADMSG", r"GOODBYE .*tail marker"),
    "chunk-bad-magic": ("EBADMSG", r"chunk [0-9a-f]{64} .*(bad magic|unknown compression)"),
    "chunk-missing": ("ENOENT", r"chunk [0-9a-f]{64} .*not found"),
    "chunk-too-long": ("EBADMSG", r"chunk [0-9a-f]{64} .*corrupt"),
    "chunk-trailing-data": ("EBADMSG", r"chunk [0-9a-f]{64} .*trailing data"),
    "chunk-truncated": ("EPIPE", r"chunk [0-9a-f]{64} .*truncated"),
    "chunk-wrong-content": ("EBADMSG", r"chunk [0-9a-f]{64} .*does not match its id"),
    "depth-65": ("EFBIG", r"nests deeper than 63 directories"),
    "device-major-4096": ("EBADMSG", r"DEVICE record has invalid numbers 4096:0"),
    "device-minor-2-20": ("EBADMSG", r"DEVICE record has invalid numbers 0:1048576"),
    "device-record-for-fifo": ("EBADMSG", r"DEVICE record for a file of another type"),
    "device-size-40": ("EBADMSG", r"DEVICE record has size 40"),
    "device-without-device": ("EBADMSG", r"device node without DEVICE record"),
    "device-without-flag": ("EBADMSG", r"file type not enabled by the feature flags"),
    "empty-stream": (None, r"archive is empty"),
    "entry-flag-not-in-archive": ("EBADMSG", r"ENTRY flags 0x400000 are not covered by the feature flags"),
    "entry-flags-on-symlink": ("EBADMSG", r"ENTRY flags set for a file that is neither regular file nor directory"),
    "entry-size-72": ("EBADMSG", r"ENTRY record has size 72"),
    "fcaps-on-directory": ("EBADMSG", r"FCAPS record for a file that is not a regular file"),
    "fcaps-without-flag": (None, r"FCAPS record without the fcaps feature"),
    "fifo-without-flag": ("EBADMSG", r"file type not enabled by the feature flags"),
    "file-without-payload": ("EBADMSG", r"expected ENTRY record, found PAYLOAD"),
    "filename-dot": ("EBADMSG", r"FILENAME .*not a single path component: '\.'"),
    "filename-dotdot": ("EBADMSG", r"FILENAME .*not a single path component: '\.\.'"),
    "filename-empty": ("EBADMSG", r"FILENAME record .*invalid size 17"),
    "filename-inner-nul": ("EBADMSG", r"FILENAME .*not a single path component"),
    "filename-slash": ("EBADMSG", r"FILENAME .*not a single path component: 'a/b'"),
    "filename-too-long": (None, r"FILENAME record .*invalid size 273"),
    "filename-without-nul": ("EBADMSG", r"FILENAME .*not NUL-terminated"),
    "flags-all-ones": ("EBADMSG", r"unsupported feature flags 0xffffffffffffffff"),
    "flags-blake3-and-sha512": ("EPROTONOSUPPORT", r"feature flags .* select two digests"),
    "flags-differ": ("EBADMSG", r"ENTRY .*has feature flags 0x[0-9a-f]+, the archive's are"),
    "flags-not-normalised": ("EBADMSG", r"feature flags .* are not normalized"),
    "flags-two-times": ("EBADMSG", r"feature flags .* are not normalized"),
    "flags-unknown-bit": ("EPROTONOSUPPORT", r"unsupported feature flags"),
    "goodbye-extra-item": (None, r"GOODBYE record .*has size 160, expected 136"),
    "goodbye-missing": (None, r"archive truncated"),
    "goodbye-not-a-tree": (None, r"GOODBYE table .*does not match"),
    "goodbye-subdir-tail": ("EBADMSG", r"GOODBYE record .*lacks the tail marker"),
    "goodbye-tail-entry-offset": ("EBADMSG", r"GOODBYE tail .*points to offset"),
    "goodbye-tail-marker": ("EBADMSG", r"GOODBYE record .*lacks the tail marker"),
    "goodbye-tail-size": ("EBADMSG", r"GOODBYE tail .*repeats size"),
    "goodbye-wrong-hash": (None, r"GOODBYE table .*does not match"),
    "goodbye-wrong-offset": (None, r"GOODBYE table .*does not match"),
    "goodbye-wrong-size": (None, r"GOODBYE table .*does not match"),
    "group-before-user": ("EBADMSG", r"USER record out of order or repeated"),
    "group-obj-twice": ("EBADMSG", r"ACL_GROUP_OBJ record out of order or repeated"),
    "header-size-below-16": ("EBADMSG", r"record header has invalid size 8\b"),
    "header-size-max": ("EBADMSG", r"record header has invalid size 18446744073709551615"),
    "index-chunk-over-max": ("EBADMSG", r"chunk of 4000 bytes exceeds chunk_size_max"),
    "index-first-offset-zero": ("EBADMSG", r"end offset 0 not greater"),
    "index-flags-not-normalised": ("EINVAL", r"index feature flags .* not normalized"),
    "index-max-too-big": ("EBADMSG", r"index chunk size 134217729 out of range"),
    "index-min-zero": ("EBADMSG", r"index chunk size 0 out of range"),
    "index-offsets-decrease": ("EBADMSG", r"end offset 7000 not greater than the previous 8000"),
    "index-offsets-equal": ("EBADMSG", r"end offset 3000 not greater than the previous 3000"),
    "index-record-size": ("EBADMSG", r"bad INDEX header size 56"),
    "index-sizes-unordered": ("EBADMSG", r"chunk sizes .* not ordered"),
    "index-table-size": ("EBADMSG", r"bad TABLE header size"),
    "index-table-type": ("EBADMSG", r"bad TABLE type"),
    "index-tail-marker": ("EBADMSG", r"bad table tail marker"),
    "index-tail-nonzero": ("EBADMSG", r"bad table tail: non-zero"),
    "index-tail-offset": ("EBADMSG", r"bad table tail: index offset"),
    "index-tail-size": ("EBADMSG", r"bad table tail: table size"),
    "index-too-short": ("EPIPE", r"index truncated"),
    "index-trailing-byte": ("EBADMSG", r"index truncated or has trailing garbage"),
    "index-truncated-item": ("EPIPE", r"index truncated"),
    "index-two-digests": ("ENOTSUP", r"select both SHA512-256 and BLAKE3"),
    "index-type-in-archive": ("EBADMSG", r"unknown record type 0x96824d9c7b129ff9"),
    "index-unknown-flag": ("ENOTSUP", r"unknown feature flags"),
    "index-wrong-type": ("EBADMSG", r"not an index file"),
    "mode-extra-bits": ("EBADMSG", r"invalid mode .*unknown bits"),
    "mode-unknown-type": ("EBADMSG", r"invalid mode .*unknown file type"),
    "mode-without-permissions": ("EBADMSG", r"permission bits not representable"),
    "mtime-all-ones": ("EBADMSG", r"mtime \(18446744073709551615\) finer than the feature flags allow"),
    "mtime-sec-granularity": ("EBADMSG", r"mtime .*finer than the feature flags allow"),
    "mtime-without-flag": ("EBADMSG", r"mtime .*finer than the feature flags allow"),
    "names-duplicate": (None, r"is duplicate in its directory"),
    "names-unsorted": (None, r"is out of order in its directory"),
    "payload-for-directory": ("EBADMSG", r"PAYLOAD record for a file that is not a regular file"),
    "payload-for-fifo": ("EBADMSG", r"PAYLOAD record for a file that is not a regular file"),
    "payload-for-symlink": ("EBADMSG", r"unexpected PAYLOAD record"),
    "payload-where-filename": ("EBADMSG", r"unexpected PAYLOAD record .*expected FILENAME or GOODBYE"),
    "projid-on-symlink": ("EBADMSG", r"QUOTA_PROJID record for a file that is neither"),
    "projid-without-flag": (None, r"QUOTA_PROJID record without the quota-projid feature"),
    "projid-zero": ("EBADMSG", r"invalid project id 0"),
    "record-beyond-end": (None, r"archive truncated"),
    "root-not-directory": ("EBADMSG", r"top-level entry is not a directory"),
    "second-entry": ("EBADMSG", r"second ENTRY record"),
    "selinux-empty": ("EBADMSG", r"SELINUX label is empty"),
    "selinux-without-flag": ("EBADMSG", r"SELINUX record without the selinux feature"),
    "subvolume-on-file": ("EBADMSG", r"subvolume flag on a non-directory"),
    "symlink-empty": ("EBADMSG", r"SYMLINK target is empty"),
    "symlink-inner-nul": ("EBADMSG", r"SYMLINK target is empty or not a NUL-terminated string"),
    "symlink-mode-not-777": ("EBADMSG", r"symlinks have mode 0777"),
    "symlink-record-for-file": ("EBADMSG", r"SYMLINK record for a file of another type"),
    "symlink-too-long": ("EBADMSG", r"SYMLINK record of size 4113 exceeds the limit"),
    "symlink-without-flag": ("EBADMSG", r"file type not enabled by the feature flags"),
    "symlink-without-target": ("EBADMSG", r"found SYMLINK"),
    "table-type-in-archive": ("EBADMSG", r"unknown record type 0xe75b9e112f17417d"),
    "trailing-archive": (None, r"trailing data after the end of the archive"),
    "trailing-garbage": (None, r"trailing data after the end of the archive"),
    "truncated-in-goodbye": (None, r"archive truncated"),
    "truncated-in-header": (None, r"archive truncated"),
    "truncated-in-payload": (None, r"archive truncated"),
    "uid-16bit-ffff": ("EBADMSG", r"invalid uid 65535"),
    "uid-16bit-too-big": ("EBADMSG", r"invalid uid 65536"),
    "uid-32bit-max": ("EBADMSG", r"invalid uid 4294967295"),
    "uid-without-flag": ("EBADMSG", r"invalid uid 5"),
    "unknown-type": ("EBADMSG", r"unknown record type 0x1234567890abcdef"),
    "user-name-empty": ("EBADMSG", r"USER record holds an invalid name"),
    "user-name-root": ("EBADMSG", r"USER record holds an invalid name"),
    "user-name-space": ("EBADMSG", r"USER record holds an invalid name"),
    "user-name-too-long": ("EBADMSG", r"USER record of size 273 exceeds the limit"),
    "user-twice": ("EBADMSG", r"USER record out of order or repeated"),
    "user-without-flag": ("EBADMSG", r"USER record without the user-names feature"),
    "xattr-after-acl": ("EBADMSG", r"XATTR record out of order"),
    "xattr-duplicate": ("EBADMSG", r"XATTR records are not strictly ordered"),
    "xattr-name-ends-with-dot": ("EBADMSG", r"XATTR name 'user\.' is invalid"),
    "xattr-name-without-dot": ("EBADMSG", r"XATTR name 'user' is invalid"),
    "xattr-on-symlink": ("EBADMSG", r"xattrs or ACLs on a symlink"),
    "xattr-unsorted": ("EBADMSG", r"XATTR records are not strictly ordered"),
    "xattr-without-flag": ("EBADMSG", r"XATTR record without the xattrs feature"),
    "xattr-without-nul": ("EBADMSG", r"XATTR name is not NUL-terminated"),
}


def _reject_expect(name: str, verbs: list[str]) -> dict:
    """The ``expect`` of reject/NAME: the verbs that must fail, and why (REJECT_REASONS)."""
    errno_name, pattern = REJECT_REASONS[name]
    return {"reject": verbs, "error": pattern, **({"errno": errno_name} if errno_name else {})}


def _check_rejected(ad: V.Adapter, vid: str, data: dict, files: dict, tmp: str, want_ok: bool = False) -> None:
    """Generator self-check: pycatar rejects a malformed input (or accepts its valid base)."""
    work = tempfile.mkdtemp(dir=tmp)
    try:
        for rel, content in files.items():
            p = Path(work, "v", rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
        vec = V.Vector(vid, Path(work, "v"), data)
        ctx = V.Context(ad, os.path.join(work, "run"))
        os.mkdir(ctx.work)
        if want_ok:
            name = data["input"]
            path = ctx.copy_in(vec, name, "in/" + name)
            store = ctx.copy_store(vec) if not name.endswith(".catar") else None
            for verb in data["expect"]["reject"]:
                if verb == "extract":
                    tgt = ctx.path("t") if not name.endswith(".caibx") else ctx.path("t.blob")
                    _ok(f"extract the valid base of {vid}", ad.extract(path, tgt, store=store))
                else:
                    _ok(f"{verb} the valid base of {vid}", ad.show(verb, path, store=store))
            return
        try:
            V.run_reject(ctx, vec)
        except V.Failure as e:
            raise RuntimeError(f"generator: {vid}: {e}") from None
    finally:
        V.remove_tree(work)


def gen_rejects(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    # the valid bases first: a malformed vector must differ from something pycatar accepts
    base = {"input": "input.catar", "expect": {"reject": ["list", "extract"]}}
    _check_rejected(ad, "reject/base", base, {"input.catar": build(base_archive())}, tmp, want_ok=True)
    for name, covers, what, make, needs in BAD_ARCHIVES:
        data = {"description": f"an archive with {what}", "covers": _covers(covers) + ["CATAR-53", "EXTRACT-20"],
                "requires": _needs(needs), "input": "input.catar",
                "expect": _reject_expect(name, ["list", "extract"])}
        files = {"input.catar": make()}
        _check_rejected(ad, f"reject/{name}", data, files, tmp)
        w.vector("reject", name, data, files)

    blob, items, chunks = _store_base()
    sfiles = _store_files(chunks)
    good = index_bytes(BLOB_FLAGS, STORE_SIZES, items)
    base = {"input": "input.caibx", "expect": {"reject": ["extract"]}}
    _check_rejected(ad, "reject/index-base", base, {"input.caibx": good, **sfiles}, tmp, want_ok=True)
    for name, covers, edit, needs in BAD_INDEXES:
        data = {"description": f"a blob index: {name.replace('-', ' ')}", "covers": _covers(covers),
                "requires": _needs(needs), "input": "input.caibx", "expect": _reject_expect(name, ["extract"])}
        files = {"input.caibx": edit(BLOB_FLAGS, STORE_SIZES, items), **sfiles}
        _check_rejected(ad, f"reject/{name}", data, files, tmp)
        w.vector("reject", name, data, files)
    for name, covers, edit, needs in BAD_STORES:
        data = {"description": f"a chunk store: {name.replace('-', ' ')}", "covers": _covers(covers),
                "requires": _needs(needs), "input": "input.caibx", "expect": _reject_expect(name, ["extract"])}
        files = {"input.caibx": good, **edit(chunks)}
        _check_rejected(ad, f"reject/{name}", data, files, tmp)
        w.vector("reject", name, data, files)
    # a .caidx whose chunks hold a malformed archive
    bad = build(base_archive())[:-10] + b"\0" * 10
    cid = V.chunk_digest("sha512-256", bad)
    data = {"description": "an archive index whose stream has a broken goodbye tail", "covers": ["CATAR-43",
            "CATAR-53"], "requires": [], "input": "input.caidx",
            "expect": _reject_expect("caidx-bad-stream", ["list", "extract"])}
    files = {"input.caidx": index_bytes(DEF, (64, 1024, 4096), [(len(bad), cid)]),
             **_store_files([(cid, bad)], ("zstd",))}
    _check_rejected(ad, "reject/caidx-bad-stream", data, files, tmp)
    w.vector("reject", "caidx-bad-stream", data, files)


STORE_VECTORS = [
    ("zstd-raw-blocks", ("zstd", "zstd", "zstd"), "STORE-3 STORE-6 STORE-8"),
    ("mixed-compression", ("xz", "gzip", "zstd"), "STORE-3 STORE-6"),
    ("uncompressed-chunks", ("plain", "zstd", "plain"), "STORE-2"),
]


def gen_stores(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    blob, items, chunks = _store_base()
    idx = index_bytes(BLOB_FLAGS, STORE_SIZES, items)
    for name, how, covers in STORE_VECTORS:
        files = {"input.caibx": idx, **_store_files(chunks, how)}
        data = {"description": f"extracting a blob from a prepared store ({', '.join(how)})",
                "covers": _covers(covers) + ["INDEX-3"], "requires": [], "input": "input.caibx",
                "expect": {"blob": STORE_BLOB}}
        work = tempfile.mkdtemp(dir=tmp)
        try:
            for rel, content in files.items():
                Path(work, "v", rel).parent.mkdir(parents=True, exist_ok=True)
                Path(work, "v", rel).write_bytes(content)
            ctx = V.Context(ad, os.path.join(work, "run"))
            os.mkdir(ctx.work)
            try:
                V.run_store(ctx, V.Vector(f"store/{name}", Path(work, "v"), data))
            except V.Failure as e:
                raise RuntimeError(f"generator: store/{name}: {e}") from None
        finally:
            V.remove_tree(work)
        w.vector("store", name, data, files)


def gen_decode(w: _Writer, ad: V.Adapter, tmp: str) -> None:
    for name, make, covers, outputs, needs in DECODE_VECTORS:
        data_bytes = build(make())
        work = tempfile.mkdtemp(dir=tmp)
        try:
            path = os.path.join(work, "archive.catar")
            Path(path).write_bytes(data_bytes)
            listed, ofiles = _outputs(ad, path, outputs)
        finally:
            V.remove_tree(work)
        requires = _needs(needs)
        if any(o.get("options") for o in listed):
            requires.append("casync-options")
        w.vector("decode", name, {"description": f"reading the synthetic archive {name}",
                                  "covers": _covers(covers), "requires": requires, "input": "archive.catar",
                                  "expect": {"outputs": listed}}, {"archive.catar": data_bytes, **ofiles})


def generate(out: str | os.PathLike, entry, *, tmpdir: str | None = None) -> int:
    """(Re)writes every vector below ``out`` (all but README.md), then MANIFEST.json; the outputs are
    those of pycatar's command, run in this process through its entry point ``entry``."""
    if os.geteuid() != 0:
        raise V.UsageError("generating the vectors needs root (their trees have owners and device nodes)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.name in V.UNMANAGED:
            continue
        V.remove_tree(str(p))
    w = _Writer(out)
    ad = V.PycatarAdapter(entry)
    tmp = tempfile.mkdtemp(prefix="pycatar-gen-", dir=tmpdir)
    old_umask = os.umask(0o022)
    try:
        gen_trees(w, ad, tmp)
        gen_caidx(w, ad, tmp)
        gen_chunks(w, ad, tmp)
        gen_decode(w, ad, tmp)
        gen_stores(w, ad, tmp)
        gen_rejects(w, ad, tmp)
    finally:
        os.umask(old_umask)
        V.remove_tree(tmp)
    w.manifest()
    return w.count
