"""Opening what an operation reads, wherever it is: an index or archive file by path, URL or standard
input, refused unless its signature verifies when keys are given (SIG-4), and the catar entries of an
archive (.catar) or of the stream an archive index (.caidx) describes, its chunks from stores.

>>> from pycatar import location, sources
>>> stores = location.open_stores(["http://host/store"])                  # doctest: +SKIP
>>> with sources.open_catar("http://host/tree.caidx", kind="archive-index",
...                         stores=stores) as reader:                      # doctest: +SKIP
...     for entry in reader: print(entry.path)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from .errors import PycatarError, UsageError
from .location import Remote, open_input, shown

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from typing import BinaryIO
    from . import sshsig
    from .decoder import CatarReader

# An archive index's stream (blob.IndexStream, with the index reader, the chunk stores and the
# worker pool: 10-15 ms of python3 -X importtime, benchmarks/startup.py) is imported where it is
# opened ("start-up" below), so that reading a .catar does not load it; the signature checker (sshsig,
# 2 ms) where a signature is checked; the archive decoder (with the entry validation, 5-7 ms) where an
# archive is read, not for a blob's index.

#: what ``kind`` an archive's bytes are: the catar stream itself, or an index of its chunks
ARCHIVE_KINDS = ("archive", "archive-index")


def check_signature(location: str, f: BinaryIO, keys: list[sshsig.PublicKey], *,
                    remote: Remote | None = None) -> sshsig.PublicKey:
    """SIG-4: return the key of ``keys`` whose signature ``<location>.sig`` is of the file ``location``
    (open as ``f``, read from its start; left at its start); :class:`~pycatar.sshsig.SignatureError`
    when the signature is missing, malformed or by no key of ``keys``."""
    from . import sshsig  # start-up: see the top

    where = sshsig.signature_location(location)
    try:
        with open_input(where, remote=remote, what="signature", limit=sshsig.MAX_SIG_FILE) as s:
            text = s.read(sshsig.MAX_SIG_FILE + 1)
    except PycatarError as e:
        raise sshsig.SignatureError(f"signature {shown(where)} of {shown(location)} is missing or unreadable: "
                                    f"{e}") from None
    if len(text) > sshsig.MAX_SIG_FILE:
        raise sshsig.SignatureError(f"signature {shown(where)}: malformed (too large)")
    return sshsig.verify_file(f, text, keys, what=f"signature {shown(where)}")


def open_index(location: str | None, *, remote: Remote | None = None,
               keys: list[sshsig.PublicKey] | None = None,
               on_verified: Callable[[str], None] | None = None) -> BinaryIO:
    """The index (or archive) file ``location`` names (a path, ``file://``, http(s) or s3+http(s) URL),
    as a binary file; standard input for None (then not closed with the result).  With ``keys``
    its signature is checked first (:func:`check_signature`); ``on_verified`` gets a line saying by
    which key."""
    if location is None:
        if keys is not None:
            raise UsageError("--verify-key=/--allowed-signers= need the index as a path or URL, not standard input.")
        return sys.stdin.buffer
    f = open_input(location, remote=remote, what="index")
    if keys is None:
        return f
    try:
        key = check_signature(location, f, keys, remote=remote)
    except BaseException:
        f.close()
        raise
    if on_verified is not None:
        on_verified(f"{shown(location)}: good signature by {key.key_type} {key.fingerprint}")
    return f


@contextlib.contextmanager
def open_catar(location: str | None, *, kind: str = "archive", stores=None, remote: Remote | None = None,
               keys: list[sshsig.PublicKey] | None = None, feature_mask: int | None = None,
               on_verified: Callable[[str], None] | None = None) -> Iterator[CatarReader]:
    """A :class:`~pycatar.decoder.CatarReader` over the archive ``location`` (opened as
    :func:`open_index` does): a .catar (``kind="archive"``) or the stream an archive index
    describes (``kind="archive-index"``, its chunks from ``stores``, a
    :class:`~pycatar.store.StoreSet`; with remote stores the chunks are fetched ahead of the reader,
    in parallel).  Everything opened is closed when the block ends."""
    if kind not in ARCHIVE_KINDS:
        raise ValueError(f"kind must be one of {ARCHIVE_KINDS}, not {kind!r}")
    with contextlib.ExitStack() as stack:
        src = open_index(location, remote=remote, keys=keys, on_verified=on_verified)
        if location is not None:
            stack.enter_context(src)
        if kind == "archive-index":
            from .blob import IndexStream  # start-up: see the top
            from .index import IndexReader  # start-up: see the top

            index = stack.enter_context(IndexReader(src))
            # remote stores: chunks fetched ahead of the decoder, in parallel
            src = stack.enter_context(IndexStream(index, stores, threads=None if stores.concurrency else 0,
                                                  cache_size=8))
        from .decoder import CatarReader  # start-up: see the top (indexes of blobs need no archive decoder)

        yield CatarReader(src, feature_mask=feature_mask)
