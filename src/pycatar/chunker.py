"""Content-defined chunking, exactly as casync cuts a stream (spec/chunker.md).

:class:`Chunker` wraps the C core (:mod:`pycatar._chunker`): feed it buffers of any size and it
returns the offsets (relative to each buffer) at which chunks end; the tail of the stream after
the last cut is the final chunk.  :func:`resolve_chunk_sizes` and :func:`chunk_size_from_args`
turn user input into the (min, avg, max) triple the way ``casync --chunk-size=`` does.
"""

from __future__ import annotations

from . import _chunker
from .errors import UsageError

#: CHUNK-2: hard limits of every chunk size parameter (and of every chunk).
CHUNK_SIZE_LIMIT_MIN = 1
CHUNK_SIZE_LIMIT_MAX = 128 * 1024 * 1024
#: CHUNK-2: the default average chunk size; min and max default to a quarter and four times it.
CHUNK_SIZE_AVG_DEFAULT = 64 * 1024
DEFAULT_CHUNK_SIZES = (CHUNK_SIZE_AVG_DEFAULT // 4, CHUNK_SIZE_AVG_DEFAULT, CHUNK_SIZE_AVG_DEFAULT * 4)
#: CHUNK-3: bytes covered by the rolling hash.
WINDOW_SIZE = _chunker.WINDOW_SIZE
#: CHUNK-3: the buzhash table (index: byte value).
BUZHASH_TABLE: tuple[int, ...] = _chunker.TABLE
buzhash = _chunker.buzhash

_UINT64_MAX = (1 << 64) - 1


def discriminator_from_avg(avg: int) -> int:
    """The raw cut discriminator for an average chunk size (CHUNK-4), before clamping to [min, max].

    The value is computed in IEEE double precision as casync does.  Where the formula turns
    negative (avg above about 9.3 MB) the result is "larger than any max" (casync's amd64 build
    converts the negative double to a huge unsigned value), so the caller's clamping yields max.
    """
    d = avg / (-1.42888852e-7 * avg + 1.33237515)
    if d < 0:
        return _UINT64_MAX
    return int(d)  # truncation toward zero, like the C conversion


def discriminator(min_size: int, avg_size: int, max_size: int) -> int:
    """The discriminator actually used for cutting (CHUNK-4): the raw value clamped to [min, max]."""
    return max(min_size, min(max_size, discriminator_from_avg(avg_size)))


def resolve_chunk_sizes(min_size: int = 0, avg_size: int = 0, max_size: int = 0) -> tuple[int, int, int]:
    """Fill in unspecified (0) sizes and validate, the way casync configures its chunker (CHUNK-2).

    Raises :class:`UsageError` for sizes casync refuses."""
    lo, hi = CHUNK_SIZE_LIMIT_MIN, CHUNK_SIZE_LIMIT_MAX
    for v in (min_size, avg_size, max_size):
        if v < 0:
            raise UsageError(f"chunk size must not be negative: {v}")
    if avg_size == 0:
        if min_size and max_size:
            import math

            avg_size = round_half_even_lrint(2 ** ((math.log2(min_size) + math.log2(max_size)) / 2))
        elif min_size:
            avg_size = min_size * 4
        elif max_size:
            avg_size = max_size // 4
        else:
            avg_size = CHUNK_SIZE_AVG_DEFAULT
        avg_size = min(max(avg_size, lo), hi)
    elif not lo <= avg_size <= hi:
        raise UsageError(f"Average chunk size must be >= {lo} and <= {hi}: {avg_size}")

    if min_size == 0:
        min_size = max(avg_size // 4, lo)
    elif min_size < lo:
        raise UsageError(f"Minimum chunk size must be >= {lo}.")
    elif min_size > avg_size:
        raise UsageError("Average chunk size must be larger than minimum chunk size.")

    if max_size == 0:
        max_size = min(avg_size * 4, hi)
    elif max_size > hi:
        raise UsageError(f"Maximum chunk size must be <= {hi}.")
    elif max_size < avg_size:
        raise UsageError("Average chunk size must be smaller than maximum chunk size.")

    return min_size, avg_size, max_size


def round_half_even_lrint(x: float) -> int:
    """C lrint() in the default rounding mode (round half to even) — Python's round() does that."""
    return int(round(x))


# --------------------------------------------------------------------------- --chunk-size= parsing

_SIZE_SUFFIXES = (
    ("E", 1024**6),
    ("P", 1024**5),
    ("T", 1024**4),
    ("G", 1024**3),
    ("M", 1024**2),
    ("K", 1024),
    ("B", 1),
    ("", 1),
)
_WS = " \t\n\r"
_ULLONG_MAX = (1 << 64) - 1


class _SizeError(Exception):
    pass


def _digits_end(t: str, i: int) -> int:
    """The end of the run of decimal digits (0-9) at ``t[i:]``."""
    while i < len(t) and "0" <= t[i] <= "9":
        i += 1
    return i


def parse_size(text: str) -> int:
    """A byte count such as ``64K``, ``1.5M`` or ``1M 512K`` (1024-based), parsed as casync does.

    Raises ValueError when the text is not a size."""
    try:
        return _parse_size(text)
    except _SizeError as e:
        raise ValueError(str(e)) from None


def _parse_size(t: str) -> int:
    total = 0
    start = 0
    p = 0
    n = len(t)
    while True:
        while p < n and t[p] in _WS:
            p += 1
        if p < n and t[p] == "-":
            raise _SizeError("negative size")
        # strtoull(): optional white space and sign, then decimal digits
        q = p
        while q < n and t[q] in _WS:
            q += 1
        if q < n and t[q] in "+-":
            neg = t[q] == "-"
            q += 1
        else:
            neg = False
        e = _digits_end(t, q)
        if e == q:
            raise _SizeError("not a number")
        value = int(t[q:e])
        if value > _ULLONG_MAX:
            raise _SizeError("out of range")
        if neg:
            value = (-value) & _ULLONG_MAX
        frac = 0.0
        if e < n and t[e] == ".":
            e += 1
            f = _digits_end(t, e)
            if f > e:
                digits = t[e:f]
                if int(digits) > _ULLONG_MAX:
                    raise _SizeError("out of range")
                frac = float(int(digits))
                for _ in digits:
                    frac /= 10
                e = f
        while e < n and t[e] in _WS:
            e += 1
        for i in range(start, len(_SIZE_SUFFIXES)):
            if t.startswith(_SIZE_SUFFIXES[i][0], e):
                break
        else:
            raise _SizeError("bad suffix")
        suffix, factor = _SIZE_SUFFIXES[i]
        if value + (frac > 0) > _ULLONG_MAX // factor:
            raise _SizeError("out of range")
        tmp = value * factor + int(frac * factor)
        if tmp > _ULLONG_MAX - total:
            raise _SizeError("out of range")
        total += tmp
        p = e + len(suffix)
        start = i + 1
        if p >= n:
            return total


def chunk_size_from_args(text: str) -> tuple[int, int, int]:
    """Parse a ``--chunk-size=`` value (``AVG``, ``MIN:AVG:MAX`` or ``auto``) like casync (CHUNK-2).

    Returns the effective (min, avg, max) triple; raises :class:`UsageError` with casync's message."""
    lo, hi = CHUNK_SIZE_LIMIT_MIN, CHUNK_SIZE_LIMIT_MAX
    if text == "auto":
        return resolve_chunk_sizes(0, 0, 0)
    if ":" in text:
        k = text.index(":")
        j = text.find(":", k + 1)
        if j < 0:
            raise UsageError(
                "--chunk-size= requires either a single average chunk size or a triplet of minimum, "
                "average and maximum chunk size."
            )
        try:
            a = _parse_size(text[:k])
        except _SizeError:
            raise UsageError(f"Can't parse minimum chunk size: {text}") from None
        if a < lo:
            raise UsageError(f"Minimum chunk size must be >= {lo}.")
        try:
            b = _parse_size(text[k + 1 : j])
        except _SizeError:
            raise UsageError(f"Can't parse average chunk size: {text}") from None
        if b < a:
            raise UsageError("Average chunk size must be larger than minimum chunk size.")
        try:
            c = _parse_size(text[j + 1 :])
        except _SizeError:
            raise UsageError(f"Can't parse maximum chunk size: {text}") from None
        if c < b:
            raise UsageError("Average chunk size must be smaller than maximum chunk size.")
        if c > hi:
            raise UsageError(f"Maximum chunk size must be <= {hi}.")
    else:
        try:
            b = _parse_size(text)
        except _SizeError:
            raise UsageError(f"Can't parse average chunk size: {text}") from None
        if b < lo:
            raise UsageError(f"Average chunk size must be >= {lo}.")
        if b > hi:
            raise UsageError(f"Average chunk size must be <= {hi}.")
        a = c = 0
    # casync applies the average first, then the minimum, then the maximum; each step re-derives
    # the unspecified values.  With the checks above, the end result is this:
    return resolve_chunk_sizes(a, b, c)


# --------------------------------------------------------------------------- the chunker


class Chunker:
    """Cuts a byte stream into chunks as casync does (spec/chunker.md).

    ``feed(buf)`` returns the cut offsets inside ``buf`` (each the end of a finished chunk,
    relative to the start of ``buf``); state carries over between calls.  Whatever was fed after
    the last cut (:attr:`pending` bytes) is the final chunk when the stream ends.  ``feed``
    accepts any C-contiguous buffer (bytes, bytearray, memoryview, mmap) without copying and
    releases the GIL while scanning.  One Chunker must not be fed from two threads at once.
    """

    __slots__ = ("_c", "min_size", "avg_size", "max_size", "discriminator")

    def __init__(self, min_size: int = 0, avg_size: int = 0, max_size: int = 0):
        mn, av, mx = resolve_chunk_sizes(min_size, avg_size, max_size)
        self.min_size, self.avg_size, self.max_size = mn, av, mx
        self.discriminator = discriminator(mn, av, mx)
        self._c = _chunker.Chunker(mn, av, mx, self.discriminator)

    @classmethod
    def from_sizes(cls, sizes: tuple[int, int, int] | None) -> "Chunker":
        return cls(*(sizes or DEFAULT_CHUNK_SIZES))

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.min_size, self.avg_size, self.max_size

    @property
    def pending(self) -> int:
        """Bytes fed since the last cut."""
        return self._c.pending

    def feed(self, buf) -> list[int]:
        return self._c.feed(buf)

    def reset(self) -> None:
        self._c.reset()

    def split(self, data) -> list[int]:
        """All chunk end offsets of a complete stream ``data`` (the last one is ``len(data)``)."""
        self.reset()
        cuts = self.feed(data)
        n = len(memoryview(data).cast("B"))
        if self.pending:
            cuts.append(n)
        self.reset()
        return cuts

    def __repr__(self) -> str:
        return f"Chunker({self.min_size}, {self.avg_size}, {self.max_size})"
