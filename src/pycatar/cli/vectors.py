"""``pycatar vectors verify|generate|list``: the command of the test-vector harness
(:mod:`pycatar.vectors.harness`) and generator (:mod:`pycatar.vectors.generate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..vectors.generate import generate
from ..vectors.harness import MANIFEST, Outcome, default_vectors_dir, load_vectors, make_adapter, verify


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"vectors: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pycatar vectors", description="Check an implementation against the test vectors, "
                "or regenerate them.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    v = sub.add_parser("verify", help="check an implementation against the vectors")
    v.add_argument("--impl", default="pycatar",
                   help="pycatar (default), pycatar-cli, casync, casync:PATH or cmd:CONFIG.json")
    v.add_argument("--vectors", metavar="DIR", help="the vectors directory (default: the source tree's vectors/)")
    v.add_argument("--only", metavar="TEXT", action="append", help="only vectors whose id contains TEXT")
    v.add_argument("--tmpdir", metavar="DIR", help="where to materialise inputs (default: $TMPDIR)")
    v.add_argument("--timeout", type=int, metavar="S", help="seconds allowed per command")
    v.add_argument("--keep", action="store_true", help="keep the scratch directories")
    v.add_argument("-v", "--verbose", action="store_true", help="also print passed and skipped vectors")
    g = sub.add_parser("generate", help="regenerate the vectors (needs root)")
    g.add_argument("--out", metavar="DIR", required=True, help="the vectors directory to write")
    g.add_argument("--tmpdir", metavar="DIR", help="where to materialise inputs (default: $TMPDIR)")
    sub.add_parser("list", help="list the vectors and the requirements they cover").add_argument(
        "--vectors", metavar="DIR")
    return p


def main(args: list[str], entry=None) -> int:
    """``pycatar vectors ...``; ``entry``: the command's entry point, for ``--impl pycatar``."""
    ns = _parser().parse_args(args)
    if ns.action == "generate":
        n = generate(ns.out, entry, tmpdir=ns.tmpdir)
        print(f"{n} vectors written to {ns.out}")
        return 0
    root = ns.vectors or default_vectors_dir()
    if ns.action == "list":
        vectors, _ = load_vectors(Path(root))
        for v in vectors:
            print(f"{v.id}: {' '.join(v.data.get('covers', []))}")
        return 0
    adapter = make_adapter(ns.impl, ns.timeout, entry)
    out = sys.stdout

    def log(o: Outcome) -> None:
        if o.status == "fail":
            out.write(f"FAIL {o.vector}: {o.message}\n")
        elif ns.verbose:
            out.write(f"{o.status} {o.vector}{': ' + o.message if o.message else ''}\n")
        out.flush()

    outcomes, problems = verify(root, adapter, only=ns.only, tmpdir=ns.tmpdir, keep=ns.keep, log=log)
    for msg in problems:
        out.write(f"FAIL {MANIFEST}: {msg}\n")
    count = {s: sum(1 for o in outcomes if o.status == s) for s in ("pass", "fail", "skip")}
    failed = count["fail"] + len(problems)
    out.write(f"{count['pass']} passed, {failed} failed, {count['skip']} skipped\n")
    return 1 if failed else 0
