"""Chunked archives of a tree (.caidx) interoperate with casync (issue 3)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pycatar import archive, flags
from pycatar.blob import IndexStream
from pycatar.index import IndexReader
from trees import make_full_tree, remove_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("caidx") / "tree")
    make_full_tree(root, large_size=6 << 20, seed=7)
    yield root
    remove_tree(root)


def pycatar(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, **kw)


def chunk_files(store):
    out = set()
    for d, _, files in os.walk(store):
        out |= {f for f in files if f.endswith(".cacnk")}
    return out


def mtree(run_casync, path):
    return run_casync("mtree", path).stdout


@pytest.mark.parametrize("args", [[], ["--chunk-size=16K"], ["--chunk-size=32K:128K:512K"], ["--digest=sha256"]],
                         ids=lambda a: " ".join(a) or "default")
def test_caidx_bytes_and_chunks_equal_casync(args, tree, run_casync, tmp_path):
    run_casync(*args, "make", "--store", tmp_path / "ref.castr", tmp_path / "ref.caidx", tree)
    p = pycatar(*args, "make", tmp_path / "ours.caidx", tree, "--store", tmp_path / "ours.castr")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "ours.caidx").read_bytes() == (tmp_path / "ref.caidx").read_bytes()
    assert chunk_files(tmp_path / "ours.castr") == chunk_files(tmp_path / "ref.castr")
    assert len(chunk_files(tmp_path / "ours.castr")) > 10


def test_each_tool_extracts_the_others_caidx(tree, run_casync, tmp_path):
    run_casync("make", "--store", tmp_path / "ref.castr", tmp_path / "ref.caidx", tree)
    assert pycatar("make", "--store", tmp_path / "ours.castr", tmp_path / "ours.caidx", tree).returncode == 0
    run_casync("extract", "--store", tmp_path / "ours.castr", tmp_path / "ours.caidx", tmp_path / "by-casync")
    p = pycatar("extract", "--store", tmp_path / "ref.castr", tmp_path / "ref.caidx", tmp_path / "by-pycatar")
    assert p.returncode == 0, p.stderr
    want = mtree(run_casync, tree)
    assert mtree(run_casync, tmp_path / "by-casync") == want
    assert mtree(run_casync, tmp_path / "by-pycatar") == want


def test_subpath_extraction_reads_only_needed_chunks(tree, run_casync, tmp_path):
    """Seek through the index: extracting one small directory fetches a few chunks, not all."""
    from pycatar.extract import extract_archive

    store = tmp_path / "s.castr"
    archive.make_archive_index(str(tmp_path / "x.caidx"), tree, store=str(store),
                               feature_flags=int(flags.DEFAULT))
    with IndexReader(str(tmp_path / "x.caidx")) as reader:
        total = len(reader)
        stream = IndexStream(reader, [str(store)])
        extract_archive(stream, str(tmp_path / "out"), "excl")
        fetched = stream.chunks_fetched
        stream.close()
    assert total > 20
    assert 0 < fetched <= 10 and fetched * 10 < total, (fetched, total)
    run_casync("extract", "--store", store, tmp_path / "x.caidx", tmp_path / "ref", "excl")
    assert mtree(run_casync, tmp_path / "out" / "excl") == mtree(run_casync, tmp_path / "ref" / "excl")


def test_blake3_caidx_round_trips(tree, run_casync, tmp_path):
    p = pycatar("make", "--digest=blake3", "--store", tmp_path / "b3.castr", tmp_path / "b3.caidx", tree)
    assert p.returncode == 0, p.stderr
    with IndexReader(str(tmp_path / "b3.caidx")) as r:
        assert r.digest == "blake3" and r.feature_flags & flags.F.DIGEST_BLAKE3
    p = pycatar("extract", "--store", tmp_path / "b3.castr", tmp_path / "b3.caidx", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    assert mtree(run_casync, tmp_path / "out") == mtree(run_casync, tree)
    # casync refuses an index whose flags it does not know
    assert run_casync("extract", "--store", tmp_path / "b3.castr", tmp_path / "b3.caidx", tmp_path / "x",
                      check=False).returncode != 0


def test_gc_keeps_referenced_chunks(tree, run_casync, tmp_path):
    store = tmp_path / "s.castr"
    assert pycatar("make", "--store", store, tmp_path / "a.caidx", tree).returncode == 0
    keep = chunk_files(store)
    with open(tmp_path / "blob", "wb") as f:
        f.write(os.urandom(300_000))
    assert pycatar("make", "--store", store, tmp_path / "b.caibx", tmp_path / "blob").returncode == 0
    extra = chunk_files(store) - keep
    assert extra
    p = pycatar("gc", "--grace=0", "--store", store, tmp_path / "a.caidx")
    assert p.returncode == 0, p.stderr
    assert chunk_files(store) == keep
    p = pycatar("extract", "--store", store, tmp_path / "a.caidx", tmp_path / "out")
    assert p.returncode == 0, p.stderr
