"""The fast encoder (CatarEncoder.buffers: one loop, big buffers, fewer syscalls) makes the same
bytes as the reference serialisation of TreeWalker.walk, for every flag set, on ext4 and tmpfs,
with buffer boundaries anywhere."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from pycatar.errors import PycatarError

import pycatar
from pycatar import archive, encoder, flags, fsmeta
from pycatar.encoder import CatarEncoder, CatarSerializer, EncoderOptions, TreeWalker
from trees import make_full_tree, remove_tree

F = flags.F
ALL = int(flags.FLAGS_MAX) & ~int(F.DIGEST_BLAKE3)
FLAG_SETS = {
    "default": int(flags.DEFAULT),
    "unix": int(flags.WITH_UNIX),
    "none": 0,
    "best": int(flags.WITH_BEST),
    "all-excludes": int(flags.DEFAULT) | int(F.EXCLUDE_SUBMOUNTS),
    "fat": int(flags.WITH_FAT),
    "fuse": int(flags.WITH_FUSE),
    "acl-only": int(F.WITH_ACL),
    "selinux-only": int(F.WITH_SELINUX) | int(F.WITH_NSEC_TIME),
    "fcaps-only": int(F.WITH_FCAPS),
    "xattrs-no-acl": int(flags.WITH_BEST) & ~int(F.WITH_ACL),
    "16bit-usec-chattr": int(F.WITH_16BIT_UIDS | F.WITH_USEC_TIME) | int(flags.WITH_CHATTR),
    "2sec-readonly": int(F.WITH_2SEC_TIME | F.WITH_READ_ONLY | F.WITH_SYMLINKS),
    "nodump-kept": int(flags.DEFAULT) & ~int(F.EXCLUDE_NODUMP),
    "no-exclude-file": int(flags.DEFAULT) & ~int(F.EXCLUDE_FILE),
    "projid": int(F.WITH_QUOTA_PROJID | F.WITH_PERMISSIONS),
}


def _reference(root, ff, **options) -> bytes:
    walker = TreeWalker(root, EncoderOptions(ff, **options))
    return b"".join(CatarSerializer().serialize(walker.walk(), CatarEncoder._payload))


def _fast(root, ff, **options) -> bytes:
    enc = CatarEncoder(root, ff, **options)
    data = b"".join(bytes(b) for b in enc)
    assert enc.offset == len(data)
    return data


def _tmpfs_tree(base: str) -> str:
    """A small tree on tmpfs with xattrs, an ACL and a security label (no SELinux needed)."""
    root = os.path.join(base, "t")
    os.makedirs(os.path.join(root, "d", "e"))
    for i, name in enumerate(["a", "b.txt", "d/c", "d/e/f", "plain"]):
        with open(os.path.join(root, name), "wb") as f:
            f.write(bytes([i]) * (i * 1000 + 1))
    os.setxattr(os.path.join(root, "a"), "user.x", b"1")
    os.setxattr(os.path.join(root, "d", "c"), fsmeta.ACL_XATTR_ACCESS, fsmeta.build_acl_xattr([
        (fsmeta.ACL_USER_OBJ, 6, 0), (fsmeta.ACL_USER, 4, 1000), (fsmeta.ACL_GROUP_OBJ, 4, 0),
        (fsmeta.ACL_MASK, 4, 0), (fsmeta.ACL_OTHER, 0, 0)]))
    os.setxattr(os.path.join(root, "d"), fsmeta.ACL_XATTR_DEFAULT, fsmeta.build_acl_xattr([
        (fsmeta.ACL_USER_OBJ, 7, 0), (fsmeta.ACL_GROUP_OBJ, 5, 0), (fsmeta.ACL_OTHER, 1, 0)]))
    try:
        os.setxattr(os.path.join(root, "b.txt"), "security.selinux", b"system_u:object_r:x_t:s0\0")
    except OSError:
        pass
    os.symlink("a", os.path.join(root, "link"))
    os.mkfifo(os.path.join(root, "fifo"))
    return root


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fasttree") / "full")
    make_full_tree(root, large_size=5 << 20)
    yield root
    remove_tree(root)


@pytest.fixture(scope="module")
def shm_tree():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    base = tempfile.mkdtemp(dir="/dev/shm", prefix="pycatar-test-")
    yield _tmpfs_tree(base)
    remove_tree(base)


@pytest.mark.parametrize("name", sorted(FLAG_SETS))
def test_fast_equals_reference(name, full_tree, shm_tree):
    ff = flags.normalize(FLAG_SETS[name])
    for root in (full_tree, shm_tree):
        assert _fast(root, ff) == _reference(root, ff), (name, root)


def test_fast_equals_reference_with_options(full_tree):
    ff = int(flags.DEFAULT)
    for options in ({"uid_shift": 0, "uid_range": 1000}, {"owner": 0, "group": 0},
                    {"clamp_mtime_ns": 1_600_000_010_000_000_000}):
        assert _fast(full_tree, ff, **options) == _reference(full_tree, ff, **options), options


@pytest.mark.parametrize("size", [17, 100, 4096, 65537])
def test_buffer_boundaries_anywhere(size, full_tree, shm_tree, monkeypatch):
    monkeypatch.setattr(encoder, "OUT_BUFFER", size)
    for root in (full_tree, shm_tree):
        enc = CatarEncoder(root, int(flags.DEFAULT))
        pieces = [bytes(b) for b in enc]
        assert all(len(p) == size for p in pieces[:-1])
        assert b"".join(pieces) == _reference(root, int(flags.DEFAULT))


def test_make_archive_recycles_buffers_and_digests(full_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "OUT_BUFFER", 1000)
    out = tmp_path / "x.catar"
    res = archive.make_archive(str(out), full_tree)
    ref = _reference(full_tree, int(flags.DEFAULT))
    assert out.read_bytes() == ref
    assert res.size == len(ref)
    assert res.digest_hex == hashlib.new("sha512_256", ref).hexdigest()


def test_make_archive_index_in_thread_same_stream(full_tree, tmp_path):
    res = archive.make_archive_index(str(tmp_path / "x.caidx"), full_tree, store=str(tmp_path / "s"))
    ref = _reference(full_tree, int(flags.DEFAULT))
    assert res.size == len(ref)
    assert res.digest_hex == hashlib.new("sha512_256", ref).hexdigest()
    with pycatar.open(tmp_path / "x.caidx", store=str(tmp_path / "s")) as ar:
        assert ar.getnames() == [e.path or "." for e in encoder.iter_entries(full_tree, int(flags.DEFAULT))]


def test_errors_propagate_and_close_fds(tmp_path):
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"x" * 10)
    before = set(os.listdir("/proc/self/fd"))
    os.chown(root / "d" / "f", 70000, 0)
    with pytest.raises(PycatarError, match="'d/f'.*70000"):
        # 16-bit uids cannot store this owner: the walk fails half-way, every fd is closed
        list(CatarEncoder(str(root), int(F.WITH_16BIT_UIDS)))
    assert set(os.listdir("/proc/self/fd")) == before
    with pytest.raises(PycatarError, match="'d/f'.*70000"):
        list(archive._in_thread(CatarEncoder(str(root), int(F.WITH_16BIT_UIDS))))
    it = archive._in_thread(CatarEncoder(str(root), int(flags.DEFAULT)))
    next(it)
    it.close()
    assert set(os.listdir("/proc/self/fd")) == before


def test_buffers_handed_out_as_they_fill(tmp_path, monkeypatch):
    """A file much larger than a buffer, or many small entries, never pile up buffers: at most two
    are allocated and not yet handed out (so a caller recycling them needs only a few), as long as
    no single record is larger than a buffer (here the goodbye table of 31 items is not)."""
    monkeypatch.setattr(encoder, "OUT_BUFFER", 1000)
    root = tmp_path / "r"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(200_000))
    for i in range(30):
        os.symlink("big" * 50, root / f"l{i:03}")
    allocated = [0]

    def alloc():
        allocated[0] += 1
        return bytearray(1000)

    handed = 0
    for mv in CatarEncoder(str(root), int(flags.DEFAULT)).buffers(alloc):
        handed += 1
        assert allocated[0] - handed <= 2
    assert allocated[0] - handed <= 1


@pytest.mark.parametrize("listed", ["complete", "selinux-on", "never-trusted"])
def test_getxattr_shortcut_variants(listed, full_tree, shm_tree, monkeypatch):
    """Whether or not listxattr() is trusted to name the ACL and SELinux xattrs, same bytes."""
    if listed == "selinux-on":
        monkeypatch.setattr(encoder, "_selinux_enabled", lambda: True)
    elif listed == "never-trusted":
        monkeypatch.setattr(encoder, "_LISTXATTR_COMPLETE", frozenset())
    for name in ("default", "best", "acl-only", "selinux-only"):
        ff = flags.normalize(FLAG_SETS[name])
        for root in (full_tree, shm_tree):
            assert _fast(root, ff) == _reference(root, ff), (name, root)


def test_unreadable_directory_fails_without_leaking_fds(tmp_path, monkeypatch):
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x")
    real_list = encoder._FastEncoder._list

    def failing_list(self, dfd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{dfd}")) == "b":
            raise PermissionError(13, "Permission denied")
        return real_list(self, dfd)

    monkeypatch.setattr(encoder._FastEncoder, "_list", failing_list)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PermissionError):
        list(CatarEncoder(str(root), int(flags.DEFAULT)))
    assert set(os.listdir("/proc/self/fd")) == before
