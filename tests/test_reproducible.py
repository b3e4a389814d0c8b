"""Reproducible archives (issue 7, spec/reproducible.md): one tree copied to ext4 and to tmpfs, with
different owners, mtimes, directory order and file-system-only metadata, archives to the same bytes
under --reproducible and SOURCE_DATE_EPOCH; casync lists and extracts the result."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest

from pycatar import fsmeta, reproducible
from pycatar.decoder import CatarReader
from pycatar.encoder import iter_entries
from pycatar.errors import UnsupportedError, UsageError
from pycatar.flags import EXT2_SUPER_MAGIC, MSDOS_SUPER_MAGIC, TMPFS_MAGIC, F

from conftest import IN_CI

IS_ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not IS_ROOT, reason="the trees hold devices and owners: need root")

EPOCH = 1_700_000_000  # SOURCE_DATE_EPOCH of these tests
OLD_NS = (EPOCH - 365 * 86400) * 10**9 + 500_000_000  # older than the epoch: kept (rounded to 1 s)


@contextlib.contextmanager
def _entries_of(source):
    """The entries the decoder reads from an archive file (a path) or file object."""
    if isinstance(source, io.IOBase):
        yield CatarReader(source)
        return
    with open(source, "rb") as f:
        yield CatarReader(f)


def pycatar(*args, env=None, check=True, **kw):
    full_env = dict(os.environ, **(env or {}))
    if env and env.get("SOURCE_DATE_EPOCH") is None:
        full_env.pop("SOURCE_DATE_EPOCH", None)
    p = subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, env=full_env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"pycatar {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


SDE = {"SOURCE_DATE_EPOCH": str(EPOCH)}


# --------------------------------------------------------------------------- the two file systems


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@contextlib.contextmanager
def _mounted(target: str, *mount_args: str):
    os.makedirs(target, exist_ok=True)
    p = subprocess.run(["mount", *mount_args, target], capture_output=True)
    if p.returncode != 0:
        _unavailable(f"cannot mount {' '.join(mount_args)}: {p.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", target], capture_output=True)


def _fs_type(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return fsmeta.fs_type(fd)
    finally:
        os.close(fd)


@pytest.fixture
def tmpfs_dir(tmp_path):
    with _mounted(str(tmp_path / "tmpfs"), "-t", "tmpfs", "-o", "size=64m,mode=1777", "pycatar-test") as d:
        assert _fs_type(d) == TMPFS_MAGIC
        yield d


@pytest.fixture
def ext4_dir(tmp_path):
    d = str(tmp_path / "ext4")
    os.makedirs(d)
    if _fs_type(d) == EXT2_SUPER_MAGIC:
        yield d
        return
    # the temporary directory is not on ext4 (e.g. tmpfs or overlayfs in a container): a loop device
    if shutil.which("mkfs.ext4") is None:
        _unavailable("no ext4 here and no mkfs.ext4 to make one")
    image = str(tmp_path / "ext4.img")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
    with _mounted(d, "-o", "loop", image):
        assert _fs_type(d) == EXT2_SUPER_MAGIC
        yield d


# --------------------------------------------------------------------------- the tree

FILES = {  # path: (mode, contents)
    "README": (0o644, b"the same tree, twice\n" * 50),
    "src/pkg/mod.py": (0o644, b"print('hello')\n"),
    "src/run.sh": (0o755, b"#!/bin/sh\necho hi\n"),
    "src/x.o": (0o644, b"object file a .caexclude names\n"),
    "src/.caexclude": (0o644, b"*.o\n"),
    "bin/setuid": (0o4755, b"#!/bin/sh\n"),
    "old.txt": (0o600, b"older than SOURCE_DATE_EPOCH\n"),
    "ünïcödé name": (0o644, b"odd name\n"),
    "empty": (0o644, b""),
}
DIRS = {"": 0o755, "src": 0o755, "src/pkg": 0o750, "bin": 0o755, "sticky": 0o1777, "private": 0o700,
        "empty-dir": 0o755}


def build_tree(root: str, *, when_ns: int, owner: tuple[int, int], reverse: bool) -> str:
    """The test tree at ``root``: the same contents and modes every time; owners, mtimes and the
    creation (hence readdir) order as given."""
    big = random.Random(7).randbytes(600_000)
    dirs = sorted(DIRS, reverse=reverse)
    for d in sorted(dirs, key=len):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    files = dict(FILES, **{"big.bin": (0o644, big)})
    for path in sorted(files, reverse=reverse):
        mode, data = files[path]
        with open(os.path.join(root, path), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(root, path), mode)
    os.link(os.path.join(root, "README"), os.path.join(root, "README.hard"))
    os.symlink("README", os.path.join(root, "link"))
    os.symlink("does/not/exist", os.path.join(root, "dangling"))
    os.mkfifo(os.path.join(root, "fifo"), 0o644)
    os.mknod(os.path.join(root, "null"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(os.path.join(root, "disk"), 0o660 | 0o060000, os.makedev(8, 1))
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(root, "sock"))
    s.close()
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    for path in paths + [root]:
        os.lchown(path, *owner)
    for d, mode in DIRS.items():
        os.chmod(os.path.join(root, d), mode)  # after chown, which may clear set-id bits
    os.chmod(os.path.join(root, "bin/setuid"), 0o4755)
    for path in sorted(paths, key=lambda p: -p.count(os.sep)) + [root]:
        t = OLD_NS if path.endswith("old.txt") else when_ns
        os.utime(path, ns=(t, t), follow_symlinks=False)
    return root


def ext4_only_metadata(root: str) -> None:
    """What ext4 stores and tmpfs (or a fresh checkout) would not: none of it is in the set."""
    os.setxattr(os.path.join(root, "README"), "user.origin", b"downloaded")
    A = fsmeta
    os.setxattr(os.path.join(root, "src", "pkg", "mod.py"), A.ACL_XATTR_ACCESS, A.build_acl_xattr([
        (A.ACL_USER_OBJ, 6, 0), (A.ACL_USER, 4, 1000), (A.ACL_GROUP_OBJ, 4, 0), (A.ACL_MASK, 4, 0),
        (A.ACL_OTHER, 4, 0)]))
    subprocess.run(["chattr", "+A", os.path.join(root, "src", "run.sh")], check=True)
    subprocess.run(["chattr", "+d", os.path.join(root, "big.bin")], check=True)  # nodump


@pytest.fixture
def two_copies(ext4_dir, tmpfs_dir):
    now = time.time_ns()
    assert now > EPOCH * 10**9
    a = build_tree(os.path.join(ext4_dir, "tree"), when_ns=EPOCH * 10**9 + 1000 * 10**9 + 123,
                   owner=(1000, 1000), reverse=False)
    ext4_only_metadata(a)
    time.sleep(0.01)
    b = build_tree(os.path.join(tmpfs_dir, "tree"), when_ns=time.time_ns(), owner=(0, 12345), reverse=True)
    yield a, b
    subprocess.run(["chattr", "-R", "-d", "-A", a], capture_output=True)


# --------------------------------------------------------------------------- the checks


def test_ext4_and_tmpfs_copies_archive_identically(two_copies, tmp_path, run_casync):
    """The issue's check. REPRO-1 (the set), REPRO-3 (owners 0/0), REPRO-4 (mtimes clamped, older ones
    kept), REPRO-6 (nodump and .caexclude do not exclude), REPRO-7 (a casync archive: casync lists and
    extracts it, and the extraction archives to the same bytes), for .catar and .caidx."""
    a, b = two_copies
    out = {}
    for name, tree in (("ext4", a), ("tmpfs", b)):
        cat = tmp_path / f"{name}.catar"
        idx = tmp_path / f"{name}.caidx"
        digest = pycatar("make", "--reproducible", cat, tree, env=SDE).stdout
        idx_digest = pycatar("--reproducible", "make", idx, f"--store={tmp_path / name}.castr", tree,
                             env=SDE).stdout
        assert digest == idx_digest and len(digest.strip()) == 64
        chunks = sorted(p.name for p in (tmp_path / f"{name}.castr").rglob("*.cacnk"))
        out[name] = (digest, cat.read_bytes(), idx.read_bytes(), chunks)
    assert out["ext4"] == out["tmpfs"]
    assert len(out["ext4"][3]) > 3  # several chunks

    # what is in it: the fixed set, owners 0/0, no names, mtimes clamped (old.txt kept, rounded)
    with _entries_of(tmp_path / "ext4.catar") as ar:
        entries = {e.path: e for e in ar}
    assert entries[""].feature_flags == reproducible.REPRODUCIBLE_FLAGS | F.SHA512_256
    assert {"src/x.o", "big.bin", "sock", "fifo", "null", "disk", "README.hard"} <= set(entries)
    for e in entries.values():
        assert (e.uid, e.gid, e.user, e.group, e.xattrs, e.flags) == (0, 0, None, None, [], 0)
        assert e.mtime == (OLD_NS // 10**9 * 10**9 if e.path == "old.txt" else EPOCH * 10**9)
    assert entries["sticky"].mode == 0o41777 and entries["bin/setuid"].mode == 0o104755

    # casync lists it as pycatar does, and extracts it; re-archiving the extraction gives the same bytes
    cat = tmp_path / "ext4.catar"
    assert run_casync("list", cat).stdout == pycatar("list", cat).stdout
    assert run_casync("mtree", cat).stdout == pycatar("mtree", cat).stdout
    for tool in ("casync", "pycatar"):
        dest = tmp_path / f"extracted-{tool}"
        if tool == "casync":
            run_casync("extract", cat, dest)
        else:
            pycatar("extract", cat, dest)
        again = tmp_path / f"again-{tool}.catar"
        assert pycatar("make", "--reproducible", again, dest, env=SDE).stdout == out["ext4"][0]
        assert again.read_bytes() == out["ext4"][1]
    run_casync("extract", tmp_path / "tmpfs.caidx", tmp_path / "from-index", f"--store={tmp_path / 'tmpfs'}.castr")


def test_refinements_owner_and_no_epoch(two_copies, tmp_path):
    """REPRO-2: --with=/--without= refine the set; REPRO-3: --owner=/--group= set the ids; REPRO-4:
    without SOURCE_DATE_EPOCH the files' own times are kept (rounded to seconds); REPRO-6: an explicit
    --exclude-file=yes applies."""
    a, b = two_copies
    pycatar("make", "--reproducible", "--with=xattrs", "--without=sockets", "--owner=1000", "--group=100",
            tmp_path / "a.catar", a, env=SDE)
    with _entries_of(tmp_path / "a.catar") as ar:
        entries = {e.path: e for e in ar}
    assert entries[""].feature_flags == (reproducible.REPRODUCIBLE_FLAGS | F.WITH_XATTRS | F.SHA512_256) \
        & ~F.WITH_SOCKETS
    assert "sock" not in entries and entries["README"].xattrs == [(b"user.origin", b"downloaded")]
    assert {(e.uid, e.gid) for e in entries.values()} == {(1000, 100)}

    pycatar("make", "--reproducible", tmp_path / "b.catar", b, env={"SOURCE_DATE_EPOCH": None})
    with _entries_of(tmp_path / "b.catar") as ar:
        times = {e.path: e.mtime for e in ar}
    assert times["old.txt"] == OLD_NS // 10**9 * 10**9
    assert times["README"] == os.lstat(os.path.join(b, "README")).st_mtime_ns // 10**9 * 10**9

    # --exclude-file=yes brings .caexclude back (and says so in the flags)
    pycatar("make", "--reproducible", "--exclude-file=yes", tmp_path / "c.catar", b, env=SDE)
    with _entries_of(tmp_path / "c.catar") as ar:
        names = {e.path for e in ar}
        assert ar.feature_flags & F.EXCLUDE_FILE
    assert "src/x.o" not in names and "src/.caexclude" in names


# --------------------------------------------------------------------------- smaller checks


def test_flag_set():
    """REPRO-1 (the value), REPRO-2 (--with= adds, --without= removes, normalised), REPRO-3/4 options."""
    assert reproducible.feature_flags() == int(
        F.WITH_32BIT_UIDS | F.WITH_SEC_TIME | F.WITH_PERMISSIONS | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
        | F.WITH_FIFOS | F.WITH_SOCKETS | F.SHA512_256)
    assert reproducible.feature_flags(["nsec-time"], ["fifos"], digest="sha256") == int(
        F.WITH_32BIT_UIDS | F.WITH_NSEC_TIME | F.WITH_PERMISSIONS | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
        | F.WITH_SOCKETS)
    opts = reproducible.encoder_options(reproducible.feature_flags(), epoch=5)
    assert opts == {"owner": 0, "group": 0, "clamp_mtime_ns": 5 * 10**9,
                    "require_flags": reproducible.REPRODUCIBLE_FLAGS}
    assert reproducible.encoder_options(0, owner=7, reproducible=False) == {"owner": 7}


@pytest.mark.parametrize("value,expected", [
    ("1700000000", 1_700_000_000), ("0", 0), ("", None), (None, None),
    ("-1", UsageError), ("1.5", UsageError), ("abc", UsageError), (" 12", UsageError),
    ("99999999999999999999", UsageError),
])
def test_source_date_epoch(value, expected):
    """REPRO-4: decimal seconds, empty means unset, anything else is an error."""
    env = {} if value is None else {"SOURCE_DATE_EPOCH": value}
    if expected is UsageError:
        with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
            reproducible.source_date_epoch(env)
    else:
        assert reproducible.source_date_epoch(env) == expected


def test_fat_source_is_refused(tmp_path, monkeypatch):
    """REPRO-5: a file system that cannot store the set (here: FAT, no permissions or 1 s times) is an
    error, not a silently different archive."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    monkeypatch.setattr(fsmeta, "fs_type", lambda fd: MSDOS_SUPER_MAGIC)
    flags = reproducible.feature_flags()
    with pytest.raises(UnsupportedError, match="cannot store .*permissions"):
        list(iter_entries(str(tmp_path / "t"), flags, **reproducible.encoder_options(flags)))
    # without the requirement (a plain make) casync's behaviour: stored as the flags say
    assert len(list(iter_entries(str(tmp_path / "t"), flags))) == 2
    # a --without= refinement lifts the requirement
    flags = reproducible.feature_flags([], ["32bit-uids", "permissions", "sec-time", "symlinks", "device-nodes",
                                            "fifos", "sockets"])
    assert len(list(iter_entries(str(tmp_path / "t"), flags, **reproducible.encoder_options(flags)))) == 2


def test_plain_make_ignores_source_date_epoch(tmp_path, run_casync):
    """REPRO-4: the default path stays casync's: SOURCE_DATE_EPOCH changes nothing without --reproducible."""
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("x")
    os.utime(tree / "d" / "f", ns=(2 * EPOCH * 10**9, 2 * EPOCH * 10**9))
    run_casync("make", tmp_path / "ref.catar", tree, env=dict(os.environ, **SDE))
    pycatar("make", tmp_path / "ours.catar", tree, env=SDE)
    assert (tmp_path / "ours.catar").read_bytes() == (tmp_path / "ref.catar").read_bytes()


@pytest.mark.parametrize("argv,env,message", [
    (["make", "--reproducible", "x.catar", "t"], {"SOURCE_DATE_EPOCH": "yesterday"}, "SOURCE_DATE_EPOCH"),
    (["make", "--reproducible", "x.caibx", "t"], {}, "not blob-indexs"),
    (["make", "--reproducible", "x.tar", "t"], {}, "does not have valid suffix"),
    (["make", "--owner=root", "x.catar", "t"], {}, "Failed to parse --owner= parameter: root"),
    (["make", "--group=-1", "x.catar", "t"], {}, "Failed to parse --group= parameter"),
    (["list", "--reproducible", "t"], {}, '--reproducible applies to the "make" verb only'),
    (["extract", "--owner=1", "x.catar", "d"], {}, '--owner= applies to the "make" verb only'),
    (["make", "--reproducible", "x.catar", "t/f"], {}, "not a directory"),
    (["make", "--reproducible", "x.catar", "missing"], {}, "Failed to open missing"),
])
def test_cli_errors(argv, env, message, tmp_path):
    """REPRO-8 (scope), REPRO-3 (numeric ids only), REPRO-4 (malformed epoch): one-line errors, no output."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    p = pycatar(*argv, env=env, cwd=tmp_path, check=False)
    err = p.stderr.decode()
    assert p.returncode != 0 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t"]


def test_owner_without_reproducible_and_stdout(tmp_path):
    """REPRO-3: --owner=/--group= without --reproducible only replace the ids (default flags otherwise)."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    p = pycatar("make", "--owner=0", "--group=0", "--what=archive", "-", tmp_path / "t")
    # the archive, then its digest (as casync prints it): the SHA-512/256 of the archive's bytes
    assert p.stdout[-65:].strip().decode() == hashlib.new("sha512_256", p.stdout[:-65]).hexdigest()
    with _entries_of(io.BytesIO(p.stdout[:-65])) as ar:
        entries = list(ar)
    assert {(e.uid, e.gid, e.user, e.group) for e in entries} == {(0, 0, None, None)}
    assert entries[0].feature_flags & F.WITH_ACL  # the default set otherwise
