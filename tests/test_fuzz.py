"""A small fuzz harness (issue 14): mutated and random archives, indexes and chunk files end in
pycatar's own one-line errors (PycatarError), never another exception, a hang or runaway memory.

Run briefly in the suite; for a long campaign set PYCATAR_FUZZ_EXAMPLES (see README), e.g.
``PYCATAR_FUZZ_EXAMPLES=200000 PYTHONPATH=src python3 -m pytest -q tests/test_fuzz.py``.
Seeds are the stored test vectors (vectors/), not pycatar's output."""

from __future__ import annotations

import glob
import io
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycatar import compression
from pycatar.decoder import CatarReader
from pycatar.errors import PycatarError
from pycatar.index import IndexReader

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "vectors")
EXAMPLES = int(os.environ.get("PYCATAR_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="PYCATAR_FUZZ_EXAMPLES" not in os.environ,
                database=None,  # no .hypothesis directory in the work tree
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds(pattern: str, limit: int = 64 << 10) -> list[bytes]:
    out = []
    for path in sorted(glob.glob(os.path.join(VECTORS, pattern), recursive=True)):
        with open(path, "rb") as f:
            data = f.read()
        if len(data) <= limit:
            out.append(data)
    assert out, pattern
    return out


CATARS = _seeds("decode/*/archive.catar") + _seeds("caidx/*/expect/archive.catar")
INDEXES = _seeds("caidx/*/expect/index.caidx") + _seeds("chunk/*/expect/index.caibx")
CHUNKS = _seeds("store/*/store/**/*.cacnk")


@st.composite
def mutated(draw, seeds):
    """A seed with a few edits: bytes overwritten (often with boundary values), ranges cut or
    duplicated, truncation -- or, now and then, bytes from nowhere."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, len(data) - 1))
        if op == 0:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:  # a u64 field set to a boundary value
            v = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1, len(data), 16, 24, 40, 64]))
            data[i:i + 8] = v.to_bytes(8, "little")
        elif op == 2:
            j = draw(st.integers(i, min(len(data), i + 64)))
            del data[i:j]
        elif op == 3:
            j = draw(st.integers(i, min(len(data), i + 64)))
            data[i:i] = data[i:j]
        else:
            del data[i:]
    return bytes(data)


class _Pipe(io.RawIOBase):
    """A non-seekable stream over bytes (the sequential reading path)."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._b.readinto(buf)
        return n


def _walk(reader: CatarReader) -> None:
    for entry in reader:
        if entry.isreg():
            for _ in reader.read_payload():
                pass


@FUZZ
@given(data=mutated(CATARS), seekable=st.booleans(), path=st.sampled_from(["", "a", "dir", "dir/sub", "x/y/z"]))
def test_fuzz_catar_decoder(data, seekable, path):
    """Iteration and lookups of a mutated archive: entries or a PycatarError, nothing else."""
    f = io.BytesIO(data) if seekable else io.BufferedReader(_Pipe(data))
    try:
        _walk(CatarReader(f))
    except PycatarError:
        pass
    if seekable:
        reader = CatarReader(io.BytesIO(data))
        try:
            entry = reader.lookup(path)
            if entry is not None:
                for _ in reader.iter_subtree(entry):
                    pass
        except PycatarError:
            pass


@FUZZ
@given(data=mutated(INDEXES), seekable=st.booleans())
def test_fuzz_index_reader(data, seekable):
    """A mutated .caibx/.caidx: its items or a PycatarError (FormatError), nothing else."""
    f = io.BytesIO(data) if seekable else io.BufferedReader(_Pipe(data))
    try:
        with IndexReader(f, name="fuzz") as r:
            for c in r.chunks():
                assert c.end > c.start
            if r.blob_size:
                r.find(r.blob_size - 1)
    except PycatarError:
        pass


@FUZZ
@given(data=mutated(CHUNKS), size=st.one_of(st.none(), st.integers(1, 1 << 20)))
def test_fuzz_chunk_decompression(data, size):
    """A mutated chunk file: its bytes (bounded by the expected size) or a ChunkError."""
    try:
        out = compression.decompress(data, size)
    except PycatarError:
        return
    assert 1 <= len(out) <= (size or compression.DECOMPRESSED_LIMIT)


def _tar_seeds() -> list[bytes]:
    import tarfile

    out = []
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            for name, kind, extra in (("d", tarfile.DIRTYPE, {}), ("d/f", tarfile.REGTYPE, {}),
                                      ("d/l", tarfile.SYMTYPE, {"linkname": "f"}),
                                      ("h", tarfile.LNKTYPE, {"linkname": "d/f"}),
                                      ("c", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}),
                                      ("p", tarfile.FIFOTYPE, {}), ("n" * 120, tarfile.REGTYPE, {})):
                if len(name) > 100 and fmt == tarfile.USTAR_FORMAT:
                    continue
                ti = tarfile.TarInfo(name)
                ti.type, ti.mtime, ti.uid, ti.gid, ti.uname = kind, 1_600_000_000, 1000, 100, "alice"
                for k, v in extra.items():
                    setattr(ti, k, v)
                if fmt == tarfile.PAX_FORMAT and kind == tarfile.REGTYPE:
                    ti.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "-1.5"}
                data = b"payload\n" * 3 if kind == tarfile.REGTYPE else None
                ti.size = len(data) if data else 0
                tf.addfile(ti, io.BytesIO(data) if data else None)
        out.append(buf.getvalue())
    return out


TARS = _tar_seeds()


@FUZZ
@given(data=mutated(TARS))
def test_fuzz_tar_input(data, tmp_path_factory):
    """A mutated tar through `make --input-format=tar`'s converter: a catar stream or a PycatarError."""
    from pycatar import flags
    from pycatar.tarconv import TarEncoder

    path = tmp_path_factory.mktemp("tar") / "in.tar"
    path.write_bytes(data)
    try:
        with TarEncoder(str(path), flags.DEFAULT, spool_dir=str(path.parent)) as enc:
            for _ in enc:
                pass
    except PycatarError:
        pass


def test_the_fuzz_inputs_reach_the_decoder():
    """The harness is not vacuous: the unmutated seeds decode without error."""
    for data in CATARS:
        _walk(CatarReader(io.BytesIO(data)))
    for data in INDEXES:
        with IndexReader(io.BytesIO(data), name="seed") as r:
            r.validate()
    assert all(len(compression.decompress(c)) > 0 for c in CHUNKS)
    from pycatar import flags
    from pycatar.tarconv import TarEncoder

    for i, data in enumerate(TARS):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f".pycatar-fuzz-{os.getpid()}-{i}.tar")
        with open(path, "wb") as f:
            f.write(data)
        try:
            with TarEncoder(path, flags.DEFAULT) as enc:
                assert sum(len(p) for p in enc) > 1000
        finally:
            os.unlink(path)


# --------------------------------------------------------------------------- encoder and decoder agree

_FLAG_SETS = [
    ["best"], ["acl", "xattrs", "16bit-uids", "user-names", "sec-time", "permissions"],
    ["acl", "xattrs", "32bit-uids", "usec-time", "permissions", "selinux"], ["2sec-time"], [],
]


@st.composite
def root_entries(draw):
    """A root directory entry with values anywhere near the rules' edges, holding only records its
    feature flags allow (as the encoder's feature handling ensures)."""
    from pycatar import flags
    from pycatar.entry import ACLDefault, ACLEntry, Entry

    B = flags.Flag
    ff = flags.normalize(flags.from_options(draw(st.sampled_from(_FLAG_SETS)), []))
    with_ids = bool(ff & (B.WITH_16BIT_UIDS | B.WITH_32BIT_UIDS))
    # valid values most of the time, so that an entry often breaks exactly one rule
    ids = st.one_of(st.just(0), st.just(1000), st.sampled_from([1, 0xFFFE, 0xFFFF, 0x10000, 0xFFFFFFFE,
                                                                  0xFFFFFFFF, 1 << 40])) if with_ids else st.just(0)
    names = st.one_of(st.none(), st.just("alice"), st.sampled_from(["_x-1", "9lives", "root", "0", "a.b", "é",
                                                                     "x" * 256])) \
        if ff & B.WITH_USER_NAMES else st.none()
    mtimes = st.one_of(st.just(0), st.just(2 * 10**9), st.sampled_from(
        [1, 999, 1000, 10**6, 10**9, 1 << 63, (1 << 64) - 2 * 10**9, (1 << 64) - 1]))
    acl = st.lists(st.builds(ACLEntry, ids, st.integers(0, 7), names), max_size=3)
    mode = 0o40755 if ff & (B.WITH_PERMISSIONS | B.WITH_ACL) else 0o40777
    e = Entry(path="", mode=mode, feature_flags=ff, uid=draw(ids), gid=draw(ids), mtime=draw(mtimes),
              user=draw(names), group=draw(names))
    if ff & B.WITH_XATTRS:
        e.xattrs = sorted(dict(draw(st.lists(st.tuples(
            st.sampled_from([b"user.a", b"trusted.b", b"user.", b".a", b"x" * 254 + b".y"]),
            st.binary(max_size=8)), max_size=3))).items())
    if ff & B.WITH_ACL:
        e.acl_user, e.acl_group, e.acl_default_user = draw(acl), draw(acl), draw(acl)
        e.acl_group_obj = draw(st.one_of(st.none(), st.integers(0, 7)))
        if draw(st.booleans()):
            e.acl_default = ACLDefault(7, 5, 5, draw(st.sampled_from([5, 0xFFFFFFFFFFFFFFFF])))
        for lst in (e.acl_user, e.acl_group, e.acl_default_user):  # unique and sorted, as the encoder writes
            unique = {(a.id, a.name is not None, os.fsencode(a.name or ""), a.permissions): a.name for a in lst}
            lst[:] = [ACLEntry(k[0], k[3], unique[k]) for k in sorted(unique)]
    if ff & B.WITH_SELINUX:
        e.selinux = draw(st.sampled_from([None, "system_u:object_r:etc_t:s0", "l" * 4096, ""]))
    return e


@settings(FUZZ, max_examples=max(EXAMPLES, 500))  # cheap inputs: more of them, each rule is met
@given(entry=root_entries())
def test_encoder_refuses_exactly_what_the_decoder_rejects(entry):
    """CATAR-60: validate.entry_problem (the encoder's check) finds a problem in an entry iff the
    decoder rejects an archive holding it (one validation, used on both sides)."""
    import struct

    from pycatar import validate
    from pycatar.encoder import entry_records
    from pycatar.errors import FormatError

    problem = validate.entry_problem(entry)
    try:
        records = entry_records(entry)
    except (struct.error, ValueError):  # not even representable (an id of 2^64 or more)
        assert problem is not None
        return
    marker = 0x57446FA533702943
    archive = records + struct.pack("<QQQQQ", 40, 0xDFD35C5E8327C403, len(records), 40, marker)
    try:
        for _ in CatarReader(io.BytesIO(archive)):
            pass
        error = None
    except FormatError as e:
        error = str(e)
    assert (problem is None) == (error is None), (problem, error)
