#!/usr/bin/env python3
"""How lazy and how fast ``pycatar mount`` is (issue 16), on a local store.

    python3 benchmarks/mount.py            # the Python standard library tree, a 200 MiB file
    python3 benchmarks/mount.py --quick    # tiny data, for a smoke test

1. Chunks: the Python standard library as a ``.caidx``; looking up and reading one small file
   (``json/tool.py``) through :class:`pycatar.mount.Image` (the mount's own code, without the kernel)
   fetches N chunks of the index's total; listing one directory fetches M.
2. Throughput: ``cat`` of a 200 MiB file through the mounted ``.caidx`` against
   ``pycatar extract INDEX DIR SUBPATH`` of that file from the same store (median of ``--repeat``).
Needs root, /dev/fuse and pyfuse3.  A remote (HTTP) store is not measured yet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ)  # pycatar as installed (or as PYTHONPATH names it)


def pycatar(*args) -> None:
    subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], check=True, env=ENV,
                   stdout=subprocess.DEVNULL)


def chunk_counts(tmp: str, quick: bool) -> str:
    from pycatar.index import IndexReader
    from pycatar.mount import Image

    if quick:
        src = os.path.join(tmp, "lib")
        os.makedirs(os.path.join(src, "json"))
        for i in range(50):
            with open(os.path.join(src, f"m{i}.py"), "w") as f:
                f.write(f"# module {i}\n" * 2000)
        with open(os.path.join(src, "json", "tool.py"), "w") as f:
            f.write("print('tool')\n")
    else:
        src = sysconfig.get_paths()["stdlib"]
    index, store = os.path.join(tmp, "lib.caidx"), os.path.join(tmp, "S")
    pycatar("make", f"--store={store}", index, src)
    total = IndexReader(index).count
    image = Image(index, "archive-index", [store])
    try:
        json_dir = image.remember(image.lookup(1, b"json"))
        tool = image.lookup(json_dir, b"tool.py")[0]
        image.read(tool, 0, tool.size, True)
        one_file = image.stream.chunks_fetched
        image.children(json_dir)
        listing = image.stream.chunks_fetched - one_file
    finally:
        image.close()
    return (f"| read json/tool.py (lookup + read) | {one_file} of {total} chunks |\n"
            f"| then list json/ | {listing} more |\n")


def throughput(tmp: str, quick: bool, repeat: int) -> str:
    src = os.path.join(tmp, "big")
    os.makedirs(src)
    size = (4 if quick else 200) << 20
    with open(os.path.join(src, "file"), "wb") as f:
        f.write(os.urandom(size))
    index, store, mnt = os.path.join(tmp, "big.caidx"), os.path.join(tmp, "SB"), os.path.join(tmp, "mnt")
    pycatar("make", f"--store={store}", index, src)
    os.makedirs(mnt)
    cat, extract = [], []
    for i in range(repeat):
        out = os.path.join(tmp, f"out{i}")
        t0 = time.monotonic()
        pycatar("extract", f"--store={store}", index, out, "file")
        extract.append(time.monotonic() - t0)
        pycatar("mount", f"--store={store}", index, mnt)
        try:
            t0 = time.monotonic()
            subprocess.run(["cat", os.path.join(mnt, "file")], check=True, stdout=subprocess.DEVNULL)
            cat.append(time.monotonic() - t0)
        finally:
            subprocess.run(["fusermount3", "-u", mnt], check=True)
            time.sleep(0.2)  # the server exits
    c, e = statistics.median(cat), statistics.median(extract)
    return (f"| cat {size >> 20} MiB through the mount | {c:.2f} s |\n"
            f"| pycatar extract of that file | {e:.2f} s |\n| ratio | {c / e:.2f} |\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print("| measure | value |\n|---|---|")
        print(chunk_counts(tmp, args.quick), end="")
        print(throughput(tmp, args.quick, args.repeat), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
