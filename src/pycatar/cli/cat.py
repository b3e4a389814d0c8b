"""``pycatar cat INDEX [OFFSET [LENGTH]]``: bytes of the stream an index describes, to standard output."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from ..blob import IndexStream
from ..errors import UsageError
from ..index import IndexReader
from .common import index_argument, open_index, chunk_stores
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``cat INDEX [OFFSET [LENGTH]]``: the bytes of the stream to standard output, fetching only the
    chunks that hold them."""

    if not 1 <= len(args) <= 3:
        raise UsageError("Usage: pycatar cat INDEX [OFFSET [LENGTH]]")
    source, _kind = index_argument(opts, args, "cat", "INDEX [OFFSET [LENGTH]]")
    nums = []
    for name, text in zip(("OFFSET", "LENGTH"), args[1:]):
        if not text.isdigit():
            raise UsageError(f"{name} must be a number of bytes, not {text!r}")
        nums.append(int(text))
    if sys.stdout.isatty():
        raise UsageError("Refusing to write binary data to a terminal; redirect standard output.")
    out = sys.stdout.buffer
    with open_index(opts, source) as f, IndexReader(f) as reader:
        stores = chunk_stores(opts, source)
        offset = nums[0] if nums else 0
        end = reader.blob_size if len(nums) < 2 else min(reader.blob_size, offset + nums[1])
        if offset > reader.blob_size:
            raise UsageError(f"OFFSET {offset} lies beyond the end of the stream ({reader.blob_size} bytes)")
        threads = max(stores.concurrency, 2)
        with ThreadPoolExecutor(threads, thread_name_prefix="pycatar") as ex, \
                IndexStream(reader, stores, executor=ex, readahead=2 * threads, cache_size=4) as stream:
            stream.seek(offset)
            left = end - offset
            while left > 0:
                data = stream.read(min(left, 1 << 20))
                if not data:
                    break
                out.write(data)
                left -= len(data)
    out.flush()
    return 0
