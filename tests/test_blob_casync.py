"""Blob indexes against the real casync: identical indexes, identical stores, cross-extraction."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from conftest_chunk_helpers import casync_bin, chunk_files, make_blob, run  # noqa: F401 (fixture)
from measured import run_measured

from pycatar import compression
from pycatar.blob import (
    IndexStream,
    chunk_stream,
    extract_blob,
    iter_buffers,
    make_blob_index,
    stream_digest,
    write_chunks_to_store,
)
from pycatar.chunker import Chunker, chunk_size_from_args
from pycatar.errors import ChunkError, FormatError
from pycatar.index import IndexReader, IndexWriter, blob_index_flags
from pycatar.store import LocalStore, StoreSet, gc

BLOB_SIZE = 24 << 20


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    p = tmp_path_factory.mktemp("blob") / "blob.img"
    p.write_bytes(make_blob(2024, BLOB_SIZE))
    return p


def _same_stores(s1, s2):
    """Same chunk file names and the same compressed bytes: both tools compress with the system's
    libzstd (liblzma, zlib) at the same settings (STORE-5)."""
    f1, f2 = chunk_files(s1), chunk_files(s2)
    assert set(f1) == set(f2)
    assert all(name.endswith(".cacnk") for name in f1)
    for name in f1:
        assert open(f1[name], "rb").read() == open(f2[name], "rb").read(), name
    return len(f1)


SETTINGS = {
    "default": [],
    "8K": ["--chunk-size=8K"],
    "64K:256K:1M": ["--chunk-size=64K:256K:1M"],
    "sha256": ["--digest=sha256"],
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_make_and_extract_like_casync(casync_bin, tmp_path, blob, name):
    """INDEX-1, STORE-1, CHUNK-1: same .caibx bytes, same chunk files (even compressed), same
    printed digest; each tool extracts from the other's store."""
    args = SETTINGS[name]
    p = run(casync_bin, "make", f"--store={tmp_path / 'S1'}", *args, tmp_path / "c.caibx", blob)
    sizes = chunk_size_from_args(args[0].split("=", 1)[1]) if args and "chunk-size" in args[0] else None
    digest = "sha256" if "--digest=sha256" in args else "sha512-256"
    res = make_blob_index(blob, tmp_path / "o.caibx", tmp_path / "S2", chunk_size=sizes, digest=digest)

    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    n = _same_stores(tmp_path / "S1", tmp_path / "S2")
    assert res.new_chunks == n and res.chunks == res.new_chunks + res.reused_chunks
    assert p.stdout.decode().strip() == res.hexdigest
    assert res.digest == hashlib.new(digest.replace("-", "_"), blob.read_bytes()).digest()
    assert res.size == BLOB_SIZE

    run(casync_bin, "extract", f"--store={tmp_path / 'S2'}", tmp_path / "o.caibx", tmp_path / "out-casync")
    assert (tmp_path / "out-casync").read_bytes() == blob.read_bytes()
    ex = extract_blob(tmp_path / "c.caibx", tmp_path / "out-ours", [tmp_path / "S1"], digest=digest)
    assert (tmp_path / "out-ours").read_bytes() == blob.read_bytes()
    assert ex.size == BLOB_SIZE and ex.digest == res.digest
    assert sorted(os.listdir(tmp_path)) == ["S1", "S2", "c.caibx", "o.caibx", "out-casync", "out-ours"]


@pytest.mark.parametrize("sizes", [None, "64K:256K:1M"])
def test_compressible_chunks_like_casync(casync_bin, tmp_path, sizes):
    """STORE-5: zstd chunk files of compressible data, small and larger than one zstd block (128
    KiB), are byte-identical to casync's (both use the system's libzstd, level 3, streaming)."""
    import random

    r = random.Random(5)
    words = [bytes(r.choices(b"abcdefghijklmnopqrstuvwxyz", k=r.randint(2, 9))) for _ in range(3000)]
    text = tmp_path / "text"
    text.write_bytes(b" ".join(r.choice(words) + (b"\n" if r.random() < 0.1 else b"") for _ in range(700_000)))
    args = [f"--chunk-size={sizes}"] if sizes else []
    run(casync_bin, "make", f"--store={tmp_path / 'S1'}", *args, tmp_path / "c.caibx", text)
    make_blob_index(text, tmp_path / "o.caibx", tmp_path / "S2", chunk_size=chunk_size_from_args(sizes) if sizes else None)
    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    stored = sum(os.path.getsize(f) for f in chunk_files(tmp_path / "S2").values())
    assert stored < text.stat().st_size // 2  # compressed indeed
    assert _same_stores(tmp_path / "S1", tmp_path / "S2") > 3


@pytest.mark.parametrize("kind", ["xz", "gzip"])
def test_other_compressions_like_casync(casync_bin, tmp_path, blob, kind):
    """STORE-5: --compression=xz|gzip chunks are byte-identical to casync's; both read both."""
    small = tmp_path / "small"
    small.write_bytes(blob.read_bytes()[: 3 << 20])
    run(casync_bin, "make", f"--store={tmp_path / 'S1'}", f"--compression={kind}", tmp_path / "c.caibx", small)
    make_blob_index(small, tmp_path / "o.caibx", tmp_path / "S2", compression=kind)
    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    _same_stores(tmp_path / "S1", tmp_path / "S2")
    run(casync_bin, "extract", f"--store={tmp_path / 'S2'}", tmp_path / "o.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == small.read_bytes()


def test_extra_stores(casync_bin, tmp_path, blob):
    """STORE-10: chunks are found across the primary and extra stores, in order."""
    small = tmp_path / "small"
    small.write_bytes(blob.read_bytes()[: 2 << 20])
    make_blob_index(small, tmp_path / "o.caibx", tmp_path / "A")
    files = sorted(chunk_files(tmp_path / "A"))
    os.makedirs(tmp_path / "B")
    for rel in files[::2]:  # move half of the chunks to a second store
        os.makedirs(tmp_path / "B" / os.path.dirname(rel), exist_ok=True)
        os.rename(tmp_path / "A" / rel, tmp_path / "B" / rel)
    with pytest.raises(ChunkError):
        extract_blob(tmp_path / "o.caibx", tmp_path / "x", [tmp_path / "A"])
    assert not (tmp_path / "x").exists()
    extract_blob(tmp_path / "o.caibx", tmp_path / "x", [tmp_path / "A", tmp_path / "B"])
    assert (tmp_path / "x").read_bytes() == small.read_bytes()
    run(casync_bin, "extract", f"--store={tmp_path / 'A'}", f"--extra-store={tmp_path / 'B'}",
        tmp_path / "o.caibx", tmp_path / "y")
    assert (tmp_path / "y").read_bytes() == small.read_bytes()


def test_blake3_roundtrip(casync_bin, tmp_path, blob):
    """INDEX-5 (BLAKE3 extension): our round trip works; casync refuses the index."""
    import blake3

    data = blob.read_bytes()[: 4 << 20]
    (tmp_path / "b").write_bytes(data)
    res = make_blob_index(tmp_path / "b", tmp_path / "b3.caibx", tmp_path / "S", digest="blake3")
    assert res.digest == blake3.blake3(data).digest()
    with IndexReader(tmp_path / "b3.caibx") as r:
        assert r.digest == "blake3" and r.feature_flags == blob_index_flags("blake3")
        first = next(iter(r))
        assert first.id == blake3.blake3(data[: first.end]).digest()
    extract_blob(tmp_path / "b3.caibx", tmp_path / "out", [tmp_path / "S"])
    assert (tmp_path / "out").read_bytes() == data
    p = run(casync_bin, "extract", f"--store={tmp_path / 'S'}", tmp_path / "b3.caibx", tmp_path / "c", check=False)
    assert p.returncode != 0 and not (tmp_path / "c").exists()


def test_malformed_index_and_corrupt_chunk(tmp_path, blob):
    """INDEX-7, STORE-8: extraction fails cleanly (one-line error, no output file)."""
    data = blob.read_bytes()[: 2 << 20]
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    raw = (tmp_path / "o.caibx").read_bytes()
    (tmp_path / "bad.caibx").write_bytes(raw[:-1])
    with pytest.raises(FormatError):
        extract_blob(tmp_path / "bad.caibx", tmp_path / "out", [tmp_path / "S"])
    (tmp_path / "bad.caibx").write_bytes(raw[:8] + b"\0" * 8 + raw[16:])
    with pytest.raises(FormatError):
        extract_blob(tmp_path / "bad.caibx", tmp_path / "out", [tmp_path / "S"])

    with IndexReader(tmp_path / "o.caibx") as r:
        victim = r.chunk(len(r) // 2)
    path = LocalStore(tmp_path / "S").chunk_path(victim.id)
    os.chmod(path, 0o644)
    other = compression.compress(b"x" * victim.size)
    with open(path, "wb") as f:
        f.write(other)
    with pytest.raises(ChunkError) as ei:
        extract_blob(tmp_path / "o.caibx", tmp_path / "out", [tmp_path / "S"])
    assert victim.id.hex() in str(ei.value) and "\n" not in str(ei.value)
    assert sorted(os.listdir(tmp_path)) == ["S", "b", "bad.caibx", "o.caibx"]


def test_gc_like_casync(casync_bin, tmp_path, blob):
    """STORE-11: gc removes exactly what casync gc removes: chunks no given index references."""
    data = blob.read_bytes()
    for name, part in (("one", data[: 3 << 20]), ("two", data[2 << 20: 5 << 20]), ("three", data[8 << 20: 9 << 20])):
        (tmp_path / name).write_bytes(part)
        make_blob_index(tmp_path / name, tmp_path / f"{name}.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    shutil.copytree(tmp_path / "S", tmp_path / "C")
    keep_idx = [tmp_path / "one.caibx", tmp_path / "two.caibx"]
    res = gc(tmp_path / "S", keep_idx, grace=0)
    assert res.removed
    p = run(casync_bin, "gc", f"--store={tmp_path / 'C'}", *keep_idx)
    assert set(chunk_files(tmp_path / "S")) == set(chunk_files(tmp_path / "C"))
    referenced = set()
    for i in keep_idx:
        with IndexReader(i) as r:
            referenced |= {c.id for c in r}
    assert set(LocalStore(tmp_path / "S")) == referenced
    extract_blob(tmp_path / "two.caibx", tmp_path / "t", [tmp_path / "S"])
    assert (tmp_path / "t").read_bytes() == data[2 << 20: 5 << 20]
    assert p.stdout == b""


def test_digest_like_casync(casync_bin, tmp_path, blob):
    """`casync digest x.caibx` prints the SHA512-256 of the stream, whatever the index's chunk
    digest and even with --digest=sha256 (which it honours for a plain file)."""
    data = blob.read_bytes()[: 3 << 20]
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", digest="sha256")
    p = run(casync_bin, "digest", f"--store={tmp_path / 'S'}", tmp_path / "o.caibx")
    assert p.stdout.decode().strip() == stream_digest(tmp_path / "o.caibx", [tmp_path / "S"]).hex()
    assert p.stdout.decode().strip() == hashlib.new("sha512_256", data).hexdigest()
    p = run(casync_bin, "digest", "--digest=sha256", f"--store={tmp_path / 'S'}", tmp_path / "o.caibx")
    assert p.stdout.decode().strip() == hashlib.new("sha512_256", data).hexdigest()
    p = run(casync_bin, "digest", "--digest=sha256", tmp_path / "b")
    assert p.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def test_stream_of_small_buffers(casync_bin, tmp_path, blob):
    """An encoder-like iterator of small buffers is chunked into the same index casync makes."""
    data = blob.read_bytes()[: 6 << 20]
    (tmp_path / "b").write_bytes(data)
    run(casync_bin, "make", f"--store={tmp_path / 'S1'}", tmp_path / "c.caibx", tmp_path / "b")

    def pieces():
        i, k = 0, 1
        while i < len(data):
            n = (k * 7919) % 20000 + 1
            yield data[i:i + n]
            i += n
            k += 1

    ch = Chunker()
    st = LocalStore(tmp_path / "S2")
    with IndexWriter(tmp_path / "o.caibx", feature_flags=blob_index_flags(), chunk_sizes=ch.sizes) as w:
        for _end, cid, size in write_chunks_to_store(chunk_stream(pieces(), ch), st):
            w.append(cid, size)
    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    _same_stores(tmp_path / "S1", tmp_path / "S2")


def test_short_reads_are_joined(tmp_path):
    """A reader that returns short reads (a pipe) yields full read_size buffers, the same bytes."""
    data = os.urandom(100_000)

    class Trickle:
        def __init__(self):
            self.pos = 0

        def read(self, n):
            n = min(n, 3000, len(data) - self.pos)
            self.pos += n
            return data[self.pos - n:self.pos]

    got = [bytes(mv) for mv in iter_buffers(Trickle(), 16384)]
    assert b"".join(got) == data
    assert [len(b) for b in got] == [16384] * 6 + [100_000 - 6 * 16384]
    with open(tmp_path / "f", "wb") as f:
        f.write(data)
    with open(tmp_path / "f", "rb", buffering=0) as f:
        assert [len(mv) for mv in iter_buffers(f, 65536)] == [65536, 100_000 - 65536]


def test_index_stream_reads_only_needed_chunks(tmp_path, blob):
    """A seekable view of an indexed stream fetches only the chunks covering what is read."""
    data = blob.read_bytes()[: 4 << 20]
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    with IndexReader(tmp_path / "o.caibx") as r:
        n = len(r)
        assert n > 100
        s = IndexStream(r, [tmp_path / "S"])
        c = r.chunk(n // 2)
        s.seek(c.start + 10)
        assert s.read(100) == data[c.start + 10: c.start + 110]
        assert s.chunks_fetched == 1 and s.fetched == [n // 2]
        # a read spanning a boundary fetches the next chunk only
        s.seek(c.end - 5)
        assert s.read(10) == data[c.end - 5: c.end + 5]
        assert s.fetched == [n // 2, n // 2 + 1]
        s.seek(-3, os.SEEK_END)
        assert s.read() == data[-3:] and s.read(5) == b""
        assert s.chunks_fetched == 3
        s.seek(0)
        assert s.read(10) == data[:10] and s.fetched[-1] == 0
        # sequential read-ahead through a pool gives the whole stream
        with IndexStream(r, StoreSet([tmp_path / "S"]), threads=2, readahead=4) as full:
            assert full.read() == data
            assert full.chunks_fetched == n
        # readview: views of one chunk each, never past its end, together the stream
        s.seek(c.start + 10)
        v = s.readview(1 << 20)
        assert isinstance(v, memoryview) and v.readonly and bytes(v) == data[c.start + 10:c.end]
        assert s.tell() == c.end and s.readview(7) == data[c.end:c.end + 7]
        s.seek(0)
        views = iter(lambda: s.readview(1 << 20), b"")
        assert [len(v) for v in views] == [ref.size for ref in r.chunks()]
        s.seek(0)
        assert b"".join(iter(lambda: s.readview(1000), b"")) == data


def test_caidx_stream_equals_catar(casync_bin, tmp_path):
    """The stream behind a casync .caidx, read through IndexStream, is casync's .catar."""
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(make_blob(1, 700_000))
    (d / "sub" / "b").write_bytes(b"hello\n" * 1000)
    os.symlink("a", d / "link")
    run(casync_bin, "make", f"--store={tmp_path / 'S'}", tmp_path / "t.caidx", d)
    run(casync_bin, "make", tmp_path / "t.catar", d)
    with IndexReader(tmp_path / "t.caidx") as r, IndexStream(r, [tmp_path / "S"]) as s:
        assert s.read() == (tmp_path / "t.catar").read_bytes()


def test_index_mode_follows_input(casync_bin, tmp_path):
    """INDEX-6: the index file gets the input's permission bits (& 0666, less the umask)."""
    (tmp_path / "b").write_bytes(os.urandom(100_000))
    os.chmod(tmp_path / "b", 0o640)
    run(casync_bin, "make", f"--store={tmp_path / 'S1'}", tmp_path / "c.caibx", tmp_path / "b")
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S2")
    assert (tmp_path / "o.caibx").stat().st_mode & 0o777 == (tmp_path / "c.caibx").stat().st_mode & 0o777
    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()


def test_blob_index_flags_options(casync_bin, tmp_path):
    """INDEX-4: --with=/--exclude-nodump= change a blob index's flags; ours follow when told so."""
    from pycatar.flags import Flag

    (tmp_path / "b").write_bytes(os.urandom(50_000))
    run(casync_bin, "make", f"--store={tmp_path / 'S'}", "--with=xattrs", "--exclude-nodump=no",
        tmp_path / "c.caibx", tmp_path / "b")
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S",
                    feature_flags=int(Flag.WITH_XATTRS | Flag.EXCLUDE_FILE))
    assert (tmp_path / "o.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()


def test_tiny_chunks_in_bounded_memory(casync_bin, tmp_path):
    """Issue 14 item 2: work in flight is bounded by count, not only by bytes: 1 MiB cut into one-byte
    chunks (a million chunks) makes the same index as casync's in far less memory than before (450 MB)."""
    (tmp_path / "in").write_bytes(os.urandom(1 << 20))
    run(casync_bin, "make", "--chunk-size=1:1:1", "--store", tmp_path / "c.castr", tmp_path / "c.caibx",
        tmp_path / "in")
    rc, _, err, peak = run_measured(tmp_path, "make", "--chunk-size=1:1:1", "--store", tmp_path / "p.castr",
                                    tmp_path / "p.caibx", tmp_path / "in")
    assert rc == 0, err
    assert (tmp_path / "p.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    assert peak < 200 * 1024, peak  # KiB, the command's own peak


@pytest.mark.parametrize("how", ["path", "new file", "after a header", "append mode"])
def test_sparse_output_holds_the_stream(tmp_path, how):
    """With holes punched, the output holds the stream's bytes whatever it is: our own file, or a
    caller's file object -- written from its position on (after a header), or, in append mode (where
    a write lands at the end whatever the offset), written whole with no holes."""
    data = b"a" * 5000 + bytes(3 * 4096) + b"b" * 10 + bytes(1 << 20) + os.urandom(70_000) + bytes(5000)
    (tmp_path / "src").write_bytes(data)
    make_blob_index(tmp_path / "src", tmp_path / "x.caibx", tmp_path / "S")
    out = tmp_path / "out"
    header = b"header" if how in ("after a header", "append mode") else b""
    out.write_bytes(header)
    if how == "path":
        ex = extract_blob(tmp_path / "x.caibx", out, [tmp_path / "S"], sparse=True)
    else:
        with open(out, "ab" if how == "append mode" else "r+b") as f:
            f.seek(0, os.SEEK_END)
            ex = extract_blob(tmp_path / "x.caibx", f, [tmp_path / "S"], sparse=True)
            assert f.tell() == len(header) + len(data)
            f.write(b"!")  # the caller's file object goes on from the end of the stream
        data += b"!"
    assert ex.size == len(data) - (how != "path")
    assert out.read_bytes() == header + data
    blocks = os.stat(out).st_blocks * 512
    assert blocks < len(data) - (1 << 19) if how != "append mode" else blocks >= len(data)


def test_index_stream_prefetch_dropped_then_wanted_again(tmp_path):
    """A prefetch dropped before it started (the reader jumped away) and then wanted again (the
    reader came back) is fetched: the dropped job, still queued ahead of the new one, must leave the
    new one alone (it once took the new job's place and the reader waited for ever)."""
    import random
    import threading

    from pycatar.blob import ChunkSource, IndexStream, StoreSource

    data = random.Random(7).randbytes(2 << 20)
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    gate = threading.Event()

    class Gated(ChunkSource):  # the pool's fetches wait at the gate until it opens
        def __init__(self, inner):
            self.inner = inner

        def fetch(self, ref):
            if threading.current_thread() is not threading.main_thread():
                gate.wait(10)
            return self.inner.fetch(ref)

    with IndexReader(tmp_path / "o.caibx") as r:
        n = len(r)
        assert n > 40
        refs = list(r.chunks())
        with IndexStream(r, Gated(StoreSource(StoreSet([tmp_path / "S"]))), threads=1, readahead=8) as s:
            assert s.read(10) == data[:10]  # chunk 0 (fetched here); 1..8 queued behind the gate
            s.seek(refs[30].start)  # a jump: the queued prefetches of 2..8 are dropped
            assert s.read(10) == data[refs[30].start:refs[30].start + 10]
            s.seek(refs[1].start)  # back: 2..9 wanted again, new jobs queued after the dropped ones
            gate.set()
            done = []
            reader = threading.Thread(target=lambda: done.append(s.read(refs[12].start - refs[1].start)))
            reader.start()
            reader.join(20)
            assert not reader.is_alive(), "the reader waits for a prefetch that never runs"
            assert done == [data[refs[1].start:refs[12].start]]


def test_index_stream_prefetches_in_batches(tmp_path):
    """The pool fetches the chunks ahead of the reader several per job (one ``fetch_many``), and a
    batch holding a bad chunk still gives its good ones: the error reaches whoever reads the bad
    chunk, and only them."""
    import random

    from pycatar.blob import ChunkSource, StoreSource

    data = random.Random(8).randbytes(2 << 20)
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    batches: list[list[int]] = []

    class OneBad(ChunkSource):
        def __init__(self, inner, bad):
            self.inner, self.bad = inner, bad

        def fetch(self, ref):
            if ref.index == self.bad:
                raise ChunkError(f"chunk {ref.index} is damaged")
            return self.inner.fetch(ref)

        def fetch_many(self, refs):
            batches.append([r.index for r in refs])
            if any(r.index == self.bad for r in refs):
                raise ChunkError(f"chunk {self.bad} is damaged")
            return self.inner.fetch_many(refs)

    with IndexReader(tmp_path / "o.caibx") as r:
        refs = list(r.chunks())
        bad = 43
        assert len(refs) > 100
        with IndexStream(r, OneBad(StoreSource(StoreSet([tmp_path / "S"])), bad), threads=2, readahead=32) as s:
            assert s.read(refs[bad].start) == data[:refs[bad].start]
            with pytest.raises(ChunkError, match=f"chunk {bad} is damaged"):
                s.read(10)
            s.seek(refs[bad + 1].start)
            assert s.read() == data[refs[bad + 1].start:]
            # every chunk fetched once, the bad one twice (the pool's try, then the reader's): the
            # good ones of its batch were not thrown away with it
            assert s.chunks_fetched == len(refs) + 1
    assert max(len(b) for b in batches) == 8
    shared = next(b for b in batches if bad in b)  # the bad chunk's batch held good ones, read above
    assert len(shared) > 1


def test_index_stream_start_fetches_before_the_first_read(tmp_path):
    """start(pos) hands the readahead window from the chunk holding ``pos`` to the pool before any
    read (extract_tree loads the extractor meanwhile): the pool, not the reader, fetches that chunk,
    and the reads that follow get the stream's bytes.  Without a pool, or out of range, it does
    nothing."""
    import random
    import threading

    from pycatar.blob import ChunkSource, IndexStream, StoreSource

    data = random.Random(11).randbytes(2 << 20)
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))
    fetched_by: dict[int, str] = {}
    arrived = threading.Event()

    class Recording(ChunkSource):
        def __init__(self, inner):
            self.inner = inner

        def fetch(self, ref):
            return self.fetch_many([ref])[0]

        def fetch_many(self, refs):
            out = self.inner.fetch_many(refs)
            for r in refs:
                fetched_by[r.index] = threading.current_thread().name
            arrived.set()
            return out

    with IndexReader(tmp_path / "o.caibx") as r:
        refs = list(r.chunks())
        source = Recording(StoreSource(StoreSet([tmp_path / "S"])))
        with IndexStream(r, source, threads=2, readahead=8) as s:
            s.start(refs[5].start + 1)
            assert arrived.wait(10), "start() fetched nothing"
            for _ in range(200):  # the whole window: chunks 5..12, by the pool's threads
                if len(fetched_by) == 8:
                    break
                threading.Event().wait(0.01)
            assert sorted(fetched_by) == list(range(5, 13))
            assert all(name != threading.current_thread().name for name in fetched_by.values())
            s.seek(refs[5].start)
            assert s.read(refs[20].start - refs[5].start) == data[refs[5].start:refs[20].start]
            assert fetched_by[5] != threading.current_thread().name  # waited for, not fetched again
            assert s.chunks_fetched == len(set(s.fetched))  # each chunk once
            assert set(range(5, 20)) <= set(s.fetched) and min(s.fetched) == 5
        fetched_by.clear()
        with IndexStream(r, source, threads=0) as s:  # no pool: nothing to start
            s.start(0)
            assert not fetched_by and s.chunks_fetched == 0
        with IndexStream(r, source, threads=2, readahead=8) as s:
            s.start(len(data))
            s.start(-1)
            assert s.chunks_fetched == 0
            assert s.read() == data


def test_blob_extraction_fetches_half_a_mebibyte_per_job(tmp_path):
    """A blob's chunks go to the pool about 512 KiB a job (the GIL is handed over three times a job,
    a 64 KiB chunk a job cost a quarter of the CPU), and come out in order, byte for byte."""
    import random

    from pycatar.blob import ChunkSource, StoreSource

    data = random.Random(10).randbytes(6 << 20)
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S")
    jobs: list[int] = []

    class Counting(StoreSource):
        def fetch_many(self, refs):
            jobs.append(sum(r.size for r in refs))
            return super().fetch_many(refs)

    src = Counting(StoreSet([tmp_path / "S"]))
    assert isinstance(src, ChunkSource)
    extract_blob(tmp_path / "o.caibx", tmp_path / "out", None, source=src, threads=2)
    assert (tmp_path / "out").read_bytes() == data
    assert sum(jobs) == len(data)
    assert all(n >= 512 << 10 for n in jobs[:-1]), jobs
    assert len(jobs) <= len(data) // (512 << 10) + 1


def test_index_stream_closes_without_asking_a_failing_source_again(tmp_path):
    """Once the reader gave up (the stream closes), a prefetch batch that failed does not go on to
    ask the source for each of its chunks one by one: with an unreachable server each would wait for
    a timeout, and closing waits for the pool."""
    import random
    import time

    from pycatar.blob import ChunkSource

    data = random.Random(9).randbytes(1 << 20)
    (tmp_path / "b").write_bytes(data)
    make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S", chunk_size=(4096, 16384, 65536))

    class Unreachable(ChunkSource):  # every request ends in a timeout, after 1 s
        def fetch(self, ref):
            time.sleep(1)
            raise ChunkError("timed out")

        def fetch_many(self, refs):
            return self.fetch(refs[0])

    with IndexReader(tmp_path / "o.caibx") as r:
        assert len(r) > 20
        t0 = time.monotonic()
        s = IndexStream(r, Unreachable(), threads=1, readahead=16)
        with pytest.raises(ChunkError, match="timed out"):
            s.read(10)
        s.close()
        # the reader's own fetch and the batch (1 s, side by side), at most one more in the pool; a
        # batch of 8 asked again one by one would take 8 s more
        assert time.monotonic() - t0 < 4
