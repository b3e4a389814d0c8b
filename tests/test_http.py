"""Fetching over HTTP: pycatar as the client of real servers on loopback (Python's http.server,
nginx), with the indexes and stores made by the real casync, and servers that fail, lie or die."""

from __future__ import annotations

import os
import re
import random
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from httpservers import Nginx, PycatarServe, StaticServer



def pycatar(*args, env=None, cwd=None, timeout=120):
    e = dict(os.environ)
    e.pop("PYCATAR_HTTP_AUTH", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True,
                          env=e, cwd=cwd, timeout=timeout)


def one_line_error(p) -> str:
    assert p.returncode != 0
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def chunk_names(store) -> set[str]:
    out = set()
    for sub in os.listdir(store):
        for name in os.listdir(os.path.join(store, sub)):
            out.add(name)
    return out


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".#"))


@pytest.fixture(scope="module")
def published(tmp_path_factory, casync):
    """A web root made by casync: blob.caibx (24 MiB, part repeated) and tree.caidx in store/."""
    root = tmp_path_factory.mktemp("web")
    rnd = random.Random(12)
    part = rnd.randbytes(3 << 20)
    data = rnd.randbytes(8 << 20) + part + rnd.randbytes(6 << 20) + part + rnd.randbytes(4 << 20)
    (root / "src").mkdir()
    blob = root / "src" / "blob.img"
    blob.write_bytes(data)
    tree = root / "src" / "tree"
    for i in range(30):
        d = tree / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(rnd.randbytes(rnd.randrange(1, 300_000)))
    os.symlink("d0/f0.bin", tree / "link")
    subprocess.run([casync, "make", "--store", root / "store", root / "blob.caibx", blob], check=True,
                   capture_output=True)
    subprocess.run([casync, "make", "--store", root / "store", root / "tree.caidx", tree], check=True,
                   capture_output=True)
    return root


def casync_mtree(casync, path) -> str:
    return subprocess.run([casync, "mtree", path], check=True, capture_output=True).stdout.decode()


# --------------------------------------------------------------------------- static servers


def test_blob_by_url_from_static_server(published, tmp_path, casync):
    """STORE-14: any static server is a store; the index by URL too; each chunk requested once."""
    with StaticServer(published) as srv:
        out = tmp_path / "out.img"
        p = pycatar("extract", f"--store={srv.url}store/", f"{srv.url}blob.caibx", out)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == (published / "src" / "blob.img").read_bytes()
        # each distinct chunk once, though the blob repeats a 3 MiB run
        gets = [g.rsplit("/", 1)[1] for g in srv.gets()]
        assert len(gets) == len(set(gets)) and set(gets) <= chunk_names(published / "store")
        assert sum(len(x) for x in gets) > 0
        p = pycatar("digest", f"--store={srv.url}store", f"{srv.url}blob.caibx")
        want = subprocess.run([casync, "digest", published / "src" / "blob.img"], check=True,
                              capture_output=True).stdout
        assert p.returncode == 0 and p.stdout == want


def test_tree_through_nginx(published, tmp_path, casync):
    with Nginx(published, tmp_path / "nginx") as ng:
        out = tmp_path / "tree"
        p = pycatar("extract", f"--store={ng.url}store", f"{ng.url}tree.caidx", out)
        assert p.returncode == 0, p.stderr
        assert casync_mtree(casync, out) == casync_mtree(casync, published / "src" / "tree")
        for verb in ("list", "mtree"):
            mine = pycatar(verb, f"--store={ng.url}store", f"{ng.url}tree.caidx")
            theirs = subprocess.run([casync, verb, "--store", published / "store", published / "tree.caidx"],
                                    capture_output=True, check=True)
            assert mine.returncode == 0 and mine.stdout == theirs.stdout
        mine = pycatar("stat", f"--store={ng.url}store", f"{ng.url}tree.caidx", "d1")
        theirs = subprocess.run([casync, "stat", "--store", published / "store", published / "tree.caidx", "d1"],
                                capture_output=True, check=True)
        assert mine.returncode == 0 and mine.stdout == theirs.stdout
        # casync itself reads the same server (its curl helper): the same tree
        out2 = tmp_path / "tree-casync"
        subprocess.run([casync, "extract", f"--store={ng.url}store", published / "tree.caidx", out2],
                       check=True, capture_output=True)
        assert casync_mtree(casync, out2) == casync_mtree(casync, out)
        assert any(" 200 " in line and ".cacnk" in line for line in ng.access_log())


def test_gc_dry_run_with_remote_index(published, tmp_path, casync):
    store = tmp_path / "store"
    subprocess.run(["cp", "-a", published / "store", store], check=True)
    with StaticServer(published) as srv:
        p = pycatar("gc", "--grace=0", "--dry-run", f"--store={store}", f"{srv.url}blob.caibx")
    want = subprocess.run([casync, "gc", "--dry-run", f"--store={store}", published / "blob.caibx"],
                          capture_output=True, check=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == want.stdout and b"Would remove" in p.stdout
    p = pycatar("gc", f"--store={published}/store", "http://127.0.0.1:9/x.caibx", "--http-retries=0")
    one_line_error(p)


def test_rauc_style_update_fetches_only_what_the_seed_lacks(tmp_path, casync):
    rnd = random.Random(5)
    old = bytearray(rnd.randbytes(12 << 20))
    new = bytearray(old)
    for off in (1 << 20, 5 << 20, 9 << 20):  # three changed regions, and data appended
        new[off:off + 5000] = rnd.randbytes(5000)
    new += rnd.randbytes(1 << 20)
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    web = tmp_path / "web"
    web.mkdir()
    subprocess.run([casync, "make", "--store", tmp_path / "old.castr", tmp_path / "old.caibx", tmp_path / "old.img"],
                   check=True, capture_output=True)
    subprocess.run([casync, "make", "--store", web / "store", web / "new.caibx", tmp_path / "new.img"],
                   check=True, capture_output=True)
    missing = chunk_names(web / "store") - chunk_names(tmp_path / "old.castr")
    assert 4 <= len(missing) < len(chunk_names(web / "store")) // 4
    with StaticServer(web) as srv:
        out = tmp_path / "NEW"
        p = pycatar("extract", f"--seed={tmp_path / 'old.img'}", "--seed-output=no", f"--store={srv.url}store/",
                    f"{srv.url}new.caibx", out)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == bytes(new)
        fetched = [g.rsplit("/", 1)[1] for g in srv.gets()]
        assert sorted(fetched) == sorted(missing)


@pytest.mark.parametrize("index", ["blob.caibx", "tree.caidx"])
def test_requests_go_out_ahead_and_each_chunk_once(published, tmp_path, casync, index):
    """STORE-14: chunks are requested ahead of the writing, up to --concurrency at once, although only
    a thread per core decodes them; no chunk is asked for twice, and every one the index names is."""
    only = tmp_path / "only"  # casync's store of this index alone: the chunks it names
    src = published / "src" / ("blob.img" if index == "blob.caibx" else "tree")
    subprocess.run([casync, "make", "--store", only, tmp_path / index, src], check=True, capture_output=True)
    out = tmp_path / "out"
    with StaticServer(published, delay=0.05) as srv:
        p = subprocess.Popen([sys.executable, "-m", "pycatar", "extract", f"--store={srv.url}store",
                              "--concurrency=12", published / index, out], stderr=subprocess.PIPE)
        threads = 0
        while p.poll() is None:
            try:
                threads = max(threads, len(os.listdir(f"/proc/{p.pid}/task")))
            except FileNotFoundError:
                break
            time.sleep(0.01)
        assert p.wait() == 0, p.stderr.read()
        fetched = [g.rsplit("/", 1)[1] for g in srv.gets()]
    assert sorted(fetched) == sorted(chunk_names(only))
    assert 8 <= srv.most_inflight <= 12
    # the main thread, the transfer thread, a decoding thread per core and, for a tree, the file
    # writers (a thread per core): not a thread per request in flight
    cores = len(os.sched_getaffinity(0))
    assert 0 < threads <= 2 + cores * (1 if index == "blob.caibx" else 2), threads
    if index == "blob.caibx":
        assert out.read_bytes() == src.read_bytes()
    else:
        assert subprocess.run(["diff", "-r", out, src]).returncode == 0


def test_chunk_cache_serves_a_second_extraction_without_the_server(published, tmp_path):
    """STORE-17: every fetched chunk lands in the cache; the second extraction needs no server."""
    cache = tmp_path / "cache"
    srv = StaticServer(published).__enter__()
    try:
        p = pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", published / "tree.caidx",
                    tmp_path / "one")
        assert p.returncode == 0, p.stderr
        first = len(srv.gets())
    finally:
        srv.stop()
    assert first > 0 and len(chunk_names(cache)) == first
    p = pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", "--http-retries=0",
                published / "tree.caidx", tmp_path / "two")
    assert p.returncode == 0, p.stderr
    assert subprocess.run(["diff", "-r", tmp_path / "one", tmp_path / "two"]).returncode == 0
    assert subprocess.run(["diff", "-r", tmp_path / "one", published / "src" / "tree"]).returncode == 0


@pytest.mark.parametrize("fault", ["500", "drop", "truncate"])
def test_flaky_server_still_gives_the_right_bytes(published, tmp_path, fault):
    seen: dict[str, int] = {}

    def first_two_fail(path, n):  # every chunk fails twice before it is served: most requests fail
        seen[path] = seen.get(path, 0) + 1
        return path.endswith(".cacnk") and seen[path] <= 2

    with StaticServer(published, fault=fault, fail=first_two_fail) as srv:
        out = tmp_path / "out.img"
        p = pycatar("extract", f"--store={srv.url}store", f"{srv.url}blob.caibx", out)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == (published / "src" / "blob.img").read_bytes()
        assert len(srv.gets()) > len(set(srv.gets()))  # faults happened and were retried


def test_corrupt_chunk_from_server_is_refused(published, tmp_path):
    target = sorted(chunk_names(published / "store"))[0]
    with StaticServer(published, fault="garbage", fail=lambda path, n: path.endswith(target)) as srv:
        p = pycatar("extract", f"--store={srv.url}store", published / "tree.caidx", tmp_path / "t")
        p2 = pycatar("extract", f"--store={srv.url}store", published / "blob.caibx", tmp_path / "b.img")
    errors = [one_line_error(x) for x in (p, p2) if x.returncode]
    assert errors, "the corrupt chunk belongs to one of the two indexes"
    cid = target.split(".")[0]
    assert all(cid in e and f"{srv.url}store/{cid[:4]}/{target}" in e for e in errors), errors
    if p2.returncode:
        assert not (tmp_path / "b.img").exists() and leftovers(tmp_path) == []


def test_missing_chunk_names_id_and_url(published, tmp_path):
    web = tmp_path / "web"
    subprocess.run(["cp", "-a", published, web], check=True)
    from pycatar.index import IndexReader

    with IndexReader(web / "blob.caibx") as r:  # a chunk of the blob (the tree's ids vary with its mtimes)
        in_blob = {c.id.hex() + ".cacnk" for c in r.chunks()}
    names = sorted(chunk_names(web / "store") & in_blob)
    gone = names[len(names) // 2]
    os.unlink(web / "store" / gone[:4] / gone)
    with StaticServer(web) as srv:
        results = [pycatar("extract", f"--store={srv.url}store", web / "blob.caibx", tmp_path / "b.img"),
                   pycatar("extract", f"--store={srv.url}store", web / "tree.caidx", tmp_path / "t")]
    errors = [one_line_error(p) for p in results if p.returncode]
    assert errors
    assert all("not found" in e and gone.split(".")[0] in e and f"{srv.url}store/{gone[:4]}/{gone}" in e
               for e in errors), errors
    assert not (tmp_path / "b.img").exists() and leftovers(tmp_path) == []


def test_server_dying_midway_leaves_no_output(published, tmp_path):
    with StaticServer(published, limit=20) as srv:
        p = pycatar("extract", f"--store={srv.url}store", "--http-retries=1", f"{srv.url}blob.caibx",
                    tmp_path / "b.img")
    err = one_line_error(p)
    assert srv.url in err
    assert not (tmp_path / "b.img").exists() and leftovers(tmp_path) == []


def test_failover_group_moves_to_the_mirror(published, tmp_path):
    """STORE-16: a dead member of a|b is skipped."""
    with StaticServer(published) as srv:
        dead = f"http://127.0.0.1:{_closed_port()}/store"
        p = pycatar("extract", f"--store={dead}|{srv.url}store", "--http-retries=0", published / "blob.caibx",
                    tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()
        # without the mirror, a dead store is a one-line error naming it
        p = pycatar("extract", f"--store={dead}", "--http-retries=0", published / "blob.caibx", tmp_path / "c.img")
        assert "connection refused" in one_line_error(p)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_authorization_header_sent_and_never_printed(published, tmp_path):
    secret = "Bearer s3cr3t-t0ken"
    with StaticServer(published, auth=secret) as srv:
        p = pycatar("extract", f"--store={srv.url}store", f"{srv.url}blob.caibx", tmp_path / "a.img")
        assert "401" in one_line_error(p)
        p = pycatar("extract", f"--store={srv.url}store", f"--http-auth={secret}", f"{srv.url}blob.caibx",
                    tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        p = pycatar("extract", f"--store={srv.url}store", f"{srv.url}blob.caibx", tmp_path / "c.img",
                    env={"PYCATAR_HTTP_AUTH": secret})
        assert p.returncode == 0, p.stderr
        # a wrong secret: refused, and neither secret appears in the message
        p = pycatar("extract", f"--store={srv.url}store", f"{srv.url}blob.caibx", tmp_path / "d.img",
                    env={"PYCATAR_HTTP_AUTH": "Bearer wrong-one"})
        err = one_line_error(p)
        assert "s3cr3t" not in err and "wrong-one" not in err
    with StaticServer(published, auth="Basic dXNlcjpodW50ZXIy") as srv:  # user:hunter2
        url = srv.url.replace("http://", "http://user:hunter2@")
        p = pycatar("extract", f"--store={url}store", f"{url}blob.caibx", tmp_path / "e.img")
        assert p.returncode == 0, p.stderr
        p = pycatar("extract", f"--store={url}nothere", f"{url}blob.caibx", tmp_path / "f.img")
        assert "hunter2" not in one_line_error(p)


def test_oversized_answer_and_silent_server_are_bounded(published, tmp_path):
    """STORE-14: a body beyond the chunk's bound is refused unread; a silent server times out."""
    web = tmp_path / "web"
    subprocess.run(["cp", "-a", published, web], check=True)
    victim = sorted(chunk_names(web / "store"))[3]
    with open(web / "store" / victim[:4] / victim, "wb") as f:
        f.truncate(600 << 20)  # far more than any chunk of this index may take
    with StaticServer(web) as srv:
        t0 = time.monotonic()
        results = [pycatar("extract", f"--store={srv.url}store", web / "blob.caibx", tmp_path / "b.img"),
                   pycatar("extract", f"--store={srv.url}store", web / "tree.caidx", tmp_path / "t")]
        assert time.monotonic() - t0 < 60
    errors = [one_line_error(p) for p in results if p.returncode]
    assert errors and all("limit" in e for e in errors), errors

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)  # accepts connections (the kernel does) and never answers
    try:
        t0 = time.monotonic()
        p = pycatar("extract", f"--store=http://127.0.0.1:{lst.getsockname()[1]}/", "--http-timeout=1",
                    "--http-retries=1", web / "blob.caibx", tmp_path / "c.img")
        assert time.monotonic() - t0 < 30
        assert "timed out" in one_line_error(p)
        # a tree: the stream asks for 64 chunks ahead, 4 connections at a time.  Once a request has
        # failed for good, those made before it fail with it instead of each waiting out its own
        # timeouts (about 35 s here before, minutes with the default timeouts)
        t0 = time.monotonic()
        p = pycatar("extract", f"--store=http://127.0.0.1:{lst.getsockname()[1]}/", "--http-timeout=1",
                    "--http-retries=1", web / "tree.caidx", tmp_path / "c.tree")
        assert time.monotonic() - t0 < 15
        assert "timed out" in one_line_error(p)
    finally:
        lst.close()


def test_unknown_schemes_never_become_local_folders(tmp_path):
    """STORE-13: other URL schemes are refused, never taken for a local folder named like the URL."""
    (tmp_path / "f").write_bytes(os.urandom(100_000))
    for store in ("ftp://example.invalid/s", "s3://bucket/x", "ssh://host/path"):
        p = pycatar("make", f"--store={store}", "x.caibx", tmp_path / "f", cwd=tmp_path)
        assert "unsupported location" in one_line_error(p)
    p = pycatar("make", "--store=http://127.0.0.1:9/s/", "--http-retries=0", "x.caibx", tmp_path / "f", cwd=tmp_path)
    one_line_error(p)
    assert sorted(os.listdir(tmp_path)) == ["f"]
    p = pycatar("extract", "--store=gopher://x/", "ftp://h/y.caibx", tmp_path / "o")
    assert "unsupported location" in one_line_error(p)


def _make_ca(tmp_path):
    """A CA and a certificate for 127.0.0.1 signed by it (openssl, independent of pycatar)."""
    d = tmp_path / "pki"
    d.mkdir()
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=pycatar test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=device-1")
    run("openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "2")
    return d


def test_https_verifies_certificates(published, tmp_path):
    pki = _make_ca(tmp_path)
    srv = StaticServer(published)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "srv.pem", pki / "srv.key")
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    url = srv.url.replace("http://", "https://")
    with srv:
        p = pycatar("extract", f"--store={url}store", "--http-retries=0", f"{url}blob.caibx", tmp_path / "a.img")
        assert "certificate" in one_line_error(p).lower()
        p = pycatar("extract", f"--store={url}store", f"--ca-cert={pki / 'ca.pem'}", f"{url}blob.caibx",
                    tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()


def test_damaged_chunk_cache_copy_is_replaced(published, tmp_path):
    """STORE-17: a cached copy that fails verification is removed and fetched again."""
    cache = tmp_path / "cache"
    with StaticServer(published) as srv:
        p = pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", published / "blob.caibx",
                    tmp_path / "a.img")
        assert p.returncode == 0, p.stderr
        victim = sorted(chunk_names(cache))[0]
        path = cache / victim[:4] / victim
        good = path.read_bytes()
        os.chmod(path, 0o644)
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
        before = len(srv.gets())
        p = pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", published / "blob.caibx",
                    tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        assert srv.gets()[before:] == [f"/store/{victim[:4]}/{victim}"]
    assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()
    assert path.read_bytes() == good


def test_https_client_certificate(published, tmp_path):
    pki = _make_ca(tmp_path)
    srv = StaticServer(published)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "srv.pem", pki / "srv.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # only devices with a certificate of this CA get chunks
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    url = srv.url.replace("http://", "https://")
    with srv:
        p = pycatar("extract", f"--store={url}store", f"--ca-cert={pki / 'ca.pem'}", "--http-retries=0",
                    f"{url}blob.caibx", tmp_path / "a.img")
        one_line_error(p)
        p = pycatar("extract", f"--store={url}store", f"--ca-cert={pki / 'ca.pem'}",
                    f"--client-cert={pki / 'client.pem'}", f"--client-key={pki / 'client.key'}",
                    f"{url}blob.caibx", tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()


def test_through_pycatar_serve_and_uploads_to_it(published, tmp_path, casync):
    """pycatar extracts through pycatar serve; make uploads chunks and the index into a --writable
    server (STORE-15), and casync extracts from what landed on the server's disk."""
    src = published / "src"
    with PycatarServe(tmp_path / "ro.log", f"--store={published / 'store'}", f"--index-dir={published}") as srv:
        p = pycatar("extract", f"--store={srv.url}", f"{srv.url}tree.caidx", tmp_path / "tree")
        assert p.returncode == 0, p.stderr
        assert casync_mtree(casync, tmp_path / "tree") == casync_mtree(casync, src / "tree")
        p = pycatar("extract", f"--store={srv.url}", f"{srv.url}blob.caibx", tmp_path / "b.img")
        assert p.returncode == 0 and (tmp_path / "b.img").read_bytes() == (src / "blob.img").read_bytes()

    up = tmp_path / "up"
    (up / "store").mkdir(parents=True)
    (up / "idx").mkdir()
    with PycatarServe(tmp_path / "rw.log", f"--store={up / 'store'}", f"--index-dir={up / 'idx'}", "--writable",
                      "-v") as srv:
        p = pycatar("make", f"--store={srv.url}", f"{srv.url}blob.caibx", src / "blob.img")
        want = subprocess.run([casync, "digest", src / "blob.img"], capture_output=True, check=True).stdout
        assert p.returncode == 0 and p.stdout == want, p.stderr
        puts = srv.stderr().count('"PUT ')
        p = pycatar("make", f"--store={srv.url}", f"{srv.url}blob.caibx", src / "blob.img")
        assert p.returncode == 0, p.stderr
        assert srv.stderr().count('"PUT ') == puts + 1  # the second time only the index is sent
        p = pycatar("make", f"--store={srv.url}", f"{srv.url}tree.caidx", src / "tree")
        assert p.returncode == 0, p.stderr
        p = pycatar("make", f"--store={srv.url}", f"{srv.url}tree.catar", src / "tree")
        assert "index" in one_line_error(p)
    assert chunk_names(up / "store") == chunk_names(published / "store")  # what casync stored
    subprocess.run([casync, "extract", f"--store={up / 'store'}", up / "idx" / "blob.caibx", tmp_path / "c.img"],
                   check=True, capture_output=True)
    assert (tmp_path / "c.img").read_bytes() == (src / "blob.img").read_bytes()
    subprocess.run([casync, "extract", f"--store={up / 'store'}", up / "idx" / "tree.caidx", tmp_path / "ctree"],
                   check=True, capture_output=True)
    assert casync_mtree(casync, tmp_path / "ctree") == casync_mtree(casync, src / "tree")


def test_upload_to_a_read_only_server_fails_cleanly(published, tmp_path):
    (tmp_path / "s").mkdir()
    with PycatarServe(tmp_path / "log", f"--store={tmp_path / 's'}") as srv:
        p = pycatar("make", f"--store={srv.url}", tmp_path / "x.caibx", published / "src" / "blob.img")
        assert "405" in one_line_error(p)
    assert not (tmp_path / "x.caibx").exists() and os.listdir(tmp_path / "s") == []


def test_lying_servers_are_bounded(published, tmp_path):
    """STORE-14: a body without a length that never ends is cut off at the chunk's bound; a redirect
    to file:// is refused (never followed to a local file); a redirect to http(s) is followed."""
    victim = sorted(chunk_names(published / "store"))[0]
    with StaticServer(published, fault="endless", fail=lambda path, n: path.endswith(victim)) as srv:
        results = [pycatar("extract", f"--store={srv.url}store", "--http-retries=0", published / idx,
                           tmp_path / out) for idx, out in (("blob.caibx", "b.img"), ("tree.caidx", "t"))]
        errors = [one_line_error(p) for p in results if p.returncode]
        assert errors and all("limit" in e for e in errors), errors
        assert srv.sent < 64 << 20  # the client hung up long before the server's 256 MiB
    with StaticServer(published, fault="redirect", redirect_to="file:///etc/passwd",
                      fail=lambda path, n: path.endswith(".cacnk")) as srv:
        p = pycatar("extract", f"--store={srv.url}store", "--http-retries=0", published / "blob.caibx",
                    tmp_path / "c.img")
        assert "unsupported protocol" in one_line_error(p)
    with StaticServer(published) as real:
        with StaticServer(published, fault="redirect", redirect_to=f"{real.url}blob.caibx",
                          fail=lambda path, n: path.endswith(".caibx")) as srv:
            p = pycatar("extract", f"--store={real.url}store", f"{srv.url}elsewhere.caibx", tmp_path / "d.img")
            assert p.returncode == 0, p.stderr
            assert (tmp_path / "d.img").read_bytes() == (published / "src" / "blob.img").read_bytes()


def test_reused_transfer_handles_carry_mixed_requests(published):
    """The client keeps its transfer handles between requests (a GET after a GET sets only the URL,
    the body's destination and its limit): with a single handle, GETs after a HEAD, a missing file,
    a refused oversized answer and a download to a file still bring the whole body, and a HEAD after
    GETs still asks for no body."""
    import tempfile

    from pycatar.httpclient import HTTPClient, HTTPOptions, RemoteError

    names = sorted(chunk_names(published / "store"))[:2]
    rel = [f"store/{n[:4]}/{n}" for n in names]
    want = [(published / r).read_bytes() for r in rel]
    missing = "store/0000/" + "0" * 64 + ".cacnk"
    client = HTTPClient(HTTPOptions(concurrency=1, retries=0))
    try:
        with StaticServer(published) as srv:
            assert client.exists(srv.url + rel[0])
            assert client.get(srv.url + rel[0], 1 << 24) == want[0]
            assert client.get(srv.url + missing, 1 << 24) is None
            assert client.get(srv.url + rel[1], 1 << 24) == want[1]
            with pytest.raises(RemoteError, match="limit"):
                client.get(srv.url + rel[0], 100)
            assert client.get(srv.url + rel[0], 1 << 24) == want[0]
            with tempfile.TemporaryFile() as sink:
                assert client.download(srv.url + "blob.caibx", sink, 1 << 24)
                sink.seek(0)
                assert sink.read() == (published / "blob.caibx").read_bytes()
            assert client.get(srv.url + rel[1], 1 << 24) == want[1]
            assert not client.exists(srv.url + missing)
            assert client.get(srv.url + rel[1], 1 << 24) == want[1]
            assert [m for m, _ in srv.log] == ["HEAD", "GET", "GET", "GET", "GET", "GET", "GET", "GET",
                                               "HEAD", "GET"]
    finally:
        client.close()


def test_a_client_that_worked_one_request_at_a_time_opens_few_connections_at_once(published):
    """New connections a few at a time (spec/store.md): a client that made its requests one at a
    time (a mount looking files up) has one connection; when many go out at once (a jump's
    read-ahead) it opens 4 more, then more as those answer, not 15 at once (a server with a short
    listen queue, as http.server's 5, drops such a burst and each dropped one waits a second)."""
    from pycatar.httpclient import HTTPClient, HTTPOptions

    names = sorted(chunk_names(published / "store"))[:40]
    urls = [f"store/{n[:4]}/{n}" for n in names]
    want = [(published / u).read_bytes() for u in urls]
    accepted: list[float] = []
    answered: list[float] = []
    client = HTTPClient(HTTPOptions(concurrency=16))
    try:
        with StaticServer(published, delay=0.05) as srv:
            srv.httpd.socket.listen(64)  # (this test's server takes any burst: it counts them)
            handler = srv.httpd.RequestHandlerClass
            handle, do_get = handler.handle, handler.do_GET

            def counted(self):
                accepted.append(time.monotonic())
                handle(self)

            def timed(self):
                do_get(self)
                answered.append(time.monotonic())

            handler.handle, handler.do_GET = counted, timed
            for u, w in zip(urls[:8], want[:8]):
                assert client.get(srv.url + u, 1 << 24) == w
            assert len(accepted) == 1
            answered.clear()
            started = [client.start(srv.url + u, 1 << 24) for u in urls[8:]]
            for t, u, w in zip(started, urls[8:], want[8:]):
                assert client.get(srv.url + u, 1 << 24, started=t) == w
        burst = [a for a in accepted[1:] if a < answered[0]]  # opened before the first answer came
        assert len(burst) == 4, len(burst)
        assert len(accepted) > 8  # (more opened later, as the first ones answered)
    finally:
        client.close()


def test_a_server_that_closes_every_connection_gets_a_few_at_a_time(published, tmp_path):
    """An HTTP/1.0 server (Python's http.server, as `python3 -m http.server` runs it) closes the
    connection after every answer, so every request opens one: the client keeps at most 4 in
    flight there (that server's listen queue holds 5; with up to 16 at once some were dropped, each
    waiting a second: 7.5 s for a tree casync fetched in 0.6 s), and the bytes are right."""
    with StaticServer(published, delay=0.01, http10=True) as srv:
        p = pycatar("extract", f"--store={srv.url}store/", published / "blob.caibx", tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()
        assert len(srv.gets()) > 100
        assert 1 < srv.most_inflight <= 4, srv.most_inflight


def test_after_a_jump_the_next_chunks_come_without_waiting_for_a_whole_job(published):
    """After a read that jumped (a mount reading another file), the chunks right after its own come
    in a small first job of read-ahead: a read spanning its chunk and the next ends while the server
    still holds back the chunks from the ninth on (1 s each), instead of waiting for a whole job of
    32 that includes them; the bytes are right."""
    from pycatar.blob import IndexStream
    from pycatar.httpclient import HTTPClient, HTTPOptions
    from pycatar.httpstore import HTTPStore
    from pycatar.index import IndexReader

    data = (published / "src" / "blob.img").read_bytes()
    with IndexReader(published / "blob.caibx") as r:
        chunks = list(r.chunks())
    i = next(n for n, c in enumerate(chunks) if c.start >= 12 << 20)
    slow = {c.id.hex() for c in chunks[i + 9:i + 40]}
    slow_answers: list[float] = []
    client = HTTPClient(HTTPOptions(concurrency=16))
    try:
        with StaticServer(published) as srv, IndexReader(published / "blob.caibx") as r:
            handler = srv.httpd.RequestHandlerClass
            do_get = handler.do_GET

            def held_back(self):
                name = self.path.rsplit("/", 1)[1].split(".")[0]
                if name in slow:
                    time.sleep(1.0)
                do_get(self)
                if name in slow:
                    slow_answers.append(time.monotonic())

            handler.do_GET = held_back
            with IndexStream(r, HTTPStore(srv.url + "store/", client), threads=2) as s:
                pos = chunks[i].end - 1000
                assert s.read_at(pos, 2000) == data[pos:pos + 2000]  # chunk i and i + 1
                done = time.monotonic()
                settle(srv)
        assert slow_answers and done < min(slow_answers)
    finally:
        client.close()


def settle(srv) -> int:
    """The number of chunk requests ``srv`` has had once no more come for 0.3 s."""
    seen = -1
    while seen != len(srv.gets()):
        seen = len(srv.gets())
        time.sleep(0.3)
    return seen


def test_a_reader_that_jumps_is_not_queued_behind_the_read_ahead(published):
    """A read far from the last one (mount, random access) has its own chunk requested before the
    read-ahead of its new place waiting for a connection: against a server answering in 20 ms, the
    chunk holding the new place is among the first requests after the jump (one connection each,
    16), not behind the 100-odd chunks requested ahead; the bytes are right."""
    from pycatar.blob import IndexStream
    from pycatar.httpclient import HTTPClient, HTTPOptions
    from pycatar.httpstore import HTTPStore
    from pycatar.index import IndexReader

    data = (published / "src" / "blob.img").read_bytes()
    client = HTTPClient(HTTPOptions(concurrency=16))
    try:
        with StaticServer(published, delay=0.02) as srv, IndexReader(published / "blob.caibx") as r:
            with IndexStream(r, HTTPStore(srv.url + "store/", client), threads=2) as s:
                assert s.read_at(100, 1000) == data[100:1100]
                before = settle(srv)  # the read-ahead of the first place is done
                pos = 14 << 20
                assert s.read_at(pos, 1000) == data[pos:pos + 1000]
                own = next(c for c in r.chunks() if c.start <= pos < c.end).id.hex() + ".cacnk"
                settle(srv)
                after = [p.rsplit("/", 1)[1] for p in srv.gets()[before:]]
        assert len(after) > 60  # (the read-ahead went out too)
        assert own in after[:16], (after.index(own) if own in after else None, len(after))
    finally:
        client.close()


def test_a_head_after_a_get_with_a_small_limit_is_not_held_to_it(published):
    """A HEAD on a handle that last ran a GET starts from a reset handle: the GET's size limit (a
    small answer, as the batched-read probe's 8 bytes) does not make the HEAD of a larger resource
    fail as "answer exceeds the limit"."""
    from pycatar.httpclient import HTTPClient, HTTPOptions

    sized = sorted((os.path.getsize(published / "store" / n[:4] / n), n) for n in chunk_names(published / "store"))
    (small, small_name), (_, big_name) = sized[0], sized[-1]
    client = HTTPClient(HTTPOptions(concurrency=1, retries=0))
    try:
        with StaticServer(published) as srv:
            url = lambda n: f"{srv.url}store/{n[:4]}/{n}"  # noqa: E731
            assert len(client.get(url(small_name), small)) == small
            assert client.exists(url(big_name))
            assert [m for m, _ in srv.log] == ["GET", "HEAD"]
    finally:
        client.close()


# --------------------------------------------------------------------------- batched reads (SERVE-5)


def _distinct_and_repeated(index) -> tuple[int, int]:
    """(chunk ids that occur once, ids that occur more than once): those are requested ahead, these
    are fetched at their first occurrence and read back from the output for the others (SEED-7)."""
    import collections

    from pycatar.index import IndexReader

    with IndexReader(index) as r:
        counts = collections.Counter(c.id for c in r.chunks())
    repeated = sum(1 for n in counts.values() if n > 1)
    return len(counts) - repeated, repeated


def test_batched_reads_through_pycatar_serve(published, tmp_path, casync):
    """SERVE-5: through pycatar serve, the chunks requested ahead go out 64 a request (the server's
    log shows batched reads only, after one probe); the bytes and the tree are right."""
    distinct, repeated = _distinct_and_repeated(published / "blob.caibx")
    src = published / "src"
    with PycatarServe(tmp_path / "log", f"--store={published / 'store'}", "-v") as srv:
        p = pycatar("extract", f"--store={srv.url}", published / "blob.caibx", tmp_path / "b.img")
        assert p.returncode == 0, p.stderr
        log = srv.stderr()
        p = pycatar("extract", f"--store={srv.url}", published / "tree.caidx", tmp_path / "tree")
        assert p.returncode == 0, p.stderr
        tree_log = srv.stderr()[len(log):]
        p = pycatar("extract", f"--store={srv.url}", f"--chunk-cache={tmp_path / 'cache'}", published / "blob.caibx",
                    tmp_path / "c.img")  # chunks of a batch (views of its answer) kept in the cache too
        assert p.returncode == 0, p.stderr
    p = pycatar("extract", f"--store={tmp_path / 'cache'}", published / "blob.caibx", tmp_path / "d.img")
    assert p.returncode == 0 and (tmp_path / "d.img").read_bytes() == (src / "blob.img").read_bytes(), p.stderr
    assert (tmp_path / "b.img").read_bytes() == (src / "blob.img").read_bytes()
    assert casync_mtree(casync, tmp_path / "tree") == casync_mtree(casync, src / "tree")
    assert repeated > 10 and log.count(".cacnk") == 0, log  # none read alone: repeated ones neither (SEED-7)
    asked = [m[i:i + 64] for m in re.findall(r'"GET /\.chunks/([0-9a-f]+) ', log) for i in range(0, len(m), 64)]
    assert len(asked) == len(set(asked)) == distinct + repeated  # each chunk once (a repeated one: its first occurrence)
    assert log.count('"GET /.chunks/ ') == 1  # the probe
    # 64 chunks (4 MiB) a batch, less when a chunk is wanted before its batch is full (the first, the last)
    assert distinct // 64 <= log.count('"GET /.chunks/') - 1 <= distinct // 16 + 2, log
    # a tree's stream reads its first chunk before it looks ahead: a few chunks alone at most
    assert tree_log.count('"GET /.chunks/ ') == 1 and tree_log.count(".cacnk") <= 4, tree_log


def test_a_repeated_chunk_is_requested_once_however_far_apart(tmp_path):
    """SEED-7 over the network: a chunk that occurs again long after its first occurrence (beyond
    the chunks requested ahead) is taken from the output, not requested a second time; every chunk
    goes out in a batch exactly once and the bytes are right."""
    rng = random.Random(7)
    a, b = rng.randbytes(5 << 20), rng.randbytes(6 << 20)  # ~1400 chunks of 4-16 KiB between the two As
    (tmp_path / "src.img").write_bytes(a + b + a)
    p = pycatar("make", "--chunk-size=4K:8K:16K", f"--store={tmp_path / 'store'}", tmp_path / "x.caibx",
                tmp_path / "src.img")
    assert p.returncode == 0, p.stderr
    distinct, repeated = _distinct_and_repeated(tmp_path / "x.caibx")
    with PycatarServe(tmp_path / "log", f"--store={tmp_path / 'store'}", "-v") as srv:
        p = pycatar("extract", f"--store={srv.url}", tmp_path / "x.caibx", tmp_path / "out.img")
        assert p.returncode == 0, p.stderr
        log = srv.stderr()
    assert (tmp_path / "out.img").read_bytes() == a + b + a
    asked = [m[i:i + 64] for m in re.findall(r'"GET /\.chunks/([0-9a-f]+) ', log) for i in range(0, len(m), 64)]
    assert repeated > 300 and log.count(".cacnk") == 0
    assert len(asked) == len(set(asked)) == distinct + repeated


def test_the_batch_question_goes_out_with_the_index(published, tmp_path):
    """The question whether the server answers batched reads (SERVE-5) is asked when the store is
    opened, so it travels while the index downloads (a round trip less): against a server that
    answers in 0.3 s, it arrives before the index's answer has left."""
    arrived: dict[str, float] = {}
    answered: dict[str, float] = {}
    with StaticServer(published, batches=True, delay=0.3) as srv:
        handler = srv.httpd.RequestHandlerClass
        do_get = handler.do_GET

        def timed(self):
            arrived.setdefault(self.path, time.monotonic())
            do_get(self)
            answered.setdefault(self.path, time.monotonic())

        handler.do_GET = timed
        p = pycatar("extract", f"--store={srv.url}store/", srv.url + "blob.caibx", tmp_path / "b.img")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b.img").read_bytes() == (published / "src" / "blob.img").read_bytes()
    assert arrived["/store/.chunks/"] < answered["/blob.caibx"]


def test_batched_reads_from_a_server_that_fails_or_lies(published, tmp_path):
    """SERVE-5 from the client's side, against a server written from the spec (tests/httpservers.py):
    batches that fail are retried; a damaged chunk in a batch is refused by its digest, naming it;
    an answer whose framing lies is a one-line error; a chunk the server says it does not have is
    missing, named with its URL; nothing is left behind."""
    blob = (published / "src" / "blob.img").read_bytes()
    def batch(path, n):  # a batched read (not the probe)
        return ".chunks/" in path and not path.endswith(".chunks/")

    with StaticServer(published, batches=True, fault="500", fail=lambda path, n: batch(path, n) and n < 6) as srv:
        p = pycatar("extract", f"--store={srv.url}store", published / "blob.caibx", tmp_path / "a.img")
        assert p.returncode == 0 and (tmp_path / "a.img").read_bytes() == blob, p.stderr
        assert len(srv.gets()) == 0  # every chunk in batches (a repeated one with its first occurrence)
    with StaticServer(published, batches=True, fault="414", fail=batch) as srv:  # a proxy's limit on URLs
        p = pycatar("extract", f"--store={srv.url}store", published / "blob.caibx", tmp_path / "a2.img")
        assert p.returncode == 0 and (tmp_path / "a2.img").read_bytes() == blob, p.stderr
        batches = [path for m, path in srv.log if ".chunks/" in path and not path.endswith(".chunks/")]
        singles = srv.gets()  # refused batches: their chunks, and the rest, a chunk a request
        assert 1 <= len(batches) <= 24 and len(singles) == len(set(singles)) > 100, (len(batches), len(singles))
    with StaticServer(published, batches=True, fault="garbage", fail=batch) as srv:
        p = pycatar("extract", f"--store={srv.url}store", published / "blob.caibx", tmp_path / "b.img")
        err = one_line_error(p)
        assert "does not match its id" in err or "compress" in err or "malformed" in err, err
    with StaticServer(published, batches=True, fault="lie", fail=batch) as srv:
        p = pycatar("extract", f"--store={srv.url}store", "--http-retries=0", published / "blob.caibx",
                    tmp_path / "c.img")
        assert "malformed answer of batched chunks" in one_line_error(p)
    web = tmp_path / "web"
    subprocess.run(["cp", "-a", published, web], check=True)
    from pycatar.index import IndexReader

    with IndexReader(web / "blob.caibx") as r:
        gone = sorted(c.id.hex() for c in r.chunks())[5]
    os.unlink(web / "store" / gone[:4] / f"{gone}.cacnk")
    with StaticServer(web, batches=True) as srv:
        p = pycatar("extract", f"--store={srv.url}store", web / "blob.caibx", tmp_path / "d.img")
        err = one_line_error(p)
        assert "not found" in err and f"{srv.url}store/{gone[:4]}/{gone}.cacnk" in err, err
    assert not any((tmp_path / n).exists() for n in ("b.img", "c.img", "d.img")) and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- the receive path (pycatar._curl)


def test_bodies_arrive_while_another_thread_runs_python(tmp_path):
    """A transfer needs the GIL only once it is over: a 32 MiB body arrives whole in well under
    2.5 s while the main thread runs Python without a pause, giving the GIL up only when asked,
    every 50 ms.  (With pycurl, whose callback took the GIL for every 16 KiB piece, 32 MiB took 7 s
    here, and 192 MiB 40 s against 0.7 s now.)"""
    from pycatar.httpclient import HTTPClient, HTTPOptions

    web = tmp_path / "web"
    web.mkdir()
    blob = os.urandom(32 << 20)
    (web / "big").write_bytes(blob)
    client = HTTPClient(HTTPOptions(concurrency=1, retries=0))
    old = sys.getswitchinterval()
    try:
        with Nginx(web, tmp_path / "nginx") as ng:
            assert client.get(ng.url + "big", 1 << 26) == blob  # the connection and the thread are up
            sys.setswitchinterval(0.05)
            try:
                t = client.start(ng.url + "big", 1 << 26)
                t0 = time.monotonic()
                while t.done.locked() and time.monotonic() - t0 < 2.5:
                    pass
                took = time.monotonic() - t0
            finally:
                sys.setswitchinterval(old)
            assert took < 2.5
            assert client.get(ng.url + "big", 1 << 26, started=t) == blob
    finally:
        client.close()


def test_a_download_that_cannot_be_kept_fails_at_once(published):
    """A body that cannot be written (a full disk) is one error naming the reason, not retried."""
    from pycatar.httpclient import HTTPClient, HTTPOptions, RemoteError

    client = HTTPClient(HTTPOptions(retries=3))
    try:
        with StaticServer(published) as srv, open("/dev/full", "wb") as sink:
            with pytest.raises(RemoteError, match=r"blob\.caibx: cannot keep the answer: no space left on device"):
                client.download(srv.url + "blob.caibx", sink, 1 << 24)
            assert [m for m, _ in srv.log] == ["GET"]
    finally:
        client.close()


def test_without_libcurl_a_url_is_one_clear_error(published, tmp_path):
    """libcurl is loaded when a URL is first used: without it, local work goes on and a URL gets a
    one-line error saying what to install."""
    code = ("import sys; from pycatar import httpclient, cli; "
            "httpclient.LIBCURL_NAMES = ('libcurl-not-here.so.9',); sys.argv[0] = 'pycatar'; cli.console()")
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                                       timeout=60)
    p = run("extract", published / "blob.caibx", f"--store={published / 'store'}", tmp_path / "local.img")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "local.img").read_bytes() == (published / "src" / "blob.img").read_bytes()
    p = run("extract", "http://127.0.0.1:9/blob.caibx", tmp_path / "remote.img")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP(S) needs libcurl (Debian: apt-get install libcurl4)" in lines[0], p.stderr
    assert "libcurl-not-here.so.9" in lines[0]
    assert not (tmp_path / "remote.img").exists()


def test_a_failing_transfer_thread_fails_its_requests_instead_of_hanging(published):
    """Should the transfer thread fail (libcurl out of memory, a bug), the request that waits for it
    and every later one get an error naming the failure; none waits for ever."""
    from pycatar.httpclient import HTTPClient, HTTPOptions, RemoteError

    client = HTTPClient(HTTPOptions(retries=0))
    try:
        with StaticServer(published) as srv:
            assert client.get(srv.url + "blob.caibx", 1 << 24) == (published / "blob.caibx").read_bytes()

            def broken(c, t):
                raise RuntimeError("injected")

            def head() -> str:
                try:
                    client.exists(srv.url + "blob.caibx")
                except RemoteError as e:
                    return str(e)
                return "answered"

            client._configure = broken  # (a HEAD sets a handle up anew)
            for _ in range(2):  # the request under way when it failed, then one after
                said = []
                waiter = threading.Thread(target=lambda: said.append(head()), daemon=True)
                waiter.start()
                waiter.join(15)
                assert not waiter.is_alive(), "the request waits for ever"
                assert re.fullmatch(r"HEAD http://\S+: the HTTP client failed \(injected\)", said[0]), said
    finally:
        client.close()


def test_requests_made_before_a_server_was_found_silent_fail_with_it():
    """STORE-14: once a request has failed for good without an answer (timeouts), the requests to
    the same server made before then fail at once instead of each waiting out its own timeouts; a
    request made afterwards gets its own attempts (a mount outlives an outage)."""
    from pycatar.httpclient import HTTPClient, HTTPOptions, RemoteUnavailable

    answer = threading.Event()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)

    def serve(conn):  # silent until ``answer`` is set
        with conn:
            conn.recv(65536)
            if answer.wait(30):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")

    def accept():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{lst.getsockname()[1]}/"
    client = HTTPClient(HTTPOptions(concurrency=1, retries=1, timeout=1))
    try:
        early = [client.start(url + f"c{i}", 100) for i in range(8)]  # one at a time: 7 wait behind c0
        t0 = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="c0: timed out"):
            client.get(url + "c0", 100, started=early[0])
        for i, t in enumerate(early[1:], 1):
            with pytest.raises(RemoteUnavailable, match=f"c{i}: given up, .* did not answer another request "
                                                        r"\(timed out\)"):
                client.get(url + f"c{i}", 100, started=t)
        assert time.monotonic() - t0 < 8  # (each on its own: 2 attempts of 1-2 s, 16 s or more)
        answer.set()
        assert client.get(url + "later", 100) == b"hello"
    finally:
        client.close()
        lst.close()


def test_requests_waiting_to_retry_fail_with_a_server_found_unreachable(tmp_path):
    """A refused connection is retried after a backoff: the requests waiting for their next attempt
    when another one to the same server fails for good fail at once, and the client goes on
    retrying other requests (its queue of retries is the one the transfer thread reads)."""
    from pycatar.httpclient import HTTPClient, HTTPOptions, RemoteUnavailable

    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there: each attempt is refused at once
    client = HTTPClient(HTTPOptions(concurrency=1, retries=1, backoff=0.2))
    try:
        early = [client.start(f"http://127.0.0.1:{port}/c{i}", 100) for i in range(6)]
        errors = []
        for i, t in enumerate(early):
            with pytest.raises(RemoteUnavailable) as e:
                client.get(f"http://127.0.0.1:{port}/c{i}", 100, started=t)
            errors.append(str(e.value))
        # one request fails for good (the first whose backoff ends), the others waiting with it
        assert sum("cannot connect: connection refused (after 2 attempts)" in e for e in errors) == 1, errors
        assert sum("given up" in e for e in errors) == 5, errors
        time.sleep(0.6)  # past every backoff
        # and retries still happen: the first answer is a 500, the second the file
        (tmp_path / "f").write_bytes(b"still here")
        with StaticServer(tmp_path, fault="500", fail=lambda path, n: n == 0) as srv:
            got: list = []
            waiter = threading.Thread(target=lambda: got.append(client.get(srv.url + "f", 4096)), daemon=True)
            waiter.start()
            waiter.join(15)
            assert got == [b"still here"], "the retry never came"
            assert srv.log == [("GET", "/f"), ("GET", "/f")]
    finally:
        client.close()
