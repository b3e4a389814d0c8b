"""pycatar: casync-compatible catar archives, chunk indexes and chunk stores.

The library API is :mod:`tarfile`'s: :func:`open` returns a :class:`CatarFile` whose members are
:class:`CatarInfo` objects; :func:`is_catar` tells an archive.  See :mod:`pycatar.api`."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["CatarFile", "CatarInfo", "is_catar", "open", "__version__"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up); type checkers read it as True
if TYPE_CHECKING:
    from .api import CatarFile, is_catar, open  # noqa: A004 - as tarfile.open
    from .catarinfo import CatarInfo


def __getattr__(name: str):
    # Loaded on first use: importing pycatar.api (decoder, extractor, stores, HTTP client) takes
    # 0.2-0.3 s, which every command line start would pay (measured with -X importtime).
    if name in ("CatarFile", "is_catar", "open", "CatarInfo"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pycatar' has no attribute {name!r}")
