"""The everyday tools: verify, info, cat, chunk, list-chunks — on stores and indexes made by casync."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from httpservers import StaticServer



def pycatar(*args, input=None, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, env=e,
                          input=input, timeout=300)


def chunk_files(store) -> dict[str, str]:
    """{id: path} of the chunk files of a store."""
    out = {}
    for sub in os.listdir(store):
        for name in os.listdir(os.path.join(store, sub)):
            out[name.split(".")[0]] = os.path.join(store, sub, name)
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory, casync):
    d = tmp_path_factory.mktemp("tools")
    rnd = random.Random(7)
    blob = d / "blob.img"
    part = rnd.randbytes(1 << 20)
    blob.write_bytes(rnd.randbytes(5 << 20) + part + bytes(600_000) + rnd.randbytes(2 << 20) + part)
    subprocess.run([casync, "make", "--store", d / "store", d / "blob.caibx", blob], check=True, capture_output=True)
    return d


def test_verify_store_finds_and_repairs_bad_chunks(made, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-a", made / "store", store], check=True)
    files = chunk_files(store)
    ids = sorted(files)
    flipped, garbage = ids[2], ids[5]
    data = bytearray(open(files[flipped], "rb").read())
    data[len(data) // 2] ^= 0x10
    os.chmod(files[flipped], 0o644)
    open(files[flipped], "wb").write(data)
    os.chmod(files[garbage], 0o644)
    open(files[garbage], "wb").write(b"not a chunk at all")
    p = pycatar("verify", store)
    assert p.returncode == 1
    bad = sorted(line.split()[0] for line in p.stdout.decode().splitlines())
    assert bad == sorted([flipped, garbage])
    assert "2 bad" in p.stderr.decode()
    p = pycatar("verify", "--json", store)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and res["checked"] == len(ids) and not res["ok"]
    assert sorted(b["id"] for b in res["bad"]) == sorted([flipped, garbage]) and res["missing"] == []
    p = pycatar("verify", "--repair", store)
    assert p.returncode == 1 and sorted(chunk_files(store)) == sorted(set(ids) - {flipped, garbage})
    p = pycatar("verify", store)
    assert p.returncode == 0 and p.stdout == b""
    assert "does not exist" in pycatar("verify", tmp_path / "nowhere").stderr.decode()


def test_verify_store_reports_an_unreadable_chunk_file_and_checks_the_rest(made, tmp_path):
    # a chunk file the store refuses to read (larger than any chunk can be stored in) is that chunk's
    # problem: reported (and removed with --repair) while the other chunks of its batch are checked
    from pycatar.compression import DECOMPRESSED_LIMIT

    store = tmp_path / "store"
    subprocess.run(["cp", "-a", made / "store", store], check=True)
    ids = sorted(chunk_files(store))
    huge = ids[0][:4] + "b" * 60
    with open(store / huge[:4] / f"{huge}.cacnk", "wb") as f:
        f.truncate(DECOMPRESSED_LIMIT + (8 << 20))
    p = pycatar("verify", "--json", store)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and res["checked"] == len(ids) + 1, p.stderr
    assert [b["id"] for b in res["bad"]] == [huge] and "too large" in res["bad"][0]["error"]
    p = pycatar("verify", "--repair", store)
    assert p.returncode == 1 and sorted(chunk_files(store)) == ids


def test_verify_index_reports_missing_and_corrupt(made, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-a", made / "store", store], check=True)
    files = chunk_files(store)
    ids = sorted(files)
    os.unlink(files[ids[0]])
    os.chmod(files[ids[1]], 0o644)
    open(files[ids[1]], "wb").write(b"garbage")
    p = pycatar("verify", "--json", f"--store={store}", made / "blob.caibx")
    res = json.loads(p.stdout)
    assert p.returncode == 1
    assert res["missing"] == [ids[0]] and [b["id"] for b in res["bad"]] == [ids[1]]
    p = pycatar("verify", f"--store={made / 'store'}", made / "blob.caibx")
    assert p.returncode == 0 and p.stdout == b""


def test_cat_ranges_equal_dd(made):
    size = os.path.getsize(made / "blob.img")
    for offset, length in ((0, None), (0, 1), (65_000, 300_000), (size - 10, 100), (size, 5), (5 << 20, 1 << 20)):
        args = [str(offset)] + ([str(length)] if length is not None else [])
        p = pycatar("cat", f"--store={made / 'store'}", made / "blob.caibx", *args)
        assert p.returncode == 0, p.stderr
        dd = ["dd", f"if={made / 'blob.img'}", "iflag=skip_bytes,count_bytes", f"skip={offset}", "status=none"]
        if length is not None:
            dd.append(f"count={length}")
        assert p.stdout == subprocess.run(dd, capture_output=True, check=True).stdout
    assert pycatar("cat", f"--store={made / 'store'}", made / "blob.caibx", str(size + 1)).returncode != 0


def test_chunk_and_list_chunks_agree_with_casync(made):
    p = pycatar("chunk", made / "blob.img")
    assert p.returncode == 0, p.stderr
    rows = [line.split("\t") for line in p.stdout.decode().splitlines()]
    starts = [int(r[0]) for r in rows]
    sizes = [int(r[1]) for r in rows]
    ids = [r[2] for r in rows]
    assert starts[0] == 0 and all(a + n == b for a, n, b in zip(starts, sizes, starts[1:]))
    assert starts[-1] + sizes[-1] == os.path.getsize(made / "blob.img")
    assert set(ids) == set(chunk_files(made / "store"))  # the chunks casync stored
    assert len(ids) > len(set(ids))  # the repeated part
    p = pycatar("list-chunks", made / "blob.caibx")
    assert p.returncode == 0 and p.stdout.decode().split() == ids
    p = pycatar("list-chunks", "--json", made / "blob.caibx")
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [(r["id"], r["start"], r["size"]) for r in rows] == list(zip(ids, starts, sizes))


def test_info_statistics_and_the_update_estimate(tmp_path, casync):
    rnd = random.Random(9)
    old = bytearray(rnd.randbytes(6 << 20))
    new = bytearray(old)
    new[2 << 20:(2 << 20) + 3000] = rnd.randbytes(3000)
    new += bytes(700_000) + rnd.randbytes(300_000)
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    web = tmp_path / "web"
    web.mkdir()
    subprocess.run([casync, "make", "--store", web / "store", web / "new.caibx", tmp_path / "new.img"],
                   check=True, capture_output=True)
    p = pycatar("info", "--json", web / "new.caibx")
    info = json.loads(p.stdout)
    assert p.returncode == 0 and info["size"] == len(new) and info["kind"] == "blob-index"
    assert info["chunker"] == [16384, 65536, 262144] and info["digest"] == "sha512-256"
    assert info["chunk-size-min"] <= info["chunk-size-avg"] <= info["chunk-size-max"] <= 262144
    assert info["unique-chunks"] == len(chunk_files(web / "store")) and info["sources"] == []
    with StaticServer(web) as srv:
        p = pycatar("info", "--json", f"--seed={tmp_path / 'old.img'}", f"--store={srv.url}store",
                    web / "new.caibx")
        assert p.returncode == 0, p.stderr
        est = {s["source"].split(" ")[0]: s for s in json.loads(p.stdout)["sources"]}
        before = len(srv.gets())
        p = pycatar("extract", f"--seed={tmp_path / 'old.img'}", "--seed-output=no", f"--store={srv.url}store",
                    web / "new.caibx", tmp_path / "out.img")
        assert p.returncode == 0, p.stderr
        fetched = srv.gets()[before:]
    assert (tmp_path / "out.img").read_bytes() == bytes(new)
    assert est["store"]["chunks"] == len(fetched) > 0
    assert est["seed"]["chunks"] > 0 and est["nowhere"]["chunks"] == 0
    assert est["null"]["chunks"] >= 1  # the run of zeros
    text = pycatar("info", f"--seed={tmp_path / 'old.img'}", f"--store={web / 'store'}", web / "new.caibx")
    assert text.returncode == 0 and b"From seed " in text.stdout and b"compressed" in text.stdout


def test_blob_extraction_is_as_sparse_as_casyncs(tmp_path, casync):
    """Every all-zero 4 KiB block becomes a hole, also inside chunks that hold data (casync punches
    every zero run; pycatar used to punch only whole zero chunks)."""
    rnd = random.Random(3)
    img = tmp_path / "sparse.img"
    with open(img, "wb") as f:
        f.truncate(48 << 20)
        for _ in range(40):
            f.seek(rnd.randrange(0, 48 << 20))
            f.write(rnd.randbytes(rnd.randrange(1, 9000)))
    subprocess.run([casync, "make", "--store", tmp_path / "s", tmp_path / "i.caibx", img], check=True,
                   capture_output=True)
    subprocess.run([casync, "extract", "--store", tmp_path / "s", tmp_path / "i.caibx", tmp_path / "c.img"],
                   check=True, capture_output=True)
    p = pycatar("extract", "--json", f"--store={tmp_path / 's'}", tmp_path / "i.caibx", tmp_path / "p.img")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "p.img").read_bytes() == img.read_bytes()
    ours, theirs = os.stat(tmp_path / "p.img").st_blocks, os.stat(tmp_path / "c.img").st_blocks
    assert ours <= theirs and ours * 512 < 1 << 20, (ours, theirs)
    assert json.loads(p.stdout)["hole_bytes"] > 47 << 20


def _under_pty(*args) -> tuple[int, bytes]:
    """Run pycatar with standard error on a pseudo-terminal; (exit status, what it drew there)."""
    import pty

    master, slave = pty.openpty()
    e = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-m", "pycatar", *map(str, args)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave, env=e)
    os.close(slave)
    drawn = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        drawn += data
    os.close(master)
    return p.wait(60), drawn


def test_progress_on_a_terminal_only(made, tmp_path):
    cases = [("extract", ["extract", f"--store={made / 'store'}", made / "blob.caibx", tmp_path / "{n}.img"]),
             ("make", ["make", f"--store={tmp_path / 'S{n}'}", tmp_path / "{n}.caibx", made / "blob.img"]),
             ("verify", ["verify", made / "store"]),
             ("gc", ["gc", "--dry-run", f"--store={made / 'store'}", made / "blob.caibx"])]
    for n, (name, args) in enumerate(cases):
        args = [str(a).replace("{n}", str(n)) for a in args]
        rc, drawn = _under_pty(*args)
        assert rc == 0, drawn
        assert f"\r{name}:".encode() in drawn and (b"B/s" in drawn or b"chunks/s" in drawn), drawn
        if name in ("extract", "make"):
            assert b"/8.6M" in drawn or b"/8.58M" in drawn or b"M [" in drawn, drawn  # bytes of the total
        rc, drawn = _under_pty("--no-progress", *[a.replace(f"{n}.", f"{n}b.").replace(f"S{n}", f"S{n}b")
                                                  for a in args])
        assert rc == 0 and drawn == b"", drawn
        args = [a.replace(f"{n}.", f"{n}c.").replace(f"S{n}", f"S{n}c") for a in args]
        p = pycatar(*args)  # standard error is a pipe: nothing drawn
        assert p.returncode == 0 and p.stderr == b"", p.stderr


def test_make_and_gc_json(made, tmp_path, casync):
    p = pycatar("make", "--json", f"--store={tmp_path / 'S'}", tmp_path / "b.caibx", made / "blob.img")
    res = json.loads(p.stdout)
    want = subprocess.run([casync, "digest", made / "blob.img"], capture_output=True, check=True).stdout
    assert res["digest"] == want.decode().strip() and res["size"] == os.path.getsize(made / "blob.img")
    assert res["new-chunks"] == len(chunk_files(tmp_path / "S")) == len(chunk_files(made / "store"))
    assert res["chunks"] == res["new-chunks"] + res["reused-chunks"] and res["compressed-bytes"] > 0
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(os.urandom(200_000))
    p = pycatar("make", "--json", f"--store={tmp_path / 'S'}", tmp_path / "t.caidx", tree)
    res = json.loads(p.stdout)
    want = subprocess.run([casync, "make", f"--store={tmp_path / 'C'}", tmp_path / "c.caidx", tree],
                          capture_output=True, check=True).stdout
    assert res["digest"] == want.decode().strip() and res["new-chunks"] >= 1
    p = pycatar("gc", "--json", "--dry-run", "--grace=0", f"--store={tmp_path / 'S'}", tmp_path / "b.caibx")
    res = json.loads(p.stdout)
    ref = subprocess.run([casync, "gc", "-v", "--dry-run", f"--store={tmp_path / 'S'}", tmp_path / "b.caibx"],
                         capture_output=True, check=True).stdout.decode()
    would = sorted(line.split()[3].rstrip(".") for line in ref.splitlines() if line.startswith("Would remove chunk"))
    assert sorted(res["removed"]) == would and len(would) >= 1 and res["dry-run"] is True
    assert res["remaining"] == len(chunk_files(tmp_path / "S")) - len(would)


def test_seed_index_without_its_data_names_the_file(made, tmp_path):
    shutil.copy(made / "blob.caibx", tmp_path / "old.caibx")
    p = pycatar("extract", f"--seed={tmp_path / 'old.caibx'}", f"--store={made / 'store'}", made / "blob.caibx",
                tmp_path / "out.img")
    assert p.returncode == 0
    assert f"its data, the file {tmp_path / 'old'}, is missing" in p.stderr.decode()


def test_verify_checks_chunks_in_batches(made, monkeypatch):
    """verify_store decodes and hashes the chunks a batch per call, verify_index fetches them a batch
    per call (several chunks to one digest call, pycatar._sha); the counts are those of the store."""
    from pycatar import store as _store, verify
    from pycatar.index import IndexReader

    sizes = []
    real = verify.decode_chunks
    monkeypatch.setattr(verify, "decode_chunks", lambda items, digest: sizes.append(len(items)) or real(items, digest))
    res = verify.verify_store(str(made / "store"))
    assert res.ok and res.checked == len(chunk_files(made / "store")) == sum(sizes)
    assert max(sizes) > 1, sizes
    asked = []
    real_many = _store.StoreSet.get_many
    monkeypatch.setattr(_store.StoreSet, "get_many", lambda self, refs: asked.append(len(refs)) or real_many(self, refs))
    with IndexReader(str(made / "blob.caibx")) as r:
        res = verify.verify_index(r, _store.StoreSet([str(made / "store")]))
    assert res.ok and res.checked == sum(asked) and max(asked) > 1, asked
