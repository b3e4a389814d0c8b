#!/usr/bin/env python3
"""Side-by-side speed of pycatar and casync: same data, same flags, alternating runs.

    python3 benchmarks/bench.py                      # the standard cases (~200 MiB blob, stdlib tree)
    python3 benchmarks/bench.py --quick              # tiny data, for a smoke test
    python3 benchmarks/bench.py --repeat 5 --out results.md --csv results.csv

Each case runs casync and pycatar alternately ``--repeat`` times (casync first in odd rounds,
pycatar first in even ones) and reports the median wall time and CPU time (user + system) of each,
the ratio of wall times pycatar/casync (< 1: pycatar is faster) and the peak resident memory of each
(from the kernel's rusage of the child).  Every run writes to outputs of its own (a new store, so
each ``make`` writes all chunks; a new directory for each extraction); nothing is deleted until the
end, because on ext4 without a journal, creating files right after deleting many makes the kernel's
inode allocator skip every recently freed inode, which slows *both* tools by a factor that depends
on the history of the file system.  After the table comes a lower bound for the blob cases: start-up plus the
library work the case cannot avoid (measured on one core) spread over every core, over casync's
time -- the best ratio any program on this interpreter could reach here.  ``--dir`` chooses where data and outputs go (default: a new
directory in $TMPDIR); ``--dir /dev/shm`` measures the tools rather than the disk.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Case:
    name: str
    casync: list[str]  # "{run}" in an argument is replaced by the run's number
    pycatar: list[str]
    keep: tuple = ()  # (path with "{run}", name): after the case, name links to the last run's output


@dataclass
class Result:
    name: str
    casync_s: float
    pycatar_s: float
    casync_rss_mib: float
    pycatar_rss_mib: float
    casync_cpu_s: float = 0.0
    pycatar_cpu_s: float = 0.0

    @property
    def ratio(self) -> float:
        return self.pycatar_s / self.casync_s if self.casync_s else float("nan")


def run_measured(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of one child process."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run the command quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def make_blob(path: str, size: int) -> None:
    """Half random, half text (with repeats), deterministic."""
    rnd = random.Random(42)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(rnd.randint(2, 12)))
             for _ in range(5000)]
    with open(path, "wb") as f:
        half = size // 2
        left = half
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rnd.randbytes(n))
            left -= n
        left = size - half
        while left > 0:
            line = b" ".join(rnd.choice(words) for _ in range(12)) + b"\n"
            f.write(line[:left])
            left -= len(line)


def tree_source(quick: bool, tmp: str) -> str:
    if quick:
        root = os.path.join(tmp, "tree")
        os.makedirs(os.path.join(root, "sub"))
        for i in range(50):
            with open(os.path.join(root, "sub" if i % 2 else "", f"f{i}.txt"), "w") as f:
                f.write(f"file {i}\n" * (i + 1))
        return root
    return sysconfig.get_paths()["stdlib"]  # many small files


def cases(tmp: str, quick: bool) -> list[Case]:
    blob = os.path.join(tmp, "blob.bin")
    make_blob(blob, (2 << 20) if quick else (200 << 20))
    tree = tree_source(quick, tmp)
    py = [sys.executable, "-m", "pycatar"]
    out = lambda n: os.path.join(tmp, n)

    res = [
        Case("make .caibx (blob)",
             ["casync", "make", f"--store={out('c{run}.castr')}", out("c{run}.caibx"), blob],
             py + ["make", f"--store={out('p{run}.castr')}", out("p{run}.caibx"), blob],
             keep=((out("c{run}.castr"), out("c.castr")), (out("c{run}.caibx"), out("c.caibx")),
                   (out("p{run}.castr"), out("p.castr")), (out("p{run}.caibx"), out("p.caibx")))),
        Case("extract .caibx (blob)",
             ["casync", "extract", "--seed-output=no", f"--store={out('c.castr')}", out("c.caibx"),
              out("c{run}.out")],
             py + ["extract", "--seed-output=no", f"--store={out('p.castr')}", out("p.caibx"), out("p{run}.out")]),
        Case("make .caidx (tree)",
             ["casync", "make", f"--store={out('ct{run}.castr')}", out("c{run}.caidx"), tree],
             py + ["make", f"--store={out('pt{run}.castr')}", out("p{run}.caidx"), tree],
             keep=((out("ct{run}.castr"), out("ct.castr")), (out("c{run}.caidx"), out("c.caidx")),
                   (out("pt{run}.castr"), out("pt.castr")), (out("p{run}.caidx"), out("p.caidx")))),
        Case("extract .caidx (tree)",
             ["casync", "extract", "--seed-output=no", f"--store={out('ct.castr')}", out("c.caidx"),
              out("c{run}.tree")],
             py + ["extract", "--seed-output=no", f"--store={out('pt.castr')}", out("p.caidx"), out("p{run}.tree")]),
        Case("make .catar (tree)",
             ["casync", "make", out("c{run}.catar"), tree],
             py + ["make", out("p{run}.catar"), tree]),
        Case("make .caibx --digest=blake3 (pycatar) vs sha512-256 (casync)",
             ["casync", "make", f"--store={out('c3{run}.castr')}", out("c3{run}.caibx"), blob],
             py + ["make", "--digest=blake3", f"--store={out('p3{run}.castr')}", out("p3{run}.caibx"), blob]),
    ]
    return res


def bench(case: Case, repeat: int) -> Result:
    times = {"casync": [], "pycatar": []}
    cpu = {"casync": [], "pycatar": []}
    rss = {"casync": 0.0, "pycatar": 0.0}
    for run in range(repeat):
        for who in (("casync", "pycatar") if run % 2 == 0 else ("pycatar", "casync")):
            argv = [a.replace("{run}", str(run)) for a in getattr(case, who)]
            wall, peak, used = run_measured(argv)
            times[who].append(wall)
            cpu[who].append(used)
            rss[who] = max(rss[who], peak)
    for pattern, name in case.keep:
        if os.path.lexists(name):
            os.unlink(name)
        os.symlink(pattern.replace("{run}", str(repeat - 1)), name)
    return Result(case.name, statistics.median(times["casync"]), statistics.median(times["pycatar"]),
                  rss["casync"], rss["pycatar"], statistics.median(cpu["casync"]), statistics.median(cpu["pycatar"]))


def table(results: list[Result]) -> str:
    lines = ["| case | casync s | pycatar s | pycatar/casync | casync CPU s | pycatar CPU s | casync MiB | pycatar MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.casync_s:.2f} | {r.pycatar_s:.2f} | {r.ratio:.2f} | "
                     f"{r.casync_cpu_s:.2f} | {r.pycatar_cpu_s:.2f} | "
                     f"{r.casync_rss_mib:.0f} | {r.pycatar_rss_mib:.0f} |")
    return "\n".join(lines)


def _thread_cpu(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def _make_work(blob: str) -> float:
    """CPU seconds, on one core, of the library work a .caibx make cannot avoid: cutting (the C
    buzhash chunker), SHA-512/256 of every chunk and of the whole stream, zstd level 3 of every chunk."""
    import hashlib

    import zstandard

    from pycatar.chunker import Chunker

    with open(blob, "rb") as f:
        data = memoryview(f.read())
    zc = zstandard.ZstdCompressor(level=3, write_content_size=False)

    def work():
        cuts = Chunker().feed(data)
        hashlib.new("sha512_256", data).digest()
        start = 0
        for end in list(cuts) + ([len(data)] if not cuts or cuts[-1] != len(data) else []):
            piece = data[start:end]
            hashlib.new("sha512_256", piece).digest()
            zc.compress(piece)
            start = end

    return _thread_cpu(work)


def _extract_work(store: str, index: str) -> float:
    """CPU seconds, on one core, of what a verifying .caibx extract cannot avoid: reading every chunk
    file of the index, zstd decompression (to the size the index gives) and SHA-512/256 of the
    result (writing the output is left out)."""
    import hashlib

    import zstandard

    from pycatar.index import IndexReader
    from pycatar.store import chunk_relpath

    with IndexReader(index) as r:
        refs = [(os.path.join(store, chunk_relpath(c.id)), c.size) for c in r.chunks()]
    zd = zstandard.ZstdDecompressor()

    def work():
        for p, size in refs:
            with open(p, "rb") as f:
                hashlib.new("sha512_256", zd.decompress(f.read(), max_output_size=size)).digest()

    return _thread_cpu(work)


def _startup() -> float:
    """Median wall time of `python -m pycatar --version` (interpreter start and the CLI's imports)."""
    return statistics.median(run_measured([sys.executable, "-m", "pycatar", "--version"])[0] for _ in range(5))


def floors(results: list[Result], tmp: str) -> str:
    """The best ratio any implementation on this interpreter could reach on this machine: its start-up
    plus the unavoidable library work spread perfectly over every core, over casync's median time.
    Only the blob cases (their work is the same library calls in both tools)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    work = {"make .caibx (blob)": lambda: _make_work(os.path.join(tmp, "blob.bin")),
            "extract .caibx (blob)": lambda: _extract_work(os.path.join(tmp, "p.castr"), os.path.join(tmp, "p.caibx"))}
    rows = [r for r in results if r.name in work]
    if not rows:
        return ""
    start = _startup()
    lines = [f"Lower bound on {cores} cores: start-up {start:.2f} s + unavoidable work / {cores}",
             "",
             "| case | casync s | work on 1 core s | best possible s | best ratio | pycatar/casync |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        w = min(work[r.name]() for _ in range(3))
        best = start + w / cores
        lines.append(f"| {r.name} | {r.casync_s:.2f} | {w:.2f} | {best:.2f} | {best / r.casync_s:.2f} | {r.ratio:.2f} |")
    return "\n".join(lines)


def report(results: list[Result], args, tmp: str) -> None:
    text = table(results)
    floor = floors(results, tmp)
    if floor:
        text += "\n\n" + floor
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("case,casync_s,pycatar_s,ratio,casync_rss_mib,pycatar_rss_mib,casync_cpu_s,pycatar_cpu_s\n")
            for r in results:
                f.write(f"{r.name},{r.casync_s:.4f},{r.pycatar_s:.4f},{r.ratio:.4f},"
                        f"{r.casync_rss_mib:.1f},{r.pycatar_rss_mib:.1f},{r.casync_cpu_s:.4f},{r.pycatar_cpu_s:.4f}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny data (smoke test)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--csv", help="also write the results as CSV here")
    ap.add_argument("--only", help="run only cases whose name contains this text")
    ap.add_argument("--dir", help="where the data and all outputs go (default: a new directory in $TMPDIR)")
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
    with tempfile.TemporaryDirectory(prefix="pycatar-bench-", dir=args.dir) as tmp:
        where = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True).stdout.strip()
        print(f"outputs in {tmp} ({where or 'unknown'} file system), {os.cpu_count()} CPUs", file=sys.stderr)
        for case in cases(tmp, args.quick):
            if args.only and args.only not in case.name:
                continue
            results.append(bench(case, args.repeat))
            print(f"{case.name}: casync {results[-1].casync_s:.2f}s, pycatar {results[-1].pycatar_s:.2f}s, "
                  f"ratio {results[-1].ratio:.2f}", file=sys.stderr)
        report(results, args, tmp)  # before the outputs are removed, which can take a while
    return 0


if __name__ == "__main__":
    sys.exit(main())
