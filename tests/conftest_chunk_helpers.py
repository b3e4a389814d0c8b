"""Helpers shared by the chunker/index/store/blob tests (imported explicitly, not a conftest).

* ``casync_bin``: the casync binary (see conftest.py's ``casync`` fixture).
* ``reference_cuts``: a slow, byte-at-a-time Python transcription of spec/chunker.md, used to
  cross-check the C chunker.
* ``make_blob``: deterministic test data (random runs and zero runs).
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from pycatar.chunker import BUZHASH_TABLE, WINDOW_SIZE, discriminator

@pytest.fixture(scope="session")
def casync_bin(casync) -> str:
    """The casync binary (conftest's ``casync`` fixture: installs it, fails in CI when missing)."""
    return casync


def run(casync: str, *args, cwd=None, check=True, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run([casync, *map(str, args)], cwd=cwd, capture_output=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"casync {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


def _rol(x: int, r: int) -> int:
    r %= 32
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF if r else x


def reference_cuts(data: bytes, mn: int, avg: int, mx: int) -> list[int]:
    """Chunk end offsets of ``data`` per spec/chunker.md, one byte at a time (CHUNK-5..8)."""
    d = discriminator(mn, avg, mx)
    cuts: list[int] = []
    size = 0
    if mn == avg == mx:
        for i in range(len(data)):
            size += 1
            if size == avg:
                cuts.append(i + 1)
                size = 0
    else:
        window: list[int] = []
        h = 0
        for i, b in enumerate(data):
            size += 1
            window.append(b)
            if len(window) < WINDOW_SIZE:
                continue
            if len(window) == WINDOW_SIZE and size == WINDOW_SIZE:
                h = 0
                for k, wb in enumerate(window):
                    h ^= _rol(BUZHASH_TABLE[wb], WINDOW_SIZE - 1 - k)
            else:
                out = window.pop(0)
                h = _rol(h, 1) ^ _rol(BUZHASH_TABLE[out], WINDOW_SIZE) ^ BUZHASH_TABLE[b]
            if size >= mx or (size >= mn and h % d == d - 1):
                cuts.append(i + 1)
                size = 0
                window = []
    if size:
        cuts.append(len(data))
    return cuts


def make_blob(seed: int, size: int, *, zero_run: int = 1 << 20, zero_every: int = 4) -> bytes:
    """``size`` bytes: random stretches with runs of zeros (and one repeated stretch, to dedup)."""
    r = random.Random(seed)
    out = bytearray()
    i = 0
    repeat = None
    while len(out) < size:
        if i % zero_every == zero_every - 1:
            out += bytes(zero_run)
        elif i % 7 == 3 and repeat is not None:
            out += repeat
        else:
            piece = r.randbytes(r.randint(100_000, 3_000_000))
            if repeat is None:
                repeat = piece[:1_000_000]
            out += piece
        i += 1
    return bytes(out[:size])


def chunk_files(store) -> dict[str, str]:
    """{relative path: absolute path} of every file in a store directory."""
    res = {}
    for root, _dirs, files in os.walk(store):
        for f in files:
            p = os.path.join(root, f)
            res[os.path.relpath(p, store)] = p
    return res
