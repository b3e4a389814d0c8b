"""Object stores (spec/store.md, STORE-18..21, SERVE-4) against a real S3-protocol server on loopback
(moto's standalone server), with casync as the oracle of what lands there, and a logging proxy that
counts requests and injects throttling and server errors."""

from __future__ import annotations

import math
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from httpservers import PycatarServe
from test_mount import fuse, mounted  # noqa: F401  (the FUSE fixture, fails in CI when missing; the mount helper)
from s3servers import SECRET_KEY, S3Proxy, s3_env


def pycatar(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True,
                          env=s3_env(**(env or {})), timeout=timeout)


def ok(p):
    assert p.returncode == 0, p.stderr.decode()
    assert SECRET_KEY.encode() not in p.stderr + p.stdout
    return p


def one_line_error(p) -> str:
    assert p.returncode != 0
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert SECRET_KEY not in err
    return err


@pytest.fixture
def bucket(moto_server):
    name = "pycatar-" + secrets.token_hex(4)
    moto_server.client().create_bucket(Bucket=name)
    return name


def keys(client, bucket, prefix="store/") -> set[str]:
    out = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out |= {o["Key"] for o in page.get("Contents", ())}
    return out


def download_store(client, bucket, dest, prefix="store/"):
    for k in keys(client, bucket, prefix):
        path = os.path.join(dest, k[len(prefix):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(bucket, k, path)


def random_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def test_make_into_s3_is_what_casync_reads(moto_server, bucket, tmp_path, run_casync):
    """STORE-18: make into s3+http:// writes casync's store layout under the prefix and uploads the
    index; casync extracts from a copy of what landed, and its own make writes the same chunks."""
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(3 << 20, 1))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store?lookup=path", f"{url}/idx/blob.caibx", blob))
    client = moto_server.client()
    landed = keys(client, bucket)
    assert landed and all(k.startswith("store/") and k.endswith(".cacnk") and k[6:10] == k[11:15] for k in landed)
    run_casync("make", f"--store={tmp_path / 'C'}", tmp_path / "ref.caibx", blob)
    theirs = {f"store/{d}/{f}" for d in os.listdir(tmp_path / "C") for f in os.listdir(tmp_path / "C" / d)}
    assert landed == theirs
    download_store(client, bucket, tmp_path / "S")
    client.download_file(bucket, "idx/blob.caibx", str(tmp_path / "got.caibx"))
    assert (tmp_path / "got.caibx").read_bytes() == (tmp_path / "ref.caibx").read_bytes()
    run_casync("extract", f"--store={tmp_path / 'S'}", tmp_path / "got.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    # and back: extract, list-chunks and verify by s3 URL
    p = ok(pycatar("extract", f"--store={url}/store", f"{url}/idx/blob.caibx", tmp_path / "out2"))
    assert (tmp_path / "out2").read_bytes() == blob.read_bytes()
    ok(pycatar("verify", f"--store={url}/store", f"{url}/idx/blob.caibx"))
    (tmp_path / "empty").mkdir()
    ok(pycatar("extract", f"--store={tmp_path / 'empty'}", f"--extra-store={url}/store", f"{url}/idx/blob.caibx",
               tmp_path / "out3"))
    assert (tmp_path / "out3").read_bytes() == blob.read_bytes()


def test_archive_index_make_list_mtree_digest(moto_server, bucket, tmp_path, run_casync):
    """STORE-18: a directory tree into s3 (.caidx); list, mtree and digest read it from there, as casync
    reads the local original."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_bytes(random_bytes(200_000, 2))
    (tree / "sub" / "b").write_text("hello\n")
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store", f"{url}/t.caidx", tree))
    run_casync("make", f"--store={tmp_path / 'C'}", tmp_path / "t.caidx", tree)
    for verb in ("list", "mtree", "digest"):
        ours = ok(pycatar(verb, f"--store={url}/store", f"{url}/t.caidx")).stdout
        assert ours == run_casync(verb, f"--store={tmp_path / 'C'}", tmp_path / "t.caidx").stdout


def test_extract_with_seed_requests_only_missing_chunks(moto_server, bucket, tmp_path):
    """STORE-18, SEED: with a seed holding the old version, only the chunks the new version added are
    requested from the object store (counted at a proxy in front of it)."""
    v1 = random_bytes(4 << 20, 3)
    v2 = bytearray(v1)
    v2[1 << 20:(1 << 20) + 300_000] = random_bytes(300_000, 4)
    v2 += random_bytes(200_000, 5)
    (tmp_path / "v1").write_bytes(v1)
    (tmp_path / "v2").write_bytes(bytes(v2))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    client = moto_server.client()
    ok(pycatar("make", f"--store={url}/store", f"{url}/v1.caibx", tmp_path / "v1"))
    before = keys(client, bucket)
    ok(pycatar("make", f"--store={url}/store", f"{url}/v2.caibx", tmp_path / "v2"))
    added = {k.rsplit("/", 1)[1] for k in keys(client, bucket) - before}
    assert 0 < len(added) < len(before)
    with S3Proxy(moto_server.port) as proxy:
        purl = f"s3+{proxy.endpoint}/{bucket}"
        ok(pycatar("extract", f"--store={purl}/store", f"--seed={tmp_path / 'v1'}", f"{purl}/v2.caibx",
                   tmp_path / "out"))
        gets = proxy.chunk_gets()
    assert (tmp_path / "out").read_bytes() == bytes(v2)
    assert sorted(gets) == sorted(added)


def test_throttling_and_server_errors_are_retried(moto_server, bucket, tmp_path):
    """STORE-21: 503 SlowDown and 500 answers are retried with backoff; the extraction is correct."""
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(2 << 20, 6))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store", f"{url}/b.caibx", blob))

    def fault(n, method, path):
        return 503 if n % 3 == 0 else 500 if n % 7 == 0 else None

    with S3Proxy(moto_server.port, fault) as proxy:
        purl = f"s3+{proxy.endpoint}/{bucket}"
        ok(pycatar("extract", f"--store={purl}/store", f"{purl}/b.caibx", tmp_path / "out"))
        statuses = [s for _, _, s in proxy.requests]
        # and a write through the same faults
        (tmp_path / "blob2").write_bytes(random_bytes(1 << 20, 7))
        ok(pycatar("make", f"--store={purl}/store", f"{purl}/b2.caibx", tmp_path / "blob2"))
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    assert statuses.count(503) >= 3 and statuses.count(500) >= 1
    ok(pycatar("extract", f"--store={url}/store", f"{url}/b2.caibx", tmp_path / "out2"))
    assert (tmp_path / "out2").read_bytes() == (tmp_path / "blob2").read_bytes()

    with S3Proxy(moto_server.port, lambda n, m, p: 503 if p.endswith(".cacnk") else None) as proxy:
        purl = f"s3+{proxy.endpoint}/{bucket}"
        err = one_line_error(pycatar("extract", "--http-retries=1", f"--store={purl}/store", f"{purl}/b.caibx",
                                     tmp_path / "out3"))
    assert f"GET {purl}/store/" in err and ".cacnk: 503 SlowDown (after 2 attempts)" in err


def test_missing_and_corrupt_chunks_name_the_key(moto_server, bucket, tmp_path):
    """STORE-21, STORE-8: a chunk object that is missing or corrupt is an error naming its key;
    verify STORE finds the corrupt one and --repair deletes it."""
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(1 << 20, 8))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store", tmp_path / "b.caibx", blob))
    client = moto_server.client()
    victim, other = sorted(keys(client, bucket))[:2]
    client.put_object(Bucket=bucket, Key=victim, Body=b"\x28\xb5\x2f\xfd garbage")
    err = one_line_error(pycatar("extract", f"--store={url}/store", tmp_path / "b.caibx", tmp_path / "o"))
    assert f"{url}/{victim}" in err
    # verify STORE lists the objects and checks each; --repair deletes the bad one
    vid = victim.rsplit("/", 1)[1][:-len(".cacnk")]
    p = pycatar("verify", f"{url}/store")
    assert p.returncode == 1 and p.stdout.decode().startswith(f"{vid} ") and p.stdout.decode().count("\n") == 1
    p = pycatar("verify", "--repair", f"{url}/store")
    assert p.returncode == 1 and p.stdout.decode().startswith(f"{vid} removed: ")
    assert victim not in keys(client, bucket) and other in keys(client, bucket)
    ok(pycatar("verify", f"{url}/store"))
    err = one_line_error(pycatar("extract", f"--store={url}/store", tmp_path / "b.caibx", tmp_path / "o"))
    assert f"{url}/{victim}" in err and "not found" in err
    err = one_line_error(pycatar("verify", f"--store={url}/store", tmp_path / "b.caibx"))
    p = pycatar("verify", f"--store={url}/store", tmp_path / "b.caibx")
    assert victim.rsplit("/", 1)[1][:-6] in p.stdout.decode()


def test_bad_urls_and_remote_cache_are_refused(moto_server, bucket, tmp_path):
    """STORE-18: malformed s3 URLs, credentials in them and an http(s) chunk cache: one-line errors."""
    (tmp_path / "x").write_bytes(b"x" * 1000)
    ep = moto_server.endpoint.split("//")[1]
    for store, words in ((f"s3+http://{ep}/", "names no bucket"),
                         (f"s3+http://user:{SECRET_KEY}@{ep}/{bucket}", "not in the URL"),
                         (f"s3+http://{ep}/{bucket}?color=red", "unknown parameter color="),
                         (f"s3+http://{ep}/{bucket}?lookup=sideways", "lookup=")):
        err = one_line_error(pycatar("make", f"--store={store}", tmp_path / "x.caibx", tmp_path / "x"))
        assert words in err
    ok(pycatar("make", f"--store={tmp_path / 'S'}", tmp_path / "x.caibx", tmp_path / "x"))
    err = one_line_error(pycatar("extract", "--chunk-cache=http://127.0.0.1:9/c", f"--store={tmp_path / 'S'}",
                                 tmp_path / "x.caibx", tmp_path / "o"))
    assert "chunk cache must be a local directory or an object store" in err
    err = one_line_error(pycatar("make", f"--store=s3+http://{ep}/no-such-bucket-here", tmp_path / "x.caibx",
                                 tmp_path / "x"))
    assert "no such bucket" in err and "no-such-bucket-here" in err


def test_gc_with_grace_spares_a_concurrent_writers_chunks(moto_server, bucket, tmp_path, run_casync):
    """STORE-19: gc removes unreferenced chunks older than the grace period, in batched deletes, and
    leaves alone the chunks a concurrent make has just written for an index not yet published."""
    url = f"s3+{moto_server.endpoint}/{bucket}"
    client = moto_server.client()
    for name, seed in (("a", 10), ("stray", 11)):
        (tmp_path / name).write_bytes(random_bytes(600_000, seed))
        ok(pycatar("make", f"--store={url}/store", tmp_path / f"{name}.caibx", tmp_path / name))
        if name == "a":
            a_keys = keys(client, bucket)
    stray_keys = keys(client, bucket) - a_keys
    time.sleep(6.5)  # the store's times have a resolution of a second
    (tmp_path / "young").write_bytes(random_bytes(500_000, 12))
    t_young = time.time()
    ok(pycatar("make", f"--store={url}/store", tmp_path / "young.caibx", tmp_path / "young"))

    def grace(unit: str = "") -> str:
        """A grace period just longer than the young chunks' age, however slow the machine: the stray
        ones, 6.5 s older, are beyond it."""
        return f"--grace={math.ceil(time.time() - t_young) + 2}{unit}"

    young_keys = keys(client, bucket) - a_keys - stray_keys
    assert stray_keys and young_keys
    with S3Proxy(moto_server.port) as proxy:
        purl = f"s3+{proxy.endpoint}/{bucket}"
        p = ok(pycatar("gc", "--dry-run", grace("s"), f"--store={purl}/store", tmp_path / "a.caibx"))
        assert p.stdout.decode() == f"Would remove {len(stray_keys)} chunks, " \
                                    f"{len(a_keys) + len(young_keys)} chunks remaining.\n"
        assert keys(client, bucket) == a_keys | stray_keys | young_keys
        p = ok(pycatar("-v", "gc", grace(), f"--store={purl}/store", tmp_path / "a.caibx"))
        deletes = proxy.count("POST", "delete")
    lines = p.stdout.decode().splitlines()
    assert sorted(lines[1:-1]) == sorted(f"Removing chunk {k.rsplit('/', 1)[1]}." for k in stray_keys)
    assert lines[-1] == f"Removed {len(stray_keys)} chunks, 0 directories, {len(a_keys) + len(young_keys)} chunks remaining."
    assert keys(client, bucket) == a_keys | young_keys
    assert deletes == 1  # one DeleteObjects request for all of them
    ok(pycatar("extract", f"--store={url}/store", tmp_path / "young.caibx", tmp_path / "o"))
    assert (tmp_path / "o").read_bytes() == (tmp_path / "young").read_bytes()
    # the default grace (a day) removes nothing this young
    p = ok(pycatar("gc", "--dry-run", f"--store={url}/store", tmp_path / "a.caibx"))
    assert p.stdout.decode().startswith("Would remove 0 chunks,")
    # with --grace=0 gc does what casync gc does to a copy of the store
    download_store(client, bucket, tmp_path / "C")
    want = run_casync("gc", "--dry-run", f"--store={tmp_path / 'C'}", tmp_path / "a.caibx").stdout
    assert ok(pycatar("gc", "--dry-run", "--grace=0", f"--store={url}/store", tmp_path / "a.caibx")).stdout == want
    ok(pycatar("gc", "--grace=0", f"--store={url}/store", tmp_path / "a.caibx"))
    assert keys(client, bucket) == a_keys
    run_casync("gc", f"--store={tmp_path / 'C'}", tmp_path / "a.caibx")
    assert {f"store/{d}/{f}" for d in os.listdir(tmp_path / "C") for f in os.listdir(tmp_path / "C" / d)} == a_keys


def test_a_writer_refreshes_an_old_chunk_it_reuses(moto_server, bucket, tmp_path, monkeypatch):
    """STORE-20: put of a chunk already stored but older than the refresh age makes it young again."""
    from pycatar.s3store import S3Store
    from pycatar import store as store_mod
    from pycatar.digest import digest

    for k, v in s3_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    data = random_bytes(5000, 13)
    cid = digest("sha512-256", data)
    s = S3Store(f"s3+{moto_server.endpoint}/{bucket}/store")
    assert s.put(cid, data) > 0
    client = moto_server.client()
    key = s.key(cid)
    first = client.head_object(Bucket=bucket, Key=key)["LastModified"]
    time.sleep(1.2)
    assert s.put(cid, data) == 0
    assert client.head_object(Bucket=bucket, Key=key)["LastModified"] == first  # young: left as it is
    monkeypatch.setattr(store_mod, "REFRESH_AGE", 0.5)
    assert s.put(cid, data) == 0
    assert client.head_object(Bucket=bucket, Key=key)["LastModified"] > first
    assert s.get(cid) == data


def test_serve_backed_by_s3_feeds_casync(moto_server, bucket, tmp_path, casync, monkeypatch):
    """SERVE-4: pycatar serve --store=s3+http://… serves the object store's chunks to casync, and with
    --writable takes uploads into it."""
    for k, v in s3_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(3 << 20, 14))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store", tmp_path / "b.caibx", blob))
    with PycatarServe(tmp_path / "serve.log", f"--store={url}/store", "--writable") as srv:
        subprocess.run([casync, "extract", f"--store={srv.url}", tmp_path / "b.caibx", tmp_path / "out"],
                       check=True, capture_output=True)
        assert (tmp_path / "out").read_bytes() == blob.read_bytes()
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(f"{srv.url}0000/{'0' * 64}.cacnk", timeout=10)
        assert ei.value.code == 404
        (tmp_path / "blob2").write_bytes(random_bytes(1 << 20, 15))
        before = keys(moto_server.client(), bucket)
        ok(pycatar("make", f"--store={srv.url}", tmp_path / "b2.caibx", tmp_path / "blob2"))
        assert keys(moto_server.client(), bucket) > before
    ok(pycatar("extract", f"--store={url}/store", tmp_path / "b2.caibx", tmp_path / "out2"))
    assert (tmp_path / "out2").read_bytes() == (tmp_path / "blob2").read_bytes()
    err = one_line_error(pycatar("serve", "--listen=127.0.0.1:0", f"--store=s3+{moto_server.endpoint}/no-such-bucket-x"))
    assert "no such bucket" in err and "no-such-bucket-x" in err
    assert "not an http(s) URL" in one_line_error(pycatar("serve", "--store=http://127.0.0.1:9/store"))


def test_mount_from_an_object_store(fuse, moto_server, bucket, tmp_path, run_casync, monkeypatch):
    """STORE-18: mount takes an index and its store by s3+ URL; the mounted tree is the source's."""
    for k, v in s3_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "big").write_bytes(random_bytes(700_000, 20))
    (tree / "small").write_text("small\n")
    url = f"s3+{moto_server.endpoint}/{bucket}"
    ok(pycatar("make", f"--store={url}/store", f"{url}/t.caidx", tree))
    with mounted(tmp_path, f"--store={url}/store", f"{url}/t.caidx") as (mnt, _log):
        assert run_casync("mtree", mnt).stdout == run_casync("mtree", tree).stdout
        assert (mnt / "d" / "big").read_bytes() == (tree / "d" / "big").read_bytes()


def test_object_store_as_chunk_cache(moto_server, bucket, tmp_path):
    """STORE-17: a site's shared chunk cache in an object store: filled by the first extraction from
    an HTTP server, it serves the second one with the server gone; a damaged cached copy is replaced."""
    from httpservers import StaticServer

    data = random_bytes(3 << 20, 7)
    web = tmp_path / "web"
    web.mkdir()
    (tmp_path / "blob").write_bytes(data)
    ok(pycatar("make", f"--store={web / 'store'}", web / "b.caibx", tmp_path / "blob"))
    ep = moto_server.endpoint.split("//")[1]
    cache = f"s3+http://{ep}/{bucket}/cache"
    client = moto_server.client()
    with StaticServer(web) as srv:
        ok(pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", web / "b.caibx", tmp_path / "o1"))
        fetched = len(srv.gets())
    cached = keys(client, bucket, "cache/")
    assert fetched > 0 and len(cached) == fetched
    ok(pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", "--http-retries=0",
               web / "b.caibx", tmp_path / "o2"))
    assert (tmp_path / "o1").read_bytes() == (tmp_path / "o2").read_bytes() == data
    victim = sorted(cached)[0]
    client.put_object(Bucket=bucket, Key=victim, Body=b"garbage")
    with StaticServer(web) as srv:
        ok(pycatar("extract", f"--chunk-cache={cache}", f"--store={srv.url}store", web / "b.caibx", tmp_path / "o3"))
        assert [g.rsplit("/", 1)[1] for g in srv.gets()] == [victim.rsplit("/", 1)[1]]
    assert (tmp_path / "o3").read_bytes() == data
    body = client.get_object(Bucket=bucket, Key=victim)["Body"].read()
    assert body == (web / "store" / victim[len("cache/"):]).read_bytes()
