"""Chunk stores (spec/store.md): layout, compression, verification, concurrency, gc, defaults."""

from __future__ import annotations

import errno
import hashlib
import io
import multiprocessing
import os
import random
import stat
import subprocess
import sys
import threading
import time

import pytest

from pycatar import compression
from pycatar._fileio import install_file
from pycatar.errors import ChunkError, UsageError
from pycatar.index import IndexWriter, blob_index_flags
from pycatar.location import default_store_for
from pycatar.store import LocalStore, StoreSet, chunk_relpath, gc


def _chunk(seed: int, n: int = 70_000) -> tuple[bytes, bytes]:
    data = (hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1))[:n]
    data = bytes(b ^ (i % 251) for i, b in enumerate(data[:2000])) + data[2000:]
    return hashlib.new("sha512_256", data).digest(), data


def test_layout_and_roundtrip(tmp_path):
    """STORE-2/3/4: <store>/<4 hex>/<64 hex>.cacnk, zstd, read-only file, verified read."""
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(1)
    assert s.put(cid, data) > 0
    rel = chunk_relpath(cid)
    h = cid.hex()
    assert rel == f"{h[:4]}/{h}.cacnk"
    path = tmp_path / "S" / rel
    raw = path.read_bytes()
    assert raw[:4] == compression.ZSTD_MAGIC
    assert oct(path.stat().st_mode & 0o222) == "0o0"
    assert s.get(cid, len(data)) == data
    assert s.has(cid) and cid in set(s)
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary left


@pytest.mark.parametrize("kind,magic", [("zstd", b"\x28\xb5\x2f\xfd"), ("xz", b"\xfd7zXZ\x00"), ("gzip", b"\x1f\x8b")])
def test_compressions(tmp_path, kind, magic):
    """STORE-5/6: every algorithm is written with its signature and read back by detection."""
    cid, data = _chunk(2)
    w = LocalStore(tmp_path / "S", compression=kind)
    w.put(cid, data)
    raw = (tmp_path / "S" / chunk_relpath(cid)).read_bytes()
    assert raw.startswith(magic)
    assert compression.detect(raw) == kind
    assert LocalStore(tmp_path / "S").get(cid) == data  # a zstd-configured reader reads any of them
    assert compression.compress(data, kind) == raw  # deterministic


def test_existing_chunk_not_rewritten(tmp_path):
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(3)
    assert s.put(cid, data)
    p = tmp_path / "S" / chunk_relpath(cid)
    ino = p.stat().st_ino
    assert s.put(cid, data) == 0
    assert LocalStore(tmp_path / "S", compression="xz").put(cid, data) == 0
    assert p.stat().st_ino == ino and p.read_bytes()[:4] == compression.ZSTD_MAGIC


def test_a_batch_makes_its_directories_in_one_call(tmp_path, monkeypatch):
    """put_many makes the chunk directories a batch needs with one make_dirs call (the GIL released
    once, not per directory), the store itself too when it is missing; a directory it cannot make
    is one clear error, and a directory removed behind its back (gc) is made again."""
    from pycatar import store as store_mod
    from pycatar.errors import PycatarError

    calls = []
    real = store_mod.make_dirs
    monkeypatch.setattr(store_mod, "make_dirs", lambda paths, mode: calls.append(list(paths)) or real(paths, mode))
    chunks = [_chunk(100 + i, 5000) for i in range(40)]
    subs = {cid.hex()[:4] for cid, _ in chunks}
    s = LocalStore(tmp_path / "deeper" / "S")  # neither the store nor its parent exists yet
    assert s.put_many(chunks) == (40, 0, sum(os.path.getsize(tmp_path / "deeper" / "S" / chunk_relpath(c))
                                             for c, _ in chunks))
    assert {os.path.basename(p) for p in calls[0]} == subs  # all of them, at once
    assert len(calls) == 2  # ENOENT: the store is made (makedirs), then the directories again
    assert {os.path.basename(p) for p in calls[-1]} == subs
    assert all(s.get(cid, len(data)) == data for cid, data in chunks)
    calls.clear()
    assert s.put_many(chunks) == (0, 40, 0)
    assert calls == []  # known directories: no call at all
    # a directory removed behind the store's back (gc) is made again when a chunk goes into it
    cid, data = chunks[0]
    path = tmp_path / "deeper" / "S" / chunk_relpath(cid)
    for f in path.parent.iterdir():
        f.unlink()
    path.parent.rmdir()
    assert s.put_many([(cid, data)]) == (1, 0, path.stat().st_size)
    assert s.get(cid, len(data)) == data
    # a file in the way of a chunk directory: mkdir says it exists, the chunk's write says why not
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / cid.hex()[:4]).write_bytes(b"not a directory")
    with pytest.raises(PycatarError, match=f"cannot write chunk {cid.hex()} to .*T: Not a directory"):
        LocalStore(tmp_path / "T").put_many([(cid, data)])
    # a file in the way of the store: the directories cannot be made, one line naming one
    (tmp_path / "F").write_bytes(b"x")
    with pytest.raises(PycatarError, match=f"cannot create store directory .*F/S/[0-9a-f]{{4}}: Not a directory"):
        LocalStore(tmp_path / "F" / "S").put_many(chunks[:3])


def test_temporary_name_taken(tmp_path):
    """STORE-4: a temporary name another writer holds is skipped; the chunk is still installed and
    the other writer's file is left alone."""
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(5)
    h = cid.hex()
    sub = tmp_path / "S" / h[:4]
    sub.mkdir(parents=True)
    taken = sub / f"{h}.{s._tmp_prefix}00000000.tmp"
    taken.write_bytes(b"someone else's")
    assert s.put(cid, data) > 0
    assert s.get(cid, len(data)) == data
    assert taken.read_bytes() == b"someone else's"
    assert sorted(os.listdir(sub)) == sorted([taken.name, f"{h}.cacnk"])


def _put_many(path, n):
    s = LocalStore(path)
    cid, data = _chunk(4)
    return sum(bool(s.put(cid, data)) for _ in range(n))


def test_concurrent_writers(tmp_path):
    """STORE-4: racing writers (threads and processes) install the chunk once, intact."""
    cid, data = _chunk(4)
    results = []
    ts = [threading.Thread(target=lambda: results.append(_put_many(tmp_path / "S", 20))) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        results += pool.starmap(_put_many, [(tmp_path / "S", 20)] * 3)
    assert sum(results) == 1
    d = tmp_path / "S" / cid.hex()[:4]
    assert os.listdir(d) == [cid.hex() + ".cacnk"]
    assert LocalStore(tmp_path / "S").get(cid, len(data)) == data


CORRUPTIONS = {
    "flipped byte": lambda raw: raw[:40] + bytes([raw[40] ^ 1]) + raw[41:],
    "truncated": lambda raw: raw[:-5],
    "trailing garbage": lambda raw: raw + b"junk",
    "no magic": lambda raw: b"hello" + raw,
    "empty": lambda raw: b"",
    "other chunk": None,
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_chunk(tmp_path, case):
    """STORE-8: a chunk that does not decompress to data matching its id raises ChunkError."""
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(5)
    s.put(cid, data)
    p = tmp_path / "S" / chunk_relpath(cid)
    raw = p.read_bytes()
    p.chmod(0o644)
    if case == "other chunk":
        p.write_bytes(compression.compress(_chunk(6)[1]))
    else:
        p.write_bytes(CORRUPTIONS[case](raw))
    with pytest.raises(ChunkError) as ei:
        s.get(cid, len(data))
    assert cid.hex() in str(ei.value) and "\n" not in str(ei.value)


def test_wrong_digest_or_size(tmp_path):
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(7)
    s.put(cid, data)
    with pytest.raises(ChunkError):
        s.get(cid, digest="sha256")
    with pytest.raises(ChunkError):
        s.get(cid, len(data) + 1)


def test_uncompressed_and_symlinked_chunks(tmp_path):
    """STORE-7: an uncompressed chunk file (no suffix) is read; a symlink means "missing"."""
    cid, data = _chunk(8)
    d = tmp_path / "S" / cid.hex()[:4]
    d.mkdir(parents=True)
    (d / cid.hex()).write_bytes(data)
    s = LocalStore(tmp_path / "S")
    assert s.get(cid) == data and s.has(cid)
    cid2, data2 = _chunk(9)
    d2 = tmp_path / "S" / cid2.hex()[:4]
    d2.mkdir(exist_ok=True)
    (tmp_path / "target").write_bytes(compression.compress(data2))
    (d2 / (cid2.hex() + ".cacnk")).symlink_to(tmp_path / "target")
    assert s.get(cid2) is None


def test_store_set_order_and_fallback(tmp_path):
    """STORE-10: stores are searched in order; a bad copy is skipped if a later store has a good one."""
    a, b = LocalStore(tmp_path / "A"), LocalStore(tmp_path / "B")
    c1, d1 = _chunk(10)
    c2, d2 = _chunk(11)
    a.put(c1, d1)
    b.put(c1, d1)
    b.put(c2, d2)
    ss = StoreSet([a, b])
    assert ss.get(c1) == d1 and a.stats.reads == 1 and b.stats.reads == 0
    assert ss.get(c2) == d2 and b.stats.reads == 1
    p = tmp_path / "A" / chunk_relpath(c1)
    p.chmod(0o644)
    p.write_bytes(b"garbage!")
    assert ss.get(c1) == d1
    with pytest.raises(ChunkError, match="not found"):
        ss.get(_chunk(12)[0])
    with pytest.raises(ChunkError, match=c1.hex()):
        StoreSet([a]).get(c1)


def _index(path, ids_sizes):
    with IndexWriter(path, feature_flags=blob_index_flags(), chunk_sizes=(1, 65536, 262144)) as w:
        for cid, n in ids_sizes:
            w.append(cid, n)


def test_gc(tmp_path):
    """STORE-11: gc keeps every chunk some index references and removes the rest."""
    s = LocalStore(tmp_path / "S")
    chunks = [_chunk(20 + i) for i in range(5)]
    for cid, data in chunks:
        s.put(cid, data)
    (tmp_path / "S" / "notes.txt").write_text("not a chunk directory")
    _index(tmp_path / "one.caibx", [(chunks[0][0], 70000), (chunks[1][0], 70000)])
    _index(tmp_path / "two.caibx", [(chunks[1][0], 70000), (chunks[2][0], 70000)])
    stray = {chunks[3][0].hex() + ".cacnk", chunks[4][0].hex() + ".cacnk"}

    out = io.StringIO()
    res = gc(s, [tmp_path / "one.caibx", tmp_path / "two.caibx"], dry_run=True, verbose=True, out=out, grace=0)
    assert set(res.removed) == stray and res.remaining == 3
    assert res.references == 4 and res.referenced == 3
    assert out.getvalue().splitlines()[0] == "Chunk store usage: 4 references, 3 chunks"
    assert out.getvalue().splitlines()[-1] == "Would remove 2 chunks, 3 chunks remaining."
    assert all(s.has(c) for c, _ in chunks)

    res = gc(s, [tmp_path / "one.caibx", tmp_path / "two.caibx"], grace=0)
    assert set(res.removed) == stray and res.messages == []
    assert [s.has(c) for c, _ in chunks] == [True, True, True, False, False]
    assert (tmp_path / "S" / "notes.txt").exists()
    res = gc(s, [tmp_path / "one.caibx", tmp_path / "two.caibx"], verbose=True, grace=0)
    assert res.removed == [] and res.messages[-1] == "Removed 0 chunks, 0 directories, 3 chunks remaining."


def test_gc_refuses_bad_index(tmp_path):
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(30)
    s.put(cid, data)
    (tmp_path / "bad.caibx").write_bytes(b"x" * 200)
    from pycatar.errors import FormatError

    with pytest.raises(FormatError):
        gc(s, [tmp_path / "bad.caibx"])
    assert s.has(cid)


def test_has_scheme_is_an_rfc3986_scheme_and_colon_slash_slash():
    """A location is a URL when it starts with a scheme (a letter, then letters, digits, "+", "-",
    ".") and "://": the same answer as the RFC 3986 pattern, for random strings of the characters
    that matter."""
    import re

    from pycatar.location import has_scheme

    pattern = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
    rnd = random.Random(3)
    texts = ["http://h/x", "s3+https://h/b", "file:///x", "a.b-c+d://", "://x", "1a://x", "a:b://", "é://x", "", "x"]
    texts += ["".join(rnd.choice("aZ09+.-:/_é ?;") for _ in range(rnd.randrange(9))) for _ in range(20000)]
    assert [has_scheme(t) for t in texts] == [bool(pattern.match(t)) for t in texts]


def test_default_store_for():
    """STORE-9: $CASYNC_STORE, else default.castr next to the index."""
    env: dict[str, str] = {}
    assert default_store_for("x.caibx", env) == "default.castr"
    assert default_store_for("a/b/x.caibx", env) == "a/b/default.castr"
    assert default_store_for("/x.caibx", env) == "/default.castr"
    assert default_store_for("/srv/img//x.caidx", env) == "/srv/img/default.castr"
    assert default_store_for("./x.caibx", env) == "./default.castr"
    assert default_store_for(None, env) == "default.castr"
    assert default_store_for("-", env) == "default.castr"
    assert default_store_for("http://host/dir/x.caibx", env) == "http://host/dir/default.castr"
    assert default_store_for("a/x.caibx", {"CASYNC_STORE": "/elsewhere"}) == "/elsewhere"


def test_parse_compression():
    assert compression.parse_compression("default") == "zstd"
    with pytest.raises(UsageError, match="Failed to parse --compression= parameter: lz4"):
        compression.parse_compression("lz4")


def test_install_file(tmp_path):
    """The store's chunk install: written under a temporary name, linked into place, never replacing."""
    tmp, final = str(tmp_path / "x.tmp"), str(tmp_path / "x")
    assert install_file(tmp, final, b"data", 0o444) == 1
    assert (tmp_path / "x").read_bytes() == b"data" and not os.path.exists(tmp)
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o444 & ~_umask()
    assert install_file(tmp, final, b"other", 0o444) == 0  # present: kept as it is
    assert (tmp_path / "x").read_bytes() == b"data" and sorted(os.listdir(tmp_path)) == ["x"]
    (tmp_path / "taken").write_bytes(b"")
    assert install_file(str(tmp_path / "taken"), str(tmp_path / "y"), b"d", 0o444) == (0, errno.EEXIST)
    assert install_file(str(tmp_path / "no" / "t"), str(tmp_path / "no" / "y"), b"d", 0o444) == (0, errno.ENOENT)
    assert not (tmp_path / "y").exists()
    other = "/dev/shm" if os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev else None
    if other:  # a link across file systems fails: the complete temporary file is left for the fallback
        assert install_file(tmp, os.path.join(other, f"pycatar-test-{os.getpid()}"), b"d", 0o444) == (2, errno.EXDEV)
        assert (tmp_path / "x.tmp").read_bytes() == b"d"
    with pytest.raises(ValueError):
        install_file("a\0b", final, b"", 0o444)


def test_install_files_batch(tmp_path):
    """install_files: install_file of each job, the GIL released once; a failed job leaves the others
    installed, and each job's result is what install_file returns."""
    from pycatar._fileio import install_files

    (tmp_path / "b").write_bytes(b"there")
    jobs = [(str(tmp_path / "a.tmp"), str(tmp_path / "a"), b"A" * 70000),
            (str(tmp_path / "b.tmp"), str(tmp_path / "b"), b"B"),
            (str(tmp_path / "no" / "c.tmp"), str(tmp_path / "no" / "c"), b"C"),
            (str(tmp_path / "d.tmp"), str(tmp_path / "d"), memoryview(b"xDx")[1:2])]
    assert install_files(jobs, 0o444) == [1, 0, (0, errno.ENOENT), 1]
    assert (tmp_path / "a").read_bytes() == b"A" * 70000 and (tmp_path / "b").read_bytes() == b"there"
    assert (tmp_path / "d").read_bytes() == b"D"
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "d"]
    assert install_files([], 0o444) == []
    with pytest.raises(TypeError):
        install_files([("t", "f")], 0o444)
    with pytest.raises(TypeError):
        install_files([(str(tmp_path / "e.tmp"), str(tmp_path / "e"), "not bytes")], 0o444)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "d"]


def test_compress_many_is_compress_of_each():
    """compress_many: one call for a batch, each chunk its own frame, the same bytes as one at a time,
    for every kind; the frames decompress to their chunks."""
    datas = [b"a" * 10, bytes(range(256)) * 700, memoryview(b"xyz" * 50000)[3:], b"\x00" * (300 << 10)]
    for kind in compression.COMPRESSION_NAMES:
        many = compression.compress_many(datas, kind)
        assert many == [compression.compress(d, kind) for d in datas]
        assert [compression.decompress(m, len(d)) for m, d in zip(many, datas)] == [bytes(d) for d in datas]
        assert compression.detect(many[0]) == kind
    assert compression.compress_many([], "zstd") == []
    with pytest.raises(TypeError):
        compression.compress_many(["text"], "zstd")


def test_digest_many_is_hashlib_of_each():
    """digest_many: one call for a batch (SHA-2 in C, by libcrypto), the digests hashlib gives one at
    a time, for every algorithm; an unknown name or a non-buffer is an error."""
    from pycatar import _sha, digest

    datas = [b"", b"abc", os.urandom(5000), memoryview(os.urandom(300_000))[7:], bytearray(b"x" * 70000)]
    oracle = {"sha512-256": lambda d: hashlib.new("sha512_256", d).digest(),
              "sha256": lambda d: hashlib.sha256(d).digest()}
    for name, h in oracle.items():
        assert digest.digest_many(name, datas) == [h(bytes(d)) for d in datas]
        assert digest.digest(name, b"abc") == h(b"abc")
    assert digest.digest_many("sha256", []) == []
    assert digest.digest_many("blake3", [b"abc"]) == [digest.digest("blake3", b"abc")]
    with pytest.raises(ValueError):
        _sha.digest_many("md5", [b""])
    with pytest.raises(TypeError):
        digest.digest_many("sha256", ["text"])
    # the published SHA-512/256 of "abc" (FIPS 180-4 examples)
    assert digest.digest("sha512-256", b"abc").hex() == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"


def test_sha512_256_lanes_are_hashlib_of_each():
    """SHA-512/256 goes 8 buffers at a time where the CPU has AVX-512 (F and BW) and 4 where it has
    AVX2, as /proc/cpuinfo lists them: every padding case (lengths 0 to 400: one tail block or two),
    buffers at odd addresses, lanes refilled as their buffers end (sizes far apart), a single buffer
    and an empty batch give what hashlib gives, with each kernel the CPU has and by default (batches
    of LANES_MIN or more take the widest).  A kernel the CPU lacks, and lanes for SHA-256, are an
    OSError."""
    from pycatar import _sha, digest

    digest._load_libcrypto(_sha)
    with open("/proc/cpuinfo") as f:
        cpu_flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    have = [n for n, need in ((8, ("avx512f", "avx512bw")), (4, ("avx2",))) if all(x in cpu_flags for x in need)]
    assert _sha.LANES == (have[0] if have else 0)
    assert _sha.LANES_MIN == {8: 2, 4: 4, 0: 4}[_sha.LANES]
    pool = os.urandom(1 << 20)
    rnd = random.Random(18)
    batches = [[pool[:n] for n in range(401)],
               [memoryview(pool)[1 + k:1 + k + n] for k, n in enumerate((300_000, 0, 129, 5000, 1, 70_000, 112, 111,
                                                                        128, 240, 256, 1 << 19, 17, 999))],
               [pool[:rnd.randrange(200_000)] for _ in range(50)],
               [pool[:1000]], [pool[:128]], []]
    for datas in batches:
        want = [hashlib.new("sha512_256", d).digest() for d in datas]
        assert _sha.digest_many("sha512-256", datas, 0) == want
        assert _sha.digest_many("sha512-256", datas) == want
        for lanes in (8, 4):
            if lanes in have:
                assert _sha.digest_many("sha512-256", datas, lanes) == want, lanes
            else:
                with pytest.raises(OSError, match=f"no {lanes}-lane sha512-256"):
                    _sha.digest_many("sha512-256", datas, lanes)
    for lanes in (8, 4, 2):
        with pytest.raises(OSError, match=f"no {lanes}-lane"):
            _sha.digest_many("sha256" if lanes != 2 else "sha512-256", [b"abc"] * 8, lanes)


def test_libcrypto_is_loaded_when_a_digest_first_needs_it():
    """Batches the lanes take need no libcrypto, nor do smaller SHA-512/256 batches up to
    NARROW_LANES_BYTES in all (1 MiB): hashlib is not imported and libcrypto not loaded until a digest
    goes through it (beyond that, or SHA-256); then it stays loaded."""
    from pycatar import _sha, digest

    code = ("import sys; from pycatar import digest, _sha\n"
            "print(_sha.needs_load('sha512-256', 1), _sha.needs_load('sha256', 8), _sha.needs_load('sha512-256', 8))\n"
            "a = digest.digest_many('sha512-256', [b'abc'] * 8)\n"
            "b = digest.digest_many('sha512-256', [b'abc'])\n"
            "z = digest.digest_many('sha512-256', [bytes(1 << 19)])\n"
            "print('_hashlib' in sys.modules, _sha.needs_load('sha512-256', 1))\n"
            "z += digest.digest_many('sha512-256', [bytes(1 << 19)])\n"
            "print('_hashlib' in sys.modules, _sha.needs_load('sha512-256', 1), _sha.needs_load('sha256', 1))\n"
            "print(a == b * 8, z[0] == z[1], b[0].hex(), z[0].hex())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lanes = _sha.LANES > 0
    assert digest.NARROW_LANES_BYTES == 1 << 20
    assert p.stdout.splitlines() == [
        f"True True {not lanes}",
        f"{not lanes} {lanes}",  # 3 bytes and 512 KiB: within the budget
        "True False False",
        "True True 53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23 "
        + hashlib.new("sha512_256", bytes(1 << 19)).hexdigest(),  # (the second 512 KiB: beyond it)
    ]


def test_without_libcrypto_sha2_is_one_clear_error(tmp_path):
    """libcrypto is loaded at the first SHA-2 digest that needs it (SHA-256 chunk ids here): without it,
    a make is a one-line error saying what to install."""
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(100_000))
    code = ("import sys; from pycatar import digest, cli; "
            "digest._libcrypto_names = lambda: ['libcrypto-not-here.so.9']; sys.argv[0] = 'pycatar'; cli.console()")
    p = subprocess.run([sys.executable, "-c", code, "make", "--digest=sha256", f"--store={tmp_path / 'S'}",
                        str(tmp_path / "z.caibx"), str(src)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "SHA-2 digests need libcrypto (Debian: apt-get install libssl3)" in lines[0], p.stderr
    assert "libcrypto-not-here.so.9" in lines[0]
    assert not (tmp_path / "z.caibx").exists()


def test_read_files_batch(tmp_path):
    """read_files: read_file of each path, the GIL released once: bytes, None for a missing file or
    a symlink, (step, errno) for what cannot be read, each independently of the others."""
    from pycatar._fileio import read_file, read_files

    (tmp_path / "a").write_bytes(b"A" * 5000)
    (tmp_path / "big").write_bytes(b"B" * 101)
    os.symlink("a", tmp_path / "link")
    os.mkdir(tmp_path / "dir")
    paths = [str(tmp_path / n) for n in ("a", "missing", "link", "big", "dir", "a")]
    got = read_files(paths, [100] * 6)
    assert got == [read_file(p, 100) for p in paths]
    assert got == [(2, 0), None, None, (2, 0), (1, errno.EISDIR), (2, 0)]
    got = read_files(paths, [10_000, 1, 1, 101, 10, 4999])
    assert got == [b"A" * 5000, None, None, b"B" * 101, (1, errno.EISDIR), (2, 0)]
    assert read_files([], []) == []
    with pytest.raises(TypeError):
        read_files([b"ok", 5], [10, 10])
    with pytest.raises(ValueError):
        read_files([b"ok"], [])


def test_oversized_chunk_files_are_not_read(tmp_path):
    """A chunk file larger than any encoding of its chunk could be is an error without being read
    (a batch of hostile files takes no more memory than its chunks)."""
    from pycatar.store import StoreSet

    s = LocalStore(tmp_path / "S")
    chunks = [_chunk(300 + i, 5000) for i in range(3)]
    for cid, data in chunks:
        s.put(cid, data)
    big = tmp_path / "S" / chunk_relpath(chunks[1][0])
    os.chmod(big, 0o644)
    with open(big, "r+b") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB, under the 128 MiB any chunk file may take
    got = s.fetch_many([(cid, len(d)) for cid, d in chunks])
    assert got[0][0] == chunks[0][1] and got[2][0] == chunks[2][1]
    assert isinstance(got[1], ChunkError) and "is too large" in str(got[1])
    with pytest.raises(ChunkError, match="is too large"):
        StoreSet([s]).get_many([(cid, len(d)) for cid, d in chunks])


def test_decompress_many_hostile_frames():
    """decompress_many: each buffer exactly one frame of its size; a truncated frame, data after it,
    more or less output than the size, or more than the limit is that chunk's error only."""
    data = bytes(range(256)) * 400
    z = compression.compress(data, "zstd")
    two = z + z
    bomb = compression.compress(bytes(3 << 20), "zstd")
    cases = [(z, len(data)), (z[:-5], len(data)), (two, len(data)), (z, len(data) - 1), (z, len(data) + 1),
             (z, None), (bomb, None), (b"\x28\xb5\x2f\xfd" + b"\xff" * 8, None)]
    out = compression.decompress_many([c for c, _ in cases], [n for _, n in cases], [f"c{i}" for i in range(len(cases))])
    assert out[0] == data and out[5] == data
    msgs = [str(o) for o in out]
    assert "c1: corrupt zstd data (truncated" in msgs[1]
    assert "c2: corrupt zstd data (trailing data" in msgs[2]
    assert f"c3: corrupt zstd data (decompressed size exceeds {len(data) - 1})" == msgs[3]
    assert f"c4: decompressed to {len(data)} bytes, expected {len(data) + 1}" == msgs[4]
    assert isinstance(out[7], ChunkError) and msgs[7].startswith("c7: corrupt zstd data")
    assert out[6] == bytes(3 << 20)  # within the limit
    from pycatar import _zstd
    assert _zstd.decompress_many([bomb], [None], 1 << 20)[0][0] == "exceeds"
    assert _zstd.decompress_many([bomb], [1000], 1 << 20)[0][0] == "size"


def test_batched_reads_fall_back_per_chunk(tmp_path):
    """StoreSet.get_many: a batch from the first (local) store; a chunk it lacks, or holds damaged,
    is had from the next store as get() would; a chunk nowhere raises get()'s error."""
    from pycatar.store import StoreSet

    a, b = LocalStore(tmp_path / "A"), LocalStore(tmp_path / "B")
    chunks = [_chunk(200 + i, 3000 + 1000 * i) for i in range(6)]
    for cid, data in chunks:
        b.put(cid, data)
    for cid, data in chunks[:4]:
        a.put(cid, data)
    damaged = tmp_path / "A" / chunk_relpath(chunks[1][0])
    os.chmod(damaged, 0o644)
    damaged.write_bytes(compression.compress(b"x" * len(chunks[1][1])))
    ss = StoreSet([a, b])
    assert ss.get_many([(cid, len(d)) for cid, d in chunks]) == [d for _, d in chunks]
    lone = StoreSet([a])
    with pytest.raises(ChunkError, match="does not match its id"):
        lone.get_many([(cid, len(d)) for cid, d in chunks[:3]])
    with pytest.raises(ChunkError, match=f"chunk {chunks[5][0].hex()} not found"):
        lone.get_many([(chunks[0][0], len(chunks[0][1])), (chunks[5][0], len(chunks[5][1]))])


def test_without_libzstd_zstd_is_one_clear_error(tmp_path):
    """libzstd is loaded at the first zstd compression: without it, a make with zstd is a one-line
    error saying what to install, and the other compressions still work."""
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(300_000))
    code = ("import sys; from pycatar import compression, cli; "
            "compression.LIBZSTD_NAME = 'libzstd-not-here.so.9'; sys.argv[0] = 'pycatar'; cli.console()")
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                                       timeout=60)
    p = run("make", f"--store={tmp_path / 'S'}", tmp_path / "z.caibx", src)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "zstd compression needs libzstd (Debian: apt-get install libzstd1)" in lines[0], p.stderr
    assert "libzstd-not-here.so.9" in lines[0]
    assert not (tmp_path / "z.caibx").exists()
    p = run("make", "--compression=gzip", f"--store={tmp_path / 'S'}", tmp_path / "g.caibx", src)
    assert p.returncode == 0, p.stderr
    p = run("extract", f"--store={tmp_path / 'S'}", tmp_path / "g.caibx", tmp_path / "out")
    assert p.returncode == 0 and (tmp_path / "out").read_bytes() == src.read_bytes(), p.stderr


def test_install_file_write_failure(tmp_path):
    """A failed write removes the temporary file and installs nothing."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "from pycatar._fileio import install_file\n"
        f"print(install_file({str(tmp_path / 't')!r}, {str(tmp_path / 'f')!r}, b'x' * 5000, 0o444))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == f"(1, {errno.EFBIG})", r.stderr
    assert os.listdir(tmp_path) == []


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_no_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    """STORE-4 where link() is refused (EPERM, e.g. some FUSE or SMB mounts): the complete temporary
    file is renamed into place unless the chunk appeared meanwhile; no temporary file is left."""
    import pycatar.fileio as fileio_mod  # the one place chunk files are installed

    def no_links(tmp, final, data, mode):
        with open(tmp, "xb") as f:
            f.write(data)
        return (2, errno.EPERM)

    monkeypatch.setattr(fileio_mod, "install_files", lambda jobs, mode: [no_links(*job, mode) for job in jobs])
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(6)
    assert s.put(cid, data) > 0
    assert s.get(cid, len(data)) == data
    sub = (tmp_path / "S" / chunk_relpath(cid)).parent
    assert os.listdir(sub) == [f"{cid.hex()}.cacnk"]
    assert LocalStore(tmp_path / "S").put(cid, data) == 0  # present (found before compressing)
    s2 = LocalStore(tmp_path / "S")
    s2._fresh_dirs.add(cid.hex()[:4])  # skip the check: the fallback itself must not replace the chunk
    ino = (tmp_path / "S" / chunk_relpath(cid)).stat().st_ino
    assert s2.put(cid, data) == 0
    assert (tmp_path / "S" / chunk_relpath(cid)).stat().st_ino == ino
    assert os.listdir(sub) == [f"{cid.hex()}.cacnk"]


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_gc_grace_spares_young_chunks(tmp_path):
    """STORE-19: gc leaves unreferenced chunks younger than the grace period (default a day) alone;
    with a grace of 0 it removes them all, as casync."""
    s = LocalStore(tmp_path / "S")
    chunks = [_chunk(40 + i) for i in range(4)]
    for cid, data in chunks:
        s.put(cid, data)
    _index(tmp_path / "one.caibx", [(chunks[0][0], 70000)])
    old, young = chunks[1][0], chunks[2][0]
    _age(s.chunk_path(old), 2 * 86400)
    _age(s.chunk_path(chunks[3][0]), 3600)  # an hour old: young for the default, old for --grace=30m
    res = gc(s, [tmp_path / "one.caibx"], dry_run=True)
    assert res.removed == [old.hex() + ".cacnk"] and res.young == 2 and res.remaining == 3
    res = gc(s, [tmp_path / "one.caibx"], grace=1800)
    assert sorted(res.removed) == sorted([old.hex() + ".cacnk", chunks[3][0].hex() + ".cacnk"])
    assert [s.has(c) for c, _ in chunks] == [True, False, True, False]
    res = gc(s, [tmp_path / "one.caibx"], grace=0)
    assert res.removed == [young.hex() + ".cacnk"]
    with pytest.raises(UsageError):
        gc(s, [tmp_path / "one.caibx"], grace=-1)


def test_put_refreshes_an_old_chunk_it_finds(tmp_path):
    """STORE-20: a writer that finds its chunk stored but older than an hour makes it young again, so
    that gc with a grace period leaves it to the index about to reference it; a younger one is untouched."""
    s = LocalStore(tmp_path / "S")
    cid, data = _chunk(50)
    s.put(cid, data)
    _age(s.chunk_path(cid), 2 * 86400)
    s2 = LocalStore(tmp_path / "S")  # another writer (a fresh object: nothing cached)
    assert s2.put(cid, data) == 0
    assert time.time() - os.stat(s.chunk_path(cid)).st_mtime < 60
    _age(s.chunk_path(cid), 1800)
    assert LocalStore(tmp_path / "S").put(cid, data) == 0
    assert 1700 < time.time() - os.stat(s.chunk_path(cid)).st_mtime < 1900


def test_gc_cli_default_grace_and_duration_syntax(tmp_path):
    """STORE-19: pycatar gc keeps fresh chunks by default; --grace=0 removes them; bad durations refused."""
    import subprocess
    import sys

    s = LocalStore(tmp_path / "S")
    chunks = [_chunk(60 + i) for i in range(2)]
    for cid, data in chunks:
        s.put(cid, data)
    _index(tmp_path / "one.caibx", [(chunks[0][0], 70000)])

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pycatar", "gc", f"--store={tmp_path / 'S'}", *args,
                               tmp_path / "one.caibx"], capture_output=True, text=True)

    assert run("-n").stdout == "Would remove 0 chunks, 2 chunks remaining.\n"
    assert run("-n", "--grace=1w").stdout == "Would remove 0 chunks, 2 chunks remaining.\n"
    p = run("--grace=fortnight")
    assert p.returncode != 0 and p.stderr == "Failed to parse --grace= parameter: fortnight\n"
    assert run("-n", "--grace=0").stdout == "Would remove 1 chunks, 1 chunks remaining.\n"
    _age(s.chunk_path(chunks[1][0]), 60)
    assert run("-n", "--grace=1.5m").stdout == "Would remove 0 chunks, 2 chunks remaining.\n"
    assert run("-n", "--grace=50s").stdout == "Would remove 1 chunks, 1 chunks remaining.\n"


def test_default_store_beside_an_object_store_index():
    """STORE-9, STORE-18: the default store of an s3+ index is default.castr beside it, with the URL's parameters."""
    env = {}
    assert default_store_for("s3+http://h:9000/b/idx/x.caibx?lookup=path", env) == \
        "s3+http://h:9000/b/idx/default.castr?lookup=path"
    assert default_store_for("s3+https://h/b/x.caibx", env) == "s3+https://h/b/default.castr"
