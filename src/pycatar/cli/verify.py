"""``pycatar verify [--repair] STORE | verify INDEX``: check chunks (:mod:`pycatar.verify`)."""

from __future__ import annotations

import os

from .. import verify
from ..errors import PycatarError, UsageError
from ..index import IndexReader
from ..location import is_s3_url, local_path, open_store
from .common import (chunk_stores, emit_json, index_argument, log, open_index, progress_bar, remote,
                     strip_file_url, suffix_kind)
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``verify [--repair] STORE`` or ``verify INDEX`` (its chunks in --store/--extra-store)."""
    if len(args) != 1:
        raise UsageError("Usage: pycatar verify [--repair] STORE | pycatar verify INDEX")
    target = strip_file_url(args[0])
    if suffix_kind(target) in ("archive-index", "blob-index") or opts.what in ("archive-index", "blob-index"):
        if opts.repair:
            raise UsageError("--repair applies to a store (verify STORE), not to an index.")
        source, _kind = index_argument(opts, args, "verify", "INDEX")

        with open_index(opts, source) as f, IndexReader(f) as reader:
            with progress_bar(opts, "verify", None, unit=" chunks") as bar:
                res = verify.verify_index(reader, chunk_stores(opts, source), progress=lambda done, _b: bar(1))
    else:
        if is_s3_url(target):  # an object store lists its chunks (STORE-21)
            path = open_store(target, digest=opts.digest, remote=remote(opts))
        else:
            path = local_path(target)
            if path is None:
                raise UsageError("verify STORE checks a local store or an object store; for an http(s) one, "
                                 "verify an index against it.")
            if not os.path.isdir(path):
                raise PycatarError(f"store {path} does not exist")
        with progress_bar(opts, "verify", None, unit=" chunks") as bar:
            res = verify.verify_store(path, digest=opts.digest, repair=opts.repair, progress=lambda done, _b: bar(1))
    if opts.json:
        emit_json(res.as_dict())
    else:
        for cid in res.missing:
            print(f"{cid} missing")
        for p in res.bad:
            print(f"{p.id} {'removed: ' if p.removed else ''}{p.error}")
        log(opts, f"{res.checked} chunks checked, {len(res.missing)} missing, {len(res.bad)} bad"
                   + (f", {sum(p.removed for p in res.bad)} removed" if opts.repair else ""))
    if not res.ok:
        raise PycatarError(f"{len(res.missing)} missing and {len(res.bad)} bad chunks of {res.checked}")
    return 0
