"""pycatar.operations: make, extract, digest and cat as library calls (what the verbs call).

The oracles are independent of pycatar: casync makes and digests the same trees and files, GNU tar
packs and unpacks the tars, and the source tree itself is what an extraction must give back."""

from __future__ import annotations

import filecmp
import io
import os
import subprocess

import pytest

from pycatar import operations
from pycatar.location import open_stores

EPOCH = 1_700_000_000


def _tree(root) -> str:
    os.makedirs(root / "sub" / "deeper")
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 700)
    (root / "sub" / "deeper" / "c").write_bytes(b"")
    os.symlink("a.txt", root / "link")
    os.chmod(root / "sub" / "b.bin", 0o600)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(EPOCH * 10**9, EPOCH * 10**9 + 123), follow_symlinks=False)
    os.utime(root, ns=(EPOCH * 10**9, EPOCH * 10**9))
    return str(root)


def _same_tree(a, b) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files), cmp.report()
    for sub in cmp.common_dirs:
        _same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_make_equals_casync(tmp_path, run_casync):
    """An archive, an archive index and a blob index made by the library are casync's bytes, and the
    digests it returns are those casync prints."""
    tree = _tree(tmp_path / "tree")
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(300_000))
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    for name, source, kind in (("t.catar", tree, "archive"), ("t.caidx", tree, "archive-index"),
                               ("b.caibx", str(blob), "blob-index")):
        result = operations.make(str(mine / name), source, kind=kind, store=str(mine / "store"))
        printed = run_casync(f"--store={theirs / 'store'}", "make", theirs / name, source).stdout.decode().strip()
        assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
        assert result.digest_hex == printed, name
    for dirpath, _dirs, files in os.walk(theirs / "store"):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), theirs / "store")
            assert (mine / "store" / rel).is_file(), rel


def test_reproducible_make_is_casync_with_the_reproducible_flags(tmp_path, run_casync):
    """reproducible=True: the fixed feature set (REPRO-1), owners 0/0 (REPRO-3; the tree is root's),
    mtimes clamped to source_date_epoch (REPRO-4): casync's archive of the same tree with those flags
    and the late file's mtime set to the epoch by hand."""
    tree = _tree(tmp_path / "tree")
    late = EPOCH + 1000
    os.utime(os.path.join(tree, "a.txt"), (late, late))
    clamped = _tree(tmp_path / "clamped")
    os.utime(os.path.join(clamped, "a.txt"), (EPOCH, EPOCH))
    os.utime(os.path.join(clamped, "sub", "b.bin"), ns=(EPOCH * 10**9, EPOCH * 10**9))  # sec-time
    for t in (tree, clamped):
        for dirpath, dirnames, filenames in os.walk(t):
            for name in filenames + dirnames + ["."]:
                os.lchown(os.path.join(dirpath, name), 0, 0)
    out = tmp_path / "mine.catar"
    operations.make(str(out), tree, reproducible=True, source_date_epoch=EPOCH)
    features = ["32bit-uids", "sec-time", "permissions", "symlinks", "device-nodes", "fifos", "sockets"]
    run_casync(*[f"--with={f}" for f in features], "--exclude-nodump=no", "--exclude-file=no",
               "make", tmp_path / "theirs.catar", clamped)
    assert out.read_bytes() == (tmp_path / "theirs.catar").read_bytes()


def test_tar_source_and_tar_sink_round_trip_through_gnu_tar(tmp_path):
    """source_format="tar" reads what GNU tar wrote; output_format="tar" writes what GNU tar unpacks
    into the same tree."""
    tree = _tree(tmp_path / "tree")
    subprocess.run(["tar", "--format=pax", "-cf", tmp_path / "in.tar", "-C", tree, "."], check=True)
    operations.make(str(tmp_path / "t.caidx"), str(tmp_path / "in.tar"), kind="archive-index",
                    source_format="tar", store=str(tmp_path / "store"))
    stats = operations.extract(str(tmp_path / "t.caidx"), str(tmp_path / "out.tar"), kind="archive-index",
                               output_format="tar", stores=[str(tmp_path / "store")])
    assert stats.members >= 6
    dest = tmp_path / "dest"
    dest.mkdir()
    subprocess.run(["tar", "-xf", tmp_path / "out.tar", "-C", dest], check=True)
    _same_tree(tree, dest)
    assert os.readlink(dest / "link") == "a.txt"
    assert os.stat(dest / "sub" / "b.bin").st_mode & 0o777 == 0o600
    assert os.stat(dest / "a.txt").st_mtime_ns == EPOCH * 10**9 + 123  # pax keeps nanoseconds
    # a sub-tree to a binary file object
    buf = io.BytesIO()
    operations.extract(str(tmp_path / "t.caidx"), buf, kind="archive-index", subpath="sub",
                       output_format="tar", stores=[str(tmp_path / "store")])
    (tmp_path / "sub.tar").write_bytes(buf.getvalue())
    names = subprocess.run(["tar", "-tf", tmp_path / "sub.tar"], check=True, capture_output=True, text=True)
    assert sorted(n.rstrip("/") for n in names.stdout.split()) == ["sub", "sub/b.bin", "sub/deeper",
                                                                    "sub/deeper/c"]


def test_extract_digest_and_cat_of_what_casync_made(tmp_path, run_casync):
    """extract gives back the tree casync archived (and the file it chunked); digest prints what
    casync's digest prints; cat returns the asked bytes of the file."""
    tree = _tree(tmp_path / "tree")
    blob = tmp_path / "blob"
    data = os.urandom(500_000)
    blob.write_bytes(data)
    store = str(tmp_path / "store")
    run_casync(f"--store={store}", "make", tmp_path / "t.caidx", tree)
    run_casync(f"--store={store}", "make", tmp_path / "b.caibx", blob)
    run_casync("make", tmp_path / "t.catar", tree)
    stores = open_stores([store])
    summary = operations.extract(str(tmp_path / "t.caidx"), str(tmp_path / "out"), kind="archive-index",
                                 stores=stores)
    _same_tree(tree, tmp_path / "out")
    assert summary is not None
    assert operations.extract(str(tmp_path / "t.catar"), str(tmp_path / "out2"), kind="archive") is None
    _same_tree(tree, tmp_path / "out2")
    operations.extract(str(tmp_path / "b.caibx"), str(tmp_path / "b.out"), kind="blob-index", stores=stores)
    assert (tmp_path / "b.out").read_bytes() == data

    def casync_digest(*args):
        return run_casync(f"--store={store}", "digest", *args).stdout.decode().strip()

    assert operations.digest(tree, kind="directory") == casync_digest(tree)
    assert operations.digest(str(blob), kind="blob") == casync_digest(blob)
    assert operations.digest(str(tmp_path / "b.caibx"), kind="blob-index", stores=stores) == \
        casync_digest(tmp_path / "b.caibx")
    assert operations.digest(str(tmp_path / "t.caidx"), kind="archive-index", stores=stores, subpath="sub") == \
        casync_digest(tmp_path / "t.caidx", "sub")

    buf = io.BytesIO()
    assert operations.cat(str(tmp_path / "b.caibx"), buf, 123_456, 100_000, stores=stores) == 100_000
    assert buf.getvalue() == data[123_456:223_456]


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        operations.make(str(tmp_path / "x"), str(tmp_path), kind="tarball")
    with pytest.raises(ValueError, match="output_format"):
        operations.extract(None, str(tmp_path), kind="archive", output_format="zip")
    with pytest.raises(ValueError, match="blob index"):
        operations.make(str(tmp_path / "x.caibx"), None, kind="blob-index", source_format="tar")
