"""``pycatar serve``: a chunk store and index files over HTTP(S) (:mod:`pycatar.server`)."""

from __future__ import annotations

from ..errors import UsageError
from ..location import default_store_for, open_store
from ..s3store import is_s3_url
from ..server import serve
from .common import is_url, remote
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    if args:
        raise UsageError('"serve" takes no arguments; the store is --store=DIR, the indexes --index-dir=DIR.')

    store = opts.store or default_store_for(None)
    if is_url(store):
        if not is_s3_url(store):
            raise UsageError("serve serves a local store or an object store (s3+http(s)://…), not an http(s) URL.")

        store = open_store(store, digest=opts.digest, remote=remote(opts))
        store.check()
    serve(store, opts.index_dir, listen=opts.listen, writable=opts.writable,
          digest=opts.digest, tls_cert=opts.tls_cert, tls_key=opts.tls_key, verbose=opts.verbose)
    return 0
