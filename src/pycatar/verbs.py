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
    """A path argument: ``file://`` stripped, http(s) URLs kept, any other URL scheme refused."""
    from .location import local_path

    local = local_path(path)
    return path if local is None else local


def _is_url(path: str | None) -> bool:
    """Whether ``path`` is a remote location: an http(s) or an object store's s3+http(s) URL."""
    from .httpclient import is_url
    from .s3store import is_s3_url

    return bool(path) and (is_url(path) or is_s3_url(path))


def _remote(opts):
    """The command's HTTP client (made on first use, shared by its stores and downloads)."""
    if opts.remote is None:
        from .httpclient import HTTPOptions
        from .location import Remote

        opts.remote = Remote(HTTPOptions(**opts.http))
    return opts.remote


def _make_store(opts, output):
    """The store ``make`` writes chunks to: ``--store=``, else the default next to the index."""
    from .location import open_store
    from .store import default_store_for

    return open_store(opts.store or default_store_for(output), digest=opts.digest,
                      compression=opts.compression, remote=_remote(opts))


def _bar(opts, desc: str, total: int | None, unit: str = "B"):
    """A progress bar on standard error when it is a terminal (none with --no-progress)."""
    from .progress import bar

    return bar(opts.progress, desc, total, unit=unit)


def _log(opts, message: str) -> None:
    if opts.verbose:
        sys.stderr.write(message + "\n")


# --------------------------------------------------------------------------- make


def verb_make(opts, args: list[str]) -> int:
    if args and _is_url(args[0]):
        return _make_and_upload(opts, args)
    if opts.input_format or opts.reproducible or opts.owner is not None or opts.group is not None:
        # pycatar's own make options (spec/reproducible.md, spec/tar.md)
        return (verb_make_tar if opts.input_format else verb_make_reproducible)(opts, args)
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
        with _bar(opts, "make", None) as bar:
            result = archive.make_archive(output, source, feature_flags=flags, mode=mode, on_bytes=bar,
                                          **opts.uid_options())
        _verbose_make_summary(opts, result)
        _print_made(opts, result.digest_hex, result.size, result.index)
        return 0
    from . import blob, chunker

    store = _make_store(opts, output)
    sizes = chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else None
    if kind == "archive-index":
        from . import archive

        with _bar(opts, "make", None) as bar:
            result = archive.make_archive_index(output, source, store=store, feature_flags=opts.feature_flags(),
                                                chunk_size=sizes, compression=opts.compression, mode=mode,
                                                on_bytes=bar, **opts.uid_options())
        _verbose_make_summary(opts, result)
        _print_made(opts, result.digest_hex, result.size, result.index)
        return 0
    src = source if source is not None else sys.stdin.buffer
    total = source_stat.st_size if st.S_ISREG(source_stat.st_mode) else None
    with _bar(opts, "make", total) as bar:
        res = blob.make_blob_index(src, sys.stdout.buffer if output is None else output, store,
                                   chunk_size=sizes, digest=opts.digest, compression=opts.compression,
                                   feature_flags=opts.feature_flags(default_with=0), index_mode=mode,
                                   on_bytes=bar)
    _print_made(opts, res.hexdigest, res.size, res)
    return 0


def _print_made(opts, digest_hex: str, size: int, chunking=None) -> None:
    """What make prints: the digest (as casync), or with --json the digest, the size and for an
    index the chunk counts."""
    if not opts.json:
        print(digest_hex)
        return
    out = {"digest": digest_hex, "size": size}
    if chunking is not None:
        out.update({"chunks": chunking.chunks, "new-chunks": chunking.new_chunks,
                    "reused-chunks": chunking.reused_chunks, "compressed-bytes": chunking.compressed_bytes})
    _emit_json(out)


def _make_and_upload(opts, args: list[str]) -> int:
    """``make http(s)://…/NAME.caibx|.caidx``: the index is made into a temporary file, then
    uploaded (PUT) once its chunks are all stored."""
    import tempfile

    from .location import upload
    from .store import default_store_for

    url = args[0]
    kind = opts.what or _suffix_kind(url.split("?", 1)[0])
    if kind not in ("archive-index", "blob-index"):
        raise UsageError("Only index files (.caibx, .caidx) can be uploaded; make the archive locally.")
    opts.store = opts.store or default_store_for(url)
    opts.what = kind
    with tempfile.TemporaryDirectory(prefix="pycatar-upload-") as tmp:
        local = os.path.join(tmp, "index" + (".caidx" if kind == "archive-index" else ".caibx"))
        rc = verb_make(opts, [local, *args[1:]])
        with open(local, "rb") as f:
            upload(url, f.read(), remote=_remote(opts))
    return rc


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


# --------------------------------------------------------------------------- make with pycatar's own options


def _make_target(opts, args: list[str], *, what: str) -> tuple[str | None, str | None, str]:
    """(output path or None for standard output, source argument, kind) of ``make`` with pycatar's
    own options: the output must be an archive (.catar) or archive index (.caidx)."""
    if len(args) > 2:
        raise UsageError("A pair of output and input path/URL expected.")
    output = _strip_file_url(args[0]) if args else None
    source = _strip_file_url(args[1]) if len(args) > 1 else None
    wrong = f"{what} make archives (.catar) and archive indexes (.caidx), not {opts.what}s."
    kind = _kind_of(opts, output, ("archive", "archive-index"), wrong,
                    "File to create does not have valid suffix, refusing. (May be one of: .catar, .caidx)")
    kind = kind or "archive"
    if kind not in ("archive", "archive-index"):
        raise UsageError(f"{what} make archives (.catar) and archive indexes (.caidx), not {kind}s.")
    return (None if output == "-" else output), source, kind


def _made(opts, result) -> int:
    """Report a finished make as casync does: the summary with -v, then the digest."""
    _verbose_make_summary(opts, result)
    _print_made(opts, result.digest_hex, result.size, result.index)
    return 0


def _make_options(opts, *, tree: bool) -> tuple[int, dict]:
    """The feature flags and encoder options the command line selects."""
    flags = opts.feature_flags()
    from .reproducible import encoder_options, source_date_epoch

    epoch = source_date_epoch() if opts.reproducible else None
    enc = dict(opts.uid_options())
    enc.update(encoder_options(flags, owner=opts.owner, group=opts.group, epoch=epoch,
                               reproducible=opts.reproducible, tree=tree))
    return flags, enc


def verb_make_reproducible(opts, args: list[str]) -> int:
    """``make`` of a directory with ``--reproducible``, ``--owner=`` or ``--group=``."""
    output, source, kind = _make_target(opts, args, what="--reproducible, --owner= and --group=")
    source = "." if source is None else source
    if source == "-":
        raise UsageError("Archiving a directory from standard input is not supported.")
    try:
        source_stat = os.stat(source)
    except OSError as e:
        raise PycatarError(f"Failed to open {source}: {e.strerror}") from None
    if not st.S_ISDIR(source_stat.st_mode):
        raise UsageError(f"{source}: not a directory (use --input-format=tar for a tar file)")
    flags, enc = _make_options(opts, tree=True)
    mode = source_stat.st_mode & 0o666

    from . import archive

    if kind == "archive":
        result = archive.make_archive(output, source, feature_flags=flags, mode=mode, **enc)
    else:
        from . import chunker

        sizes = chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else None
        result = archive.make_archive_index(output, source, store=_make_store(opts, output),
                                            feature_flags=flags, chunk_size=sizes,
                                            compression=opts.compression, mode=mode, **enc)
    return _made(opts, result)


def _warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def verb_make_tar(opts, args: list[str]) -> int:
    """``make ARCHIVE.catar|ARCHIVE.caidx --input-format=tar TAR|-``."""
    from . import archive
    from .tarconv import TarEncoder

    output, source, kind = _make_target(opts, args, what="--input-format=tar")
    if source in (None, "-"):
        path = None
        mode = 0o644
    else:
        try:
            s = os.stat(source)
        except OSError as e:
            raise PycatarError(f"Failed to open {source}: {e.strerror}") from None
        if st.S_ISDIR(s.st_mode):
            raise UsageError(f"{source} is a directory, not a tar (leave out --input-format=tar).")
        path, mode = source, s.st_mode & 0o666
    flags, enc = _make_options(opts, tree=False)
    spool_dir = os.path.dirname(os.path.abspath(output)) if output else None
    with TarEncoder(path, flags, spool_dir=spool_dir, **enc) as encoder:
        for message in encoder.warnings:
            _warn(message)
        if kind == "archive":
            result = archive.write_archive(output, encoder, mode=mode)
        else:
            from . import chunker

            sizes = chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else None
            result = archive.write_archive_index(output, encoder, store=_make_store(opts, output),
                                                 chunk_size=sizes, compression=opts.compression, mode=mode)
    return _made(opts, result)


def verb_extract_tar(opts, args: list[str]) -> int:
    """``extract ARCHIVE.catar|ARCHIVE.caidx|- --output-format=tar OUT.tar|- [SUBPATH]``."""
    from .fileio import AtomicFile
    from .tarconv import write_tar

    if len(args) < 2 or len(args) > 3:
        raise UsageError("--output-format=tar expects ARCHIVE, OUTPUT (a file or -) and optionally SUBPATH.")
    source = _strip_file_url(args[0])
    output = _strip_file_url(args[1])
    subpath = args[2] if len(args) > 2 else None
    kind = opts.what or _suffix_kind(source) or ("archive" if source == "-" else None)
    if kind is None:
        raise UsageError("File to read from does not have valid suffix, refusing. (May be one of: .catar, .caidx)")
    if kind not in ("archive", "archive-index"):
        raise UsageError(f"--output-format=tar converts archives (.catar) and archive indexes (.caidx), not {kind}s.")
    source = None if source == "-" else source
    with _archive_reader(opts, kind, source) as reader:
        if output == "-":
            if sys.stdout.isatty():
                raise UsageError("Refusing to write a tar to a terminal.")
            stats = write_tar(reader, sys.stdout.buffer, subpath)
            sys.stdout.buffer.flush()
        else:
            with AtomicFile(output, 0o666) as f:
                stats = write_tar(reader, f, subpath)
    for message in stats.warnings():
        _warn(message)
    return 0


# --------------------------------------------------------------------------- extract


def _stores(opts, index_path):
    """STORE-10: the stores to read chunks from, behind ``--chunk-cache=`` when given."""
    from .location import open_stores
    from .store import default_store_for

    return open_stores([opts.store or default_store_for(index_path), *opts.extra_stores],
                       cache=opts.chunk_cache, remote=_remote(opts))


def _open_index(opts, source):
    """The index (or archive) file ``source`` names, local or fetched from a URL; stdin for None.
    With ``--verify-key=``/``--allowed-signers=`` its signature is checked first (SIG-4)."""
    if source is None:
        if opts.verify_key or opts.allowed_signers:
            raise UsageError("--verify-key=/--allowed-signers= need the index as a path or URL, not standard input.")
        return sys.stdin.buffer
    from .location import open_input

    f = open_input(source, remote=_remote(opts), what="index")
    try:
        _check_signature(opts, source, f)
    except BaseException:
        f.close()
        raise
    return f


def _no_signature_for_directory(opts, kind) -> None:
    if kind == "directory" and (opts.verify_key or opts.allowed_signers):
        raise UsageError("--verify-key=/--allowed-signers= check an index or archive file, not a directory.")


def _check_signature(opts, source: str, f) -> None:
    """SIG-4: refuse ``source`` (open as ``f``) unless ``<source>.sig`` is its signature by an allowed key."""
    from . import sshsig

    keys = sshsig.allowed_keys(opts.verify_key, opts.allowed_signers)
    if keys is None:
        return
    from .location import open_input, shown

    where = sshsig.signature_location(source)
    try:
        with open_input(where, remote=_remote(opts), what="signature", limit=sshsig.MAX_SIG_FILE) as s:
            text = s.read(sshsig.MAX_SIG_FILE + 1)
    except PycatarError as e:
        raise sshsig.SignatureError(f"signature {shown(where)} of {shown(source)} is missing or unreadable: "
                                    f"{e}") from None
    if len(text) > sshsig.MAX_SIG_FILE:
        raise sshsig.SignatureError(f"signature {shown(where)}: malformed (too large)")
    key = sshsig.verify_file(f, text, keys, what=f"signature {shown(where)}")
    _log(opts, f"{shown(source)}: good signature by {key.key_type} {key.fingerprint}")


def verb_extract(opts, args: list[str]) -> int:
    if opts.output_format:  # --output-format=tar (spec/tar.md)
        return verb_extract_tar(opts, args)
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
    if _is_url(output):
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

    with _open_index(opts, source) as src:
        if kind == "blob-index":
            from . import assembly
            from .index import IndexReader

            with IndexReader(src) as reader, _bar(opts, "extract", reader.blob_size) as bar:
                summary = assembly.extract_blob(reader, sys.stdout.buffer if output is None else output,
                                                _stores(opts, source), sparse=opts.punch_holes, on_bytes=bar,
                                                on_summary=lambda s: setattr(bar, "details", s.short),
                                                **_seed_options(opts))
            _report_extract(opts, summary)
            return 0

        from .extract import extract_archive
        options = dict(feature_mask=opts.feature_mask(), delete=opts.delete,
                       undo_immutable=opts.undo_immutable, punch_holes=opts.punch_holes, **opts.uid_options())
        if kind == "archive":
            extract_archive(src, output, subpath, **options)  # no chunks: seeds have nothing to offer
            return 0
        from . import assembly

        from .index import IndexReader

        with IndexReader(src) as reader, _bar(opts, "extract", None if subpath else reader.blob_size) as bar:
            _stats, summary = assembly.extract_tree(reader, output, _stores(opts, source), subpath,
                                                    hardlink=opts.hardlink, on_bytes=bar,
                                                    on_summary=lambda s: setattr(bar, "details", s.short),
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
    if _is_url(source):
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
    _no_signature_for_directory(opts, kind)
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
    except listing.ListingError:
        out.flush()  # what casync prints before it fails (the listing yields it) stays printed
        raise
    return 0


class _archive_reader:
    """A CatarReader over a .catar file (or stdin) or over the stream a .caidx describes."""

    def __init__(self, opts, kind, source):
        self.opts, self.kind, self.source = opts, kind, source
        self._close = []

    def __enter__(self):
        from .decoder import CatarReader

        src = _open_index(self.opts, self.source)
        if self.source is not None:
            self._close.append(src)
        if self.kind == "archive-index":
            from .index import IndexReader

            reader = IndexReader(src)
            self._close.append(reader)
            stores = _stores(self.opts, self.source)
            kw = {}
            if stores.concurrency:  # remote stores: fetch the chunks ahead of the reader, in parallel
                from concurrent.futures import ThreadPoolExecutor

                ex = ThreadPoolExecutor(stores.concurrency, thread_name_prefix="pycatar")
                self._close.append(_Shutdown(ex))
                kw = dict(executor=ex, readahead=2 * stores.concurrency, cache_size=8)
            from .blob import IndexStream

            src = IndexStream(reader, stores, **kw)
            self._close.append(src)
        return CatarReader(src, feature_mask=self.opts.feature_mask())

    def __exit__(self, *exc):
        for obj in reversed(self._close):
            obj.close()
        return False


class _Shutdown:
    def __init__(self, executor):
        self.executor = executor

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


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
    if _is_url(source):
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

    _no_signature_for_directory(opts, kind)
    from . import archive, listing
    from . import digest as _digest

    if kind == "directory":
        print(archive.catar_digest(source, feature_flags=opts.feature_flags(), **opts.uid_options()))
    elif kind == "blob":
        h = _digest.new("sha512-256" if opts.digest == "sha512-256" else opts.digest)
        with _open_index(opts, source) as f:
            while True:
                data = f.read(1 << 20)
                if not data:
                    break
                h.update(data)
        print(h.hexdigest())
    elif kind == "blob-index":
        from . import blob

        with _open_index(opts, source) as f:
            print(blob.stream_digest(f, _stores(opts, source), "sha512-256").hex())
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
    if not _is_url(source) and not os.path.isfile(source):
        raise PycatarError(f'Failed to open "{source}": not a regular file')
    if getattr(opts, "mkdir", True) and not os.path.lexists(mountpoint):
        os.makedirs(mountpoint, exist_ok=True)
    if not os.path.isdir(mountpoint):
        raise PycatarError(f"Mount point {mountpoint} is not a directory.")
    from . import mount

    if not _is_url(source) and (opts.verify_key or opts.allowed_signers):
        with open(source, "rb") as f:
            _check_signature(opts, source, f)
    stores = None if kind == "archive" else _stores(opts, source)
    foreground = bool(click.get_current_context().meta.get("pycatar.foreground"))
    options = dict(subpath=subpath, feature_mask=opts.feature_mask(), seeds=opts.seeds, seed_cache=opts.cache,
                   foreground=foreground, **opts.uid_options())
    if not _is_url(source):
        mount.mount(source, kind, mountpoint, stores, **options)
        return 0
    # an archive or index by URL: fetched whole into a file the mount reads (removed once the
    # mount has opened it, or in the foreground once it ends); its name is the URL's last part
    import shutil
    import tempfile
    import urllib.parse

    name = os.path.basename(urllib.parse.urlsplit(source).path) or "index"
    with tempfile.TemporaryDirectory(prefix="pycatar-mount-") as tmp:
        local = os.path.join(tmp, name)
        with _open_index(opts, source) as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out)
        mount.mount(local, kind, mountpoint, stores, **options)
    return 0


# --------------------------------------------------------------------------- gc


def verb_gc(opts, args: list[str]) -> int:
    if not args:
        raise UsageError("Expected at least one argument.")
    import contextlib

    from .location import local_path, open_store
    from .s3store import is_s3_url
    from .store import DEFAULT_GRACE, default_store_for, gc

    location = opts.store or default_store_for(args[0])
    if is_s3_url(location):
        store = open_store(location, digest=opts.digest, remote=_remote(opts))
    else:
        store = local_path(location)
        if store is None or "|" in location:
            raise UsageError("gc removes chunks from a local store or an s3+http(s):// store; give --store=.")
    with contextlib.ExitStack() as stack:
        indexes = [stack.enter_context(_open_index(opts, _strip_file_url(a))) for a in args]
        with _bar(opts, "gc", None, unit=" chunks") as bar:
            res = gc(store, indexes, dry_run=opts.dry_run, verbose=opts.verbose,
                     out=None if opts.json else sys.stdout, on_chunk=bar,
                     grace=DEFAULT_GRACE if opts.grace is None else opts.grace)
    if opts.json:
        _emit_json({"references": res.references, "referenced": res.referenced, "removed": res.removed,
                    "remaining": res.remaining, "young": res.young, "removed-directories": res.removed_dirs,
                    "dry-run": opts.dry_run})
    return 0


# --------------------------------------------------------------------------- verify, info, cat, chunks


def _index_argument(opts, args: list[str], verb: str, usage: str):
    """The one index argument of ``verb`` (a path, URL or -) and its kind."""
    if len(args) < 1:
        raise UsageError(f"Usage: pycatar {verb} {usage}")
    source = _strip_file_url(args[0])
    kind = _kind_of(opts, source, ("archive-index", "blob-index"),
                    f'"{verb}" operation may only be combined with --what=archive-index or --what=blob-index.',
                    "Index file does not have valid suffix, refusing. (May be one of: .caidx, .caibx)")
    return (None if source == "-" else source), kind or "blob-index"


def _emit_json(obj) -> None:
    import json

    print(json.dumps(obj, sort_keys=True))


def verb_verify(opts, args: list[str]) -> int:
    """``verify [--repair] STORE`` or ``verify INDEX`` (its chunks in --store/--extra-store)."""
    from . import verify

    if len(args) != 1:
        raise UsageError("Usage: pycatar verify [--repair] STORE | pycatar verify INDEX")
    target = _strip_file_url(args[0])
    if _suffix_kind(target) in ("archive-index", "blob-index") or opts.what in ("archive-index", "blob-index"):
        if opts.repair:
            raise UsageError("--repair applies to a store (verify STORE), not to an index.")
        source, _kind = _index_argument(opts, args, "verify", "INDEX")
        from .index import IndexReader

        with _open_index(opts, source) as f, IndexReader(f) as reader:
            with _bar(opts, "verify", None, unit=" chunks") as bar:
                res = verify.verify_index(reader, _stores(opts, source), progress=lambda done, _b: bar(1))
    else:
        from .location import local_path, open_store
        from .s3store import is_s3_url

        if is_s3_url(target):  # an object store lists its chunks (STORE-21)
            path = open_store(target, digest=opts.digest, remote=_remote(opts))
        else:
            path = local_path(target)
            if path is None:
                raise UsageError("verify STORE checks a local store or an object store; for an http(s) one, "
                                 "verify an index against it.")
            if not os.path.isdir(path):
                raise PycatarError(f"store {path} does not exist")
        with _bar(opts, "verify", None, unit=" chunks") as bar:
            res = verify.verify_store(path, digest=opts.digest, repair=opts.repair, progress=lambda done, _b: bar(1))
    if opts.json:
        _emit_json(res.as_dict())
    else:
        for cid in res.missing:
            print(f"{cid} missing")
        for p in res.bad:
            print(f"{p.id} {'removed: ' if p.removed else ''}{p.error}")
        _log(opts, f"{res.checked} chunks checked, {len(res.missing)} missing, {len(res.bad)} bad"
                   + (f", {sum(p.removed for p in res.bad)} removed" if opts.repair else ""))
    if not res.ok:
        raise PycatarError(f"{len(res.missing)} missing and {len(res.bad)} bad chunks of {res.checked}")
    return 0


def verb_info(opts, args: list[str]) -> int:
    """``info INDEX``: statistics; with --seed/--store/--chunk-cache where extraction would find each chunk."""
    from . import info as _info
    from .index import IndexReader

    if len(args) != 1:
        raise UsageError("Usage: pycatar info [--seed=…] [--store=…] [--chunk-cache=…] [--json] INDEX")
    source, kind = _index_argument(opts, args, "info", "INDEX")
    stores = _stores(opts, source) if (opts.store or opts.extra_stores or opts.chunk_cache or opts.seeds) else None
    with _open_index(opts, source) as f, IndexReader(f) as reader:
        result = _info.index_info(reader, kind=kind, stores=stores, seeds=opts.seeds, seed_cache=opts.cache,
                                  warn=lambda message: sys.stderr.write(message + "\n"))
    if opts.json:
        _emit_json(result.as_dict())
    else:
        print("\n".join(result.lines()))
    return 0


def verb_cat(opts, args: list[str]) -> int:
    """``cat INDEX [OFFSET [LENGTH]]``: the bytes of the stream to standard output, fetching only the
    chunks that hold them."""
    from concurrent.futures import ThreadPoolExecutor

    from .blob import IndexStream
    from .index import IndexReader

    if not 1 <= len(args) <= 3:
        raise UsageError("Usage: pycatar cat INDEX [OFFSET [LENGTH]]")
    source, _kind = _index_argument(opts, args, "cat", "INDEX [OFFSET [LENGTH]]")
    nums = []
    for name, text in zip(("OFFSET", "LENGTH"), args[1:]):
        if not text.isdigit():
            raise UsageError(f"{name} must be a number of bytes, not {text!r}")
        nums.append(int(text))
    if sys.stdout.isatty():
        raise UsageError("Refusing to write binary data to a terminal; redirect standard output.")
    out = sys.stdout.buffer
    with _open_index(opts, source) as f, IndexReader(f) as reader:
        stores = _stores(opts, source)
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


def verb_chunk(opts, args: list[str]) -> int:
    """``chunk FILE``: where the chunker cuts FILE and the chunk ids, one ``START SIZE ID`` line each
    (tab-separated, as desync prints them); nothing is stored."""
    from concurrent.futures import ThreadPoolExecutor

    from . import blob, chunker

    if len(args) != 1:
        raise UsageError("Usage: pycatar chunk [--chunk-size=…] [--digest=…] FILE|-")
    sizes = chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else chunker.DEFAULT_CHUNK_SIZES
    path = _strip_file_url(args[0])
    src = sys.stdin.buffer if path == "-" else _open_index(opts, path)
    write = sys.stdout.write
    with src, ThreadPoolExecutor(2, thread_name_prefix="pycatar") as ex:
        start = 0
        for end, cid, _data in blob.chunk_stream(src, chunker.Chunker(*sizes), opts.digest, executor=ex):
            write(f"{start}\t{end - start}\t{cid.hex()}\n")
            start = end
    return 0


def verb_list_chunks(opts, args: list[str]) -> int:
    """``list-chunks INDEX``: the chunk ids of an index in order (``--json``: with offsets and sizes)."""
    from .index import IndexReader

    if len(args) != 1:
        raise UsageError("Usage: pycatar list-chunks [--json] INDEX")
    source, _kind = _index_argument(opts, args, "list-chunks", "INDEX")
    write = sys.stdout.write
    with _open_index(opts, source) as f, IndexReader(f) as reader:
        for ref in reader.chunks():
            if opts.json:
                write(f'{{"id": "{ref.id.hex()}", "start": {ref.start}, "size": {ref.size}}}\n')
            else:
                write(ref.id.hex() + "\n")
    return 0


# --------------------------------------------------------------------------- sign


def verb_sign(opts, args: list[str]) -> int:
    """``sign --key=KEY FILE``: write FILE.sig (SIG-1), what ``ssh-keygen -Y sign -n pycatar`` writes."""
    from . import sshsig

    if len(args) != 1:
        raise UsageError("Usage: pycatar sign --key=KEY INDEX|ARCHIVE")
    if not opts.sign_key:
        raise UsageError("sign needs --key=FILE (an OpenSSH private key).")
    path = _strip_file_url(args[0])
    if _is_url(path) or path == "-":
        raise UsageError("sign signs a local file; upload the file and its .sig beside it afterwards.")
    key = sshsig.load_private_key(opts.sign_key)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PycatarError(f'Failed to open "{path}": {e.strerror}') from None
    with f:
        text = sshsig.sign_file(f, key)
    sshsig.write_signature(sshsig.signature_location(path), text)
    _log(opts, f"Wrote {sshsig.signature_location(path)}")
    return 0


# --------------------------------------------------------------------------- serve


def verb_serve(opts, args: list[str]) -> int:
    if args:
        raise UsageError('"serve" takes no arguments; the store is --store=DIR, the indexes --index-dir=DIR.')
    from .server import serve
    from .store import default_store_for

    store = opts.store or default_store_for(None)
    if _is_url(store):
        from .s3store import is_s3_url

        if not is_s3_url(store):
            raise UsageError("serve serves a local store or an object store (s3+http(s)://…), not an http(s) URL.")
        from .location import open_store

        store = open_store(store, digest=opts.digest, remote=_remote(opts))
        store.check()
    serve(store, opts.index_dir, listen=opts.listen, writable=opts.writable,
          digest=opts.digest, tls_cert=opts.tls_cert, tls_key=opts.tls_key, verbose=opts.verbose)
    return 0


VERBS = {
    "make": verb_make,
    "extract": verb_extract,
    "gc": verb_gc,
    "list": verb_list,
    "mtree": verb_mtree,
    "stat": verb_stat,
    "digest": verb_digest,
    "verify": verb_verify,
    "info": verb_info,
    "cat": verb_cat,
    "chunk": verb_chunk,
    "list-chunks": verb_list_chunks,
    "serve": verb_serve,
    "mount": verb_mount,
    "sign": verb_sign,
}
