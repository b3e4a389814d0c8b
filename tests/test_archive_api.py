"""The tarfile-like library API."""

from __future__ import annotations

import os

import pytest

from pycatar import archive, flags


@pytest.fixture
def small_tree(tmp_path):
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"hello\n" * 1000)
    (root / "a").write_bytes(b"x")
    os.symlink("a", root / "l")
    return root


def test_make_open_iterate_extract(small_tree, tmp_path, run_casync):
    res = archive.make_archive(str(tmp_path / "t.catar"), str(small_tree))
    assert res.digest_hex == run_casync("digest", tmp_path / "t.catar").stdout.decode().strip()
    with archive.open(str(tmp_path / "t.catar")) as ar:
        assert ar.getnames() == ["", "a", "d", "d/f.txt", "l"]
        assert ar.getmember("d/f.txt").size == 6000
        assert ar.extractfile("d/f.txt") == b"hello\n" * 1000
        assert ar.getmember("l").target == "a"
        with pytest.raises(KeyError):
            ar.getmember("nope")
        ar.extractall(str(tmp_path / "out"))
    assert (tmp_path / "out" / "d" / "f.txt").read_bytes() == b"hello\n" * 1000


def test_open_caidx_with_store(small_tree, tmp_path):
    archive.make_archive_index(str(tmp_path / "t.caidx"), str(small_tree), store=str(tmp_path / "s"),
                               feature_flags=flags.from_options(["unix"]))
    with archive.open(str(tmp_path / "t.caidx"), store=str(tmp_path / "s")) as ar:
        assert ar.feature_flags & flags.F.WITH_16BIT_UIDS
        assert ar.extractfile("a") == b"x"


def test_extractall_leaves_unrelated_files_alone(small_tree, tmp_path):
    archive.make_archive(str(tmp_path / "t.catar"), str(small_tree))
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    (out / "d" / "also-mine").write_text("keep me too")
    with archive.open(str(tmp_path / "t.catar")) as ar:
        ar.extractall(str(out))
    assert (out / "mine.txt").read_text() == "keep me" and (out / "d" / "also-mine").exists()
    assert (out / "d" / "f.txt").read_bytes() == b"hello\n" * 1000
    with archive.open(str(tmp_path / "t.catar")) as ar:
        ar.extractall(str(out), delete=True)  # asked for: as the command does
    assert not (out / "mine.txt").exists()
