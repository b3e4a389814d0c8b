"""``pycatar digest [ARCHIVE|BLOB|ARCHIVE_INDEX|BLOB_INDEX|DIRECTORY] [SUBPATH]``: what the input is, as
casync decides it; :func:`pycatar.operations.digest` digests it."""

from __future__ import annotations

import os
import stat as st

from .. import operations
from ..errors import PycatarError, UsageError
from ..flags import DEFAULT
from .common import (chunk_stores, classify_listing_input, is_url, log, no_signature_for_directory, remote,
                     signature_keys)
from .options import Options

WHATS_DIGEST = ("archive", "blob", "archive-index", "blob-index", "directory")


def run(opts: Options, args: list[str]) -> int:
    if len(args) > 2:
        raise UsageError("Input path/URL and subtree path expected.")
    source, kind = classify_listing_input(opts, "digest", args, WHATS_DIGEST)
    subpath = args[1] if len(args) > 1 else None
    if is_url(source):
        if kind is None:
            kind = "blob"
        if kind == "directory":
            raise UsageError("A URL cannot be digested as a directory.")
    elif source is not None:
        try:
            mode = os.stat(source).st_mode
        except OSError as e:
            raise PycatarError(f"Failed to open {source}: {e.strerror}") from None
        if st.S_ISDIR(mode):
            if kind is None:
                kind = "directory"
            elif kind != "directory":
                raise UsageError("Input is a directory, but attempted to list as blob. Refusing.")
        elif st.S_ISREG(mode) or st.S_ISBLK(mode):
            if kind is None:
                kind = "archive" if subpath else "blob"
            elif kind == "directory":
                raise UsageError("Input is not a regular file or block device, but attempted to list as one. "
                                 "Refusing.")
        else:
            raise UsageError("Input is a neither a directory, a regular file, nor a block device. Refusing.")
    if kind is None:
        kind = "blob"
    if subpath and kind not in ("archive", "archive-index"):
        raise UsageError("Subtree path only supported when calculating message digest of archive or archive index.")

    no_signature_for_directory(opts, kind)
    stores = chunk_stores(opts, source) if kind in ("archive-index", "blob-index") else None
    tree = kind == "directory"
    print(operations.digest(source, kind=kind, subpath=subpath, stores=stores, remote=remote(opts),
                            keys=signature_keys(opts), on_verified=lambda line: log(opts, line),
                            feature_flags=opts.feature_flags() if tree else DEFAULT,
                            feature_mask=opts.feature_mask(), digest_name=opts.digest,
                            **(opts.uid_options() if tree else {})))
    return 0
