"""``pycatar mount [--foreground] ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX MOUNTPOINT [SUBPATH]``: a read-only
FUSE view of an archive or index (:mod:`pycatar.mount`)."""

from __future__ import annotations

import os

from .. import operations
from ..errors import PycatarError, UsageError
from .common import chunk_stores, is_url, kind_of, log, remote, signature_keys, strip_file_url
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    if len(args) < 2 or len(args) > 3:
        raise UsageError("An archive, archive index or blob index, a mount point and optionally a subtree path expected.")
    source, mountpoint = strip_file_url(args[0]), args[1]
    subpath = args[2] if len(args) > 2 else None
    kind = kind_of(opts, source, ("archive", "archive-index", "blob-index"),
                   '"mount" operation may only be combined with --what=archive, --what=archive-index '
                   "or --what=blob-index.",
                   "File to mount does not have valid suffix, refusing. (May be one of: .catar, .caidx, .caibx)")
    if kind == "blob-index" and subpath:
        raise UsageError("Subtree path only supported when mounting an archive or archive index.")
    if not is_url(source) and not os.path.isfile(source):
        raise PycatarError(f'Failed to open "{source}": not a regular file')
    if opts.mkdir and not os.path.lexists(mountpoint):
        os.makedirs(mountpoint, exist_ok=True)
    if not os.path.isdir(mountpoint):
        raise PycatarError(f"Mount point {mountpoint} is not a directory.")

    stores = None if kind == "archive" else chunk_stores(opts, source)
    operations.mount(source, mountpoint, kind=kind, stores=stores, remote=remote(opts), keys=signature_keys(opts),
                     on_verified=lambda line: log(opts, line),
                     subpath=subpath, feature_mask=opts.feature_mask(), seeds=opts.seeds, seed_cache=opts.cache,
                     foreground=opts.foreground, **opts.uid_options())
    return 0
