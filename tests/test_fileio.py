"""fileio: the one way pycatar installs a new file (a temporary name next to the final one, then a
rename or a hard link), checked on the file system itself."""
from __future__ import annotations

import os
import re
import stat

import pytest

from pycatar._fileio import write_files
from pycatar.errors import PycatarError
from pycatar.fileio import AtomicFile, Payload, create, install, install_new, temp_name, write_atomic


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
    assert install_new(str(tmp_path / "other"), b"mine", temp=lambda path: next(names)) is True
    assert (tmp_path / "other").read_bytes() == b"mine" and taken.read_bytes() == b"someone else's"
    with pytest.raises(FileNotFoundError):
        install_new(str(tmp_path / "missing" / "x"), b"x")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# --------------------------------------------------------------------------- the hole rule

def _rule_holes(data: bytes) -> int:
    """The hole rule, stated here on its own: the file's 4096-byte blocks counted from its start (the
    last one may be shorter) that hold only zeros become holes."""
    return sum(len(b) for b in (data[i:i + 4096] for i in range(0, len(data), 4096)) if b.count(0) == len(b))


_HOLE_CASES = {
    "mixed": [b"x" * 5000, bytes(8192), b"y" * 3, bytes(4093), b"z" * 4096, bytes(12288)],
    "zero tail after data": [b"a" * 4096, bytes(100)],
    "data tail after hole": [bytes(4096), b"\0" * 99 + b"q"],
    "only zeros, short": [bytes(100)],
    "only zeros, split": [bytes(1000), bytes(7000), bytes(300)],
    "one byte per block": [(bytes(4095) + b"\1") * 3],
    "tiny pieces": [bytes(1)] * 5000 + [b"k"] + [bytes(1)] * 4000,
    # one piece (most files): the batch writer puts its last, partial block with the data before it
    "one piece, data tail": [b"d" * 9000],
    "one piece, zero tail": [b"d" * 8192 + bytes(700)],
    "one piece, hole then data tail": [b"d" * 100 + bytes(8092) + b"t" * 5],
    "last piece completes a block, then a tail": [b"a" * 3000, b"b" * 1096 + b"c" * 4096 + b"e" * 10],
}


def _data_blocks_on_disk(path: str) -> int:
    """4096-byte blocks of the file that are data, by the file system's own account (SEEK_DATA)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size, n, off = os.fstat(fd).st_size, 0, 0
        while off < size:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = min(os.lseek(fd, off, os.SEEK_HOLE), size)
            n += -(-end // 4096) - off // 4096
            off = end
        return n
    finally:
        os.close(fd)


@pytest.mark.parametrize("case", sorted(_HOLE_CASES))
def test_hole_rule_same_in_payload_and_batch_writer(tmp_path, case):
    """Payload (blobs, and files an extraction writes itself), fed piece by piece, and the C batch
    writer leave the same holes: those of the rule above, counted and on disk, with the same bytes."""
    pieces = _HOLE_CASES[case]
    data = b"".join(pieces)
    expect = _rule_holes(data)
    data_blocks = sum(1 for i in range(0, len(data), 4096) if data[i:i + 4096].count(0) < len(data[i:i + 4096]))
    py = str(tmp_path / "py")
    fd = os.open(py, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        w = Payload(fd, True)
        for piece in pieces:
            w.write(memoryview(bytearray(piece)))  # any buffer, not only bytes
        w.finish()
    finally:
        os.close(fd)
    assert (w.size, w.holes) == (len(data), expect)
    many = str(tmp_path / "many")  # the pieces in lists of up to three (write_many: one GIL release each)
    fd = os.open(many, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        m = Payload(fd, True)
        for i in range(0, len(pieces), 3):
            m.write_many([memoryview(bytearray(p)) for p in pieces[i:i + 3]])
        m.finish()
    finally:
        os.close(fd)
    assert (m.size, m.holes) == (len(data), expect)
    d = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        done, holes, failed, _, _ = write_files([(d, b".#c", b"c", pieces, len(data), 0o600, -1, -1, -1, -1, 0, True)])
    finally:
        os.close(d)
    assert (done, failed, holes) == (1, -1, expect)
    for path in (py, many, str(tmp_path / "c")):
        with open(path, "rb") as f:
            assert f.read() == data
        assert _data_blocks_on_disk(path) == data_blocks


def test_payload_settle_skip_and_offset(tmp_path):
    """Payload writes from its offset on with pwrite (the descriptor's position stays); settle() puts
    every byte appended into the file, to be read back (the rest of a block it wrote part of is data);
    skip() counts bytes put there some other way; holes stay on the file's blocks from the offset."""
    path = str(tmp_path / "f")
    fd = create(path, 0o600)
    try:
        with pytest.raises(FileExistsError):
            create(path, 0o600)
        os.write(fd, b"head")  # 4 bytes before the payload
        w = Payload(fd, True, 4)
        w.write(bytearray(b"x" * 100))
        w.write(memoryview(bytes(50)))
        assert os.fstat(fd).st_size == 4  # a partial block is kept back
        w.settle()
        with open(path, "rb") as f:
            assert f.read() == b"head" + b"x" * 100 + bytes(50)
        w.write(bytes(4096 - 150))  # the rest of the settled block: data, not a hole
        w.write(bytes(8192))        # two whole blocks of zeros: holes
        w.settle()
        assert os.fstat(fd).st_size == 4 + 4096 + 8192 and w.holes == 8192
        w.skip(4096)                # (as if cloned there)
        w.write(b"y")
        with pytest.raises(ValueError):
            w.skip(1)  # not at the end of a block
        w.finish()
        assert (w.size, w.holes, w.offset) == (4096 * 4 + 1, 8192, 4 + 4096 * 4 + 1)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 4
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == b"head" + b"x" * 100 + bytes(4096 * 3 - 100) + bytes(4096) + b"y"
    ro = os.open(path, os.O_RDONLY)
    try:
        w = Payload(ro, False)
        with pytest.raises(OSError):
            w.write(b"z")  # EBADF: raised, never ignored
        with pytest.raises(OSError):
            w.write_many([b"z" * 5000, b"w"])
        with pytest.raises(TypeError):
            w.write_many((b"z",))  # a list, nothing else
        with pytest.raises(TypeError):
            w.write_many([b"z", "text"])
    finally:
        os.close(ro)


def test_make_dirs(tmp_path):
    """_fileio.make_dirs: mkdir of each path with the mode given, one answer per path: 0 made, else
    the errno (EEXIST there already, ENOENT a missing parent, ENOTDIR a file in the way)."""
    import errno

    from pycatar._fileio import make_dirs

    (tmp_path / "old").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    paths = [tmp_path / "a", str(tmp_path / "b"), tmp_path / "old", tmp_path / "missing" / "c",
             tmp_path / "file" / "d", tmp_path / "a"]
    assert make_dirs(paths, 0o750) == [0, 0, errno.EEXIST, errno.ENOENT, errno.ENOTDIR, errno.EEXIST]
    for name in "ab":
        assert stat.S_ISDIR(os.stat(tmp_path / name).st_mode)
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o750 & ~_umask()
    assert not (tmp_path / "missing").exists()
    assert make_dirs([], 0o700) == []
    with pytest.raises(ValueError):
        make_dirs([str(tmp_path / "nul\0name")], 0o700)


def test_make_dir(tmp_path):
    """_fileio.make_dir: mkdir (EEXIST: existed) and open, never through a symlink; the open's errno
    returned, mkdir's other errors raised."""
    import errno

    from pycatar._fileio import make_dir

    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        made, fd, err = make_dir(d, "new", 0o700, True)
        assert (made, err) == (0, 0) and fd >= 0
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "new"))
        assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o700 & ~_umask()
        os.close(fd)
        made, fd, err = make_dir(d, "new", 0o700, True)  # there already: opened
        assert (made, err) == (1, 0) and fd >= 0
        os.close(fd)
        made, fd, err = make_dir(d, "new", 0o700, False)  # open only
        assert (made, err) == (0, 0) and fd >= 0
        os.close(fd)
        (tmp_path / "file").write_bytes(b"x")
        assert make_dir(d, "file", 0o700, True) == (1, -1, errno.ENOTDIR)
        os.symlink("new", tmp_path / "link")
        made, fd, err = make_dir(d, "link", 0o700, True)  # a symlink to a directory is not opened
        assert (made, fd) == (1, -1) and err in (errno.ELOOP, errno.ENOTDIR)
        with pytest.raises(FileNotFoundError):
            make_dir(d, "missing/below", 0o700, True)
        with pytest.raises(ValueError):
            make_dir(d, "nul\0name", 0o700, True)
    finally:
        os.close(d)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
