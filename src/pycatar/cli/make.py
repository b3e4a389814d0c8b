"""``pycatar make [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH]``: what to make is decided as casync
decides it (``--what=``, the output's suffix, the type of the input); :func:`pycatar.operations.make`
makes it."""

from __future__ import annotations

import os
import stat as st

from .. import operations, reproducible
from ..errors import PycatarError, UsageError
from ..flags import format_with_flags
from .common import (chunk_sizes, emit_json, is_url, kind_of, log, progress_bar, remote, strip_file_url,
                     suffix_kind, warn)
from .options import Options

ARCHIVES = ("archive", "archive-index")


def run(opts: Options, args: list[str]) -> int:
    if args and is_url(args[0]):
        # make http(s)://…/NAME.caibx|.caidx: made locally, uploaded once its chunks are stored
        kind = opts.what or suffix_kind(args[0].split("?", 1)[0])
        if kind not in ("archive-index", "blob-index"):
            raise UsageError("Only index files (.caibx, .caidx) can be uploaded; make the archive locally.")
        opts.what = kind
    if len(args) > 2:
        raise UsageError("A pair of output and input path/URL expected.")
    output = strip_file_url(args[0]) if args else None
    source = strip_file_url(args[1]) if len(args) > 1 else None
    if opts.input_format:
        output, source, kind, mode = _tar_target(opts, output, source)
    elif opts.reproducible or opts.owner is not None or opts.group is not None:
        output, source, kind, mode = _reproducible_target(opts, output, source)
    else:
        output, source, kind, mode = _target(opts, output, source)
    total = None
    if kind == "blob-index":
        s = os.fstat(0) if source is None else os.stat(source)
        total = s.st_size if st.S_ISREG(s.st_mode) else None
    with progress_bar(opts, "make", total) as bar:
        result = operations.make(
            output, source, kind=kind, source_format="tar" if opts.input_format else "directory",
            store=opts.store, digest=opts.digest,
            feature_flags=opts.feature_flags(default_with=0) if kind == "blob-index" else opts.feature_flags(),
            reproducible=opts.reproducible, owner=opts.owner, group=opts.group,
            source_date_epoch=reproducible.source_date_epoch() if opts.reproducible else None,
            chunk_size=chunk_sizes(opts), compression=opts.compression, mode=mode, remote=remote(opts),
            on_bytes=bar, warn=warn, **opts.uid_options())
    if kind != "blob-index":
        _verbose_summary(opts, result)
    _print_made(opts, result)
    return 0


def _target(opts: Options, output: str | None, source: str | None) -> tuple[str | None, str | None, str, int]:
    """casync's rules: (output or None for standard output, source or None for standard input, kind,
    the mode of the file to create)."""
    kind = kind_of(opts, output, ("archive", "archive-index", "blob-index"),
                   '"make" operation may only be combined with --what=archive, '
                   "--what=archive-index or --what=blob-index.",
                   "File to create does not have valid suffix, refusing. "
                   "(May be one of: .catar, .caidx, .caibx)")
    if source is None and kind in ARCHIVES:
        source = "."
    if source is None or source == "-":
        source_stat = os.fstat(0)
        source = None
    else:
        source_stat = _stat(source)
    if st.S_ISDIR(source_stat.st_mode):
        if kind is None:
            kind = "archive"
        elif kind not in ARCHIVES:
            raise UsageError("Input is a directory, but attempted to make blob index. Refusing.")
    elif st.S_ISREG(source_stat.st_mode) or st.S_ISBLK(source_stat.st_mode):
        if kind is None:
            kind = "blob-index"
        elif kind != "blob-index":
            raise UsageError("Input is a regular file or block device, but attempted to make a "
                             "directory archive. Refusing.")
    else:
        raise UsageError("Input is a neither a directory, a regular file, nor a block device. Refusing.")
    if source is None and kind != "blob-index":
        raise UsageError("Archiving a directory from standard input is not supported.")
    return (None if output == "-" else output), source, kind, source_stat.st_mode & 0o666


def _own_kind(opts: Options, output: str | None, what: str) -> str:
    """The kind of ``make`` with pycatar's own options: an archive (.catar) or archive index (.caidx)."""
    wrong = f"{what} make archives (.catar) and archive indexes (.caidx), not {opts.what}s."
    kind = kind_of(opts, output, ARCHIVES, wrong,
                   "File to create does not have valid suffix, refusing. (May be one of: .catar, .caidx)")
    kind = kind or "archive"
    if kind not in ARCHIVES:
        raise UsageError(f"{what} make archives (.catar) and archive indexes (.caidx), not {kind}s.")
    return kind


def _reproducible_target(opts: Options, output: str | None, source: str | None):
    """``make`` of a directory with ``--reproducible``, ``--owner=`` or ``--group=`` (spec/reproducible.md)."""
    kind = _own_kind(opts, output, "--reproducible, --owner= and --group=")
    source = "." if source is None else source
    if source == "-":
        raise UsageError("Archiving a directory from standard input is not supported.")
    source_stat = _stat(source)
    if not st.S_ISDIR(source_stat.st_mode):
        raise UsageError(f"{source}: not a directory (use --input-format=tar for a tar file)")
    return (None if output == "-" else output), source, kind, source_stat.st_mode & 0o666


def _tar_target(opts: Options, output: str | None, source: str | None):
    """``make ARCHIVE.catar|ARCHIVE.caidx --input-format=tar TAR|-`` (spec/tar.md)."""
    kind = _own_kind(opts, output, "--input-format=tar")
    if source in (None, "-"):
        return (None if output == "-" else output), None, kind, 0o644
    s = _stat(source)
    if st.S_ISDIR(s.st_mode):
        raise UsageError(f"{source} is a directory, not a tar (leave out --input-format=tar).")
    return (None if output == "-" else output), source, kind, s.st_mode & 0o666


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as e:
        raise PycatarError(f"Failed to open {path}: {e.strerror}") from None


def _print_made(opts: Options, result) -> None:
    """What make prints: the digest (as casync), or with --json the digest, the size and for an
    index the chunk counts."""
    if not opts.json:
        print(result.digest_hex)
        return
    out = {"digest": result.digest_hex, "size": result.size}
    chunking = result.index
    if chunking is not None:
        out.update({"chunks": chunking.chunks, "new-chunks": chunking.new_chunks,
                    "reused-chunks": chunking.reused_chunks, "compressed-bytes": chunking.compressed_bytes})
    emit_json(out)


def _verbose_summary(opts: Options, result) -> None:
    """casync's summary of a make with -v: the feature flags selected, those the file systems read
    cannot hold, the size."""
    if not opts.verbose:
        return
    sel = result.feature_flags
    log(opts, f"Selected feature flags: {format_with_flags(sel) or 'none'}")
    too_much = sel & ~result.covering_flags
    if too_much & 0x1FFFFFFFF:
        log(opts, "Selected feature flags not actually applicable to backing file systems: "
                  f"{format_with_flags(too_much)}")
    log(opts, f"Archive size: {result.size}")
