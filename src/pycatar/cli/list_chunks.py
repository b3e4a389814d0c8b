"""``pycatar list-chunks INDEX``: the chunk ids of an index (:mod:`pycatar.index`)."""

from __future__ import annotations

import sys

from ..errors import UsageError
from ..index import IndexReader
from .common import index_argument, open_index
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``list-chunks INDEX``: the chunk ids of an index in order (``--json``: with offsets and sizes)."""
    if len(args) != 1:
        raise UsageError("Usage: pycatar list-chunks [--json] INDEX")
    source, _kind = index_argument(opts, args, "list-chunks", "INDEX")
    write = sys.stdout.write
    with open_index(opts, source) as f, IndexReader(f) as reader:
        for ref in reader.chunks():
            if opts.json:
                write(f'{{"id": "{ref.id.hex()}", "start": {ref.start}, "size": {ref.size}}}\n')
            else:
                write(ref.id.hex() + "\n")
    return 0
