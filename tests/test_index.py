"""Index files (spec/index.md): writing, reading, and rejecting malformed input."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from conftest_chunk_helpers import casync_bin, run  # noqa: F401 (fixture)
from pycatar.errors import FormatError, UsageError
from pycatar.flags import DEFAULT, Flag
from pycatar.index import (
    HEAD_SIZE,
    MIN_FILE_SIZE,
    IndexReader,
    IndexWriter,
    blob_index_flags,
    read_index,
)

SIZES = (16384, 65536, 262144)


def _ids(n):
    return [hashlib.sha256(str(i).encode()).digest() for i in range(n)]


def _write(path, sizes=(1000, 2000, 50000), flags=None, chunk_sizes=SIZES):
    with IndexWriter(path, feature_flags=blob_index_flags() if flags is None else flags,
                     chunk_sizes=chunk_sizes) as w:
        for cid, s in zip(_ids(len(sizes)), sizes):
            w.append(cid, s)
    return path.read_bytes()


def test_layout(tmp_path):
    """INDEX-2/3/6/7: header, TABLE header with size UINT64_MAX, items with end offsets, tail."""
    raw = _write(tmp_path / "a.caibx")
    assert len(raw) == MIN_FILE_SIZE + 3 * 40
    assert struct.unpack_from("<6Q", raw, 0) == (
        48, 0x96824D9C7B129FF9, 0xB000000000000000, 16384, 65536, 262144)
    assert struct.unpack_from("<2Q", raw, 48) == (0xFFFFFFFFFFFFFFFF, 0xE75B9E112F17417D)
    assert [struct.unpack_from("<Q", raw, HEAD_SIZE + 40 * i)[0] for i in range(3)] == [1000, 3000, 53000]
    assert raw[HEAD_SIZE + 8:HEAD_SIZE + 40] == _ids(1)[0]
    assert struct.unpack_from("<5Q", raw, len(raw) - 40) == (0, 0, 48, 16 + 3 * 40 + 40, 0x4B4F050E5549ECD1)


def test_roundtrip_and_random_access(tmp_path):
    sizes = [1 + (i * 7919) % 60000 for i in range(500)]
    _write(tmp_path / "a.caibx", sizes)
    with IndexReader(tmp_path / "a.caibx") as r:
        assert len(r) == 500 and r.digest == "sha512-256" and r.chunk_sizes == SIZES
        assert r.blob_size == sum(sizes)
        refs = list(r.chunks())
        assert [c.size for c in refs] == sizes and [c.id for c in refs] == _ids(500)
        for i in (0, 1, 250, 499):
            assert r.chunk(i) == refs[i]
            assert r.find(refs[i].start) == i and r.find(refs[i].end - 1) == i
        assert list(r.chunks(250)) == refs[250:]
    hdr, refs2 = read_index(tmp_path / "a.caibx")
    assert refs2 == refs and hdr.feature_flags == blob_index_flags()


def test_empty_index(tmp_path):
    raw = _write(tmp_path / "e.caibx", [])
    assert len(raw) == MIN_FILE_SIZE
    with IndexReader(tmp_path / "e.caibx") as r:
        assert len(r) == 0 and r.blob_size == 0 and list(r) == []


def test_digest_flags(tmp_path):
    """INDEX-4/5: blob indexes carry the digest bit plus casync's default exclude bits."""
    assert blob_index_flags("sha256") == 0x9000000000000000
    assert blob_index_flags("sha512-256") == 0xB000000000000000
    assert blob_index_flags("blake3") == 0x9800000000000000
    _write(tmp_path / "b.caibx", flags=blob_index_flags("blake3"))
    assert IndexReader(tmp_path / "b.caibx").digest == "blake3"
    _write(tmp_path / "c.caidx", flags=DEFAULT)
    assert IndexReader(tmp_path / "c.caidx").digest == "sha512-256"


def test_writer_atomic(tmp_path):
    """INDEX-9: the final name appears only complete; an error leaves nothing behind."""
    p = tmp_path / "a.caibx"
    w = IndexWriter(p, feature_flags=blob_index_flags(), chunk_sizes=SIZES)
    w.append(_ids(1)[0], 10)
    assert not p.exists() and len(os.listdir(tmp_path)) == 1
    w.close()
    assert p.exists() and os.listdir(tmp_path) == ["a.caibx"]
    with pytest.raises(RuntimeError):
        with IndexWriter(tmp_path / "b.caibx", feature_flags=blob_index_flags(), chunk_sizes=SIZES) as w:
            w.append(_ids(1)[0], 10)
            raise RuntimeError
    assert os.listdir(tmp_path) == ["a.caibx"]
    # to a file object
    bio = io.BytesIO()
    with IndexWriter(fileobj=bio, feature_flags=blob_index_flags(), chunk_sizes=SIZES) as w:
        w.append(_ids(1)[0], 10)
    assert bio.getvalue() == p.read_bytes()


def test_writer_refuses(tmp_path):
    w = IndexWriter(tmp_path / "x", feature_flags=blob_index_flags(), chunk_sizes=(1, 2, 4))
    with pytest.raises(UsageError):
        w.append(_ids(1)[0], 5)  # INDEX-6: larger than max
    w.abort()
    with pytest.raises(UsageError):
        IndexWriter(tmp_path / "y", feature_flags=1 << 50, chunk_sizes=SIZES)
    with pytest.raises(UsageError):
        IndexWriter(tmp_path / "y", feature_flags=0, chunk_sizes=(5, 4, 8))
    assert os.listdir(tmp_path) == []


def test_read_from_pipe(tmp_path):
    raw = _write(tmp_path / "a.caibx")
    r, w = os.pipe()
    os.write(w, raw)
    os.close(w)
    with open(r, "rb") as f, IndexReader(f) as idx:
        assert [c.end for c in idx] == [1000, 3000, 53000]


def _patch(raw: bytes, off: int, fmt: str, *vals) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, off, *vals)
    return bytes(b)


MALFORMED = {
    "bad INDEX type": lambda r: _patch(r, 8, "<Q", 0x1234),
    "wrong INDEX size": lambda r: _patch(r, 0, "<Q", 56),
    "unknown feature bit": lambda r: _patch(r, 16, "<Q", 0xB000000000000000 | (1 << 40)),
    "not normalized flags": lambda r: _patch(r, 16, "<Q", int(Flag.WITH_16BIT_UIDS | Flag.WITH_32BIT_UIDS)),
    "sha512 and blake3": lambda r: _patch(r, 16, "<Q", 0xB800000000000000),
    "min > avg": lambda r: _patch(r, 24, "<Q", 70000),
    "max too large": lambda r: _patch(r, 40, "<Q", 256 << 20),
    "min zero": lambda r: _patch(r, 24, "<Q", 0),
    "bad TABLE type": lambda r: _patch(r, 56, "<Q", 5),
    "bad TABLE size": lambda r: _patch(r, 48, "<Q", 1000),
    "offsets not increasing": lambda r: _patch(r, HEAD_SIZE + 40, "<Q", 1000),
    "offsets decreasing": lambda r: _patch(r, HEAD_SIZE + 40, "<Q", 500),
    "first offset zero": lambda r: _patch(r, HEAD_SIZE, "<Q", 0),
    "chunk larger than max": lambda r: _patch(r, HEAD_SIZE + 80, "<Q", 3000 + 262145),
    "tail marker": lambda r: _patch(r, len(r) - 8, "<Q", 0),
    "tail size": lambda r: _patch(r, len(r) - 16, "<Q", 999),
    "tail index offset": lambda r: _patch(r, len(r) - 24, "<Q", 64),
    "tail zero fill": lambda r: _patch(r, len(r) - 40, "<Q", 1),
    "truncated in header": lambda r: r[:30],
    "truncated in item": lambda r: r[:-50],
    "truncated tail": lambda r: r[:-1],
    "only header": lambda r: r[:HEAD_SIZE],
    "trailing byte": lambda r: r + b"\0",
    "trailing item": lambda r: r + r[HEAD_SIZE:HEAD_SIZE + 40],
    "empty file": lambda r: b"",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed(tmp_path, case):
    """INDEX-7/8: every malformed index is rejected with a one-line FormatError."""
    raw = _write(tmp_path / "good.caibx")
    bad = tmp_path / "bad.caibx"
    bad.write_bytes(MALFORMED[case](raw))
    with pytest.raises(FormatError) as ei:
        with IndexReader(bad) as r:
            r.validate()
    msg = str(ei.value)
    assert "\n" not in msg and "bad.caibx" in msg


def test_last_chunk_may_be_small_but_not_larger_than_max(tmp_path):
    """INDEX-8: chunks below min are fine (casync only checks max, for every chunk)."""
    _write(tmp_path / "a.caibx", [20000, 1, 262144, 5], chunk_sizes=SIZES)
    with IndexReader(tmp_path / "a.caibx") as r:
        r.validate()
        assert [c.size for c in r.chunks()] == [20000, 1, 262144, 5] and r.blob_size == 282150


def test_casync_indexes_read(casync_bin, tmp_path):
    """Indexes written by casync (blob and archive) pass our reader; casync reads ours."""
    (tmp_path / "blob").write_bytes(os.urandom(300_000))
    d = tmp_path / "dir"
    d.mkdir()
    (d / "f").write_bytes(os.urandom(100_000))
    run(casync_bin, "make", f"--store={tmp_path / 'S'}", tmp_path / "c.caibx", tmp_path / "blob")
    run(casync_bin, "make", f"--store={tmp_path / 'S'}", tmp_path / "c.caidx", d)
    with IndexReader(tmp_path / "c.caibx") as r:
        r.validate()
        assert r.feature_flags == 0xB000000000000000 and r.blob_size == 300_000
    with IndexReader(tmp_path / "c.caidx") as r:
        r.validate()
        assert r.feature_flags & Flag.SHA512_256 and r.feature_flags & Flag.WITH_XATTRS
    # a bad index is refused by casync too
    bad = tmp_path / "bad.caibx"
    raw = (tmp_path / "c.caibx").read_bytes()
    bad.write_bytes(raw + b"\0")
    p = run(casync_bin, "extract", f"--store={tmp_path / 'S'}", bad, tmp_path / "out", check=False)
    assert p.returncode != 0
