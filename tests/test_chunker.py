"""The chunker (spec/chunker.md): C core vs a pure-Python reference, size parsing, casync interop."""

from __future__ import annotations

import os
import random
import struct
import threading

import pytest

import casync_chunker
from conftest_chunk_helpers import casync_bin, reference_cuts, run  # noqa: F401 (fixture)
from pycatar import _chunker
from pycatar.chunker import (
    BUZHASH_TABLE,
    CHUNK_SIZE_LIMIT_MAX,
    DEFAULT_CHUNK_SIZES,
    Chunker,
    buzhash,
    chunk_size_from_args,
    discriminator,
    discriminator_from_avg,
    parse_size,
    resolve_chunk_sizes,
)
from pycatar.errors import UsageError

SIZES = [
    (1, 1, 1),
    (64, 64, 64),
    (1000, 1000, 1000),
    (1, 2, 4),            # max below the window: cuts fall at 48 bytes
    (16, 32, 64),
    (32, 48, 64),
    (12, 48, 192),
    (48, 100, 400),
    (256, 1024, 4096),
    (100, 200, 50_000),
    (1024, 4096, 16_384),
    (4096, 16_384, 65_536),
]


def _data(seed: int, n: int) -> bytes:
    r = random.Random(seed)
    # random bytes, a zero run and a low-entropy run, so every kind of cut occurs
    return r.randbytes(n // 2) + bytes(n // 4) + bytes(r.choice(b"ab") for _ in range(n - n // 2 - n // 4))


def _feed_all(ch: Chunker, pieces) -> list[int]:
    cuts, base = [], 0
    for p in pieces:
        cuts += [base + c for c in ch.feed(p)]
        base += len(p)
    if ch.pending:
        cuts.append(base)
    return cuts


def test_table_matches_window_hash():
    """CHUNK-3: 256 distinct 32-bit values; buzhash() of a window is the XOR of rotated entries."""
    assert len(BUZHASH_TABLE) == 256 and len(set(BUZHASH_TABLE)) == 256
    assert tuple(BUZHASH_TABLE) == casync_chunker.BUZHASH  # every entry, as casync publishes it
    w = bytes(range(48))
    h = 0
    for i, b in enumerate(w):
        r = (47 - i) % 32
        v = BUZHASH_TABLE[b]
        h ^= ((v << r) | (v >> (32 - r))) & 0xFFFFFFFF if r else v
    assert buzhash(w) == h


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: ":".join(map(str, s)))
def test_c_matches_reference(sizes):
    """CHUNK-5..8: the C chunker cuts exactly where the byte-at-a-time reference does."""
    data = _data(sum(sizes), 120_000)
    ch = Chunker(*sizes)
    assert ch.split(data) == reference_cuts(data, *sizes)


@pytest.mark.parametrize("sizes", SIZES[3:], ids=lambda s: ":".join(map(str, s)))
def test_odd_pieces_same_cuts(sizes):
    """CHUNK-9: feeding the stream in arbitrary pieces (1 byte, 47, 49, random) gives the same cuts."""
    data = _data(7, 200_000)
    whole = Chunker(*sizes).split(data)
    r = random.Random(3)
    for plan in ("ones", "47", "49", "random"):
        if plan == "ones":
            pieces = [data[i:i + 1] for i in range(min(len(data), 30_000))]
            expect = Chunker(*sizes).split(data[:30_000])
        else:
            pieces, i = [], 0
            while i < len(data):
                n = {"47": 47, "49": 49}.get(plan) or r.randint(1, 70_000)
                pieces.append(memoryview(data)[i:i + n])
                i += n
            expect = whole
        assert _feed_all(Chunker(*sizes), pieces) == expect, plan


def test_empty_and_short_input():
    ch = Chunker(*DEFAULT_CHUNK_SIZES)
    assert ch.split(b"") == []
    assert ch.feed(b"") == [] and ch.pending == 0
    short = os.urandom(DEFAULT_CHUNK_SIZES[0] - 1)
    assert ch.split(short) == [len(short)]  # shorter than min: one chunk
    assert ch.split(b"x") == [1]


def test_no_cut_before_max():
    """CHUNK-7: without a hash match, chunks end exactly at max (zero data never matches here)."""
    mn, avg, mx = DEFAULT_CHUNK_SIZES
    data = bytes(3 * mx + 5)
    cuts = Chunker(mn, avg, mx).split(data)
    assert cuts == reference_cuts(data, mn, avg, mx)
    assert cuts == [mx, 2 * mx, 3 * mx, 3 * mx + 5]


def test_max_cuts_where_pieces_end_one_byte_around_max():
    """CHUNK-7/9: pieces ending one byte before, at and after the max-size cut (zero data, which
    never matches here) cut where the reference does."""
    mn, avg, mx = 64, 128, 256
    data = bytes(20 * mx) + _data(5, 20_000)
    expect = casync_chunker.casync_cuts(data, mn, avg, mx)
    for delta in (-1, 0, 1, 2):
        pieces, i = [], 0
        while i < len(data):
            pieces.append(data[i:i + mx + delta])
            i += mx + delta
        assert _feed_all(Chunker(mn, avg, mx), pieces) == expect, delta


def test_cut_where_the_hash_is_exactly_discriminator_minus_one():
    """CHUNK-4: h % d == d - 1 at h == d - 1 itself (the smallest such hash): a discriminator made
    from the hash of one window cuts exactly at that window's end, as the byte-at-a-time reference
    (casync_chunker's table and rotation) computes it."""
    mn, mx = 64, 100_000
    data = random.Random(11).randbytes(4000)
    at = 3000  # the chunk ends here: the window is data[at - 48:at]
    h = 0
    for i, b in enumerate(data[at - casync_chunker.WINDOW:at]):
        h ^= casync_chunker._rol32(casync_chunker.BUZHASH[b], casync_chunker.WINDOW - 1 - i)
    assert 0 < h < 0xFFFFFFFF
    d = h + 1
    expect = []  # the reference scan with this discriminator
    h2, start = None, 0
    for end in range(casync_chunker.WINDOW, len(data) + 1):
        w = data[end - casync_chunker.WINDOW:end]
        h2 = 0
        for i, b in enumerate(w):
            h2 ^= casync_chunker._rol32(casync_chunker.BUZHASH[b], casync_chunker.WINDOW - 1 - i)
        if end - start >= max(mn, casync_chunker.WINDOW) and (h2 % d == d - 1 or end - start >= mx):
            expect.append(end)
            start = end
    assert at in expect
    ch = _chunker.Chunker(mn, 1000, mx, d)
    assert ch.feed(data) == expect


def test_chunk_bounds_random():
    """CHUNK-6/7: every chunk but the last is within [max(min, 48), max]."""
    data = os.urandom(4 << 20)
    mn, avg, mx = DEFAULT_CHUNK_SIZES
    cuts = Chunker(mn, avg, mx).split(data)
    sizes = [b - a for a, b in zip([0] + cuts, cuts)]
    assert all(mn <= s <= mx for s in sizes[:-1])
    assert 0 < sizes[-1] <= mx
    assert sum(sizes) == len(data)


def test_buffer_types_and_gil_release():
    """feed() takes any contiguous buffer; two chunkers may run in two threads at once."""
    data = os.urandom(2 << 20)
    expect = Chunker().split(data)
    for buf in (bytearray(data), memoryview(data)):
        assert Chunker().split(buf) == expect
    results = [None, None]

    def work(i):
        results[i] = Chunker().split(data)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [expect, expect]
    with pytest.raises(BufferError):
        Chunker().feed(memoryview(data)[::2])


def test_discriminator():
    """CHUNK-4: the discriminator for casync's default and its clamping."""
    assert discriminator(*DEFAULT_CHUNK_SIZES) == 49535
    for sizes in ((1, 1, 1), (16, 64, 256), (1, 4096, 16384), (4096, 16384, 65536), (16384, 65536, 262144),
                  (1 << 20, 4 << 20, 16 << 20), (1, 9 << 20, 64 << 20), (1, 10 << 20, 10 << 20)):
        assert discriminator(*sizes) == casync_chunker.casync_discriminator(*sizes), sizes
    assert discriminator(1, 1, 1) == 1
    # above ~9.3 MB the formula goes negative: the discriminator becomes max (amd64 casync)
    assert discriminator_from_avg(10 << 20) == (1 << 64) - 1
    assert discriminator(1, 10 << 20, 10 << 20) == 10 << 20
    with pytest.raises(ValueError):
        _chunker.Chunker(0, 1, 1, 1)


@pytest.mark.parametrize(
    "text,expect",
    [
        ("auto", (16384, 65536, 262144)),
        ("64K", (16384, 65536, 262144)),
        ("48", (12, 48, 192)),
        ("1", (1, 1, 4)),
        ("100", (25, 100, 400)),
        ("128M", (32 << 20, 128 << 20, 128 << 20)),
        ("1.5K", (384, 1536, 6144)),
        ("1K512", (384, 1536, 6144)),
        ("1K 2", (256, 1026, 4104)),
        ("+1K", (256, 1024, 4096)),
        (" 4K", (1024, 4096, 16384)),
        ("1:1:1", (1, 1, 1)),
        ("16:32:64", (16, 32, 64)),
        ("1K:1K:2K", (1024, 1024, 2048)),
        ("1:9324549:9324549", (1, 9324549, 9324549)),
    ],
)
def test_chunk_size_from_args(text, expect):
    """CHUNK-2: --chunk-size= parsing and derivation as in casync."""
    assert chunk_size_from_args(text) == expect


@pytest.mark.parametrize(
    "text,message",
    [
        ("129M", "Average chunk size must be <= 134217728."),
        ("0", "Average chunk size must be >= 1."),
        ("-1K", "Can't parse average chunk size: -1K"),
        ("4k", "Can't parse average chunk size: 4k"),
        ("4K ", "Can't parse average chunk size: 4K "),
        ("", "Can't parse average chunk size: "),
        ("1:0:4", "Average chunk size must be larger than minimum chunk size."),
        ("4:2:8", "Average chunk size must be larger than minimum chunk size."),
        ("2:4:3", "Average chunk size must be smaller than maximum chunk size."),
        ("0:4:8", "Minimum chunk size must be >= 1."),
        ("1:2:129M", "Maximum chunk size must be <= 134217728."),
        ("a:b:c", "Can't parse minimum chunk size: a:b:c"),
        ("1:x:3", "Can't parse average chunk size: 1:x:3"),
        ("1:2:x", "Can't parse maximum chunk size: 1:2:x"),
        ("1:2", "--chunk-size= requires either a single average chunk size or a triplet of minimum, "
                "average and maximum chunk size."),
    ],
)
def test_chunk_size_errors(text, message):
    with pytest.raises(UsageError) as ei:
        chunk_size_from_args(text)
    assert str(ei.value) == message
    assert "\n" not in str(ei.value)


def test_parse_size_and_resolve():
    assert parse_size("1M512K") == 1536 * 1024
    assert parse_size("10.M") == 10 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size("1B2") == 3  # suffixes must descend; a bare number may follow "B"
    for bad in ("1 2 3", "2 1K", "1K1K"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert resolve_chunk_sizes(1024, 0, 4096) == (1024, 2048, 4096)  # geometric mean
    assert resolve_chunk_sizes(0, 0, 0) == DEFAULT_CHUNK_SIZES
    assert resolve_chunk_sizes(0, 2, 0) == (1, 2, 8)
    assert resolve_chunk_sizes(0, CHUNK_SIZE_LIMIT_MAX, 0)[2] == CHUNK_SIZE_LIMIT_MAX
    with pytest.raises(UsageError):
        resolve_chunk_sizes(10, 5, 20)


# --------------------------------------------------------------------------- against casync


def _casync_cuts(casync, tmp_path, data: bytes, spec: str) -> tuple[tuple[int, int, int], list[int]] | None:
    blob = tmp_path / "in.bin"
    blob.write_bytes(data)
    idx = tmp_path / f"c-{spec.replace(':', '_')}.caibx"
    p = run(casync, "make", f"--store={tmp_path / 'S'}", f"--chunk-size={spec}", idx, blob, check=False)
    if p.returncode != 0:
        return None
    raw = idx.read_bytes()
    sizes = struct.unpack_from("<3Q", raw, 24)
    n = (len(raw) - 104) // 40
    return sizes, [struct.unpack_from("<Q", raw, 64 + 40 * i)[0] for i in range(n)]


@pytest.mark.parametrize(
    "spec",
    ["16:32:64", "32:48:64", "48", "100", "1K:1K:2K", "1.5K", "1K 2", "64:64:64", "2K", "300:1000:3000",
     "1:9324549:9324549", "1:10M:10M"],
)
def test_cuts_equal_casync(casync_bin, tmp_path, spec):
    """CHUNK-1: for sizes casync accepts, our boundaries and effective sizes are casync's."""
    data = _data(11, 150_000) + os.urandom(50_000)
    res = _casync_cuts(casync_bin, tmp_path, data, spec)
    assert res is not None
    sizes, cuts = res
    assert chunk_size_from_args(spec) == sizes
    assert Chunker(*sizes).split(data) == cuts


def test_max_below_window_fails_like_casync(casync_bin, tmp_path):
    """CHUNK-6: with max < 48 (and min != max) the first cut is at 48 > max; casync's make then
    fails (its index writer refuses the chunk), and so does ours."""
    from pycatar.blob import make_blob_index

    data = os.urandom(5000)
    assert _casync_cuts(casync_bin, tmp_path, data, "1:2:4") is None
    assert Chunker(1, 2, 4).split(data)[:3] == [48, 96, 144]
    (tmp_path / "b").write_bytes(data)
    with pytest.raises(UsageError):
        make_blob_index(tmp_path / "b", tmp_path / "o.caibx", tmp_path / "S2", chunk_size=(1, 2, 4))
    assert not (tmp_path / "o.caibx").exists()


def test_random_parameters_match_reference():
    """CHUNK-1/5: random (min, avg, max) triples, including min below and max around the window."""
    r = random.Random(99)
    for _ in range(25):
        mn = r.choice([1, 5, 30, 47, 48, 49, 60, 200, 1000])
        avg = mn + r.randint(0, 3000)
        mx = avg + r.randint(0, 5000)
        if mx < 48 and not mn == avg == mx:
            mx = 48 + r.randint(0, 100)
        data = _data(r.randrange(1 << 30), 25_000)
        pieces, i = [], 0
        while i < len(data):
            n = r.randint(1, 3000)
            pieces.append(data[i:i + n])
            i += n
        expect = reference_cuts(data, mn, avg, mx)
        assert Chunker(mn, avg, mx).split(data) == expect, (mn, avg, mx)
        assert _feed_all(Chunker(mn, avg, mx), pieces) == expect, (mn, avg, mx)
