"""``pycatar serve`` (issue 12, server half): real server processes on loopback, checked with the
standard library's HTTP client, raw sockets (for paths a client would normalise) and the real casync
(its own http helper).  Oracles: the files on disk, casync, hashlib and the zstandard/lzma/gzip
modules — never pycatar's own store or compression code."""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import gzip
import hashlib
import http.client
import lzma
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
import zstandard

from conftest import IN_CI
from httpservers import PycatarServe as Server
from trees import make_full_tree, remove_tree

MAX_CHUNK_BODY = 128 * 1024 * 1024 + (1 << 20)  # the server's limit (spec/store.md, SERVE-3)
MAX_INDEX_BODY = 256 << 20


# --------------------------------------------------------------------------- helpers


def request(port, method, path, body=None, headers=None, context=None):
    """(status, headers, body) of one request with http.client (the path is sent as given)."""
    if context is None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    else:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def raw_request(port, head: bytes, host="127.0.0.1") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, verbatim) on a fresh socket; (status, whole reply).
    The reply ends at the end of its body (a server may keep reading what the client did not send)."""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head)
        data = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"\r\ncontent-length: *(\d+)\r\n", data[:end + 2], re.I)
                if m and len(data) >= end + 4 + int(m.group(1)):
                    break
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            data += b
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert m, data[:200]
    return int(m.group(1)), data


def raw_get(port, target: str, method="GET") -> tuple[int, bytes]:
    return raw_request(port, f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


def files_under(top) -> set[str]:
    """Every file, directory and symlink below ``top`` (hidden and temporary ones included)."""
    out = set()
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), top))
    return out


def chunk_files(store) -> dict[str, str]:
    """{"xxxx/<id>.cacnk": path} of the chunk files of a store."""
    out = {}
    for d, _, files in os.walk(store):
        for n in files:
            if n.endswith(".cacnk"):
                out[f"{os.path.basename(d)}/{n}"] = os.path.join(d, n)
    return out


def zstd_decompress(raw: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw)


def sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def pycatar(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, **kw)


@contextlib.contextmanager
def in_process(app):
    """``app`` served by pycatar.server.start in an event loop of a thread of this process, on a free
    port: yields the running server, stops it (and its thread) on the way out."""
    import asyncio
    import threading

    from pycatar import server

    loop = asyncio.new_event_loop()
    started = concurrent.futures.Future()
    stop = None

    def serve_in_thread():
        nonlocal stop
        asyncio.set_event_loop(loop)
        running = loop.run_until_complete(server.start(app, "127.0.0.1", 0))
        stop = asyncio.Event()
        started.set_result(running)
        loop.run_until_complete(stop.wait())
        loop.run_until_complete(running.stop())
        loop.close()

    t = threading.Thread(target=serve_in_thread)
    t.start()
    try:
        yield started.result(timeout=20)
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        t.join(30)
    assert not t.is_alive()


@pytest.fixture(scope="module")
def site(tmp_path_factory, casync):
    """A blob and a store made by casync, the blob's .caibx in an index directory."""
    top = tmp_path_factory.mktemp("serve")
    rnd = random.Random(12)
    part = rnd.randbytes(1 << 20)
    blob = top / "blob"
    blob.write_bytes(part + rnd.randbytes(2 << 20) + part + bytes(300_000) + rnd.randbytes(777))
    (top / "idx").mkdir()
    subprocess.run([casync, "make", f"--store={top / 'store'}", top / "idx" / "blob.caibx", blob],
                   check=True, capture_output=True)
    assert len(chunk_files(top / "store")) > 20
    return top


# --------------------------------------------------------------------------- GET and HEAD


def test_get_and_head_serve_the_files_as_stored(site, tmp_path):
    """SERVE-1: chunks at xxxx/<id>.cacnk and index files as stored, with their headers and ranges."""
    chunks = chunk_files(site / "store")
    index = (site / "idx" / "blob.caibx").read_bytes()
    with Server(tmp_path / "log", f"--store={site / 'store'}", f"--index-dir={site / 'idx'}") as srv:
        for rel, path in sorted(chunks.items())[:10]:
            want = open(path, "rb").read()
            status, headers, body = request(srv.port, "GET", "/" + rel)
            assert status == 200 and body == want
            assert int(headers["Content-Length"]) == len(want)
            # the file's mtime (rounded up to the second) as an HTTP date, and the ETag FileResponse gives
            st = os.stat(path)
            assert headers["Last-Modified"] == email.utils.formatdate(math.ceil(st.st_mtime), usegmt=True)
            assert headers["ETag"] == f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            status, hh, body = request(srv.port, "HEAD", "/" + rel)
            assert status == 200 and body == b"" and int(hh["Content-Length"]) == len(want)
            assert hh["ETag"] == headers["ETag"]
            # a conditional request for what the client has: 304, no body
            status, _, body = request(srv.port, "GET", "/" + rel, headers={"If-None-Match": headers["ETag"]})
            assert status == 304 and body == b""
            status, _, body = request(srv.port, "GET", "/" + rel, headers={"Range": "bytes=2-9"})
            assert status == 206 and body == want[2:10]
        status, headers, body = request(srv.port, "GET", "/blob.caibx")
        assert status == 200 and body == index and int(headers["Content-Length"]) == len(index)
        assert headers["ETag"] and headers["Last-Modified"]
        status, headers, body = request(srv.port, "GET", "/blob.caibx", headers={"Range": "bytes=100-299"})
        assert status == 206 and body == index[100:300]
        assert headers["Content-Range"] == f"bytes 100-299/{len(index)}"
        status, headers, body = request(srv.port, "GET", "/blob.caibx", headers={"Range": "bytes=-40"})
        assert status == 206 and body == index[-40:]
        missing = "ab" * 32
        assert request(srv.port, "GET", f"/abab/{missing}.cacnk")[0] == 404
        assert request(srv.port, "HEAD", f"/abab/{missing}.cacnk")[0] == 404
        assert request(srv.port, "GET", "/nothere.caibx")[0] == 404
        assert request(srv.port, "GET", "/")[0] == 404


def test_without_index_dir_only_chunks_are_served(site, tmp_path):
    rel = sorted(chunk_files(site / "store"))[0]
    with Server(tmp_path / "log", f"--store={site / 'store'}") as srv:
        assert request(srv.port, "GET", "/" + rel)[0] == 200
        assert request(srv.port, "GET", "/blob.caibx")[0] == 404


def test_nothing_outside_the_two_directories_is_reachable(site, tmp_path):
    """SERVE-2 (and STORE-7 for chunk symlinks): traversal, escapes, symlinks out, odd methods."""
    secret = b"SECRET-" * 100
    (tmp_path / "secret.txt").write_bytes(secret)
    store, idx, outside = tmp_path / "store", tmp_path / "idx", tmp_path / "outside"
    shutil.copytree(site / "store", store, symlinks=True)
    shutil.copytree(site / "idx", idx)
    outside.mkdir()
    (idx / "sub").mkdir()
    (idx / "sub" / "inner.caibx").write_bytes(b"inner")
    (idx / ".hidden.caibx").write_bytes(secret)
    os.symlink(tmp_path / "secret.txt", idx / "link-out.caibx")
    os.symlink("blob.caibx", idx / "link-in.caibx")  # inside the index directory: served
    os.symlink(tmp_path, idx / "up")
    # a chunk file that is a symlink (absent, as for a local store), even to a real chunk
    real_rel, real_path = sorted(chunk_files(store).items())[0]
    chunk_bytes = open(real_path, "rb").read()
    fake = "cd" * 32
    os.makedirs(store / "cdcd", exist_ok=True)
    os.symlink(tmp_path / "secret.txt", store / "cdcd" / f"{fake}.cacnk")
    fake2 = "ce" * 32
    os.makedirs(store / "cece", exist_ok=True)
    os.symlink(real_path, store / "cece" / f"{fake2}.cacnk")
    # a 4-hex directory that is a symlink out of the store, holding a chunk-named file
    fake3 = "cf" * 32
    (outside / f"{fake3}.cacnk").write_bytes(secret)
    os.symlink(outside, store / "cfcf")
    # a real chunk file in a 4-hex directory that does not match its id
    (store / "0000").mkdir()
    shutil.copy(real_path, store / "0000" / os.path.basename(real_path))
    with Server(tmp_path / "log", f"--store={store}", f"--index-dir={idx}") as srv:
        assert request(srv.port, "GET", "/" + real_rel)[2] == chunk_bytes
        assert request(srv.port, "GET", "/link-in.caibx")[2] == (idx / "blob.caibx").read_bytes()
        assert request(srv.port, "GET", "/sub/inner.caibx")[2] == b"inner"
        for target in ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt",
                       "/%2e%2e%2fsecret.txt", "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt",
                       "/sub%2f..%2f..%2fsecret.txt", "/./../secret.txt", "//secret.txt", "/.%2e/secret.txt",
                       "/..\\secret.txt", "http://x/../secret.txt", "/up/secret.txt", "/link-out.caibx",
                       "/.hidden.caibx", "/sub", "/sub/", "/up", f"/cdcd/{fake}.cacnk", f"/cece/{fake2}.cacnk",
                       f"/cfcf/{fake3}.cacnk", f"/0000/{os.path.basename(real_path)}", "/0000",
                       f"/{real_rel.upper()}", f"/{real_rel}%00", f"/{real_rel.replace('/', '%2f')}",
                       "/blob.caibx/", "/blob.caibx/.."]:
            for method in ("GET", "HEAD"):
                status, reply = raw_get(srv.port, target, method)
                assert 400 <= status < 500, (target, method, status)
                assert b"SECRET" not in reply and chunk_bytes not in reply, target
        for method in ("DELETE", "POST", "PATCH", "OPTIONS", "PROPFIND", "MKCOL"):
            status, headers, _ = request(srv.port, method, "/blob.caibx")
            assert status == 405 and "PUT" not in headers["Allow"], method
        # PUT without --writable: refused, nothing written
        before = files_under(store) | files_under(idx)
        rel = f"/cdce/{'cdce' * 16}.cacnk"
        assert request(srv.port, "PUT", rel, body=zstandard.ZstdCompressor().compress(b"x"))[0] == 405
        assert request(srv.port, "PUT", "/new.caibx", body=(idx / "blob.caibx").read_bytes())[0] == 405
        assert files_under(store) | files_under(idx) == before
    # with --writable: a chunk is not written through a subdirectory that leads out of the store
    data = b"through the symlink " * 50
    cid = sha512_256(data)
    os.symlink(outside, store / cid[:4])
    with Server(tmp_path / "log2", f"--store={store}", f"--index-dir={idx}", "--writable") as srv:
        status, _, _ = request(srv.port, "PUT", f"/{cid[:4]}/{cid}.cacnk", body=zstandard.ZstdCompressor().compress(data))
        assert status == 403
        for target in ["/up/x.caibx", "/link-out.caibx/x.caibx"]:
            assert request(srv.port, "PUT", target, body=(idx / "blob.caibx").read_bytes())[0] == 404, target
    assert os.listdir(outside) == [f"{fake3}.cacnk"]
    assert (tmp_path / "secret.txt").read_bytes() == secret
    assert sorted(os.listdir(tmp_path)) == sorted(["secret.txt", "store", "idx", "outside", "log", "log2"])
    # SERVE-5: a batched read opens each chunk as a GET does: the same ones are absent
    with Server(tmp_path / "log3", f"--store={store}", f"--index-dir={idx}") as srv:
        real_id = os.path.basename(real_path).split(".")[0]
        status, _, body = request(srv.port, "GET", f"/.chunks/{fake}{fake2}{fake3}{real_id}")
        assert status == 200 and secret[:7] not in body
        assert body == b"CACHUNKS" + b"\xff" * 24 + len(chunk_bytes).to_bytes(8, "little") + chunk_bytes
        for target in [f"/.chunks/../{real_rel}", f"/.chunks/{real_id.upper()}", f"/.chunks/{real_id[:-1]}",
                       f"/.chunks/{real_id}/", f"/.chunks/%2e%2e/{real_id}", "/.chunks/" + real_id * 65,
                       f"/.chunks/{real_id}?x=1"]:
            assert raw_get(srv.port, target)[0] == 400, target


def test_a_chunk_directory_swapped_for_a_symlink_is_never_followed(tmp_path, monkeypatch):
    """SERVE-2, STORE-7: the chunk's directory is opened without following a symlink, then the file
    below that very directory: a directory that is a symlink out of the store when the file is
    opened and a real one when it is checked (swapped in between) leads nowhere.  (Opening the path
    and then checking that its directory is no symlink served the file outside.)"""
    from pycatar import server

    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    cid = "ab" * 32
    (outside / f"{cid}.cacnk").write_bytes(b"not for you")
    os.symlink(outside, store / "abab")
    real_fstat = os.fstat

    def swap(fd):  # just after the open: the directory is a real one again
        monkeypatch.setattr(os, "fstat", real_fstat)
        os.unlink(store / "abab")
        os.mkdir(store / "abab")
        return real_fstat(fd)

    monkeypatch.setattr(os, "fstat", swap)
    cfg = server.make_app(store)[server._CONFIG]
    assert server._open_chunk(cfg, bytes.fromhex(cid)) is None
    monkeypatch.setattr(os, "fstat", real_fstat)
    if (store / "abab").is_symlink():  # (refused before any check: no swap happened)
        os.unlink(store / "abab")
        os.mkdir(store / "abab")
    (store / "abab" / f"{cid}.cacnk").write_bytes(b"in the store")  # a real one is served
    fd, info = server._open_chunk(cfg, bytes.fromhex(cid))
    try:
        assert os.read(fd, 100) == b"in the store" and info.st_size == 12
    finally:
        os.close(fd)


def batch_frames(body: bytes, n: int) -> list[bytes | None]:
    """The ``n`` chunk files of a batched answer (SERVE-5), None for an absent one; the whole body."""
    assert body[:8] == b"CACHUNKS"
    pos, got = 8, []
    for _ in range(n):
        size = int.from_bytes(body[pos:pos + 8], "little")
        pos += 8
        if size == (1 << 64) - 1:
            got.append(None)
            continue
        got.append(body[pos:pos + size])
        pos += size
    assert pos == len(body)
    return got


def test_batched_reads(site, tmp_path):
    """SERVE-5: GET /.chunks/ answers the magic alone (a client asks this once); GET /.chunks/<ids>
    the magic, then per id the chunk file's size (8 bytes, little-endian; all ones when absent) and
    its bytes as stored; HEAD the same length without a body; other methods 405."""
    chunks = sorted(chunk_files(site / "store").items())
    missing = "ab" * 32
    ids = [os.path.basename(rel).split(".")[0] for rel, _ in chunks[:5]] + [missing] + \
        [os.path.basename(rel).split(".")[0] for rel, _ in chunks[5:30]]
    with Server(tmp_path / "log", f"--store={site / 'store'}") as srv:
        status, _, body = request(srv.port, "GET", "/.chunks/")
        assert (status, body) == (200, b"CACHUNKS")
        status, headers, body = request(srv.port, "GET", "/.chunks/" + "".join(ids))
        assert status == 200 and int(headers["Content-Length"]) == len(body)
        got = batch_frames(body, len(ids))
        want = [open(p, "rb").read() for _, p in chunks[:5]] + [None] + [open(p, "rb").read() for _, p in chunks[5:30]]
        assert got == want
        status, headers, body = request(srv.port, "HEAD", "/.chunks/" + "".join(ids))
        assert status == 200 and body == b"" and int(headers["Content-Length"]) == 8 + sum(
            8 + (len(w) if w is not None else 0) for w in want)
        assert request(srv.port, "GET", "/.chunks/" + ids[0] * 64)[0] == 200  # 64 ids at most
        assert request(srv.port, "GET", "/.chunks/" + ids[0] * 65)[0] == 400
        assert request(srv.port, "PUT", "/.chunks/" + ids[0], body=b"x")[0] == 405


# --------------------------------------------------------------------------- casync through the server


def test_casync_extracts_blobs_through_serve(site, tmp_path, run_casync):
    """casync's http helper (also with the index by URL); the .caibx made by casync and by pycatar."""
    blob = site / "blob"
    store = tmp_path / "store"
    idx = tmp_path / "idx"
    shutil.copytree(site / "store", store)
    shutil.copytree(site / "idx", idx)
    p = pycatar("make", f"--store={store}", idx / "ours.caibx", blob)
    assert p.returncode == 0, p.stderr
    with Server(tmp_path / "log", f"--store={store}", f"--index-dir={idx}", "-v") as srv:
        for name in ("blob.caibx", "ours.caibx"):
            run_casync("extract", f"--store={srv.url}", idx / name, tmp_path / f"{name}.out")
            assert (tmp_path / f"{name}.out").read_bytes() == blob.read_bytes()
            run_casync("extract", f"--store={srv.url}", srv.url + name, tmp_path / f"{name}.url.out")
            assert (tmp_path / f"{name}.url.out").read_bytes() == blob.read_bytes()
    log = srv.stderr()
    assert re.search(r'"GET /blob\.caibx HTTP/1\.1" 200 \d+ ', log), log
    fetched = set(re.findall(r'"GET /([0-9a-f]{4}/[0-9a-f]{64}\.cacnk) HTTP/1\.1" 200 ', log))
    assert fetched == set(chunk_files(store))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("serve-tree") / "tree")
    make_full_tree(root, large_size=1 << 20, seed=12)
    yield root
    remove_tree(root)


def test_casync_extracts_a_tree_through_serve(tree, tmp_path, run_casync):
    store, idx = tmp_path / "store", tmp_path / "idx"
    idx.mkdir()
    run_casync("make", f"--store={store}", idx / "tree.caidx", tree)
    with Server(tmp_path / "log", f"--store={store}", f"--index-dir={idx}") as srv:
        run_casync("extract", f"--store={srv.url}", idx / "tree.caidx", tmp_path / "out")
        run_casync("extract", f"--store={srv.url}", srv.url + "tree.caidx", tmp_path / "out-url")
    want = run_casync("mtree", tree).stdout
    assert want.count(b"\n") > 10
    assert run_casync("mtree", tmp_path / "out").stdout == want
    assert run_casync("mtree", tmp_path / "out-url").stdout == want


# --------------------------------------------------------------------------- PUT


def test_put_chunks_verified_then_stored(site, tmp_path, run_casync):
    """SERVE-3: chunks recompressed and named by an independent oracle (zstandard, lzma, gzip, hashlib) are
    stored; casync extracts from the store on disk.  Bad uploads are refused and leave nothing."""
    store = tmp_path / "store"
    store.mkdir()
    bodies = {}
    for n, (rel, path) in enumerate(sorted(chunk_files(site / "store").items())):
        data = zstd_decompress(open(path, "rb").read())
        assert rel == f"{sha512_256(data)[:4]}/{sha512_256(data)}.cacnk"
        if n % 5 == 1:
            body = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
        elif n % 5 == 2:
            body = gzip.compress(data)
        else:
            body = zstandard.ZstdCompressor(level=1).compress(data)
        bodies[rel] = (data, body)
    with Server(tmp_path / "log", f"--store={store}", "--writable", "-v") as srv:
        for rel, (_, body) in bodies.items():
            status, _, reply = request(srv.port, "PUT", "/" + rel, body=body)
            assert status == 201, reply
        assert set(chunk_files(store)) == set(bodies)
        for rel, (_, body) in bodies.items():
            assert (store / rel).read_bytes() == body
        # again: already there, not rewritten
        rel0, (data0, body0) = next(iter(bodies.items()))
        ino = os.stat(store / rel0).st_ino
        status, _, _ = request(srv.port, "PUT", "/" + rel0, body=zstandard.ZstdCompressor(level=19).compress(data0))
        assert status == 200 and os.stat(store / rel0).st_ino == ino and (store / rel0).read_bytes() == body0
        before = files_under(store)

        data = random.Random(5).randbytes(200_000)
        good = zstandard.ZstdCompressor().compress(data)
        cid = sha512_256(data)
        other = sha512_256(data + b"!")
        corrupt = bytearray(good)
        corrupt[len(corrupt) // 2] ^= 0x55
        flipped_data = bytearray(data)
        flipped_data[1000] ^= 1
        refusals = [
            (f"/{cid[:4]}/{cid}.cacnk", bytes(corrupt), 422),                    # corrupt compressed data
            (f"/{cid[:4]}/{cid}.cacnk", zstandard.ZstdCompressor().compress(bytes(flipped_data)), 422),
            (f"/{other[:4]}/{other}.cacnk", good, 422),                          # content of another id
            (f"/{cid[:4]}/{cid}.cacnk", data[:5000], 422),                       # not compressed
            (f"/{cid[:4]}/{cid}.cacnk", b"", 422),                               # empty
            (f"/{cid[:4]}/{cid}.cacnk", good + b"trailing", 422),                # data after the frame
            (f"/0000/{cid}.cacnk", good, 400),                                   # directory not the id's
            (f"/{cid[:4]}/{cid.upper()}.cacnk", good, 400),                      # not lower-case hex
            (f"/{cid[:4]}/{cid[:60]}.cacnk", good, 400),                         # not a chunk id
            (f"/{cid[:4]}/{cid}", good, 400),                                    # no suffix
            (f"/{cid[:4]}/{cid}.cacnk.tmp", good, 400),
            ("/chunk.cacnk", good, 400),
            ("/index.caibx", good, 403),                                         # no --index-dir
        ]
        for path, body, want in refusals:
            status, _, reply = request(srv.port, "PUT", path, body=body)
            assert status == want, (path, status, reply)
        for target in (f"/../{cid[:4]}/{cid}.cacnk", f"/{cid[:4]}%2f{cid}.cacnk", f"/x/..%2f{cid[:4]}/{cid}.cacnk"):
            head = f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\nConnection: close\r\n\r\n"
            status, _ = raw_request(srv.port, head.encode() + good)
            assert status == 400, target
        # oversize: declared, and streamed without a length (the server stops reading at the limit)
        head = (f"PUT /{cid[:4]}/{cid}.cacnk HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_CHUNK_BODY + 1}\r\n"
                "Connection: close\r\n\r\n")
        assert raw_request(srv.port, head.encode())[0] == 413
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
            s.sendall(f"PUT /{cid[:4]}/{cid}.cacnk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            piece = good[:4] + bytes((1 << 20) - 4)
            try:
                for _ in range(MAX_CHUNK_BODY // len(piece) + 8):
                    s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the end: the log below says how
        head = f"PUT /{cid[:4]}/{cid}.cacnk HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(head.encode() + good[:-100])  # and the client goes away
        time.sleep(0.3)
        assert files_under(store) == before
        # and the good one still goes in
        assert request(srv.port, "PUT", f"/{cid[:4]}/{cid}.cacnk", body=good)[0] == 201
    log = srv.stderr()
    assert re.search(rf'"PUT /{cid[:4]}/{cid}\.cacnk HTTP/1\.1" 413 ', log), log
    assert len(re.findall(rf'"PUT /{cid[:4]}/{cid}\.cacnk HTTP/1\.1" 413 ', log)) == 2, log
    assert files_under(store) == before | {cid[:4], f"{cid[:4]}/{cid}.cacnk"}
    # casync reads the uploaded store
    run_casync("extract", f"--store={store}", site / "idx" / "blob.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (site / "blob").read_bytes()


def test_concurrent_large_uploads_take_bounded_memory(tmp_path):
    """Upload bodies go to temporary files, and at most MAX_CHUNK_CHECKS chunks are decompressed at
    once: six 40 MiB chunks uploaded together keep the server's own memory (RssAnon, sampled) below
    200 MiB.  (Bodies and their decompressed copies in memory took 6 x 80 MiB.)  All six are
    stored as sent, and nothing else is left in the store."""
    from pycatar import server

    assert server.MAX_CHUNK_CHECKS == 2 and server.MAX_CHUNK_PUTS >= 6
    store = tmp_path / "store"
    store.mkdir()
    rng = random.Random(40)
    uploads = []
    for _ in range(6):
        data = rng.randbytes(40 << 20)
        cid = sha512_256(data)
        uploads.append((f"/{cid[:4]}/{cid}.cacnk", zstandard.ZstdCompressor(level=1).compress(data)))
        del data
    with Server(tmp_path / "log", f"--store={store}", "--writable") as srv:
        peak, done = [0], []

        def sample():
            while not done:
                with open(f"/proc/{srv.proc.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
                peak[0] = max(peak[0], rss)
                time.sleep(0.005)

        with concurrent.futures.ThreadPoolExecutor(len(uploads) + 1) as ex:
            sampler = ex.submit(sample)
            statuses = list(ex.map(lambda u: request(srv.port, "PUT", u[0], body=u[1])[0], uploads))
            done.append(True)
            sampler.result()
    assert statuses == [201] * len(uploads)
    assert peak[0] < 200 << 10, f"server RssAnon peaked at {peak[0] >> 10} MiB"
    for path, body in uploads:
        assert (store / path[1:]).read_bytes() == body
    assert files_under(store) == {p[1:5] for p, _ in uploads} | {p[1:] for p, _ in uploads}


def test_put_chunk_with_another_digest(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    data = b"hello sha256 " * 1000
    body = zstandard.ZstdCompressor().compress(data)
    cid256, cid512 = hashlib.sha256(data).hexdigest(), sha512_256(data)
    with Server(tmp_path / "log", f"--store={store}", "--writable", "--digest=sha256") as srv:
        assert request(srv.port, "PUT", f"/{cid512[:4]}/{cid512}.cacnk", body=body)[0] == 422
        assert request(srv.port, "PUT", f"/{cid256[:4]}/{cid256}.cacnk", body=body)[0] == 201
    assert files_under(store) == {cid256[:4], f"{cid256[:4]}/{cid256}.cacnk"}


def test_put_index_validated_then_installed(site, tmp_path, run_casync):
    """SERVE-3: an index is validated before it is renamed into place; a bad one leaves nothing."""
    store, idx = tmp_path / "store", tmp_path / "idx"
    store.mkdir()
    idx.mkdir()
    (idx / "sub").mkdir()
    good = (site / "idx" / "blob.caibx").read_bytes()
    other_blob = tmp_path / "other"
    other_blob.write_bytes(random.Random(3).randbytes(500_000))
    run_casync("make", f"--store={tmp_path / 's2'}", tmp_path / "other.caibx", other_blob)
    other = (tmp_path / "other.caibx").read_bytes()
    with Server(tmp_path / "log", f"--store={store}", f"--index-dir={idx}", "--writable") as srv:
        assert request(srv.port, "PUT", "/new.caibx", body=good)[0] == 201
        assert (idx / "new.caibx").read_bytes() == good
        assert request(srv.port, "GET", "/new.caibx")[2] == good
        assert request(srv.port, "PUT", "/sub/new.caibx", body=good)[0] == 201
        assert (idx / "sub" / "new.caibx").read_bytes() == good
        # replaced as a whole by a newer one
        assert request(srv.port, "PUT", "/new.caibx", body=other)[0] == 201
        assert (idx / "new.caibx").read_bytes() == other
        before = files_under(idx)
        bad_items = bytearray(good)
        bad_items[64 + 40:64 + 48] = bytes(8)  # second chunk's end offset 0: not increasing
        for path, body, want in [
            ("/bad.caibx", good[:-10], 422),             # truncated
            ("/bad.caibx", good + b"x" * 40, 422),        # trailing garbage
            ("/bad.caibx", b"garbage" * 100, 422),
            ("/bad.caibx", b"", 422),
            ("/bad.caibx", bytes(bad_items), 422),
            ("/new.caibx", good[:200], 422),              # an existing name is not harmed
            ("/bad.txt", good, 400),                      # not an index name
            ("/nodir/bad.caibx", good, 404),
            ("/sub", good, 400),
        ]:
            status, _, reply = request(srv.port, "PUT", path, body=body)
            assert status == want, (path, status, reply)
        head = f"PUT /big.caibx HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_INDEX_BODY + 1}\r\nConnection: close\r\n\r\n"
        assert raw_request(srv.port, head.encode())[0] == 413
        for target in ("/../bad.caibx", "/%2e%2e/bad.caibx", "/.bad.caibx", "/sub%2fbad.caibx"):
            head = f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\nConnection: close\r\n\r\n"
            assert raw_request(srv.port, head.encode() + good)[0] == 400, target
        # the client goes away before the end of its body
        head = f"PUT /cut.caibx HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(head.encode() + good[:-100])
            time.sleep(0.3)
        time.sleep(0.3)
        assert files_under(idx) == before
        assert (idx / "new.caibx").read_bytes() == other
    assert not os.listdir(tmp_path / "store")
    assert not os.path.exists(tmp_path / "bad.caibx")


# --------------------------------------------------------------------------- many clients, signals, logs


def test_many_clients_at_once_then_sigterm(site, tmp_path):
    chunks = sorted(chunk_files(site / "store").items())
    want = {rel: open(p, "rb").read() for rel, p in chunks}
    with Server(tmp_path / "log", f"--store={site / 'store'}", f"--index-dir={site / 'idx'}") as srv:
        def fetch(i):
            rel = chunks[i % len(chunks)][0]
            status, _, body = request(srv.port, "GET", "/" + rel)
            return status == 200 and body == want[rel]

        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            results = list(ex.map(fetch, range(200)))
        assert all(results) and len(results) == 200
        # a client still connected (idle keep-alive) does not hold the server up
        idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        idle.request("GET", "/blob.caibx")
        idle.getresponse().read()
        assert srv.stop(signal.SIGTERM) < 5
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


def test_sigint_stops_cleanly_and_verbose_logs_each_request(site, tmp_path):
    rel = sorted(chunk_files(site / "store"))[0]
    with Server(tmp_path / "log", f"--store={site / 'store'}", "-v") as srv:
        assert request(srv.port, "GET", "/" + rel)[0] == 200
        assert request(srv.port, "HEAD", "/nothere.caibx")[0] == 404
        raw_request(srv.port, b"GET http:/x HTTP/1.1\r\nHost: x\r\n\r\n")  # malformed: one line, no traceback
        assert srv.stop(signal.SIGINT) < 5
    lines = srv.stderr().splitlines()
    assert lines[0] == f"Listening on http://127.0.0.1:{srv.port}/"
    size = os.path.getsize(site / "store" / rel)
    assert re.fullmatch(rf'127\.0\.0\.1 "GET /{rel} HTTP/1\.1" 200 {size} [0-9.]+ms', lines[1]), lines
    assert re.fullmatch(r'127\.0\.0\.1 "HEAD /nothere\.caibx HTTP/1\.1" 404 \S+ [0-9.]+ms', lines[2]), lines
    assert len(lines) <= 6, lines


def test_quiet_without_verbose(site, tmp_path):
    rel = sorted(chunk_files(site / "store"))[0]
    with Server(tmp_path / "log", f"--store={site / 'store'}") as srv:
        assert request(srv.port, "GET", "/" + rel)[0] == 200
        raw_request(srv.port, b"GET http:/x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert srv.stderr() == f"Listening on http://127.0.0.1:{srv.port}/\n"


def test_ipv6_loopback(site, tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        p = pycatar("serve", f"--store={site / 'store'}", "--listen=[::1]:0")
        assert p.returncode != 0 and p.stderr.count(b"\n") == 1, p.stderr  # no IPv6 here: a clear error
        return
    rel = sorted(chunk_files(site / "store"))[0]
    with Server(tmp_path / "log", f"--store={site / 'store'}", host="[::1]") as srv:
        assert srv.url == f"http://[::1]:{srv.port}/"
        c = http.client.HTTPConnection("::1", srv.port, timeout=30)
        c.request("GET", "/" + rel)
        assert c.getresponse().read() == (site / "store" / rel).read_bytes()
        c.close()


def _trustme():
    try:
        import trustme
    except ImportError:
        if IN_CI:
            pytest.fail("trustme is required in CI (pip install '.[test]')")
        pytest.skip("trustme not installed (not CI, so skipping): pip install '.[test]'")
    return trustme


def test_https(site, tmp_path):
    trustme = _trustme()
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    rel = sorted(chunk_files(site / "store"))[0]
    with Server(tmp_path / "log", f"--store={site / 'store'}", f"--tls-cert={cert}", f"--tls-key={key}") as srv:
        assert srv.url == f"https://127.0.0.1:{srv.port}/"
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        status, _, body = request(srv.port, "GET", "/" + rel, context=ctx)
        assert status == 200 and body == (site / "store" / rel).read_bytes()
        rels = sorted(chunk_files(site / "store"))[:20]  # a batch (SERVE-5) through TLS too
        ids = [os.path.basename(r).split(".")[0] for r in rels]
        status, _, body = request(srv.port, "GET", "/.chunks/" + "".join(ids) + "cd" * 32, context=ctx)
        assert status == 200
        assert batch_frames(body, 21) == [(site / "store" / r).read_bytes() for r in rels] + [None]
        with pytest.raises(ssl.SSLError):  # a client that does not trust the CA refuses the server
            request(srv.port, "GET", "/" + rel, context=ssl.create_default_context())
        with pytest.raises((http.client.HTTPException, ConnectionError)):  # plain HTTP on the TLS port
            request(srv.port, "GET", "/" + rel)


def test_errors_are_one_line(site, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        cases = [
            [f"--store={tmp_path / 'missing'}"],
            [f"--store={site / 'blob'}"],
            [f"--store={site / 'store'}", f"--index-dir={tmp_path / 'missing'}"],
            [f"--store={site / 'store'}", "--listen=nohostport"],
            [f"--store={site / 'store'}", "--listen=127.0.0.1:65536"],
            [f"--store={site / 'store'}", "--listen=::1:80"],
            [f"--store={site / 'store'}", f"--listen=127.0.0.1:{port}"],
            [f"--store={site / 'store'}", "--tls-cert=x.pem"],
            [f"--store={site / 'store'}", f"--tls-cert={tmp_path}/no.pem", f"--tls-key={tmp_path}/no.pem"],
            [f"--store={site / 'store'}", f"--tls-cert={site / 'blob'}", f"--tls-key={site / 'blob'}"],
            [f"--store={site / 'store'}", "extra-argument"],
        ]
        for args in cases:
            p = pycatar("serve", *args, timeout=30)
            assert p.returncode != 0, args
            assert p.stderr.count(b"\n") == 1 and b"Traceback" not in p.stderr, (args, p.stderr)
    finally:
        busy.close()
    p = pycatar("--listen=127.0.0.1:0", "list", site)
    assert p.returncode != 0 and b'applies to the "serve" verb only' in p.stderr
    p = pycatar("--help")
    assert p.returncode == 0 and b" serve --store=DIR" in p.stdout and b"--listen" in p.stdout


def test_library_app_wrapped_with_middleware(site):
    """make_app() + start(): a test or benchmark wraps the server with middleware (here an injected
    delay and injected failures) without any hook in the server itself."""
    import asyncio

    from aiohttp import web

    from pycatar import server

    calls = []

    @web.middleware
    async def flaky(request, handler):
        calls.append(request.path)
        await asyncio.sleep(0.05)
        if len(calls) % 2:
            return web.Response(status=500)
        return await handler(request)

    app = server.make_app(site / "store", site / "idx")
    app.middlewares.append(flaky)
    with in_process(app) as running:
        assert running.url == f"http://127.0.0.1:{running.port}/" and running.port > 0
        rel = sorted(chunk_files(site / "store"))[0]
        t0 = time.monotonic()
        assert request(running.port, "GET", "/" + rel)[0] == 500
        status, _, body = request(running.port, "GET", "/" + rel)
        assert status == 200 and body == (site / "store" / rel).read_bytes()
        assert time.monotonic() - t0 >= 0.1
        assert calls == ["/" + rel] * 2


def test_stalled_uploads_are_refused_and_do_not_block_others(tmp_path):
    """An upload whose body stops (a client gone quiet, or a slow-loris) is refused with 408 after
    the server's stall time and its connection closed, so that MAX_CHUNK_PUTS of them do not keep
    the others waiting; nothing of theirs is left in the store."""
    from pycatar import server

    store = tmp_path / "store"
    store.mkdir()
    app = server.make_app(store, writable=True, body_stall=0.5)
    stalled = []
    with in_process(app) as running:
        data = b"a chunk that comes after the stalled ones " * 30
        cid = sha512_256(data)
        body = zstandard.ZstdCompressor().compress(data)
        for i in range(server.MAX_CHUNK_PUTS + 1):
            other = sha512_256(b"%d" % i)
            s = socket.create_connection(("127.0.0.1", running.port), timeout=30)
            s.sendall(f"PUT /{other[:4]}/{other}.cacnk HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
                      + body[:10])
            stalled.append(s)
        t0 = time.monotonic()
        status, _, _ = request(running.port, "PUT", f"/{cid[:4]}/{cid}.cacnk", body=body)
        assert status == 201 and time.monotonic() - t0 < 10
        for s in stalled:
            reply = b""
            while b"\r\n\r\n" not in reply:  # (aiohttp then reads what comes of the body for a while, and closes)
                b = s.recv(65536)
                assert b, reply
                reply += b
            assert reply.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in reply, reply[:300]
        for s in stalled:
            s.close()
    assert files_under(store) == {cid[:4], f"{cid[:4]}/{cid}.cacnk"}


def _big_chunk_store(top, sizes: list[int]) -> list[tuple[str, bytes]]:
    """A store holding chunk files of the given sizes (random bytes: the server sends files as they
    are, the client verifies them); [(id, bytes)] in that order."""
    rng = random.Random(12)
    out = []
    for n in sizes:
        cid = "%064x" % rng.getrandbits(256)
        data = rng.randbytes(n)
        os.makedirs(top / cid[:4], exist_ok=True)
        (top / cid[:4] / f"{cid}.cacnk").write_bytes(data)
        out.append((cid, data))
    return out


def _batch_request(port: int, ids: list[str]) -> tuple[socket.socket, bytes, int]:
    """A raw batched GET: (socket, what came after the headers so far, Content-Length)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"GET /.chunks/{''.join(ids)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(65536)
        assert b, head
        head += b
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 "), head
    return s, rest, int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.I).group(1))


def _read_to_end(s: socket.socket, have: bytes, limit: int, piece: int = 1 << 20, pause: float = 0.0) -> bytes:
    """Read until ``limit`` bytes or the end of the connection (a reset counts as the end)."""
    data = bytearray(have)
    while len(data) < limit:
        try:
            b = s.recv(piece)
        except ConnectionResetError:
            break
        if not b:
            break
        data += b
        if pause:
            time.sleep(pause)
    return bytes(data)


def test_batches_of_large_files_to_a_slow_reader_and_a_stalled_one(tmp_path):
    """SERVE-5 answers are sent by sendfile until the socket is full, then again each time it drains:
    a reader that takes its time still gets every byte in order, while other requests are answered.
    One that reads nothing for the server's stall time is cut off (its connection closed before the
    end of the answer), so it does not hold the server's descriptors for ever."""
    from pycatar import server

    store = tmp_path / "store"
    chunks = _big_chunk_store(store, [5 << 20, 0, 3 << 20, 7 << 20, 1])
    ids = [cid for cid, _ in chunks]
    ids.insert(2, "ef" * 32)  # absent
    want = [d for _, d in chunks[:2]] + [None] + [d for _, d in chunks[2:]]
    app = server.make_app(store, body_stall=1.0)
    with in_process(app) as running:
        slow, rest, length = _batch_request(running.port, ids)
        assert length == 8 + sum(8 + len(w or b"") for w in want)
        time.sleep(0.3)  # the socket fills up: the server waits for it to drain
        t0 = time.monotonic()
        assert request(running.port, "GET", f"/{ids[1][:4]}/{ids[1]}.cacnk")[0] == 200
        assert time.monotonic() - t0 < 0.5  # the loop is not blocked by the waiting answer
        body = _read_to_end(slow, rest, length, piece=256 << 10, pause=0.002)
        assert len(body) == length and batch_frames(body, len(ids)) == want
        slow.close()

        stalled, rest, length = _batch_request(running.port, ids)
        time.sleep(2.5)  # more than the stall time without reading
        body = _read_to_end(stalled, rest, length)
        stalled.close()
        assert 0 < len(body) < length
        status, _, body = request(running.port, "GET", "/.chunks/" + "".join(ids))
        assert status == 200 and batch_frames(body, len(ids)) == want


def test_a_batch_to_a_reader_slower_than_the_stall_time_between_wake_ups(tmp_path):
    """The kernel reports a socket writable only once a good part of its send buffer is free: a
    client on a slow link may read for longer than the stall time between two such reports.  It is
    reading (the bytes the kernel holds for it go down), so its answer goes on to the end.  (The
    sending function itself, on a connection whose send buffer is set large enough for that.)"""
    import asyncio
    import threading

    from pycatar import server

    store = tmp_path / "store"
    chunks = _big_chunk_store(store, [768 << 10, 768 << 10])
    received = bytearray()

    def read_slowly(s):
        while True:
            b = s.recv(32 << 10)
            if not b:
                break
            received.extend(b)
            time.sleep(0.1)  # at most 320 KiB/s
        s.close()

    async def scenario():
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()

        class Sender(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport)

        listener = await loop.create_server(Sender, "127.0.0.1", 0)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect(listener.sockets[0].getsockname())
        reader = threading.Thread(target=read_slowly, args=(client,))
        reader.start()
        transport = await accepted
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
        fds = [os.open(store / cid[:4] / f"{cid}.cacnk", os.O_RDONLY) for cid, _ in chunks]
        try:
            await server._send_files(transport, sock.fileno(), [(fd, len(d)) for fd, (_, d) in zip(fds, chunks)], 0.5)
        finally:
            for fd in fds:
                os.close(fd)
            transport.close()
            listener.close()
            await asyncio.to_thread(reader.join)

    asyncio.run(scenario())
    assert bytes(received) == b"".join(len(d).to_bytes(8, "little") + d for _, d in chunks)


def test_a_chunk_file_that_shrinks_while_sent_ends_the_connection(tmp_path):
    """A batch's sizes are fixed when its answer starts; a file that is shorter by the time its turn
    comes cannot keep the framing, so the connection ends there: the client sees a short answer,
    never a frame filled with other bytes."""
    from pycatar import server

    store = tmp_path / "store"
    chunks = _big_chunk_store(store, [24 << 20, 1 << 20])
    app = server.make_app(store, body_stall=20)
    with in_process(app) as running:
        s, rest, length = _batch_request(running.port, [cid for cid, _ in chunks])
        time.sleep(0.3)  # the server is still sending the first file (24 MiB do not fit in the socket)
        second = chunks[1][0]
        os.truncate(store / second[:4] / f"{second}.cacnk", 1000)
        body = _read_to_end(s, rest, length)
        s.close()
        whole = b"CACHUNKS" + b"".join(len(d).to_bytes(8, "little") + d for _, d in chunks)
        assert 8 + 8 + (24 << 20) <= len(body) < length and whole.startswith(body)


def test_a_client_that_stops_reading_an_answer_is_cut_off(tmp_path):
    """A chunk file up to SMALL_FILE is answered from memory: a client that stops reading would keep
    the rest of it in the server's memory for as long as it kept the connection.  After the server's
    stall time without a byte taken the connection is closed; a client that reads slowly, but reads,
    gets the whole file."""
    from pycatar import server

    store = tmp_path / "store"
    (cid, data), = _big_chunk_store(store, [server.SMALL_FILE])
    app = server.make_app(store, body_stall=1.0)

    def get(pause: float, first_wait: float) -> tuple[bytes, int]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # most of the answer waits in the server
        s.settimeout(30)
        s.connect(("127.0.0.1", running.port))
        s.sendall(f"GET /{cid[:4]}/{cid}.cacnk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        time.sleep(first_wait)
        got = _read_to_end(s, b"", 16 + len(data) + 4096, piece=64 << 10, pause=pause)
        s.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        return body, int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.I).group(1))

    with in_process(app) as running:
        body, length = get(pause=0.05, first_wait=0.5)  # slow, but never a second without reading
        assert length == len(data) and body == data
        body, length = get(pause=0, first_wait=3.0)
        assert length == len(data) and len(body) < len(data) and data.startswith(body)
