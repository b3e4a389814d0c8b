#!/usr/bin/env python3
"""Side-by-side speed of pycatar and casync: same data, same flags, alternating runs.

    python3 benchmarks/bench.py                      # the standard cases (~200 MiB blob, stdlib tree)
    python3 benchmarks/bench.py --quick              # tiny data, for a smoke test
    python3 benchmarks/bench.py --repeat 5 --out results.md --csv results.csv

Each case runs casync and pycatar alternately ``--repeat`` times and reports the median wall time
of each, the ratio pycatar/casync (< 1: pycatar is faster) and the peak resident memory of each
(from the kernel's rusage of the child).  Output stores are emptied before every run so each
``make`` writes all chunks.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
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
    casync: list[str]
    pycatar: list[str]
    casync_clean: tuple = ()  # paths removed before each casync run (its outputs)
    pycatar_clean: tuple = ()  # likewise for pycatar


@dataclass
class Result:
    name: str
    casync_s: float
    pycatar_s: float
    casync_rss_mib: float
    pycatar_rss_mib: float

    @property
    def ratio(self) -> float:
        return self.pycatar_s / self.casync_s if self.casync_s else float("nan")


def run_measured(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    del before
    return wall, usage.ru_maxrss / 1024


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

    res = []
    res.append(Case("make .caibx (blob)",
                    ["casync", "make", f"--store={out('c.castr')}", out("c.caibx"), blob],
                    py + ["make", f"--store={out('p.castr')}", out("p.caibx"), blob],
                    (out("c.castr"), out("c.caibx"),), (out("p.castr"), out("p.caibx"),)))
    res.append(Case("extract .caibx (blob)",
                    ["casync", "extract", "--seed-output=no", f"--store={out('c.castr')}", out("c.caibx"),
                     out("c.out")],
                    py + ["extract", "--seed-output=no", f"--store={out('p.castr')}", out("p.caibx"), out("p.out")],
                    (out("c.out"),), (out("p.out"),)))
    res.append(Case("make .caidx (tree)",
                    ["casync", "make", f"--store={out('ct.castr')}", out("c.caidx"), tree],
                    py + ["make", f"--store={out('pt.castr')}", out("p.caidx"), tree],
                    (out("ct.castr"), out("c.caidx"),), (out("pt.castr"), out("p.caidx"),)))
    res.append(Case("extract .caidx (tree)",
                    ["casync", "extract", "--seed-output=no", f"--store={out('ct.castr')}", out("c.caidx"),
                     out("c.tree")],
                    py + ["extract", "--seed-output=no", f"--store={out('pt.castr')}", out("p.caidx"),
                          out("p.tree")],
                    (out("c.tree"),), (out("p.tree"),)))
    res.append(Case("make .catar (tree)",
                    ["casync", "make", out("c.catar"), tree],
                    py + ["make", out("p.catar"), tree],
                    (out("c.catar"),), (out("p.catar"),)))
    res.append(Case("make .caibx --digest=blake3 (pycatar) vs sha512-256 (casync)",
                    ["casync", "make", f"--store={out('c3.castr')}", out("c3.caibx"), blob],
                    py + ["make", "--digest=blake3", f"--store={out('p3.castr')}", out("p3.caibx"), blob],
                    (out("c3.castr"), out("c3.caibx"),), (out("p3.castr"), out("p3.caibx"),)))
    return res


def bench(case: Case, repeat: int) -> Result:
    times = {"casync": [], "pycatar": []}
    rss = {"casync": 0.0, "pycatar": 0.0}
    for _ in range(repeat):
        for who in ("casync", "pycatar"):  # alternate, same data
            for p in getattr(case, f"{who}_clean"):
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    os.unlink(p)
            wall, peak = run_measured(getattr(case, who))
            times[who].append(wall)
            rss[who] = max(rss[who], peak)
    return Result(case.name, statistics.median(times["casync"]), statistics.median(times["pycatar"]),
                  rss["casync"], rss["pycatar"])


def table(results: list[Result]) -> str:
    lines = ["| case | casync s | pycatar s | pycatar/casync | casync MiB | pycatar MiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.casync_s:.2f} | {r.pycatar_s:.2f} | {r.ratio:.2f} | "
                     f"{r.casync_rss_mib:.0f} | {r.pycatar_rss_mib:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny data (smoke test)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--csv", help="also write the results as CSV here")
    ap.add_argument("--only", help="run only cases whose name contains this text")
    args = ap.parse_args(argv)
    if shutil.which("casync") is None:
        print("casync is not installed (apt-get install casync)", file=sys.stderr)
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="pycatar-bench-") as tmp:
        for case in cases(tmp, args.quick):
            if args.only and args.only not in case.name:
                continue
            results.append(bench(case, args.repeat))
            print(f"{case.name}: casync {results[-1].casync_s:.2f}s, pycatar {results[-1].pycatar_s:.2f}s, "
                  f"ratio {results[-1].ratio:.2f}", file=sys.stderr)
    text = table(results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("case,casync_s,pycatar_s,ratio,casync_rss_mib,pycatar_rss_mib\n")
            for r in results:
                f.write(f"{r.name},{r.casync_s:.4f},{r.pycatar_s:.4f},{r.ratio:.4f},"
                        f"{r.casync_rss_mib:.1f},{r.pycatar_rss_mib:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
