"""pycatar mount (issue 16): archives, archive indexes and blob indexes really mounted with FUSE.

The references are independent of pycatar: casync makes the archives and indexes, casync's mtree,
diff -r, cmp and the kernel's view of the source tree (xattrs, ACLs, capabilities) are the oracles.
Every mount is unmounted in a finally; every wait has a timeout.  In CI (CI=true) missing FUSE fails.

Not here yet: mounting through an HTTP store (``pycatar serve``); the stores reach the mount through
pycatar.cli.common.chunk_stores unchanged, so it needs only a test once the HTTP client has landed."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from conftest import IN_CI
from pycatar.decoder import CatarReader
from pycatar.index import IndexReader
from pycatar.store import LocalStore, chunk_relpath
from trees import make_full_tree, remove_tree

EXCLUDED = {"excl/a.o", "excl/build", "nodump-file"}  # .caexclude and chattr +d: not in the archive


def _fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as e:
        return f"pyfuse3 is not installed ({e}; pip install '.[mount]')"
    return None


@pytest.fixture(scope="session")
def fuse():
    problem = _fuse_problem()
    if problem and IN_CI:
        pytest.fail(f"FUSE is required in CI: {problem}")
    if problem:
        pytest.skip(f"FUSE not usable (not CI, so skipping): {problem}")


def pycatar(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, timeout=120, **kw)


def _wait_mounted(path, proc=None, timeout=30.0):
    t0 = time.monotonic()
    while not os.path.ismount(path):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pycatar mount exited with {proc.returncode}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{path} not mounted after {timeout} s")
        time.sleep(0.05)


def _unmount(path):
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=30)
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, timeout=30)


@contextmanager
def mounted(tmp_path, *args, subpath=None, name="mnt"):
    """``pycatar mount --foreground ARGS... MOUNTPOINT [SUBPATH]``; yields (mountpoint, stderr file path)."""
    mnt = tmp_path / name
    mnt.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    extra = [subpath] if subpath else []
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pycatar", "mount", "--foreground", *map(str, args),
                                 str(mnt), *extra], stderr=err, stdout=subprocess.DEVNULL)
    try:
        _wait_mounted(mnt, proc)
        yield mnt, log
    finally:
        _unmount(mnt)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError("pycatar mount did not exit after the unmount")
    assert proc.returncode == 0, log.read_text()
    assert not os.path.ismount(mnt)


def _xattrs(root) -> dict:
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            names = sorted(os.listxattr(p, follow_symlinks=False))
            out[os.path.relpath(p, root)] = {k: os.getxattr(p, k, follow_symlinks=False) for k in names}
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory, run_casync):
    """A tree with every entry type; casync's .catar, and its .caidx in a local store (small chunks: a
    record read past its end would often reach into a payload-only chunk)."""
    base = tmp_path_factory.mktemp("mount")
    tree = str(base / "tree")
    make_full_tree(tree, large_size=2 << 20, seed=16)
    run_casync("make", base / "tree.catar", tree)
    run_casync("make", "--chunk-size=2048:8192:32768", f"--store={base / 'S'}", base / "tree.caidx", tree)
    yield {"base": base, "tree": tree, "catar": base / "tree.catar", "caidx": base / "tree.caidx", "S": base / "S"}
    remove_tree(str(base))


@pytest.mark.parametrize("kind", ["catar", "caidx"])
def test_mounted_tree_equals_source(fuse, full, run_casync, tmp_path, kind):
    """casync's mtree of the mounted tree equals that of the source; diff -r agrees; xattrs, ACLs and
    file capabilities read through the mount equal the source's; many readers at once read right."""
    args = [full["catar"]] if kind == "catar" else [f"--store={full['S']}", full["caidx"]]
    with mounted(tmp_path, *args) as (mnt, _log):
        assert run_casync("mtree", mnt).stdout == run_casync("mtree", full["tree"]).stdout
        diff = subprocess.run(["diff", "-r", "--no-dereference", full["tree"], mnt], capture_output=True,
                              timeout=120, text=True)
        for line in diff.stdout.splitlines():
            if line.startswith("Only in "):
                where, name = line[len("Only in "):].split(": ", 1)
                assert where.startswith(full["tree"]), line
                assert os.path.relpath(os.path.join(where, name), full["tree"]) in EXCLUDED, line
            else:  # diff does not compare special files: it names them, of the same type on both sides
                a, b = line.split(" while file ")
                assert a.split(" is a ")[1] == b.split(" is a ")[1], line
        want = {k: v for k, v in _xattrs(full["tree"]).items()
                if not any(k == x or k.startswith(x + "/") for x in EXCLUDED)}
        got = _xattrs(mnt)
        assert got == want
        assert "system.posix_acl_access" in got["dir/sub/deeper/random.bin"]
        assert "system.posix_acl_default" in got["dir/sub"] and "security.capability" in got["setuid"]
        st = os.lstat(mnt / "file.txt")
        assert st.st_mtime_ns == os.lstat(os.path.join(full["tree"], "file.txt")).st_mtime_ns
        assert st.st_nlink == 1 and st.st_ino == os.stat(mnt / "file.txt").st_ino  # stable inode numbers
        assert os.lstat(mnt / "dir" / "chardev").st_rdev == os.makedev(1, 3)

        paths = [p for p in ("dir/sub/deeper/random.bin", "file.txt", "sparse.img", "dir/zeros.bin")] * 4
        def same(p):
            with open(mnt / p, "rb") as a, open(os.path.join(full["tree"], p), "rb") as b:
                return a.read() == b.read()
        with ThreadPoolExecutor(8) as ex:
            assert all(ex.map(same, paths))


def test_mount_subpath(fuse, full, tmp_path, run_casync):
    with mounted(tmp_path, f"--store={full['S']}", full["caidx"], subpath="dir/sub") as (mnt, _):
        assert run_casync("mtree", mnt).stdout == run_casync("mtree", os.path.join(full["tree"], "dir", "sub")).stdout


def test_mount_uid_shift(fuse, full, tmp_path):
    """--uid-shift/--uid-range map the archived ids as extraction does (ids without names here)."""
    with mounted(tmp_path, "--uid-shift=100000", "--uid-range=65536", full["catar"]) as (mnt, _):
        st = os.lstat(mnt / "empty")
        assert (st.st_uid, st.st_gid) == (100000 + 12345, 100000 + 54321)
        assert os.lstat(mnt / "file.txt").st_uid == 100000  # root's name is not stored: its id is shifted
        assert os.lstat(mnt / "link").st_uid == 1  # a stored name ("daemon") known here: its local id


def test_mount_blob_index(fuse, tmp_path, run_casync):
    """A .caibx shows the blob as one read-only file that cmp's equal, also read at random offsets."""
    blob = tmp_path / "disk.img"
    data = os.urandom(3 << 20) + bytes(1 << 20) + os.urandom(12345)
    blob.write_bytes(data)
    run_casync("make", f"--store={tmp_path / 'S'}", tmp_path / "disk.caibx", blob)
    with mounted(tmp_path, f"--store={tmp_path / 'S'}", tmp_path / "disk.caibx") as (mnt, _):
        assert os.listdir(mnt) == ["disk"]
        f = mnt / "disk"
        assert os.stat(f).st_size == len(data)
        assert subprocess.run(["cmp", blob, f], timeout=60).returncode == 0
        fd = os.open(f, os.O_RDONLY)
        try:
            for off in (0, 4095, 1 << 20, (3 << 20) - 7, len(data) - 10, len(data) + 100):
                assert os.pread(fd, 5000, off) == data[off:off + 5000]
        finally:
            os.close(fd)
        with pytest.raises(OSError) as e:
            open(f, "r+b")
        assert e.value.errno in (errno.EROFS, errno.EACCES)


def _payload_chunks(caidx, catar, path) -> tuple[set[bytes], set[bytes], int]:
    """(chunk ids lying wholly inside the payload of ``path``, ids of chunks touching it, chunk count)."""
    with open(catar, "rb") as f:
        e = CatarReader(f).lookup(path)
    lo, hi = e.payload_offset, e.payload_offset + e.size
    with IndexReader(str(caidx)) as r:
        refs = list(r.chunks())
    inside = {c.id for c in refs if lo <= c.start and c.end <= hi}
    touching = {c.id for c in refs if c.start < hi and c.end > lo}
    return inside, touching, len(refs)


def test_missing_chunk_gives_eio_and_the_rest_stays_readable(fuse, full, tmp_path):
    """A chunk missing from the store: EIO for reading that file, one log line naming the chunk,
    other files readable; once the chunk is back, the next read works."""
    store = tmp_path / "S"
    shutil.copytree(full["S"], store)
    big = "dir/sub/deeper/random.bin"
    inside, _, _ = _payload_chunks(full["caidx"], full["catar"], big)
    victim = sorted(inside)[0]
    victim_path = store / chunk_relpath(victim)
    saved = victim_path.read_bytes()
    victim_path.unlink()
    with mounted(tmp_path, f"--store={store}", full["caidx"]) as (mnt, log):
        with pytest.raises(OSError) as e:
            (mnt / big).read_bytes()
        assert e.value.errno == errno.EIO
        assert (mnt / "file.txt").read_bytes() == open(os.path.join(full["tree"], "file.txt"), "rb").read()
        assert sorted(os.listdir(mnt / "dir"))  # still up
        lines = [ln for ln in log.read_text().splitlines() if victim.hex() in ln]
        assert len(lines) == 1 and lines[0].startswith("pycatar mount: chunk ")  # the kernel's retries: quiet
        victim_path.write_bytes(saved)
        assert (mnt / big).read_bytes() == open(os.path.join(full["tree"], big), "rb").read()


def test_listing_fetches_no_payload_chunks(fuse, full, tmp_path):
    """With a store lacking every chunk that lies wholly inside a file's payload, the whole tree can
    be walked, stat'ed, its links read and xattrs listed: lookups and listings read no payload."""
    store = tmp_path / "S"
    shutil.copytree(full["S"], store)
    removed = 0
    with open(full["catar"], "rb") as f:
        files = [e.path for e in CatarReader(f) if e.isreg() and e.size]
    payload = set()
    for p in files:
        payload |= _payload_chunks(full["caidx"], full["catar"], p)[0]
    for cid in payload:
        removed += LocalStore(str(store)).remove(cid)
    assert removed >= 20
    with mounted(tmp_path, f"--store={store}", full["caidx"]) as (mnt, log):
        seen = 0
        for d, dirs, names in os.walk(mnt):
            for n in dirs + names:
                p = os.path.join(d, n)
                os.lstat(p)
                os.listxattr(p, follow_symlinks=False)
                if os.path.islink(p):
                    os.readlink(p)
                seen += 1
        assert seen > 25
        assert "not found" not in log.read_text()
        with pytest.raises(OSError):
            (mnt / "dir/sub/deeper/random.bin").read_bytes()  # the oracle: payload chunks really are gone


def test_seed_serves_chunks_the_store_lacks(fuse, full, tmp_path, run_casync):
    """--seed=DIR: a store without any payload chunk, the source tree as seed: every file reads right."""
    store = tmp_path / "S"
    shutil.copytree(full["S"], store)
    with open(full["catar"], "rb") as f:
        files = [e.path for e in CatarReader(f) if e.isreg() and e.size]
    for p in files:
        for cid in _payload_chunks(full["caidx"], full["catar"], p)[0]:
            LocalStore(str(store)).remove(cid)
    with mounted(tmp_path, f"--store={store}", f"--seed={full['tree']}", full["caidx"]) as (mnt, _):
        assert run_casync("mtree", mnt).stdout == run_casync("mtree", full["tree"]).stdout


def test_one_small_file_fetches_few_chunks(full):
    """Library level: looking up and reading one small file of a .caidx fetches a handful of chunks."""
    from pycatar.mount import Image

    image = Image(str(full["caidx"]), "archive-index", [str(full["S"])])
    try:
        node = None
        parent = 1
        for comp in (b"dir", b"with space"):
            node = image.lookup(parent, comp)
            parent = image.remember(node)
        data = image.read(node[0], 0, 1 << 20, True)
        assert data == b"odd 0\n"
        with IndexReader(str(full["caidx"])) as r:
            total = r.count
        assert image.stream.chunks_fetched <= 5 < total // 4, (image.stream.chunks_fetched, total)
    finally:
        image.close()


@pytest.mark.parametrize("which", ["full tree", "many files, small chunks"])
def test_walking_the_tree_reads_no_payload_chunk(full, tmp_path, run_casync, which):
    """Library level, counted: listing every directory and looking up every entry fetches only
    chunks that hold some metadata (none lying wholly inside a payload).  The second tree has an
    entry before every few chunks: a read past what a record needs would hit payload-only chunks."""
    from pycatar.mount import Image

    catar, caidx, store = full["catar"], full["caidx"], full["S"]
    if which != "full tree":
        tree = tmp_path / "t"
        for i in range(60):
            (tree / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
            (tree / f"d{i % 3}" / f"f{i:02}").write_bytes(os.urandom(12_000 + 97 * i))
        catar, caidx, store = tmp_path / "t.catar", tmp_path / "t.caidx", tmp_path / "S"
        run_casync("make", catar, tree)
        run_casync("make", "--chunk-size=1024:4096:16384", f"--store={store}", caidx, tree)
    with open(catar, "rb") as f:
        files = [e.path for e in CatarReader(f) if e.isreg() and e.size]
    payload = set()
    for p in files:
        payload |= _payload_chunks(caidx, catar, p)[0]
    with IndexReader(str(caidx)) as r:
        payload_idx = {c.index for c in r.chunks() if c.id in payload}
    image = Image(str(caidx), "archive-index", [str(store)])
    try:
        todo, n = [1], 0
        while todo:
            ino = todo.pop()
            for node in image.children(ino):
                n += 1
                assert image.lookup(ino, os.fsencode(node[0].name))[0] == node[0]
                if node[0].isdir():
                    todo.append(image.remember(node))
        assert n > 25
        fetched = set(image.stream.fetched)
        assert fetched and not fetched & payload_idx, sorted(fetched & payload_idx)
    finally:
        image.close()


def test_index_stream_fetches_a_chunk_once_for_many_threads(full):
    """IndexStream.read_at from many threads at once: each chunk is fetched once (the others wait for
    it), the bytes are right, the cache stays within its byte bound."""
    import threading

    from pycatar.blob import ChunkSource, IndexStream
    from pycatar.store import StoreSet

    class Slow(ChunkSource):
        def __init__(self):
            self.stores, self.calls, self.lock = StoreSet([str(full["S"])]), {}, threading.Lock()

        def fetch(self, ref):
            with self.lock:
                self.calls[ref.index] = self.calls.get(ref.index, 0) + 1
            time.sleep(0.02)
            return self.stores.get(ref.id, ref.size)

    with open(full["catar"], "rb") as f:
        want = f.read()
    offsets = [i * 50_000 for i in range(40) for _ in range(4)]  # four readers want each range at once
    for cache_bytes in (256 << 20, 1 << 20):
        src = Slow()
        with IndexReader(str(full["caidx"])) as r, \
                IndexStream(r, src, threads=4, readahead=8, cache_size=1 << 20, cache_bytes=cache_bytes) as stream:
            with ThreadPoolExecutor(16) as readers:
                got = list(readers.map(lambda o: stream.read_at(o, 70_000), offsets))
            assert got == [want[o:o + 70_000] for o in offsets]
            assert stream._cache_bytes <= cache_bytes + r.chunk_sizes[2]
            if cache_bytes > len(want):
                assert max(src.calls.values()) == 1 and len(src.calls) == stream.chunks_fetched


def test_background_mount_and_clean_unmount(fuse, full, tmp_path):
    """Without --foreground the command returns once mounted; fusermount3 -u ends the server."""
    mnt = tmp_path / "bg"
    p = pycatar("mount", f"--store={full['S']}", full["caidx"], mnt)
    assert p.returncode == 0, p.stderr
    try:
        assert os.path.ismount(mnt)  # ready when the command returns
        assert (mnt / "file.txt").read_bytes()[:5] == b"hello"
        servers = _servers(mnt)
        assert len(servers) == 1
    finally:
        _unmount(mnt)
    t0 = time.monotonic()
    while _servers(mnt) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    left = _servers(mnt)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left and not os.path.ismount(mnt)


def _servers(mnt) -> list[int]:
    """Pids of processes whose command line names ``mnt`` (the mount's server)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(str(mnt)) in argv and b"mount" in argv:
            out.append(int(pid))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_signal_unmounts(fuse, full, tmp_path, sig):
    mnt = tmp_path / "fg"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pycatar", "mount", "--foreground", full["catar"], mnt],
                            stderr=subprocess.PIPE)
    try:
        _wait_mounted(mnt, proc)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode == 0, proc.stderr.read()
        assert not os.path.ismount(mnt)
    finally:
        _unmount(mnt)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_errors_are_one_line(fuse, full, tmp_path):
    assert pycatar("mount", full["tree"], tmp_path / "m").returncode != 0  # no suffix
    p = pycatar("mount", "--store=/nonexistent", full["catar"], tmp_path / "m", "no/such/dir")
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1 and b"no such path" in p.stderr
    assert not os.path.ismount(tmp_path / "m")
    (tmp_path / "file").write_text("x")
    p = pycatar("mount", "--mkdir=no", full["catar"], tmp_path / "file")
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1 and b"not a directory" in p.stderr


def test_hostile_archive_gives_eio_not_a_crash(fuse, tmp_path, run_casync):
    """A malformed entry inside one directory: EIO there, the rest of the tree stays served."""
    tree = tmp_path / "t"
    (tree / "bad").mkdir(parents=True)
    (tree / "good").mkdir()
    (tree / "bad" / "victim-file").write_bytes(b"x" * 100)
    (tree / "good" / "fine").write_bytes(b"fine\n")
    run_casync("make", "--with=unix", tmp_path / "t.catar", tree)
    raw = bytearray((tmp_path / "t.catar").read_bytes())
    at = raw.index(b"victim-file\0") + len(b"victim-file\0")  # the ENTRY record follows its FILENAME
    raw[at + 24:at + 32] = (0o170777).to_bytes(8, "little")  # an unknown file type in the mode
    (tmp_path / "bad.catar").write_bytes(bytes(raw))
    with mounted(tmp_path, tmp_path / "bad.catar") as (mnt, log):
        with pytest.raises(OSError) as e:
            os.listdir(mnt / "bad")
        assert e.value.errno == errno.EIO
        assert (mnt / "good" / "fine").read_bytes() == b"fine\n"
        assert sorted(os.listdir(mnt)) == ["bad", "good"]
        assert "invalid mode" in log.read_text()


def test_mount_benchmark_runs_on_tiny_data(fuse, tmp_path):
    """benchmarks/mount.py runs (no wall-clock threshold here)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, os.path.join(here, "benchmarks", "mount.py"), "--quick", "--repeat", "1",
                        "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "| read json/tool.py (lookup + read) |" in p.stdout and "| ratio |" in p.stdout


def test_mount_through_pycatar_serve_and_the_server_dying(fuse, full, run_casync, tmp_path):
    """A .caidx mounted by URL through pycatar serve equals the source; once the server is gone, a
    read that needs a chunk not yet fetched gives EIO (no hang) and the mount unmounts cleanly."""
    from httpservers import PycatarServe

    web = tmp_path / "web"
    web.mkdir()
    shutil.copy(full["caidx"], web / "tree.caidx")
    srv = PycatarServe(tmp_path / "serve.log", f"--store={full['S']}", f"--index-dir={web}")
    try:
        with mounted(tmp_path, f"--store={srv.url}", "--http-retries=1", "--http-timeout=2",
                     f"{srv.url}tree.caidx") as (mnt, log):
            big = os.path.join("dir", "sub", "deeper", "random.bin")
            listing = set(os.listdir(mnt))
            assert {"dir", "file.txt"} <= listing <= set(os.listdir(full["tree"]))  # (nodump files are left out)
            with open(os.path.join(full["tree"], "file.txt"), "rb") as f:
                assert (mnt / "file.txt").read_bytes() == f.read()
            srv.stop()
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                with open(mnt / big, "rb") as f:
                    f.seek(1 << 20)
                    f.read(1 << 16)
            assert e.value.errno == errno.EIO and time.monotonic() - t0 < 60
            assert (mnt / "file.txt").read_bytes()  # what was fetched stays readable
        assert "cannot connect" in log.read_text() or "connection" in log.read_text()
    finally:
        if srv.proc.poll() is None:
            srv.stop()
    with PycatarServe(tmp_path / "serve2.log", f"--store={full['S']}", f"--index-dir={web}") as srv2:
        with mounted(tmp_path, f"--store={srv2.url}", f"{srv2.url}tree.caidx", name="mnt2") as (mnt, _log):
            assert run_casync("mtree", mnt).stdout == run_casync("mtree", full["tree"]).stdout


@pytest.mark.parametrize("code, ends_cleanly", [(errno.ECONNABORTED, True), (errno.EIO, False)])
def test_an_aborted_connection_ends_the_mount_like_an_unmount(fuse, code, ends_cleanly):
    """The kernel may end a session with ECONNABORTED instead of ENODEV (an aborted connection:
    umount -f, fusectl, once in a CI run at a plain unmount). pyfuse3 raises it; serve() takes it as
    the end of the file system, closes the session and returns. Any other error still propagates."""
    import trio

    from pycatar.mount import Mount

    closed = []

    class Session:  # pyfuse3, as far as serve() uses it
        async def main(self):
            raise OSError(code, f"fuse_session_receive_buf failed with {os.strerror(code)}")

        def close(self, unmount):
            closed.append(unmount)

    m = Mount.__new__(Mount)
    m.pyfuse3, m.trio = Session(), trio
    if ends_cleanly:
        m.serve(signals=False)
    else:
        with pytest.raises(OSError) as e:
            m.serve(signals=False)
        assert e.value.errno == code
    assert closed == [True]
