"""fileio: the one way pycatar installs a new file (a temporary name next to the final one, then a
rename or a hard link), checked on the file system itself."""
from __future__ import annotations

import os
import re

import pytest

from pycatar.errors import PycatarError
from pycatar.fileio import AtomicFile, install, install_new, temp_name, write_atomic


def test_temp_name_is_casyncs_form():
    assert re.fullmatch(r"\.#abc[0-9a-f]{16}", temp_name("abc"))
    assert temp_name(b"abc", b"0123456789abcdef") == b".#abc0123456789abcdef"
    assert temp_name("abc", "0123456789abcdef") == ".#abc0123456789abcdef"
    assert temp_name("abc") != temp_name("abc")
    long = "é" * 200  # 400 bytes: shortened to a valid name, still a str
    assert len(os.fsencode(temp_name(long))) <= 255 and temp_name(long).startswith(".#é")
    assert len(temp_name(b"x" * 300)) == 255


def test_atomic_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with AtomicFile(target, fsync=False) as f:
        f.write(b"new contents")
        assert target.read_bytes() == b"old"  # still the old file while writing
        hidden = [n for n in os.listdir(tmp_path) if n != "out"]
        assert len(hidden) == 1 and hidden[0].startswith(".#out")
    assert target.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_file_removed_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with AtomicFile(target) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    # explicit open/discard (the index writer's way)
    a = AtomicFile(target)
    a.open().write(b"x")
    assert a.tmp is not None and os.path.exists(a.tmp)
    a.discard()
    assert os.listdir(tmp_path) == [] and a.tmp is None


def test_atomic_file_commit_failure_is_one_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"")
    with pytest.raises(PycatarError, match="Failed to write"):
        with AtomicFile(tmp_path / "d") as f:  # renaming a file over a non-empty directory fails
            f.write(b"data")
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_write_atomic_and_install(tmp_path):
    write_atomic(tmp_path / "a", b"abc" * 100000, 0o640)
    assert (tmp_path / "a").read_bytes() == b"abc" * 100000
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o640 & ~_umask()
    (tmp_path / "t").write_bytes(b"T")
    install(str(tmp_path / "t"), str(tmp_path / "a"))
    assert (tmp_path / "a").read_bytes() == b"T" and not (tmp_path / "t").exists()
    (tmp_path / "t2").write_bytes(b"T2")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_bytes(b"")
    with pytest.raises(OSError):
        install(str(tmp_path / "t2"), str(tmp_path / "dir"))
    assert not (tmp_path / "t2").exists()  # a failed install leaves no temporary file


def test_install_new_never_replaces(tmp_path):
    p = str(tmp_path / "chunk")
    assert install_new(p, b"first", 0o444) is True
    assert install_new(p, b"second", 0o444) is False
    assert open(p, "rb").read() == b"first"
    assert os.stat(p).st_mode & 0o777 == 0o444
    assert os.listdir(tmp_path) == ["chunk"]
    # a taken temporary name: another one is tried
    taken = tmp_path / temp_name("other", "0000000000000000")
    taken.write_bytes(b"someone else's")
    names = iter([str(taken), str(tmp_path / "next.tmp")])
    assert install_new(str(tmp_path / "other"), b"mine", temp=lambda: next(names)) is True
    assert (tmp_path / "other").read_bytes() == b"mine" and taken.read_bytes() == b"someone else's"
    with pytest.raises(FileNotFoundError):
        install_new(str(tmp_path / "missing" / "x"), b"x")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
