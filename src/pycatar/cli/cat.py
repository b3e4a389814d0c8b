"""``pycatar cat INDEX [OFFSET [LENGTH]]``: bytes of the stream an index describes, to standard output."""

from __future__ import annotations

import sys

from .. import operations
from ..errors import UsageError
from .common import chunk_stores, index_argument, log, remote, signature_keys
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
    operations.cat(source, sys.stdout.buffer, *nums, stores=chunk_stores(opts, source), remote=remote(opts),
                   keys=signature_keys(opts), on_verified=lambda line: log(opts, line))
    return 0
