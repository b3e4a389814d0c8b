"""Chunk compression: zstd (default), xz and gzip, recognised by their magic bytes (spec/store.md).

Stored chunks carry no marker of their own besides the compressed format's signature, so a
reader detects the algorithm from the first bytes (STORE-6).  The writers use the settings that
make our compressed bytes equal to casync's (STORE-5): zstd level 3 without content size or
checksum, by the system's libzstd as casync (pycatar._zstd, a batch of chunks per call), xz preset 6
with a CRC64 check, gzip (deflate) level 6 with a minimal header.  Decompression of zstd is
python-zstandard's.

Every decompression is bounded by the expected size, so a hostile chunk cannot blow up memory,
and trailing bytes after the compressed stream are an error.
"""

from __future__ import annotations

import lzma
import threading
import zlib

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

_local = threading.local()


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


def _zstd_decompressor():
    d = getattr(_local, "zd", None)
    if d is None:
        import zstandard

        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def _libzstd():
    """pycatar._zstd with the system's libzstd loaded (PycatarError saying what to install)."""
    from . import _zstd

    try:
        _zstd.load(LIBZSTD_NAME)
    except OSError as e:
        raise PycatarError(f"zstd compression needs libzstd (Debian: apt-get install libzstd1): {e}") from None
    return _zstd


def compress_many(datas: list, kind: str = DEFAULT_COMPRESSION) -> list[bytes]:
    """Compress each chunk of ``datas`` (bytes-like objects).  zstd: the whole batch in one call to
    the system's libzstd, the GIL released once; xz and gzip: a call each, which releases the GIL
    inside the codec.  Safe to call from many threads."""
    if kind == "zstd":
        return _libzstd().compress_many(datas, ZSTD_LEVEL)
    if kind == "xz":
        return [lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6) for d in datas]
    if kind == "gzip":
        out = []
        for d in datas:
            o = zlib.compressobj(6, zlib.DEFLATED, 16 + 15, 8, zlib.Z_DEFAULT_STRATEGY)
            out.append(o.compress(d) + o.flush())
        return out
    raise UsageError(f"unknown compression: {kind}")


def compress(data, kind: str = DEFAULT_COMPRESSION) -> bytes:
    """Compress one chunk (see :func:`compress_many`)."""
    return compress_many([data], kind)[0]


def _zstd_frame_size(data: memoryview) -> int:
    """Compressed size of the zstd frame at the start of ``data`` (header, blocks, checksum)."""
    n = len(data)
    if n < 6:
        raise ValueError("truncated zstd frame header")
    fhd = data[4]
    fcs_flag = fhd >> 6
    single_segment = (fhd >> 5) & 1
    if fhd & 0x08:
        raise ValueError("reserved bit set in zstd frame header")
    has_checksum = (fhd >> 2) & 1
    dict_id_size = (0, 1, 2, 4)[fhd & 3]
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    pos = 5 + (0 if single_segment else 1) + dict_id_size + fcs_size
    while True:
        if pos + 3 > n:
            raise ValueError("truncated zstd block header")
        bh = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        pos += 3
        last = bh & 1
        btype = (bh >> 1) & 3
        bsize = bh >> 3
        if btype == 3:
            raise ValueError("reserved zstd block type")
        pos += 1 if btype == 1 else bsize
        if pos > n:
            raise ValueError("truncated zstd block")
        if last:
            break
    if has_checksum:
        pos += 4
        if pos > n:
            raise ValueError("truncated zstd checksum")
    return pos


def decompress(data, expected_size: int | None = None, *, what: str = "chunk") -> bytes:
    """Decompress a stored chunk, detecting the algorithm (STORE-6).

    With ``expected_size`` the output must have exactly that size; without, it is bounded by
    :data:`DECOMPRESSED_LIMIT`.  Raises :class:`ChunkError` (mentioning ``what``) when the data
    is not a single well-formed compressed stream."""
    mv = memoryview(data).cast("B")
    kind = detect(mv)
    if kind is None:
        raise ChunkError(f"{what}: unknown compression (bad magic)")
    limit = DECOMPRESSED_LIMIT if expected_size is None else expected_size
    try:
        if kind == "zstd":
            if _zstd_frame_size(mv) != len(mv):
                raise ValueError("trailing data after the compressed stream")
            import zstandard

            fcs = zstandard.frame_content_size(mv)
            if fcs >= 0 and fcs > limit:
                raise ValueError(f"decompressed size {fcs} exceeds {limit}")
            out = _zstd_decompressor().decompress(mv, max_output_size=max(limit, 1))
        elif kind == "xz":
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
        else:
            dec = zlib.decompressobj(16 + 15)
            out = dec.decompress(mv, limit + 1)
            if len(out) > limit:
                raise ValueError(f"decompressed size exceeds {limit}")
            if not dec.eof:
                raise ValueError("truncated compressed stream")
            if dec.unused_data or dec.unconsumed_tail:
                raise ValueError("trailing data after the compressed stream")
    except ChunkError:
        raise
    except Exception as e:  # zstandard.ZstdError, lzma.LZMAError, zlib.error, ValueError
        raise ChunkError(f"{what}: corrupt {kind} data ({e})") from None
    if expected_size is not None and len(out) != expected_size:
        raise ChunkError(f"{what}: decompressed to {len(out)} bytes, expected {expected_size}")
    if len(out) < 1:
        raise ChunkError(f"{what}: empty chunk")
    return out
