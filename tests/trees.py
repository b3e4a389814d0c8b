"""Test trees: a directory with every entry type and the metadata pycatar must carry."""

from __future__ import annotations

import os
import random
import socket
import subprocess

from pycatar import fsmeta

MTIME_BASE = 1_600_000_000_123_456_789  # ns; trees get fixed, distinct mtimes

ODD_NAMES = ["with space", "tab\there", "back\\slash", "ünïcödé ☃", "#hash", "new\nline", "-dash", ".hidden"]


def _acl_xattr(entries):
    return fsmeta.build_acl_xattr(entries)


def make_full_tree(root: str, *, large_size: int = 3 << 20, seed: int = 1) -> str:
    """Builds, as root, a tree with every entry type, odd names, xattrs, ACLs, fcaps, owners,
    sparse and large files.  Returns ``root``."""
    rnd = random.Random(seed)
    os.makedirs(root)
    p = lambda *a: os.path.join(root, *a)

    os.makedirs(p("dir", "sub", "deeper"))
    os.makedirs(p("empty-dir"))
    with open(p("file.txt"), "w") as f:
        f.write("hello world\n" * 100)
    open(p("empty"), "w").close()
    with open(p("dir", "sub", "deeper", "random.bin"), "wb") as f:
        f.write(rnd.randbytes(large_size))
    with open(p("dir", "zeros.bin"), "wb") as f:
        f.write(bytes(200_000))
    with open(p("sparse.img"), "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(b"data in the middle")
        f.seek((8 << 20) - 5)
        f.write(b"tail!")
    for i, name in enumerate(ODD_NAMES):
        with open(p("dir", name), "w") as f:
            f.write(f"odd {i}\n")
    os.symlink("file.txt", p("link"))
    os.symlink("does/not/exist", p("dangling"))
    os.symlink("../file.txt", p("dir", "uplink"))
    os.mknod(p("dir", "blockdev"), 0o660 | 0o060000, os.makedev(8, 1))
    os.mknod(p("dir", "chardev"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(p("fifo"), 0o644)
    s = socket.socket(socket.AF_UNIX)
    s.bind(p("dir", "socket"))
    s.close()

    # modes and owners
    os.chmod(p("file.txt"), 0o640)
    os.chmod(p("dir", "sub"), 0o750)
    with open(p("setuid"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(p("setuid"), 0o4755)
    os.makedirs(p("sticky"))
    os.chmod(p("sticky"), 0o1777)
    os.chown(p("dir", "sub"), 1000, 1000)
    os.chown(p("empty"), 12345, 54321)  # ids without names
    os.lchown(p("link"), 1, 1)  # daemon
    os.chown(p("fifo"), 0, 2)

    # xattrs, ACLs, file capabilities
    os.setxattr(p("file.txt"), "user.comment", b"a comment")
    os.setxattr(p("file.txt"), "user.empty", b"")
    os.setxattr(p("file.txt"), "trusted.secret", b"\x00\x01binary\xff")
    os.setxattr(p("dir"), "user.dirattr", b"on a directory")
    A = fsmeta
    os.setxattr(p("dir", "sub", "deeper", "random.bin"), A.ACL_XATTR_ACCESS, _acl_xattr([
        (A.ACL_USER_OBJ, 6, 0), (A.ACL_USER, 4, 1000), (A.ACL_USER, 6, 12345), (A.ACL_GROUP_OBJ, 4, 0),
        (A.ACL_GROUP, 5, 1000), (A.ACL_MASK, 7, 0), (A.ACL_OTHER, 0, 0)]))
    os.setxattr(p("dir", "sub"), A.ACL_XATTR_DEFAULT, _acl_xattr([
        (A.ACL_USER_OBJ, 7, 0), (A.ACL_USER, 5, 1000), (A.ACL_GROUP_OBJ, 5, 0), (A.ACL_MASK, 5, 0),
        (A.ACL_OTHER, 1, 0)]))
    subprocess.run(["setcap", "cap_net_raw+ep", p("setuid")], check=True)
    os.chmod(p("setuid"), 0o4755)  # setcap clears nothing, but be explicit

    # chattr flags (ext4): noatime is stored; nodump files are excluded by default
    with open(p("nodump-file"), "w") as f:
        f.write("not archived by default\n")
    subprocess.run(["chattr", "+d", p("nodump-file")], check=True)
    subprocess.run(["chattr", "+A", p("file.txt")], check=True)

    # .caexclude
    os.makedirs(p("excl", "keep"))
    os.makedirs(p("excl", "build"))
    for name in ("a.o", "b.c", "keep/c.o", "build/x"):
        with open(p("excl", name), "w") as f:
            f.write(name)
    with open(p("excl", ".caexclude"), "w") as f:
        f.write("# comment\n*.o\n!keep/c.o\nbuild/\n")

    # distinct nanosecond mtimes, deepest first so directory times stick
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            paths.append(os.path.join(dirpath, n))
    paths.sort(key=lambda x: -x.count(os.sep))
    for i, path in enumerate(paths + [root]):
        t = MTIME_BASE + i * 1_000_777_333
        os.utime(path, ns=(t, t), follow_symlinks=False)
    return root


def remove_tree(root: str) -> None:
    """rm -rf that first clears chattr flags that would block it."""
    if os.path.exists(root):
        subprocess.run(["chattr", "-R", "-i", "-a", root], capture_output=True)
        subprocess.run(["rm", "-rf", root], check=True)
