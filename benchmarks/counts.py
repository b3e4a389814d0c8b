#!/usr/bin/env python3
"""Count-heavy inputs (issue 14): many entries, many chunks, tiny chunks -- pycatar and casync side by
side, alternating, ``--repeat`` times each; median wall time, its spread, CPU time and peak RSS.

    python3 benchmarks/counts.py --dir /tmp/counts              # builds the inputs once, then measures
    python3 benchmarks/counts.py --dir /tmp/counts --only list  # one case
    python3 benchmarks/counts.py --quick --repeat 1             # tiny inputs: checks the harness works

Inputs (kept in ``--dir`` and reused): a catar of one directory of ``--entries`` empty files (made by
casync from a tree on disk); ``.caibx`` files of ``--chunks`` distinct random 16-byte chunk ids whose
chunks no store holds (both tools fail at the first chunk: what is measured is the bookkeeping before
it); a casync ``.caibx`` of ``--tiny`` bytes cut into one-byte chunks, with its store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time


def run(argv: list[str]) -> tuple[float, float, float, int]:
    """(wall seconds, peak RSS MiB, CPU seconds, exit status) of one child, its output discarded."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, stdout=null, stderr=null)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, proc.returncode


def wide_catar(d: str, n: int) -> str:
    out = os.path.join(d, f"wide{n}.catar")
    if not os.path.exists(out):
        tree = os.path.join(d, f"wide{n}", "d")
        os.makedirs(tree, exist_ok=True)
        for i in range(n):
            os.close(os.open(os.path.join(tree, "f%07d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
        part = out[:-len(".catar")] + ".part.catar"  # casync goes by the suffix
        subprocess.run(["casync", "make", part, os.path.dirname(tree)], check=True, stdout=subprocess.DEVNULL)
        os.rename(part, out)
    return out


def random_index(d: str, n: int) -> str:
    """A .caibx of n random 16-byte chunk ids (INDEX record, TABLE header, items, tail)."""
    out = os.path.join(d, f"random{n}.caibx")
    if not os.path.exists(out):
        with open(out + ".tmp", "wb") as f:
            f.write(struct.pack("<QQQQQQQQ", 48, 0x96824D9C7B129FF9, 0xB000000000000000, 16, 16, 16,
                                2**64 - 1, 0xE75B9E112F17417D))
            for first in range(0, n, 65536):
                k = min(65536, n - first)
                ids = os.urandom(32 * k)
                f.write(b"".join(struct.pack("<Q", (first + i + 1) * 16) + ids[32 * i:32 * i + 32] for i in range(k)))
            f.write(struct.pack("<QQQQQ", 0, 0, 48, 16 + 40 * n + 40, 0x4B4F050E5549ECD1))
        os.rename(out + ".tmp", out)
    os.makedirs(os.path.join(d, "empty.castr"), exist_ok=True)
    return out


def tiny_index(d: str, n: int) -> tuple[str, str]:
    out, store = os.path.join(d, f"tiny{n}.caibx"), os.path.join(d, "tiny.castr")
    if not os.path.exists(out):
        blob = os.path.join(d, f"tiny{n}")
        with open(blob, "wb") as f:
            f.write(os.urandom(n))
        part = out[:-len(".caibx")] + ".part.caibx"
        subprocess.run(["casync", "make", "--chunk-size=1:1:1", f"--store={store}", part, blob],
                       check=True, stdout=subprocess.DEVNULL)
        os.rename(part, out)
    return out, store


def cases(args) -> list[tuple[str, list[str], list[str], bool]]:
    """(name, casync argv, pycatar argv with {out}, whether both must fail)"""
    d = args.dir
    py = [sys.executable, "-m", "pycatar"]
    wide = wide_catar(d, args.entries)
    out = [(f"list, {args.entries:,} entries in one directory", ["casync", "list", wide], py + ["list", wide], False),
           (f"digest, {args.entries:,} entries in one directory", ["casync", "digest", wide], py + ["digest", wide],
            False)]
    empty = os.path.join(d, "empty.castr")
    for n in args.chunks:
        idx = random_index(d, n)
        out.append((f"extract .caibx, {n:,} distinct chunks missing", ["casync", "extract", f"--store={empty}", idx,
                    os.path.join(d, "o-missing")], py + ["extract", f"--store={empty}", idx,
                    os.path.join(d, "o-missing")], True))
    if args.tiny:
        idx, store = tiny_index(d, args.tiny)
        out.append((f"extract .caibx, {args.tiny:,} one-byte chunks", ["casync", "extract", f"--store={store}", idx,
                    os.path.join(d, "o-tiny-c{run}")], py + ["extract", f"--store={store}", idx,
                    os.path.join(d, "o-tiny-p{run}")], False))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=False, help="where inputs are built (and reused) and outputs go")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, nargs="*", default=[500_000, 5_000_000])
    ap.add_argument("--tiny", type=int, default=1 << 20, help="bytes cut into one-byte chunks (0: skip)")
    ap.add_argument("--quick", action="store_true", help="tiny inputs (smoke test)")
    ap.add_argument("--only", help="run only cases whose name contains this text")
    args = ap.parse_args(argv)
    if args.quick:
        args.entries, args.chunks, args.tiny = 1000, [2000], 2000
    if not args.dir:
        import tempfile

        args.dir = tempfile.mkdtemp(prefix="pycatar-counts-")
    os.makedirs(args.dir, exist_ok=True)
    print("| case | casync s (min-max) | pycatar s (min-max) | pycatar/casync | casync CPU s | pycatar CPU s "
          "| casync MiB | pycatar MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, c_argv, p_argv, both_fail in cases(args):
        if args.only and args.only not in name:
            continue
        res = {"casync": [], "pycatar": []}
        for r in range(args.repeat):
            for who in (("casync", "pycatar") if r % 2 == 0 else ("pycatar", "casync")):
                argv = [a.replace("{run}", str(r)) for a in (c_argv if who == "casync" else p_argv)]
                wall, rss, cpu, rc = run(argv)
                if (rc != 0) != both_fail:
                    raise SystemExit(f"{who}: unexpected exit status {rc}: {' '.join(argv)}")
                res[who].append((wall, rss, cpu))
        c, p = res["casync"], res["pycatar"]
        cw, pw = statistics.median(x[0] for x in c), statistics.median(x[0] for x in p)
        print(f"| {name} | {cw:.2f} ({min(x[0] for x in c):.2f}-{max(x[0] for x in c):.2f}) "
              f"| {pw:.2f} ({min(x[0] for x in p):.2f}-{max(x[0] for x in p):.2f}) | {pw / cw:.2f} "
              f"| {statistics.median(x[2] for x in c):.2f} | {statistics.median(x[2] for x in p):.2f} "
              f"| {max(x[1] for x in c):.0f} | {max(x[1] for x in p):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
