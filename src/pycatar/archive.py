"""Making archives: the catar stream of an encoder (a tree, a tar...) written to a file, or chunked
into a store with its .caidx index, and the digest casync prints for it.  The tarfile-like API
(:func:`pycatar.open`) is in :mod:`pycatar.api` and writes through these functions.

>>> import pycatar.archive as ca
>>> ca.make_archive("tree.catar", "tree").digest_hex     # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys

from . import digest as _digest
from .encoder import CatarEncoder
from .errors import PycatarError
from .fileio import AtomicFile
from .flags import DEFAULT, digest_name
from .record import Record


class MakeResult(Record):
    __slots__ = ("digest_hex", "size", "feature_flags", "covering_flags", "index")

    def __init__(self, digest_hex: str, size: int, feature_flags: int, covering_flags: int, index: object = None):
        self.digest_hex = digest_hex  # digest of the whole catar stream, as casync prints it after make
        self.size = size
        self.feature_flags = feature_flags
        self.covering_flags = covering_flags
        self.index = index  #: for a .caidx, the chunking's :class:`pycatar.blob.MakeResult` (chunk counts)


def make_archive(output, source, *, feature_flags: int = DEFAULT, mode: int = 0o644, on_bytes=None,
                 **encoder_options) -> MakeResult:
    """Archive the directory ``source`` into the catar file ``output`` (a path, a binary file object,
    or None for standard output).  Returns the archive digest and statistics.  ``encoder_options``
    are those of :class:`~pycatar.encoder.EncoderOptions` (``uid_shift``, ``owner``,
    ``clamp_mtime_ns``...)."""
    return write_archive(output, CatarEncoder(source, feature_flags, **encoder_options), mode=mode,
                         on_bytes=on_bytes)


def write_archive(output, encoder, *, mode: int = 0o644, on_bytes=None) -> MakeResult:
    """Write the catar stream of ``encoder`` (a :class:`~pycatar.encoder.CatarEncoder` or any
    :class:`~pycatar.encoder.CatarSerializer` with ``feature_flags`` and ``covering_flags``, e.g.
    :class:`pycatar.tarconv.TarEncoder`) to ``output`` as :func:`make_archive` does."""
    h = _digest.new(digest_name(encoder.feature_flags))
    if output is None or hasattr(output, "write"):
        out = output if output is not None else sys.stdout.buffer
        name = getattr(out, "name", None) if output is not None else "standard output"
        _pump(encoder, h, out, name if isinstance(name, str) else "the output", on_bytes)
        try:
            out.flush()
        except OSError as e:
            raise PycatarError(f"Failed to write {name}: {e.strerror or e}") from None
    else:
        with AtomicFile(output, mode) as out:
            _pump(encoder, h, out, os.fsdecode(output), on_bytes)
    return MakeResult(h.hexdigest(), encoder.offset, encoder.feature_flags, encoder.covering_flags)


#: output buffers in flight between the encoder and the thread hashing and writing them
_PUMP_DEPTH = 3


def _write_error(name: str, e: OSError) -> PycatarError:
    return PycatarError(f"Failed to write {name}: {e.strerror or e}")  # e.g. a full disk, named


def _pump(encoder, h, out=None, name: str = "the output", on_bytes=None) -> None:
    """Hash (and write to ``out``, named ``name`` in errors, if given) the stream of ``encoder``.  A
    :class:`~pycatar.encoder.CatarEncoder` fills large buffers that helper threads hash and write
    (both release the GIL) while the walk goes on; the buffers are recycled.  Other serialisers'
    pieces are handled inline."""
    if not hasattr(encoder, "buffers"):
        for piece in encoder:
            h.update(piece)
            if out is not None:
                try:
                    out.write(piece)
                except OSError as e:
                    raise _write_error(name, e) from None
            if on_bytes is not None:
                on_bytes(len(piece))
        return

    from collections import deque
    from .pool import ThreadPool

    from .encoder import new_buffer

    failed: list = []

    def write(mv) -> None:
        if failed:  # never write past a failed write
            return
        try:
            out.write(mv)
        except OSError as e:
            failed.append(e)
            raise _write_error(name, e) from None
        except BaseException as e:
            failed.append(e)
            raise

    inflight: deque = deque()  # (futures, buffer)

    def alloc() -> bytearray:
        if len(inflight) >= _PUMP_DEPTH:
            futures, buf = inflight.popleft()
            for fut in futures:
                fut.result()
            return buf
        return new_buffer()

    pools = [ThreadPool(1, "catar-hash")]
    if out is not None:
        pools.append(ThreadPool(1, "catar-write"))
    try:
        for mv in encoder.buffers(alloc):
            futures = [pools[0].submit(h.update, mv)]
            if out is not None:
                futures.append(pools[1].submit(write, mv))
            inflight.append((futures, mv.obj))
            if on_bytes is not None:
                on_bytes(len(mv))
        while inflight:
            for fut in inflight.popleft()[0]:
                fut.result()
    finally:
        for futures, _ in inflight:
            for fut in futures:
                fut.cancel()
        for pool in pools:
            pool.shutdown(wait=True)


def catar_digest(source, *, feature_flags: int = DEFAULT, **encoder_options) -> str:
    """The digest casync prints for ``digest DIRECTORY``: that of the catar stream of the tree."""
    encoder = CatarEncoder(source, feature_flags, **encoder_options)
    h = _digest.new(digest_name(encoder.feature_flags))
    _pump(encoder, h)
    return h.hexdigest()


def make_archive_index(output, source, *, store, feature_flags: int = DEFAULT,
                       chunk_size: tuple[int, int, int] | None = None, compression: str = "zstd",
                       mode: int = 0o644, threads: int | None = None, on_bytes=None,
                       **encoder_options) -> MakeResult:
    """Archive the directory ``source`` as a chunked catar: chunks into ``store``, the .caidx index
    into ``output`` (path, file object, or None for standard output).  The catar stream is produced,
    chunked, hashed and compressed incrementally, in bounded memory."""
    return write_archive_index(output, CatarEncoder(source, feature_flags, **encoder_options), store=store,
                               chunk_size=chunk_size, compression=compression, mode=mode, threads=threads,
                               on_bytes=on_bytes)


def write_archive_index(output, encoder, *, store, chunk_size: tuple[int, int, int] | None = None,
                        compression: str = "zstd", mode: int = 0o644, threads: int | None = None,
                        on_bytes=None) -> MakeResult:
    """Chunk the catar stream of ``encoder`` (see :func:`write_archive`) into ``store`` and write its
    .caidx index to ``output``, as :func:`make_archive_index` does."""
    from . import blob

    res = blob.make_blob_index(_in_thread(encoder), sys.stdout.buffer if output is None else output, store,
                               chunk_size=chunk_size, digest=digest_name(encoder.feature_flags),
                               compression=compression, feature_flags=encoder.feature_flags,
                               threads=threads, index_mode=mode, on_bytes=on_bytes)
    return MakeResult(res.hexdigest, res.size, encoder.feature_flags, encoder.covering_flags, res)


def _in_thread(encoder, depth: int = 4):
    """The pieces of ``encoder``, made by a helper thread up to ``depth`` pieces ahead, so that the
    walk (Python, holding the GIL) overlaps with the consumer's GIL-free work (chunking, hashing,
    compressing).  Exceptions are re-raised here; closing the generator stops the helper."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        it = iter(encoder)
        try:
            for piece in it:
                while True:
                    if stop.is_set():
                        return
                    try:
                        q.put((piece, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put((None, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=run, name="catar-encode", daemon=True)
    t.start()
    try:
        while True:
            piece, exc = q.get()
            if exc is not None:
                raise exc
            if piece is done:
                return
            yield piece
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()
