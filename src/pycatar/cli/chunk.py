"""``pycatar chunk FILE|-``: where the chunker cuts a file (:mod:`pycatar.chunker`)."""

from __future__ import annotations

import sys
from ..pool import ThreadPool

from .. import blob, chunker
from ..errors import UsageError
from .common import chunk_sizes, open_index, strip_file_url
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``chunk FILE``: where the chunker cuts FILE and the chunk ids, one ``START SIZE ID`` line each
    (tab-separated, as desync prints them); nothing is stored."""
    if len(args) != 1:
        raise UsageError("Usage: pycatar chunk [--chunk-size=…] [--digest=…] FILE|-")
    sizes = chunk_sizes(opts) or chunker.DEFAULT_CHUNK_SIZES
    path = strip_file_url(args[0])
    src = sys.stdin.buffer if path == "-" else open_index(opts, path)
    write = sys.stdout.write
    with src, ThreadPool(2, "pycatar") as ex:
        start = 0
        for end, cid, _data in blob.chunk_stream(src, chunker.Chunker(*sizes), opts.digest, executor=ex):
            write(f"{start}\t{end - start}\t{cid.hex()}\n")
            start = end
    return 0
