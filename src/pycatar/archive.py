"""The library API: make, read and extract catar archives (and, through :mod:`pycatar.blob`, their
chunked form), shaped like :mod:`tarfile`.

>>> import pycatar.archive as ca
>>> ca.make_archive("tree.catar", "tree")          # doctest: +SKIP
>>> with ca.open("tree.catar") as ar:               # doctest: +SKIP
...     for entry in ar: print(entry.path)
...     ar.extractall("out")
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from . import digest as _digest
from .encoder import CatarEncoder
from .fileio import AtomicFile
from .flags import DEFAULT, digest_name


@dataclass
class MakeResult:
    digest_hex: str  # digest of the whole catar stream, as casync prints it after make
    size: int
    feature_flags: int
    covering_flags: int


def make_archive(output, source, *, feature_flags: int = int(DEFAULT), mode: int = 0o644,
                 **encoder_options) -> MakeResult:
    """Archive the directory ``source`` into the catar file ``output`` (a path, a binary file object,
    or None for standard output).  Returns the archive digest and statistics."""
    encoder = CatarEncoder(source, feature_flags, **encoder_options)
    h = _digest.new(digest_name(encoder.feature_flags))
    if output is None or hasattr(output, "write"):
        out = output if output is not None else sys.stdout.buffer
        for piece in encoder:
            h.update(piece)
            out.write(piece)
        out.flush()
    else:
        with AtomicFile(output, mode) as out:
            for piece in encoder:
                h.update(piece)
                out.write(piece)
    return MakeResult(h.hexdigest(), encoder.offset, encoder.feature_flags, encoder.covering_flags)


def catar_digest(source, *, feature_flags: int = int(DEFAULT), **encoder_options) -> str:
    """The digest casync prints for ``digest DIRECTORY``: that of the catar stream of the tree."""
    encoder = CatarEncoder(source, feature_flags, **encoder_options)
    h = _digest.new(digest_name(encoder.feature_flags))
    for piece in encoder:
        h.update(piece)
    return h.hexdigest()


def make_archive_index(output, source, *, store, feature_flags: int = int(DEFAULT),
                       chunk_size: tuple[int, int, int] | None = None, compression: str = "zstd",
                       mode: int = 0o644, threads: int | None = None, **encoder_options) -> MakeResult:
    """Archive the directory ``source`` as a chunked catar: chunks into ``store``, the .caidx index
    into ``output`` (path, file object, or None for standard output).  The catar stream is produced,
    chunked, hashed and compressed incrementally, in bounded memory."""
    from . import blob

    encoder = CatarEncoder(source, feature_flags, **encoder_options)
    res = blob.make_blob_index(iter(encoder), sys.stdout.buffer if output is None else output, store,
                               chunk_size=chunk_size, digest=digest_name(encoder.feature_flags),
                               compression=compression, feature_flags=encoder.feature_flags,
                               threads=threads, index_mode=mode)
    return MakeResult(res.hexdigest, res.size, encoder.feature_flags, encoder.covering_flags)
