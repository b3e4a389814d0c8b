"""What the verbs share: which kind of input or output an argument is (decided as casync decides:
file suffix, ``--what=``, the type of the file system object), and the opening of indexes, stores and
archives the command line names."""

from __future__ import annotations

import os
import sys

from .. import chunker, progress, sources
from ..errors import UsageError
from ..location import Remote, default_store_for, is_remote, local_path, open_store, open_stores
from .options import Options

SUFFIX_KIND = {".catar": "archive", ".caidx": "archive-index", ".caibx": "blob-index"}


def suffix_kind(path: str | None) -> str | None:
    if not path or path == "-":
        return None
    for suffix, kind in SUFFIX_KIND.items():
        if path.endswith(suffix) and len(os.path.basename(path)) > len(suffix):
            return kind
    return None


def kind_of(opts, path: str | None, allowed: tuple[str, ...], what_error: str, suffix_error: str | None):
    """The kind a verb deals with: ``--what=`` when given (one of ``allowed``), else the suffix of
    ``path`` (``suffix_error`` when it has none we know; None: leave the kind undecided)."""
    if opts.what is not None:
        if opts.what not in allowed:
            raise UsageError(what_error)
        return opts.what
    if path and path != "-":
        kind = suffix_kind(path)
        if kind is None and suffix_error:
            raise UsageError(suffix_error)
        return kind
    return None


def strip_file_url(path: str) -> str:
    """A path argument: ``file://`` stripped, http(s) URLs kept, any other URL scheme refused."""
    local = local_path(path)
    return path if local is None else local


def is_url(path: str | None) -> bool:
    """Whether ``path`` is a remote location: an http(s) or an object store's s3+http(s) URL."""
    return is_remote(path)


def remote(opts: Options) -> Remote:
    """The command's HTTP client (made on first use, shared by its stores and downloads; its options
    are checked then, so a local path loads no network module)."""
    if opts.remote is None:
        opts.remote = Remote(dict(opts.http))
    return opts.remote


def make_store(opts: Options, output: str | None):
    """The store ``make`` writes chunks to: ``--store=``, else the default next to the index."""

    return open_store(opts.store or default_store_for(output), digest=opts.digest,
                      compression=opts.compression, remote=remote(opts))


def chunk_sizes(opts: Options) -> tuple[int, int, int] | None:
    """``--chunk-size=`` as (min, avg, max); None when not given."""
    return chunker.chunk_size_from_args(opts.chunk_size) if opts.chunk_size else None


def progress_bar(opts: Options, desc: str, total: int | None, unit: str = "B"):
    """A progress bar on standard error when it is a terminal (none with --no-progress)."""
    return progress.bar(opts.progress, desc, total, unit=unit)


def log(opts: Options, message: str) -> None:
    if opts.verbose:
        sys.stderr.write(message + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def emit_json(obj) -> None:
    import json  # start-up: 1.5-2 ms (python3 -X importtime) that only --json needs

    print(json.dumps(obj, sort_keys=True))


def chunk_stores(opts: Options, index_path: str | None):
    """STORE-10: the stores to read chunks from, behind ``--chunk-cache=`` when given."""

    return open_stores([opts.store or default_store_for(index_path), *opts.extra_stores],
                       cache=opts.chunk_cache, remote=remote(opts))


def signature_keys(opts: Options):
    """The keys ``--verify-key=``/``--allowed-signers=`` name (None: no signature check asked)."""
    if not (opts.verify_key or opts.allowed_signers):
        return None  # nothing to load: sshsig (2 ms of python3 -X importtime) is imported when asked
    from .. import sshsig  # start-up: see above

    return sshsig.allowed_keys(opts.verify_key, opts.allowed_signers)


def open_index(opts: Options, source: str | None):
    """The index (or archive) file ``source`` names, local or fetched from a URL; stdin for None.
    With ``--verify-key=``/``--allowed-signers=`` its signature is checked first (SIG-4)."""
    return sources.open_index(source, remote=remote(opts), keys=signature_keys(opts),
                              on_verified=lambda line: log(opts, line))


def open_catar(opts: Options, kind: str, source: str | None):
    """The entries of the archive or archive index ``source`` (see :func:`pycatar.sources.open_catar`)."""
    stores = chunk_stores(opts, source) if kind == "archive-index" else None
    return sources.open_catar(source, kind=kind, stores=stores, remote=remote(opts), keys=signature_keys(opts),
                              feature_mask=opts.feature_mask(), on_verified=lambda line: log(opts, line))


def no_signature_for_directory(opts: Options, kind: str | None) -> None:
    if kind == "directory" and (opts.verify_key or opts.allowed_signers):
        raise UsageError("--verify-key=/--allowed-signers= check an index or archive file, not a directory.")


def index_argument(opts, args: list[str], verb: str, usage: str):
    """The one index argument of ``verb`` (a path, URL or -) and its kind."""
    if len(args) < 1:
        raise UsageError(f"Usage: pycatar {verb} {usage}")
    source = strip_file_url(args[0])
    kind = kind_of(opts, source, ("archive-index", "blob-index"),
                   f'"{verb}" operation may only be combined with --what=archive-index or --what=blob-index.',
                   "Index file does not have valid suffix, refusing. (May be one of: .caidx, .caibx)")
    return (None if source == "-" else source), kind or "blob-index"


def classify_listing_input(opts, verb, args, allowed):
    """casync's rules for what a list/mtree/stat/digest input is."""
    source = strip_file_url(args[0]) if args else None
    kind = None
    if opts.what is not None:
        if opts.what not in allowed:
            raise UsageError(f'"{verb}" operation may only be combined with --what=' + ", ".join(allowed) + ".")
        kind = opts.what
    if kind is None and source and source != "-":
        k = suffix_kind(source)
        if k in ("archive", "archive-index") or (verb == "digest" and k == "blob-index"):
            kind = k
    if source is None and kind in (None, "directory"):
        source = "."
    if source == "-":
        source = None
    return source, kind
