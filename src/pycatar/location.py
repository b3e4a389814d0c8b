"""Locations: what a store, index or archive argument names — a local path, a ``file://`` URL, an
``http(s)://`` URL, an object store's ``s3+http(s)://`` URL (:mod:`pycatar.s3store`), or for stores a
failover group ``a|b`` — turned into the object that reads or writes it.  Any other ``scheme://`` is
refused, never taken for a local folder of that name.

A local path loads no network module: the HTTP client (libcurl, ssl) and the object store client are
imported when a location is a URL (``# start-up:`` below; they were half the start-up time of
``pycatar list x.catar``, 20-30 ms of python3 -X importtime, benchmarks/startup.py), and so is tempfile;
the store module (with compression, file installs and their imports: 3-4 ms) when a store is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import PycatarError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from typing import BinaryIO
    from .httpclient import HTTPClient, HTTPOptions
    from .store import ChunkStore, StoreSet

#: the largest index or archive file fetched whole from a server (an index of 22 M chunks)
DOWNLOAD_LIMIT = 1 << 30
#: what may follow a URL scheme's first letter (RFC 3986: letters, digits, "+", "-", ".")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
DEFAULT_STORE_NAME = "default.castr"
SUPPORTED = "a local path, file://, http://, https://, s3+http:// or s3+https://"


def has_scheme(location: str) -> bool:
    """Whether ``location`` starts with a URL scheme and ``://``: a letter, then letters, digits, "+",
    "-" or "." (RFC 3986)."""
    i = location.find("://")
    return i > 0 and location[0].isascii() and location[0].isalpha() and _SCHEME_CHARS.issuperset(location[1:i])


def _until(text: str, start: int, stops: str) -> int:
    """The index of the first of ``stops`` in ``text`` from ``start`` on (its length if none)."""
    return min((i for i in (text.find(c, start) for c in stops) if i >= 0), default=len(text))


class Remote:
    """The HTTP client of one command, made on first use (nothing is set up, nor imported, for local
    work).  ``options`` are its :class:`~pycatar.httpclient.HTTPOptions`, or the fields to make them
    from when first needed (a dict)."""

    def __init__(self, options: HTTPOptions | dict | None = None):
        self.options = options
        self._client: HTTPClient | None = None

    @property
    def http_options(self) -> HTTPOptions:
        if not _is_http_options(self.options):
            from .httpclient import HTTPOptions  # start-up: the network stack, for URLs only (see top)

            if self.options is None and self._client is not None:
                self.options = self._client.options
            else:
                self.options = HTTPOptions(**(self.options or {}))
        return self.options

    @property
    def client(self) -> HTTPClient:
        if self._client is None:
            from .httpclient import HTTPClient  # start-up: the network stack, for URLs only (see top)

            self._client = HTTPClient(self.http_options)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _is_http_options(options) -> bool:
    return options is not None and not isinstance(options, dict)


def _as_remote(remote: Remote | HTTPClient | None) -> Remote:
    if isinstance(remote, Remote):
        return remote
    r = Remote()
    if remote is not None:
        r._client = remote
    return r


def is_url(location: str) -> bool:
    """Whether ``location`` is an http(s) URL (:func:`pycatar.httpclient.is_url`)."""
    if not has_scheme(location):  # a path: no need to load the network stack to say so
        return False
    from .httpclient import is_url as is_http_url  # start-up: the network stack, for URLs only (see top)

    return is_http_url(location)


def is_s3_url(location: str) -> bool:
    """Whether ``location`` is an object store's s3+http(s) URL (:func:`pycatar.s3store.is_s3_url`)."""
    if not has_scheme(location):
        return False
    from .s3store import is_s3_url as is_s3  # start-up: the network stack, for URLs only (see top)

    return is_s3(location)


def is_remote(location: str | None) -> bool:
    """Whether ``location`` is a remote location: an http(s) or an object store's s3+http(s) URL."""
    return bool(location) and (is_url(location) or is_s3_url(location))


def redact(location: str) -> str:
    """``location`` without the user name and password a URL may carry (:func:`pycatar.httpclient.redact`)."""
    if not has_scheme(location) and not location.startswith("//"):  # a path: nothing to remove
        return location
    from .httpclient import redact as redact_url  # start-up: the network stack, for URLs only (see top)

    return redact_url(location)


def local_path(location: str) -> str | None:
    """The local path ``location`` names (``file://`` stripped), or None for an http(s) or s3+http(s)
    URL.  Any other URL scheme is a :class:`UsageError`."""
    if location.startswith("file://"):
        return location[len("file://"):] or "/"
    if is_remote(location):
        return None
    if has_scheme(location):
        raise UsageError(f"unsupported location {redact(location)}: use {SUPPORTED}")
    return location


def open_store(location: str | os.PathLike, *, digest: str = "sha512-256", compression: str = "zstd",
               remote: Remote | HTTPClient | None = None) -> ChunkStore:
    """The store at ``location``: a directory, an http(s) URL, or mirrors ``a|b|…`` (a failover group)."""
    from .store import FailoverGroup, LocalStore  # start-up: stores only for the commands that open one

    if not isinstance(location, str):
        return LocalStore(location, digest=digest, compression=compression)
    remote = _as_remote(remote)
    if "|" in location:
        return FailoverGroup([open_store(m, digest=digest, compression=compression, remote=remote)
                              for m in location.split("|")])
    if not location:
        raise UsageError("empty store location")
    path = local_path(location)
    if is_s3_url(location):
        from .s3store import S3Store  # start-up: the network stack, for URLs only (see top)

        return S3Store(location, remote.http_options, digest=digest, compression=compression)
    if path is None:
        from .httpstore import HTTPStore  # start-up: the network stack, for URLs only (see top)

        return HTTPStore(location, remote.client, digest=digest, compression=compression)
    return LocalStore(path, digest=digest, compression=compression)


def open_stores(locations: Iterable[str], *, digest: str | None = None, cache: str | None = None,
                remote: Remote | HTTPClient | None = None) -> StoreSet:
    """STORE-10: the stores to search in order, behind the chunk cache ``cache`` (a local directory or
    an object store, STORE-17)."""
    from .store import LocalStore, StoreSet  # start-up: see open_store

    remote = _as_remote(remote)
    stores = [open_store(loc, digest=digest or "sha512-256", remote=remote) for loc in locations]
    cache_store = None
    if cache is not None:
        if is_s3_url(cache):  # a cache a whole site shares (STORE-17)
            cache_store = open_store(cache, digest=digest or "sha512-256", remote=remote)
        else:
            path = local_path(cache)
            if path is None:
                raise UsageError(f"the chunk cache must be a local directory or an object store (s3+http(s)://), "
                                 f"not {shown(cache)}")
            cache_store = LocalStore(path, digest=digest or "sha512-256")
    return StoreSet(stores, digest=digest, cache=cache_store)


def open_input(location: str, *, remote: Remote | HTTPClient | None = None, what: str = "file",
               limit: int = DOWNLOAD_LIMIT) -> BinaryIO:
    """A readable, seekable binary file for ``location``: the local file, or the body of an http(s)
    URL fetched whole into an anonymous temporary file (at most :data:`DOWNLOAD_LIMIT` bytes).
    Its ``name`` is the location (credentials removed)."""
    path = local_path(location)
    if path is not None:
        try:
            return open(path, "rb")
        except OSError as e:
            raise PycatarError(f'Failed to open "{path}": {e.strerror}') from None
    import tempfile  # start-up: 3-4 ms (shutil, random...), only a download needs it (see top)

    remote = _as_remote(remote)
    f = tempfile.TemporaryFile()
    try:
        if is_s3_url(location):
            from . import s3store  # start-up: the network stack, for URLs only (see top)

            if not s3store.download(location, f, limit, remote.http_options):
                raise PycatarError(f"{what} {shown(location)} not found in the object store")
        elif not remote.client.download(location, f, limit):
            raise PycatarError(f"{what} {redact(location)} not found on the server (404)")
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return _Named(f, shown(location))


def upload(location: str, data: bytes, *, remote: Remote | HTTPClient | None = None) -> None:
    """PUT ``data`` to the http(s) or s3+http(s) URL ``location``."""
    remote = _as_remote(remote)
    if is_s3_url(location):
        from . import s3store  # start-up: the network stack, for URLs only (see top)

        s3store.upload(location, data, remote.http_options)
    else:
        remote.client.put(location, data)


def shown(location: str) -> str:
    """``location`` as it may appear in a message: no credentials (nor an s3 URL's query)."""
    if is_s3_url(location):
        from .s3store import shown as s3_shown  # start-up: the network stack, for URLs only (see top)

        return s3_shown(location)
    return redact(location)


class _Named:
    """A file object that reports ``name`` as the location it came from."""

    def __init__(self, f, name: str):
        self._f = f
        self.name = name

    def __getattr__(self, attr):
        return getattr(self._f, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


# --------------------------------------------------------------------------- the default store


def _c_dirname(path: str) -> str:
    """dirname(3): the parent of the last component, ignoring trailing slashes."""
    q = path.rstrip("/")
    if not q:
        return "/" if path else "."
    i = q.rfind("/")
    if i < 0:
        return "."
    d = q[:i].rstrip("/")
    return d or "/"


def default_store_for(index_path: str | os.PathLike | None, environ=None) -> str:
    """STORE-9: the store used when none is given: ``$CASYNC_STORE``, else ``default.castr``
    next to the index (``default.castr`` in the current directory when the index has no
    directory part or is read from stdin/written to stdout)."""
    env = os.environ if environ is None else environ
    e = env.get("CASYNC_STORE")
    if e is not None:
        return e
    if index_path is None:
        return DEFAULT_STORE_NAME
    p = os.fsdecode(index_path)
    if p == "-":
        return DEFAULT_STORE_NAME
    if has_scheme(p) and not p.startswith(("/", "./")):
        scheme_end = p.index("://") + 3
        host_end = _until(p, scheme_end, "/;?")
        q = _until(p, host_end, ";?")
        while q > host_end and p[q - 1] != "/":
            q -= 1
        d = p[:q]
        store = d + DEFAULT_STORE_NAME if d.endswith("/") else d + "/" + DEFAULT_STORE_NAME
        if p.lower().startswith("s3+") and "?" in p:  # an object store's parameters apply to its store too
            store += p[p.index("?"):]
        return store
    if "/" in p:
        d = _c_dirname(p)
        return d + DEFAULT_STORE_NAME if d.endswith("/") else d + "/" + DEFAULT_STORE_NAME
    return DEFAULT_STORE_NAME
