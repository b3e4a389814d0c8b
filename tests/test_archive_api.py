"""The tarfile-like library API (pycatar.open, CatarFile, CatarInfo).

Oracles: casync (it makes the archives read here and extracts the ones written here), the source
trees on disk (os.lstat, file bytes), and the standard library's tarfile (its filters applied to a tar
of the same tree give the modes pycatar's filters must give)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import subprocess
import sys
import tarfile

import pytest

import pycatar
from pycatar import flags
from pycatar.api import InTheWayError
from pycatar.errors import PycatarError, UnsupportedError, UsageError

from httpservers import PycatarServe, StaticServer

IS_ROOT = os.geteuid() == 0
BIG = 300 << 20  # the streaming test's member


def _tree(root) -> dict:
    """What a tree holds, read with os.lstat and plain reads: path -> (type, permissions, size or
    link target, contents digest, mtime in whole seconds, uid, gid).  The top directory is "."."""
    out = {}
    root = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == root else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name != "." else root
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(full)
            else:
                extra = None
            perms = None if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            out[rel] = (kind, perms, extra, st.st_mtime_ns // 10**9, st.st_uid, st.st_gid)
    return out


def _without_root_times(tree: dict) -> dict:
    return {k: v if k != "." else v[:3] for k, v in tree.items()}


@pytest.fixture
def src(tmp_path):
    """A small tree with every kind a tar filter cares about, owned and dated on purpose."""
    root = tmp_path / "src"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"hello\n" * 1000)
    (root / "d" / "e" / "deep").write_bytes(b"deep")
    (root / "a").write_bytes(b"x")
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "private").write_bytes(b"p")
    (root / "suid").write_bytes(b"s")
    (root / "shared").write_bytes(b"g")
    os.symlink("a", root / "l")
    os.symlink("../a", root / "d" / "up")
    os.chmod(root / "run.sh", 0o750)
    os.chmod(root / "private", 0o400)
    os.chmod(root / "suid", 0o4755)
    os.chmod(root / "shared", 0o666)
    os.chmod(root / "d" / "e", 0o775)
    for i, p in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(p, ns=(1_600_000_000_123_456_789 + i * 10**9,) * 2, follow_symlinks=False)
    os.utime(root, ns=(1_600_000_100 * 10**9,) * 2)
    if IS_ROOT:
        os.chown(root / "a", 1234, 5678)
    return root


@pytest.fixture
def catar(src, tmp_path, run_casync):
    """The archive casync makes of ``src``."""
    path = tmp_path / "src.catar"
    run_casync("make", path, src)
    return path


def _casync_order(root) -> list[str]:
    """Archive order of a tree: depth first, each directory's names in byte order."""
    out = ["."]

    def walk(d, prefix):
        for name in sorted(os.listdir(d), key=os.fsencode):
            out.append(prefix + name)
            if os.path.isdir(os.path.join(d, name)) and not os.path.islink(os.path.join(d, name)):
                walk(os.path.join(d, name), prefix + name + "/")

    walk(root, "")
    return out


# ---------------------------------------------------------------------------------------------- reading


def test_members_have_tarfiles_names_and_meanings(src, catar, tmp_path):
    with pycatar.open(catar) as ar:
        assert ar.getnames() == _casync_order(src)
        assert [m.name for m in ar.getmembers()] == _casync_order(src)
        members = {m.name: m for m in ar}
        for name, m in members.items():
            st = os.lstat(src / name)
            assert m.mtime_ns == st.st_mtime_ns, name
            assert (m.uid, m.gid) == (st.st_uid, st.st_gid), name
            if not m.issym():
                assert m.mode == stat.S_IMODE(st.st_mode), name
        f = members["d/f.txt"]
        assert (f.size, f.type, f.isfile(), f.isreg(), f.isdir(), f.issym(), f.islnk()) == \
            (6000, tarfile.REGTYPE, True, True, False, False, False)
        assert f.mtime == pytest.approx(os.lstat(src / "d" / "f.txt").st_mtime_ns / 1e9)
        assert isinstance(members["."].mtime, int) and members["."].mtime == 1_600_000_100
        link = members["l"]
        assert (link.issym(), link.islnk(), link.linkname, link.linkpath, link.size) == (True, False, "a", "a", 0)
        assert members["d"].isdir() and members["."].isdir() and members["d/up"].linkname == "../a"
        assert ar.getmember("./d/f.txt/").name == "d/f.txt" and ar.getmember("").name == "."
        if IS_ROOT:
            assert (members["a"].uid, members["a"].gid) == (1234, 5678)
        with pytest.raises(KeyError, match="nope"):
            ar.getmember("d/nope")

    # the same tree as tar (tarfile's own view): the same names, kinds, modes, link targets, sizes, times
    with tarfile.open(tmp_path / "src.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src, arcname=".")
    with tarfile.open(tmp_path / "src.tar") as tar:
        theirs = {os.path.normpath(t.name): t for t in tar}
    assert set(theirs) == set(members)
    for name, t in theirs.items():
        m = members[name]
        assert (m.type, m.linkname, m.size, m.uid, m.gid, int(m.mtime)) == \
            (t.type, t.linkname, t.size, t.uid, t.gid, t.mtime), name
        assert m.mode == t.mode or m.issym(), name
        assert (m.isfile(), m.isdir(), m.issym(), m.islnk(), m.isdev()) == \
            (t.isfile(), t.isdir(), t.issym(), t.islnk(), t.isdev()), name


def test_every_iteration_has_its_own_cursor(src, catar):
    """``for m in ar: ar.extractfile(m).read()`` reads every member; loops nest; next() walks on."""
    names = _casync_order(src)
    with pycatar.open(catar) as ar:  # getmembers() is not called: every loop walks the archive
        seen = []
        for m in ar:
            seen.append(m.name)
            f = ar.extractfile(m)
            if m.isfile():
                assert f.read() == (src / m.name).read_bytes(), m.name
            elif m.issym():
                assert f.read() == (src / m.name).read_bytes()  # followed inside the archive
            else:
                assert f is None
            assert [n.name for n in ar] == names  # a nested loop, to the end, in the middle of this one
        assert seen == names
        outer = iter(ar)
        first, second = next(outer), next(outer)
        inner = iter(ar)
        assert [next(inner).name for _ in range(3)] == names[:3]
        assert (first.name, second.name, next(outer).name) == tuple(names[:3])
        assert ar.extractfile("d/f.txt").read() == (src / "d" / "f.txt").read_bytes()
        assert [m.name for m in outer] == names[3:] and [m.name for m in inner] == names[3:]
        assert [ar.next().name for _ in names] == names and ar.next() is None


def test_extractfile_is_a_seekable_binary_file(src, catar):
    data = (src / "d" / "f.txt").read_bytes()
    with pycatar.open(catar) as ar:
        f = ar.extractfile("d/f.txt")
        assert f.readable() and f.seekable() and not f.writable()
        assert f.read(10) == data[:10] and f.tell() == 10
        f.seek(-6, io.SEEK_END)
        assert f.read() == data[-6:] and f.read() == b""
        f.seek(3000)
        buf = bytearray(100)
        assert f.readinto(buf) == 100 and bytes(buf) == data[3000:3100]
        f.seek(100, io.SEEK_CUR)
        assert f.read(5) == data[3200:3205]
        assert ar.extractfile("empty").read() == b""
        assert ar.extractfile(ar.getmember("d")) is None
        assert ar.extractfile("d/up").read() == b"x"  # ../a, relative to d


def test_extractfile_of_a_link_leaving_the_archive(tmp_path, run_casync):
    root = tmp_path / "t"
    root.mkdir()
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("../outside", root / "up")
    os.symlink("missing", root / "dangling")
    run_casync("make", tmp_path / "t.catar", root)
    with pycatar.open(tmp_path / "t.catar") as ar:
        for name in ("abs", "up", "dangling"):
            with pytest.raises(KeyError, match="linkname"):
                ar.extractfile(name)


_STREAM_CHILD = r"""
import hashlib, sys
import pycatar
with pycatar.open(sys.argv[1]) as ar:
    member = ar.getmember("big")
    f = ar.extractfile(member)
    h = hashlib.sha256()
    n = 0
    while True:
        piece = f.read(1 << 20)
        if not piece:
            break
        n += len(piece)
        h.update(piece)
    f.seek(member.size // 2)
    middle = f.read(16)
# this process's own peak (ru_maxrss would include pytest's, inherited through vfork and exec)
peak_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(n, h.hexdigest(), middle.hex(), peak_kib // 1024)
"""


def _big_pieces():
    """The big file's contents: a marked 64 KiB every MiB, zeros elsewhere (mostly holes on disk)."""
    zeros = bytes(1 << 20)
    for i in range(BIG >> 20):
        mark = hashlib.sha256(str(i).encode()).digest() * 2048
        yield mark + zeros[len(mark):]


def test_extractfile_streams_a_300mb_member_in_bounded_memory(tmp_path, run_casync):
    """The child process's own peak RSS while reading a 300 MB member stays under 100 MB."""
    root = tmp_path / "t"
    root.mkdir()
    h = hashlib.sha256()
    with open(root / "big", "wb") as f:
        for i, piece in enumerate(_big_pieces()):
            h.update(piece)
            f.seek(i << 20)
            f.write(piece[:64 << 10])
        f.truncate(BIG)
    run_casync("make", tmp_path / "t.catar", root)
    (root / "big").unlink()
    p = subprocess.run([sys.executable, "-c", _STREAM_CHILD, tmp_path / "t.catar"], capture_output=True,
                       text=True, check=True)
    n, digest, middle, peak_mb = p.stdout.split()
    assert (int(n), digest) == (BIG, h.hexdigest())
    assert middle == hashlib.sha256(str(150).encode()).digest()[:16].hex()
    assert int(peak_mb) < 100, f"peak RSS {peak_mb} MB"
    print(f"peak RSS {peak_mb} MB")


def test_open_caidx_with_store(src, tmp_path, run_casync):
    run_casync("make", tmp_path / "t.caidx", src, "--store", tmp_path / "s")
    with pycatar.open(tmp_path / "t.caidx", store=str(tmp_path / "s")) as ar:
        assert ar.getnames() == _casync_order(src)
        assert ar.feature_flags & flags.F.WITH_NSEC_TIME
        for m in ar:
            if m.isfile():
                assert ar.extractfile(m).read() == (src / m.name).read_bytes()
        ar.extractall(tmp_path / "out", filter="fully_trusted")
    assert _tree(tmp_path / "out") == _tree(src)
    with pytest.raises(PycatarError):  # no store there
        pycatar.open(tmp_path / "t.caidx", store=str(tmp_path / "nowhere")).getmembers()


def test_caidx_and_store_by_url_fetch_only_what_a_read_needs(tmp_path, run_casync):
    web = tmp_path / "web"
    tree = tmp_path / "tree"
    tree.mkdir()
    web.mkdir()
    rnd = random.Random(13)
    for i in range(40):
        (tree / f"f{i:02}.bin").write_bytes(rnd.randbytes(200_000))
    run_casync("make", web / "t.caidx", tree, "--store", web / "store")
    total = sum(1 for _ in (web / "store").rglob("*.cacnk"))
    with StaticServer(web) as srv:
        with pycatar.open(f"{srv.url}t.caidx", store=f"{srv.url}store") as ar:
            f = ar.extractfile("f17.bin")
            f.seek(150_000)
            assert f.read(1000) == (tree / "f17.bin").read_bytes()[150_000:151_000]
            assert ar.getmember("f33.bin").size == 200_000
        fetched = srv.gets()
    assert total > 100 and 0 < len(fetched) < 12, (len(fetched), total)
    print("fetched", len(fetched), "of", total)


def test_open_file_objects_and_refusals(catar, tmp_path):
    with open(catar, "rb") as f, pycatar.open(fileobj=f) as ar:
        assert ar.getmember("a").size == 1
    with pycatar.open(io.BytesIO(catar.read_bytes())) as ar:
        assert ar.extractfile("a").read() == b"x"
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe, os.fdopen(w, "wb"):
        with pytest.raises(UnsupportedError, match="seekable"):
            pycatar.open(fileobj=pipe)
    with pytest.raises(ValueError, match="mode"):
        pycatar.open(catar, "a")
    ar = pycatar.open(catar)
    ar.close()
    with pytest.raises(OSError, match="closed"):
        ar.getmembers()


def test_is_catar(catar, tmp_path, run_casync, src):
    assert pycatar.is_catar(catar) and pycatar.is_catar(str(catar))
    data = catar.read_bytes()
    f = io.BytesIO(data)
    assert pycatar.is_catar(f) and f.tell() == 0
    assert not pycatar.is_catar(io.BytesIO(data[:-1]))  # no GOODBYE tail
    run_casync("make", tmp_path / "t.caidx", src, "--store", tmp_path / "s")
    assert not pycatar.is_catar(tmp_path / "t.caidx")
    assert not pycatar.is_catar(src / "d" / "f.txt") and not pycatar.is_catar(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- extraction


def test_extractall_leaves_unrelated_files_alone(src, catar, tmp_path):
    out = tmp_path / "out"
    (out / "d" / "e").mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    (out / "d" / "also-mine").write_text("keep me too")
    (out / "d" / "e" / "mine-too").write_text("and me")
    (out / "a").write_text("replaced")  # a name the archive holds: replaced
    with pycatar.open(catar) as ar:
        ar.extractall(out, filter="fully_trusted")
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "d" / "also-mine").read_text() == "keep me too"
    assert (out / "d" / "e" / "mine-too").read_text() == "and me"
    got = _tree(out)
    for extra in ("mine.txt", "d/also-mine", "d/e/mine-too"):
        del got[extra]
    want = _tree(src)
    # directories holding extra files keep the archive's times, except where the extras were added after
    assert _without_root_times(got) == _without_root_times(want)


def test_a_directory_in_the_way_of_a_file_is_never_removed(src, catar, tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)  # the archive has a file "a"
    (out / "a" / "mine").write_text("keep me")
    (out / "l").mkdir()  # and a symlink "l"
    with pycatar.open(catar) as ar, pytest.raises(InTheWayError, match="'a'"):
        ar.extractall(out, filter="fully_trusted")
    assert (out / "a" / "mine").read_text() == "keep me"
    with pycatar.open(catar) as ar:
        ar.extractall(out, members=[m for m in ar if m.name not in ("a", "l")])
    assert (out / "a" / "mine").read_text() == "keep me"
    assert (out / "d" / "f.txt").read_bytes() == (src / "d" / "f.txt").read_bytes()


def test_fully_trusted_extraction_equals_casyncs(catar, tmp_path, run_casync):
    run_casync("extract", catar, tmp_path / "casync")
    with pycatar.open(catar) as ar:
        stats = ar.extractall(tmp_path / "ours", filter="fully_trusted")
    assert _tree(tmp_path / "ours") == _tree(tmp_path / "casync")
    assert stats.files == 8 and stats.symlinks == 2 and stats.deleted == 0


_UNPRIVILEGED_CHILD = r"""
import ctypes.util, fcntl, os, sys  # imported as root: the interpreter's own files may be root's
import pycatar
ar = pycatar.open(sys.argv[1])  # opened as root: the archive lies in root's temporary directory
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
ar.extractall(sys.argv[2], filter="fully_trusted")
"""


def test_fully_trusted_without_root_restores_all_but_privileged_metadata(src, catar, tmp_path):
    """As tarfile, owners are restored only by root; the rest is, and nothing fails for want of it."""
    import shutil
    import tempfile

    dest_dir = tempfile.mkdtemp(prefix="pycatar-api-")
    try:
        os.chmod(dest_dir, 0o777)
        dest = os.path.join(dest_dir, "out")
        if IS_ROOT:  # the same code path as any user's: a child that drops root
            subprocess.run([sys.executable, "-c", _UNPRIVILEGED_CHILD, catar, dest], check=True)
            me = (65534, 65534)
        else:
            with pycatar.open(catar) as ar:
                ar.extractall(dest, filter="fully_trusted")
            me = (os.getuid(), os.getgid())
        got = _tree(dest)
        want = {k: v[:4] + me for k, v in _tree(src).items()}
        assert got == want
    finally:
        shutil.rmtree(dest_dir)


@pytest.mark.parametrize("name", ["data", "tar", "fully_trusted"])
def test_named_filters_give_what_tarfile_gives(src, catar, tmp_path, name):
    """tarfile's own filter, applied to a tar of the same tree, is the oracle for modes and kinds."""
    with tarfile.open(tmp_path / "src.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=".")
    with tarfile.open(tmp_path / "src.tar") as tar:
        tar.extractall(tmp_path / "tarfile", filter=name)
    with pycatar.open(catar) as ar:
        ar.extractall(tmp_path / "ours", filter=name)
    theirs, ours = _tree(tmp_path / "tarfile"), _tree(tmp_path / "ours")
    assert set(ours) == set(theirs)
    for path in theirs:  # kind, mode, contents or target, time (tar keeps whole seconds), owners
        if theirs[path][0] == stat.S_IFLNK:  # tarfile leaves a symlink's own time (we restore it)
            assert ours[path][:3] + ours[path][4:] == theirs[path][:3] + theirs[path][4:], path
            assert ours[path][3] == os.lstat(src / path).st_mtime_ns // 10**9
        else:
            assert ours[path] == theirs[path], path
    if name != "fully_trusted":
        assert stat.S_IMODE(os.stat(tmp_path / "ours" / "suid").st_mode) == 0o755
        assert stat.S_IMODE(os.stat(tmp_path / "ours" / "shared").st_mode) == 0o644


def test_default_filter_is_data_and_refuses_what_tarfile_refuses(tmp_path, run_casync):
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(b"a")
    os.mkfifo(root / "sub" / "fifo")
    run_casync("make", tmp_path / "fifo.catar", root)
    (root / "sub" / "fifo").unlink()
    os.symlink("/etc/passwd", root / "sub" / "abs")
    run_casync("make", tmp_path / "abs.catar", root)
    (root / "sub" / "abs").unlink()
    os.symlink("../../outside", root / "sub" / "out")
    run_casync("make", tmp_path / "out.catar", root)
    for archive, error in (("fifo", tarfile.SpecialFileError), ("abs", tarfile.AbsoluteLinkError),
                           ("out", tarfile.LinkOutsideDestinationError)):
        dest = tmp_path / f"x-{archive}"
        with pycatar.open(tmp_path / f"{archive}.catar") as ar, pytest.raises(error):
            ar.extractall(dest)
        # what came before the refused member is there, complete; nothing of it after
        assert (dest / "a").read_bytes() == b"a" and os.listdir(dest / "sub") == []
    with pycatar.open(tmp_path / "out.catar") as ar:
        ar.extractall(tmp_path / "trusted", filter="tar")
    assert os.readlink(tmp_path / "trusted" / "sub" / "out") == "../../outside"


def test_members_and_callable_filters(src, catar, tmp_path):
    with pycatar.open(catar) as ar:
        ar.extractall(tmp_path / "one", members=["d/e/deep", ar.getmember("a")])
        seen = []

        def only_text(member, path):
            seen.append((member.name, path))
            if member.name == "d":
                return None  # left out, yet what is below it is extracted (tarfile does so)
            if member.isfile() and not member.name.endswith(".txt"):
                return None
            return member.replace(mode=0o600, mtime=1_234_567_890) if member.isfile() else member

        ar.extractall(tmp_path / "cb", filter=only_text)
    assert _tree(tmp_path / "one").keys() == {".", "a", "d", "d/e", "d/e/deep"}
    assert (tmp_path / "one" / "d" / "e" / "deep").read_bytes() == b"deep"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "one" / "d").st_mode) == 0o777 & ~umask  # made, not extracted
    assert os.stat(tmp_path / "one" / "a").st_mtime_ns == os.stat(src / "a").st_mtime_ns
    assert seen[0] == (".", str(tmp_path / "cb")) and len(seen) == len(_casync_order(src))
    f = tmp_path / "cb" / "d" / "f.txt"
    assert f.read_bytes() == b"hello\n" * 1000
    assert (stat.S_IMODE(os.stat(f).st_mode), os.stat(f).st_mtime) == (0o600, 1_234_567_890)
    assert not (tmp_path / "cb" / "a").exists() and os.readlink(tmp_path / "cb" / "l") == "a"


def test_extract_one_member(src, catar, tmp_path):
    with pycatar.open(catar) as ar:
        ar.extract("d/f.txt", tmp_path / "x")
        ar.extract(ar.getmember("d/e"), tmp_path / "y")
        ar.extract("l", tmp_path / "z")
        ar.extract("suid", tmp_path / "bare", set_attrs=False, filter="fully_trusted")
    assert (tmp_path / "x" / "d" / "f.txt").read_bytes() == (src / "d" / "f.txt").read_bytes()
    assert os.stat(tmp_path / "x" / "d" / "f.txt").st_mtime_ns == os.stat(src / "d" / "f.txt").st_mtime_ns // 10**9 * 10**9 \
        or os.stat(tmp_path / "x" / "d" / "f.txt").st_mtime_ns == os.stat(src / "d" / "f.txt").st_mtime_ns
    assert os.listdir(tmp_path / "y" / "d" / "e") == []  # a directory alone, as tarfile's extract
    assert os.readlink(tmp_path / "z" / "l") == "a"
    bare = os.stat(tmp_path / "bare" / "suid")  # contents only: the time is the extraction's
    assert (tmp_path / "bare" / "suid").read_bytes() == b"s" and bare.st_mtime_ns > os.stat(src / "suid").st_mtime_ns


# ---------------------------------------------------------------------------------------------- writing


def test_writing_a_tree_as_the_top_directory_gives_casyncs_bytes(src, catar, tmp_path):
    with pycatar.open(tmp_path / "ours.catar", "w") as ar:
        ar.add(src, arcname=".")
    assert (tmp_path / "ours.catar").read_bytes() == catar.read_bytes()
    assert ar.result.size == catar.stat().st_size


def test_writing_to_a_file_object_and_keywords_of_the_other_mode(src, catar, tmp_path):
    buf = io.BytesIO()
    with pycatar.open(fileobj=buf, mode="w") as ar:
        ar.add(src, arcname=".")
    assert buf.getvalue() == catar.read_bytes()
    with pytest.raises(TypeError, match="feature_mask"):
        pycatar.open(tmp_path / "x.catar", "w", feature_mask=0)
    with pytest.raises(TypeError, match="feature_flags"):
        pycatar.open(catar, feature_flags=0)
    with pytest.raises(TypeError, match="owner"):
        pycatar.open(catar, owner=0)
    with pytest.raises(UsageError, match="local file"):
        pycatar.open("http://127.0.0.1:9/x.catar", "w")


def test_writing_a_caidx_casync_extracts(src, tmp_path, run_casync):
    with pycatar.open(tmp_path / "t.caidx", "w", store=str(tmp_path / "s"), feature_flags=["unix"]) as ar:
        ar.add(src, arcname="")
    run_casync("extract", tmp_path / "t.caidx", tmp_path / "out", "--store", tmp_path / "s")
    assert {k: v[:4] for k, v in _tree(tmp_path / "out").items()} == {k: v[:4] for k, v in _tree(src).items()}
    digest = run_casync("digest", tmp_path / "t.caidx", "--store", tmp_path / "s").stdout.decode().strip()
    assert digest == ar.result.digest_hex


def test_writing_a_caidx_to_a_server(src, tmp_path, run_casync):
    """The chunks go to the store by URL, the index is uploaded beside them; casync reads what landed."""
    up = tmp_path / "up"
    (up / "store").mkdir(parents=True)
    (up / "idx").mkdir()
    with PycatarServe(tmp_path / "rw.log", f"--store={up / 'store'}", f"--index-dir={up / 'idx'}", "--writable") as srv:
        with pycatar.open(f"{srv.url}t.caidx", "w", store=srv.url) as ar:
            ar.add(src, arcname=".")
        with pycatar.open(f"{srv.url}t.caidx", store=srv.url) as ar:
            assert ar.extractfile("d/f.txt").read() == (src / "d" / "f.txt").read_bytes()
    run_casync("extract", up / "idx" / "t.caidx", tmp_path / "out", "--store", up / "store")
    assert _tree(tmp_path / "out") == _tree(src)


def test_several_adds_build_the_tree_under_the_top_directory(src, tmp_path, run_casync):
    with pycatar.open(tmp_path / "t.catar", "w") as ar:
        ar.add(src / "d", arcname="top/dd")  # made-up "top"
        ar.add(src / "a", arcname="b")
        ar.add(src / "l", arcname="top/link")
        ar.add(src / "d" / "e", arcname="e-only", recursive=False)
        ar.add(src / "run.sh", arcname="e-only/x.sh")
    run_casync("extract", tmp_path / "t.catar", tmp_path / "out")
    got = _tree(tmp_path / "out")
    want = _tree(src)
    assert set(got) == {".", "b", "e-only", "e-only/x.sh", "top", "top/link", "top/dd", "top/dd/f.txt", "top/dd/up",
                        "top/dd/e", "top/dd/e/deep"}
    assert got["b"] == want["a"] and got["top/link"] == want["l"] and got["e-only/x.sh"] == want["run.sh"]
    assert got["top/dd/e/deep"] == want["d/e/deep"] and got["e-only"][:2] == want["d/e"][:2]
    assert got["top"][:2] == (stat.S_IFDIR, 0o755)
    with pycatar.open(tmp_path / "t.catar") as ar2:
        assert ar2.getnames()[:3] == [".", "b", "e-only"]


def test_add_refuses_what_a_catar_cannot_hold(src, tmp_path):
    with pycatar.open(tmp_path / "t.catar", "w") as ar:
        ar.add(src / "d", arcname="d")
        with pytest.raises(UsageError, match="with all its contents"):
            ar.add(src / "a", arcname="d/a")
        with pytest.raises(UsageError, match="already"):
            ar.add(src / "a", arcname="d")
        with pytest.raises(UsageError, match="must be a directory"):
            ar.add(src / "a", arcname=".")
        with pytest.raises(UsageError, match=r"'\.\.'"):
            ar.add(src / "a", arcname="../a")
        ar.add(src / "a", arcname="x")
        with pytest.raises(UsageError, match="not a directory"):
            ar.add(src / "empty", arcname="x/y")
        with pytest.raises(OSError, match="mode"):
            ar.getmembers()
    with pycatar.open(tmp_path / "t.catar") as ar:
        assert ar.getnames() == [".", "d", "d/e", "d/e/deep", "d/f.txt", "d/up", "x"]
    with pytest.raises(RuntimeError), pycatar.open(tmp_path / "never.catar", "w") as ar:
        ar.add(src, arcname=".")
        raise RuntimeError("nothing is written after a failure")
    assert not (tmp_path / "never.catar").exists()
