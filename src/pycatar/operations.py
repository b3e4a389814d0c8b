"""The operations of the ``pycatar`` command as library calls: :func:`make` (an archive, archive
index or blob index from a directory, a tar or a file; reproducible or not; written to a path, a
file object, standard output or uploaded to a URL) and :func:`extract` (an archive, archive index or
blob index into a directory, a file or a tar).  The command line only decides, as casync does, what
kind of input and output its arguments are, then calls these.

>>> from pycatar import operations, reproducible
>>> operations.make("tree.catar", "tree", reproducible=True,
...                 source_date_epoch=reproducible.source_date_epoch())        # doctest: +SKIP
>>> operations.make("tree.caidx", "tree.tar", kind="archive-index",
...                 source_format="tar", store="tree.castr")                   # doctest: +SKIP
>>> operations.extract("tree.caidx", "tree.tar", kind="archive-index",
...                    output_format="tar", stores=["tree.castr"])             # doctest: +SKIP
>>> operations.digest("tree", kind="directory")                               # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable

from . import flags
from . import digest as _digest
from . import reproducible as _reproducible
from .errors import UsageError
from .fileio import AtomicFile
from .location import Remote, default_store_for, open_store, open_stores, upload
from .location import is_remote as _is_remote_location
from .sources import open_catar, open_index

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from .archive import MakeResult

# Imports marked "start-up" are made where they are needed: the tar converter (tarfile), the extractor
# and the seeding (assembly) cost 60-90 ms of start-up each, the FUSE file system about 200 ms (python3 -X importtime, minimum of 5 runs on
# the 2-core machine, 2026-12-02) that make and digest, the verbs that load this module most, do not need.
# So are shutil, tempfile and urllib.parse, which only uploads and mounts of a URL use (11-15 ms of
# python3 -X importtime on an extraction, 2026-12-03).
# The encoder (and archive, which writes with it) is imported by make and by the digest of a directory, the
# chunk stream (blob, index, pool) where an index is read or written: the digest of a .catar,
# a reading verb, loads neither (10-15 ms each of python3 -X importtime, benchmarks/startup.py).

#: what :func:`make` makes and :func:`extract` extracts
KINDS = ("archive", "archive-index", "blob-index")
#: what :func:`digest` digests
DIGEST_KINDS = ("archive", "archive-index", "blob", "blob-index", "directory")
#: what :func:`make` reads: a directory tree (or for a blob index, a file), or a tar (spec/tar.md)
SOURCE_FORMATS = ("directory", "tar")
#: what :func:`extract` writes an archive as: a directory tree, or a tar (spec/tar.md)
OUTPUT_FORMATS = ("directory", "tar")


def is_remote(location) -> bool:
    """Whether ``location`` is an http(s) or s3+http(s) URL (else a local path or a file object)."""
    return isinstance(location, str) and _is_remote_location(location)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def make(output, source, *, kind: str = "archive", source_format: str = "directory",
         store=None, feature_flags: int | None = None, digest: str = "sha512-256",
         reproducible: bool = False, owner: int | None = None, group: int | None = None,
         source_date_epoch: int | None = None, chunk_size: tuple[int, int, int] | None = None,
         compression: str = "zstd", mode: int = 0o644, remote: Remote | None = None,
         on_bytes: Callable[[int], None] | None = None, warn: Callable[[str], None] | None = None,
         **encoder_options) -> MakeResult:
    """Make ``kind`` (``archive``: a .catar, ``archive-index``: a .caidx and its chunks, ``blob-index``:
    a .caibx and its chunks) from ``source`` and write it to ``output``.

    ``source``: for an archive, a directory (``source_format="directory"``) or a tar file
    (``source_format="tar"``: a path or None for standard input; spec/tar.md); for a blob index, a
    path, a binary file object or None for standard input.
    ``output``: a path (written under a temporary name, then renamed), a binary file object, None for
    standard output, or for an index an http(s)/s3+http(s) URL (uploaded once its chunks are stored).
    ``store``: the chunk store of an index (a location or an opened store; default: next to ``output``).
    ``feature_flags``: what the archive stores (default: casync's, or the reproducible set).
    ``reproducible``: the same bytes on any machine (spec/reproducible.md): owners 0/0 unless
    ``owner``/``group`` say otherwise, mtimes clamped to ``source_date_epoch`` (seconds, e.g.
    :func:`pycatar.reproducible.source_date_epoch`), and every file system read must be able to store
    the reproducible features.  ``owner``/``group`` alone store those ids for every entry.
    ``encoder_options``: those of :class:`~pycatar.encoder.EncoderOptions` (``uid_shift``...).
    ``warn`` gets each warning (e.g. tar members that cannot be stored as they are)."""
    _check("kind", kind, KINDS)
    _check("source_format", source_format, SOURCE_FORMATS)
    if kind == "blob-index" and source_format != "directory":
        raise ValueError("a blob index is made of a file, not of a tar's members")
    if is_remote(output):
        if kind == "archive":
            raise UsageError("Only index files (.caibx, .caidx) can be uploaded; make the archive locally.")
        return _make_and_upload(output, source, kind=kind, store=store, feature_flags=feature_flags,
                                digest=digest, reproducible=reproducible, owner=owner, group=group,
                                source_date_epoch=source_date_epoch, chunk_size=chunk_size,
                                compression=compression, mode=mode, remote=remote, on_bytes=on_bytes, warn=warn,
                                source_format=source_format, **encoder_options)
    if kind != "archive" and (store is None or isinstance(store, (str, os.PathLike))):
        store = open_store(store or default_store_for(output), digest=digest, compression=compression,
                           remote=remote)
    if kind == "blob-index":
        if feature_flags is None:
            feature_flags = flags.from_options((), (), digest=digest, default_with=0)
        from .archive import MakeResult  # start-up: see the top
        from .blob import make_blob_index  # start-up: see the top

        res = make_blob_index(sys.stdin.buffer if source is None else source,
                              sys.stdout.buffer if output is None else output, store, chunk_size=chunk_size,
                              digest=digest, compression=compression, feature_flags=feature_flags,
                              index_mode=mode, on_bytes=on_bytes)
        return MakeResult(res.hexdigest, res.size, feature_flags, feature_flags, res)

    if feature_flags is None:
        feature_flags = _reproducible.feature_flags(digest=digest) if reproducible else int(flags.DEFAULT)
    options = dict(encoder_options)
    if reproducible or owner is not None or group is not None:
        options.update(_reproducible.encoder_options(feature_flags, owner=owner, group=group,
                                                     epoch=source_date_epoch if reproducible else None,
                                                     reproducible=reproducible,
                                                     tree=source_format == "directory"))
    from . import archive  # start-up: see the top
    from .encoder import CatarEncoder  # start-up: see the top

    with contextlib.ExitStack() as stack:
        if source_format == "tar":
            from .tarconv import TarEncoder  # start-up: see the top

            spool_dir = None  # where a tar member's payload may be spooled: next to the output
            if isinstance(output, (str, os.PathLike)):
                spool_dir = os.path.dirname(os.path.abspath(output))
            encoder = stack.enter_context(TarEncoder(source, feature_flags, spool_dir=spool_dir, **options))
            for message in encoder.warnings:
                if warn is not None:
                    warn(message)
        else:
            encoder = CatarEncoder(source, feature_flags, **options)
        if kind == "archive":
            return archive.write_archive(output, encoder, mode=mode, on_bytes=on_bytes)
        return archive.write_archive_index(output, encoder, store=store, chunk_size=chunk_size,
                                           compression=compression, mode=mode, on_bytes=on_bytes)


def _make_and_upload(url: str, source, *, kind: str, store, remote: Remote | None, **options) -> MakeResult:
    """An index made into a temporary file, then uploaded (PUT) to ``url`` once its chunks are all
    stored (in ``store``, by default the store next to ``url``)."""
    import tempfile  # start-up: see the top

    if store is None:
        store = default_store_for(url)
    with tempfile.TemporaryDirectory(prefix="pycatar-upload-") as tmp:
        local = os.path.join(tmp, "index" + (".caidx" if kind == "archive-index" else ".caibx"))
        result = make(local, source, kind=kind, store=store, remote=remote, **options)
        with open(local, "rb") as f:
            upload(url, f.read(), remote=remote)
    return result


def _no_progress(total: int | None):
    return contextlib.nullcontext(None)


def extract(source: str | None, output, *, kind: str, subpath: str | None = None,
            output_format: str = "directory", stores=None, remote: Remote | None = None,
            keys=None, feature_mask: int | None = None, on_verified: Callable[[str], None] | None = None,
            progress: Callable[[int | None], contextlib.AbstractContextManager] | None = None,
            seeds: Iterable[str] = (), seed_output: bool = True, cache: str | None = None,
            reflink: bool = True, hardlink: bool = False, punch_holes: bool = True,
            warn: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None,
            **extract_options):
    """Extract ``source`` (``kind``: ``archive``, ``archive-index`` or ``blob-index``; a path, URL,
    or None for standard input, opened by :func:`pycatar.sources.open_index`, its signature checked
    against ``keys`` when given) into ``output``.

    A blob index is written to ``output``, a file, block device, binary file object or None for
    standard output.  An archive is written as a directory tree at ``output`` (the sub-tree at
    ``subpath`` only, if given; ``extract_options`` are those of
    :func:`pycatar.extract.extract_archive`: ``delete``, ``undo_immutable``, ``uid_shift``...), or with
    ``output_format="tar"`` as a pax tar to ``output`` (a path, written under a temporary name and then
    renamed, a binary file object, or None for standard output).
    ``stores``: where an index's chunks are (a :class:`~pycatar.store.StoreSet`, or a list of
    locations); ``seeds``, ``seed_output``, ``cache``, ``reflink``, ``hardlink``: where else chunks may
    be found (spec/seeds.md).  ``progress(total)`` may return a context manager giving a callable that
    counts the bytes written (its ``details`` attribute, if any, gets the seeding summary).
    Returns the seeding :class:`~pycatar.assembly.Summary` of an index, the
    :class:`~pycatar.tarconv.TarStats` of a tar (its warnings to report), else None."""
    _check("kind", kind, KINDS)
    _check("output_format", output_format, OUTPUT_FORMATS)
    if kind == "blob-index" and (subpath or output_format != "directory"):
        raise ValueError("a blob index has neither sub-paths nor a tar form")
    if stores is not None and not hasattr(stores, "concurrency"):
        stores = open_stores(list(stores), remote=remote)
    progress = progress or _no_progress
    seeding = dict(seeds=seeds, seed_output=seed_output, cache=cache, reflink=reflink, warn=warn, progress=log)

    def details(bar):
        return None if bar is None else (lambda summary: setattr(bar, "details", summary.short))

    if output_format == "tar":
        from .tarconv import write_tar  # start-up: see the top

        with open_catar(source, kind=kind, stores=stores, remote=remote, keys=keys, feature_mask=feature_mask,
                        on_verified=on_verified) as reader:
            if isinstance(output, (str, os.PathLike)):
                with AtomicFile(output, 0o666) as f:
                    return write_tar(reader, f, subpath)
            stats = write_tar(reader, sys.stdout.buffer if output is None else output, subpath)
            (sys.stdout.buffer if output is None else output).flush()
            return stats

    from . import assembly  # start-up: see the top
    from .index import IndexReader  # start-up: see the top

    with open_index(source, remote=remote, keys=keys, on_verified=on_verified) as src:
        if kind == "archive":
            from .extract import extract_archive  # start-up: see the top (a blob needs no tree extractor)

            extract_archive(src, output, subpath, feature_mask=feature_mask, punch_holes=punch_holes,
                            **extract_options)  # no chunks: seeds have nothing to offer
            return None
        with IndexReader(src) as index:
            if kind == "blob-index":
                with progress(index.blob_size) as bar:
                    return assembly.extract_blob(index, sys.stdout.buffer if output is None else output, stores,
                                                 sparse=punch_holes, on_bytes=bar, on_summary=details(bar),
                                                 **seeding)
            with progress(None if subpath else index.blob_size) as bar:
                _stats, summary = assembly.extract_tree(index, output, stores, subpath, hardlink=hardlink,
                                                        on_bytes=bar, on_summary=details(bar), **seeding,
                                                        feature_mask=feature_mask, punch_holes=punch_holes,
                                                        **extract_options)
            return summary


def digest(source: str | None, *, kind: str, subpath: str | None = None, stores=None,
           remote: Remote | None = None, keys=None, on_verified: Callable[[str], None] | None = None,
           feature_flags: int = int(flags.DEFAULT), feature_mask: int | None = None,
           digest_name: str = "sha512-256", **encoder_options) -> str:
    """The digest (hex) ``casync digest`` prints for ``source`` of ``kind``: a ``directory``'s catar
    stream (made with ``feature_flags`` and ``encoder_options``); a ``blob`` (a file, a URL or None for
    standard input) hashed with ``digest_name``; the stream a ``blob-index`` describes (sha512-256, as
    casync, its chunks from ``stores``); an ``archive`` or ``archive-index`` (or its sub-tree at
    ``subpath``).  Files are opened as :func:`pycatar.sources.open_index` opens them."""
    _check("kind", kind, DIGEST_KINDS)
    if kind == "directory":
        from . import archive  # start-up: see the top

        return archive.catar_digest(source, feature_flags=feature_flags, **encoder_options)
    if kind in ("archive", "archive-index"):
        with open_catar(source, kind=kind, stores=stores, remote=remote, keys=keys, feature_mask=feature_mask,
                        on_verified=on_verified) as reader:
            from . import listing  # start-up: see the top

            return listing.archive_digest(reader, subpath)
    with open_index(source, remote=remote, keys=keys, on_verified=on_verified) as f:
        if kind == "blob-index":
            from .blob import stream_digest  # start-up: see the top

            return stream_digest(f, stores, "sha512-256").hex()
        h = _digest.new(digest_name)
        while True:
            data = f.read(1 << 20)
            if not data:
                return h.hexdigest()
            h.update(data)


def cat(source: str | None, out, offset: int = 0, length: int | None = None, *, stores,
        remote: Remote | None = None, keys=None, on_verified: Callable[[str], None] | None = None) -> int:
    """Write ``length`` bytes (None: up to the end) from ``offset`` of the stream the index ``source``
    describes (opened as :func:`pycatar.sources.open_index` opens it) to the binary file ``out``,
    fetching only the chunks that hold them, in parallel ahead of the writes.  Returns the number of
    bytes written; an ``offset`` beyond the end is refused."""
    from .blob import IndexStream  # start-up: see the top
    from .index import IndexReader  # start-up: see the top

    with open_index(source, remote=remote, keys=keys, on_verified=on_verified) as f, IndexReader(f) as index:
        if offset > index.blob_size:
            raise UsageError(f"OFFSET {offset} lies beyond the end of the stream ({index.blob_size} bytes)")
        end = index.blob_size if length is None else min(index.blob_size, offset + length)
        with IndexStream(index, stores, threads=None, cache_size=4) as stream:
            stream.seek(offset)
            done = 0
            while done < end - offset:
                data = stream.read(min(end - offset - done, 1 << 20))
                if not data:
                    break
                out.write(data)
                done += len(data)
    out.flush()
    return done


def mount(source: str, mountpoint: str, *, kind: str, stores=None, remote: Remote | None = None, keys=None,
          on_verified: Callable[[str], None] | None = None, **mount_options) -> None:
    """Mount the archive or index ``source`` (a path or URL, its signature checked against ``keys``
    when given) read-only on ``mountpoint``; ``mount_options`` are those of :func:`pycatar.mount.mount`
    (``subpath``, ``foreground``, ``seeds``...).  A URL is fetched whole into a temporary file named
    like its last part, removed once the mount has opened it (in the foreground: once it ends)."""
    import shutil  # start-up: see the top
    import tempfile  # start-up: see the top
    import urllib.parse  # start-up: see the top

    from . import mount as fuse_mount  # start-up: see the top

    _check("kind", kind, KINDS)
    if not is_remote(source):
        if keys is not None:
            with open_index(source, remote=remote, keys=keys, on_verified=on_verified):
                pass  # SIG-4: checked as the file is opened
        fuse_mount.mount(source, kind, mountpoint, stores, **mount_options)
        return
    name = os.path.basename(urllib.parse.urlsplit(source).path) or "index"
    with tempfile.TemporaryDirectory(prefix="pycatar-mount-") as tmp:
        local = os.path.join(tmp, name)
        with open_index(source, remote=remote, keys=keys, on_verified=on_verified) as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out)
        fuse_mount.mount(local, kind, mountpoint, stores, **mount_options)
