"""Chunk compression: zstd (default), xz and gzip, recognised by their magic bytes (spec/store.md).

Stored chunks carry no marker of their own besides the compressed format's signature, so a
reader detects the algorithm from the first bytes (STORE-6).  The writers use the settings that
make our compressed bytes equal to casync's (STORE-5): zstd level 3 without content size or
checksum, by the system's libzstd as casync (pycatar._zstd, a batch of chunks per call), xz preset 6
with a CRC64 check, gzip (deflate) level 6 with a minimal header.  zstd chunks are decompressed
by the same library, a batch per call.

Every decompression is bounded by the expected size, so a hostile chunk cannot blow up memory,
and trailing bytes after the compressed stream are an error.
"""

from __future__ import annotations

from .errors import ChunkError, PycatarError, UsageError

COMPRESSION_NAMES = ("zstd", "xz", "gzip")
DEFAULT_COMPRESSION = "zstd"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"

#: casync's zstd level (STORE-5)
ZSTD_LEVEL = 3
#: the library that compresses zstd chunks: the system's, which casync uses too
LIBZSTD_NAME = "libzstd.so.1"

#: the largest decompressed chunk accepted (CHUNK-2's hard limit)
DECOMPRESSED_LIMIT = 128 * 1024 * 1024

def parse_compression(name: str) -> str:
    """The compression named by a ``--compression=`` value (``default`` means zstd)."""
    if name == "default":
        return DEFAULT_COMPRESSION
    if name in COMPRESSION_NAMES:
        return name
    raise UsageError(f"Failed to parse --compression= parameter: {name}")


def detect(data) -> str | None:
    """The compression of ``data`` by its signature, or None if there is none (STORE-6)."""
    head = bytes(data[:6])
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def _libzstd():
    """pycatar._zstd with the system's libzstd loaded (PycatarError saying what to install)."""
    from . import _zstd

    try:
        _zstd.load(LIBZSTD_NAME)
    except OSError as e:
        raise PycatarError(f"zstd compression needs libzstd (Debian: apt-get install libzstd1): {e}") from None
    return _zstd


def stored_limit(size: int) -> int:
    """The most bytes a stored chunk of ``size`` bytes can take, compressed by any of our codecs
    (worst cases: zstd and gzip store incompressible data with under 1 % overhead, xz a little
    more) or not: what a reader needs to read of a chunk file."""
    return min(DECOMPRESSED_LIMIT, size + size // 64 + 4096)


def compress_many(datas: list, kind: str = DEFAULT_COMPRESSION) -> list[bytes]:
    """Compress each chunk of ``datas`` (bytes-like objects).  zstd: the whole batch in one call to
    the system's libzstd, the GIL released once; xz and gzip: a call each, which releases the GIL
    inside the codec.  Safe to call from many threads."""
    if kind == "zstd":
        return _libzstd().compress_many(datas, ZSTD_LEVEL)
    if kind == "xz":
        import lzma  # start-up: xz and gzip are rare (1.5-2 ms of python3 -X importtime for both)

        return [lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6) for d in datas]
    if kind == "gzip":
        import zlib

        out = []
        for d in datas:
            o = zlib.compressobj(6, zlib.DEFLATED, 16 + 15, 8, zlib.Z_DEFAULT_STRATEGY)
            out.append(o.compress(d) + o.flush())
        return out
    raise UsageError(f"unknown compression: {kind}")


def compress(data, kind: str = DEFAULT_COMPRESSION) -> bytes:
    """Compress one chunk (see :func:`compress_many`)."""
    return compress_many([data], kind)[0]


def decompress(data, expected_size: int | None = None, *, what: str = "chunk") -> bytes:
    """Decompress a stored chunk, detecting the algorithm (STORE-6).

    With ``expected_size`` the output must have exactly that size; without, it is bounded by
    :data:`DECOMPRESSED_LIMIT`.  Raises :class:`ChunkError` (mentioning ``what``) when the data
    is not a single well-formed compressed stream."""
    out = decompress_many([data], [expected_size], [what])[0]
    if isinstance(out, ChunkError):
        raise out
    return out


def decompress_many(datas: list, sizes: list, whats: list) -> list:
    """:func:`decompress` of each of ``datas`` (with its expected size, or None, and what to call it
    in an error): for each the bytes, or the :class:`ChunkError` that :func:`decompress` raises.
    zstd: the whole batch in one call to libzstd, the GIL released once."""
    out: list = [None] * len(datas)
    zstd = []
    for i, (data, size, what) in enumerate(zip(datas, sizes, whats)):
        kind = detect(data)
        if kind is None:
            out[i] = ChunkError(f"{what}: unknown compression (bad magic)")
        elif kind == "zstd":
            zstd.append(i)
        else:
            try:
                out[i] = _checked(_decompress_other(kind, data, DECOMPRESSED_LIMIT if size is None else size),
                                  size, what)
            except ChunkError as e:
                out[i] = e
            except Exception as e:  # lzma.LZMAError, zlib.error, ValueError
                out[i] = ChunkError(f"{what}: corrupt {kind} data ({e})")
    if zstd:
        got = _libzstd().decompress_many([datas[i] for i in zstd], [sizes[i] for i in zstd], DECOMPRESSED_LIMIT)
        for i, r in zip(zstd, got):
            what, size = whats[i], sizes[i]
            if type(r) is not tuple:
                out[i] = _checked(r, size, what)
                continue
            why, detail, n = r
            if why == "size" and n < size:
                out[i] = ChunkError(f"{what}: decompressed to {n} bytes, expected {size}")
            elif why in ("size", "exceeds"):
                out[i] = ChunkError(f"{what}: corrupt zstd data (decompressed size exceeds "
                                    f"{DECOMPRESSED_LIMIT if size is None else size})")
            elif why == "trailing":
                out[i] = ChunkError(f"{what}: corrupt zstd data (trailing data after the compressed stream)")
            else:
                out[i] = ChunkError(f"{what}: corrupt zstd data ({detail})")
    return out


def _checked(out, size: int | None, what: str):
    if size is not None and len(out) != size:
        return ChunkError(f"{what}: decompressed to {len(out)} bytes, expected {size}")
    if len(out) < 1:
        return ChunkError(f"{what}: empty chunk")
    return out


def _decompress_other(kind: str, data, limit: int) -> bytes:
    """xz or gzip: one stream of at most ``limit`` bytes, nothing after it (ValueError otherwise)."""
    mv = memoryview(data).cast("B")
    if kind == "xz":
        import lzma

        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        out = dec.decompress(mv, max_length=limit + 1)
        if not dec.eof and len(out) <= limit:
            out += dec.decompress(b"", max_length=limit + 1 - len(out))
        if len(out) > limit:
            raise ValueError(f"decompressed size exceeds {limit}")
        if not dec.eof:
            raise ValueError("truncated compressed stream")
        if dec.unused_data:
            raise ValueError("trailing data after the compressed stream")
        return out
    import zlib

    dec = zlib.decompressobj(16 + 15)
    out = dec.decompress(mv, limit + 1)
    if len(out) > limit:
        raise ValueError(f"decompressed size exceeds {limit}")
    if not dec.eof:
        raise ValueError("truncated compressed stream")
    if dec.unused_data or dec.unconsumed_tail:
        raise ValueError("trailing data after the compressed stream")
    return out
