#!/usr/bin/env python3
"""Extraction over HTTP, side by side: pycatar and casync through the same ``pycatar serve`` on
loopback, with and without an injected delay per request, and through ``python3 -m http.server``
(HTTP/1.0, a connection per request, a listen queue of 5); then pycatar from the local store,
through ``pycatar serve`` and through nginx (if installed), with each side's CPU time.

    python3 benchmarks/network.py                    # 32 MiB (twice) with 20 ms per request, 192 MiB without
    python3 benchmarks/network.py --repeat 5 --out net.md
    python3 benchmarks/network.py --quick --repeat 1 # tiny data: checks the harness works
    python3 benchmarks/network.py --sides-only --repeat 7 --pinned

The second table gives, per side, the median wall time (and its spread), its ratio to the local
extraction, the client's CPU time (user + system, from the kernel's rusage) and the server's (from
/proc, over the same run): on a shared machine CPU time varies less than wall time.  With
``--pinned`` the same three sides run again with the client on CPU 0 and the server on CPU 1
(the local extraction on CPU 0 alone): the client's own cost, without the server's CPU on its cores.

The delay is added by wrapping the server's application (``pycatar.server.make_app``) with a
middleware that sleeps before answering, as a round trip to a distant server would: casync fetches
one chunk after the other and pays it once per chunk; pycatar has ``--concurrency`` requests in
flight and asks ``pycatar serve`` for up to 64 chunks a request (spec/store.md, SERVE-5).  The second
delayed blob is three shuffled copies of the same random blocks, so that a third of its chunk ids
occur more than once: each is fetched once (SEED-7), in a batch like the others.  The lower
bound of a delayed case is the delay times the rounds of requests pycatar cannot avoid: the index
and, at the same time, the question whether the server answers batched reads, then the batches,
``--concurrency`` at once.
Runs alternate (as in bench.py) and every run extracts to a fresh output.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import make_blob, run_measured  # noqa: E402  (the shared measurement helpers)

BATCH_IDS = 64  # chunks a batched read of pycatar serve answers at most (SERVE-5)


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


class Process:
    """A server process of the benchmark: ``proc``, ``pid``, ``url``."""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Listening(Process):
    """A server started with ``argv`` to listen on loopback ``port``: ready once something does."""

    def __init__(self, argv: list[str], port: int, what: str):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}/"
        wait_listening(self.proc, port, what)


class Server(Process):
    """``pycatar serve`` (this file's ``--serve``), each answer ``delay`` seconds late."""

    def __init__(self, store: str, index_dir: str, delay: float):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", store, index_dir,
                                      str(delay)], stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise SystemExit("the server did not start")


class Nginx(Listening):
    """nginx (one process, no access log) serving ``root`` on a free loopback port."""

    def __init__(self, binary: str, root: str, workdir: str):
        port = free_port()
        os.makedirs(workdir, exist_ok=True)
        conf = os.path.join(workdir, "nginx.conf")
        temp = " ".join(f"{k}_temp_path {workdir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write(f"daemon off; master_process off; worker_processes 1; pid {workdir}/nginx.pid;\n"
                    f"error_log {workdir}/error.log; events {{ worker_connections 256; }}\n"
                    f"http {{ access_log off; {temp} types {{ }} default_type application/octet-stream;\n"
                    f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n")
        super().__init__([binary, "-p", workdir, "-c", conf], port, "nginx")


class StdlibServer(Listening):
    """``python3 -m http.server`` serving ``root`` on a free loopback port, as users start it for a
    quick test: HTTP/1.0 (a connection per request) and a listen queue of 5."""

    def __init__(self, root: str):
        port = free_port()
        super().__init__([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                          root], port, "python3 -m http.server")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, what: str) -> None:
    """Until something listens on ``port`` (``proc`` is killed if it ends or 10 s pass first)."""
    import socket

    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"{what} did not start")
            time.sleep(0.05)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time used so far by every thread of process ``pid`` (0 for None)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def measure_sides(name: str, sides: list[tuple[str, list[str], int | None]], repeat: int) -> list[dict]:
    """Runs each side (label, argv with ``{run}`` ending with the output, server pid or None) in
    turn, the order reversed every other round; per side the median wall time, its spread, and the
    median CPU time of the client and of the server during the run.  Only the first run's outputs
    are kept (``--dir /dev/shm`` then holds a few of them, not every run's)."""
    import statistics

    got = {label: [] for label, _, _ in sides}
    for run in range(repeat):
        for label, argv, pid in (sides if run % 2 == 0 else sides[::-1]):
            argv = [x.replace("{run}", str(run)) for x in argv]
            before = cpu_seconds(pid)
            wall, peak, cpu = run_measured(argv)
            got[label].append((wall, cpu, cpu_seconds(pid) - before, peak))
            if run:  # one large file: removing it does not slow what follows (run 0's is checked)
                os.unlink(argv[-1])
    rows = []
    for label, _, _ in sides:
        walls = [g[0] for g in got[label]]
        rows.append({"case": name, "side": label, "s": statistics.median(walls), "min": min(walls),
                     "max": max(walls), "client_cpu": statistics.median(g[1] for g in got[label]),
                     "server_cpu": statistics.median(g[2] for g in got[label]),
                     "mib": max(g[3] for g in got[label])})
    for r in rows:
        r["ratio"] = r["s"] / rows[0]["s"]
        print(f"{name}: {r['side']} {r['s']:.2f}s ({r['ratio']:.2f}x), CPU {r['client_cpu']:.2f}+{r['server_cpu']:.2f}",
              file=sys.stderr)
    return rows


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


def make_repeating_blob(path: str, size: int) -> None:
    """Random blocks of 20-200 KB, each written three times in shuffled orders: about a third of
    the chunks are ids that occur more than once (SEED-7). Deterministic."""
    rnd = random.Random(3)
    blocks, total = [], 0
    while total < size // 3:
        b = rnd.randbytes(rnd.randrange(20_000, 200_000))
        blocks.append(b)
        total += len(b)
    with open(path + ".part", "wb") as f:
        for _ in range(3):
            order = list(range(len(blocks)))
            rnd.shuffle(order)
            for i in order:
                f.write(blocks[i])
    os.rename(path + ".part", path)


def chunk_counts(index: str) -> tuple[int, int]:
    """(distinct chunk ids, chunks) of an index."""
    from pycatar.index import IndexReader

    with IndexReader(index) as r:
        ids = [c.id for c in r.chunks()]
    return len(set(ids)), len(ids)


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
    ap.add_argument("--sides-only", action="store_true", help="only the local / pycatar serve / nginx table")
    ap.add_argument("--pinned", action="store_true",
                    help="also the three sides with the client on CPU 0 and the server on CPU 1")
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
        make_repeating_blob(out("rep.bin"), sizes[0] << 20)
        for name, mib in (("small", sizes[0]), ("large", sizes[1]), ("rep", None)):
            if mib is not None:
                make_blob(out(f"{name}.bin"), mib << 20)
            subprocess.run(py + ["make", f"--store={out('store')}", os.path.join(web, f"{name}.caibx"),
                                 out(f"{name}.bin")], check=True, capture_output=True)
        delayed = Server(out("store"), web, args.delay)
        plain = Server(out("store"), web, 0)
        os.symlink(out("store"), os.path.join(web, "store"))  # (for the static servers: web/store/)
        stdlib = StdlibServer(web)
        nginx_binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx_binary:
            nginx = Nginx(nginx_binary, web, out("nginx"))
        else:
            nginx = None
            print("nginx is not installed: its side is left out", file=sys.stderr)
        sides = []
        try:
            def casync_vs_pycatar(name: str, url: str, index: str, tag: str, store: str = "") -> dict:
                return measure(name, ("casync", ["casync", "extract", "--seed-output=no", f"--store={url}{store}",
                                                 url + index, out(f"c{tag}{{run}}.out")]),
                               ("pycatar", py + ["extract", "--seed-output=no", conc, f"--store={url}{store}",
                                                 url + index, out(f"p{tag}{{run}}.out")]), args.repeat)

            def delayed_bound(distinct: int) -> float:
                """The index (and meanwhile the question whether the server batches), then the
                batches of the distinct chunks, --concurrency at once: one delay each round."""
                return args.delay * (1 + -(-(-(-distinct // BATCH_IDS)) // args.concurrency))

            if not args.sides_only:
                n, _ = chunk_counts(os.path.join(web, "small.caibx"))
                rows.append(casync_vs_pycatar(
                    f"extract .caibx, {sizes[0]} MiB ({n} chunks), {args.delay * 1000:.0f} ms per request",
                    delayed.url, "small.caibx", "d"))
                rows[-1]["bound"] = delayed_bound(n)
                n, every = chunk_counts(os.path.join(web, "rep.caibx"))
                rows.append(casync_vs_pycatar(
                    f"extract .caibx, {sizes[0]} MiB, repeated chunks ({n} distinct of {every}), "
                    f"{args.delay * 1000:.0f} ms per request", delayed.url, "rep.caibx", "r"))
                rows[-1]["bound"] = delayed_bound(n)
                rows.append(casync_vs_pycatar(f"extract .caibx, {sizes[1]} MiB, loopback", plain.url, "large.caibx",
                                              "l"))
                rows.append(casync_vs_pycatar(f"extract .caibx, {sizes[0]} MiB, `python3 -m http.server`",
                                              stdlib.url, "small.caibx", "h", "store/"))
            rounds = [("", [], None)]
            if args.pinned and len(os.sched_getaffinity(0)) >= 2:
                rounds.append((", client on CPU 0, server on CPU 1", ["taskset", "-c", "0"], {1}))
            for title, prefix, server_cpus in rounds:
                tag = "p" if prefix else ""
                http_sides = [("pycatar serve", plain, "")] + ([("nginx", nginx, "store/")] if nginx else [])
                everyone = set(range(os.cpu_count() or 1))
                for _, srv, _ in http_sides:
                    pin(srv.pid, server_cpus or everyone)
                extract = prefix + py + ["extract", "--seed-output=no"]
                round_sides = [("local store", extract + [f"--store={out('store')}", os.path.join(web, "large.caibx"),
                                                          out(tag + "ll{run}.out")], None)]
                for label, srv, sub in http_sides:
                    round_sides.append((label, extract + [conc, f"--store={srv.url}{sub}", f"{srv.url}large.caibx",
                                                          out(tag + "l" + label[0] + "{run}.out")], srv.pid))
                try:
                    sides += measure_sides(f"extract .caibx, {sizes[1]} MiB{title}", round_sides, args.repeat)
                finally:
                    for _, srv, _ in http_sides:
                        pin(srv.pid, everyone)
        finally:
            delayed.stop()
            plain.stop()
            stdlib.stop()
            if nginx:
                nginx.stop()
        want = open(out("large.bin"), "rb").read()
        checked = ["lp0.out"] + (["ln0.out"] if nginx else []) + ([] if args.sides_only else ["pl0.out", "cl0.out"])
        for f in checked:
            if open(out(f), "rb").read() != want:
                raise SystemExit(f"{f}: wrong bytes")
        if not args.sides_only:
            want = open(out("rep.bin"), "rb").read()
            for f in ("pr0.out", "cr0.out"):
                if open(out(f), "rb").read() != want:
                    raise SystemExit(f"{f}: wrong bytes")
            want = open(out("small.bin"), "rb").read()
            for f in ("ph0.out", "ch0.out", "pd0.out", "cd0.out"):
                if open(out(f), "rb").read() != want:
                    raise SystemExit(f"{f}: wrong bytes")
    lines = []
    if rows:
        lines += ["| case | A | A s (min-max) | B | B s (min-max) | B/A | A MiB | B MiB | lower bound s |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        bound = f"{r['bound']:.2f}" if "bound" in r else ""
        lines.append(f"| {r['case']} | {r['a']} | {r['a_s']:.2f} ({r['a_min']:.2f}-{r['a_max']:.2f}) | {r['b']} | "
                     f"{r['b_s']:.2f} ({r['b_min']:.2f}-{r['b_max']:.2f}) | {r['ratio']:.2f} | "
                     f"{r['a_mib']:.0f} | {r['b_mib']:.0f} | {bound} |")
    if rows:
        lines.append("")
    lines += ["| case | side | s (min-max) | / local | client CPU s | server CPU s | CPU s in all | MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sides:
        lines.append(f"| {r['case']} | {r['side']} | {r['s']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | {r['ratio']:.2f} | "
                     f"{r['client_cpu']:.2f} | {r['server_cpu']:.2f} | {r['client_cpu'] + r['server_cpu']:.2f} | "
                     f"{r['mib']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
