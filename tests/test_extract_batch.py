"""The batch writer: plain regular files in directories the extraction created are written in batches
by the C writer (pycatar._fileio) in worker threads.  These tests check that it gives the source
tree exactly, as files written one at a time by the extractor do, that it keeps holes, and that a
failure inside a batch still ends in a one-line error with no temporary or partial file left behind."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from pycatar import extract as extract_mod
from pycatar import _fileio
from pycatar._fileio import read_file, write_files
from pycatar.archive import make_archive
from pycatar.extract import extract_archive


def _tree(root: str, n: int = 40) -> None:
    os.makedirs(os.path.join(root, "sub", "deeper"))
    for i in range(n):
        d = (root, os.path.join(root, "sub"), os.path.join(root, "sub", "deeper"))[i % 3]
        p = os.path.join(d, f"f{i:03d}")
        with open(p, "wb") as f:
            f.write(bytes([i]) * (i * 997))
        os.chmod(p, (0o644, 0o600, 0o755, 0o4755)[i % 4])
        os.utime(p, ns=(0, 1_600_000_000_123_456_789 + i))
    # zero blocks (holes) in a small file and a file ending in zeros
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.write(b"a" * 5000 + bytes(3 * 4096) + b"b" * 10 + bytes(8192))
    with open(os.path.join(root, "empty"), "wb"):
        pass
    os.symlink("f000", os.path.join(root, "link"))
    for d in ("sub/deeper", "sub", ""):
        os.utime(os.path.join(root, d), ns=(0, 1_500_000_000_000_000_000))


def _snapshot(root: str) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else 0, data)
    return out


@pytest.fixture
def archive(tmp_path):
    src = str(tmp_path / "src")
    _tree(src)
    catar = str(tmp_path / "a.catar")
    make_archive(catar, src)
    return src, catar


def test_batches_give_what_one_at_a_time_gives(archive, tmp_path, monkeypatch):
    src, catar = archive
    fast = str(tmp_path / "fast")
    calls = []
    real = extract_mod._fileio.write_files
    monkeypatch.setattr(extract_mod._fileio, "write_files", lambda jobs: calls.extend(jobs) or real(jobs))
    monkeypatch.setattr(extract_mod, "BATCH_JOBS", 7)  # many batches, directories deferred across them
    extract_archive(catar, fast)
    assert len([j for j in calls if j.tmp]) == 42  # 40 files + sparse + empty went through the batch writer
    # and the two directories below the destination were finished by it once their children were written
    assert sorted(j.mode for j in calls if not j.tmp) == [0o755, 0o755] and len(calls) == 44
    # one at a time: the destination is not empty, so nothing is batched
    slow = str(tmp_path / "slow")
    os.mkdir(slow)
    open(os.path.join(slow, "stale"), "w").close()
    calls.clear()
    extract_archive(catar, slow)
    assert calls == []
    assert _snapshot(fast) == _snapshot(slow) == _snapshot(src)
    assert not [n for n in os.listdir(fast) if n.startswith(".#")]


def test_finish_steps_in_pieces(tmp_path):
    """_fileio.finish runs the batch jobs' finishing steps on any node, a range at a time: here a
    symlink (no descriptor: nothing may follow it) and an open file, as the extractor does around
    the ACL/xattr steps (before the mtime) and the chattr steps (before the check)."""
    d = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "target").write_bytes(b"t")
        os.utime(tmp_path / "target", ns=(0, 5_000_000_000))
        os.symlink("target", tmp_path / ".#link")
        args = (-1, d, ".#link", "link", -1, -1, -1, 1_234_567_890_987_654_321, 1)
        assert _fileio.finish(*args, _fileio.STEP_INSPECT, _fileio.STEP_MODE) is None
        assert _fileio.finish(*args, _fileio.STEP_MTIME, _fileio.STEP_MTIME) is None
        assert os.lstat(tmp_path / ".#link").st_mtime_ns == 1_234_567_890_987_654_321
        assert not (tmp_path / "link").exists()  # the rename is a later step
        assert _fileio.finish(*args, _fileio.STEP_RENAME, _fileio.STEP_CLOSE) is None
        assert os.readlink(tmp_path / "link") == "target" and not os.path.lexists(tmp_path / ".#link")
        assert os.stat(tmp_path / "target").st_mtime_ns == 5_000_000_000  # never followed
        # a file: mode (and owner when asked) first, then mtime; a failed rename leaves the file in place
        fd = os.open(tmp_path / ".#f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.mkdir(tmp_path / "f")
        (tmp_path / "f" / "x").write_bytes(b"")  # a non-empty directory in the way
        st = os.fstat(fd)
        args = (fd, d, ".#f", "f", st.st_uid, st.st_gid, 0o4751, 2_000_000_000_000_000_001, 1)
        assert _fileio.finish(*args, _fileio.STEP_INSPECT, _fileio.STEP_MODE) is None
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o4751
        assert _fileio.finish(*args, _fileio.STEP_MTIME, _fileio.STEP_RENAME) == (_fileio.STEP_RENAME, 21)  # EISDIR
        assert _fileio.STEPS[_fileio.STEP_RENAME] == "move into place"
        assert os.fstat(fd).st_mtime_ns == 2_000_000_000_000_000_001
        assert (tmp_path / ".#f").exists()  # left for the caller, which replaces what is in the way
        # the check: an mtime the file system did not keep at the granularity is (STEP_VERIFY, errno 0)
        os.utime(fd, ns=(0, 2_000_000_000_000_000_000))
        assert _fileio.finish(*args, _fileio.STEP_VERIFY, _fileio.STEP_CLOSE) == (_fileio.STEP_VERIFY, 0)
        os.fstat(fd)  # still open after a failure
        os.utime(fd, ns=(0, 2_000_000_000_000_000_001))
        assert _fileio.finish(*args, _fileio.STEP_VERIFY, _fileio.STEP_CLOSE) is None
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the last step
        with pytest.raises(ValueError):
            _fileio.finish(-1, d, None, None, -1, -1, -1, 0, 0, _fileio.STEP_INSPECT, _fileio.STEP_CLOSE)
        with pytest.raises(ValueError):
            _fileio.finish(-1, d, ".#a\0b", "c", -1, -1, -1, 0, 0, _fileio.STEP_INSPECT, _fileio.STEP_CLOSE)
    finally:
        os.close(d)


def test_batch_writer_keeps_holes(archive, tmp_path):
    src, catar = archive
    dest = str(tmp_path / "out")
    stats = extract_archive(catar, dest)
    with open(os.path.join(dest, "sparse"), "rb") as f:
        assert f.read() == b"a" * 5000 + bytes(3 * 4096) + b"b" * 10 + bytes(8192)
    # blocks 2 and 5 (0-based: 4096-byte blocks at 8192 and 20480) and the 8192 zero tail are holes:
    # 4096 (block 2) + the part of the tail that is whole aligned blocks and the rest
    assert stats.hole_bytes > 0
    st = os.stat(os.path.join(dest, "sparse"))
    assert st.st_size == 5000 + 3 * 4096 + 10 + 8192
    nohole = str(tmp_path / "nohole")
    stats2 = extract_archive(catar, nohole, punch_holes=False)
    assert stats2.hole_bytes == 0
    with open(os.path.join(nohole, "sparse"), "rb") as f:
        assert f.read() == b"a" * 5000 + bytes(3 * 4096) + b"b" * 10 + bytes(8192)


def test_write_files_direct(tmp_path):
    d = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = [b"x" * 5000, bytes(8192), b"y"]
        job = (d, b".#tmp1", b"one", data, 13193, 0o600, -1, -1, 0o640, 1_234_567_890_123_456_789, 1, True)
        done, holes, failed, step, err = write_files([job])
        assert (done, failed) == (1, -1)
        assert holes == 4096  # the block at 4096 is partly data; the one at 8192 is all zeros
        st = os.stat(tmp_path / "one")
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 1_234_567_890_123_456_789
        assert (tmp_path / "one").read_bytes() == b"".join(data)
        # a temporary name that exists: the batch stops there, reporting step 0 (create) and EEXIST
        (tmp_path / ".#taken").write_bytes(b"keep")
        jobs = [(d, b".#taken", b"two", [b"z"], 1, 0o600, -1, -1, -1, -1, 0, False),
                (d, b".#tmp3", b"three", [b"z"], 1, 0o600, -1, -1, -1, -1, 0, False)]
        assert write_files(jobs) == (0, 0, 0, 0, 17)  # errno.EEXIST
        assert (tmp_path / ".#taken").read_bytes() == b"keep"
        assert not (tmp_path / "two").exists() and not (tmp_path / "three").exists()
        with pytest.raises(ValueError):
            write_files([(d, b"a\0b", b"c", [], 0, 0o600, -1, -1, -1, -1, 0, False)])
        with pytest.raises(ValueError):
            write_files([(d, b".#t", b"c", [b"ab"], 3, 0o600, -1, -1, -1, -1, 0, False)])
        with pytest.raises(TypeError):
            write_files([(d, b".#t", b"c")])
        # an empty temporary name finishes a node made already (a directory): owner, mode, mtime, close
        os.mkdir(tmp_path / "sub", 0o700)
        sub = os.open(str(tmp_path / "sub"), os.O_RDONLY | os.O_DIRECTORY)
        done, holes, failed, _, _ = write_files([(sub, b"", b"", [], 0, 0, -1, -1, 0o751, 1_000_000_000_000_000_007,
                                                  1, False)])
        assert (done, holes, failed) == (1, 0, -1)
        st = os.stat(tmp_path / "sub")
        assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime_ns == 1_000_000_000_000_000_007
        with pytest.raises(OSError):
            os.fstat(sub)  # closed by the writer
        assert sorted(os.listdir(tmp_path)) == [".#taken", "one", "sub"]
    finally:
        os.close(d)


def test_temp_name_clash_is_retried(tmp_path, monkeypatch):
    """A file of the archive may carry the very name the batch writer picks as a temporary name."""
    src = str(tmp_path / "src")
    os.mkdir(src)
    for name in (".#b0000000000000001", "b"):  # with a zero prefix, "b" gets counter 1
        with open(os.path.join(src, name), "w") as f:
            f.write(name)
    catar = str(tmp_path / "a.catar")
    make_archive(catar, src)
    monkeypatch.setattr(extract_mod, "random_tag", lambda nbytes: "00" * nbytes)
    dest = str(tmp_path / "out")
    extract_archive(catar, dest)
    assert sorted(os.listdir(dest)) == [".#b0000000000000001", "b"]
    assert open(os.path.join(dest, "b")).read() == "b"


def test_failure_inside_a_batch(archive, tmp_path):
    """A write that fails in the worker (here: RLIMIT_FSIZE) is a one-line error; no temporary file and
    no partial file is left under a final name."""
    src, catar = archive
    dest = str(tmp_path / "out")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from pycatar.cli import main\n"
        f"sys.argv = ['pycatar', 'extract', {catar!r}, {dest!r}]\n"
        "sys.exit(main())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0] and lines[0].startswith("Failed to write"), r.stderr
    left = []
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in filenames:
            p = os.path.join(dirpath, name)
            left.append(name)
            with open(p, "rb") as f, open(os.path.join(src, os.path.relpath(p, dest)), "rb") as g:
                assert f.read() == g.read()  # whatever is there is complete
    assert left and not [n for n in left if n.startswith(".#")]


def test_read_file(tmp_path):
    """The store's whole-file read: bytes, None for missing files and symlinks, (step, errno) on errors."""
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert read_file(str(p), 1 << 20) == b"abc" * 1000
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(str(tmp_path / "empty"), 10) == b""
    assert read_file(str(tmp_path / "missing"), 10) is None
    assert read_file(str(tmp_path / "f" / "below"), 10) is None  # ENOTDIR
    os.symlink("f", tmp_path / "link")
    assert read_file(str(tmp_path / "link"), 1 << 20) is None  # a symlink marks a missing chunk
    assert read_file(str(p), 2999) == (2, 0)  # larger than the limit
    assert read_file(str(tmp_path), 1 << 20) == (1, 21)  # a directory: read fails with EISDIR
    os.chmod(p, 0)
    if os.geteuid() != 0:
        assert read_file(str(p), 1 << 20) == (0, 13)  # EACCES
    with pytest.raises(ValueError):
        read_file("a\0b", 10)


def test_payload_waiting_for_the_writers_is_bounded(tmp_path):
    """The batch writer holds at most about (WRITERS + 1) * (BATCH_BYTES + FAST_FILE_MAX) payload
    bytes (views keep whole chunks alive), now 3 * (2 + 2) MiB where it was 3 * (8 + 32): an
    extraction of 24 files of 5 MiB took 26 MiB more memory than one of a tiny tree, now 7; larger
    files are written by the decoding thread as it reads them."""
    sys.path.insert(0, os.path.dirname(__file__))
    from measured import run_measured

    big, tiny = tmp_path / "big", tmp_path / "tiny"
    big.mkdir()
    tiny.mkdir()
    for i in range(24):
        (big / f"f{i:02d}").write_bytes(os.urandom(5 << 20))
    (tiny / "f").write_bytes(b"x")
    peaks = {}
    for src in (big, tiny):
        idx, store = tmp_path / f"{src.name}.caidx", tmp_path / f"{src.name}.castr"
        subprocess.run([sys.executable, "-m", "pycatar", "make", f"--store={store}", idx, src], check=True,
                       capture_output=True)
        rc, _, err, peaks[src.name] = run_measured(tmp_path, "extract", "--seed-output=no", f"--store={store}",
                                                   idx, tmp_path / f"{src.name}.out")
        assert rc == 0, err
        assert sorted(os.listdir(tmp_path / f"{src.name}.out")) == sorted(os.listdir(src))
    assert all((tmp_path / "big.out" / n).read_bytes() == (big / n).read_bytes() for n in os.listdir(big))
    extra = (peaks["big"] - peaks["tiny"]) / 1024  # MiB
    assert extra < 20, extra
