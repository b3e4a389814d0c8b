"""Helpers shared by the chunker/index/store/blob tests (imported explicitly, not a conftest).

* ``casync_bin``: the casync binary (see conftest.py's ``casync`` fixture).
* ``reference_cuts``: casync's cut rule, byte at a time, from casync's published constants
  (tests/casync_chunker.py, independent of pycatar), used to cross-check the C chunker.
* ``make_blob``: deterministic test data (random runs and zero runs).
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from casync_chunker import casync_cuts

@pytest.fixture(scope="session")
def casync_bin(casync) -> str:
    """The casync binary (conftest's ``casync`` fixture: installs it, fails in CI when missing)."""
    return casync


def run(casync: str, *args, cwd=None, check=True, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run([casync, *map(str, args)], cwd=cwd, capture_output=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"casync {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


def reference_cuts(data: bytes, mn: int, avg: int, mx: int) -> list[int]:
    """Chunk end offsets of ``data`` as casync cuts them, one byte at a time (CHUNK-5..8), from
    casync's published table and rule (tests/casync_chunker.py), not from pycatar's."""
    return casync_cuts(data, mn, avg, mx)


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
