"""Start-up time of pycatar's small verbs, side by side with casync and with the bare interpreter.

    PYTHONPATH=$PWD/src python3 benchmarks/startup.py [--runs N]

Makes a small tree's .catar and .caidx with casync, then runs, alternating, ``python3 -c pass``,
``casync list x.catar`` and ``python3 -m pycatar`` with list/mtree/stat/digest of the .catar and .caidx,
--version and --help (N runs each, default 15), and prints the median wall time, its spread (min-max)
and the median CPU time (user+sys, less disturbed by other load).  Then, from ``python3 -X importtime``
(median of N runs, steadier than the wall clock on a shared machine), the cumulative import time of
what ``list x.catar`` loads beyond the interpreter, and the largest parts.  Issue 18's goal: <= 0.08 s
for the small verbs on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _run(cmd: list[str], cwd: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _imports(cmd: list[str], cwd: str) -> dict[str, tuple[int, int, int]]:
    """module -> (self us, cumulative us, depth) from -X importtime"""
    p = subprocess.run([sys.executable, "-X", "importtime", *cmd], cwd=cwd, capture_output=True, text=True)
    out = {}
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "imported package" not in line:
            self_us, cum, name = line[len("import time:"):].split("|")
            depth = (len(name) - len(name.lstrip())) // 2
            out.setdefault(name.strip(), (int(self_us), int(cum), depth))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    casync = shutil.which("casync")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="pycatar-startup-") as tmp:
        os.makedirs(os.path.join(tmp, "tree", "d"))
        for i, name in enumerate(("a", "d/b", "d/c")):
            with open(os.path.join(tmp, "tree", name), "wb") as f:
                f.write(bytes([i]) * 3000)
        maker = [casync] if casync else [py, "-m", "pycatar"]
        for out in ("x.catar", "x.caidx"):
            subprocess.run([*maker, "make", out, "tree"], cwd=tmp, stdout=subprocess.DEVNULL, check=True)
        cases = {"python3 -c pass": [py, "-c", "pass"]}
        if casync:
            cases["casync list x.catar"] = [casync, "list", "x.catar"]
        for verb in ("list", "mtree", "stat", "digest"):
            for name in ("x.catar", "x.caidx"):
                cases[f"pycatar {verb} {name}"] = [py, "-m", "pycatar", verb, name]
        cases["pycatar --version"] = [py, "-m", "pycatar", "--version"]
        cases["pycatar --help"] = [py, "-m", "pycatar", "--help"]
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(args.runs):  # alternate: every case once per round
            for k, cmd in cases.items():
                times[k].append(_run(cmd, tmp))
        print(f"{'case':28} {'wall median':>11} {'(min-max)':>15} {'cpu median':>10}   ({args.runs} runs, alternating)")
        for k, rs in times.items():
            walls = [w for w, _ in rs]
            cpus = [c for _, c in rs]
            print(f"{k:28} {statistics.median(walls):9.3f} s  ({min(walls):.3f}-{max(walls):.3f}) "
                  f"{statistics.median(cpus):8.3f} s")
        runs = [_imports(["-m", "pycatar", "list", "x.catar"], tmp) for _ in range(args.runs)]
        bare = _imports(["-c", "pass"], tmp)
        names = [n for n in runs[0] if n not in bare]
        med = {n: (statistics.median(r.get(n, (0, 0, 0))[0] for r in runs),
                   statistics.median(r.get(n, (0, 0, 0))[1] for r in runs), runs[0][n][2]) for n in names}
        top = sum(c for s, c, d in med.values() if d == 0)
        print(f"\n-X importtime, list x.catar: {len(names)} modules beyond the bare interpreter, "
              f"{top / 1000:.1f} ms cumulative (median of {args.runs}); the largest:")
        for n, (s, c, d) in sorted(med.items(), key=lambda kv: -kv[1][1])[:15]:
            print(f"  {n:36} {c / 1000:6.1f} ms cumulative {s / 1000:6.1f} ms own")


if __name__ == "__main__":
    main()
