#!/usr/bin/env python3
"""Extraction over HTTP, side by side: pycatar and casync through the same ``pycatar serve`` on
loopback, with and without an injected delay per request, and pycatar over HTTP against pycatar
from the local store.

    python3 benchmarks/network.py                    # 32 MiB with 20 ms per request, 192 MiB without
    python3 benchmarks/network.py --repeat 5 --out net.md
    python3 benchmarks/network.py --quick --repeat 1 # tiny data: checks the harness works

The delay is added by wrapping the server's application (``pycatar.server.make_app``) with a
middleware that sleeps before answering, as a round trip to a distant server would: casync fetches
one chunk after the other and pays it once per chunk; pycatar has ``--concurrency`` requests in
flight.  The lower bound of a delayed case is the number of requests times the delay over the
concurrency.  Runs alternate (as in bench.py) and every run extracts to a fresh output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import make_blob, run_measured  # noqa: E402  (the shared measurement helpers)


def serve_forever(store: str, index_dir: str, delay: float) -> None:
    """The server process: ``pycatar serve``'s application, each answer delayed by ``delay`` s."""
    import asyncio

    from aiohttp import web

    from pycatar import server

    app = server.make_app(store, index_dir)
    if delay > 0:
        @web.middleware
        async def delayed(request, handler):
            await asyncio.sleep(delay)
            return await handler(request)

        app.middlewares.append(delayed)
    server.run(app, "127.0.0.1", 0, on_ready=lambda url: print(url, flush=True))


class Server:
    def __init__(self, store: str, index_dir: str, delay: float):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", store, index_dir,
                                      str(delay)], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise SystemExit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def measure(name: str, a: tuple[str, list[str]], b: tuple[str, list[str]], repeat: int) -> dict:
    """Runs ``a`` and ``b`` alternately (``{run}`` in an argument: the run's number); medians."""
    import statistics

    walls = {a[0]: [], b[0]: []}
    rss = {a[0]: 0.0, b[0]: 0.0}
    for run in range(repeat):
        for who, argv in ((a, b) if run % 2 == 0 else (b, a)):
            wall, peak, _cpu = run_measured([x.replace("{run}", str(run)) for x in argv])
            walls[who].append(wall)
            rss[who] = max(rss[who], peak)
    res = {"case": name, "a": a[0], "b": b[0]}
    for key, who in (("a", a[0]), ("b", b[0])):
        res[key + "_s"] = statistics.median(walls[who])
        res[key + "_min"] = min(walls[who])
        res[key + "_max"] = max(walls[who])
        res[key + "_mib"] = rss[who]
    res["ratio"] = res["b_s"] / res["a_s"]
    print(f"{name}: {a[0]} {res['a_s']:.2f}s, {b[0]} {res['b_s']:.2f}s, ratio {res['ratio']:.2f}", file=sys.stderr)
    return res


def chunk_count(index: str) -> int:
    from pycatar.index import IndexReader

    with IndexReader(index) as r:
        return len({c.id for c in r.chunks()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.02, help="seconds added to every answer (default 0.02)")
    ap.add_argument("--delayed-size", type=int, default=32, help="MiB of the blob for the delayed case")
    ap.add_argument("--size", type=int, default=192, help="MiB of the blob for the loopback cases")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="tiny data (smoke test)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--dir", help="where data and outputs go (default: a new directory in $TMPDIR)")
    ap.add_argument("--serve", nargs=3, metavar=("STORE", "INDEX_DIR", "DELAY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve_forever(args.serve[0], args.serve[1], float(args.serve[2]))
        return 0
    if shutil.which("casync") is None:
        print("casync is not installed (apt-get install casync)", file=sys.stderr)
        return 1
    import compileall

    import pycatar

    compileall.compile_dir(os.path.dirname(pycatar.__file__), quiet=1)
    py = [sys.executable, "-m", "pycatar"]
    conc = f"--concurrency={args.concurrency}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="pycatar-net-", dir=args.dir) as tmp:
        out = lambda n: os.path.join(tmp, n)
        web = out("web")
        os.makedirs(web)
        sizes = ((1, 2) if args.quick else (args.delayed_size, args.size))
        for name, mib in (("small", sizes[0]), ("large", sizes[1])):
            make_blob(out(f"{name}.bin"), mib << 20)
            subprocess.run(py + ["make", f"--store={out('store')}", os.path.join(web, f"{name}.caibx"),
                                 out(f"{name}.bin")], check=True, capture_output=True)
        delayed = Server(out("store"), web, args.delay)
        plain = Server(out("store"), web, 0)
        try:
            n = chunk_count(os.path.join(web, "small.caibx"))
            rows.append(measure(
                f"extract .caibx, {sizes[0]} MiB ({n} chunks), {args.delay * 1000:.0f} ms per request",
                ("casync", ["casync", "extract", "--seed-output=no", f"--store={delayed.url}",
                            f"{delayed.url}small.caibx", out("cd{run}.out")]),
                ("pycatar", py + ["extract", "--seed-output=no", conc, f"--store={delayed.url}",
                                  f"{delayed.url}small.caibx", out("pd{run}.out")]),
                args.repeat))
            rows[-1]["bound"] = n * args.delay / args.concurrency
            rows.append(measure(
                f"extract .caibx, {sizes[1]} MiB, loopback",
                ("casync", ["casync", "extract", "--seed-output=no", f"--store={plain.url}",
                            f"{plain.url}large.caibx", out("cl{run}.out")]),
                ("pycatar", py + ["extract", "--seed-output=no", conc, f"--store={plain.url}",
                                  f"{plain.url}large.caibx", out("pl{run}.out")]),
                args.repeat))
            rows.append(measure(
                f"extract .caibx, {sizes[1]} MiB: local store vs loopback HTTP",
                ("pycatar local", py + ["extract", "--seed-output=no", f"--store={out('store')}",
                                        os.path.join(web, "large.caibx"), out("ll{run}.out")]),
                ("pycatar http", py + ["extract", "--seed-output=no", conc, f"--store={plain.url}",
                                       f"{plain.url}large.caibx", out("lh{run}.out")]),
                args.repeat))
        finally:
            delayed.stop()
            plain.stop()
        want = open(out("large.bin"), "rb").read()
        for f in ("pl0.out", "lh0.out", "cl0.out"):
            if open(out(f), "rb").read() != want:
                raise SystemExit(f"{f}: wrong bytes")
    lines = ["| case | A | A s (min-max) | B | B s (min-max) | B/A | A MiB | B MiB | lower bound s |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        bound = f"{r['bound']:.2f}" if "bound" in r else ""
        lines.append(f"| {r['case']} | {r['a']} | {r['a_s']:.2f} ({r['a_min']:.2f}-{r['a_max']:.2f}) | {r['b']} | "
                     f"{r['b_s']:.2f} ({r['b_min']:.2f}-{r['b_max']:.2f}) | {r['ratio']:.2f} | "
                     f"{r['a_mib']:.0f} | {r['b_mib']:.0f} | {bound} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
