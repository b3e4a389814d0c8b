"""Goodbye tables: the per-directory lookup table that closes each directory in a catar stream.

Each child gets an item (offset back from the GOODBYE record to its FILENAME record, size of the
child's serialisation, SipHash-2-4 of its name); the items are sorted by (hash, offset) and
stored as an implicit binary search tree, followed by a tail (spec/catar.md)."""

from __future__ import annotations

from collections.abc import Iterator

from . import format as fmt

from ._catar import siphash24


def name_hash(name: bytes, _key=fmt.GOODBYE_HASH_KEY) -> int:
    """The goodbye hash of a file name: SipHash-2-4 with the format's key, read little-endian (in C:
    the decoder's iteration hashes every name it reads with the same function, _catar.parse_child)."""
    return siphash24(name, _key)


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


def inorder_slots(n: int) -> Iterator[int]:
    """The slots of an n-item table in the order of the sorted items they hold (an in-order walk of
    the tree :func:`bst_layout` builds): ``bst_layout(s)[i]`` for i in ``inorder_slots(len(s))`` is
    ``s`` again.  Lets a reader check a table's order in O(1) memory."""
    stack = []
    i = 0
    while True:
        while i < n:
            stack.append(i)
            i = 2 * i + 1
        if not stack:
            return
        i = stack.pop()
        yield i
        i = 2 * i + 2


_PERMUTATIONS: dict[int, tuple[int, ...]] = {}


def bst_permutation(n: int) -> tuple[int, ...]:
    """``bst_layout(range(n))``: which sorted item goes to each slot (memoised for small n)."""
    perm = _PERMUTATIONS.get(n)
    if perm is None:
        perm = tuple(bst_layout(list(range(n))))
        if n <= 4096:
            _PERMUTATIONS[n] = perm
    return perm


_T_GOODBYE = fmt.RecordType.GOODBYE
_T_TAIL = fmt.RecordType.GOODBYE_TAIL_MARKER


def goodbye_record(items: list, goodbye_offset: int, entry_offset: int) -> bytes:
    """The GOODBYE record of a directory.  ``items``: (hash, start, end) archive offsets of each
    child's FILENAME record and of the end of its serialisation."""
    n = len(items)
    size = fmt.HEADER_SIZE + fmt.GOODBYE_ITEM_SIZE * (n + 1)
    items = sorted(items)
    pack = fmt.GOODBYE_ITEM.pack
    parts = [fmt.HEADER.pack(size, _T_GOODBYE)]
    for i in bst_permutation(n):
        h, start, end = items[i]
        parts.append(pack(goodbye_offset - start, end - start, h))
    parts.append(fmt.GOODBYE_TAIL.pack(goodbye_offset - entry_offset, size, _T_TAIL))
    return b"".join(parts)
