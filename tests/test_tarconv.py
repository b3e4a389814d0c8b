"""tar <-> catar conversion (issue 7, spec/tar.md): GNU tar's extraction of a tar equals pycatar's
extraction of the catar converted from it; catar -> tar -> catar is stable; both directions are
deterministic; unsafe tars end in one-line errors."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

from pycatar import api, archive, tarconv
from pycatar.decoder import CatarReader
from pycatar.errors import PycatarError

from tarhelpers import tar_bytes as _tar_bytes, tar_member as _ti
from trees import make_full_tree, remove_tree

GNU_TAR = "/usr/bin/tar"
IS_ROOT = os.geteuid() == 0
pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="the trees hold devices and owners: need root"),
    pytest.mark.skipif(not os.path.exists(GNU_TAR), reason="GNU tar (/usr/bin/tar) is not installed"),
]

#: what a tar carries and pycatar stores: archives with exactly these flags survive catar -> tar -> catar
TAR_FLAGS = ["--with=32bit-uids", "--with=user-names", "--with=nsec-time", "--with=permissions",
             "--with=symlinks", "--with=device-nodes", "--with=fifos", "--with=xattrs", "--with=fcaps",
             "--exclude-file=no", "--exclude-nodump=no"]


def pycatar(*args, check=True, **kw):
    p = subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"pycatar {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


def gnu_tar(*args, check=True, **kw):
    p = subprocess.run([GNU_TAR, *map(str, args)], capture_output=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"tar {' '.join(map(str, args))} failed: {p.stderr.decode(errors='replace')}")
    return p


def gnu_create(tree, out, fmt="pax", *extra):
    """GNU tar of a tree, with every xattr; stderr (e.g. "socket ignored") is not an error."""
    xattrs = ["--xattrs", "--xattrs-include=*"] if fmt == "pax" else []
    sparse = ["--sparse"] if fmt != "ustar" else []
    return gnu_tar("-C", tree, f"--format={fmt}", *xattrs, *sparse, *extra, "-cf", out, ".")


def gnu_extract(tar, dest):
    os.makedirs(dest, exist_ok=True)
    gnu_tar("--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-owner", "-xpf", tar, "-C", dest)


def snapshot(root, skip_sockets=True):
    """Everything a tar carries about each entry below ``root``, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [""] + dirnames + filenames if dirpath == root else dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, root)
            s = os.lstat(path)
            if skip_sockets and stat.S_ISSOCK(s.st_mode):
                continue
            info = [stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns]
            if stat.S_ISREG(s.st_mode):
                with open(path, "rb") as f:
                    info += [s.st_size, hashlib.sha256(f.read()).hexdigest()]
            elif stat.S_ISLNK(s.st_mode):
                info.append(os.readlink(path))
            elif stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
                info.append(s.st_rdev)
            if not stat.S_ISLNK(s.st_mode):
                names = sorted(n for n in os.listxattr(path)
                               if n.startswith(("user.", "trusted.")) or n == "security.capability")
                info.append([(n, os.getxattr(path, n)) for n in names])
            out[rel] = info
    return out


def rmtree(path):
    if os.path.lexists(path):
        remove_tree(str(path))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The full test tree (every entry type, xattrs, fcaps, ACLs, sparse...) plus a hard link."""
    root = str(tmp_path_factory.mktemp("tarconv") / "tree")
    make_full_tree(root, large_size=1 << 20)
    os.link(os.path.join(root, "dir", "zeros.bin"), os.path.join(root, "hardlink"))
    t = os.stat(os.path.join(root, "dir")).st_mtime_ns
    os.utime(os.path.join(root, "dir"), ns=(t, t))
    os.utime(root, ns=(t, t))
    yield root
    remove_tree(root)


@pytest.fixture(scope="module")
def pax_tar(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("paxtar") / "tree.tar")
    gnu_create(tree, out)
    return out


# --------------------------------------------------------------------------- tar -> catar


def test_tar_to_catar_extracts_like_gnu_tar(pax_tar, tmp_path, run_casync):
    """The issue's check: a tar of a tree with every entry type and xattrs converts to a catar whose
    extraction (by pycatar and by casync) equals GNU tar's extraction of the same tar. TAR-5 (entries
    and metadata, nanosecond times, xattrs, fcaps, sparse files), TAR-8 (hard link: a copy, a warning)."""
    cat = tmp_path / "t.catar"
    p = pycatar("make", cat, "--input-format=tar", pax_tar)
    assert "hard link stored as a copy" in p.stderr.decode()
    gnu, ours, theirs = tmp_path / "gnu", tmp_path / "ours", tmp_path / "casync"
    gnu_extract(pax_tar, gnu)
    pycatar("extract", cat, ours)
    run_casync("extract", cat, theirs)
    try:
        expected = snapshot(gnu)
        assert {"hardlink", "dir/blockdev", "fifo", "link", "dir/ünïcödé ☃", "sparse.img"} <= set(expected)
        assert any(x for x in expected["file.txt"][-1])  # xattrs made it through
        assert snapshot(ours) == expected
        assert snapshot(theirs) == expected
    finally:
        for d in (gnu, ours, theirs):
            rmtree(d)


def test_same_catar_from_every_tar_format_and_compression(tree, tmp_path):
    """TAR-1, TAR-9: ustar, GNU and pax tars of one tree, plain or gzip/bzip2/xz/zstd compressed, file or
    standard input, give the same catar; and under --reproducible the same as archiving the tree itself
    (TAR-2: the flags are chosen as for a directory)."""
    digests = {}
    for fmt in ("pax", "gnu", "ustar"):
        t = tmp_path / f"{fmt}.tar"
        gnu_create(tree, t, fmt)
        digests[fmt] = pycatar("--reproducible", "--without=sockets", "make", tmp_path / f"{fmt}.catar",
                               "--input-format=tar", t).stdout
    data = (tmp_path / "pax.tar").read_bytes()
    for name, cmd in (("gz", ["gzip", "-c"]), ("bz2", ["bzip2", "-c"]), ("xz", ["xz", "-c"]),
                      ("zst", ["zstd", "-q", "-c"])):
        if shutil.which(cmd[0]) is None:
            continue
        packed = subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
        (tmp_path / f"t.tar.{name}").write_bytes(packed)
        digests[name] = pycatar("--reproducible", "--without=sockets", "make", tmp_path / f"{name}.catar",
                                "--input-format=tar", tmp_path / f"t.tar.{name}").stdout
        if name == "zst":
            digests["stdin"] = pycatar("--reproducible", "--without=sockets", "make", "--input-format=tar",
                                       tmp_path / "stdin.catar", "-", input=packed).stdout
    digests["tree"] = pycatar("--reproducible", "--without=sockets", "make", tmp_path / "tree.catar", tree).stdout
    assert len(set(digests.values())) == 1, digests
    ref = (tmp_path / "tree.catar").read_bytes()
    for name in digests:
        assert (tmp_path / f"{name}.catar").read_bytes() == ref, name


def test_tar_to_caidx_is_deterministic(pax_tar, tmp_path):
    """TAR-9 for indexes: file or pipe (random access or spooled), the same index and chunks."""
    a = pycatar("make", tmp_path / "a.caidx", "--store", tmp_path / "s1", "--input-format=tar", pax_tar).stdout
    b = pycatar("make", tmp_path / "b.caidx", "--store", tmp_path / "s2", "--input-format=tar", "-",
                stdin=open(pax_tar, "rb")).stdout
    assert a == b
    assert (tmp_path / "a.caidx").read_bytes() == (tmp_path / "b.caidx").read_bytes()
    assert sorted(p.name for p in (tmp_path / "s1").rglob("*.cacnk")) == \
        sorted(p.name for p in (tmp_path / "s2").rglob("*.cacnk"))





def _entries(path):
    with open(path, "rb") as f:
        return {e.path: e for e in CatarReader(f)}


def test_implied_directories_order_and_duplicates(tmp_path):
    """TAR-6: directories a tar does not list are made 0755, owned by 0, with the newest mtime;
    TAR-7: any member order gives archive order; a later member replaces an earlier one; TAR-4: `./`
    and `.` components dropped; TAR-8: a hard link copies what its name refers to at that point."""
    members = [
        _ti("b/z", data=b"old", mtime=1_500_000_000),
        _ti("a/deep/file", data=b"x", uid=5, gid=6, uname="someone", mtime=1_700_000_000),
        _ti("b/z", data=b"new", mtime=1_600_000_000),
        _ti("b", tarfile.DIRTYPE, mode=0o700, mtime=1_400_000_000),
        _ti("./b/./y", tarfile.SYMTYPE, linkname="z"),
        _ti("b/z2", tarfile.LNKTYPE, linkname="b/z"),
    ]
    tar = tmp_path / "t.tar"
    tar.write_bytes(_tar_bytes(members))
    p = pycatar("make", tmp_path / "t.catar", "--input-format=tar", tar)
    assert p.stderr.decode().count("\n") == 1 and "hard link" in p.stderr.decode()
    es = _entries(tmp_path / "t.catar")
    assert list(es) == ["", "a", "a/deep", "a/deep/file", "b", "b/y", "b/z", "b/z2"]
    for implied in ("", "a", "a/deep"):
        e = es[implied]
        assert (e.mode, e.uid, e.gid, e.mtime, e.user) == (0o40755, 0, 0, 1_700_000_000 * 10**9, None)
    assert es["a/deep/file"].user == "someone" and es["a/deep/file"].uid == 5
    assert es["b"].mode == 0o40700 and es["b"].mtime == 1_400_000_000 * 10**9
    with api.open(tmp_path / "t.catar") as ar:
        assert ar.extractfile("b/z").read() == b"new" and ar.extractfile("b/z2").read() == b"new"
    # the same members in another order: the same archive
    tar2 = tmp_path / "t2.tar"
    tar2.write_bytes(_tar_bytes([members[1], members[0], members[2], members[4], members[3], members[5]]))
    pycatar("make", tmp_path / "t2.catar", "--input-format=tar", tar2)
    assert (tmp_path / "t2.catar").read_bytes() == (tmp_path / "t.catar").read_bytes()


@pytest.mark.parametrize("members,message", [
    ([_ti("/etc/passwd", data=b"x")], "absolute names are not allowed"),
    ([_ti("a/../../x", data=b"x")], "'..' components are not allowed"),
    ([_ti("x", tarfile.LNKTYPE, linkname="missing")], "hard link to 'missing'"),
    ([_ti("f", data=b"x"), _ti("f/g", data=b"y")], "'f' is not a directory"),
    ([_ti("d/x", data=b"x"), _ti("d", data=b"y")], "would replace a directory"),
    ([_ti(".", data=b"x")], "root of the tree must be a directory"),
], ids=["absolute", "dotdot", "dangling-hardlink", "file-as-dir", "dir-replaced", "root-file"])
def test_bad_tars_are_one_line_errors(members, message, tmp_path):
    """TAR-4 (unsafe names), TAR-7 (type conflicts), TAR-8 (dangling hard link): one line, no output."""
    tar = tmp_path / "bad.tar"
    tar.write_bytes(_tar_bytes(members))
    p = pycatar("make", tmp_path / "out.catar", "--input-format=tar", tar, check=False)
    err = p.stderr.decode()
    assert p.returncode != 0 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out.catar").exists()
    assert [f.name for f in tmp_path.iterdir()] == ["bad.tar"]  # no spool or temporary left behind


@pytest.mark.parametrize("data,message", [
    (b"", "not a tar"),
    (b"hello, this is not a tar file at all" * 20, "Failed to read the tar"),
    (b"\x1f\x8b\x08" + b"garbage" * 10, "Failed to read the tar"),
    (b"\x28\xb5\x2f\xfd" + b"garbage" * 10, "Failed to read the tar"),
], ids=["empty", "text", "bad-gzip", "bad-zstd"])
def test_not_a_tar(data, message, tmp_path):
    """TAR-1: what is not a tar (or is corrupt) ends in one line."""
    tar = tmp_path / "x.tar"
    tar.write_bytes(data)
    p = pycatar("make", tmp_path / "out.catar", "--input-format=tar", tar, check=False)
    err = p.stderr.decode()
    assert p.returncode != 0 and message in err and err.count("\n") == 1, err


def test_truncated_compressed_tar(pax_tar, tmp_path):
    """TAR-1: truncated compressed input is an error, not a shorter archive."""
    packed = subprocess.run(["gzip", "-c", pax_tar], capture_output=True, check=True).stdout
    p = pycatar("make", tmp_path / "out.catar", "--input-format=tar", "-", input=packed[: len(packed) // 2],
                check=False)
    err = p.stderr.decode()
    assert p.returncode != 0 and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("argv,message", [
    (["make", "x.catar", "--input-format=zip", "t.tar"], "Failed to parse --input-format= parameter: zip"),
    (["make", "x.caibx", "--input-format=tar", "t.tar"], "not blob-indexs"),
    (["make", "x.catar", "--input-format=tar", "--exclude-file=yes", "t.tar"], "not to tar input"),
    (["make", "x.catar", "--input-format=tar", "."], "is a directory, not a tar"),
    (["extract", "--input-format=tar", "x.catar", "d"], '--input-format= applies to the "make" verb only'),
    (["make", "--output-format=tar", "x.catar", "."], '--output-format= applies to the "extract" verb only'),
    (["extract", "--output-format=tar", "x.catar"], "expects ARCHIVE, OUTPUT"),
    (["extract", "--output-format=tar", "x.caibx", "o.tar"], "not blob-indexs"),
    (["extract", "--output-format=tar", "missing.catar", "o.tar"], "missing.catar"),
])
def test_cli_errors(argv, message, tmp_path):
    """TAR-14 (formats, verbs, blob indexes), TAR-3 (no exclude options with tar input)."""
    (tmp_path / "t.tar").write_bytes(_tar_bytes([_ti("f", data=b"x")]))
    p = pycatar(*argv, cwd=tmp_path, check=False)
    err = p.stderr.decode()
    assert p.returncode != 0 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t.tar"]


# --------------------------------------------------------------------------- catar -> tar


@pytest.fixture(scope="module")
def tree_catar(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("treecatar") / "tree.catar"
    archive.make_archive(str(out), tree)
    return out


def test_catar_to_tar_deterministic_and_gnu_readable(tree_catar, tmp_path):
    """TAR-10 (names, sockets left out with a warning), TAR-11 (xattrs as SCHILY.xattr, warnings for
    ACLs and chattr flags, no hdrcharset), TAR-12 (deterministic; file and standard output agree)."""
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    p = pycatar("extract", tree_catar, "--output-format=tar", a)
    err = p.stderr.decode()
    assert "sockets left out" in err and "ACLs dropped" in err and "chattr" in err
    pycatar("extract", "--output-format=tar", tree_catar, b)
    c = pycatar("extract", "--output-format=tar", "-", "-", stdin=open(tree_catar, "rb")).stdout
    assert a.read_bytes() == b.read_bytes() == c
    listing = gnu_tar("-tvf", a)
    assert listing.stderr == b""  # no warnings (e.g. about pax keywords) from GNU tar
    names = listing.stdout.decode().splitlines()
    assert names[0].endswith(" ./") and any(n.endswith("./link -> file.txt") for n in names)
    with tarfile.open(a) as tf:
        for ti in tf:
            assert "atime" not in ti.pax_headers and "ctime" not in ti.pax_headers
        assert tf.getmember("./file.txt").pax_headers["SCHILY.xattr.trusted.secret"] == "\x00\x01binary\udcff"
        assert tf.getmember("./file.txt").uname == "root" or tf.getmember("./file.txt").uid == 0


def test_catar_to_tar_extracts_like_pycatar(tree_catar, tmp_path):
    """TAR-10, TAR-11: GNU tar's extraction of the tar equals pycatar's extraction of the archive
    (sockets aside: tar cannot hold them; ACLs and chattr flags are not part of the comparison)."""
    t = tmp_path / "a.tar"
    pycatar("extract", tree_catar, "--output-format=tar", t)
    gnu, ours = tmp_path / "gnu", tmp_path / "ours"
    gnu_extract(t, gnu)
    pycatar("extract", tree_catar, ours)
    try:
        assert snapshot(gnu) == snapshot(ours)
    finally:
        rmtree(gnu)
        rmtree(ours)


def test_subpath_and_caidx_to_tar(tree, tree_catar, tmp_path):
    """TAR-10: a SUBPATH's tar starts with the sub-tree's own name, as `extract ARCHIVE DIR SUBPATH`."""
    idx = tmp_path / "t.caidx"
    pycatar("make", idx, tree)
    sub_tar, sub_tar_idx = tmp_path / "sub.tar", tmp_path / "sub2.tar"
    pycatar("extract", tree_catar, "--output-format=tar", sub_tar, "dir/sub")
    pycatar("extract", idx, "--output-format=tar", sub_tar_idx, "/dir/sub/")
    assert sub_tar.read_bytes() == sub_tar_idx.read_bytes()
    names = gnu_tar("-tf", sub_tar).stdout.decode().split()
    assert names == ["sub/", "sub/deeper/", "sub/deeper/random.bin"]
    gnu, ours = tmp_path / "gnu", tmp_path / "ours"
    gnu_extract(sub_tar, gnu)
    pycatar("extract", tree_catar, ours, "dir/sub")
    assert snapshot(gnu) == snapshot(ours)
    p = pycatar("extract", tree_catar, "--output-format=tar", tmp_path / "none.tar", "no/such", check=False)
    assert p.returncode != 0 and "no/such" in p.stderr.decode() and not (tmp_path / "none.tar").exists()


def test_catar_tar_catar_is_stable(tree, tmp_path):
    """TAR-13: a catar with what a tar carries survives catar -> tar -> catar byte for byte; any catar
    (TAR-2: the default flags) reaches a fixed point after one round."""
    c1 = tmp_path / "c1.catar"
    pycatar(*TAR_FLAGS, "make", c1, tree)
    pycatar("extract", c1, "--output-format=tar", tmp_path / "t1.tar")
    pycatar(*TAR_FLAGS, "make", tmp_path / "c2.catar", "--input-format=tar", tmp_path / "t1.tar")
    assert (tmp_path / "c2.catar").read_bytes() == c1.read_bytes()

    d1 = tmp_path / "d1.catar"
    pycatar("make", d1, tree)  # everything: sockets, ACLs, chattr flags... are lost in the tar
    pycatar("extract", d1, "--output-format=tar", tmp_path / "u1.tar")
    pycatar("make", tmp_path / "d2.catar", "--input-format=tar", tmp_path / "u1.tar")
    pycatar("extract", tmp_path / "d2.catar", "--output-format=tar", tmp_path / "u2.tar")
    pycatar("make", tmp_path / "d3.catar", "--input-format=tar", tmp_path / "u2.tar")
    assert (tmp_path / "u1.tar").read_bytes() == (tmp_path / "u2.tar").read_bytes()
    assert (tmp_path / "d2.catar").read_bytes() == (tmp_path / "d3.catar").read_bytes()


def test_pax_records_match_tarfile_for_utf8(tmp_path):
    """TAR-11: the pax writer differs from tarfile's only for values that are not UTF-8 (no hdrcharset)."""
    headers = {"mtime": "1600000000.5", "SCHILY.xattr.user.x": "ünï" * 40, "path": "a" * 120}
    for cls in (tarfile.TarInfo, tarconv._TarInfo):
        ti = cls("a" * 120)
        ti.pax_headers = dict(headers)
        ti.size = 0
        (tmp_path / cls.__name__).write_bytes(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    assert (tmp_path / "TarInfo").read_bytes() == (tmp_path / "_TarInfo").read_bytes()
    ti = tarconv._TarInfo("f")
    ti.pax_headers = {"SCHILY.xattr.user.b": b"\xff\x00".decode("utf-8", "surrogateescape")}
    buf = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert b"hdrcharset" not in buf and b" SCHILY.xattr.user.b=\xff\x00\n" in buf
    back = tarfile.open(fileobj=io.BytesIO(buf + bytes(1024)))
    assert back.next().pax_headers["SCHILY.xattr.user.b"].encode("utf-8", "surrogateescape") == b"\xff\x00"


def test_tar_of_nothing(tmp_path):
    """TAR-1, TAR-6: end-of-archive blocks only (plain or compressed) is a tar of nothing: the root."""
    empty = _tar_bytes([])
    assert not any(empty)
    for name, data in (("plain", empty), ("gz", subprocess.run(["gzip", "-c"], input=empty, capture_output=True,
                                                               check=True).stdout)):
        pycatar("make", tmp_path / f"{name}.catar", "--input-format=tar", "-", input=data)
        es = _entries(tmp_path / f"{name}.catar")
        assert list(es) == [""] and (es[""].mode, es[""].mtime) == (0o40755, 0)


def test_pax_extras(tmp_path):
    """TAR-5: SELinux labels from RHT.security.selinux, fcaps only on files; ACLs and xattrs outside
    user./trusted. are not converted, with one warning line per kind."""
    f, _ = _ti("f", data=b"x")
    f.pax_headers = {"RHT.security.selinux": "system_u:object_r:bin_t:s0", "SCHILY.acl.access": "user::rw-",
                     "SCHILY.xattr.security.capability": "\x01\x00\x00\x02", "SCHILY.xattr.system.x": "y",
                     "SCHILY.xattr.user.ok": "1"}
    d, _ = _ti("d", tarfile.DIRTYPE)
    d.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02", "SCHILY.acl.default": "user::rwx"}
    tar = tmp_path / "t.tar"
    tar.write_bytes(_tar_bytes([(f, b"x"), (d, None)]))
    p = pycatar("make", tmp_path / "t.catar", "--input-format=tar", tar)
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 2 and "ACLs (SCHILY.acl.*) not converted for 2 members" in lines[0]
    assert "xattr system.x not converted for 1 member" in lines[1]
    es = _entries(tmp_path / "t.catar")
    assert es["f"].selinux == "system_u:object_r:bin_t:s0" and es["f"].fcaps == b"\x01\x00\x00\x02"
    assert es["f"].xattrs == [(b"user.ok", b"1")] and es["d"].fcaps is None


def test_library_tar_encoder(tmp_path):
    """TAR-3: the library clears the exclude bits too."""
    tar = tmp_path / "t.tar"
    tar.write_bytes(_tar_bytes([_ti("f", data=b"payload"), _ti("d", tarfile.DIRTYPE)]))
    from pycatar import flags

    with tarconv.TarEncoder(str(tar), int(flags.DEFAULT)) as enc:
        res = archive.write_archive(str(tmp_path / "t.catar"), enc)
    assert not res.feature_flags & int(flags.F.EXCLUDE_FILE | flags.F.EXCLUDE_NODUMP)
    assert list(_entries(tmp_path / "t.catar")) == ["", "d", "f"]
    with pytest.raises(PycatarError):
        tarconv.clean_member_name("../x")
