"""Test vectors: check any casync-compatible implementation against vectors/ (issue #5).

``pycatar vectors verify --impl NAME [--vectors DIR]`` loads every vector below ``DIR``
(``vectors/<kind>/<name>/vector.json`` plus the files it names, all listed with their SHA-256 in
``vectors/MANIFEST.json``), materialises its input (a directory tree, a byte stream, a malformed
archive or index, a chunk store), drives the implementation through an *adapter* and compares
what comes out with the expected outputs.  It prints one line per failed vector and a closing line
``N passed, N failed, N skipped``, and exits 0 only when nothing failed.

Adapters: ``pycatar`` (this package, called in-process through its command-line entry point),
``pycatar-cli`` (the same as a child process), ``casync`` (the installed casync binary; ``casync:PATH``
for another one) and ``cmd:CONFIG.json`` (any implementation, described by command templates; see
vectors/README.md).  A vector needing something an adapter lacks (a feature such as ``blake3``, an
operation its configuration has no command for) is skipped and counted, never passed.

The vector format is described in vectors/README.md; the generator is :mod:`pycatar.vectors.generate`.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import stat as st
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from .. import fsmeta
from ..compression import decompress
from ..errors import PycatarError, UsageError

# --------------------------------------------------------------------------- constants

MANIFEST = "MANIFEST.json"
VECTOR_FILE = "vector.json"
#: entries of a vectors directory that are not generated (and not in the manifest)
UNMANAGED = ("README.md", "adapters")
KINDS = ("tree", "extract", "caidx", "chunk", "decode", "store", "reject")
#: what :attr:`Adapter.reason` may be
REASONS = ("message", "errno", None)
#: features every adapter is assumed to have unless its configuration says otherwise
BASE_FEATURES = frozenset({"sha512-256", "sha256", "zstd", "xz", "gzip"})
#: what vectors may require (besides operations); see vectors/README.md
KNOWN_FEATURES = frozenset(BASE_FEATURES | {
    "blake3",  # the BLAKE3 chunk-id extension (FLAGS-9, INDEX-5)
    "casync-options",  # accepts casync's --with=/--without=/--exclude-*= options
    "reads-casync-quirks",  # CATAR-24: reads archives casync 2 writes but rejects
    "rejects-unsorted-names",  # CATAR-36
    "rejects-trailing-data",  # CATAR-44
    "rejects-truncation",  # CATAR-50: ends (and fails) on truncated archives
    "checks-fcaps-flag",  # CATAR-26
    "checks-projid-flag",  # CATAR-27
    "checks-goodbye-items",  # CATAR-43: verifies every goodbye item while iterating
    "checks-name-length",  # CATAR-3: enforces the FILENAME size limit when reading
    "prints-digest",  # make prints the stream digest (DIGEST-2, STORE-12) as casync does
    "extracts-long-names",  # EXTRACT-15: temporary names of 255-byte names are shortened
})
PRNG_PREFIX = b"pycatar-vectors:"
DEFAULT_TIMEOUT = 120


class Skip(Exception):
    """The vector does not apply (to this adapter or this machine); counted as skipped.  ``lacks``:
    the features of the vector's ``requires`` the adapter does not have, if that is why."""

    def __init__(self, message: str, lacks: tuple[str, ...] = ()):
        super().__init__(message)
        self.lacks = tuple(lacks)


class Failure(Exception):
    """The implementation's output differs from the vector's expectation."""


def canonical_json(obj) -> bytes:
    """The one byte form of a JSON document in vectors/: sorted keys, ASCII, one member or element
    per line (indented by one space a level), except that arrays of scalars and objects of at most
    three scalars are written on one line."""

    def flat(v) -> bool:
        scalar = lambda x: not isinstance(x, (dict, list))  # noqa: E731
        if isinstance(v, list):
            return all(scalar(x) for x in v)
        if isinstance(v, dict):
            return len(v) <= 3 and all(scalar(x) for x in v.values())
        return True

    def dump(v, ind: str) -> str:
        if flat(v):
            return json.dumps(v, ensure_ascii=True, separators=(", ", ": "), sort_keys=True)
        inner = ind + " "
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = [f"{inner}{json.dumps(str(k), ensure_ascii=True)}: {dump(v[k], inner)}" for k in sorted(v)]
            return "{\n" + ",\n".join(items) + "\n" + ind + "}"
        return "[\n" + ",\n".join(inner + dump(x, inner) for x in v) + "\n" + ind + "]"

    return (dump(obj, "") + "\n").encode()


# --------------------------------------------------------------------------- byte specs


def prng_bytes(seed: int, size: int) -> bytes:
    """The vectors' pseudo-random bytes: the first ``size`` bytes of SHAKE256 of the ASCII text
    ``pycatar-vectors:<seed>`` (decimal)."""
    if size == 0:
        return b""
    return hashlib.shake_256(PRNG_PREFIX + str(int(seed)).encode()).digest(size)


def make_bytes(spec) -> bytes:
    """Bytes from a value spec: ``{"text": str}`` (UTF-8), ``{"hex": str}``, ``{"zeros": n}`` or
    ``{"prng": {"seed", "size", "zero_runs": [[offset, length]...], "copies": [[src, dst, length]...]}}``
    (zero runs, then copies, applied in order)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"bad byte spec {spec!r}")
    (kind, value), = spec.items()
    if kind == "text":
        return value.encode("utf-8")
    if kind == "hex":
        return bytes.fromhex(value)
    if kind == "zeros":
        return bytes(int(value))
    if kind == "prng":
        size = int(value["size"])
        data = bytearray(prng_bytes(value["seed"], size))
        for off, length in value.get("zero_runs", ()):
            if off < 0 or length < 0 or off + length > size:
                raise ValueError("zero run outside the data")
            data[off:off + length] = bytes(length)
        for src, dst, length in value.get("copies", ()):
            if min(src, dst, length) < 0 or max(src, dst) + length > size:
                raise ValueError("copy outside the data")
            data[dst:dst + length] = data[src:src + length]
        return bytes(data)
    raise ValueError(f"bad byte spec kind {kind!r}")


# --------------------------------------------------------------------------- trees

FS_FLAGS = {  # chattr letters -> FS_IOC_GETFLAGS bits
    "a": 0x20, "A": 0x80, "c": 0x4, "C": 0x800000, "d": 0x40, "D": 0x10000, "i": 0x10,
    "m": 0x400, "P": 0x20000000, "S": 0x8,
}
_LATE_FLAGS = FS_FLAGS["a"] | FS_FLAGS["i"]
ACL_TAGS = {"user_obj": 0x01, "user": 0x02, "group_obj": 0x04, "group": 0x08, "mask": 0x10, "other": 0x20}
TYPES = {
    "dir": st.S_IFDIR, "file": st.S_IFREG, "symlink": st.S_IFLNK, "fifo": st.S_IFIFO,
    "socket": st.S_IFSOCK, "block": st.S_IFBLK, "char": st.S_IFCHR,
}


def _check_path(path: str) -> list[str]:
    if path == "":
        return []
    parts = path.split("/")
    for p in parts:
        if p in ("", ".", "..") or "\0" in p:
            raise ValueError(f"bad path in tree description: {path!r}")
    return parts


def acl_xattr(entries) -> bytes:
    """The kernel's ``system.posix_acl_*`` value of ``[[tag, id or null, permissions]...]``."""
    return fsmeta.build_acl_xattr([(ACL_TAGS[tag], perm, 0 if ident is None else ident)
                                   for tag, ident, perm in entries])


def _ioctl_flags(fd: int, value: int | None = None) -> int:
    buf = bytearray(8)
    if value is None:
        fcntl.ioctl(fd, 0x80086601, buf)  # FS_IOC_GETFLAGS
        return struct.unpack_from("=I", buf)[0]
    struct.pack_into("=I", buf, 0, value)
    fcntl.ioctl(fd, 0x40086602, buf)  # FS_IOC_SETFLAGS
    return value


def _set_chattr(path: str, letters: int, what: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        old = _ioctl_flags(fd)
        try:
            _ioctl_flags(fd, old | letters)
        except OSError as e:
            raise Skip(f"the file system cannot set chattr flags {what} ({e.strerror})") from None
        if _ioctl_flags(fd) & letters != letters:
            raise Skip(f"the file system does not keep chattr flags {what}")
    finally:
        os.close(fd)


def clear_chattr(root: str) -> None:
    """Clears immutable and append-only flags below ``root`` so that it can be removed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            p = dirpath if name is None else os.path.join(dirpath, name)
            if name is not None and os.path.islink(p):
                continue
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                flags = _ioctl_flags(fd)
                if flags & _LATE_FLAGS:
                    _ioctl_flags(fd, flags & ~_LATE_FLAGS)
            except OSError:
                pass
            finally:
                os.close(fd)


def remove_tree(path: str) -> None:
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            clear_chattr(path)
            shutil.rmtree(path)
        else:
            os.unlink(path)


def check_environment(env: dict) -> None:
    """The user and group names a vector's expected output depends on must be this machine's."""
    for table, lookup in (("users", lambda i: pwd.getpwuid(i).pw_name),
                          ("groups", lambda i: grp.getgrgid(i).gr_name)):
        for ident, want in sorted(env.get(table, {}).items()):
            try:
                have = lookup(int(ident))
            except KeyError:
                have = None
            if have != want:
                raise Skip(f"needs {table[:-1]} id {ident} to be named {want!r} here (it is {have!r})")


def materialise_tree(desc: dict, dest: str) -> str:
    """Creates the tree a vector describes at ``dest`` (which must not exist).  Needs root.

    ``desc["entries"]``: one object per node, the root first with path ""; keys: path, type (dir,
    file, symlink, fifo, socket, block, char), mode (octal string, permission bits), uid, gid,
    mtime (ns), content (byte spec, files), target (symlinks), rdev ([major, minor]), xattrs
    ({name: byte spec}), acl ({"access"|"default": [[tag, id, perms]...]}), chattr (letters).
    Raises Skip when this machine cannot hold what the description asks for."""
    if os.geteuid() != 0:
        raise Skip("materialising a tree needs root (owners, device nodes)")
    entries = desc["entries"]
    if not entries or entries[0]["path"] != "" or entries[0]["type"] != "dir":
        raise ValueError("a tree description starts with the root directory")
    for e in entries:
        _check_path(e["path"])
        if e["type"] not in TYPES:
            raise ValueError(f"bad entry type {e['type']!r}")
    os.mkdir(dest, 0o700)
    full = lambda e: os.path.join(dest, *_check_path(e["path"]))  # noqa: E731
    # 1. create every node, parents first
    for e in entries[1:]:
        p, t = full(e), e["type"]
        if t == "dir":
            os.mkdir(p, 0o700)
        elif t == "file":
            with open(p, "xb") as f:
                f.write(make_bytes(e.get("content", {"text": ""})))
        elif t == "symlink":
            os.symlink(e["target"], p)
        elif t == "fifo":
            os.mkfifo(p, 0o600)
        else:
            rdev = os.makedev(*e.get("rdev", (0, 0)))
            os.mknod(p, TYPES[t] | 0o600, rdev)
    # 2. metadata, deepest first (a directory's time after its children are complete)
    for e in sorted(entries, key=lambda e: -len(_check_path(e["path"]))):
        p, t = full(e), e["type"]
        os.chown(p, e.get("uid", 0), e.get("gid", 0), follow_symlinks=False)
        if t != "symlink":
            for kind, xname in (("access", "system.posix_acl_access"), ("default", "system.posix_acl_default")):
                if kind in e.get("acl", {}):
                    try:
                        os.setxattr(p, xname, acl_xattr(e["acl"][kind]))
                    except OSError as err:
                        raise Skip(f"the file system cannot store ACLs ({err.strerror})") from None
            os.chmod(p, int(e.get("mode", "0755" if t == "dir" else "0644"), 8))
        for name, value in sorted(e.get("xattrs", {}).items()):
            try:
                os.setxattr(p, name, make_bytes(value), follow_symlinks=False)
            except OSError as err:
                raise Skip(f"the file system cannot store xattr {name} ({err.strerror})") from None
        letters = e.get("chattr", "")
        early = sum(FS_FLAGS[c] for c in letters) & ~_LATE_FLAGS
        late = sum(FS_FLAGS[c] for c in letters) & _LATE_FLAGS
        if early:
            _set_chattr(p, early, letters)
        mtime = int(e.get("mtime", 0))
        os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
        if late:
            _set_chattr(p, late, letters)
    # 3. check that the file system kept what was asked for
    for e in entries:
        p = full(e)
        s = os.lstat(p)
        t = e["type"]
        if st.S_IFMT(s.st_mode) != TYPES[t]:
            raise Skip(f"{e['path']!r}: the file system made another file type")
        want_mode = int(e.get("mode", "0755" if t == "dir" else "0644"), 8)
        if t != "symlink" and st.S_IMODE(s.st_mode) != want_mode:
            raise Skip(f"{e['path']!r}: mode {st.S_IMODE(s.st_mode):o} instead of {want_mode:o}")
        if (s.st_uid, s.st_gid) != (e.get("uid", 0), e.get("gid", 0)):
            raise Skip(f"{e['path']!r}: the file system did not keep the owner")
        if s.st_mtime_ns != int(e.get("mtime", 0)):
            raise Skip(f"{e['path']!r}: the file system did not keep the nanosecond mtime")
        for name, value in e.get("xattrs", {}).items():
            if os.getxattr(p, name, follow_symlinks=False) != make_bytes(value):
                raise Skip(f"{e['path']!r}: the file system changed xattr {name}")
        for kind, value in e.get("acl", {}).items():
            if os.getxattr(p, f"system.posix_acl_{kind}") != acl_xattr(value):
                raise Skip(f"{e['path']!r}: the file system changed the {kind} ACL (does the mode match its mask?)")
    return dest


# --------------------------------------------------------------------------- indexes and stores

INDEX_HEAD = struct.Struct("<QQQQQQQQ")  # INDEX record (6 u64) + TABLE header (2 u64)
INDEX_ITEM = struct.Struct("<Q32s")
INDEX_TAIL = struct.Struct("<QQQQQ")
INDEX_TYPE, TABLE_TYPE, TABLE_MARKER = 0x96824D9C7B129FF9, 0xE75B9E112F17417D, 0x4B4F050E5549ECD1


def parse_index(data: bytes) -> tuple[int, tuple[int, int, int], list[tuple[int, str]]]:
    """(feature flags, (min, avg, max), [(end offset, chunk id hex)...]) of an index file.  A
    deliberately small reader of its own: it checks the framing and nothing else."""
    if len(data) < INDEX_HEAD.size + INDEX_TAIL.size or (len(data) - 104) % 40:
        raise Failure(f"index file has an impossible size ({len(data)} bytes)")
    size, rtype, flags, mn, avg, mx, tsize, ttype = INDEX_HEAD.unpack_from(data)
    if (size, rtype, tsize, ttype) != (48, INDEX_TYPE, 0xFFFFFFFFFFFFFFFF, TABLE_TYPE):
        raise Failure("index file does not start with an INDEX record and TABLE header")
    n = (len(data) - 104) // 40
    chunks = [(end, cid.hex()) for end, cid in INDEX_ITEM.iter_unpack(data[64:64 + 40 * n])]
    tail = INDEX_TAIL.unpack_from(data, 64 + 40 * n)
    if tail != (0, 0, 48, 16 + 40 * n + 40, TABLE_MARKER):
        raise Failure("index file has a bad table tail")
    return flags, (mn, avg, mx), chunks


DIGESTS = ("sha512-256", "sha256", "blake3")
COMPRESSION_MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00", "gzip": b"\x1f\x8b"}


def chunk_digest(name: str, data: bytes) -> bytes:
    if name == "blake3":
        return blake3.blake3(data).digest()
    return hashlib.new("sha512_256" if name == "sha512-256" else "sha256", data).digest()


def check_store(store: str, stream: bytes, chunks: list[tuple[int, str]], digest: str, compression: str) -> None:
    """STORE-2/3/6/8: every chunk of the index is in the store, compressed as asked, and decompresses
    to the stream's bytes, whose digest is its id."""
    start = 0
    for end, cid in chunks:
        path = os.path.join(store, cid[:4], cid + ".cacnk")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            raise Failure(f"chunk {cid} is not in the store at {cid[:4]}/{cid}.cacnk") from None
        if not raw.startswith(COMPRESSION_MAGIC[compression]):
            raise Failure(f"chunk {cid} is not {compression}-compressed")
        try:
            data = decompress(raw, end - start)
        except PycatarError as e:
            raise Failure(f"chunk {cid}: {e}") from None
        if data != stream[start:end]:
            raise Failure(f"chunk {cid} does not hold bytes {start}..{end} of the stream")
        if chunk_digest(digest, data).hex() != cid:
            raise Failure(f"chunk {cid}: its id is not the {digest} digest of its data")
        start = end


# --------------------------------------------------------------------------- adapters


@dataclass
class Run:
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""
    crashed: bool = False  # an uncaught exception (a traceback) rather than an error message
    timed_out: bool = False

    def text(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    def why(self) -> str:
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self.rc}"


@dataclass
class IndexParams:
    chunk_size: tuple[int, int, int] | None = None
    digest: str | None = None  # None: the implementation's default (sha512-256)
    compression: str | None = None  # None: zstd


class Adapter:
    """Drives one implementation.  Every method returns a :class:`Run`, or raises Skip when the
    implementation cannot do what is asked.  Paths are absolute."""

    name = "?"
    features: frozenset = BASE_FEATURES
    #: whether rejections must also be one line of error and write nothing outside the target
    #: (a traceback fails a run with any adapter)
    strict: bool = False
    #: how the implementation says why it refuses a malformed input (REJECT vectors check it): "message"
    #: (a line matching the vector's ``expect.error``), "errno" (the text of the vector's
    #: ``expect.errno``, as casync prints it), or None (not checked: only the failure is)
    reason: str | None = None

    def make_catar(self, tree: str, out: str, options: list[str]) -> Run:
        raise Skip(f"{self.name} cannot make archives")

    def make_archive_index(self, tree: str, out: str, store: str, options: list[str], p: IndexParams) -> Run:
        raise Skip(f"{self.name} cannot make archive indexes")

    def make_blob_index(self, blob: str, out: str, store: str, options: list[str], p: IndexParams) -> Run:
        raise Skip(f"{self.name} cannot make blob indexes")

    def show(self, verb: str, path: str, *, subpath: str | None = None, options: list[str] = (),
             store: str | None = None) -> Run:
        """``list``, ``mtree`` or ``digest`` of a .catar or .caidx (digest also of a .caibx)."""
        raise Skip(f"{self.name} cannot {verb}")

    def extract(self, path: str, target: str, *, store: str | None = None) -> Run:
        """Extract a .catar/.caidx into the directory ``target`` or a .caibx into the file ``target``."""
        raise Skip(f"{self.name} cannot extract")


class CasyncLike(Adapter):
    """An implementation with casync's command line (casync itself, pycatar)."""

    features = frozenset(KNOWN_FEATURES)

    def run(self, argv: list[str], cwd: str | None = None) -> Run:
        raise NotImplementedError

    @staticmethod
    def index_options(p: IndexParams) -> list[str]:
        out = []
        if p.chunk_size:
            out.append("--chunk-size={}:{}:{}".format(*p.chunk_size))
        if p.digest:
            out.append(f"--digest={p.digest}")
        if p.compression:
            out.append(f"--compression={p.compression}")
        return out

    def make_catar(self, tree, out, options):
        return self.run([*options, "make", out, tree])

    def make_archive_index(self, tree, out, store, options, p):
        return self.run([*options, *self.index_options(p), f"--store={store}", "make", out, tree])

    def make_blob_index(self, blob, out, store, options, p):
        return self.run([*options, *self.index_options(p), f"--store={store}", "make", out, blob])

    def show(self, verb, path, *, subpath=None, options=(), store=None):
        argv = [*options]
        if store:
            argv.append(f"--store={store}")
        argv += [verb, path]
        if subpath:
            argv.append(subpath)
        return self.run(argv)

    def extract(self, path, target, *, store=None):
        argv = [f"--store={store}"] if store else []
        return self.run([*argv, "extract", path, target])


def _child_env() -> dict:
    env = dict(os.environ)
    env.update(TZ="UTC", LC_ALL="C.UTF-8")
    for k in ("CASYNC_STORE", "CASYNC_VERBOSE"):
        env.pop(k, None)
    return env


def _subprocess(argv: list[str], timeout: int, cwd: str | None = None) -> Run:
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env=_child_env(), cwd=cwd,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Run(-1, b"", f"did not end within {timeout} s".encode(), timed_out=True)
    except OSError as e:
        raise UsageError(f"cannot run {argv[0]}: {e.strerror}") from None
    return Run(p.returncode, p.stdout, p.stderr, crashed=b"Traceback (most recent call last)" in p.stderr)


class CasyncAdapter(CasyncLike):
    """casync 2 (the ``casync`` binary on $PATH, or ``casync:PATH``)."""

    name = "casync"
    reason = "errno"
    # casync 2+20201210 lacks these (spec/catar.md says where it deviates)
    features = frozenset(KNOWN_FEATURES - {
        "blake3", "reads-casync-quirks", "rejects-unsorted-names", "rejects-trailing-data",
        "rejects-truncation", "checks-fcaps-flag", "checks-projid-flag", "checks-goodbye-items",
        "checks-name-length", "extracts-long-names"})

    def __init__(self, binary: str | None = None, timeout: int = 20):
        self.binary = binary or shutil.which("casync")
        if not self.binary:
            raise UsageError("casync is not installed (apt-get install casync), or name it: --impl casync:PATH")
        self.timeout = timeout

    def run(self, argv, cwd=None):
        return _subprocess([self.binary, *argv], self.timeout, cwd)


class PycatarCLIAdapter(CasyncLike):
    """pycatar as a child process (``python -m pycatar``)."""

    name = "pycatar-cli"
    strict = True
    reason = "message"

    def __init__(self, timeout: int = DEFAULT_TIMEOUT):
        self.timeout = timeout

    def run(self, argv, cwd=None):
        return _subprocess([sys.executable, "-m", "pycatar", *argv], self.timeout, cwd)


class PycatarAdapter(CasyncLike):
    """pycatar in this process, through its command-line entry point ``entry`` (the command passes
    :func:`pycatar.cli.main`), so that each call costs no interpreter start-up.  An exception that
    escapes the entry point would have been a traceback: it counts as a crash."""

    name = "pycatar"
    strict = True
    reason = "message"

    def __init__(self, entry):
        super().__init__()
        self.entry = entry

    def run(self, argv, cwd=None):
        out, err = io.BytesIO(), io.BytesIO()
        tout = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape", write_through=True)
        terr = io.TextIOWrapper(err, encoding="utf-8", errors="replace", write_through=True)
        old = sys.stdout, sys.stderr, sys.stdin, os.environ.get("TZ")
        rc, crashed = 0, False
        sys.stdout, sys.stderr, sys.stdin = tout, terr, io.TextIOWrapper(io.BytesIO())
        os.environ["TZ"] = "UTC"
        try:
            self.entry(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # noqa: BLE001 - anything else is what a traceback would show
            import traceback

            rc, crashed = 1, True
            terr.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
        finally:
            tout.flush()
            terr.flush()
            sys.stdout, sys.stderr, sys.stdin = old[0], old[1], old[2]
            if old[3] is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old[3]
        return Run(rc, out.getvalue(), err.getvalue(), crashed)


class CommandAdapter(Adapter):
    """Any implementation, described by a JSON file of command templates (vectors/README.md).

    ``{"name": ..., "features": [...], "timeout": s, "commands": {"make_catar": [argv...], ...}}``:
    a command is a list of strings with placeholders ``{tree} {out} {blob} {store} {archive} {index}
    {target} {subpath} {digest} {compression} {chunk_min} {chunk_avg} {chunk_max} {chunk_min_kib}
    {chunk_avg_kib} {chunk_max_kib}``; an element that is exactly ``{@options}`` expands to the
    vector's casync options (then ``casync-options`` is assumed), ``{@subpath}`` to the sub-path if
    there is one.  Missing commands and placeholders a vector cannot fill make it skip."""

    COMMANDS = ("make_catar", "make_archive_index", "make_blob_index", "list", "mtree", "digest",
                "extract_archive", "extract_archive_index", "extract_blob")

    def __init__(self, path: str):
        try:
            with open(path, "rb") as f:
                conf = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read adapter configuration {path}: {e}") from None
        if not isinstance(conf, dict) or not isinstance(conf.get("commands"), dict):
            raise UsageError(f"{path}: an adapter configuration needs a \"commands\" object")
        self.name = str(conf.get("name", os.path.basename(path)))
        self.commands = conf["commands"]
        for key, argv in self.commands.items():
            if key not in self.COMMANDS or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise UsageError(f"{path}: bad command {key!r} (known: {', '.join(self.COMMANDS)})")
        feats = set(conf.get("features", sorted(BASE_FEATURES)))
        unknown = feats - KNOWN_FEATURES
        if unknown:
            raise UsageError(f"{path}: unknown features {', '.join(sorted(unknown))}")
        if any("{@options}" in argv for argv in self.commands.values()):
            feats.add("casync-options")
        self.features = frozenset(feats)
        self.timeout = int(conf.get("timeout", DEFAULT_TIMEOUT))
        self.strict = bool(conf.get("strict", False))
        self.reason = conf.get("reason")
        if self.reason not in REASONS:
            raise UsageError(f"{path}: \"reason\" must be \"message\", \"errno\" or null, not {self.reason!r}")

    def _argv(self, key: str, values: dict, options=(), subpath=None) -> list[str]:
        if key not in self.commands:
            raise Skip(f"{self.name} has no {key!r} command")
        argv = []
        for a in self.commands[key]:
            if a == "{@options}":
                argv += list(options)
                continue
            if a == "{@subpath}":
                argv += [subpath] if subpath else []
                continue
            try:
                argv.append(a.format_map(values))
            except KeyError as e:
                raise Skip(f"{self.name}: {key} cannot be given {e.args[0]} here") from None
        if options and "{@options}" not in self.commands[key]:
            raise Skip(f"{self.name}: {key} takes no casync options")
        if subpath and "{@subpath}" not in self.commands[key]:
            raise Skip(f"{self.name}: {key} takes no sub-path")
        return argv

    @staticmethod
    def _index_values(p: IndexParams) -> dict:
        vals = {"digest": p.digest or "sha512-256", "compression": p.compression or "zstd"}
        if p.chunk_size:
            for name, v in zip(("min", "avg", "max"), p.chunk_size):
                vals[f"chunk_{name}"] = str(v)
                if v % 1024 == 0:
                    vals[f"chunk_{name}_kib"] = str(v // 1024)
        else:
            vals.update(chunk_min="16384", chunk_avg="65536", chunk_max="262144", chunk_min_kib="16",
                        chunk_avg_kib="64", chunk_max_kib="256")
        return vals

    def _run(self, argv):
        return _subprocess(argv, self.timeout)

    def make_catar(self, tree, out, options):
        return self._run(self._argv("make_catar", {"tree": tree, "out": out}, options))

    def make_archive_index(self, tree, out, store, options, p):
        return self._run(self._argv("make_archive_index", {"tree": tree, "out": out, "store": store,
                                                           **self._index_values(p)}, options))

    def make_blob_index(self, blob, out, store, options, p):
        return self._run(self._argv("make_blob_index", {"blob": blob, "out": out, "store": store,
                                                        **self._index_values(p)}, options))

    def show(self, verb, path, *, subpath=None, options=(), store=None):
        vals = {"archive": path, "index": path, "store": store or os.path.join(os.path.dirname(path), "default.castr")}
        return self._run(self._argv(verb, vals, options, subpath))

    def extract(self, path, target, *, store=None):
        key = "extract_blob" if path.endswith(".caibx") else "extract_archive"
        if path.endswith(".caidx") and "extract_archive_index" in self.commands:
            key = "extract_archive_index"
        vals = {"archive": path, "index": path, "target": target,
                "store": store or os.path.join(os.path.dirname(path), "default.castr")}
        return self._run(self._argv(key, vals))


def make_adapter(spec: str, timeout: int | None = None, entry=None) -> Adapter:
    """``pycatar`` (in this process, through the command's entry point ``entry``), ``pycatar-cli``,
    ``casync``, ``casync:PATH`` or ``cmd:CONFIG.json``."""
    if spec == "pycatar" and entry is not None:
        return PycatarAdapter(entry)
    if spec == "pycatar-cli":
        return PycatarCLIAdapter(timeout or DEFAULT_TIMEOUT)
    if spec == "casync" or spec.startswith("casync:"):
        return CasyncAdapter(spec[7:] or None if ":" in spec else None, timeout or 20)
    if spec.startswith("cmd:"):
        a = CommandAdapter(spec[4:])
        if timeout:
            a.timeout = timeout
        return a
    raise UsageError(f"unknown implementation {spec!r} (pycatar, pycatar-cli, casync[:PATH], cmd:CONFIG.json)")


# --------------------------------------------------------------------------- vectors


@dataclass
class Vector:
    id: str  # "<kind>/<name>"
    dir: Path
    data: dict
    problems: list[str] = field(default_factory=list)  # manifest mismatches

    @property
    def kind(self) -> str:
        return self.data["kind"]

    def file(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_vectors(root: Path, select=None) -> tuple[list[Vector], list[str]]:
    """The vectors below ``root`` (those whose id ``select`` accepts, if given), and the problems
    found with the manifest: files whose bytes do not match, files missing or not listed.  Problems
    inside a vector's directory are attached to that vector (and only looked for in the vectors
    selected), the others are returned."""
    mpath = root / MANIFEST
    try:
        raw = mpath.read_bytes()
        manifest = json.loads(raw)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{mpath}: no readable vector manifest (is {root} a vectors directory?)") from None
    global_problems = []
    if canonical_json(manifest) != raw:
        global_problems.append(f"{MANIFEST} is not in its canonical form")
    ids = sorted(f"{k}/{n}" for k in os.listdir(root) if os.path.isdir(root / k)
                 for n in os.listdir(root / k) if os.path.isfile(root / k / n / VECTOR_FILE))
    chosen = {vid for vid in ids if select is None or select(vid)}
    skip = set(ids) - chosen
    present = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = sorted(d for d in dirnames if (rel + d) not in skip and (rel or d not in UNMANAGED))
        present |= {rel + f for f in filenames if (rel or f not in UNMANAGED) and rel + f != MANIFEST}
        present |= {rel + d for d in dirnames if os.path.islink(os.path.join(dirpath, d))}
    problems: dict[str, list[str]] = {}

    def owner(rel: str) -> str:
        parts = rel.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 and parts[0] in KINDS else ""

    for rel in sorted(set(files) | present):
        key = owner(rel)
        if key in ids and key not in chosen:
            continue
        if rel not in files:
            msg = f"{rel} is not listed in {MANIFEST}"
        elif rel not in present:
            msg = f"{rel} is listed in {MANIFEST} but missing"
        elif (root / rel).is_symlink() or _sha256_file(root / rel) != files[rel]:
            msg = f"{rel} does not match its checksum in {MANIFEST}"
        else:
            continue
        problems.setdefault(key if key in chosen else "", []).append(msg)
    vectors = []
    for vid in ids:
        if vid not in chosen:
            continue
        try:
            data = json.loads((root / vid / VECTOR_FILE).read_bytes())
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as e:
            data = {}
            problems.setdefault(vid, []).append(f"unreadable {VECTOR_FILE}: {e}")
        v = Vector(vid, root / vid, data, problems.pop(vid, []))
        if data and (data.get("id") != vid or data.get("kind") not in KINDS or vid.split("/")[0] != data.get("kind")):
            v.problems.append(f"{VECTOR_FILE} names id {data.get('id')!r}, kind {data.get('kind')!r}")
        vectors.append(v)
    for _key, msgs in sorted(problems.items()):
        global_problems += msgs
    return vectors, global_problems


# --------------------------------------------------------------------------- checks


def _first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def expect_bytes(what: str, got: bytes, want: bytes) -> None:
    if got != want:
        raise Failure(f"{what} differs from the expected bytes at offset {_first_difference(got, want)} "
                      f"(got {len(got)} bytes, expected {len(want)})")


def expect_text(what: str, got: bytes, want: bytes) -> None:
    if got != want:
        gl, wl = got.split(b"\n"), want.split(b"\n")
        i = next((k for k in range(min(len(gl), len(wl))) if gl[k] != wl[k]), min(len(gl), len(wl)))
        show = lambda lines: (lines[i] if i < len(lines) else b"<end>").decode("utf-8", "replace")[:100]  # noqa: E731
        raise Failure(f"{what} differs at line {i + 1}: got {show(gl)!r}, expected {show(wl)!r}")


def expect_ok(what: str, r: Run) -> Run:
    if r.crashed:
        raise Failure(f"{what} crashed: {r.why()}")
    if r.rc != 0:
        raise Failure(f"{what} failed: {r.why()}")
    return r


class Context:
    """What a vector run needs: the adapter, a scratch directory, options."""

    def __init__(self, adapter: Adapter, work: str):
        self.adapter = adapter
        self.work = work

    def path(self, *names: str) -> str:
        return os.path.join(self.work, *names)

    def require(self, v: Vector) -> None:
        missing = [f for f in v.data.get("requires", []) if f not in self.adapter.features]
        if missing:
            raise Skip(f"{self.adapter.name} lacks {', '.join(missing)}", lacks=tuple(missing))
        if v.data.get("options") and "casync-options" not in self.adapter.features:
            raise Skip(f"{self.adapter.name} takes no casync options")

    def copy_in(self, v: Vector, name: str, as_name: str | None = None) -> str:
        dst = self.path(as_name or name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(v.dir / name, dst)
        return dst

    def copy_store(self, v: Vector) -> str:
        store = self.path("store")
        src = v.dir / "store"
        if src.is_dir():
            shutil.copytree(src, store)
        else:
            os.makedirs(store)
        return store


def _index_params(d: dict) -> IndexParams:
    cs = d.get("chunk_size")
    return IndexParams(tuple(cs) if cs else None, d.get("digest"), d.get("compression"))


def _check_outputs(ctx: Context, v: Vector, path: str, store: str | None = None) -> None:
    """Each expected list/mtree/digest text of the archive (or index) at ``path``."""
    for out in v.data["expect"].get("outputs", []):
        if out.get("requires") and any(f not in ctx.adapter.features for f in out["requires"]):
            continue
        what = f"{out['verb']} {out.get('path') or ''}".strip()
        r = ctx.adapter.show(out["verb"], path, subpath=out.get("path"), options=out.get("options", []),
                             store=store)
        expect_ok(what, r)
        expect_text(what, r.stdout, v.file(out["file"]))


def _expect_make_output(ctx: Context, r: Run, exp: dict) -> None:
    """make prints the stream digest (DIGEST-2, STORE-12), if the implementation prints one."""
    if "prints-digest" in ctx.adapter.features:
        expect_text("make's output (the stream digest)", r.stdout, exp["make_output"].encode())


def run_tree(ctx: Context, v: Vector) -> None:
    """A directory tree and casync options -> the archive's bytes, make's output, and the list,
    mtree and digest of the expected archive."""
    ctx.require(v)
    check_environment(v.data.get("environment", {}))
    tree = materialise_tree(v.data["tree"], ctx.path("tree"))
    exp = v.data["expect"]
    out = ctx.path("out.catar")
    r = expect_ok("make", ctx.adapter.make_catar(tree, out, v.data.get("options", [])))
    _expect_make_output(ctx, r, exp)
    try:
        got = Path(out).read_bytes()
    except OSError:
        raise Failure("make wrote no archive") from None
    expect_bytes("archive", got, v.file(exp["archive"]))
    archive = ctx.copy_in(v, exp["archive"], "expected/archive.catar")
    _check_outputs(ctx, v, archive)


def run_extract(ctx: Context, v: Vector) -> None:
    """The archive of a tree vector -> extracted as root, the tree archives again to the same bytes
    (with the same options): everything the flags carry was restored."""
    ctx.require(v)
    check_environment(v.data.get("environment", {}))
    if os.geteuid() != 0:
        raise Skip("extracting owners and device nodes needs root")
    src = v.data["archive_of"]
    if src.split("/")[0] != "tree" or len(src.split("/")) != 2:
        raise ValueError(f"archive_of must name a tree vector, not {src!r}")
    tree_vector = Vector(src, v.dir.parent.parent / src, json.loads((v.dir.parent.parent / src / VECTOR_FILE).read_bytes()))
    want = tree_vector.file(tree_vector.data["expect"]["archive"])
    archive = ctx.path("input", "archive.catar")
    os.makedirs(os.path.dirname(archive))
    Path(archive).write_bytes(want)
    target = ctx.path("extracted")
    expect_ok("extract", ctx.adapter.extract(archive, target))
    again = ctx.path("again.catar")
    expect_ok("make (of the extracted tree)", ctx.adapter.make_catar(target, again, v.data.get("options", [])))
    got = Path(again).read_bytes() if os.path.exists(again) else b""
    expect_bytes("archive of the extracted tree", got, want)


def run_caidx(ctx: Context, v: Vector) -> None:
    """A directory tree, options and chunk parameters -> the .caidx bytes, chunks, store, listing."""
    ctx.require(v)
    check_environment(v.data.get("environment", {}))
    tree = materialise_tree(v.data["tree"], ctx.path("tree"))
    exp = v.data["expect"]
    out, store = ctx.path("out.caidx"), ctx.path("store")
    p = _index_params(v.data)
    r = expect_ok("make", ctx.adapter.make_archive_index(tree, out, store, v.data.get("options", []), p))
    _expect_make_output(ctx, r, exp)
    got = Path(out).read_bytes() if os.path.exists(out) else b""
    _flags, _sizes, chunks = parse_index(got)
    want_chunks = [(e, c) for e, c in exp["chunks"]]
    if chunks != want_chunks:
        raise Failure(f"chunks differ: {len(chunks)} chunks, expected {len(want_chunks)}")
    expect_bytes("index", got, v.file(exp["index"]))
    stream = v.file(exp["archive"])
    check_store(store, stream, chunks, p.digest or "sha512-256", p.compression or "zstd")
    _check_outputs(ctx, v, out, store)


def run_chunk(ctx: Context, v: Vector) -> None:
    """A byte stream and chunk parameters -> chunk boundaries and ids, the .caibx bytes, the store."""
    ctx.require(v)
    exp = v.data["expect"]
    blob = ctx.path("input.blob")
    data = make_bytes(v.data["input"])
    Path(blob).write_bytes(data)
    out, store = ctx.path("out.caibx"), ctx.path("store")
    p = _index_params(v.data)
    r = ctx.adapter.make_blob_index(blob, out, store, v.data.get("options", []), p)
    if exp.get("error"):
        if r.crashed:
            raise Failure(f"make crashed: {r.why()}")
        if r.rc == 0:
            raise Failure("make succeeded, but these chunk parameters must be refused")
        return
    expect_ok("make", r)
    _expect_make_output(ctx, r, exp)
    got = Path(out).read_bytes() if os.path.exists(out) else b""
    _flags, _sizes, chunks = parse_index(got)
    want = [(e, c) for e, c in exp["chunks"]]
    if [e for e, _ in chunks] != [e for e, _ in want]:
        k = _first_difference_list([e for e, _ in chunks], [e for e, _ in want])
        raise Failure(f"chunk boundaries differ from chunk {k} on ({len(chunks)} chunks, expected {len(want)})")
    if chunks != want:
        k = _first_difference_list(chunks, want)
        raise Failure(f"chunk id {k} differs")
    expect_bytes("index", got, v.file(exp["index"]))
    check_store(store, data, chunks, p.digest or "sha512-256", p.compression or "zstd")
    _check_outputs(ctx, v, out, store)


def _first_difference_list(a: list, b: list) -> int:
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


def run_decode(ctx: Context, v: Vector) -> None:
    """A catar stream -> its list, mtree and digest text (with decoder options, sub-paths)."""
    ctx.require(v)
    archive = ctx.copy_in(v, v.data["input"], "input/" + v.data["input"])
    _check_outputs(ctx, v, archive)


def run_store(ctx: Context, v: Vector) -> None:
    """An index and a prepared chunk store -> the extracted blob."""
    ctx.require(v)
    index = ctx.copy_in(v, v.data["input"], "input/" + v.data["input"])
    store = ctx.copy_store(v)
    target = ctx.path("out.blob")
    expect_ok("extract", ctx.adapter.extract(index, target, store=store))
    got = Path(target).read_bytes() if os.path.exists(target) else b""
    expect_bytes("extracted blob", got, make_bytes(v.data["expect"]["blob"]))


def _snapshot(root: str, skip: str) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.abspath(dirpath) == os.path.abspath(skip):
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if os.path.abspath(p) == os.path.abspath(skip):
                continue
            s = os.lstat(p)
            out[os.path.relpath(p, root)] = (s.st_mode, s.st_size, s.st_mtime_ns)
    return out


def run_reject(ctx: Context, v: Vector) -> None:
    """A malformed archive, index or store -> every listed verb fails (for strict adapters also:
    with an error message rather than a traceback, and without writing outside the target)."""
    ctx.require(v)
    name = v.data["input"]
    path = ctx.copy_in(v, name, "input/" + name)
    store = ctx.copy_store(v) if not name.endswith(".catar") else None
    for verb in v.data["expect"]["reject"]:
        if verb == "extract":
            target = ctx.path("target") if not name.endswith(".caibx") else ctx.path("target", "out.blob")
            os.makedirs(ctx.path("target"), exist_ok=True)
            before = _snapshot(ctx.work, ctx.path("target"))
            r = ctx.adapter.extract(path, target, store=store)
            after = _snapshot(ctx.work, ctx.path("target"))
            if ctx.adapter.strict and before != after:
                changed = sorted(set(before.items()) ^ set(after.items()))
                raise Failure(f"extract wrote outside its target: {changed[0][0]}")
        else:
            r = ctx.adapter.show(verb, path, store=store)
        if r.crashed:
            raise Failure(f"{verb} crashed instead of rejecting the input: {r.why()}")
        if r.timed_out:
            raise Failure(f"{verb} {r.why()} instead of rejecting the input")
        if r.rc == 0:
            raise Failure(f"{verb} accepted the malformed input (it must fail)")
        if ctx.adapter.strict and len(r.stderr.decode("utf-8", "replace").strip().splitlines()) > 1:
            raise Failure(f"{verb} reported more than one line of error")
        _check_reason(ctx.adapter, verb, v.data["expect"], r)


def _check_reason(adapter: Adapter, verb: str, expect: dict, r: Run) -> None:
    """CATAR-53: the input was refused for the vector's reason, not for another (a usage error, a
    missing file), as far as the adapter says why (:attr:`Adapter.reason`)."""
    said = r.stderr.decode("utf-8", "replace")
    if adapter.reason == "message":
        pattern = expect.get("error")
        if pattern is None:
            raise Failure("the vector gives no expect.error to check the rejection against")
        if not re.search(pattern, said, re.IGNORECASE):
            raise Failure(f"{verb} refused the input for another reason: {r.why()!r} (expected /{pattern}/)")
    elif adapter.reason == "errno" and expect.get("errno"):
        name = expect["errno"]
        text = os.strerror(getattr(errno, name)) if hasattr(errno, name) else None
        if text is None:
            raise Failure(f"unknown errno {name!r} in expect.errno")
        if text not in said:
            raise Failure(f"{verb} refused the input for another reason: {r.why()!r} (expected {name}: {text})")


RUNNERS = {"tree": run_tree, "extract": run_extract, "caidx": run_caidx, "chunk": run_chunk, "decode": run_decode,
           "store": run_store, "reject": run_reject}


# --------------------------------------------------------------------------- the run


@dataclass
class Outcome:
    vector: str
    status: str  # "pass", "fail", "skip"
    message: str = ""
    lacks: tuple[str, ...] = ()  #: a skip for want of these features (see Skip)


def verify(root: str | os.PathLike, adapter: Adapter, *, only: list[str] | None = None,
           ids: set[str] | None = None, tmpdir: str | None = None, keep: bool = False,
           log=None) -> tuple[list[Outcome], list[str]]:
    """Runs every vector (or those whose id contains one of ``only``, or is one of ``ids``) against
    ``adapter``.  Returns the outcomes and the problems found outside any vector (manifest)."""
    root = Path(root)

    def select(vid: str) -> bool:
        return (not only or any(o in vid for o in only)) and (ids is None or vid in ids)

    vectors, problems = load_vectors(root, select)
    outcomes = []
    for v in vectors:
        work = tempfile.mkdtemp(prefix="pycatar-vector-", dir=tmpdir)
        try:
            try:
                if v.data.get("kind") not in RUNNERS:
                    raise Failure("not a vector")
                RUNNERS[v.kind](Context(adapter, work), v)
                o = Outcome(v.id, "pass")
            except Skip as e:
                o = Outcome(v.id, "skip", str(e), e.lacks)
            except Failure as e:
                o = Outcome(v.id, "fail", str(e))
            except (OSError, ValueError, KeyError, TypeError) as e:
                o = Outcome(v.id, "fail", f"malformed vector or runner error: {type(e).__name__}: {e}")
            if v.problems:  # a tampered vector never passes, and is not skipped either
                o = Outcome(v.id, "fail", "; ".join(v.problems + ([o.message] if o.status == "fail" else [])))
        finally:
            if not keep:
                remove_tree(work)
        outcomes.append(o)
        if log:
            log(o)
    return outcomes, problems


def default_vectors_dir() -> str:
    here = Path(__file__).resolve().parents[3] / "vectors"  # the source tree's
    for cand in (here, Path.cwd() / "vectors"):
        if (cand / MANIFEST).is_file():
            return str(cand)
    raise UsageError("no vectors directory found; name one with --vectors DIR")
