"""``pycatar list|mtree|stat [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]``: the entries of an archive or
a tree, as casync prints them (:mod:`pycatar.listing`)."""

from __future__ import annotations

import os
import stat as st
import sys

from .. import listing
from ..errors import PycatarError, UsageError
from .common import classify_listing_input, is_url, no_signature_for_directory, open_catar
from .options import Options


def run_list(opts: Options, args: list[str], verb: str = "list") -> int:
    if len(args) > 2:
        raise UsageError("Input path/URL and subtree path expected.")
    source, kind = classify_listing_input(opts, verb, args, ("archive", "archive-index", "directory"))
    subpath = args[1] if len(args) > 1 else None
    if is_url(source):
        if kind is None:
            raise UsageError("Input should be a directory, .catar or .caidx file. Refusing.")
        if kind == "directory":
            raise UsageError("A URL cannot be listed as a directory.")
    elif source is not None:
        try:
            mode = os.stat(source).st_mode
        except OSError as e:
            raise PycatarError(f'Failed to open "{source}": {e.strerror}') from None
        if st.S_ISDIR(mode):
            if kind is None:
                kind = "directory"
            elif kind != "directory":
                raise UsageError("Input is a directory, but attempted to list archive or index.")
        elif st.S_ISREG(mode):
            if kind is None:
                raise UsageError("Input should be a directory, .catar or .caidx file. Refusing.")
            if kind == "directory":
                raise UsageError("Input is a regular file, but attempted to list it as directory.")
        else:
            raise UsageError("Input is neither a file or directory. Refusing.")
    elif kind is None:
        kind = "archive"
    if kind == "directory" and subpath:
        raise UsageError("Subtree path only supported when listing archive or archive index.")
    no_signature_for_directory(opts, kind)
    subpath = "/".join(c for c in (subpath or "").split("/") if c) or None
    out = sys.stdout
    try:
        if kind == "directory":
            # start-up: the walker (encoder, fsmeta, exclude: 10-15 ms, benchmarks/startup.py) only for a tree
            from ..encoder import iter_entries  # start-up: see above

            flags = opts.feature_flags()
            pieces = listing.list_directory(source, iter_entries(source, flags, **opts.uid_options()), flags,
                                            verb, recursive=opts.recursive, digest_name=opts.digest)
            for piece in pieces:
                out.write(piece)
            return 0
        with open_catar(opts, kind, source) as reader:
            for piece in listing.list_archive(reader, verb, path=subpath, recursive=opts.recursive,
                                              digest_name=opts.digest):
                out.write(piece)
    except listing.ListingError:
        out.flush()  # what casync prints before it fails (the listing yields it) stays printed
        raise
    return 0


def run_mtree(opts: Options, args: list[str]) -> int:
    return run_list(opts, args, "mtree")


def run_stat(opts: Options, args: list[str]) -> int:
    return run_list(opts, args, "stat")
