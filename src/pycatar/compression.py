"""Chunk compression: zstd (default), xz and gzip, recognised by their magic bytes (spec/store.md).

Stored chunks carry no marker of their own besides the compressed format's signature, so a
reader detects the algorithm from the first bytes (STORE-6).  The writers use the settings that
make our compressed bytes equal to casync's (STORE-5): zstd level 3 without content size or
checksum, xz preset 6 with a CRC64 check, gzip (deflate) level 6 with a minimal header.

Every decompression is bounded by the expected size, so a hostile chunk cannot blow up memory,
and trailing bytes after the compressed stream are an error.
"""

from __future__ import annotations

import lzma
import threading
import zlib

from .errors import ChunkError, UsageError

COMPRESSION_NAMES = ("zstd", "xz", "gzip")
DEFAULT_COMPRESSION = "zstd"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"

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


def _zstd_compressor():
    c = getattr(_local, "zc", None)
    if c is None:
        import zstandard

        c = _local.zc = zstandard.ZstdCompressor(level=3, write_content_size=False, write_checksum=False)
    return c


def _zstd_decompressor():
    d = getattr(_local, "zd", None)
    if d is None:
        import zstandard

        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def compressor(kind: str = DEFAULT_COMPRESSION):
    """A function compressing one chunk with ``kind``, for the calling thread (it holds the thread's
    zstd context: use it in the thread that asked for it).  Releases the GIL inside the codecs."""
    if kind == "zstd":
        zc = _zstd_compressor()

        def zstd(data) -> bytes:
            o = zc.compressobj()
            return o.compress(data) + o.flush()

        return zstd
    if kind == "xz":
        return lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)
    if kind == "gzip":
        def gzip(data) -> bytes:
            o = zlib.compressobj(6, zlib.DEFLATED, 16 + 15, 8, zlib.Z_DEFAULT_STRATEGY)
            return o.compress(data) + o.flush()

        return gzip
    raise UsageError(f"unknown compression: {kind}")


def compress(data, kind: str = DEFAULT_COMPRESSION) -> bytes:
    """Compress one chunk.  Releases the GIL inside the codecs; safe to call from many threads."""
    return compressor(kind)(data)


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
