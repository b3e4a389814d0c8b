"""``pycatar gc BLOB_INDEX|ARCHIVE_INDEX...``: remove the chunks of a store no index references
(:func:`pycatar.store.gc`)."""

from __future__ import annotations

import contextlib
import sys

from ..errors import UsageError
from ..location import default_store_for, is_s3_url, local_path, open_store
from ..store import DEFAULT_GRACE, gc
from .common import emit_json, open_index, progress_bar, remote, strip_file_url
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    if not args:
        raise UsageError("Expected at least one argument.")

    location = opts.store or default_store_for(args[0])
    if is_s3_url(location):
        store = open_store(location, digest=opts.digest, remote=remote(opts))
    else:
        store = local_path(location)
        if store is None or "|" in location:
            raise UsageError("gc removes chunks from a local store or an s3+http(s):// store; give --store=.")
    with contextlib.ExitStack() as stack:
        indexes = [stack.enter_context(open_index(opts, strip_file_url(a))) for a in args]
        with progress_bar(opts, "gc", None, unit=" chunks") as bar:
            res = gc(store, indexes, dry_run=opts.dry_run, verbose=opts.verbose,
                     out=None if opts.json else sys.stdout, on_chunk=bar,
                     grace=DEFAULT_GRACE if opts.grace is None else opts.grace)
    if opts.json:
        emit_json({"references": res.references, "referenced": res.referenced, "removed": res.removed,
                    "remaining": res.remaining, "young": res.young, "removed-directories": res.removed_dirs,
                    "dry-run": opts.dry_run})
    return 0
