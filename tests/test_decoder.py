"""CatarReader against archives made by the real casync, and against hand-crafted malformed ones.

Requirement ids refer to spec/catar.md."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import io
import os
import pwd
import re
import signal
import socket
import stat
import struct

import pytest

from pycatar import decoder, flags, format as fmt
from pycatar.decoder import CatarReader
from pycatar.errors import FormatError, UnsupportedError
from pycatar.flags import F

IS_ROOT = os.geteuid() == 0
MTIME0 = 1_650_000_000_987_654_321

#: flag sets the interop tests cover: id -> casync options
FLAGSETS = {
    "default": [],
    "unix": ["--with=unix"],
    "none": ["--without=all"],
    "unprivileged": ["--without=privileged"],
    "mixed": ["--with=best", "--without=fat", "--without=user-names", "--digest=sha256"],
}
ODD_NAMES = ["sp ace", "ta\tb", "back\\slash", "#hash", "ünïcödé", "new\nline", "x" * 255]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def deadline(seconds: float = 20):
    """Fail instead of hanging (CATAR-53)."""

    def expired(signum, frame):
        raise TimeoutError("the reader did not finish in time")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class NonSeekable(io.RawIOBase):
    """A pipe-like reader: no seeking, short reads."""

    def __init__(self, data: bytes, chunk: int = 7000):
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self):
        return True

    def seekable(self):
        return False

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self._data) - self._pos
        n = min(n, self._chunk)
        out = bytes(self._data[self._pos:self._pos + n])
        self._pos += len(out)
        return out


class Viewing(io.RawIOBase):
    """A seekable stream offering ``readview`` as blob.IndexStream does, in tiny views of varying size
    (1 to 4096 bytes), so that records and payloads span many of them; plain ``read`` is refused."""

    def __init__(self, data: bytes, sizes=(1, 5, 13, 4096, 2, 700)):
        self._data = memoryview(data).toreadonly()
        self._pos = 0
        self._sizes = sizes
        self._i = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, pos, whence=0):
        self._pos = pos if whence == 0 else len(self._data) + pos if whence == 2 else self._pos + pos
        return self._pos

    def readview(self, n):
        self._i += 1
        k = min(n, self._sizes[self._i % len(self._sizes)])
        out = self._data[self._pos:self._pos + k]
        self._pos += len(out)
        return out

    def read(self, n=-1):
        raise AssertionError("a stream with readview is read through it")


class Counting:
    """A seekable file wrapper that records every byte range read."""

    def __init__(self, f):
        self._f = f
        self.ranges: list[tuple[int, int]] = []
        self.seeks = 0

    def seekable(self):
        return True

    def tell(self):
        return self._f.tell()

    def seek(self, pos, whence=0):
        self.seeks += 1
        return self._f.seek(pos, whence)

    def read(self, n=-1):
        start = self._f.tell()
        data = self._f.read(n)
        self.ranges.append((start, start + len(data)))
        return data

    @property
    def total(self):
        return sum(b - a for a, b in self.ranges)

    def overlap(self, lo, hi):
        return sum(max(0, min(b, hi) - max(a, lo)) for a, b in self.ranges)


def read_all(data_or_file, *, seekable=True, consume=True, **kw):
    """Iterate over a whole archive; returns [(entry, payload sha256 or None)]."""
    if isinstance(data_or_file, (bytes, bytearray)):
        f = io.BytesIO(data_or_file) if seekable else NonSeekable(bytes(data_or_file))
    else:
        f = data_or_file
    r = CatarReader(f, **kw)
    out = []
    for e in r:
        digest = None
        if e.isreg() and consume:
            h = hashlib.sha256()
            for piece in r.read_payload():
                assert len(piece) <= decoder.PAYLOAD_PIECE
                h.update(piece)
            digest = h.hexdigest()
        out.append((e, digest))
    return out


def assert_format_error(data: bytes, match: str | None = None, **kw):
    for seekable in (True, False):
        with deadline():
            with pytest.raises(FormatError) as ei:
                read_all(data, seekable=seekable, **kw)
        msg = str(ei.value)
        assert msg and "\n" not in msg, msg
        if match:
            assert re.search(match, msg), msg
    return msg


# --------------------------------------------------------------------------- a catar writer for crafted input

T = fmt.RecordType
F0 = int(F.EXCLUDE_NODUMP | F.EXCLUDE_FILE | F.SHA512_256)  # what `casync make --without=all` stores


def rec(rtype: int, body: bytes = b"") -> bytes:
    return fmt.HEADER.pack(fmt.HEADER_SIZE + len(body), int(rtype)) + body


def entry_rec(mode: int, ff: int = F0, eflags: int = 0, uid: int = 0, gid: int = 0, mtime: int = 0) -> bytes:
    return fmt.ENTRY.pack(fmt.ENTRY_SIZE, T.ENTRY, ff, mode, eflags, uid, gid, mtime)


def ref_bst(items: list) -> list:
    """camakebst's layout, written out independently of decoder.bst_layout."""
    out = [None] * len(items)

    def place(lo, n, e, i):
        if n == 0:
            return
        p = 1 << (e - 1)
        k = (2 * p - 2) // 2 if n >= p - 1 + p // 2 else (2 * p - 2) // 2 - (p - 1 + p // 2 - n)
        out[i] = items[lo + k]
        place(lo, k, e - 1, 2 * i + 1)
        place(lo + k + 1, n - k - 1, e - 1, 2 * i + 2)

    if items:
        place(0, len(items), len(items).bit_length(), 0)
    return out



def build(children, *, ff: int = F0, root_extra: bytes = b"", root_mode: int = 0o40777, sort: bool = True,
          hasher=None, mangle_goodbye=None) -> bytes:
    """A catar stream.  ``children``: [(name, spec)]; spec is ("file", data[, extra records]),
    ("dir", children[, extra records]) or ("raw", records of the whole entry)."""
    out = bytearray()
    h = hasher or decoder.name_hash

    def put_dir(kids, extra, mode):
        start = len(out)
        out.extend(entry_rec(mode, ff) + extra)
        items = []
        for name, spec in (sorted(kids) if sort else kids):
            s = len(out)
            out.extend(rec(T.FILENAME, name + b"\0"))
            put(spec)
            items.append((h(name), s, len(out)))
        g = len(out)
        lay = [(g - s, e - s, hh) for hh, s, e in ref_bst(sorted(items))]
        size = fmt.HEADER_SIZE + fmt.GOODBYE_ITEM_SIZE * (len(items) + 1)
        tail = [g - start, size, int(T.GOODBYE_TAIL_MARKER)]
        if mangle_goodbye and start == 0:
            lay, tail, size = mangle_goodbye(lay, tail, size)
        out.extend(fmt.HEADER.pack(size, T.GOODBYE))
        out.extend(b"".join(fmt.GOODBYE_ITEM.pack(*it) for it in lay))
        out.extend(fmt.GOODBYE_TAIL.pack(*tail))

    def put(spec):
        kind = spec[0]
        if kind == "file":
            out.extend(entry_rec(0o100666, ff) + (spec[2] if len(spec) > 2 else b"") + rec(T.PAYLOAD, spec[1]))
        elif kind == "dir":
            put_dir(spec[1], spec[2] if len(spec) > 2 else b"", 0o40777)
        else:
            out.extend(spec[1])

    put_dir(children, root_extra, root_mode)
    return bytes(out)


SIMPLE = [(b"a", ("file", b"hello")), (b"d", ("dir", [(b"x", ("file", b""))])), (b"z", ("file", b"zz"))]


# --------------------------------------------------------------------------- trees and archives


def make_odd_tree(root: str) -> str:
    """Every entry type this machine lets us create, odd names, xattrs, owners, a deep path next to a
    big file."""
    os.makedirs(root)
    p = lambda *a: os.path.join(root, *a)
    with open(p("file.txt"), "wb") as f:
        f.write(b"hello\n" * 1000)
    open(p("empty"), "wb").close()
    with open(p("sparse"), "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"middle")
    with open(p("big.img"), "wb") as f:  # the big sibling of "deep": lookups must not read it
        f.truncate(6 << 20)
        f.write(b"start")
    with open(p("random.bin"), "wb") as f:
        f.write(os.urandom((1 << 20) + 12345))
    os.makedirs(p("deep", "a", "b", "c", "d"))
    with open(p("deep", "a", "b", "c", "d", "target.txt"), "w") as f:
        f.write("found\n")
    os.makedirs(p("dir", "sub"))
    for i, name in enumerate(ODD_NAMES):
        with open(p("dir", name), "w") as f:
            f.write(f"odd {i}\n")
    with open(p("dir", "sub", "f"), "w") as f:
        f.write("f\n")
    os.makedirs(p("many"))
    for i in range(40):
        open(p("many", f"n{i:02d}"), "w").close()
    os.symlink("file.txt", p("link"))
    os.symlink("does/not/exist", p("dir", "dangling"))
    os.mkfifo(p("fifo"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(p("dir", "sock"))
    s.close()
    if IS_ROOT:
        os.mknod(p("blk"), 0o640 | stat.S_IFBLK, os.makedev(8, 1))
        os.mknod(p("chr"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(p("dir", "sub"), 1000, 1000)
        os.chown(p("empty"), 12345, 54321)
        os.lchown(p("link"), 1, 1)
    os.setxattr(p("file.txt"), "user.comment", b"a comment")
    os.setxattr(p("file.txt"), "user.empty", b"")
    os.setxattr(p("file.txt"), "user.bin", b"\x00\x01\t\xff")
    os.setxattr(p("dir"), "user.on-dir", b"d")
    os.chmod(p("file.txt"), 0o640)
    os.chmod(p("dir", "sub"), 0o2750)
    os.chmod(p("random.bin"), 0o4755)
    os.chmod(p("many"), 0o1777)
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    paths.sort(key=lambda x: -x.count(os.sep))
    for i, path in enumerate(paths + [root]):
        t = MTIME0 + i * 1_000_333_777
        os.utime(path, ns=(t, t), follow_symlinks=False)
    return root


@pytest.fixture(scope="session")
def odd_tree(tmp_path_factory):
    return make_odd_tree(str(tmp_path_factory.mktemp("dec") / "tree"))


@pytest.fixture(scope="session")
def odd_archives(odd_tree, run_casync, tmp_path_factory):
    d = tmp_path_factory.mktemp("decar")
    out = {}
    for name, opts in FLAGSETS.items():
        path = str(d / f"{name}.catar")
        run_casync("make", *opts, path, odd_tree)
        out[name] = path
    return out


def _walk_tree(root):
    yield "", os.lstat(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            yield os.path.relpath(full, root), os.lstat(full)


def expected_entries(root, ff):
    """What an archive with flags ``ff`` holds about each file of the tree, from lstat (FLAGS-5..8)."""
    allowed = {stat.S_IFREG: 0, stat.S_IFDIR: 0, stat.S_IFLNK: F.WITH_SYMLINKS,
               stat.S_IFBLK: F.WITH_DEVICE_NODES, stat.S_IFCHR: F.WITH_DEVICE_NODES,
               stat.S_IFIFO: F.WITH_FIFOS, stat.S_IFSOCK: F.WITH_SOCKETS}
    gran = flags.time_granularity_ns(ff)
    out = {}
    for rel, s in _walk_tree(root):
        t = stat.S_IFMT(s.st_mode)
        if allowed[t] and not ff & allowed[t]:
            continue
        isdir = t == stat.S_IFDIR
        if t == stat.S_IFLNK:
            mode = t | 0o777
        elif ff & (F.WITH_PERMISSIONS | F.WITH_ACL):
            mode = s.st_mode & 0o177777
        elif ff & F.WITH_READ_ONLY:
            mode = t | ((0o777 if isdir else 0o666) if s.st_mode & 0o222 else (0o555 if isdir else 0o444))
        else:
            mode = t | (0o777 if isdir else 0o666)
        ids = ff & (F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS)
        e = dict(mode=mode, uid=s.st_uid if ids else 0, gid=s.st_gid if ids else 0,
                 mtime=0 if gran is None else s.st_mtime_ns // gran * gran)
        if ff & F.WITH_USER_NAMES:
            for key, ident, db in (("user", s.st_uid, pwd.getpwuid), ("group", s.st_gid, grp.getgrgid)):
                try:
                    name = db(ident)[0] if ident else None
                except KeyError:
                    name = None if ids else str(ident)
                e[key] = name
        else:
            e["user"] = e["group"] = None
        full = os.path.join(root, rel)
        if t == stat.S_IFREG:
            e["size"] = s.st_size
            with open(full, "rb") as f:
                e["sha"] = hashlib.sha256(f.read()).hexdigest()
        if t == stat.S_IFLNK:
            e["target"] = os.readlink(full)
        if t in (stat.S_IFBLK, stat.S_IFCHR):
            e["rdev"] = (os.major(s.st_rdev), os.minor(s.st_rdev))
        xattrs = []
        if ff & F.WITH_XATTRS and t != stat.S_IFLNK:
            for n in os.listxattr(full, follow_symlinks=False):
                if n.startswith(("user.", "trusted.")):
                    xattrs.append((os.fsencode(n), os.getxattr(full, n, follow_symlinks=False)))
        e["xattrs"] = sorted(xattrs)
        out["" if rel == "." else rel] = e
    return out


def flagset_flags(opts):
    w = [o.split("=", 1)[1] for o in opts if o.startswith("--with=")]
    wo = [o.split("=", 1)[1] for o in opts if o.startswith("--without=")]
    dg = [o.split("=", 1)[1] for o in opts if o.startswith("--digest=")]
    return flags.from_options(w, wo, digest=dg[0] if dg else "sha512-256")


# --------------------------------------------------------------------------- casync archives


@pytest.mark.parametrize("flagset", list(FLAGSETS))
def test_iteration_matches_tree(flagset, odd_tree, odd_archives):
    """Every file of the tree comes out once, in strcmp order, with the metadata the flags keep
    (CATAR-10..CATAR-19, CATAR-22, CATAR-28..CATAR-30, CATAR-36)."""
    with open(odd_archives[flagset], "rb") as f, deadline():
        got = read_all(f)
        r_flags = got[0][0].feature_flags
    assert r_flags == flagset_flags(FLAGSETS[flagset])
    want = expected_entries(odd_tree, r_flags)
    paths = [e.path for e, _ in got]
    assert paths[0] == ""
    assert sorted(paths) == sorted(want)
    # archive order: depth first, siblings by byte order
    assert paths == sorted(paths, key=lambda p: [os.fsencode(c) for c in p.split("/")] if p else [])
    for e, sha in got:
        w = want[e.path]
        assert e.feature_flags == r_flags
        assert (e.mode, e.uid, e.gid, e.mtime, e.user, e.group) == (
            w["mode"], w["uid"], w["gid"], w["mtime"], w["user"], w["group"]), e.path
        assert e.xattrs == w["xattrs"], e.path
        if e.isreg():
            assert (e.size, sha) == (w["size"], w["sha"]), e.path
        if e.issym():
            assert e.target == w["target"]
        if e.isdev():
            assert (e.rdev_major, e.rdev_minor) == w["rdev"]


def test_offsets_point_at_records(odd_archives):
    """Entry.offset is the ENTRY record's offset, payload_offset the first payload byte (CATAR-14,
    CATAR-30); entry_bytes are the entry's records up to the PAYLOAD header."""
    data = open(odd_archives["default"], "rb").read()
    r = CatarReader(io.BytesIO(data))
    for e in r:
        size, rtype = struct.unpack_from("<QQ", data, e.offset)
        assert (size, rtype) == (64, T.ENTRY)
        assert data.startswith(r.entry_bytes, e.offset)
        if e.isreg():
            assert e.payload_offset == e.offset + len(r.entry_bytes)
            body = b"".join(r.read_payload())
            assert data[e.payload_offset:e.payload_offset + e.size] == body


def test_non_seekable_stream(odd_archives):
    """Iteration needs no seeking: a pipe yields the same entries; unread payloads are skipped; random
    access is refused with a clear error."""
    data = open(odd_archives["default"], "rb").read()
    with deadline():
        a = read_all(data)
        b = read_all(data, seekable=False)
        c = read_all(data, seekable=False, consume=False)
    assert [e for e, _ in a] == [e for e, _ in b] == [e for e, _ in c]
    assert [d for _, d in a] == [d for _, d in b]
    r = CatarReader(NonSeekable(data))
    with pytest.raises(UnsupportedError):
        r.lookup("file.txt")


def test_partial_payload_reads(odd_archives):
    """A payload read only in part is skipped when iteration continues (seekable and not)."""
    data = open(odd_archives["default"], "rb").read()
    for f in (io.BytesIO(data), NonSeekable(data)):
        r = CatarReader(f)
        paths = []
        for e in r:
            paths.append(e.path)
            if e.isreg() and e.size > 1 << 20:
                pieces = r.read_payload()
                first = next(pieces)
                assert len(first) <= decoder.PAYLOAD_PIECE
        assert paths == [e.path for e, _ in read_all(data)]


@pytest.mark.parametrize("flagset", list(FLAGSETS))
def test_lookup_finds_every_entry(flagset, odd_archives):
    """lookup() finds every entry through the GOODBYE tables and returns what iteration yields
    (CATAR-40..CATAR-42, CATAR-45)."""
    with open(odd_archives[flagset], "rb") as f:
        entries = [e for e, _ in read_all(f)]
        for e in entries:
            r = CatarReader(f)
            assert r.lookup(e.path) == e
        r = CatarReader(f)
        assert r.lookup("") == entries[0]
        assert r.lookup("/") == entries[0]
        assert r.lookup("nonexistent") is None
        assert r.lookup("file.txt/below-a-file") is None
        assert r.lookup("dir/./sub") is None
        assert r.lookup("dir/../file.txt") is None
        assert r.lookup("/dir//sub/").path == "dir/sub"
        assert r.lookup("many/n39").path == "many/n39"
        assert r.lookup("many/n40") is None


def test_lookup_reads_only_the_way(odd_archives):
    """Looking up a deep path reads the GOODBYE tables and entries on the way only: not the payload
    of the big sibling file (CATAR-45, CATAR-51)."""
    path = odd_archives["default"]
    with open(path, "rb") as f:
        full = CatarReader(f)
        big = full.lookup("big.img")
        target = full.lookup("deep/a/b/c/d/target.txt")
    assert big.size == 6 << 20
    with open(path, "rb") as raw:
        f = Counting(raw)
        r = CatarReader(f)
        e = r.lookup("deep/a/b/c/d/target.txt")
        assert e == target
        assert f.total < 48 * 1024, f.ranges
        assert f.overlap(big.payload_offset + 4096, big.payload_offset + big.size) == 0
        assert len(f.ranges) < 40
        assert b"".join(r.read_payload()) == b""  # lookup does not arm read_payload
    # iterating the subtree of the found entry does not read the big file either
    with open(path, "rb") as raw:
        f = Counting(raw)
        r = CatarReader(f)
        sub = [x.path for x in r.iter_subtree(r.lookup("deep"))]
        assert sub == ["deep", "deep/a", "deep/a/b", "deep/a/b/c", "deep/a/b/c/d", "deep/a/b/c/d/target.txt"]
        assert f.overlap(big.payload_offset + 4096, big.payload_offset + big.size) == 0


@pytest.mark.parametrize("flagset", ["default", "none"])
def test_iter_subtree(flagset, odd_archives):
    """iter_subtree() yields the entry and its descendants exactly as full iteration does, payloads
    included, and verifies the subtree's GOODBYE records (CATAR-43)."""
    data = open(odd_archives[flagset], "rb").read()
    full = read_all(data)
    f = io.BytesIO(data)
    for i, (e, _) in enumerate(full):
        r = CatarReader(f)
        found = r.lookup(e.path)
        got = []
        for x in r.iter_subtree(found):
            got.append((x, hashlib.sha256(b"".join(r.read_payload())).hexdigest() if x.isreg() else None))
        want = [(x, d) for x, d in full[i:] if x.path == e.path or x.path.startswith(e.path + "/") or not e.path]
        assert got == want, e.path


def test_feature_mask_sets_replay_flags(odd_archives):
    """The mask only changes replay_flags, computed as casync does (CATAR-52); entries stay as stored."""
    data = open(odd_archives["default"], "rb").read()
    plain = CatarReader(io.BytesIO(data))
    entries = [e for e in plain]
    archive = plain.feature_flags
    assert plain.replay_flags == flags.normalize(flags.normalize_mask(archive))
    mask = int(flags.WITH_MASK) & ~int(F.WITH_USER_NAMES | F.WITH_16BIT_UIDS)
    masked = CatarReader(io.BytesIO(data), feature_mask=mask)
    assert [e for e in masked] == entries
    assert masked.feature_flags == archive
    assert not masked.replay_flags & F.WITH_USER_NAMES
    assert masked.replay_flags & F.WITH_32BIT_UIDS  # the uid bits come as a pair (normalize_mask)
    assert masked.replay_flags & F.WITH_NSEC_TIME
    only_unix = CatarReader(io.BytesIO(data), feature_mask=int(flags.WITH_UNIX))
    list(only_unix)
    assert not only_unix.replay_flags & (F.WITH_XATTRS | F.WITH_FLAG_NOATIME)
    assert only_unix.replay_flags & F.WITH_NSEC_TIME  # time bits come as a group


def test_usec_archives_casync_cannot_read(tmp_path, run_casync):
    """casync 2 rejects its own usec-time archives (it checks mtime % 10^6); pycatar reads them unless
    strict_casync is asked for (CATAR-19, CATAR-24)."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_text("x")
    os.utime(tree / "f", ns=(MTIME0, MTIME0))
    out = tmp_path / "u.catar"
    run_casync("make", "--with=usec-time", str(out), str(tree))
    assert run_casync("list", str(out), check=False).returncode != 0
    entries = [e for e, _ in read_all(out.read_bytes())]
    assert entries[1].mtime == MTIME0 // 1000 * 1000
    assert_format_error(out.read_bytes(), "mtime", strict_casync=True)


def test_names_only_archives_casync_cannot_read(tmp_path, run_casync):
    """With user-names but no uids casync writes no USER/GROUP for root-owned files and numeric names
    for unknown ids, then refuses to read that (CATAR-24)."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_text("x")
    if IS_ROOT:
        os.chown(tree / "f", 23456, 23457)
    out = tmp_path / "n.catar"
    run_casync("make", "--with=user-names", "--with=symlinks", str(out), str(tree))
    assert run_casync("list", str(out), check=False).returncode != 0
    entries = [e for e, _ in read_all(out.read_bytes())]
    assert entries[0].user is None
    if IS_ROOT:
        assert (entries[1].user, entries[1].group) == ("23456", "23457")
    assert_format_error(out.read_bytes(), strict_casync=True)


# --------------------------------------------------------------------------- the crafted archives are sound


def test_writer_matches_casync(tmp_path, run_casync):
    """The test's own catar writer produces what casync produces (so the malformed variants below
    differ from valid archives only where intended): CATAR-41..CATAR-43 for a 23-entry directory."""
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    kids = []
    for i in range(22):
        name = f"file-{i:02d}-{'x' * (i % 5)}"
        (tree / name).write_bytes(name.encode() * i)
        kids.append((name.encode(), ("file", name.encode() * i)))
    (tree / "d" / "inner").write_bytes(b"inner")
    kids.append((b"d", ("dir", [(b"inner", ("file", b"inner"))])))
    out = tmp_path / "w.catar"
    run_casync("make", "--without=all", str(out), str(tree))
    assert build(kids) == out.read_bytes()
    assert [e.path for e, _ in read_all(build(kids))][:3] == ["", "d", "d/inner"]


def test_hash_collisions_in_lookup(monkeypatch):
    """Several children with the same hash: lookup tries each candidate and compares names; iteration
    accepts any order among equal hashes (CATAR-42, CATAR-43, CATAR-45)."""
    weak = lambda name: len(name)  # every name of one length collides
    monkeypatch.setattr(decoder, "name_hash", weak)
    names = [n.encode() for n in ("aa", "ab", "ba", "bb", "cc", "b", "c", "dddd", "eeee", "ffff", "gggg", "x")]
    kids = [(n, ("file", n * 3)) for n in names] + [(b"sub", ("dir", [(b"aa", ("file", b"deep"))]))]
    data = build(kids, hasher=weak)
    got = read_all(data)
    assert len(got) == len(kids) + 2
    r = CatarReader(io.BytesIO(data))
    for n in names:
        e = r.lookup(n.decode())
        assert e is not None and e.path == n.decode()
        assert e.size == 3 * len(n)
    assert r.lookup("sub/aa").size == 4
    assert r.lookup("zz") is None and r.lookup("zzzz") is None

    def reverse_equal_hash_runs(lay, tail, size):
        # swap the (offset, size) of items sharing a hash: still a valid table
        by_hash = {}
        for i, it in enumerate(lay):
            by_hash.setdefault(it[2], []).append(i)
        lay = list(lay)
        for idx in by_hash.values():
            vals = [lay[i] for i in idx][::-1]
            for i, v in zip(idx, vals):
                lay[i] = v
        return lay, tail, size

    read_all(build(kids, hasher=weak, mangle_goodbye=reverse_equal_hash_runs))


def test_bst_layout_matches_reference():
    """decoder.bst_layout is camakebst's permutation (CATAR-42)."""
    for n in range(0, 70):
        items = list(range(n))
        assert decoder.bst_layout(items) == ref_bst(items)
        lay = decoder.bst_layout(items)
        for i, v in enumerate(lay):  # the search-tree property
            if 2 * i + 1 < n:
                assert lay[2 * i + 1] < v
            if 2 * i + 2 < n:
                assert lay[2 * i + 2] > v


def _text_until_error(pieces) -> tuple[str, str | None]:
    """The text of the pieces and the FormatError that ended them, if any."""
    out = []
    try:
        for piece in pieces:
            out.append(piece)
    except FormatError as e:
        return "".join(out), str(e)
    return "".join(out), None


def _entry_lines(r: CatarReader, top=None):
    """casync's list text made from the entries iteration yields (listing.list_line, one by one)."""
    from pycatar import listing

    for e in (r if top is None else r.iter_subtree(top)):
        yield listing.list_line(e)


@pytest.mark.parametrize("flagset", list(FLAGSETS))
def test_list_text_equals_the_entries_lines(flagset, odd_archives):
    """list_text() -- the lines made by the C parser, no Entry a file -- gives the lines of the entries
    iteration yields: the whole archive (seekable and not) and every subtree."""
    data = open(odd_archives[flagset], "rb").read()
    want = "".join(_entry_lines(CatarReader(io.BytesIO(data))))
    assert want.startswith("drwx") and " .\n" in want and "\\011" in want  # (odd names: escaped)
    assert "".join(CatarReader(io.BytesIO(data)).list_text()) == want
    assert "".join(CatarReader(NonSeekable(data)).list_text()) == want
    for e, _ in read_all(data, consume=False):
        r = CatarReader(io.BytesIO(data))
        top = r.lookup(e.path)
        assert "".join(r.list_text(top)) == "".join(_entry_lines(CatarReader(io.BytesIO(data)), top)), e.path


def test_list_text_of_big_directories_and_odd_bytes():
    """Batches of many children (more than one parse_children call a directory) and names of every byte."""
    odd = [bytes([c]) + b"x" for c in range(1, 256) if c != ord("/")]
    kids = [(b"n%05d" % i, ("file", b"")) for i in range(9000)] + [(b"d", ("dir", [(n, ("file", b"1")) for n in odd]))]
    data = build(kids)
    want = "".join(_entry_lines(CatarReader(io.BytesIO(data))))
    assert len(want.splitlines()) == 9000 + 1 + 1 + len(odd)
    assert "-rw-rw-rw- d/\\043x\n" in want and "-rw-rw-rw- d/\\377x\n" in want
    for f in (io.BytesIO(data), NonSeekable(data, 1000)):
        assert "".join(CatarReader(f).list_text()) == want


def record_offsets(data: bytes) -> list[int]:
    """The offset of every record of an archive (each record's header starts with its size)."""
    offsets, o = [], 0
    while o < len(data):
        offsets.append(o)
        o += struct.unpack_from("<Q", data, o)[0]
    return offsets


def _mixed_tree(tree, name: str):
    """A small tree with one of each kind of entry: directories d/e, a file ``name`` ("hi\\n", with
    an xattr), a symlink l to it and a FIFO p."""
    (tree / "d" / "e").mkdir(parents=True)
    (tree / name).write_text("hi\n")
    os.symlink(name, tree / "l")
    os.mkfifo(tree / "p")
    os.setxattr(tree / name, "user.k", b"v")
    return tree


def _casync_archive(tmp_path, tree, run_casync) -> bytes:
    """casync's .catar of ``tree``."""
    out = tmp_path / "s.catar"
    run_casync("make", str(out), str(tree))
    return out.read_bytes()


def test_list_text_before_errors(tmp_path, run_casync):
    """A truncated or corrupted archive: list_text() gives the lines of the entries before the bad record
    and then the same FormatError as iteration (what casync prints before failing stays printed)."""
    tree = _mixed_tree(tmp_path / "t", "a b")
    for i in range(70):  # more than one batch of entries
        (tree / "d" / f"f{i:02}").write_text("x" * i)
    data = _casync_archive(tmp_path, tree, run_casync)
    offsets = record_offsets(data)
    variants = [data[:cut] for cut in range(0, len(data), 7)]
    for o in offsets:
        for i in (0, 7, 8, 15):
            b = bytearray(data)
            b[o + i] ^= 0x41
            variants.append(bytes(b))
    failed = 0
    for v in variants:
        for seekable in (True, False):
            f = (lambda: io.BytesIO(v)) if seekable else (lambda: NonSeekable(v, 100))
            with deadline():
                want = _text_until_error(_entry_lines(CatarReader(f())))
                got = _text_until_error(CatarReader(f()).list_text())
            assert got == want
            failed += want[1] is not None
    assert failed > len(variants)


# --------------------------------------------------------------------------- malformed input


def test_truncated_everywhere(odd_archives, tmp_path, run_casync):
    """Cutting a casync archive at any offset gives a FormatError naming the truncation, never a
    hang (CATAR-50, CATAR-53); casync itself would spin forever on these."""
    tree = _mixed_tree(tmp_path / "t", "a")
    (tree / "d" / "e" / "f").write_text("xyz")
    data = _casync_archive(tmp_path, tree, run_casync)
    for cut in range(len(data)):
        msg = assert_format_error(data[:cut])
        assert "truncated" in msg or "empty" in msg or "GOODBYE" in msg, (cut, msg)
    # and the big archive at coarse steps, payloads not consumed (skipping must notice too)
    big = open(odd_archives["default"], "rb").read()
    for cut in range(1, len(big), len(big) // 23):
        with deadline():
            with pytest.raises(FormatError):
                read_all(big[:cut], consume=False)
            with pytest.raises(FormatError):
                read_all(big[:cut], seekable=False, consume=False)


def test_header_bytes_flipped(tmp_path, run_casync):
    """Flipping bits in any record header of a casync archive is detected (CATAR-2..CATAR-4, CATAR-43)."""
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "a").write_text("hi\n")
    (tree / "d" / "f").write_text("xyz")
    os.symlink("a", tree / "l")
    os.setxattr(tree / "a", "user.k", b"v")
    out = tmp_path / "s.catar"
    run_casync("make", str(out), str(tree))
    data = out.read_bytes()
    offsets = record_offsets(data)
    assert len(offsets) > 10
    for o in offsets:
        for i in range(16):
            for x in (0x01, 0x80):
                b = bytearray(data)
                b[o + i] ^= x
                with deadline():
                    with pytest.raises(FormatError):
                        read_all(bytes(b))


@pytest.mark.parametrize("name", [b"..", b".", b"", b"a/b", b"/", b"a\0b", b"x" * 256])
def test_bad_file_names(name):
    """A FILENAME must be one path component of at most 255 bytes (CATAR-35)."""
    assert_format_error(build([(name, ("file", b""))], sort=False))


def test_name_without_nul():
    data = bytearray(build([(b"ab", ("file", b""))]))
    i = data.index(b"ab\0")
    data[i + 2] = ord("c")
    assert_format_error(bytes(data), "NUL")


@pytest.mark.parametrize("names", [[b"b", b"a"], [b"a", b"a"], [b"B", b"a", b"A"], [b"\xc3\xa9", b"z"]])
def test_unsorted_or_duplicate_names(names):
    """Children must be in strictly increasing byte order (CATAR-36)."""
    kids = [(n, ("file", b"")) for n in names]
    assert_format_error(build(kids, sort=False), "duplicate|order")


def test_sorted_names_are_byte_order():
    """Byte order, not locale order: 'B' < 'a' < '\\xc3'."""
    got = read_all(build([(n, ("file", b"")) for n in (b"B", b"a", b"\xc3\xa9")], sort=False))
    assert [e.path for e, _ in got] == ["", "B", "a", "\u00e9"]
    assert [e.isreg() for e, _ in got] == [False, True, True, True]


def _mangle(fn):
    return lambda lay, tail, size: fn(list(lay), list(tail), size)


@pytest.mark.parametrize("what, mangle", [
    ("marker", _mangle(lambda lay, tail, size: (lay, tail[:2] + [tail[2] ^ 1], size))),
    ("tail size", _mangle(lambda lay, tail, size: (lay, [tail[0], tail[1] + 24, tail[2]], size))),
    ("entry offset", _mangle(lambda lay, tail, size: (lay, [tail[0] - 1] + tail[1:], size))),
    ("item offset", _mangle(lambda lay, tail, size: ([(lay[0][0] + 1,) + lay[0][1:]] + lay[1:], tail, size))),
    ("item size", _mangle(lambda lay, tail, size: ([(lay[0][0], lay[0][1] - 1, lay[0][2])] + lay[1:], tail, size))),
    ("item hash", _mangle(lambda lay, tail, size: ([lay[0][:2] + (lay[0][2] ^ 4,)] + lay[1:], tail, size))),
    ("not a BST", _mangle(lambda lay, tail, size: (sorted(lay, key=lambda x: x[2]), tail, size))),
    ("item missing", _mangle(lambda lay, tail, size: (lay[:-1], [tail[0], size - 24, tail[2]], size - 24))),
    ("item extra", _mangle(lambda lay, tail, size: (lay + [lay[0]], [tail[0], size + 24, tail[2]], size + 24))),
])
def test_bad_goodbye(what, mangle):
    """Every GOODBYE field is checked against the directory that was read (CATAR-41..CATAR-43)."""
    kids = [(bytes([c]), ("file", bytes([c]))) for c in b"abcdefg"]
    assert_format_error(build(kids, mangle_goodbye=mangle))


def test_unknown_record_type():
    """CATAR-4."""
    assert_format_error(build(SIMPLE, root_extra=rec(0x1234567890ABCDEF, b"\0" * 8)), "unknown record type")
    assert_format_error(build(SIMPLE + [(b"zz", ("raw", entry_rec(0o100666) + rec(T.INDEX, b"") +
                                                       rec(T.PAYLOAD, b"")))]), "unknown record type")


@pytest.mark.parametrize("record", [
    rec(T.USER, b"u" * 300 + b"\0"),
    rec(T.GROUP, b"g" * 257 + b"\0"),
    rec(T.XATTR, b"user.big\0" + b"v" * (70 * 1024)),
    rec(T.SELINUX, b"s" * 5000 + b"\0"),
    rec(T.ACL_GROUP_OBJ, b"\0" * 16),
    rec(T.ACL_DEFAULT, b"\0" * 24),
    rec(T.QUOTA_PROJID, b"\1" + b"\0" * 8),
    rec(T.FCAPS, b"\0" * (64 * 1024 + 1)),
])
def test_oversize_records(record):
    """Record sizes are checked against CATAR-3 before the body is read."""
    ff = int(flags.WITH_BEST | F.SHA512_256 | F.EXCLUDE_NODUMP) & ~int(F.WITH_FLAG_NODUMP)
    assert_format_error(build(SIMPLE, ff=ff, root_extra=record), "exceeds|expected|size")


def test_oversize_symlink_and_filename():
    ff = F0 | int(F.WITH_SYMLINKS)
    lnk = entry_rec(0o120777, ff) + rec(T.SYMLINK, b"t" * 4100 + b"\0")
    assert_format_error(build([(b"l", ("raw", lnk))], ff=ff), "exceeds")
    assert_format_error(build([(b"n" * 256, ("file", b""))]))


def test_record_sizes_invalid():
    """CATAR-2: size below 16, all-ones, and an ENTRY of the wrong size."""
    data = build(SIMPLE)
    i = len(entry_rec(0o40777))
    for bad in (0, 15, 0xFFFFFFFFFFFFFFFF):
        b = bytearray(data)
        struct.pack_into("<Q", b, i, bad)
        assert_format_error(bytes(b))
    bad_entry = fmt.HEADER.pack(72, T.ENTRY) + entry_rec(0o40777)[16:] + b"\0" * 8
    assert_format_error(bad_entry + build(SIMPLE)[64:], "ENTRY record has size")


def test_trailing_garbage():
    """CATAR-44 (casync ignores trailing data; pycatar rejects it)."""
    assert_format_error(build(SIMPLE) + b"\0", "trailing")
    assert_format_error(build(SIMPLE) + build(SIMPLE), "trailing")
    with pytest.raises(FormatError):
        CatarReader(io.BytesIO(build(SIMPLE) + b"junk")).lookup("a")


def test_feature_flags_checked():
    """CATAR-15: normalised, known bits, the same in every ENTRY, one digest."""
    assert_format_error(build(SIMPLE, ff=F0 | int(F.WITH_NSEC_TIME | F.WITH_SEC_TIME)), "not normalized")
    assert_format_error(build(SIMPLE, ff=F0 | (1 << 40)), "unsupported")
    assert_format_error(build(SIMPLE, ff=0xFFFFFFFFFFFFFFFF), "unsupported")
    assert_format_error(build(SIMPLE, ff=F0 | int(F.DIGEST_BLAKE3)), "two digests")
    other = F0 | int(F.WITH_SYMLINKS)
    child = entry_rec(0o100666, other) + rec(T.PAYLOAD, b"")
    assert_format_error(build([(b"a", ("raw", child))]), "feature flags")
    read_all(build(SIMPLE, ff=(F0 | int(F.DIGEST_BLAKE3)) & ~int(F.SHA512_256)))


@pytest.mark.parametrize("mode, ff, why", [
    (0o1100666, F0, "unknown bits"),
    (0o010666, F0, "type not enabled"),  # fifo without fifos
    (0o140666, F0, "type not enabled"),  # socket without sockets
    (0o060666, F0, "type not enabled"),  # block device without device-nodes
    (0o070666, F0 | int(F.WITH_FIFOS), "unknown file type"),
    (0o100644, F0, "permission bits"),  # not representable without permissions
    (0o100444, F0, "permission bits"),
    (0o120755, F0 | int(F.WITH_SYMLINKS), "symlinks have mode 0777"),
])
def test_invalid_modes(mode, ff, why):
    """CATAR-16."""
    body = entry_rec(mode, ff)
    if stat.S_ISREG(mode):
        body += rec(T.PAYLOAD, b"")
    if stat.S_ISLNK(mode):
        body += rec(T.SYMLINK, b"x\0")
    assert_format_error(build([(b"n", ("raw", body))], ff=ff), why)


def test_read_only_modes_accepted():
    ff = F0 | int(F.WITH_READ_ONLY)
    (root, _), (n, digest) = read_all(build([(b"n", ("raw", entry_rec(0o100444, ff) + rec(T.PAYLOAD, b"")))], ff=ff))
    assert n.path == "n" and n.mode == 0o100444 and digest == hashlib.sha256(b"").hexdigest()


def test_entry_fields_checked():
    """CATAR-17..CATAR-19."""
    ff = F0
    assert_format_error(build([(b"n", ("raw", entry_rec(0o100666, ff, uid=5) + rec(T.PAYLOAD, b"")))]), "uid")
    assert_format_error(build([(b"n", ("raw", entry_rec(0o100666, ff, mtime=7) + rec(T.PAYLOAD, b"")))]), "mtime")
    assert_format_error(build([(b"n", ("raw", entry_rec(0o100666, ff, eflags=int(F.WITH_FLAG_NOATIME))
                                           + rec(T.PAYLOAD, b"")))]), "flags")
    u16 = F0 | int(F.WITH_16BIT_UIDS)
    assert_format_error(build([(b"n", ("raw", entry_rec(0o100666, u16, gid=0xFFFF) + rec(T.PAYLOAD, b"")))],
                              ff=u16), "gid")
    sec = F0 | int(F.WITH_SEC_TIME)
    assert_format_error(build([(b"n", ("raw", entry_rec(0o100666, sec, mtime=1_500_000_000) + rec(T.PAYLOAD, b"")))],
                              ff=sec), "mtime")
    sub = F0 | int(F.WITH_SUBVOLUME | F.WITH_FIFOS)
    assert_format_error(build([(b"p", ("raw", entry_rec(0o010666, sub, eflags=int(F.WITH_SUBVOLUME))))], ff=sub),
                        "subvolume")


def test_payload_for_non_regular_files():
    """CATAR-12: a PAYLOAD record (even empty) only for regular files."""
    ff = F0 | int(F.WITH_FIFOS | F.WITH_SYMLINKS)
    assert_format_error(build([(b"p", ("raw", entry_rec(0o010666, ff) + rec(T.PAYLOAD, b"")))], ff=ff), "PAYLOAD")
    assert_format_error(build([(b"p", ("raw", entry_rec(0o010666, ff) + rec(T.PAYLOAD, b"data")))], ff=ff), "PAYLOAD")
    assert_format_error(build(SIMPLE, root_extra=rec(T.PAYLOAD, b"")), "PAYLOAD")
    assert_format_error(build([(b"l", ("raw", entry_rec(0o120777, ff) + rec(T.SYMLINK, b"a\0")
                                       + rec(T.PAYLOAD, b"")))], ff=ff), "FILENAME or GOODBYE")


def test_missing_terminal_records():
    """CATAR-12: regular files need PAYLOAD, symlinks SYMLINK, devices DEVICE; the root is a directory."""
    ff = F0 | int(F.WITH_SYMLINKS | F.WITH_DEVICE_NODES | F.WITH_FIFOS)
    assert_format_error(build([(b"f", ("raw", entry_rec(0o100666, ff)))], ff=ff), "without PAYLOAD")
    assert_format_error(build([(b"l", ("raw", entry_rec(0o120777, ff)))], ff=ff), "without SYMLINK")
    assert_format_error(build([(b"c", ("raw", entry_rec(0o020666, ff)))], ff=ff), "without DEVICE")
    assert_format_error(entry_rec(0o100666) + rec(T.PAYLOAD, b""), "not a directory")
    assert_format_error(build([(b"c", ("raw", entry_rec(0o020666, ff) + rec(T.SYMLINK, b"a\0")))], ff=ff),
                        "another type")
    read_all(build([(b"p", ("raw", entry_rec(0o010666, ff)))], ff=ff))


def test_strings_nul_terminated():
    """CATAR-20, CATAR-25, CATAR-28: strings end in exactly one NUL."""
    ff = F0 | int(F.WITH_SYMLINKS)
    for target in (b"abc", b"a\0b\0", b"\0"):
        assert_format_error(build([(b"l", ("raw", entry_rec(0o120777, ff) + rec(T.SYMLINK, target)))], ff=ff))
    names = F0 | int(F.WITH_USER_NAMES | F.WITH_32BIT_UIDS)
    for name in (b"alice", b"al\0ce\0", b"\0", b"root\0", b"0\0", b"-x\0", b"a.b\0"):
        assert_format_error(build(SIMPLE, ff=names, root_extra=rec(T.USER, name)), "name")
    read_all(build(SIMPLE, ff=names, root_extra=rec(T.USER, b"alice\0") + rec(T.GROUP, b"_g-1\0")))


def test_record_order():
    """CATAR-11: the metadata records come in one order, each (but XATTR/ACL entries) once."""
    ff = int(flags.WITH_BEST | F.SHA512_256 | F.EXCLUDE_NODUMP) & ~int(F.WITH_FLAG_NODUMP)
    user, group = rec(T.USER, b"u\0"), rec(T.GROUP, b"g\0")
    x1, x2 = rec(T.XATTR, b"user.a\0v"), rec(T.XATTR, b"user.b\0w")
    gobj = fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 7)
    acl_u = fmt.ACL_USER.pack(32, T.ACL_USER, 5, 7)
    selinux = rec(T.SELINUX, b"l\0")
    quota = fmt.QUOTA_PROJID.pack(24, T.QUOTA_PROJID, 3)
    ok = user + group + x1 + x2 + acl_u + gobj + selinux + quota
    read_all(build(SIMPLE, ff=ff, root_extra=ok))
    for bad in (group + user, user + user, x2 + x1, x1 + x1, x1 + user, gobj + acl_u, acl_u + x1, selinux + x1,
                quota + selinux, quota + quota, gobj + gobj, entry_rec(0o40777, ff)):
        assert_format_error(build(SIMPLE, ff=ff, root_extra=bad), "order|repeated|second ENTRY|ordered")
    # records need their feature flag
    assert_format_error(build(SIMPLE, root_extra=x1), "without the xattrs feature")
    assert_format_error(build(SIMPLE, root_extra=user), "without the user-names feature")
    assert_format_error(build(SIMPLE, root_extra=quota), "without the quota-projid feature")


def test_acl_rules():
    """CATAR-13, CATAR-23."""
    ff = int(flags.WITH_BEST | F.SHA512_256 | F.EXCLUDE_NODUMP) & ~int(F.WITH_FLAG_NODUMP)
    acl_u = fmt.ACL_USER.pack(32, T.ACL_USER, 5, 7)
    gobj = fmt.ACL_GROUP_OBJ.pack(24, T.ACL_GROUP_OBJ, 7)
    assert_format_error(build(SIMPLE, ff=ff, root_extra=acl_u), "ACL_GROUP_OBJ")
    assert_format_error(build(SIMPLE, ff=ff, root_extra=fmt.ACL_USER.pack(32, T.ACL_USER, 5, 8) + gobj), "permissions")
    dflt = fmt.ACL_DEFAULT.pack(48, T.ACL_DEFAULT, 7, 5, 0, fmt.ACL_PERMISSION_UNSET)
    d_user = fmt.ACL_USER.pack(32, T.ACL_DEFAULT_USER, 5, 7)
    assert_format_error(build(SIMPLE, ff=ff, root_extra=dflt + d_user), "default ACL mask")
    on_file = entry_rec(0o100644, ff) + dflt + rec(T.PAYLOAD, b"")
    assert_format_error(build([(b"f", ("raw", on_file))], ff=ff), "default ACL")
    named = fmt.ACL_USER.pack(32 + 6, T.ACL_USER, 5, 7) + b"alice\0"
    e = read_all(build(SIMPLE, ff=ff, root_extra=acl_u + named + gobj))[0][0]
    assert [(a.id, a.name) for a in e.acl_user] == [(5, None), (5, "alice")]
    assert e.acl_group_obj == 7


def test_payload_beyond_the_stream():
    """CATAR-50: a PAYLOAD header promising more than the stream holds."""
    data = bytearray(build(SIMPLE))
    i = data.index(rec(T.PAYLOAD, b"hello"))
    struct.pack_into("<Q", data, i, 16 + (1 << 40))
    assert_format_error(bytes(data), "truncated|GOODBYE")


def test_depth_limit():
    """CATAR-37: at most 63 levels below the root."""
    def nest(n):
        spec = ("file", b"leaf")
        for _ in range(n):
            spec = ("dir", [(b"d", spec)])
        return [(b"d", spec)]

    entries = read_all(build(nest(62)))
    assert entries[-1][0].path.count("/") == 62  # 63 names
    assert_format_error(build(nest(63)), "deeper")


def test_empty_and_tiny_inputs():
    for data in (b"", b"\0", rec(T.ENTRY)[:15]):
        assert_format_error(data, "empty|truncated")


def test_children_list_a_directory_from_its_goodbye_table(tmp_path, run_casync):
    """CATAR-46: children() gives a directory's children in archive order from the GOODBYE items (as
    iteration finds them), reading no payload; items out of the extent, overlapping, or with the wrong
    hash are rejected."""
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    for name in ("b", "a", "c c", "zz"):
        (tree / name).write_bytes(name.encode() * 50_000)
    (tree / "sub" / "x").write_text("x")
    run_casync("make", "--with=unix", tmp_path / "t.catar", tree)
    data = (tmp_path / "t.catar").read_bytes()
    with open(tmp_path / "t.catar", "rb") as f:
        everything = [(e.path, e.offset) for e in CatarReader(f)]
    with open(tmp_path / "t.catar", "rb") as raw:
        f = Counting(raw)
        r = CatarReader(f)
        root, end = r.root()
        kids = r.children(root, end)
        assert [(e.path, e.offset) for e, _ in kids] == [(p, o) for p, o in everything if p and "/" not in p]
        assert f.total < 50_000  # less than the smallest payload (50-100 kB each): none is read
        sub = dict((e.path, (e, x)) for e, x in kids)["sub"]
        assert [e.path for e, _ in r.children(*sub)] == ["sub/x"]
    size = struct.unpack_from("<Q", data, len(data) - 16)[0]
    items = len(data) - size + 16

    def broken(mutate) -> None:
        bad = bytearray(data)
        mutate(bad)
        with pytest.raises(FormatError) as e:
            r = CatarReader(io.BytesIO(bytes(bad)))
            r.children(*r.root())
        return str(e.value)

    def wrong_hash(b):
        b[items + 16:items + 24] = bytes(8)

    def outside(b):
        struct.pack_into("<Q", b, items, 1 << 40)

    def overlap(b):  # the second item's extent grows into the next child's
        off, sz, h = struct.unpack_from("<QQQ", b, items + 24)
        struct.pack_into("<Q", b, items + 32, sz + 100)

    assert "wrong hash" in broken(wrong_hash)
    assert "outside" in broken(outside)
    broken(overlap)


def test_view_source_gives_same_entries_and_payloads(odd_archives, odd_tree):
    """A stream read through ``readview`` in tiny views (records, GOODBYE tables and payloads spanning
    many) decodes as the plain file does; the payloads are the tree's files (casync made the archives)."""
    for name, path in odd_archives.items():
        data = open(path, "rb").read()
        want = [(e.path, e.mode, e.size, e.mtime, d) for e, d in read_all(data)]
        assert [(e.path, e.mode, e.size, e.mtime, d) for e, d in read_all(Viewing(data))] == want, name
        got = {e.path: d for e, d in read_all(Viewing(data)) if d is not None}
        for rel in ("file.txt", "random.bin", "sparse"):
            assert got[rel] == hashlib.sha256(open(os.path.join(odd_tree, rel), "rb").read()).hexdigest()
        r = CatarReader(Viewing(data))
        hit = r.lookup("deep/a/b/c/d/target.txt")
        assert hit is not None and hit.size == 6
    # cut short: a clear error, as for a plain file
    with pytest.raises(FormatError, match="truncated"):
        read_all(Viewing(data[:len(data) // 2]))


# --------------------------------------------------------------------------- the C parser's rules and constants


# The rules of spec/catar.md, written out here as the oracle of the C predicates (which validate.py,
# and so the encoder, uses too): CATAR-18, -19, -21, -22, -24, -25, -28, -29.
_NAME_FIRST = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_REST = _NAME_FIRST | frozenset(b"0123456789-")


def _ref_id_ok(v, af):
    if af & F.WITH_16BIT_UIDS:
        return 0 <= v < 0xFFFF
    if af & F.WITH_32BIT_UIDS:
        return 0 <= v < 0xFFFFFFFF and v != 0xFFFF
    return v == 0


def _ref_mtime_ok(t, af, strict):
    if not 0 <= t < (1 << 64) - 1:
        return False
    for bit, unit in ((F.WITH_NSEC_TIME, 1), (F.WITH_USEC_TIME, 1_000_000 if strict else 1000),
                      (F.WITH_SEC_TIME, 10**9), (F.WITH_2SEC_TIME, 2 * 10**9)):
        if af & bit:
            return t % unit == 0
    return t == 0


def _ref_cstr_ok(body, maximum):
    return 2 <= len(body) <= maximum and body[-1] == 0 and b"\0" not in body[:-1]


def _ref_user_name_ok(body, strict):
    if not 2 <= len(body) <= 256 or body[-1] != 0 or body in (b"root\0", b"0\0"):
        return False
    if body[0] not in _NAME_FIRST and (strict or not 48 <= body[0] <= 57):
        return False
    return all(c in _NAME_REST for c in body[1:-1])


def _ref_xattr_name_ok(name):
    return 0 < name.find(b".") < len(name) - 1 and len(name) <= 255


def test_predicates_follow_the_spec():
    """The rules the C parser (pycatar._catar) applies, which validate.py gives the encoder (CATAR-60),
    against the spec's rules written out above, on edge and random values."""
    import random

    from pycatar import _catar, validate

    assert validate.id_ok is _catar.id_ok and validate.user_name_ok is _catar.user_name_ok  # one copy
    rng = random.Random(18)
    u64 = [0, 1, 2, 999, 1000, 0xFFFE, 0xFFFF, 0x10000, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 32, 1 << 63,
           (1 << 64) - 2, (1 << 64) - 1, 1 << 64, -1, 10**9, 2 * 10**9, 10**6, 4096, (1 << 12) - 1, (1 << 20) - 1,
           1 << 20] + [rng.randrange(1 << 64) for _ in range(200)] + [rng.randrange(1 << 34) * 1000 for _ in range(50)]
    times = [int(f) for f in (F.WITH_NSEC_TIME, F.WITH_USEC_TIME, F.WITH_SEC_TIME, F.WITH_2SEC_TIME)]
    flag_sets = [0, int(F.WITH_16BIT_UIDS), int(F.WITH_32BIT_UIDS), int(F.WITH_16BIT_UIDS | F.WITH_32BIT_UIDS)] + times
    for af in flag_sets:
        for v in u64:
            assert validate.id_ok(v, af) == _ref_id_ok(v, af), (v, af)
            for strict in (False, True):
                assert validate.mtime_ok(v, af, strict) == _ref_mtime_ok(v, af, strict), (v, af, strict)
    for a in u64[:30]:
        for b in u64[:30]:
            assert validate.device_ok(a, b) == (0 <= a < 1 << 12 and 0 <= b < 1 << 20), (a, b)
    names = [b"", b"\0", b"a\0", b"root\0", b"0\0", b"00\0", b"9abc\0", b"_x-1\0", b"a b\0", b"a.b\0", b"ab",
             b"a\0b\0", b"x" * 255 + b"\0", b"x" * 256 + b"\0", b"-a\0", "é\0".encode(), b"root0\0", b".a\0",
             b"a.\0", b"user.x", b"user.", b".user", b"u" * 250 + b".x", b"u" * 260 + b".x"]
    names += [bytes(rng.choice(b"aZ_09-.\0/\xff ") for _ in range(rng.randrange(6))) for _ in range(500)]
    for body in names:
        for strict in (False, True):
            assert validate.user_name_ok(body, strict) == _ref_user_name_ok(body, strict), body
        assert validate.xattr_name_ok(body) == _ref_xattr_name_ok(body), body
        for maximum in (0, 1, 2, 3, 5, 4096):
            assert validate.cstr_ok(body, maximum) == _ref_cstr_ok(body, maximum), (body, maximum)


def test_goodbye_hash_is_siphash_2_4():
    """goodbye.name_hash (C) is SipHash-2-4: the reference vector of its paper, and the siphash24
    package on random names with the format's key."""
    import random

    from siphash24 import siphash24

    from pycatar import _catar, goodbye

    assert _catar.siphash24(bytes(range(15)), bytes(range(16))) == 0xA129CA6149BE45E5
    rng = random.Random(43)
    for n in list(range(40)) + [255, 256, 1000]:
        name = rng.randbytes(n)
        ref = siphash24(name, key=fmt.GOODBYE_HASH_KEY).intdigest() & 0xFFFFFFFFFFFFFFFF
        assert goodbye.name_hash(name) == ref


def test_c_parser_is_configured_from_the_declarations():
    """pycatar._catar takes every constant from format.py (via decoder.c_constants): the offsets are
    those of the declarations, and a configuration that does not match its Entry fields is refused."""
    from pycatar import _catar
    from pycatar.entry import Entry

    c = decoder.c_constants()
    assert c["Entry.mode"] == struct.calcsize("<QQQ") and c["GoodbyeTail.marker"] == 16
    assert c["ENTRY"] == int(fmt.RecordType.ENTRY) and c["entry_size"] == fmt.Entry.sizeof()
    assert c["hash_key"] == fmt.GOODBYE_HASH_KEY
    try:
        for bad in ({"entry_fields": c["entry_fields"][::-1]}, {"entry_fields": c["entry_fields"][:-1]},
                    {"kinds": "no list"}, {"hash_key": b"short"}):
            with pytest.raises((ValueError, TypeError)):
                _catar.configure(c | bad)
    finally:
        _catar.configure(c)
    (root, _), (f, data) = read_all(build([(b"f", ("file", b"xyz"))]))
    assert type(f) is Entry and f == Entry("f", f.mode, f.feature_flags, uid=f.uid, gid=f.gid, mtime=f.mtime, size=3,
                                           offset=f.offset, payload_offset=f.payload_offset)


def test_long_entry_through_tiny_reads_is_parsed_in_linear_time():
    """An entry whose records span many reads (4000 xattrs, 4 MB, through a pipe giving 4 KiB a read):
    the C parser is asked again with twice the bytes each time it needs more, not once a record."""
    import time

    ff = F0 | int(F.WITH_XATTRS)
    xattrs = b"".join(rec(T.XATTR, b"user.k%05d\0" % i + bytes(1000)) for i in range(4000))
    data = build([(b"f", ("file", b"x", xattrs)), (b"g", ("file", b"y"))], ff=ff)
    start = time.process_time()
    with deadline(60):
        got = read_all(NonSeekable(data, 4096))
    assert [len(e.xattrs) for e, _ in got] == [0, 4000, 0]
    assert time.process_time() - start < 5


def test_small_payloads_come_with_their_entries(tmp_path, run_casync, monkeypatch):
    """A payload the read buffer holds whole is handed over with its entry: a directory of small files
    takes a few parse_children calls, not one a file, and every payload is still the file's bytes
    (casync made the archive), whether the buffer holds it whole, in part or not at all; a second
    read_payload gives nothing, an unread one is skipped, and ``tap`` still sees every byte."""
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    want = {}
    for i in range(300):
        body = bytes((i * 7 + k) & 0xFF for k in range(i * 37 % 5000)) + b"%d" % i
        rel = f"d/f{i:03d}"
        (tree / rel).write_bytes(body)
        want[rel] = body
    (tree / "d" / "big").write_bytes(os.urandom(decoder.PAYLOAD_PIECE + 5))  # never whole: streamed
    want["d/big"] = (tree / "d" / "big").read_bytes()
    (tree / "z").write_bytes(b"last")
    want["z"] = b"last"
    archive = tmp_path / "a.catar"
    run_casync("make", "--without=all", archive, tree)
    data = archive.read_bytes()

    calls = []
    real = decoder._parse_children
    monkeypatch.setattr(decoder, "_parse_children", lambda *a: calls.append(1) or real(*a))
    for f in (io.BytesIO(data), NonSeekable(data, chunk=7000), Viewing(data), NonSeekable(data, chunk=1 << 22)):
        calls.clear()
        r = CatarReader(f)
        got = {}
        for e in r:
            if e.isreg():
                got[e.path] = b"".join(r.read_payload())
                assert b"".join(r.read_payload()) == b""
        assert got == want
        if isinstance(f, io.BytesIO):
            assert len(calls) < 40, len(calls)  # 300 files in 64-entry batches, and the big one

    for skip in ("d/f007", "d/big", "z"):  # unread payloads, whole in the buffer or not
        r = CatarReader(io.BytesIO(data))
        seen = [(e.path, b"".join(r.read_payload()) if e.isreg() and e.path != skip else None) for e in r]
        assert [p for p, _ in seen] == ["", "d", "d/big"] + [f"d/f{i:03d}" for i in range(300)] + ["z"]
        assert all(body == want[p] for p, body in seen if body is not None)

    tapped = []
    r = CatarReader(io.BytesIO(data))
    r.tap = lambda piece: tapped.append(bytes(piece))
    assert sum(1 for e in r if e.isreg()) == 302
    assert b"".join(tapped) == data
