"""Goodbye tables: the per-directory lookup table that closes each directory in a catar stream.

Each child gets an item (offset back from the GOODBYE record to its FILENAME record, size of the
child's serialisation, SipHash-2-4 of its name); the items are sorted by (hash, offset) and
stored as an implicit binary search tree, followed by a tail (spec/catar.md)."""

from __future__ import annotations

from siphash24 import siphash24

from . import format as fmt


def name_hash(name: bytes) -> int:
    """The goodbye hash of a file name: SipHash-2-4 with the format's key, read little-endian."""
    return int.from_bytes(siphash24(name, key=fmt.GOODBYE_HASH_KEY).digest(), "little")


def _fill(src: list, lo: int, n: int, e: int, out: list, i: int) -> None:
    # place src[lo:lo+n] as the subtree rooted at out[i]; the tree is filled level by level,
    # the last level from the left
    while n > 0:
        p = 1 << (e - 1)
        q = p << 1
        if n >= p - 1 + p // 2:
            k = (q - 2) // 2
        else:
            k = (q - 2) // 2 - (p - 1 + p // 2 - n)
        out[i] = src[lo + k]
        _fill(src, lo, k, e - 1, out, 2 * i + 1)
        lo, n, e, i = lo + k + 1, n - k - 1, e - 1, 2 * i + 2


def bst_layout(sorted_items: list) -> list:
    """Permute a sorted list into the array form of a binary search tree (children of i at 2i+1
    and 2i+2), the order goodbye items are stored in."""
    n = len(sorted_items)
    out = [None] * n
    if n:
        _fill(sorted_items, 0, n, n.bit_length(), out, 0)
    return out


def goodbye_record(items: list, goodbye_offset: int, entry_offset: int) -> bytes:
    """The GOODBYE record of a directory.  ``items``: (hash, start, end) archive offsets of each
    child's FILENAME record and of the end of its serialisation."""
    size = fmt.HEADER_SIZE + fmt.GOODBYE_ITEM_SIZE * (len(items) + 1)
    parts = [fmt.HEADER.pack(size, fmt.RecordType.GOODBYE)]
    pack = fmt.GOODBYE_ITEM.pack
    for h, start, end in bst_layout(sorted(items)):
        parts.append(pack(goodbye_offset - start, end - start, h))
    parts.append(fmt.GOODBYE_TAIL.pack(goodbye_offset - entry_offset, size, fmt.RecordType.GOODBYE_TAIL_MARKER))
    return b"".join(parts)
