"""``pycatar info INDEX``: an index's statistics and where its chunks would come from
(:mod:`pycatar.info`)."""

from __future__ import annotations

import sys

from .. import info as _info
from ..errors import UsageError
from ..index import IndexReader
from .common import chunk_stores, emit_json, index_argument, open_index
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``info INDEX``: statistics; with --seed/--store/--chunk-cache where extraction would find each chunk."""
    if len(args) != 1:
        raise UsageError("Usage: pycatar info [--seed=…] [--store=…] [--chunk-cache=…] [--json] INDEX")
    source, kind = index_argument(opts, args, "info", "INDEX")
    stores = chunk_stores(opts, source) if (opts.store or opts.extra_stores or opts.chunk_cache or opts.seeds) else None
    with open_index(opts, source) as f, IndexReader(f) as reader:
        result = _info.index_info(reader, kind=kind, stores=stores, seeds=opts.seeds, seed_cache=opts.cache,
                                  warn=lambda message: sys.stderr.write(message + "\n"))
    if opts.json:
        emit_json(result.as_dict())
    else:
        print("\n".join(result.lines()))
    return 0
