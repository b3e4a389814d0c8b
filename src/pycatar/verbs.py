"""The verbs of the ``pycatar`` command: which input and output kinds each verb handles, decided as
casync decides them (file suffix, ``--what=``, the type of the file system object), then a call
into the library."""

from __future__ import annotations

import os
import stat as st
import sys

from .errors import PycatarError, UsageError

SUFFIX_KIND = {".catar": "archive", ".caidx": "archive-index", ".caibx": "blob-index"}


def _suffix_kind(path: str | None) -> str | None:
    if not path or path == "-":
        return None
    for suffix, kind in SUFFIX_KIND.items():
        if path.endswith(suffix) and len(os.path.basename(path)) > len(suffix):
            return kind
    return None


def _kind_of(opts, path: str | None, allowed: tuple[str, ...], what_error: str, suffix_error: str | None):
    """The kind a verb deals with: ``--what=`` when given (one of ``allowed``), else the suffix of
    ``path`` (``suffix_error`` when it has none we know; None: leave the kind undecided)."""
    if opts.what is not None:
        if opts.what not in allowed:
            raise UsageError(what_error)
        return opts.what
    if path and path != "-":
        kind = _suffix_kind(path)
        if kind is None and suffix_error:
            raise UsageError(suffix_error)
        return kind
    return None


def _strip_file_url(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _log(opts, message: str) -> None:
    if opts.verbose:
        sys.stderr.write(message + "\n")


# --------------------------------------------------------------------------- make


def verb_make(opts, args: list[str]) -> int:
    if opts.input_format or opts.reproducible or opts.owner is not None or opts.group is not None:
        from . import reproducible, tarconv  # pycatar's own make options (spec/reproducible.md, spec/tar.md)

        return (tarconv if opts.input_format else reproducible).verb_make(opts, args)
    if len(args) > 2:
        raise UsageError("A pair of output and input path/URL expected.")
    output = _strip_file_url(args[0]) if args else None
    source = _strip_file_url(args[1]) if len(args) > 1 else None
    kind = _kind_of(opts, output, ("archive", "archive-index", "blob-index"),
                    '"make" operation may only be combined with --what=archive, '
                    "--what=archive-index or --what=blob-index.",
                    "File to create does not have valid suffix, refusing. "
                    "(May be one of: .catar, .caidx, .caibx)")
    if source is None and kind in ("archive", "archive-index"):
        source = "."
    if source is None or source == "-":
        source_stat = os.fstat(0)
        source = None
    else:
        try:
            source_stat = os.stat(source)
        except OSError as e:
            raise PycatarError(f"Failed to open {source}: {e.strerror}") from None
    if st.S_ISDIR(source_stat.st_mode):
        if kind is None:
            kind = "archive"
        elif kind not in ("archive", "archive-index"):
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
    if output == "-":
        output = None
    mode = source_stat.st_mode & 0o666

    if kind == "archive":
        from . import archive

        flags = opts.feature_flags()
        result = archive.make_archive(output, source, feature_flags=flags, mode=mode, **opts.uid_options())
        _verbose_make_summary(opts, result)
        print(result.digest_hex)
        return 0
    from . import blob, chunker
    from .store import default_store_for

    store = opts.store or default_store_for(output)
    sizes = chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else None
    if kind == "archive-index":
        from . import archive

        result = archive.make_archive_index(output, source, store=store, feature_flags=opts.feature_flags(),
                                            chunk_size=sizes, compression=opts.compression, mode=mode,
                                            **opts.uid_options())
        _verbose_make_summary(opts, result)
        print(result.digest_hex)
        return 0
    src = source if source is not None else sys.stdin.buffer
    res = blob.make_blob_index(src, sys.stdout.buffer if output is None else output, store,
                               chunk_size=sizes, digest=opts.digest, compression=opts.compression,
                               feature_flags=opts.feature_flags(default_with=0), index_mode=mode)
    print(res.hexdigest)
    return 0


def _verbose_make_summary(opts, result) -> None:
    if not opts.verbose:
        return
    from .flags import format_with_flags

    sel = getattr(result, "feature_flags", None)
    if sel is None:
        return
    _log(opts, f"Selected feature flags: {format_with_flags(sel) or 'none'}")
    too_much = sel & ~getattr(result, "covering_flags", sel)
    if too_much & 0x1FFFFFFFF:
        _log(opts, "Selected feature flags not actually applicable to backing file systems: "
                   f"{format_with_flags(too_much)}")
    if getattr(result, "size", None) is not None:
        _log(opts, f"Archive size: {result.size}")


# --------------------------------------------------------------------------- extract


def _stores(opts, index_path):
    from .store import default_store_for

    return [opts.store or default_store_for(index_path), *opts.extra_stores]


def verb_extract(opts, args: list[str]) -> int:
    if opts.output_format:  # --output-format=tar (spec/tar.md)
        from . import tarconv

        return tarconv.verb_extract(opts, args)
    if len(args) > 3:
        raise UsageError("Input path/URL, output path, and subtree path expected.")
    source = _strip_file_url(args[0]) if args else None
    output = _strip_file_url(args[1]) if len(args) > 1 else None
    subpath = args[2] if len(args) > 2 else None
    kind = _kind_of(opts, source, ("archive", "archive-index", "blob-index"),
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
    src = source if source is not None else sys.stdin.buffer
    if opts.json and kind == "blob-index" and output is None:
        raise UsageError("--json needs an output file: the blob is written to standard output.")

    if kind == "blob-index":
        from . import assembly

        summary = assembly.extract_blob(src, sys.stdout.buffer if output is None else output,
                                        _stores(opts, source), sparse=opts.punch_holes, **_seed_options(opts))
        _report_extract(opts, summary)
        return 0

    from .extract import extract_archive
    options = dict(feature_mask=opts.feature_mask(), delete=opts.delete,
                   undo_immutable=opts.undo_immutable, punch_holes=opts.punch_holes, **opts.uid_options())
    if kind == "archive":
        extract_archive(src, output, subpath, **options)  # no chunks: seeds have nothing to offer
        return 0
    from . import assembly

    _stats, summary = assembly.extract_tree(src, output, _stores(opts, source), subpath, hardlink=opts.hardlink,
                                            **_seed_options(opts), **options)
    _report_extract(opts, summary)
    return 0


def _seed_options(opts) -> dict:
    """What the seeding in assembly.py takes from the command line (spec/seeds.md)."""
    return dict(seeds=opts.seeds, seed_output=opts.seed_output, cache=opts.cache, reflink=opts.reflink,
                warn=lambda message: sys.stderr.write(message + "\n"),
                progress=(lambda message: _log(opts, message)) if opts.verbose else None)


def _report_extract(opts, summary) -> None:
    """SEED-10: the summary on stderr with -v (as casync's), as JSON on stdout with --json."""
    if opts.verbose:
        for line in summary.lines():
            _log(opts, line)
    if opts.json:
        import json

        print(json.dumps(summary.as_dict()))


# --------------------------------------------------------------------------- list, mtree, stat


def _open_input(path: str):
    try:
        return open(path, "rb")
    except OSError as e:
        raise PycatarError(f'Failed to open "{path}": {e.strerror}') from None


def _classify_listing_input(opts, verb, args, allowed):
    """casync's rules for what a list/mtree/stat/digest input is."""
    source = _strip_file_url(args[0]) if args else None
    kind = None
    if opts.what is not None:
        if opts.what not in allowed:
            raise UsageError(f'"{verb}" operation may only be combined with --what=' + ", ".join(allowed) + ".")
        kind = opts.what
    if kind is None and source and source != "-":
        k = _suffix_kind(source)
        if k in ("archive", "archive-index") or (verb == "digest" and k == "blob-index"):
            kind = k
    if source is None and kind in (None, "directory"):
        source = "."
    if source == "-":
        source = None
    return source, kind


def verb_list(opts, args: list[str], verb: str = "list") -> int:
    if len(args) > 2:
        raise UsageError("Input path/URL and subtree path expected.")
    source, kind = _classify_listing_input(opts, verb, args, ("archive", "archive-index", "directory"))
    subpath = args[1] if len(args) > 1 else None
    if source is not None:
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
    subpath = "/".join(c for c in (subpath or "").split("/") if c) or None

    from . import listing

    out = sys.stdout
    try:
        if kind == "directory":
            from .encoder import iter_entries

            flags = opts.feature_flags()
            pieces = listing.list_directory(source, iter_entries(source, flags, **opts.uid_options()), flags,
                                            verb, recursive=opts.recursive, digest_name=opts.digest)
            for piece in pieces:
                out.write(piece)
            return 0
        with _archive_reader(opts, kind, source) as reader:
            for piece in listing.list_archive(reader, verb, path=subpath, recursive=opts.recursive,
                                              digest_name=opts.digest):
                out.write(piece)
    except listing.ListingError as e:
        out.write(e.partial)
        out.flush()
        raise
    return 0


class _archive_reader:
    """A CatarReader over a .catar file (or stdin) or over the stream a .caidx describes."""

    def __init__(self, opts, kind, source):
        self.opts, self.kind, self.source = opts, kind, source
        self._close = []

    def __enter__(self):
        from .decoder import CatarReader

        src = sys.stdin.buffer if self.source is None else _open_input(self.source)
        if self.source is not None:
            self._close.append(src)
        if self.kind == "archive-index":
            from .index import IndexReader

            reader = IndexReader(src)
            self._close.append(reader)
            src = reader.open_stream(_stores(self.opts, self.source))
            self._close.append(src)
        return CatarReader(src, feature_mask=self.opts.feature_mask())

    def __exit__(self, *exc):
        for obj in reversed(self._close):
            obj.close()
        return False


def verb_mtree(opts, args):
    return verb_list(opts, args, "mtree")


def verb_stat(opts, args):
    return verb_list(opts, args, "stat")


# --------------------------------------------------------------------------- digest


def verb_digest(opts, args: list[str]) -> int:
    if len(args) > 2:
        raise UsageError("Input path/URL and subtree path expected.")
    source, kind = _classify_listing_input(opts, "digest", args, WHATS_DIGEST)
    subpath = args[1] if len(args) > 1 else None
    if source is not None:
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

    from . import archive, listing
    from . import digest as _digest

    if kind == "directory":
        print(archive.catar_digest(source, feature_flags=opts.feature_flags(), **opts.uid_options()))
    elif kind == "blob":
        h = _digest.new("sha512-256" if opts.digest == "sha512-256" else opts.digest)
        f = sys.stdin.buffer if source is None else _open_input(source)
        with f:
            while True:
                data = f.read(1 << 20)
                if not data:
                    break
                h.update(data)
        print(h.hexdigest())
    elif kind == "blob-index":
        from . import blob

        print(blob.stream_digest(sys.stdin.buffer if source is None else source, _stores(opts, source),
                                 "sha512-256").hex())
    else:
        with _archive_reader(opts, kind, source) as reader:
            print(listing.archive_digest(reader, subpath))
    return 0


WHATS_DIGEST = ("archive", "blob", "archive-index", "blob-index", "directory")


# --------------------------------------------------------------------------- mount


def verb_mount(opts, args: list[str]) -> int:
    import click

    if len(args) < 2 or len(args) > 3:
        raise UsageError("An archive, archive index or blob index, a mount point and optionally a subtree path expected.")
    source, mountpoint = _strip_file_url(args[0]), args[1]
    subpath = args[2] if len(args) > 2 else None
    kind = _kind_of(opts, source, ("archive", "archive-index", "blob-index"),
                    '"mount" operation may only be combined with --what=archive, --what=archive-index '
                    "or --what=blob-index.",
                    "File to mount does not have valid suffix, refusing. (May be one of: .catar, .caidx, .caibx)")
    if kind == "blob-index" and subpath:
        raise UsageError("Subtree path only supported when mounting an archive or archive index.")
    if not os.path.isfile(source):
        raise PycatarError(f'Failed to open "{source}": not a regular file')
    if getattr(opts, "mkdir", True) and not os.path.lexists(mountpoint):
        os.makedirs(mountpoint, exist_ok=True)
    if not os.path.isdir(mountpoint):
        raise PycatarError(f"Mount point {mountpoint} is not a directory.")
    from . import mount

    mount.mount(source, kind, mountpoint, None if kind == "archive" else _stores(opts, source), subpath=subpath,
                feature_mask=opts.feature_mask(), seeds=opts.seeds, seed_cache=opts.cache, **opts.uid_options(),
                foreground=bool(click.get_current_context().meta.get("pycatar.foreground")))
    return 0


# --------------------------------------------------------------------------- gc


def verb_gc(opts, args: list[str]) -> int:
    if not args:
        raise UsageError("Expected at least one argument.")
    from .store import default_store_for, gc

    gc(opts.store or default_store_for(args[0]), args, dry_run=opts.dry_run, verbose=opts.verbose,
       out=sys.stdout)
    return 0


VERBS = {
    "make": verb_make,
    "extract": verb_extract,
    "gc": verb_gc,
    "list": verb_list,
    "mtree": verb_mtree,
    "stat": verb_stat,
    "digest": verb_digest,
    "mount": verb_mount,
}
