"""Signed indexes (spec/store.md, SIG-1..SIG-5): OpenSSH's SSHSIG format, checked against OpenSSH's
own ssh-keygen both ways; refusals happen before any chunk is requested (counted at a proxy in
front of a real S3-protocol server)."""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys

import pytest

from s3servers import S3Proxy, s3_env

KEY_TYPES = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa", "-b", "256"],
             "ecdsa384": ["-t", "ecdsa", "-b", "384"], "rsa": ["-t", "rsa", "-b", "2048"]}


def pycatar(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True,
                          env=s3_env(), timeout=timeout)


def ok(p):
    assert p.returncode == 0, p.stderr.decode()
    return p


def one_line_error(p) -> str:
    assert p.returncode != 0
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="session")
def keys(ssh_keygen, tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, args in {**KEY_TYPES, "other": ["-t", "ed25519"]}.items():
        subprocess.run([ssh_keygen, "-q", *args, "-N", "", "-C", f"{name}@test", "-f", d / name], check=True)
        out[name] = d / name
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "secret phrase", "-f", d / "locked"], check=True)
    out["locked"] = d / "locked"
    return out


@pytest.fixture
def index(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(random.Random(1).randbytes(1 << 20))
    ok(pycatar("make", f"--store={tmp_path / 'S'}", tmp_path / "b.caibx", blob))
    return tmp_path / "b.caibx"


def allowed_signers(path, pubkey, options=""):
    key = open(f"{pubkey}.pub").read().split()
    path.write_text(f"someone@test {options + ' ' if options else ''}{key[0]} {key[1]}\n")
    return path


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_ssh_keygen_signature_verifies_in_pycatar(kind, keys, index, ssh_keygen, tmp_path):
    """SIG-1, SIG-4: a signature by ssh-keygen -Y sign -n pycatar is accepted, by key or allowed signers."""
    subprocess.run([ssh_keygen, "-q", "-Y", "sign", "-f", keys[kind], "-n", "pycatar", index], check=True,
                   capture_output=True)
    assert (tmp_path / "b.caibx.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----\n")
    ok(pycatar("extract", f"--verify-key={keys[kind]}.pub", f"--store={tmp_path / 'S'}", index, tmp_path / "o"))
    assert (tmp_path / "o").read_bytes() == (tmp_path / "blob").read_bytes()
    signers = allowed_signers(tmp_path / "allowed", keys[kind], 'namespaces="pycatar,other"')
    ok(pycatar("digest", f"--allowed-signers={signers}", f"--store={tmp_path / 'S'}", index))
    # a line for another namespace does not let the key sign for pycatar
    signers = allowed_signers(tmp_path / "allowed2", keys[kind], 'namespaces="file"')
    err = one_line_error(pycatar("digest", f"--allowed-signers={signers}", f"--store={tmp_path / 'S'}", index))
    assert "no key may sign in the pycatar namespace" in err


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_pycatar_signature_verifies_with_ssh_keygen(kind, keys, index, ssh_keygen, tmp_path):
    """SIG-1, SIG-2: pycatar sign writes INDEX.sig, which ssh-keygen -Y verify accepts for namespace pycatar
    (and refuses for another namespace)."""
    ok(pycatar("sign", f"--key={keys[kind]}", index))
    signers = allowed_signers(tmp_path / "allowed", keys[kind])
    with open(index, "rb") as f:
        p = subprocess.run([ssh_keygen, "-Y", "verify", "-f", signers, "-I", "someone@test", "-n", "pycatar",
                            "-s", f"{index}.sig"], stdin=f, capture_output=True)
    assert p.returncode == 0 and b'Good "pycatar" signature for someone@test' in p.stdout, p.stderr
    with open(index, "rb") as f:
        p = subprocess.run([ssh_keygen, "-Y", "verify", "-f", signers, "-I", "someone@test", "-n", "file",
                            "-s", f"{index}.sig"], stdin=f, capture_output=True)
    assert p.returncode != 0
    ok(pycatar("list-chunks", f"--verify-key={keys[kind]}.pub", index))


def test_sign_refusals(keys, index, tmp_path):
    """SIG-1: sign needs a key, a local file, and a key without passphrase (one-line errors)."""
    assert "--key=" in one_line_error(pycatar("sign", index))
    assert "passphrase" in one_line_error(pycatar("sign", f"--key={keys['locked']}", index))
    assert "sign signs a local file" in one_line_error(pycatar("sign", f"--key={keys['ed25519']}",
                                                               "http://127.0.0.1:9/b.caibx"))
    assert "not an OpenSSH private key" in one_line_error(pycatar("sign", f"--key={keys['ed25519']}.pub", index))
    assert not os.path.exists(f"{index}.sig")


@pytest.fixture(scope="module")
def published(moto_server, keys, tmp_path_factory):
    """A tree's .caidx, a blob's .caibx, their signatures and chunks in an object store; a proxy in front."""
    tmp = tmp_path_factory.mktemp("published")
    bucket = "sig-" + secrets.token_hex(4)
    client = moto_server.client()
    client.create_bucket(Bucket=bucket)
    tree = tmp / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(random.Random(2).randbytes(400_000))
    (tmp / "blob").write_bytes(random.Random(3).randbytes(1 << 20))
    (tmp / "blob2").write_bytes(random.Random(4).randbytes(1 << 20))
    url = f"s3+{moto_server.endpoint}/{bucket}"
    for name, src in (("t.caidx", tree), ("b.caibx", tmp / "blob"), ("b2.caibx", tmp / "blob2")):
        ok(pycatar("make", f"--store={url}/store", tmp / name, src))
        ok(pycatar("sign", f"--key={keys['ed25519']}", tmp / name))
    with S3Proxy(moto_server.port) as proxy:
        yield client, bucket, f"s3+{proxy.endpoint}/{bucket}", proxy, tmp


@pytest.fixture
def s3_published(published, tmp_path):
    """The published files as made (restored for every test), copies in ``tmp_path``, the request log empty."""
    client, bucket, url, proxy, tmp = published
    for name in ("t.caidx", "b.caibx", "b2.caibx"):
        for f in (name, name + ".sig"):
            client.upload_file(str(tmp / f), bucket, f)
            (tmp_path / f).write_bytes((tmp / f).read_bytes())
    proxy.reset()
    return client, bucket, url, proxy


VERB_ARGS = {"extract": lambda tmp: ["b.caibx", tmp / "out"], "digest": lambda tmp: ["b.caibx"],
             "verify": lambda tmp: ["b.caibx"], "info": lambda tmp: ["b.caibx"],
             "cat": lambda tmp: ["b.caibx"], "list": lambda tmp: ["t.caidx"], "mtree": lambda tmp: ["t.caidx"],
             "stat": lambda tmp: ["t.caidx"]}


def _run(verb, url, tmp_path, key, *extra):
    first, *rest = VERB_ARGS[verb](tmp_path)
    args = [verb, f"--verify-key={key}.pub", f"--store={url}/store", *extra, f"{url}/{first}", *rest]
    if verb == "cat":
        with open(tmp_path / "cat.out", "wb") as out:
            return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], stdout=out,
                                  stderr=subprocess.PIPE, env=s3_env(), timeout=120)
    return pycatar(*args)


@pytest.mark.parametrize("verb", sorted(VERB_ARGS))
def test_good_signature_then_chunks(verb, s3_published, keys, tmp_path):
    """SIG-4: with a good signature beside the index in the object store, the verb runs and fetches chunks."""
    client, bucket, url, proxy = s3_published
    ok(_run(verb, url, tmp_path, keys["ed25519"]))
    if verb == "info":  # asks the store which chunks it has, fetches none
        assert any("/store" in p for _, p, _ in proxy.requests)
    else:
        assert proxy.chunk_gets()
    assert proxy.count("GET", ".caidx.sig") + proxy.count("GET", ".caibx.sig") == 1


@pytest.mark.parametrize("verb", sorted(VERB_ARGS))
def test_flipped_bit_refused_before_any_chunk(verb, s3_published, keys, tmp_path):
    """SIG-4, SIG-5: an index with one bit flipped (its signature kept) is refused before any chunk request."""
    client, bucket, url, proxy = s3_published
    for name in ("b.caibx", "t.caidx"):
        data = bytearray((tmp_path / name).read_bytes())
        data[len(data) - 40] ^= 0x01  # inside the last chunk id
        client.put_object(Bucket=bucket, Key=name, Body=bytes(data))
    proxy.reset()
    err = one_line_error(_run(verb, url, tmp_path, keys["ed25519"]))
    assert "does not match the file" in err
    assert proxy.chunk_gets() == []


def test_other_index_other_key_missing_malformed_refused(s3_published, keys, tmp_path, ssh_keygen):
    """SIG-3, SIG-4, SIG-5: a signature of another index, by another key, for another namespace, missing or
    malformed: each refused with one line, before any chunk is requested."""
    client, bucket, url, proxy = s3_published
    cases = []
    client.upload_file(str(tmp_path / "b2.caibx.sig"), bucket, "b.caibx.sig")
    cases.append(("ed25519", "does not match the file"))
    cases.append(("other", "made by another key (ssh-ed25519 SHA256:"))
    for body, words in ((b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", "truncated"),
                        (b"not a signature\n", "malformed"), (None, "missing")):
        cases.append((body, words))
    for case, words in cases:
        if isinstance(case, bytes):
            client.put_object(Bucket=bucket, Key="b.caibx.sig", Body=case)
            key = "ed25519"
        elif case is None:
            client.delete_object(Bucket=bucket, Key="b.caibx.sig")
            key = "ed25519"
        else:
            key = case
        proxy.reset()
        err = one_line_error(_run("extract", url, tmp_path, keys[key]))
        assert words in err, (case, err)
        assert proxy.chunk_gets() == []
    # a signature for another namespace
    os.unlink(tmp_path / "b.caibx.sig")
    subprocess.run([ssh_keygen, "-q", "-Y", "sign", "-f", keys["ed25519"], "-n", "file", tmp_path / "b.caibx"],
                   check=True, capture_output=True)
    client.upload_file(str(tmp_path / "b.caibx.sig"), bucket, "b.caibx.sig")
    proxy.reset()
    err = one_line_error(_run("extract", url, tmp_path, keys["ed25519"]))
    assert "namespace 'file'" in err and proxy.chunk_gets() == []


def test_local_index_and_mount_checked_before_use(keys, index, tmp_path):
    """SIG-4: a local index (and mount's) is checked too; standard input cannot be."""
    ok(pycatar("sign", f"--key={keys['ed25519']}", index))
    err = one_line_error(pycatar("mount", f"--verify-key={keys['other']}.pub", f"--store={tmp_path / 'S'}",
                                 index, tmp_path / "mnt"))
    assert "made by another key" in err
    with open(index, "rb") as f:
        p = subprocess.run([sys.executable, "-m", "pycatar", "extract", f"--verify-key={keys['ed25519']}.pub",
                            f"--store={tmp_path / 'S'}", "--what=blob-index", "-", tmp_path / "o"], stdin=f,
                           capture_output=True, env=s3_env())
    assert "standard input" in one_line_error(p)
    err = one_line_error(pycatar("extract", f"--verify-key={keys['ed25519']}.pub",
                                 f"--allowed-signers={keys['ed25519']}.pub", f"--store={tmp_path / 'S'}", index,
                                 tmp_path / "o"))
    assert "cannot be combined" in err
    for verb in ("list", "digest"):
        err = one_line_error(pycatar(verb, f"--verify-key={keys['ed25519']}.pub", tmp_path / "S"))
        assert "not a directory" in err


def test_hostile_signatures_give_signature_errors(keys, index):
    """SIG-3: any damage to a signature file (truncation, flipped bytes, garbage base64 content) is a
    SignatureError, never another exception; only the intact one verifies."""
    import base64
    import io

    from pycatar import sshsig

    ok(pycatar("sign", f"--key={keys['ecdsa']}", index))
    text = open(f"{index}.sig", "rb").read()
    allowed = [sshsig.load_public_key(f"{keys['ecdsa']}.pub")]
    data = open(index, "rb").read()
    assert sshsig.verify_file(io.BytesIO(data), text, allowed, what="sig") == allowed[0]
    lines = text.decode().split("\n")
    blob = base64.b64decode("".join(lines[1:-2]))
    rnd = random.Random(7)
    tried = 0
    for _ in range(300):
        b = bytearray(blob)
        how = rnd.randrange(3)
        if how == 0:
            b = b[:rnd.randrange(len(b))]
        elif how == 1:
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        else:
            b[rnd.randrange(len(b)):] = rnd.randbytes(rnd.randint(0, 80))
        if bytes(b) == blob:
            continue
        bad = sshsig.armor(bytes(b)).encode()
        with pytest.raises(sshsig.SignatureError):
            sshsig.verify_file(io.BytesIO(data), bad, allowed, what="sig")
        tried += 1
    assert tried > 250


def test_allowed_signers_options(keys, tmp_path):
    """SIG-4: namespaces= patterns are honoured; cert-authority and validity windows grant nothing."""
    from pycatar import sshsig

    pub = open(f"{keys['ed25519']}.pub").read().split()
    other = open(f"{keys['other']}.pub").read().split()
    f = tmp_path / "allowed"
    f.write_text(f"# comment\n\na@x,b@x namespaces=\"git,pyc*\" {pub[0]} {pub[1]} a comment\n"
                 f"c@x cert-authority {other[0]} {other[1]}\n"
                 f"d@x valid-after=\"20200101\",namespaces=\"pycatar\" {other[0]} {other[1]}\n")
    got = sshsig.load_allowed_signers(str(f))
    assert [k.blob for k in got] == [sshsig.load_public_key(f"{keys['ed25519']}.pub").blob]
    f.write_text(f"a@x namespaces=\"pycatar\" {pub[0]} AAAA!!!\n")
    with pytest.raises(sshsig.SignatureError):
        sshsig.load_allowed_signers(str(f))
