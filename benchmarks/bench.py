#!/usr/bin/env python3
"""Side-by-side speed of pycatar and casync on every case of issue 18, with a lower bound for each.

    python3 benchmarks/bench.py                         # every case, 3 rounds (~15 min on 2 cores)
    python3 benchmarks/bench.py --repeat 5 --out results.md --csv results.csv
    python3 benchmarks/bench.py --only extract          # the cases whose key or name contains "extract"
    python3 benchmarks/bench.py --quick --repeat 1      # tiny data, for a smoke test

Each case runs its two sides (casync and pycatar, or two sizes for the memory case) alternately
``--repeat`` times (A first in odd rounds, B first in even ones; with ``--baseline``, three sides, each
taking each place in turn) and reports for each side the median wall time with its spread (min-max),
the median CPU time (user + system) and the peak resident memory (from the kernel's rusage of the
child), and the ratio of the medians B/A (< 1: pycatar is faster).
Every run writes outputs of its own (a new store, a new directory); nothing is deleted until the end,
because on ext4 creating files right after deleting many makes the kernel's inode allocator skip
every recently freed inode, which slows *both* tools by an amount that depends on the file system's
history.  Before every timed run (and every lower bound) the harness calls sync(2), untimed: without
it, the kernel writes back earlier runs' dirty pages (30 s after they were written, or once enough
accumulate) during a later run, on a core the two-threaded pycatar needs and single-threaded casync
does not (session 21: spreads such as 0.22-0.77 s on one extraction, gone with the sync).
Generated inputs (the blobs, the 1 M-entry archive) are kept in ``--cache``.

The lower bound of a case is the best wall time any program could reach here: the interpreter's
start-up plus the work the case cannot avoid, measured on one core and spread perfectly over every
core, counting each core for what it gives when all work at once (:func:`parallel_capacity`: two
vCPUs of a virtual machine may do 1.6 times the work of one, not 2).  That work is the chunk work
(cutting, hashing and compressing every chunk for a make; reading, decompressing and verifying
every chunk for an extraction: the C libraries both tools call, and SHA-512/256 chunk ids the
fastest way this machine offers, eight at a time with AVX-512 where it has it (pycatar._sha), timed
from Python on one thread) plus the file system work (benchmarks/floor.c, timed in C on one core: reading the tree
and storing the chunk files for a make, creating the tree with a temporary name, payload, mode and
mtime per file for an extraction).  ``--dir`` chooses where outputs go (default: a new directory in
$TMPDIR, ext4 here).

pycatar's start-up is measured too: its command on a one-file input (median of 5 runs: interpreter,
imports, parsing and set-up, next to no work).  The floor column is the lower bound with that
start-up in place of the bare interpreter's: what pycatar could reach with its start-up as it is and
everything after it perfect.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


@dataclass
class Case:
    key: str  # short name for --only
    name: str
    a: tuple[str, list[str]]  # (label, argv); "{run}" in an argument is replaced by the round's number
    b: tuple[str, list[str]]
    goal: str = ""
    prepare: list[tuple[str, list[str]]] = field(default_factory=list)  # (output, command): run before timing
    # if the output is missing (an extraction's index and store, left by the make case when it ran)
    keep: tuple = ()  # (path with "{run}", name): afterwards, name links to the last round's output
    bound: Callable[[], float] | None = None  # seconds of unavoidable work on one core (side B)
    startup: Callable[[], list[str]] | None = None  # side B's command on a one-file input ("{run}": a fresh name)


@dataclass
class Result:
    case: Case
    a_s: list[float]
    b_s: list[float]
    a_cpu: list[float]
    b_cpu: list[float]
    a_rss: float
    b_rss: float
    bound_s: float | None = None
    startup_s: float | None = None  # side B's command on a one-file input, median wall time
    floor_s: float | None = None  # the bound with side B's start-up in place of the interpreter's
    base_s: list[float] = field(default_factory=list)  # --baseline: pycatar from another tree, same rounds
    base_cpu: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        a = statistics.median(self.a_s)
        return statistics.median(self.b_s) / a if a else float("nan")


def run_measured(argv: list[str], pythonpath: str | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of one child process (``pythonpath``: its PYTHONPATH).
    The dirty pages of earlier runs are written first (sync, untimed), not during this one."""
    os.sync()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run the command quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            if pythonpath is not None:
                os.environ["PYTHONPATH"] = pythonpath
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- inputs


def make_blob(path: str, size: int) -> None:
    """Half random, half text (words with repeats), deterministic."""
    rnd = random.Random(42)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(rnd.randint(2, 12)))
             for _ in range(5000)]
    words += [w + b"\n" for w in words[:400]]
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        half = size // 2
        left = half
        while left > 0:
            n = min(left, MiB)
            f.write(rnd.randbytes(n))
            left -= n
        left = size - half
        while left > 0:
            text = b" ".join(rnd.choices(words, k=100_000))[:left]
            f.write(text)
            left -= len(text)
    os.rename(tmp, path)


def make_tree(root: str, files: int, dirs: int, size: int) -> None:
    rnd = random.Random(7)
    for d in range(dirs):
        os.makedirs(os.path.join(root, f"d{d:04}"), exist_ok=True)
    for i in range(files):
        with open(os.path.join(root, f"d{i % dirs:04}", f"f{i:07}.txt"), "wb") as f:
            if size:
                f.write(b"line %d\n" % i * rnd.randint(1, size // 8 + 1))


def cached(cache: str, name: str, build: Callable[[str], None]) -> str:
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        build(path)
    return path


def million_catar(path: str, entries: int) -> None:
    """A .catar (made by casync) of a tree of ``entries`` empty files in directories of 1000."""
    work = path + ".tree"
    if os.path.exists(work):
        subprocess.run(["rm", "-rf", work], check=True)
    make_tree(work, entries, max(1, entries // 1000), 0)
    part = path + ".part.catar"
    subprocess.run(["casync", "make", part, work], check=True, stdout=subprocess.DEVNULL)
    os.rename(part, path)
    subprocess.run(["rm", "-rf", work], check=True)


# --------------------------------------------------------------------------- lower bounds


def _thread_cpu(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def _best(fn, n: int = 3) -> float:
    return min(fn() for _ in range(n))


class Floor:
    """benchmarks/floor.c, compiled once per run."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.exe = os.path.join(tmp, "floor")
        subprocess.run(["cc", "-O2", "-o", self.exe, os.path.join(HERE, "floor.c")], check=True)
        self.n = 0

    def _run(self, *args: str) -> float:
        p = subprocess.run([self.exe, *args], capture_output=True, text=True, check=True)
        return float(p.stdout)

    def _fresh(self) -> str:
        self.n += 1
        return os.path.join(self.tmp, f"floor{self.n}")

    def read(self, tree: str) -> float:
        return _best(lambda: self._run("read", tree))

    def create(self, tree: str) -> float:
        return _best(lambda: self._run("create", tree, self._fresh()))

    def chunks(self, count: int, size: int) -> float:
        return _best(lambda: self._run("chunks", self._fresh(), str(count), str(size)))


def index_chunks(index: str) -> list[tuple[bytes, int]]:
    """(id, uncompressed size) of each chunk of a .caibx/.caidx (read here, independently of pycatar)."""
    with open(index, "rb") as f:
        data = f.read()
    items = data[64:-40]
    out, prev = [], 0
    for off in range(0, len(items), 40):
        end, cid = struct.unpack_from("<Q32s", items, off)
        out.append((cid, end - prev))
        prev = end
    return out


def chunk_path(store: str, cid: bytes) -> str:
    h = cid.hex()
    return os.path.join(store, h[:4], h + ".cacnk")


def store_shape(store: str, index: str) -> tuple[int, int]:
    """(distinct chunks, their mean compressed size) of what a make stored."""
    ids = {cid for cid, _ in index_chunks(index)}
    sizes = [os.path.getsize(chunk_path(store, cid)) for cid in ids]
    return len(sizes), (sum(sizes) // len(sizes) if sizes else 0)


def chunk_ids(digest: str, pieces: list) -> None:
    """The chunk ids of ``pieces`` (SHA-512/256 and SHA-256 a batch at a time: pycatar.digest, which
    hashes SHA-512/256 eight chunks at once where the CPU allows; BLAKE3 one at a time on one thread)."""
    from pycatar import digest as _digest

    if digest == "blake3":
        import blake3

        for p in pieces:
            blake3.blake3(p, max_threads=1).digest()
    else:
        _digest.digest_many(digest, pieces)


def chunk_work_make(stream: str, sizes: tuple[int, int, int] | None = None, digest: str = "sha512-256") -> float:
    """CPU seconds on one core for cutting ``stream``, hashing every chunk (:func:`chunk_ids`) and the
    whole stream (hashlib/blake3) and compressing every chunk with zstd level 3 (the C chunker,
    zstandard)."""
    import zstandard

    from pycatar.chunker import Chunker

    def new():
        if digest == "blake3":
            import blake3

            return blake3.blake3(max_threads=1)
        return hashlib.new("sha512_256")

    with open(stream, "rb") as f:
        data = memoryview(f.read())
    zc = zstandard.ZstdCompressor(level=3, write_content_size=False)
    chunker = Chunker(*sizes) if sizes else Chunker()

    def work():
        cuts = chunker.split(data)
        h = new()
        h.update(data)
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts)]
        for i in range(0, len(pieces), 64):  # a make's batches: a 4 MiB read's chunks
            chunk_ids(digest, pieces[i:i + 64])
        for piece in pieces:
            zc.compress(piece)

    return _best(lambda: _thread_cpu(work))


def chunk_work_extract(store: str, index: str) -> float:
    """CPU seconds on one core for reading every chunk file an index names, decompressing it to the
    size the index gives and verifying its SHA-512/256 (:func:`chunk_ids`, 16 chunks a batch)."""
    import zstandard

    refs = [(chunk_path(store, cid), size) for cid, size in index_chunks(index)]
    zd = zstandard.ZstdDecompressor()

    def work():
        for i in range(0, len(refs), 16):
            batch = []
            for p, size in refs[i:i + 16]:
                with open(p, "rb") as f:
                    batch.append(zd.decompress(f.read(), max_output_size=size))
            chunk_ids("sha512-256", batch)

    return _best(lambda: _thread_cpu(work))


def read_work(path: str, digest: bool) -> float:
    def work():
        with open(path, "rb") as f:
            h = hashlib.new("sha512_256") if digest else None
            while block := f.read(MiB):
                if h is not None:
                    h.update(block)

    return _best(lambda: _thread_cpu(work))


def fs_type(path: str) -> str:
    """The type of the file system ``path`` is on, as mounted ("ext4"; stat -f names every ext2/3/4
    "ext2/ext3"): util-linux's findmnt, else stat's name, else "unknown"."""
    for argv in (["findmnt", "-n", "-o", "FSTYPE", "-T", path], ["stat", "-f", "-c", "%T", path]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            continue
        if out:
            return out
    return "unknown"


def startup(argv: list[str] | None = None) -> float:
    """Median wall time of 5 runs of the bare interpreter's start-up (python -c pass), or of ``argv``
    ("{run}" in it replaced by a fresh name each run)."""
    argv = argv or [sys.executable, "-c", "pass"]
    return statistics.median(run_measured([a.replace("{run}", f"s{next(_FRESH)}") for a in argv])[0]
                             for _ in range(5))


_FRESH = itertools.count()


def parallel_capacity(cores: int) -> float:
    """How many cores' worth of work ``cores`` threads get done at once here: SHA-512 of the same
    buffer in one thread, then in ``cores`` threads at once (hashlib works without the GIL), best of
    3 each.  A virtual machine's vCPUs may give less than one core each when they run together."""
    import threading

    data = os.urandom(16 << 20)

    def work():
        for _ in range(4):
            hashlib.sha512(data).digest()

    def timed(n: int) -> float:
        threads = [threading.Thread(target=work) for _ in range(n)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    one = _best(lambda: timed(1))
    together = _best(lambda: timed(cores))
    return max(1.0, min(float(cores), cores * one / together))


# --------------------------------------------------------------------------- the cases


def cases(tmp: str, cache: str, quick: bool, floor: Floor) -> list[Case]:
    out = lambda n: os.path.join(tmp, n)
    if quick:
        cache = os.path.join(tmp, "cache")
    blob = cached(cache, "blob192/blob.bin", lambda p: make_blob(p, (2 if quick else 192) * MiB))
    big = cached(cache, "blob1536/blob.bin", lambda p: make_blob(p, (8 if quick else 1536) * MiB))
    entries = 3000 if quick else 1_000_000
    million = cached(cache, f"tree{entries}.catar", lambda p: million_catar(p, entries))
    if quick:
        tree = cached(cache, "tree", lambda p: make_tree(p, 60, 3, 3000))
        include = cached(cache, "include", lambda p: make_tree(p, 200, 10, 800))
    else:
        tree, include = "/usr/lib/python3.11", "/usr/include"
    small = cached(cache, "small.catar",
                   lambda p: subprocess.run(["casync", "make", p, os.path.join(HERE)], check=True,
                                            stdout=subprocess.DEVNULL))
    py = [sys.executable, "-m", "pycatar"]
    C, P = "casync", "pycatar"
    # one-file inputs, for pycatar's start-up (its command on next to no data)
    one_tree = cached(cache, "one/tree", lambda p: make_tree(p, 1, 1, 100))
    one_blob = cached(cache, "one/blob.bin", lambda p: make_blob(p, 4096))
    one_catar = cached(cache, "one/tree.catar",
                       lambda p: subprocess.run(["casync", "make", p, one_tree], check=True, stdout=subprocess.DEVNULL))

    def one(kind: str) -> str:  # a .caibx/.caidx (and one.castr) of a one-file input, made by pycatar
        index = out(f"one.{kind}")
        if not os.path.exists(index):
            src = one_blob if kind == "caibx" else one_tree
            subprocess.run(py + ["make", f"--store={out('one.castr')}", index, src], check=True,
                           stdout=subprocess.DEVNULL)
        return index

    def make_startup(src: str, *options: str) -> Callable[[], list[str]]:
        kind = "caibx" if src == one_blob else "caidx"
        return lambda: py + ["make", *options, f"--store={out('one{run}.castr')}", out(f"one{{run}}.{kind}"), src]

    def extract_startup(kind: str) -> Callable[[], list[str]]:
        return lambda: py + ["extract", "--seed-output=no", f"--store={out('one.castr')}", one(kind),
                             out("one{run}.out")]

    def keep(*pairs):  # the last round's outputs under a fixed name, for the extraction cases
        return tuple((out(p), out(n)) for p, n in pairs)

    def catar_of(src: str) -> str:  # the stream a .caidx make chunks (made by casync, untimed)
        path = out(f"bound-{abs(hash(src))}.catar")
        if not os.path.exists(path):
            subprocess.run(["casync", "make", path, src], check=True, stdout=subprocess.DEVNULL)
        return path

    def make_bound(src: str, store: str, index: str, sizes=None, digest="sha512-256") -> float:
        stream = src if os.path.isfile(src) else catar_of(src)
        n, avg = store_shape(out(store), out(index))
        fs = floor.chunks(n, avg) + (floor.read(os.path.dirname(src)) if os.path.isfile(src) else floor.read(src))
        return chunk_work_make(stream, sizes, digest) + fs

    def extract_bound(src: str, store: str, index: str) -> float:
        return chunk_work_extract(out(store), out(index)) + floor.create(
            os.path.dirname(src) if os.path.isfile(src) else src)

    def made(c: str, p: str, src: str, kind: str) -> list[tuple[str, list[str]]]:
        """Make each tool's index and store of ``src`` unless a make case left them."""
        return [(out(f"{c}.{kind}"), ["casync", "make", f"--store={out(c + '.castr')}", out(f"{c}.{kind}"), src]),
                (out(f"{p}.{kind}"), py + ["make", f"--store={out(p + '.castr')}", out(f"{p}.{kind}"), src])]

    tiny = (4096, 8192, 16384)
    return [
        Case("make-caibx", "make .caibx, 192 MiB (half random, half text)",
             # "cb0", "cb1"...: a bare "c{run}" made "c3.castr" and "c4.castr" in rounds 4 and 5, the names
             # the blake3 and 4K cases keep their last outputs under
             (C, ["casync", "make", f"--store={out('cb{run}.castr')}", out("cb{run}.caibx"), blob]),
             (P, py + ["make", f"--store={out('pb{run}.castr')}", out("pb{run}.caibx"), blob]),
             goal="<= 0.45",
             keep=keep(("cb{run}.castr", "c.castr"), ("cb{run}.caibx", "c.caibx"),
                       ("pb{run}.castr", "p.castr"), ("pb{run}.caibx", "p.caibx")),
             bound=lambda: make_bound(blob, "c.castr", "c.caibx"), startup=make_startup(one_blob)),
        Case("extract-caibx", "extract .caibx",
             (C, ["casync", "extract", "--seed-output=no", f"--store={out('c.castr')}", out("c.caibx"),
                  out("c{run}.out")]),
             (P, py + ["extract", "--seed-output=no", f"--store={out('p.castr')}", out("p.caibx"),
                       out("p{run}.out")]),
             goal="<= 0.70", prepare=made("c", "p", blob, "caibx"),
             bound=lambda: extract_bound(blob, "p.castr", "p.caibx"), startup=extract_startup("caibx")),
        Case("make-caidx", f"make .caidx, {tree}",
             (C, ["casync", "make", f"--store={out('ct{run}.castr')}", out("ct{run}.caidx"), tree]),
             (P, py + ["make", f"--store={out('pt{run}.castr')}", out("pt{run}.caidx"), tree]),
             goal="<= 0.50",
             keep=keep(("ct{run}.castr", "ct.castr"), ("ct{run}.caidx", "ct.caidx"),
                       ("pt{run}.castr", "pt.castr"), ("pt{run}.caidx", "pt.caidx")),
             bound=lambda: make_bound(tree, "ct.castr", "ct.caidx"), startup=make_startup(one_tree)),
        Case("extract-caidx", "extract .caidx, same tree",
             (C, ["casync", "extract", "--seed-output=no", f"--store={out('ct.castr')}", out("ct.caidx"),
                  out("ct{run}.tree")]),
             (P, py + ["extract", "--seed-output=no", f"--store={out('pt.castr')}", out("pt.caidx"),
                       out("pt{run}.tree")]),
             goal="<= 0.70", prepare=made("ct", "pt", tree, "caidx"),
             bound=lambda: extract_bound(tree, "pt.castr", "pt.caidx"), startup=extract_startup("caidx")),
        Case("make-caidx-4k", "make .caidx --chunk-size=4K:8K:16K, same tree",
             (C, ["casync", "make", "--chunk-size=4K:8K:16K", f"--store={out('c4{run}.castr')}",
                  out("c4{run}.caidx"), tree]),
             (P, py + ["make", "--chunk-size=4K:8K:16K", f"--store={out('p4{run}.castr')}",
                       out("p4{run}.caidx"), tree]),
             goal="<= 0.60", keep=keep(("c4{run}.castr", "c4.castr"), ("c4{run}.caidx", "c4.caidx")),
             bound=lambda: make_bound(tree, "c4.castr", "c4.caidx", tiny),
             startup=make_startup(one_tree, "--chunk-size=4K:8K:16K")),
        Case("extract-caidx-include", f"extract .caidx, {include}",
             (C, ["casync", "extract", "--seed-output=no", f"--store={out('ci.castr')}", out("ci.caidx"),
                  out("ci{run}.tree")]),
             (P, py + ["extract", "--seed-output=no", f"--store={out('pi.castr')}", out("pi.caidx"),
                       out("pi{run}.tree")]),
             goal="<= 0.80",
             prepare=made("ci", "pi", include, "caidx"),
             bound=lambda: extract_bound(include, "pi.castr", "pi.caidx"), startup=extract_startup("caidx")),
        Case("make-blake3", "make .caibx --digest=blake3 (pycatar) vs sha512-256 (casync)",
             (C, ["casync", "make", f"--store={out('c3{run}.castr')}", out("c3{run}.caibx"), blob]),
             (P, py + ["make", "--digest=blake3", f"--store={out('p3{run}.castr')}", out("p3{run}.caibx"), blob]),
             goal="<= 0.35", keep=keep(("c3{run}.castr", "c3.castr"), ("c3{run}.caibx", "c3.caibx")),
             bound=lambda: make_bound(blob, "c3.castr", "c3.caibx", digest="blake3"),
             startup=make_startup(one_blob, "--digest=blake3")),
        Case("list-million", f"list of a {entries}-entry .catar",
             (C, ["casync", "list", million]), (P, py + ["list", million]),
             goal="<= 1.0", bound=lambda: read_work(million, False), startup=lambda: py + ["list", one_catar]),
        Case("digest-million", f"digest of a {entries}-entry .catar",
             (C, ["casync", "digest", million]), (P, py + ["digest", million]),
             goal="<= 1.0", bound=lambda: read_work(million, True), startup=lambda: py + ["digest", one_catar]),
        Case("rss", f"peak RSS: pycatar make of {os.path.getsize(blob) // MiB} MiB (A) vs "
             f"{os.path.getsize(big) // MiB} MiB (B)",
             ("pycatar small", py + ["make", f"--store={out('rs{run}.castr')}", out("rs{run}.caibx"), blob]),
             ("pycatar large", py + ["make", f"--store={out('rl{run}.castr')}", out("rl{run}.caibx"), big]),
             goal="B MiB <= 1.25 x A MiB, <= 400"),
        Case("list-small", "list of a small .catar (start-up)",
             (C, ["casync", "list", small]), (P, py + ["list", small]),
             goal="<= 0.08 s", bound=lambda: 0.0),
    ]


def _order(sides: int, run: int) -> list[int]:
    """The order of the sides in round ``run``: each side takes each place in turn (A B C, B C A,
    C A B...), so that none always runs right after another side's run (whose new inodes the file
    system may still be busy with; its dirty pages are written before the next run starts).  Three
    rounds settle little on a noisy machine: identical code measured up to 1.6 times apart in one
    run, and 1.004 in 12 alternating rounds."""
    return [(run + i) % sides for i in range(sides)]


def bench(case: Case, repeat: int, baseline: str | None = None) -> Result:
    """``baseline``: a PYTHONPATH whose pycatar runs as a third side, in the same rounds (before/after)."""
    for output, argv in case.prepare:
        if not os.path.lexists(output):
            run_measured(argv)
    sides = 3 if baseline is not None and case.a[0] == "casync" else 2
    times, cpu, rss = ([], [], []), ([], [], []), [0.0, 0.0, 0.0]
    for run in range(repeat):
        for side in _order(sides, run):
            tag = f"{run}base" if side == 2 else str(run)  # outputs of their own
            argv = [a.replace("{run}", tag) for a in (case.a, case.b, case.b)[side][1]]
            wall, peak, used = run_measured(argv, baseline if side == 2 else None)
            times[side].append(wall)
            cpu[side].append(used)
            rss[side] = max(rss[side], peak)
    for pattern, name in case.keep:
        if os.path.lexists(name):
            os.unlink(name)
        os.symlink(pattern.replace("{run}", str(repeat - 1)), name)
    return Result(case, times[0], times[1], cpu[0], cpu[1], rss[0], rss[1], base_s=times[2], base_cpu=cpu[2])


def _sec(x: float) -> str:
    """Seconds with two decimals, three below 0.1 s (a tiny run of casync must not print as 0.00)."""
    return f"{x:.3f}" if x < 0.1 else f"{x:.2f}"


def _spread(xs: list[float]) -> str:
    return f"{_sec(statistics.median(xs))} ({_sec(min(xs))}-{_sec(max(xs))})"


HEADER = ("| case | A | A s (min-max) | B | B s (min-max) | B/A | A CPU s | B CPU s | B/A CPU | A MiB | B MiB "
          "| lower bound s | bound/A CPU | B start-up s | floor/A CPU | goal |")


def table(results: list[Result]) -> str:
    lines = [HEADER, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        a_cpu, b_cpu = statistics.median(r.a_cpu), statistics.median(r.b_cpu)
        cpu_ratio = f"{b_cpu / a_cpu:.2f}" if a_cpu else "-"
        bound = (f"{r.bound_s:.2f} | {r.bound_s / a_cpu:.2f}" if r.bound_s is not None and a_cpu
                 else "- | -")
        bound += (f" | {_sec(r.startup_s)} | {r.floor_s / a_cpu:.2f}" if r.floor_s is not None and a_cpu
                  else " | - | -")
        lines.append(f"| {r.case.name} | {r.case.a[0]} | {_spread(r.a_s)} | {r.case.b[0]} | {_spread(r.b_s)} | "
                     f"{r.ratio:.2f} | {_sec(a_cpu)} | {_sec(b_cpu)} | {cpu_ratio} | "
                     f"{r.a_rss:.0f} | {r.b_rss:.0f} | {bound} | {r.case.goal} |")
    return "\n".join(lines)


def add_bounds(results: list[Result]) -> str:
    """Fill in each result's lower bound: start-up + work on one core / what the cores give together."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    start = startup()
    capacity = parallel_capacity(cores)
    for r in results:
        try:  # a failure here (a full disk...) leaves this bound out, not the whole table
            if r.case.bound is not None:
                os.sync()
                r.bound_s = start + r.case.bound() / capacity
            if r.case.startup is not None:
                r.startup_s = startup(r.case.startup())
                r.floor_s = r.bound_s + max(0.0, r.startup_s - start)
        except (OSError, subprocess.CalledProcessError, SystemExit) as e:
            print(f"{r.case.key}: no lower bound: {e}", file=sys.stderr)
            r.bound_s = r.startup_s = r.floor_s = None
    return (f"Lower bound: interpreter start-up ({start:.3f} s, `python -c pass`) + (chunk work + file system "
            f"work, each on one core) / {capacity:.2f}: what the {cores} cores give together here ({cores} "
            f"threads hashing at once against one).  A and B alternate; B/A is the ratio of the median wall "
            f"times.  bound/A CPU compares the bound with casync's CPU time, which is its wall time on a quiet "
            f"machine (casync runs on one core); on a busy machine wall times stretch, CPU times much less.  "
            f"B start-up: B's command on a one-file input (median of 5); the floor is the bound with that "
            f"start-up in place of the interpreter's.")


def baseline_table(results: list[Result], baseline: str) -> str:
    lines = [f"Baseline (pycatar from {baseline}) in the same rounds:", "",
             "| case | casync s | baseline s (min-max) | B/A baseline | pycatar s (min-max) | B/A | "
             "baseline CPU s | pycatar CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if not r.base_s:
            continue
        a = statistics.median(r.a_s)
        lines.append(f"| {r.case.name} | {_sec(a)} | {_spread(r.base_s)} | {statistics.median(r.base_s) / a:.2f} | "
                     f"{_spread(r.b_s)} | {r.ratio:.2f} | {_sec(statistics.median(r.base_cpu))} | "
                     f"{_sec(statistics.median(r.b_cpu))} |")
    return "\n".join(lines)


def report(results: list[Result], args) -> None:
    note = add_bounds(results)
    text = table(results) + "\n\n" + note
    if args.baseline:
        text += "\n\n" + baseline_table(results, args.baseline)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("key,a,b,a_s,b_s,ratio,a_min,a_max,b_min,b_max,a_cpu_s,b_cpu_s,a_rss_mib,b_rss_mib,bound_s,"
                    "b_startup_s,floor_s\n")
            for r in results:
                bound = f"{r.bound_s:.6f}" if r.bound_s is not None else ""
                bound += "," + (f"{r.startup_s:.6f},{r.floor_s:.6f}" if r.floor_s is not None else ",")
                f.write(f"{r.case.key},{r.case.a[0]},{r.case.b[0]},{statistics.median(r.a_s):.6f},"
                        f"{statistics.median(r.b_s):.6f},{r.ratio:.4f},{min(r.a_s):.6f},{max(r.a_s):.6f},"
                        f"{min(r.b_s):.6f},{max(r.b_s):.6f},{statistics.median(r.a_cpu):.6f},"
                        f"{statistics.median(r.b_cpu):.6f},{r.a_rss:.1f},{r.b_rss:.1f},{bound}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny data (smoke test)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--csv", help="also write the results as CSV here")
    ap.add_argument("--only", action="append",
                    help="run only cases whose key or name contains this text (may be repeated)")
    ap.add_argument("--dir", help="where all outputs go (default: a new directory in $TMPDIR)")
    ap.add_argument("--baseline", metavar="PYTHONPATH",
                    help="also run pycatar from this source tree in the same rounds (before/after a change)")
    ap.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                    "pycatar-bench"),
                    help="where generated inputs are kept between runs (default: %(default)s)")
    args = ap.parse_args(argv)
    if shutil.which("casync") is None:
        print("casync is not installed (apt-get install casync)", file=sys.stderr)
        return 1
    # Timed runs must not compile pycatar's sources: an editable install under PYTHONDONTWRITEBYTECODE=1
    # would compile every module on every run (~0.1 s of start-up), so write the bytecode once here.
    import compileall

    import pycatar

    compileall.compile_dir(os.path.dirname(pycatar.__file__), quiet=1)
    results = []
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pycatar-bench-", dir=args.dir) as tmp:
        print(f"outputs in {tmp} ({fs_type(tmp)} file system), {os.cpu_count()} CPUs, "
              f"pycatar from {os.path.dirname(pycatar.__file__)}", file=sys.stderr)
        floor = Floor(tmp)
        for case in cases(tmp, args.cache, args.quick, floor):
            if args.only and not any(o in case.key or o in case.name for o in args.only):
                continue
            results.append(bench(case, args.repeat, args.baseline))
            r = results[-1]
            print(f"{case.key}: {case.a[0]} {_spread(r.a_s)} s, {case.b[0]} {_spread(r.b_s)} s, "
                  f"ratio {r.ratio:.2f}", file=sys.stderr, flush=True)
        report(results, args)  # before the outputs are removed, which can take a while
        print("removing the outputs", file=sys.stderr)
        subprocess.run(["rm", "-rf", tmp])
        os.makedirs(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
