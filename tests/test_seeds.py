"""Extraction with seeds (issue 4, spec/seeds.md): what is already on disk is not fetched.

The central check: the new index goes into a store S, then every chunk the seed provides is
deleted from S, so S holds *only* the chunks the seed lacks.  Extraction must still succeed and
give exactly the source (byte compare for blobs, ``casync mtree`` for trees)."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import IN_CI

from conftest_chunk_helpers import make_blob
from pycatar import assembly, blob, digest as _digest
from pycatar.chunker import DEFAULT_CHUNK_SIZES
from pycatar.encoder import CatarEncoder
from pycatar.index import IndexReader
from pycatar.seeds import TreeLayout
from pycatar.store import LocalStore
from trees import make_full_tree, remove_tree

MAX = DEFAULT_CHUNK_SIZES[2]


def pycatar(*args, check=True, cwd=None):
    p = subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"pycatar {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


def extract_json(*args) -> dict:
    p = pycatar("--json", "extract", *args)
    return json.loads(p.stdout)


def index_ids(path) -> set[bytes]:
    with IndexReader(str(path)) as r:
        return {c.id for c in r.chunks()}


def prune(store, ids) -> tuple[int, int]:
    """Delete the chunks ``ids`` from ``store``: (removed, remaining)."""
    s = LocalStore(str(store))
    removed = sum(1 for cid in ids if s.remove(cid))
    return removed, len(list(s))


def copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


def check_accounting(summary: dict, index) -> None:
    """SEED-10: every chunk is accounted for exactly once, per source and in total."""
    with IndexReader(str(index)) as r:
        size, count = r.blob_size, r.count
    assert summary["bytes"] == size
    assert summary["chunks"] == count
    assert sum(v["bytes"] for v in summary["sources"].values()) == size
    assert sum(s["bytes"] for s in summary["seeds"]) == sum(
        summary["sources"][k]["bytes"] for k in ("file", "directory", "index"))


# --------------------------------------------------------------------------- a tree update


@pytest.fixture(scope="module")
def tree_update(tmp_path_factory, run_casync):
    """v1 and v2 (a byte flipped in the middle of a large file, an append, a new file, a removed
    file, a mode change); v2.caidx in store S_full; v1.caidx, v1.catar; S = S_full minus what v1 has."""
    base = tmp_path_factory.mktemp("seedtree")
    v1, v2 = str(base / "v1"), str(base / "v2")
    make_full_tree(v1, large_size=4 << 20)
    make_full_tree(v2, large_size=4 << 20)
    big = os.path.join(v2, "dir", "sub", "deeper", "random.bin")
    st = os.stat(big)
    with open(big, "r+b") as f:
        f.seek(2 << 20)
        b = f.read(1)
        f.seek(2 << 20)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(os.path.join(v2, "dir", "zeros.bin"), "ab") as f:
        f.write(b"appended " * 1000)
    with open(os.path.join(v2, "dir", "new.bin"), "wb") as f:
        f.write(os.urandom(300_000))
    os.unlink(os.path.join(v2, "dir", "with space"))
    os.chmod(os.path.join(v2, "file.txt"), 0o600)

    pycatar("make", f"--store={base / 'S_full'}", base / "v2.caidx", v2)
    pycatar("make", f"--store={base / 'T'}", base / "v1.caidx", v1)
    pycatar("make", base / "v1.catar", v1)
    seed_ids = index_ids(base / "v1.caidx")
    s = copy_store(base / "S_full", base / "S")
    removed, remaining = prune(s, seed_ids)
    assert removed > 10 and remaining > 0
    yield {"base": base, "v1": v1, "v2": v2, "S": s, "S_full": base / "S_full", "T": base / "T",
           "mtree": run_casync("mtree", v2).stdout, "seed_ids": seed_ids, "remaining": remaining}
    remove_tree(str(base))


@pytest.mark.parametrize("kind", ["directory", "file", "index"])
def test_tree_from_seed_and_partial_store(tree_update, run_casync, tmp_path, kind):
    # SEED-1 SEED-2 SEED-5 SEED-6 SEED-8: each seed kind, with a store holding only what the seed lacks, gives the source tree
    """Done-when 1 (trees): with S holding only what the seed lacks, extraction with a directory
    seed, a file seed (v1.catar, chunked on the fly) and an index seed (v1.caidx + directory v1)
    succeeds and equals v2."""
    t = tree_update
    seed = {"directory": t["v1"], "file": t["base"] / "v1.catar", "index": t["base"] / "v1.caidx"}[kind]
    out = tmp_path / "out"
    summary = extract_json(f"--store={t['S']}", f"--seed={seed}", t["base"] / "v2.caidx", out)
    assert run_casync("mtree", out).stdout == t["mtree"]
    check_accounting(summary, t["base"] / "v2.caidx")
    used = summary["sources"]
    assert used[kind]["chunks"] > 0 and used["store"]["chunks"] <= t["remaining"]
    assert used[kind]["bytes"] > used["store"]["bytes"]  # most of it came from the seed
    (s,) = summary["seeds"]
    assert s["kind"] == kind and s["indexed"] == ("index" if kind == "index" else "chunked")
    assert s["stale_chunks"] == 0


def test_layout_is_the_encoder_stream(tree_update):
    """SEED-4: a directory seed's layout (a walk that reads no payload) replays exactly the
    encoder's stream, and any range read through it equals that range of the stream."""
    t = tree_update
    with IndexReader(str(t["base"] / "v1.caidx")) as r:
        flags = r.feature_flags
    stream = b"".join(CatarEncoder(t["v1"], flags))
    layout = TreeLayout(t["v1"], flags)
    try:
        layout.walk()
        assert layout.size == len(stream) and len(layout.paths) > 10
        assert b"".join(bytes(p) for p in layout.replay(read_size=100_000)) == stream
        rnd = random.Random(3)
        for _ in range(200):
            off = rnd.randrange(len(stream))
            n = rnd.choice([1, 17, 4096, 65536, 300_000])
            assert layout.read(off, n)[:len(stream) - off] == stream[off:off + n]
    finally:
        layout.close()


def test_tree_subpath_with_seed(tree_update, run_casync, tmp_path):
    """A sub-tree extracts from the seed and the partial store too."""
    t = tree_update
    out = tmp_path / "out"
    pycatar("extract", f"--store={t['S']}", f"--seed={t['v1']}", t["base"] / "v2.caidx", out, "dir/sub")
    assert run_casync("mtree", out / "sub").stdout == run_casync("mtree", os.path.join(t["v2"], "dir", "sub")).stdout


def test_tree_reextract_over_old_output(tree_update, run_casync, tmp_path):
    """Done-when 2 (trees): v1 extracted into out, then v2 over it with S (pruned): the old
    output is the seed (--seed-output=yes by default); the removed file is gone."""
    t = tree_update
    out = tmp_path / "out"
    pycatar("extract", f"--store={t['T']}", t["base"] / "v1.caidx", out)
    assert (out / "dir" / "with space").exists()
    summary = extract_json(f"--store={t['S']}", t["base"] / "v2.caidx", out)
    assert run_casync("mtree", out).stdout == t["mtree"]
    assert not (out / "dir" / "with space").exists()
    check_accounting(summary, t["base"] / "v2.caidx")
    (s,) = summary["seeds"]
    assert s["output"] and s["kind"] == "directory" and s["chunks"] > 0
    # without the output as seed, S is not enough
    out2 = tmp_path / "out2"
    pycatar("extract", f"--store={t['T']}", t["base"] / "v1.caidx", out2)
    p = pycatar("extract", "--seed-output=no", f"--store={t['S']}", t["base"] / "v2.caidx", out2, check=False)
    assert p.returncode != 0 and b"not found in store" in p.stderr
    assert len(p.stderr.decode().strip().splitlines()) == 1


def test_tree_corrupted_seed_file(tree_update, run_casync, tmp_path):
    # SEED-6: seed bytes are verified; a changed seed falls back to the store
    """Done-when 4 (trees): an index seed whose data changed after indexing (a byte flipped,
    same size) yields a correct output: the chunk fails verification, the store supplies it."""
    t = tree_update
    v1c = tmp_path / "v1c"
    make_full_tree(str(v1c), large_size=4 << 20)  # the same tree as v1: v1.caidx describes it
    try:
        shutil.copy(t["base"] / "v1.caidx", tmp_path / "v1c.caidx")
        victim = v1c / "dir" / "sub" / "deeper" / "random.bin"
        with open(victim, "r+b") as f:
            f.seek(100_000)
            f.write(b"\x00garbage\x00")
        out = tmp_path / "out"
        summary = extract_json(f"--store={t['S_full']}", f"--seed={tmp_path / 'v1c.caidx'}",
                               t["base"] / "v2.caidx", out)
        assert run_casync("mtree", out).stdout == t["mtree"]
        (s,) = summary["seeds"]
        assert s["kind"] == "index" and s["indexed"] == "index"
        assert s["stale_chunks"] >= 1 and s["chunks"] > 0
        check_accounting(summary, t["base"] / "v2.caidx")
    finally:
        remove_tree(str(tmp_path))


def test_tree_hardlinks(tree_update, run_casync, tmp_path):
    # SEED-12: identical files from a seed directory are hardlinked
    """--hardlink=yes: files identical (content and metadata) to one in a seed directory are
    hard links to it afterwards; changed files are not."""
    t = tree_update
    seed = tmp_path / "v1"
    make_full_tree(str(seed), large_size=4 << 20)  # a private copy: hardlinks change its link counts
    try:
        out = tmp_path / "out"
        summary = extract_json("--hardlink=yes", f"--store={t['S_full']}", f"--seed={seed}",
                               t["base"] / "v2.caidx", out)
        assert run_casync("mtree", out).stdout == t["mtree"]
        same = os.stat(out / "sparse.img"), os.stat(seed / "sparse.img")
        assert same[0].st_ino == same[1].st_ino
        changed = os.stat(out / "dir" / "sub" / "deeper" / "random.bin"), \
            os.stat(seed / "dir" / "sub" / "deeper" / "random.bin")
        assert changed[0].st_ino != changed[1].st_ino
        assert summary["hardlinked_bytes"] >= 8 << 20
    finally:
        remove_tree(str(tmp_path))


def test_casync_seeds_our_index(tree_update, run_casync, tmp_path):
    """casync's own --seed=DIR works on pycatar's index and the pruned store (the same chunks)."""
    t = tree_update
    out = tmp_path / "out"
    run_casync("extract", f"--store={t['S']}", f"--seed={t['v1']}", t["base"] / "v2.caidx", out)
    assert run_casync("mtree", out).stdout == t["mtree"]


# --------------------------------------------------------------------------- a disk image update


@pytest.fixture(scope="module")
def image_update(tmp_path_factory):
    """img1 (random runs, 1 MiB zero runs, a repeated stretch) and img2 (a byte flipped in the
    middle, an append); img2.caibx in S_full; S = S_full minus img1's chunks minus the zero chunk."""
    base = tmp_path_factory.mktemp("seedimg")
    data1 = make_blob(11, 16 << 20)
    data2 = bytearray(data1)
    data2[8 << 20] ^= 0xFF
    data2 += os.urandom(200_000)
    (base / "img1").write_bytes(data1)
    (base / "img2").write_bytes(bytes(data2))
    pycatar("make", f"--store={base / 'S_full'}", base / "img2.caibx", base / "img2")
    pycatar("make", f"--store={base / 'T'}", base / "img1.caibx", base / "img1")
    zero_id = _digest.digest("sha512-256", bytes(MAX))
    assert zero_id in index_ids(base / "img2.caibx")
    s = copy_store(base / "S_full", base / "S")
    removed, remaining = prune(s, index_ids(base / "img1.caibx") | {zero_id})
    assert removed > 20 and remaining > 0
    assert not LocalStore(str(s)).has(zero_id)
    yield {"base": base, "S": s, "S_full": base / "S_full", "T": base / "T", "data2": bytes(data2),
           "remaining": remaining}
    shutil.rmtree(base)


@pytest.mark.parametrize("kind", ["file", "index"])
def test_image_from_seed_and_partial_store(image_update, tmp_path, kind):
    # SEED-1 SEED-2 SEED-8: an image from a file or index seed; zero chunks never fetched
    """Done-when 1 and 3 (images): S lacks everything img1 has and the zero chunk; with a file
    seed or an index seed the image extracts identical, zero chunks as holes, repeats once."""
    t = image_update
    seed = t["base"] / ("img1" if kind == "file" else "img1.caibx")
    out = tmp_path / "img2.out"
    summary = extract_json(f"--store={t['S']}", f"--seed={seed}", t["base"] / "img2.caibx", out)
    assert out.read_bytes() == t["data2"]
    check_accounting(summary, t["base"] / "img2.caibx")
    src = summary["sources"]
    assert src[kind]["chunks"] > 0 and src["null"]["chunks"] >= 4 and src["null"]["bytes"] >= 4 * MAX
    assert src["store"]["chunks"] <= t["remaining"]
    assert summary["hole_bytes"] >= src["null"]["bytes"]
    assert os.stat(out).st_blocks * 512 < len(t["data2"]) - src["null"]["bytes"] // 2  # holes punched


def test_image_reextract_over_old_output_and_self_seed(image_update, tmp_path):
    # SEED-7: repeated chunks come from the output itself
    """Done-when 2 (images): img1 in place of the output, img2 over it with S; and a chunk that
    repeats in the target is obtained once (the self seed)."""
    t = image_update
    out = tmp_path / "disk.img"
    shutil.copy(t["base"] / "img1", out)
    summary = extract_json(f"--store={t['S']}", t["base"] / "img2.caibx", out)
    assert out.read_bytes() == t["data2"]
    (s,) = summary["seeds"]
    assert s["output"] and s["kind"] == "file" and s["chunks"] > 0
    # the self seed: the full store, no seeds: every distinct chunk is fetched once
    with IndexReader(str(t["base"] / "img2.caibx")) as r:
        refs = list(r.chunks())
    zero_id = _digest.digest("sha512-256", bytes(MAX))
    distinct = {c.id for c in refs} - {zero_id}
    summary = extract_json(f"--store={t['S_full']}", t["base"] / "img2.caibx", tmp_path / "fresh.img")
    assert (tmp_path / "fresh.img").read_bytes() == t["data2"]
    assert summary["sources"]["store"]["chunks"] == len(distinct)
    repeats = len(refs) - len(distinct) - sum(1 for c in refs if c.id == zero_id)
    assert repeats > 0 and summary["sources"]["self"]["chunks"] == repeats


def test_image_corrupted_seed_after_indexing(image_update, tmp_path):
    """Done-when 4 (images): the seed is chunked, then changes before its bytes are used: the
    digest check catches it and the store supplies the chunk (library API)."""
    t = image_update
    seed = tmp_path / "img1"
    shutil.copy(t["base"] / "img1", seed)
    with IndexReader(str(t["base"] / "img2.caibx")) as reader:
        asm = assembly.Assembler.open(reader, [str(t["S_full"])], [str(seed)], defer=False)
        fd = os.open(seed, os.O_WRONLY)
        os.pwrite(fd, b"corrupt!" * 64, 3 << 20)
        os.close(fd)
        try:
            blob.extract_blob(reader, str(tmp_path / "out"), None, source=asm, sparse=True)
        finally:
            asm.close()
    assert (tmp_path / "out").read_bytes() == t["data2"]
    (s,) = asm.summary.seeds
    assert s.stale >= 1 and s.chunks > 0


def test_seed_chunks_verified_in_batches_and_the_next_seed_asked(image_update, tmp_path, monkeypatch):
    """SEED-6 with two seeds, the store lacking their chunks: the chunks the first seed no longer has
    intact (changed after indexing) come from the second, not the store; and seed chunks are verified
    several to a digest call, not one at a time."""
    t = image_update
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    shutil.copy(t["base"] / "img1", first)
    shutil.copy(t["base"] / "img1", second)
    batches = []
    real = _digest.digest_many
    monkeypatch.setattr(_digest, "digest_many", lambda name, datas: batches.append(len(datas)) or real(name, datas))
    with IndexReader(str(t["base"] / "img2.caibx")) as reader:
        asm = assembly.Assembler.open(reader, [str(t["S"])], [str(first), str(second)], defer=False)
        fd = os.open(first, os.O_WRONLY)
        os.pwrite(fd, b"corrupt!" * 64, 3 << 20)
        os.close(fd)
        batches.clear()  # (the seeds' chunking is over)
        count = reader.count
        try:
            blob.extract_blob(reader, str(tmp_path / "out"), None, source=asm, sparse=True)
        finally:
            asm.close()
    assert (tmp_path / "out").read_bytes() == t["data2"]
    a, b = asm.summary.seeds
    sources = asm.summary.sources
    assert a.stale >= 1 and a.chunks > 0
    assert b.chunks >= a.stale  # what the first seed lost (and nothing else: the first one is asked first)
    assert sources["file"][0] == a.chunks + b.chunks
    assert sum(c for c, _ in sources.values()) == count  # each chunk obtained once
    assert len(batches) < a.chunks + b.chunks - 10, (batches, a.chunks, b.chunks)  # not one call a chunk


def test_deferred_seeding_and_store_failure(image_update, tmp_path):
    """SEED-11: with every chunk in the store the seed is not chunked; when a store chunk then
    turns out corrupt, the seed is chunked after all and supplies it."""
    t = image_update
    summary = extract_json(f"--store={t['S_full']}", f"--seed={t['base'] / 'img1'}",
                           t["base"] / "img2.caibx", tmp_path / "a.img")
    assert summary["seeding_deferred"] and summary["seeds"][0]["indexed"] == "deferred"
    assert summary["sources"]["file"]["chunks"] == 0
    # corrupt a store chunk that img1 also has
    bad_store = copy_store(t["S_full"], tmp_path / "bad")
    common = sorted(index_ids(t["base"] / "img1.caibx") & index_ids(t["base"] / "img2.caibx"))
    victim = LocalStore(str(bad_store)).chunk_path(common[0])
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff\xff\xff")
    summary = extract_json(f"--store={bad_store}", f"--seed={t['base'] / 'img1'}",
                           t["base"] / "img2.caibx", tmp_path / "b.img")
    assert (tmp_path / "b.img").read_bytes() == t["data2"]
    assert summary["seeds"][0]["indexed"] == "chunked" and summary["sources"]["file"]["chunks"] >= 1


def test_seed_cache(image_update, tmp_path):
    """SEED-9: with --cache a seed is chunked once; unchanged, the next run takes its table from
    the cache; changed (ctime moves), it is chunked again."""
    t = image_update
    seed = tmp_path / "img1"
    shutil.copy(t["base"] / "img1", seed)
    cache = tmp_path / "cache"
    runs = []
    for i in range(3):
        if i == 2:
            os.utime(seed)  # content kept, but no longer provably unchanged
        s = extract_json(f"--cache={cache}", f"--store={t['S']}", f"--seed={seed}",
                         t["base"] / "img2.caibx", tmp_path / f"o{i}")
        assert (tmp_path / f"o{i}").read_bytes() == t["data2"]
        runs.append(s["seeds"][0])
    assert [r["indexed"] for r in runs] == ["chunked", "cache", "chunked"]
    assert runs[1]["index_seconds"] < runs[0]["index_seconds"]


def test_blob_to_stdout_with_seed(image_update, tmp_path):
    """A blob written to standard output: seeds and the self seed (a spill file) still work;
    --json is refused there (stdout carries the blob)."""
    t = image_update
    p = pycatar("extract", f"--store={t['S']}", f"--seed={t['base'] / 'img1'}", t["base"] / "img2.caibx", "-")
    assert p.stdout == t["data2"]
    p = pycatar("--json", "extract", f"--store={t['S']}", t["base"] / "img2.caibx", "-", check=False)
    assert p.returncode != 0 and p.stderr.count(b"\n") == 1


def test_unusable_seed_is_a_warning(image_update, tmp_path):
    """SEED-3: a seed that does not exist is reported (one line, like casync) and left out."""
    t = image_update
    p = pycatar("-v", "extract", f"--store={t['S_full']}", f"--seed={tmp_path / 'nope'}",
                t["base"] / "img2.caibx", tmp_path / "x.img")
    assert (tmp_path / "x.img").read_bytes() == t["data2"]
    err = p.stderr.decode()
    assert f"Failed to add seed {tmp_path / 'nope'}, ignoring: No such file or directory" in err
    assert "Chunk requests fulfilled from local store:" in err and "Bytes used from local seed: 0B (0%)" in err


def _xfs_mount(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        return None
    img, mnt = tmp_path / "xfs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(320 << 20)
    if subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], capture_output=True).returncode:
        return None
    if subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True).returncode:
        return None
    return mnt


def test_reflinks_on_xfs(image_update, tmp_path):
    # SEED-13: blob output shares extents with the seed where the file system can
    """--reflink=yes (the default) shares the seed's blocks on a file system that can (XFS);
    the output is the same either way."""
    t = image_update
    mnt = _xfs_mount(tmp_path)
    if mnt is None and IN_CI:
        pytest.fail("CI needs root, mkfs.xfs (Debian xfsprogs) and loop devices for the reflink test")
    if mnt is None:
        pytest.skip("needs root, mkfs.xfs and loop devices (not CI, so skipping)")
    try:
        shutil.copy(t["base"] / "img1", mnt / "img1")
        s = extract_json(f"--store={t['S']}", f"--seed={mnt / 'img1'}", t["base"] / "img2.caibx", mnt / "img2")
        assert (mnt / "img2").read_bytes() == t["data2"]
        assert s["reflinked_bytes"] > (8 << 20)
        s = extract_json("--reflink=no", f"--store={t['S']}", f"--seed={mnt / 'img1'}",
                         t["base"] / "img2.caibx", mnt / "img3")
        assert (mnt / "img3").read_bytes() == t["data2"] and s["reflinked_bytes"] == 0
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_block_device_output_is_its_own_seed(image_update, tmp_path):
    """SEED-14: a block device is written in place and read as the seed at the same time."""
    t = image_update
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup")
    img = tmp_path / "dev.img"
    shutil.copy(t["base"] / "img1", img)
    with open(img, "ab") as f:
        f.truncate((len(t["data2"]) + 511) // 512 * 512)  # devices come in 512-byte sectors
    p = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip("no loop device")
    dev = p.stdout.strip()
    try:
        summary = extract_json(f"--store={t['S']}", t["base"] / "img2.caibx", dev)
        with open(dev, "rb") as f:
            assert f.read(len(t["data2"])) == t["data2"]
        (s,) = summary["seeds"]
        assert s["output"] and s["kind"] == "file" and s["chunks"] > 0
        check_accounting(summary, t["base"] / "img2.caibx")
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


class _ScribbledOutput:
    """An output whose bytes change after they are written: every write lands in ``path``, but the
    read-back descriptor sees a file of the same length full of other bytes."""

    sparse = False
    holes = 0

    def __init__(self, path, size):
        self.f = open(path, "wb")
        self.other = path.with_suffix(".other")
        self.other.write_bytes(os.urandom(size))

    def readback_fd(self):
        return os.open(self.other, os.O_RDONLY)

    def write(self, data):
        self.f.write(data)

    def settle(self):
        self.f.flush()


def test_self_seed_read_back_is_verified(casync, tmp_path):
    # SEED-7 SEED-6: what is read back from the output is checked before it is used
    """A chunk repeated in the target is read back from the output at its first occurrence; when the
    output no longer holds it there (changed under us), the bytes are refused and the chunk comes from
    the store, so the result is still the source."""
    block = os.urandom(600_000)
    data = block + block + block
    (tmp_path / "src").write_bytes(data)
    store = tmp_path / "S"
    subprocess.run([casync, "make", f"--store={store}", str(tmp_path / "x.caibx"), str(tmp_path / "src")],
                   check=True, capture_output=True)
    with IndexReader(str(tmp_path / "x.caibx")) as reader:
        refs = list(reader.chunks())
        repeats = len(refs) - len({r.id for r in refs})
        assert repeats >= 4
        asm = assembly.Assembler.open(reader, [str(store)])
        out = _ScribbledOutput(tmp_path / "out", len(data))
        asm.bind_output(out)
        try:
            for ref in refs:
                piece = asm.fetch(ref)
                assert bytes(piece) == data[ref.start:ref.start + ref.size], f"chunk {ref.index} wrong"
                asm.write(out, ref, piece)
        finally:
            asm.release_output()
            asm.close()
            out.f.close()
    assert (tmp_path / "out").read_bytes() == data
    sources = asm.summary.as_dict()["sources"]
    assert sources.get("self", {"chunks": 0})["chunks"] == 0
    assert sources["store"]["chunks"] == len(refs)


@pytest.mark.parametrize("kind", ["blob", "tree"])
def test_small_repeated_chunks_kept_in_memory_within_a_bound(casync, tmp_path, monkeypatch, kind):
    # SEED-7: small repeated chunks are kept in memory once obtained, within a bound
    """One-byte chunks (casync --chunk-size=1:1:1): 256 distinct ones repeated all over.  The first
    occurrence of each comes from the store; the others from the copy obtained (in memory up to the
    bound, 100 bytes here; read back from the output or spill file beyond it), each accounted once."""
    monkeypatch.setattr(assembly, "REPEATS_MEMORY_BYTES", 100)
    rnd = random.Random(5)
    if kind == "blob":
        data = rnd.randbytes(8192)
        (tmp_path / "src").write_bytes(data)
    else:
        (tmp_path / "src").mkdir()
        data = rnd.randbytes(4096)
        (tmp_path / "src" / "f").write_bytes(data)
    name = tmp_path / ("x.caibx" if kind == "blob" else "x.caidx")
    subprocess.run([casync, "make", "--chunk-size=1:1:1", f"--store={tmp_path / 'S'}", str(name),
                    str(tmp_path / "src")], check=True, capture_output=True)
    with IndexReader(str(name)) as r:
        ids = [c.id for c in r.chunks()]
    made = []
    real_open = assembly.Assembler.open
    monkeypatch.setattr(assembly.Assembler, "open", lambda *a, **kw: made.append(real_open(*a, **kw)) or made[-1])
    if kind == "blob":
        summary = assembly.extract_blob(str(name), str(tmp_path / "out"), [str(tmp_path / "S")], threads=2)
        assert (tmp_path / "out").read_bytes() == data
    else:
        _, summary = assembly.extract_tree(str(name), str(tmp_path / "out"), [str(tmp_path / "S")], threads=2)
        assert (tmp_path / "out" / "f").read_bytes() == data
    sources = summary.as_dict()["sources"]
    zeros = ids.count(_digest.digest("sha512-256", b"\0"))  # the null chunk (SEED-8), at every occurrence
    assert zeros and sources["null"]["chunks"] == zeros
    assert sources["store"]["chunks"] == len(set(ids)) - 1
    assert sources["self"]["chunks"] == len(ids) - len(set(ids)) - (zeros - 1) > 1000
    assert made[0]._kept_bytes == 100  # the bound: 100 of the 256 one-byte chunks


def test_repeated_chunks_are_fetched_with_their_batch_and_crossing_requests_do_not_wait_forever(casync, tmp_path,
                                                                                               monkeypatch):
    """SEED-7 in a batch (fetch_many): a repeated chunk this call is the first to ask for is read with
    the batch's other store chunks, once even where the batch holds it twice.  Two calls that each
    claim first one of two repeated chunks the other also asks for (a barrier makes them cross) hand
    over their own before waiting for the other's: both end, each chunk read from the store once.
    A call that fails after a claim gives it up."""
    import threading

    data = random.Random(8).randbytes(300_000)
    (tmp_path / "src").mkdir()
    for name in "abc":
        (tmp_path / "src" / name).write_bytes(data)
    subprocess.run([casync, "make", f"--store={tmp_path / 'S'}", str(tmp_path / "x.caidx"), str(tmp_path / "src")],
                   check=True, capture_output=True)
    store = LocalStore(str(tmp_path / "S"))
    with IndexReader(str(tmp_path / "x.caidx")) as reader:
        refs = list(reader.chunks())
        counts = collections.Counter(c.id for c in refs)
        x, y = [next(c for c in refs if c.id == cid) for cid in [cid for cid, n in counts.items() if n > 1][:2]]
        want = {c.id: store.get(c.id) for c in (x, y)}
        reads = []

        def counted(real):
            return lambda self, ids: reads.append([cid for cid, _ in ids]) or real(self, ids)

        monkeypatch.setattr(assembly.StoreSet, "get_many", counted(assembly.StoreSet.get_many))
        asm = assembly.Assembler.open(reader, [str(tmp_path / "S")])
        try:
            plain = next(c for c in refs if counts[c.id] == 1)
            got = asm.fetch_many([x, plain, x])
            assert got == [want[x.id], store.get(plain.id), want[x.id]]
            assert reads == [[x.id, plain.id]]  # one store read, the repeated chunk in it once
        finally:
            asm.close()

        asm = assembly.Assembler.open(reader, [str(tmp_path / "S")])
        reads.clear()
        barrier = threading.Barrier(2, timeout=10)
        first_claim = threading.local()
        real_claim = asm._claim

        def claim(cid):
            got = real_claim(cid)
            if not getattr(first_claim, "done", False):
                first_claim.done = True
                barrier.wait()  # both calls have claimed their first chunk before either asks for its second
            return got

        asm._claim = claim
        results = {}
        threads = [threading.Thread(target=lambda k, batch: results.__setitem__(k, asm.fetch_many(batch)),
                                    args=(k, batch), daemon=True) for k, batch in ((0, [x, y]), (1, [y, x]))]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert not any(t.is_alive() for t in threads), "the two calls wait for each other"
        finally:
            asm.close()
        assert results == {0: [want[x.id], want[y.id]], 1: [want[y.id], want[x.id]]}
        assert sorted(reads) == sorted([[x.id], [y.id]])  # each call read the one it claimed first
        sources = asm.summary.as_dict()["sources"]
        assert sources["store"]["chunks"] == 2 and sources["self"]["chunks"] == 2

        # a call that fails after claiming a chunk leaves no claim behind (a later request would wait
        # for it forever): here a seed that cannot be asked, right after the claim
        class Broken:
            def locate(self, cid):
                raise OSError("the seed went away")

            def close(self):
                pass

        asm = assembly.Assembler.open(reader, [str(tmp_path / "S")])
        asm.seeds = [Broken()]
        try:
            with pytest.raises(OSError, match="the seed went away"):
                asm.fetch_many([x])
            assert x.id not in asm._inflight
        finally:
            asm.close()


@pytest.mark.parametrize("kind", ["blob", "tree"])
def test_large_repeated_chunks_of_a_tree_are_kept_in_memory(casync, tmp_path, monkeypatch, kind):
    """SEED-7 for chunks of the usual sizes: three copies of a 300 KB file repeat its chunks.  A tree
    keeps each repeated chunk in memory once obtained (no spill file); a blob written to a file does
    not (a later occurrence is read back from the output, where it can be cloned from)."""
    data = random.Random(8).randbytes(300_000)
    if kind == "blob":
        (tmp_path / "src").write_bytes(data * 3)
    else:
        (tmp_path / "src").mkdir()
        for name in "abc":
            (tmp_path / "src" / name).write_bytes(data)
    name = tmp_path / ("x.caibx" if kind == "blob" else "x.caidx")
    subprocess.run([casync, "make", f"--store={tmp_path / 'S'}", str(name), str(tmp_path / "src")],
                   check=True, capture_output=True)
    with IndexReader(str(name)) as r:
        refs = list(r.chunks())
    counts = collections.Counter(c.id for c in refs)
    repeated = {c.id: c.size for c in refs if counts[c.id] > 1}
    assert len(repeated) >= 3 and min(repeated.values()) >= 16384
    made, spilled = [], []
    real_open, real_put = assembly.Assembler.open, assembly._Spill.put
    monkeypatch.setattr(assembly.Assembler, "open", lambda *a, **kw: made.append(real_open(*a, **kw)) or made[-1])
    monkeypatch.setattr(assembly._Spill, "put", lambda self, data: spilled.append(len(data)) or real_put(self, data))
    if kind == "blob":
        summary = assembly.extract_blob(str(name), str(tmp_path / "out"), [str(tmp_path / "S")], threads=2)
        assert (tmp_path / "out").read_bytes() == data * 3
    else:
        _, summary = assembly.extract_tree(str(name), str(tmp_path / "out"), [str(tmp_path / "S")], threads=2)
        for f in "abc":
            assert (tmp_path / "out" / f).read_bytes() == data
    sources = summary.as_dict()["sources"]
    assert sources["store"]["chunks"] == len(counts)
    assert sources["self"]["chunks"] == len(refs) - len(counts)
    if kind == "tree":
        assert made[0]._kept_bytes == sum(repeated.values())
        assert spilled == []  # nothing went to the spill file
    else:
        assert made[0]._kept_bytes == 0
