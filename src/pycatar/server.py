"""An HTTP(S) server for a chunk store and a directory of index files (``pycatar serve``).

The URL layout is a local store's at the root (spec/store.md, SERVE-1): ``/<xxxx>/<id>.cacnk`` is
the compressed chunk file as stored, so ``--store=http://HOST:PORT/`` works for any client,
casync's http helper included.  Every other path names a file in the index directory.  Nothing
outside the two directories is reachable: a path is taken as the client sent it (never decoded),
each component must be a plain safe name, and the file it names must resolve, symlinks followed,
to a regular file inside its directory (chunk files must not be symlinks at all, STORE-7).

The store may also be an object store (``s3+http(s)://…``, SERVE-4): a chunk is then read from it
(a thread of the server's pool per request) and sent as stored; a PUT writes it there.

With ``writable`` a PUT installs a chunk (its body decompressed and its digest checked against the
name first) or an index (parsed and checked first), atomically; a refused upload leaves nothing.

:func:`make_app` builds the aiohttp application (wrap it with middleware to inject delays or
failures in a test); :func:`start` runs it inside an event loop, :func:`run` until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fcntl
import logging
import math
import mmap
import os
import re
import signal
import ssl
import stat as st
import struct
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from . import compression as _compression
from . import digest as _digest
from .errors import ChunkError, FormatError, PycatarError, StoreUnavailable, UsageError
from ._fileio import send_files
from .fileio import AtomicFile
from .store import CHUNK_SUFFIX, ChunkStore, LocalStore, chunk_relpath, parse_chunk_id

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8740
#: the largest chunk body a PUT may send: a 128 MiB chunk that did not compress, plus the
#: compressed format's overhead (zstd, xz and gzip all stay well below 1 MiB over the input)
MAX_CHUNK_BODY = _compression.DECOMPRESSED_LIMIT + (1 << 20)
#: the largest index a PUT may send (about 6 million chunks)
MAX_INDEX_BODY = 256 << 20
#: chunk uploads under way at once (PUTs beyond this wait before their body is read); their bodies
#: go to temporary files, not memory
MAX_CHUNK_PUTS = 8
#: uploaded chunks checked at once: each holds its chunk decompressed (up to DECOMPRESSED_LIMIT)
#: while it is hashed, so this bounds the memory uploads take
MAX_CHUNK_CHECKS = 2
#: seconds an upload's body may go without a byte before it is refused (408) and its connection
#: closed: a client that stops sending does not hold one of the MAX_CHUNK_PUTS places for ever; also
#: how long an answer waits for a client that stops reading before its connection is closed
BODY_STALL = 30.0
INDEX_SUFFIXES = (".caibx", ".caidx")
#: SERVE-5: the path of batched chunk reads (below the store URL: ``/.chunks/<id><id>...``), the
#: answer's first bytes, and the most chunks one request may ask for
BATCH_PATH = "/.chunks/"
BATCH_MAGIC = b"CACHUNKS"
BATCH_ABSENT = (1 << 64) - 1
MAX_BATCH_IDS = 64
_BATCH_IDS = re.compile(r"(?:[0-9a-f]{64}){0,%d}\Z" % MAX_BATCH_IDS)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,~-]{0,254}\Z")
_HEX4 = re.compile(r"[0-9a-f]{4}\Z")
_CHUNK_NAME = re.compile(r"([0-9a-f]{64})" + re.escape(CHUNK_SUFFIX) + r"\Z")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_READ_METHODS = ("GET", "HEAD")


@dataclass
class _Config:
    store: ChunkStore   #: a LocalStore, or a remote store (an object store) read through its interface
    index_dir: str | None
    index_real: str | None
    writable: bool
    max_chunk_body: int
    max_index_body: int
    body_stall: float = BODY_STALL
    chunk_puts: asyncio.Semaphore | None = None
    chunk_checks: threading.BoundedSemaphore = dataclasses.field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_CHUNK_CHECKS))


_CONFIG = web.AppKey("pycatar_config", _Config)


# --------------------------------------------------------------------------- paths


def _components(raw_path: str) -> list[str] | None:
    """The components of a request path as sent (query dropped), or None unless every one is a
    safe name: no ``..`` or hidden files, no percent-escapes (so no encoded slashes), no empty
    components."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    m = _ABSOLUTE_FORM.match(path)
    if m:  # "GET http://host/path" (RFC 9112, 3.2.2)
        path = path[m.end():]
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    if not all(_SAFE_NAME.match(p) for p in parts):
        return None
    return parts


def _chunk_name(parts: list[str]) -> bytes | None:
    """The id of the chunk ``parts`` name (``xxxx/<id>.cacnk``, xxxx the id's first 4 digits)."""
    if len(parts) != 2 or not _HEX4.match(parts[0]):
        return None
    m = _CHUNK_NAME.match(parts[1])
    if m is None or m.group(1)[:4] != parts[0]:
        return None
    return parse_chunk_id(m.group(1))


def _inside(real: str, top_real: str) -> bool:
    return real.startswith(top_real.rstrip("/") + "/")


def _open_chunk(cfg: _Config, chunk_id: bytes) -> tuple[int, os.stat_result] | None:
    """An open descriptor and the status of the chunk's file if it is a regular file (not a symlink,
    STORE-7) in a subdirectory of the store that is not a symlink either (so inside the store), else
    None.  Each of the two is opened below the one before without following a symlink, so that no
    swap of either for a symlink can lead outside the store between a check and the open.  The
    caller closes the descriptor."""
    rel = chunk_relpath(chunk_id, CHUNK_SUFFIX)
    sub, _, name = rel.partition("/")
    try:
        top = os.open(cfg.store.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            d = os.open(sub, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
        finally:
            os.close(top)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d)
        finally:
            os.close(d)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if st.S_ISREG(info.st_mode):
            return fd, info
    except OSError:
        pass
    os.close(fd)
    return None


def _open_regular_file(path: str, top_real: str) -> int | None:
    """A descriptor open on ``path`` if it is a regular file inside ``top_real`` (symlinks followed),
    else None.  What is checked is the file opened (its path as the kernel has it), not the path
    before the open.  The caller closes the descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if _inside(os.readlink(f"/proc/self/fd/{fd}"), top_real) and st.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


class _PreparedFileResponse(web.FileResponse):
    """A FileResponse prepared (sent) by the handler itself: the server's own call of prepare()
    afterwards changes nothing (FileResponse would look at the file again)."""

    async def prepare(self, request):
        if self.prepared:
            return None
        return await super().prepare(request)


async def _send_open_file(request: web.Request, fd: int, headers: dict | None = None) -> web.StreamResponse:
    """The file open at ``fd`` as FileResponse sends it (ranges, conditional requests), read through
    the descriptor's own entry in /proc (the very file opened, whatever its path has become since):
    sent before the caller closes ``fd``."""
    resp = _PreparedFileResponse(f"/proc/self/fd/{fd}", headers=headers)
    await resp.prepare(request)
    return resp


# --------------------------------------------------------------------------- handlers


def _error(status: int, text: str, **kw) -> web.Response:
    return web.Response(status=status, text=text + "\n", **kw)


def _method_not_allowed(method: str, writable: bool) -> web.Response:
    allow = ["GET", "HEAD"] + (["PUT"] if writable else [])
    return _error(405, f"method {method} not allowed", headers={"Allow": ", ".join(allow)})


async def _handle(request: web.Request) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    method = request.method
    if method not in _READ_METHODS and method != "PUT":
        return _method_not_allowed(method, cfg.writable)
    if method == "PUT" and not cfg.writable:
        return _method_not_allowed(method, False)
    if request.raw_path.startswith(BATCH_PATH):
        return await _batch(request, cfg, request.raw_path[len(BATCH_PATH):])
    parts = _components(request.raw_path)
    if parts is None:
        return _error(404, "no such file") if method in _READ_METHODS else _error(400, "not a plain path")
    chunk_id = _chunk_name(parts)
    if method == "PUT":
        if chunk_id is not None:
            return await _put_chunk(request, cfg, chunk_id)
        return await _put_index(request, cfg, parts)
    if chunk_id is not None and not isinstance(cfg.store, LocalStore):
        return await _remote_chunk(request, cfg, chunk_id)
    if chunk_id is not None:
        opened = _open_chunk(cfg, chunk_id)
        if opened is None:
            return _error(404, "no such file")
        fd, info = opened
        try:
            if info.st_size <= SMALL_FILE and not _CONDITIONAL.intersection(request.headers):
                return _whole_file(fd, info)
            return await _send_open_file(request, fd, _IMMUTABLE)
        except OSError as e:
            return _error(500, f"cannot read the chunk file: {e.strerror}")
        finally:
            os.close(fd)
    if cfg.index_dir is None:
        return _error(404, "no such file")
    fd = _open_regular_file(os.path.join(cfg.index_dir, *parts), cfg.index_real)
    if fd is None:
        return _error(404, "no such file")
    try:
        return await _send_open_file(request, fd)
    finally:
        os.close(fd)


#: request headers that need FileResponse's handling (ranges, conditional requests)
_CONDITIONAL = frozenset(("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since",
                          "If-Unmodified-Since"))
#: chunk files never change (their name is their content's digest)
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
#: chunk files up to this size are read and sent in the handler: no hand-off to a thread
SMALL_FILE = 4 << 20


def _whole_file(fd: int, info: os.stat_result) -> web.Response:
    """The whole file open at ``fd`` (``info`` its status) as a response, with FileResponse's ETag
    and Last-Modified, read in the event loop: a chunk file is small and, when it is served often,
    in the page cache."""
    data = os.read(fd, info.st_size)
    while len(data) < info.st_size:
        more = os.read(fd, info.st_size - len(data))
        if not more:
            break
        data += more
    # the headers FileResponse would send, given at once (its etag and last_modified setters
    # validate and format anew for every response: a tenth of the server's time per chunk)
    return web.Response(body=data, headers={
        **_IMMUTABLE, "Content-Type": "application/octet-stream",
        "ETag": f'"{info.st_mtime_ns:x}-{info.st_size:x}"', "Last-Modified": _http_date(info.st_mtime)})


_HTTP_DATES: dict[int, str] = {}


def _http_date(mtime: float) -> str:
    """``mtime`` as an HTTP date, rounded up to the second as aiohttp's FileResponse does (the chunks
    of one store were mostly written within a few seconds: their dates are formatted once)."""
    second = math.ceil(mtime)
    text = _HTTP_DATES.get(second)
    if text is None:
        if len(_HTTP_DATES) >= 4096:
            _HTTP_DATES.clear()
        text = _HTTP_DATES[second] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))
    return text


async def _batch(request: web.Request, cfg: _Config, ids: str) -> web.StreamResponse:
    """SERVE-5: the chunk files named by ``ids`` (concatenated hex ids) in one answer: the magic,
    then for each id its file's size (8 bytes, little-endian; all ones when absent) and its bytes.
    Each file is opened as a single GET opens it (SERVE-2); its size is fixed when the answer starts,
    so a file that changes meanwhile ends the connection rather than the framing."""
    if request.method not in _READ_METHODS:
        return _method_not_allowed(request.method, cfg.writable)
    if not isinstance(cfg.store, LocalStore):
        return _error(404, "no batched reads from this store")
    if not _BATCH_IDS.match(ids):
        return _error(400, f"not a list of at most {MAX_BATCH_IDS} chunk ids")
    opened = []
    try:
        for i in range(0, len(ids), 64):
            opened.append(_open_chunk(cfg, bytes.fromhex(ids[i:i + 64])))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
        resp.content_length = len(BATCH_MAGIC) + sum(8 + (o[1].st_size if o else 0) for o in opened)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        await resp.write(BATCH_MAGIC)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            await _send_files(transport, sock.fileno(), [(o[0], o[1].st_size) if o else (-1, 0) for o in opened],
                              cfg.body_stall)
            await resp.write_eof()
            return resp
        for o in opened:  # through TLS: the bytes pass through the transport, read in pieces
            if o is None:
                await resp.write(struct.pack("<Q", BATCH_ABSENT))
                continue
            size = o[1].st_size
            sent = 0
            while True:  # pieces of at most SMALL_FILE bytes, the first one after the size
                n = min(size - sent, SMALL_FILE)
                head = 8 if sent == 0 else 0
                buf = bytearray(head + n)
                if head:
                    struct.pack_into("<Q", buf, 0, size)
                try:
                    got = os.readv(o[0], [memoryview(buf)[head:]]) if n else 0
                except OSError:
                    got = -1
                if got != n:  # shrunk since it was opened: the framing cannot be kept
                    raise ConnectionResetError("a chunk file changed while it was sent")
                await resp.write(buf)
                sent += n
                if sent == size:
                    break
        await resp.write_eof()
        return resp
    finally:
        for o in opened:
            if o is not None:
                os.close(o[0])


def _unsent(sock_fd: int) -> int:
    """Bytes the kernel still holds for the peer of a TCP socket (sent but not acknowledged, or not
    sent): when it goes down the client is reading, however rarely the socket is reported writable
    (the kernel waits until a good part of a send buffer of up to some MiB is free)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock_fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return -1


async def _send_files(transport: asyncio.Transport, fd: int, files: list[tuple[int, int]], stall: float) -> None:
    """Send SERVE-5's frames of ``files`` ((fd, size); fd -1 for an absent chunk) on the socket ``fd``
    of a plain-TCP ``transport`` with sendfile (no copy through Python), once what the transport holds
    is out, waiting for the socket to drain between calls.  A client that reads nothing for ``stall``
    seconds, or a file that shrank since it was opened, ends the connection."""
    loop = asyncio.get_running_loop()
    waiter = os.dup(fd)  # a number of its own: the loop watches no fd of a transport for anyone else
    try:
        def writable() -> asyncio.Future:
            fut = loop.create_future()
            loop.add_writer(waiter, lambda: fut.done() or fut.set_result(None))
            return fut

        async def drained() -> None:
            while True:
                before = _unsent(waiter)
                try:
                    await asyncio.wait_for(writable(), stall)
                    return
                except asyncio.TimeoutError:
                    if _unsent(waiter) == before:
                        raise ConnectionResetError("the client stopped reading") from None
                finally:
                    loop.remove_writer(waiter)

        while transport.get_write_buffer_size():  # the status line, headers and magic first
            await drained()
        item = offset = 0
        while True:
            item, offset, err = send_files(waiter, files, item, offset)
            if not err:
                return
            if err != errno.EAGAIN:
                raise ConnectionResetError("a chunk file changed while it was sent" if err == errno.ENODATA
                                           else os.strerror(err))
            await drained()
    finally:
        os.close(waiter)


async def _remote_chunk(request: web.Request, cfg: _Config, chunk_id: bytes) -> web.Response:
    """SERVE-4: a chunk of an object store, as stored (the client verifies it, as from any store)."""
    loop = asyncio.get_running_loop()
    try:
        if request.method == "HEAD":
            found = await loop.run_in_executor(None, cfg.store.has, chunk_id)
            return web.Response(status=200 if found else 404, headers=_IMMUTABLE if found else None)
        raw = await loop.run_in_executor(None, cfg.store.get_raw, chunk_id, None)
    except ChunkError as e:
        return _error(503 if isinstance(e, StoreUnavailable) else 502, str(e))
    if raw is None:
        return _error(404, "no such file")
    data, compressed = raw
    if not compressed:
        return _error(404, "no such file")
    return web.Response(body=data, headers=_IMMUTABLE, content_type="application/octet-stream")


async def _read_body(request: web.Request, limit: int, sink, stall: float) -> web.Response | None:
    """Hand the request body to ``sink`` piece by piece; a 413 response when it exceeds ``limit``, a
    408 when no byte of it came for ``stall`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    n = 0
    while True:
        try:
            piece = await asyncio.wait_for(request.content.readany(), stall)
        except asyncio.TimeoutError:
            r = _error(408, f"no byte of the body for {stall:g} s")
            r.force_close()
            return r
        if not piece:
            return None
        n += len(piece)
        if n > limit:
            return _too_large(limit)
        await sink(piece)


def _too_large(limit: int) -> web.Response:
    r = _error(413, f"body larger than {limit} bytes")
    r.force_close()  # the rest of the body is not read: the connection cannot be reused
    return r


class _Outside(PycatarError):
    """The chunk's subdirectory leads out of the store (a symlink)."""


def _check_and_store_chunk(cfg: _Config, chunk_id: bytes, body) -> int:
    """Decompress the uploaded chunk file ``body`` (a file object, at its end), check its digest
    against ``chunk_id``, store it (runs in a thread; MAX_CHUNK_CHECKS at once).  The file is mapped,
    not read: only the decompressed chunk takes memory of its own."""
    store = cfg.store
    body.flush()
    size = os.fstat(body.fileno()).st_size
    with cfg.chunk_checks:
        # (on a failure the mapping goes with the traceback that holds views of it)
        mapped = mmap.mmap(body.fileno(), size, access=mmap.ACCESS_READ) if size else b""
        compressed = memoryview(mapped)
        data = _compression.decompress(compressed, what=f"chunk {chunk_id.hex()}")
        actual = _digest.digest(store.digest, data)
        del data
        if actual != chunk_id:
            raise ChunkError(f"chunk {chunk_id.hex()}: content does not match its id (digest {actual.hex()})")
        if isinstance(store, LocalStore):
            sub = os.path.dirname(store.chunk_path(chunk_id))  # below the store's real path
            if os.path.islink(sub):
                raise _Outside(f"{os.path.basename(sub)} is not a directory of the store")
        written = store.put(chunk_id, compressed_data=compressed)
        compressed.release()
        if size:
            mapped.close()
        return written


async def _put_chunk(request: web.Request, cfg: _Config, chunk_id: bytes) -> web.Response:
    async with cfg.chunk_puts:
        loop = asyncio.get_running_loop()
        try:  # unnamed (O_TMPFILE), in the store itself when it is a directory (not /tmp: maybe memory)
            body = tempfile.TemporaryFile(dir=cfg.store.path if isinstance(cfg.store, LocalStore) else None)
        except OSError as e:
            return _error(500, f"cannot create a temporary file: {e.strerror}")
        with body:
            async def sink(piece):
                await loop.run_in_executor(None, body.write, piece)

            refused = await _read_body(request, cfg.max_chunk_body, sink, cfg.body_stall)
            if refused is not None:
                return refused
            try:
                written = await loop.run_in_executor(None, _check_and_store_chunk, cfg, chunk_id, body)
            except ChunkError as e:
                return _error(422, str(e))
            except _Outside as e:
                return _error(403, str(e))
            except (PycatarError, OSError) as e:
                return _error(500, str(e))
    return web.Response(status=201 if written else 200)


def _check_index(path: str, name: str) -> None:
    from .index import IndexReader

    with IndexReader(path, name=name) as r:
        r.validate()


async def _put_index(request: web.Request, cfg: _Config, parts: list[str]) -> web.Response:
    if not parts[-1].endswith(INDEX_SUFFIXES):
        return _error(400, "not a chunk name (xxxx/<id>.cacnk) nor an index name (*.caibx, *.caidx)")
    if cfg.index_dir is None:
        return _error(403, "no index directory to write to")
    parent = os.path.join(cfg.index_dir, *parts[:-1])
    try:
        parent_real = os.path.realpath(parent)
        if not (parent_real == cfg.index_real or _inside(parent_real, cfg.index_real)) \
                or not os.path.isdir(parent_real):
            return _error(404, "no such directory")
    except (OSError, ValueError):
        return _error(404, "no such directory")
    final = os.path.join(parent_real, parts[-1])
    if os.path.isdir(final):
        return _error(409, "a directory has that name")
    # a hidden temporary name: never served, and renamed over the final name only when complete
    out = AtomicFile(final, fsync=False)
    loop = asyncio.get_running_loop()
    try:
        f = out.open()
    except OSError as e:
        return _error(500, f"cannot create a temporary file: {e.strerror}")
    try:
        async def sink(piece):
            await loop.run_in_executor(None, f.write, piece)

        refused = await _read_body(request, cfg.max_index_body, sink, cfg.body_stall)
        if refused is not None:
            return refused
        f.flush()
        try:
            await loop.run_in_executor(None, _check_index, out.tmp, "/".join(parts))
        except FormatError as e:
            return _error(422, str(e))
        out.commit()
    except OSError as e:
        return _error(500, f"cannot write {'/'.join(parts)}: {e.strerror}")
    finally:
        out.discard()  # nothing left to do after a commit
    return web.Response(status=201)


class _AccessLog(AbstractAccessLogger):
    """One line per request to the ``log`` callable given to :func:`make_app` (as ``logger``)."""

    def log(self, request, response, time):
        remote = request.remote or "-"
        size = response.headers.get("Content-Length", "-")
        line = (f'{remote} "{request.method} {request.raw_path} HTTP/{request.version.major}.'
                f'{request.version.minor}" {response.status} {size} {time * 1000:.1f}ms')
        self.logger(line)


# --------------------------------------------------------------------------- the application


def make_app(store_path: str | os.PathLike | ChunkStore, index_dir: str | os.PathLike | None = None, *,
             writable: bool = False, digest: str = "sha512-256",
             log: Callable[[str], None] | None = None, max_chunk_body: int = MAX_CHUNK_BODY,
             max_index_body: int = MAX_INDEX_BODY, body_stall: float = BODY_STALL) -> web.Application:
    """The aiohttp application serving the store at ``store_path`` (a directory, or a remote
    :class:`ChunkStore` such as an object store) and the files of ``index_dir``.

    ``writable`` accepts PUT of chunks (checked with ``digest``) and of indexes; ``log`` receives one
    access-log line per request; an upload's body that stops for ``body_stall`` seconds is refused, a client that reads nothing of an answer for as long is cut off.  Both directories must exist (:class:`PycatarError` otherwise)."""
    if digest not in _digest.DIGEST_NAMES:
        raise UsageError(f"Failed to parse --digest= parameter: {digest}")
    if isinstance(store_path, ChunkStore) and not isinstance(store_path, LocalStore):
        store = store_path.with_digest(digest)
    else:
        store_path = os.fspath(store_path.location if isinstance(store_path, LocalStore) else store_path)
        if not os.path.isdir(store_path):
            raise PycatarError(f"store {store_path} is not a directory")
        store = LocalStore(os.path.realpath(store_path), digest=digest)
    index_real = None
    if index_dir is not None:
        index_dir = os.fspath(index_dir)
        if not os.path.isdir(index_dir):
            raise PycatarError(f"index directory {index_dir} is not a directory")
        index_real = os.path.realpath(index_dir)
    cfg = _Config(store=store,
                  index_dir=index_dir, index_real=index_real, writable=writable,
                  max_chunk_body=max_chunk_body, max_index_body=max_index_body, body_stall=body_stall)
    handler_args = {"access_log_class": _AccessLog, "access_log": log} if log else {"access_log": None}
    app = web.Application(handler_args=handler_args)
    app[_CONFIG] = cfg

    async def on_startup(app):
        cfg.chunk_puts = asyncio.Semaphore(MAX_CHUNK_PUTS)  # bound to the serving loop
        if not isinstance(cfg.store, LocalStore):  # requests to the object store wait in threads
            from concurrent.futures import ThreadPoolExecutor

            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max(cfg.store.concurrency, 8), thread_name_prefix="pycatar-serve"))

    app.on_startup.append(on_startup)
    app.router.add_route("*", "/{path:.*}", _handle)
    return app


# --------------------------------------------------------------------------- listening


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` (port 0: any free port) as (host, port)."""
    m = re.match(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})\Z", text) or re.match(r"([^:\[\]\s]+):([0-9]{1,5})\Z", text)
    if m is None or int(m.group(2)) > 65535:
        raise UsageError(f"Failed to parse --listen= parameter: {text} (HOST:PORT or [IPV6]:PORT expected)")
    return m.group(1), int(m.group(2))


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context with the certificate chain ``cert`` and private key ``key``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise PycatarError(f"cannot read TLS certificate or key {e.filename or cert}: {e.strerror}") from None
    except (OSError, ssl.SSLError) as e:
        raise PycatarError(f"cannot load TLS certificate {cert} with key {key}: {e}") from None
    return ctx


def _url(host: str, port: int, tls: bool) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{h}:{port}/"


class Running:
    """A started server: its ``url`` (the real port when 0 was asked) and :meth:`stop`."""

    def __init__(self, runner: web.AppRunner, url: str, port: int, watchdog: asyncio.Task | None = None):
        self.runner, self.url, self.port = runner, url, port
        self._watchdog = watchdog

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.runner.cleanup()


async def _cut_stalled_readers(server, stall: float) -> None:
    """Abort every connection whose unsent answer has not moved for ``stall`` seconds: a client that
    stops reading would otherwise keep what the server has not sent yet (up to a whole chunk file)
    in memory for as long as it keeps the connection open.  Looks every quarter of ``stall``."""
    loop = asyncio.get_running_loop()
    waiting: dict = {}  # connection -> ((bytes held by the transport, by the kernel), since when)
    while True:
        await asyncio.sleep(max(stall / 4, 0.05))
        now = loop.time()
        still = {}
        for conn in server.connections:
            transport = conn.transport
            held = transport.get_write_buffer_size() if transport is not None else 0
            if not held:
                continue
            sock = transport.get_extra_info("socket")
            held = (held, _unsent(sock.fileno()) if sock is not None else -1)
            last = waiting.get(conn)
            if last is None or last[0] != held:  # new, or the client took some (and more was queued)
                still[conn] = (held, now)
            elif now - last[1] >= stall:
                transport.abort()
            else:
                still[conn] = last
        waiting = still


async def start(app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                ssl_context: ssl.SSLContext | None = None, shutdown_timeout: float = 2.0) -> Running:
    """Start serving ``app`` on ``host:port`` in the running event loop."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise PycatarError(f"cannot listen on {_url(host, port, False)[7:-1]}: {e.strerror or e}") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    cfg = app.get(_CONFIG)
    watchdog = asyncio.create_task(_cut_stalled_readers(runner.server, cfg.body_stall)) if cfg else None
    return Running(runner, _url(host, bound, ssl_context is not None), bound, watchdog)


def run(app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
        ssl_context: ssl.SSLContext | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (handled only in the main thread), then stop cleanly.
    ``on_ready(url)`` is called once the socket listens."""

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
                signals.append(sig)
        try:
            running = await start(app, host, port, ssl_context=ssl_context)
            try:
                if on_ready is not None:
                    on_ready(running.url)
                await stop.wait()
            finally:
                await running.stop()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    asyncio.run(main())


class _OneLine(logging.Handler):
    def __init__(self, say):
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        text = " ".join(record.getMessage().split())
        if exc is not None:
            text += ": " + (" ".join(str(exc).split()) or type(exc).__name__)
        self.say(text)


def _one_line_logging(say: Callable[[str], None] | None) -> None:
    """aiohttp's own messages (a malformed request, a failing handler) as one line each through
    ``say`` (never a traceback), or not at all without ``say``."""
    logger = logging.getLogger("aiohttp")
    for h in list(logger.handlers):
        if isinstance(h, _OneLine):
            logger.removeHandler(h)
    logger.propagate = False
    logger.setLevel(logging.INFO if say else logging.CRITICAL + 1)
    if say:
        logger.addHandler(_OneLine(say))


def serve(store_path: str | ChunkStore, index_dir: str | None = None, *, listen: str | None = None,
          writable: bool = False, digest: str = "sha512-256", tls_cert: str | None = None,
          tls_key: str | None = None, verbose: bool = False, err=None) -> None:
    """``pycatar serve``: the store and index directory over HTTP(S) until SIGTERM/SIGINT; the URL
    and (with ``verbose``) an access-log line per request on ``err`` (stderr)."""
    err = err or sys.stderr
    host, port = parse_listen(listen) if listen else (DEFAULT_HOST, DEFAULT_PORT)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert= and --tls-key= must be given together.")
    ctx = tls_context(tls_cert, tls_key) if tls_cert else None

    def say(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    _one_line_logging(say if verbose else None)
    app = make_app(store_path, index_dir, writable=writable, digest=digest, log=say if verbose else None)
    run(app, host, port, ssl_context=ctx, on_ready=lambda url: say(f"Listening on {url}"))
