"""``pycatar extract [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH] [SUBPATH]``: what to extract is decided
as casync decides it (``--what=``, the input's suffix, the type of the output);
:func:`pycatar.operations.extract` extracts it."""

from __future__ import annotations

import os
import stat as st
import sys

from .. import operations
from ..errors import UsageError
from .common import (chunk_stores, is_url, kind_of, log, progress_bar, remote, signature_keys, strip_file_url,
                     suffix_kind, warn)
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    if opts.output_format:  # --output-format=tar (spec/tar.md)
        return extract_tar(opts, args)
    if len(args) > 3:
        raise UsageError("Input path/URL, output path, and subtree path expected.")
    source = strip_file_url(args[0]) if args else None
    output = strip_file_url(args[1]) if len(args) > 1 else None
    subpath = args[2] if len(args) > 2 else None
    kind = kind_of(opts, source, ("archive", "archive-index", "blob-index"),
                   '"extract" operation may only be combined with --what=archive, '
                   "--what=archive-index, --what=blob-index.",
                   "File to read from does not have valid suffix, refusing. "
                   "(May be one of: .catar, .caidx, .caibx)")
    if source == "-":
        source = None
    if output is None and kind in ("archive", "archive-index"):
        output = "."
    if output == "-":
        output = None
    if is_url(output):
        raise UsageError("Extracting to a URL is not supported; extract to a local path.")
    if output is not None and os.path.lexists(output):
        ost = os.stat(output)
        if st.S_ISDIR(ost.st_mode):
            if kind is None:
                kind = "archive-index"
            elif kind not in ("archive", "archive-index"):
                raise UsageError("Output is a directory, but attempted to extract blob index. Refusing.")
        elif st.S_ISREG(ost.st_mode) or st.S_ISBLK(ost.st_mode):
            if kind is None:
                kind = "blob-index"
            elif kind != "blob-index":
                raise UsageError("Output is a regular file or block device, but attempted to extract "
                                 "an archive.")
        else:
            raise UsageError("Output is neither a directory, a regular file, nor a block device. Refusing.")
    if kind is None:
        raise UsageError("Couldn't figure out what to extract. Refusing. Use --what=archive, "
                         "--what=archive-index or --what=blob-index.")
    if kind == "blob-index" and subpath:
        raise UsageError("Subtree path only supported when extracting archive or archive index.")
    if output is None and kind != "blob-index":
        raise UsageError("Extracting an archive to standard output is not supported.")
    if opts.json and kind == "blob-index" and output is None:
        raise UsageError("--json needs an output file: the blob is written to standard output.")

    summary = operations.extract(source, output, kind=kind, subpath=subpath,
                                 stores=None if kind == "archive" else chunk_stores(opts, source),
                                 progress=lambda total: progress_bar(opts, "extract", total),
                                 **_options(opts))
    if summary is not None:
        _report_extract(opts, summary)
    return 0


def _options(opts: Options) -> dict:
    """What :func:`pycatar.operations.extract` takes from the command line besides the paths: the
    signature check, the feature mask, the seeding (spec/seeds.md) and the extraction options."""
    return dict(remote=remote(opts), keys=signature_keys(opts), feature_mask=opts.feature_mask(),
                on_verified=lambda line: log(opts, line), seeds=opts.seeds, seed_output=opts.seed_output,
                cache=opts.cache, reflink=opts.reflink, hardlink=opts.hardlink, punch_holes=opts.punch_holes,
                warn=lambda message: sys.stderr.write(message + "\n"),
                log=(lambda message: log(opts, message)) if opts.verbose else None,
                delete=opts.delete, undo_immutable=opts.undo_immutable, **opts.uid_options())


def extract_tar(opts: Options, args: list[str]) -> int:
    """``extract ARCHIVE.catar|ARCHIVE.caidx|- --output-format=tar OUT.tar|- [SUBPATH]`` (spec/tar.md)."""
    if len(args) < 2 or len(args) > 3:
        raise UsageError("--output-format=tar expects ARCHIVE, OUTPUT (a file or -) and optionally SUBPATH.")
    source = strip_file_url(args[0])
    output = strip_file_url(args[1])
    subpath = args[2] if len(args) > 2 else None
    kind = opts.what or suffix_kind(source) or ("archive" if source == "-" else None)
    if kind is None:
        raise UsageError("File to read from does not have valid suffix, refusing. (May be one of: .catar, .caidx)")
    if kind not in ("archive", "archive-index"):
        raise UsageError(f"--output-format=tar converts archives (.catar) and archive indexes (.caidx), not {kind}s.")
    if output == "-" and sys.stdout.isatty():
        raise UsageError("Refusing to write a tar to a terminal.")
    source = None if source == "-" else source
    stats = operations.extract(source, None if output == "-" else output, kind=kind, subpath=subpath,
                               output_format="tar",
                               stores=chunk_stores(opts, source) if kind == "archive-index" else None,
                               remote=remote(opts), keys=signature_keys(opts),
                               feature_mask=opts.feature_mask(), on_verified=lambda line: log(opts, line))
    for message in stats.warnings():
        warn(message)
    return 0


def _report_extract(opts: Options, summary) -> None:
    """SEED-10: the summary on stderr with -v (as casync's), as JSON on stdout with --json."""
    if opts.verbose:
        for line in summary.lines():
            log(opts, line)
    if opts.json:
        import json  # start-up: only --json needs it

        print(json.dumps(summary.as_dict()))
