"""Extraction (pycatar.extract) against the real casync.

Every interop test extracts the same archive twice, with pycatar into A and with ``casync extract``
into B, and compares ``casync mtree`` of both (and of the source tree where the flags keep everything
mtree shows), plus xattrs/ACLs/file capabilities and chattr flags, which mtree does not show.

Two sources feed pycatar's extractor: ``archive`` (the catar that ``casync make`` wrote, read by
pycatar.decoder) and ``encoder`` (the entries pycatar's encoder reads from the tree with the archive's
flags, payload from the tree): the latter checks the extractor even where the decoder is absent.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import struct
import subprocess

import pytest

from pycatar import fsmeta
from pycatar.entry import Entry
from pycatar.errors import FormatError, PycatarError
from pycatar.extract import extract, extract_archive, normalize_subpath, replay_flags
from pycatar.flags import EXT2_SUPER_MAGIC, F, FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_SYNC_FL

from trees import make_full_tree, remove_tree

HAVE_DECODER = importlib.util.find_spec("pycatar.decoder") is not None
IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="extraction tests create devices and set owners: need root")

FLAG_SETS = {
    "default": [],
    "unix": ["--with=unix"],
    "without-all": ["--without=all"],
    "unprivileged": ["--without=privileged"],
    # 16-bit uids, second times, read-only bit instead of permissions, xattrs, fcaps, chattr, no sockets
    "mixed": ["--with=unix", "--with=xattrs", "--with=fcaps", "--with=chattr", "--with=read-only",
              "--without=permissions", "--without=sockets"],
}
#: sets whose extraction reproduces the tree as far as mtree (with the same flags) can tell
FAITHFUL = {"default", "unix", "unprivileged"}


# --------------------------------------------------------------------------- helpers


def _chattr_clear(path: str) -> None:
    if os.path.lexists(path):
        subprocess.run(["chattr", "-R", "-i", "-a", path], capture_output=True)


def _rmtree(path: str) -> None:
    if os.path.lexists(path):
        _chattr_clear(path)
        remove_tree(path)


def archive_flags(catar: str) -> int:
    with open(catar, "rb") as f:
        head = f.read(24)
    return struct.unpack_from("<Q", head, 16)[0]


def mtree(run_casync, target: str, *args: str, times: bool = True) -> list[str]:
    lines = run_casync(*args, "mtree", target).stdout.decode("utf-8", "surrogateescape").splitlines()
    if not times:  # nothing restores times: they are those of the extraction
        lines = [" ".join(w for w in line.split(" ") if not w.startswith("time=")) for line in lines]
    return lines


def encoder_source(tree: str, flags: int):
    """(entries, read_payload) as a decoder of the archive of ``tree`` with ``flags`` would give them."""
    from pycatar.encoder import iter_entries

    current: list[Entry] = []

    def entries():
        for entry in iter_entries(tree, flags):
            current[:] = [entry]
            yield entry

    def read_payload():
        with open(os.path.join(tree, current[0].path), "rb") as f:
            while chunk := f.read(1 << 16):
                yield chunk

    return entries(), read_payload


def py_extract(source: str, tree: str, catar: str, dest: str, subpath: str | None = None, **options):
    if source in ("archive", "stream"):
        if not HAVE_DECODER:
            pytest.skip("pycatar.decoder not available yet")
        if source == "archive":
            return extract_archive(catar, dest, subpath, **options)
        with subprocess.Popen(["cat", catar], stdout=subprocess.PIPE) as proc:  # not seekable
            try:
                return extract_archive(proc.stdout, dest, subpath, **options)
            finally:
                proc.stdout.close()
    flags = archive_flags(catar)
    entries, read_payload = encoder_source(tree, flags)
    return extract(entries, read_payload, dest, feature_flags=flags, subpath=subpath, **options)


def dump_xattrs(root: str) -> dict[str, dict[str, bytes]]:
    """Every xattr (user, trusted, security, system ACLs) of every node below ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["."] + dirnames + filenames:
            path = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(path, root)
            attrs = {}
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError:
                names = []
            for x in names:
                attrs[x] = os.getxattr(path, x, follow_symlinks=False)
            out[rel] = attrs
    return out


def dump_chattr(root: str) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["."] + dirnames + filenames:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    out[os.path.relpath(path, root)] = fsmeta.read_chattr(fd) & ~0x80000  # EXTENTS_FL varies
                finally:
                    os.close(fd)
    return out


def temp_names(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith(".#")]
    return found


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory on ext4 (chattr flags, user/trusted xattrs, ACLs); a loop-mounted image if needed."""
    base = str(tmp_path_factory.mktemp("extract"))
    fd = os.open(base, os.O_RDONLY)
    try:
        magic = fsmeta.fs_type(fd)
    finally:
        os.close(fd)
    mnt = None
    if magic != EXT2_SUPER_MAGIC:
        img, mnt = os.path.join(base, "ext4.img"), os.path.join(base, "mnt")
        os.mkdir(mnt)
        ok = subprocess.run(["truncate", "-s", "512M", img]).returncode == 0 and subprocess.run(
            ["mkfs.ext4", "-q", img], capture_output=True).returncode == 0 and subprocess.run(
            ["mount", "-o", "loop", img, mnt], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("no ext4 file system available for the extraction tests")
        base = mnt
    yield base
    _chattr_clear(base)
    if mnt:
        subprocess.run(["umount", mnt], capture_output=True)


@pytest.fixture(scope="module")
def tree(workdir, casync):
    return make_full_tree(os.path.join(workdir, "tree"))


@pytest.fixture(scope="module")
def archives(workdir, tree, run_casync):
    out = {}
    for key, args in FLAG_SETS.items():
        path = os.path.join(workdir, f"{key}.catar")
        run_casync(*args, "make", path, tree)
        out[key] = path
    return out


@pytest.fixture
def scratch(workdir, request):
    path = os.path.join(workdir, "scratch-" + request.node.name.replace("/", "_").replace("[", "-").strip("]"))
    _rmtree(path)
    os.makedirs(path)
    yield path
    _rmtree(path)


# --------------------------------------------------------------------------- interop: whole archives


@pytest.mark.parametrize("source", ["encoder", "archive", "stream"])
@pytest.mark.parametrize("key", list(FLAG_SETS))
def test_extract_matches_casync(key, source, tree, archives, scratch, run_casync):
    catar = archives[key]
    args = FLAG_SETS[key]
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    stats = py_extract(source, tree, catar, a)
    run_casync("extract", catar, b)

    assert stats.entries > 10
    # everything mtree shows (modes, owners, names, times, sizes, digests, targets, devices, flags)
    times = key != "without-all"
    assert mtree(run_casync, a, times=times) == mtree(run_casync, b, times=times)
    assert mtree(run_casync, a, *args, times=times) == mtree(run_casync, b, *args, times=times)
    if key in FAITHFUL:
        assert mtree(run_casync, a, *args) == mtree(run_casync, catar)
    # what mtree does not show: xattrs, ACLs, file capabilities; chattr flags
    xa, xb = dump_xattrs(a), dump_xattrs(b)
    assert xa == xb
    assert dump_chattr(a) == dump_chattr(b)
    assert temp_names(a) == []

    xt = dump_xattrs(tree)
    if key == "default":
        for rel in xa:  # what the archive holds is restored exactly
            assert xa[rel] == xt[rel], rel
        assert xa["file.txt"]["trusted.secret"] == b"\x00\x01binary\xff"
        assert fsmeta.ACL_XATTR_ACCESS in xa["dir/sub/deeper/random.bin"]
        assert fsmeta.ACL_XATTR_DEFAULT in xa["dir/sub"]
        assert "security.capability" in xa["setuid"]
        assert dump_chattr(a)["file.txt"] & FS_NOATIME_FL
    if key == "mixed":
        assert xa["file.txt"]["user.comment"] == b"a comment"
        assert "security.capability" in xa["setuid"]
        assert not any(k.startswith("system.posix_acl") for attrs in xa.values() for k in attrs)
    if key in ("without-all", "unix"):
        assert not any(k.startswith(("user.", "trusted.")) for attrs in xa.values() for k in attrs)

    st = os.lstat(os.path.join(a, "sparse.img"))
    assert st.st_size == 8 << 20
    assert st.st_blocks * 512 < 1 << 20  # holes were left, not zeros written
    with open(os.path.join(a, "dir", "sub", "deeper", "random.bin"), "rb") as f1, \
            open(os.path.join(tree, "dir", "sub", "deeper", "random.bin"), "rb") as f2:
        assert f1.read() == f2.read()


def test_replay_flags():
    default = 0xB0000001FFEFFE26
    assert replay_flags(default) == default
    # a mask without ACLs still restores permissions (the ACL bit implies them)
    r = replay_flags(default, int(F.WITH_NSEC_TIME | F.WITH_PERMISSIONS | F.WITH_SYMLINKS))
    assert r & F.WITH_PERMISSIONS and r & F.WITH_NSEC_TIME and not r & F.WITH_ACL
    # redundant bits are widened on both sides (as casync): second times meet a nanosecond mask
    assert replay_flags(int(F.WITH_SEC_TIME), int(F.WITH_NSEC_TIME)) == F.WITH_NSEC_TIME
    assert replay_flags(int(F.WITH_SEC_TIME), int(F.WITH_SYMLINKS)) == 0
    assert replay_flags(int(F.WITH_16BIT_UIDS | F.WITH_FIFOS), int(F.WITH_32BIT_UIDS)) == F.WITH_32BIT_UIDS
    assert normalize_subpath("//a//b/") == "a/b"
    assert normalize_subpath("/") is None and normalize_subpath(None) is None


# --------------------------------------------------------------------------- sub-paths


@pytest.mark.parametrize("source", ["encoder", "archive", "stream"])
@pytest.mark.parametrize("subpath", ["dir/sub", "/file.txt", "link", "dir/chardev"])
def test_subpath(subpath, source, tree, archives, scratch, run_casync):
    catar = archives["default"]
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    os.mkdir(a)
    with open(os.path.join(a, "bystander"), "w") as f:
        f.write("must survive: only the sub-tree is synced")
    py_extract(source, tree, catar, a, subpath)
    run_casync("extract", catar, b, subpath)
    name = subpath.rstrip("/").rsplit("/", 1)[-1]
    # like casync, the entry is created inside the output directory under its own name
    assert sorted(os.listdir(a)) == sorted(["bystander", name])
    assert os.listdir(b) == [name]
    pa, pb = os.path.join(a, name), os.path.join(b, name)
    if os.path.isdir(pa) and not os.path.islink(pa):
        assert mtree(run_casync, pa) == mtree(run_casync, pb)
        assert dump_xattrs(pa) == dump_xattrs(pb)
    else:
        sa, sb = os.lstat(pa), os.lstat(pb)
        assert (sa.st_mode, sa.st_uid, sa.st_gid, sa.st_mtime_ns, sa.st_size, sa.st_rdev) == \
               (sb.st_mode, sb.st_uid, sb.st_gid, sb.st_mtime_ns, sb.st_size, sb.st_rdev)
        if stat.S_ISLNK(sa.st_mode):
            assert os.readlink(pa) == os.readlink(pb)


@pytest.mark.parametrize("source", ["encoder", "archive", "stream"])
def test_subpath_missing(source, tree, archives, scratch):
    with pytest.raises(PycatarError, match="No such file"):
        py_extract(source, tree, archives["default"], os.path.join(scratch, "A"), "dir/nope")
    with pytest.raises(PycatarError):
        py_extract(source, tree, archives["default"], os.path.join(scratch, "A"), "file.txt/below")


# --------------------------------------------------------------------------- existing output


def _populate_existing(dest: str, outside: str) -> None:
    """An output directory left over from something else."""
    os.makedirs(os.path.join(dest, "dir", "stale-dir", "deeper"))
    with open(os.path.join(dest, "dir", "stale-dir", "deeper", "x"), "w") as f:
        f.write("stale")
    with open(os.path.join(dest, "stale-file"), "w") as f:
        f.write("stale")
    with open(os.path.join(dest, "empty-dir"), "w") as f:  # a file where the archive has a directory
        f.write("in the way")
    os.makedirs(os.path.join(dest, "file.txt", "inner"))  # a directory where the archive has a file
    os.symlink(outside, os.path.join(dest, "stale-link"))  # deleting it must not touch the target
    os.symlink(outside, os.path.join(dest, "dir", "sub"))  # a symlink where the archive has a directory
    with open(os.path.join(dest, "empty"), "w") as f:  # a file the archive replaces
        f.write("old content")
    os.chmod(os.path.join(dest, "empty"), 0)


@pytest.mark.parametrize("source", ["encoder", "archive"])
def test_existing_output(source, tree, archives, scratch, run_casync):
    catar = archives["default"]
    outside = os.path.join(scratch, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "precious"), "w") as f:
        f.write("keep me")
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    _populate_existing(a, outside)
    _populate_existing(b, outside)
    stats = py_extract(source, tree, catar, a)
    run_casync("extract", catar, b)
    assert stats.deleted == 3  # dir/stale-dir, stale-file, stale-link
    assert mtree(run_casync, a) == mtree(run_casync, b) == mtree(run_casync, catar)
    assert dump_xattrs(a) == dump_xattrs(b)
    assert os.listdir(outside) == ["precious"]  # nothing written through the symlinks, nothing removed
    assert not os.path.islink(os.path.join(a, "dir", "sub"))
    assert temp_names(a) == []


@pytest.mark.parametrize("source", ["encoder", "archive"])
def test_existing_output_no_delete(source, tree, archives, scratch, run_casync):
    catar = archives["default"]
    outside = os.path.join(scratch, "outside")
    os.makedirs(outside)
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    _populate_existing(a, outside)
    _populate_existing(b, outside)
    py_extract(source, tree, catar, a, delete=False)
    run_casync("extract", "--delete=no", catar, b)
    # the stale entries were made separately for A and B: their times differ
    assert [x for x in mtree(run_casync, a) if "stale" not in x] == [x for x in mtree(run_casync, b) if "stale" not in x]
    assert sorted(x.split()[0] for x in mtree(run_casync, a)) == sorted(x.split()[0] for x in mtree(run_casync, b))
    assert os.path.exists(os.path.join(a, "dir", "stale-dir", "deeper", "x"))
    assert os.path.islink(os.path.join(a, "stale-link"))
    assert os.listdir(outside) == []


def test_symlink_in_target_is_not_followed(workdir, scratch, run_casync):
    """The archive has evil/x; the output holds evil -> outside: x must not land in outside."""
    src = os.path.join(scratch, "src")
    os.makedirs(os.path.join(src, "evil"))
    with open(os.path.join(src, "evil", "x"), "w") as f:
        f.write("payload")
    catar = os.path.join(scratch, "evil.catar")
    run_casync("make", catar, src)
    outside = os.path.join(scratch, "outside")
    os.mkdir(outside)
    for source in ["encoder"] + (["archive"] if HAVE_DECODER else []):
        dest = os.path.join(scratch, "dest-" + source)
        os.mkdir(dest)
        os.symlink(outside, os.path.join(dest, "evil"))
        py_extract(source, src, catar, dest)
        assert os.listdir(outside) == []
        assert not os.path.islink(os.path.join(dest, "evil"))
        with open(os.path.join(dest, "evil", "x")) as f:
            assert f.read() == "payload"
        # and with the sub-path: the boundary directory's own symlinked child is replaced too
        dest2 = os.path.join(scratch, "dest2-" + source)
        os.mkdir(dest2)
        os.symlink(outside, os.path.join(dest2, "evil"))
        py_extract(source, src, catar, dest2, "evil")
        assert os.listdir(outside) == []
        assert os.path.isfile(os.path.join(dest2, "evil", "x"))


# --------------------------------------------------------------------------- chattr flags


@pytest.fixture(scope="module")
def flags_tree(workdir):
    root = os.path.join(workdir, "flags-tree")
    os.makedirs(os.path.join(root, "immdir"))
    for name, content in [("imm", "immutable"), ("app", "append only"), ("sync", "sync"),
                          ("immdir/inside", "in an immutable dir"), ("plain", "plain")]:
        with open(os.path.join(root, name), "w") as f:
            f.write(content)
    os.makedirs(os.path.join(root, "noatime-dir"))
    for path, flag in [("imm", "+i"), ("app", "+a"), ("sync", "+S"), ("immdir", "+i"), ("noatime-dir", "+A")]:
        subprocess.run(["chattr", flag, os.path.join(root, path)], check=True)
    yield root
    _rmtree(root)


@pytest.mark.parametrize("source", ["encoder", "archive"])
@pytest.mark.parametrize("args", [[], ["--without=flag-immutable"]], ids=["default", "no-immutable"])
def test_chattr_flags(args, source, flags_tree, scratch, run_casync):
    catar = os.path.join(scratch, "flags.catar")
    run_casync(*args, "make", catar, flags_tree)
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    py_extract(source, flags_tree, catar, a)
    run_casync("extract", catar, b)
    ca, cb = dump_chattr(a), dump_chattr(b)
    assert ca == cb
    assert ca["app"] & FS_APPEND_FL and ca["sync"] & FS_SYNC_FL and ca["noatime-dir"] & FS_NOATIME_FL
    assert bool(ca["imm"] & FS_IMMUTABLE_FL) == (not args)
    assert bool(ca["immdir"] & FS_IMMUTABLE_FL) == (not args)
    assert mtree(run_casync, a) == mtree(run_casync, b)
    with open(os.path.join(a, "immdir", "inside")) as f:
        assert f.read() == "in an immutable dir"


@pytest.mark.parametrize("source", ["encoder", "archive"])
def test_undo_immutable(source, flags_tree, scratch, run_casync):
    """Extracting again over an earlier extraction: immutable files are in the way unless undone."""
    catar = os.path.join(scratch, "flags.catar")
    run_casync("make", catar, flags_tree)
    a = os.path.join(scratch, "A")
    py_extract(source, flags_tree, catar, a)
    os.mkdir(os.path.join(scratch, "B"))
    with pytest.raises(PycatarError, match="Operation not permitted"):
        py_extract(source, flags_tree, catar, a)
    assert temp_names(a) == []
    # casync agrees that this is an error
    b = os.path.join(scratch, "B")
    run_casync("extract", catar, b)
    assert run_casync("extract", catar, b, check=False).returncode != 0
    # the append-only file blocks a re-extraction too; --undo-immutable only clears +i (as casync)
    subprocess.run(["chattr", "-a", os.path.join(a, "app")], check=True)
    py_extract(source, flags_tree, catar, a, undo_immutable=True)
    assert dump_chattr(a)["imm"] & FS_IMMUTABLE_FL
    assert mtree(run_casync, a) == mtree(run_casync, catar)


# --------------------------------------------------------------------------- failures


def _entry(path, mode, **kw):
    return Entry(path=path, mode=mode, feature_flags=0xB0000001FFEFFE26, mtime=1_500_000_000_000_000_000, **kw)


def _fake(entries, payloads):
    """A stand-in decoder: entries, and payload pieces (a list, or an exception to raise) by path."""
    current = []

    def gen():
        for e in entries:
            current[:] = [e]
            yield e

    def read_payload():
        for piece in payloads[current[0].path]:
            if isinstance(piece, BaseException):
                raise piece
            yield piece

    return gen(), read_payload


def test_failure_midway_leaves_no_partial_file(scratch):
    dest = os.path.join(scratch, "dest")
    os.mkdir(dest)
    with open(os.path.join(dest, "big"), "w") as f:
        f.write("the old, complete version")
    entries = [
        _entry("", stat.S_IFDIR | 0o755),
        _entry("big", stat.S_IFREG | 0o644, size=3 << 20),
        _entry("later", stat.S_IFREG | 0o644, size=1),
    ]
    gen, rp = _fake(entries, {"big": [b"x" * (1 << 20), FormatError("archive truncated")], "later": [b"y"]})
    with pytest.raises(FormatError, match="truncated"):
        extract(gen, rp, dest)
    assert sorted(os.listdir(dest)) == ["big"]  # no temporary file left, nothing after the failure
    with open(os.path.join(dest, "big")) as f:
        assert f.read() == "the old, complete version"


def test_truncated_archive(tree, archives, scratch):
    if not HAVE_DECODER:
        pytest.skip("pycatar.decoder not available yet")
    catar = os.path.join(scratch, "cut.catar")
    with open(archives["default"], "rb") as f:
        data = f.read()
    # cut inside the large random file's payload
    with open(os.path.join(tree, "dir", "sub", "deeper", "random.bin"), "rb") as f:
        needle = f.read(4096)
    pos = data.index(needle)
    with open(catar, "wb") as f:
        f.write(data[:pos + (1 << 20)])
    dest = os.path.join(scratch, "A")
    with pytest.raises(FormatError):
        extract_archive(catar, dest)
    assert os.path.isdir(os.path.join(dest, "dir", "sub", "deeper"))  # got that far
    assert os.listdir(os.path.join(dest, "dir", "sub", "deeper")) == []  # but no partial random.bin
    assert temp_names(dest) == []


def test_payload_size_mismatch(scratch):
    entries = [_entry("", stat.S_IFDIR | 0o755), _entry("f", stat.S_IFREG | 0o644, size=10)]
    gen, rp = _fake(entries, {"f": [b"short"]})
    with pytest.raises(FormatError, match="5 bytes"):
        extract(gen, rp, os.path.join(scratch, "d"))
    assert os.listdir(os.path.join(scratch, "d")) == []


@pytest.mark.parametrize("bad", ["..", "a/../../x", "."])
def test_bad_names_rejected(bad, scratch):
    entries = [_entry("", stat.S_IFDIR | 0o755), _entry(bad, stat.S_IFREG | 0o644, size=0)]
    gen, rp = _fake(entries, {bad: []})
    with pytest.raises(FormatError):
        extract(gen, rp, os.path.join(scratch, "d"))


def test_root_must_be_directory(scratch):
    gen, rp = _fake([_entry("", stat.S_IFREG | 0o644, size=0)], {"": []})
    with pytest.raises(FormatError, match="not a directory"):
        extract(gen, rp, os.path.join(scratch, "d"))


def test_output_is_a_file(scratch):
    path = os.path.join(scratch, "file")
    open(path, "w").close()
    gen, rp = _fake([_entry("", stat.S_IFDIR | 0o755)], {})
    with pytest.raises(PycatarError, match="not a directory"):
        extract(gen, rp, path)


def test_holes(scratch):
    size = 10 * 4096 + 100
    data = b"a" * 5000 + bytes(3 * 4096 + 2000) + b"b" * 10 + bytes(size - 5000 - 3 * 4096 - 2010)
    assert len(data) == size
    for punch in (True, False):
        dest = os.path.join(scratch, f"d{punch}")
        entries = [_entry("", stat.S_IFDIR | 0o755), _entry("f", stat.S_IFREG | 0o600, size=size),
                   _entry("zeros", stat.S_IFREG | 0o600, size=1 << 20)]
        pieces = [data[i:i + 777] for i in range(0, size, 777)]  # pieces not aligned to blocks
        gen, rp = _fake(entries, {"f": pieces, "zeros": [bytes(1 << 20)]})
        stats = extract(gen, rp, dest, punch_holes=punch)
        with open(os.path.join(dest, "f"), "rb") as f:
            assert f.read() == data
        st = os.stat(os.path.join(dest, "zeros"))
        assert st.st_size == 1 << 20
        if punch:
            assert stats.hole_bytes >= (1 << 20) + 2 * 4096
            assert st.st_blocks == 0
        else:
            assert stats.hole_bytes == 0
            assert st.st_blocks * 512 >= 1 << 20


def test_skipped_types_and_on_entry(scratch):
    flags = int(F.WITH_PERMISSIONS | F.WITH_NSEC_TIME)  # no symlinks, fifos, devices, sockets
    entries = [
        Entry(path="", mode=stat.S_IFDIR | 0o750, feature_flags=flags, mtime=10**18),
        Entry(path="fifo", mode=stat.S_IFIFO | 0o644, feature_flags=flags, mtime=10**18),
        Entry(path="l", mode=stat.S_IFLNK | 0o777, feature_flags=flags, mtime=10**18, target="x"),
    ]
    dest = os.path.join(scratch, "d")
    os.mkdir(dest)
    open(os.path.join(dest, "l"), "w").close()  # listed in the archive: neither replaced nor deleted
    seen = []
    gen, rp = _fake(entries, {})
    stats = extract(gen, rp, dest, on_entry=lambda e: seen.append(e.path))
    assert stats.skipped == 2 and stats.deleted == 0
    assert os.listdir(dest) == ["l"] and os.path.isfile(os.path.join(dest, "l"))
    st = os.stat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime_ns == 10**18
    assert seen == [""]


def test_owners_names_and_shift(scratch):
    flags = int(F.WITH_32BIT_UIDS | F.WITH_USER_NAMES | F.WITH_PERMISSIONS | F.WITH_SYMLINKS)
    mk = lambda path, mode, **kw: Entry(path=path, mode=mode, feature_flags=flags, **kw)
    entries = [
        mk("", stat.S_IFDIR | 0o755),
        mk("by-name", stat.S_IFREG | 0o4755, uid=4242, gid=4343, user="daemon", group="daemon"),  # names win
        mk("by-id", stat.S_IFREG | 0o2750, uid=5, gid=6),
        mk("numeric-name", stat.S_IFREG | 0o644, uid=0, gid=0, user="777", group="888"),
        mk("link", stat.S_IFLNK | 0o777, uid=7, gid=8, target="by-id"),
    ]
    gen, rp = _fake(entries, {"by-name": [], "by-id": [], "numeric-name": []})
    dest = os.path.join(scratch, "d")
    extract(gen, rp, dest, uid_shift=100000)
    owner = lambda n: (lambda s: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)))(os.lstat(os.path.join(dest, n)))
    assert owner("by-name") == (1, 1, 0o4755)  # set-uid survives: chmod comes after chown
    assert owner("by-id") == (100005, 100006, 0o2750)
    assert owner("numeric-name") == (100777, 100888, 0o644)
    assert owner("link")[:2] == (100007, 100008)  # lchown, not the target

    entries = [mk("", stat.S_IFDIR | 0o755), mk("x", stat.S_IFREG | 0o644, user="no-such-user-here", group="root")]
    gen, rp = _fake(entries, {"x": []})
    with pytest.raises(PycatarError, match="unknown user name"):
        extract(gen, rp, os.path.join(scratch, "e"))
    assert os.listdir(os.path.join(scratch, "e")) == []


def test_acls_from_entry(scratch):
    from pycatar.entry import ACLDefault, ACLEntry

    flags = int(F.WITH_32BIT_UIDS | F.WITH_ACL | F.WITH_NSEC_TIME | F.WITH_DEVICE_NODES)
    unset = 2**64 - 1
    entries = [
        Entry(path="", mode=stat.S_IFDIR | 0o755, feature_flags=flags,
              acl_default=ACLDefault(user_obj=7, group_obj=5, other=0, mask=unset)),
        Entry(path="f", mode=stat.S_IFREG | 0o640, feature_flags=flags, acl_group_obj=4,
              acl_user=[ACLEntry(2000, 7), ACLEntry(1000, 6)], acl_group=[ACLEntry(0, 2, "daemon")]),
        Entry(path="dev", mode=stat.S_IFCHR | 0o600, feature_flags=flags, rdev_major=1, rdev_minor=3,
              acl_group_obj=0, acl_user=[ACLEntry(1000, 4)]),
    ]
    gen, rp = _fake(entries, {"f": []})
    dest = os.path.join(scratch, "d")
    extract(gen, rp, dest)
    A = fsmeta
    acl = A.parse_acl_xattr(os.getxattr(os.path.join(dest, "f"), A.ACL_XATTR_ACCESS))
    assert acl == [(A.ACL_USER_OBJ, 6, A.ACL_UNDEFINED_ID), (A.ACL_USER, 6, 1000), (A.ACL_USER, 7, 2000),
                   (A.ACL_GROUP_OBJ, 4, A.ACL_UNDEFINED_ID), (A.ACL_GROUP, 2, 1), (A.ACL_MASK, 4, A.ACL_UNDEFINED_ID),
                   (A.ACL_OTHER, 0, A.ACL_UNDEFINED_ID)]
    assert stat.S_IMODE(os.stat(os.path.join(dest, "f")).st_mode) == 0o640  # the group bits are the mask
    dacl = A.parse_acl_xattr(os.getxattr(dest, A.ACL_XATTR_DEFAULT))
    assert [(t, p) for t, p, _ in dacl] == [(A.ACL_USER_OBJ, 7), (A.ACL_GROUP_OBJ, 5), (A.ACL_OTHER, 0)]
    # a device node gets its ACL too (through /proc/self/fd, never following a symlink)
    dacc = A.parse_acl_xattr(os.getxattr(os.path.join(dest, "dev"), A.ACL_XATTR_ACCESS, follow_symlinks=False))
    assert (A.ACL_USER, 4, 1000) in dacc
    # a minimal ACL is just the mode: the kernel stores no xattr for it
    assert A.get_xattr(dest, A.ACL_XATTR_ACCESS) is None


@pytest.mark.parametrize("source", ["encoder", "archive"])
def test_read_only_flag(source, scratch, run_casync):
    src = os.path.join(scratch, "src")
    os.makedirs(os.path.join(src, "ro-dir"))
    os.makedirs(os.path.join(src, "rw-dir"))
    for name, mode in [("ro", 0o444), ("rw", 0o640), ("ro-dir/x", 0o400)]:
        with open(os.path.join(src, name), "w") as f:
            f.write(name)
        os.chmod(os.path.join(src, name), mode)
    os.chmod(os.path.join(src, "ro-dir"), 0o555)
    catar = os.path.join(scratch, "ro.catar")
    run_casync("--with=read-only", "--with=symlinks", "make", catar, src)
    a, b = os.path.join(scratch, "A"), os.path.join(scratch, "B")
    py_extract(source, src, catar, a)
    run_casync("extract", catar, b)
    mode = lambda root, n: stat.S_IMODE(os.lstat(os.path.join(root, n)).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    want_rw_file = (0o600 | 0o666) & ~umask  # readable and writable as created: left alone
    # writable entries: casync and pycatar agree
    for name in ("rw", "rw-dir"):
        assert mode(a, name) == mode(b, name)
    assert mode(a, "rw") == want_rw_file
    # read-only entries: readable, not writable (casync leaves 0000 / 0100 here)
    assert mode(a, "ro") == (0o600 | 0o444) & ~umask & 0o444 | 0o400
    assert mode(a, "ro-dir") == 0o500
    assert mode(a, "ro-dir/x") & 0o222 == 0 and mode(a, "ro-dir/x") & 0o400
    assert (mode(b, "ro"), mode(b, "ro-dir")) == (0, 0o100)
    os.chmod(os.path.join(b, "ro-dir"), 0o700)  # so that cleanup can get in



def test_failure_inside_replacing_directory(scratch):
    """A directory that replaces a file is built under a temporary name: a failure inside it leaves the
    old file in place and no temporary directory behind."""
    dest = os.path.join(scratch, "dest")
    os.mkdir(dest)
    with open(os.path.join(dest, "sub"), "w") as f:
        f.write("old file")
    entries = [
        _entry("", stat.S_IFDIR | 0o755),
        _entry("sub", stat.S_IFDIR | 0o755),
        _entry("sub/ok", stat.S_IFREG | 0o644, size=2),
        _entry("sub/big", stat.S_IFREG | 0o644, size=100),
    ]
    gen, rp = _fake(entries, {"sub/ok": [b"ok"], "sub/big": [b"x" * 10, FormatError("archive truncated")]})
    with pytest.raises(FormatError):
        extract(gen, rp, dest)
    assert os.listdir(dest) == ["sub"]
    with open(os.path.join(dest, "sub")) as f:
        assert f.read() == "old file"


@pytest.mark.parametrize("source", ["encoder", "archive"])
def test_long_names(source, scratch, run_casync):
    """255-byte names: casync's temporary names overflow (it fails with ENAMETOOLONG); ours are shortened."""
    src = os.path.join(scratch, "src")
    os.mkdir(src)
    long_file, long_link = "f" * 255, "ä" * 127  # 254 bytes of UTF-8
    with open(os.path.join(src, long_file), "w") as f:
        f.write("long")
    os.symlink(long_file, os.path.join(src, long_link))
    catar = os.path.join(scratch, "x.catar")
    run_casync("make", catar, src)
    a = os.path.join(scratch, "A")
    py_extract(source, src, catar, a)
    assert sorted(os.listdir(a)) == sorted([long_file, long_link])
    assert os.readlink(os.path.join(a, long_link)) == long_file
    assert mtree(run_casync, a) == mtree(run_casync, catar)
    assert run_casync("extract", catar, os.path.join(scratch, "B"), check=False).returncode != 0
