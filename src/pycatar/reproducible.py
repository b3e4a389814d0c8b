"""Reproducible archives (spec/reproducible.md): a fixed feature set that does not depend on the
machine or file system the tree is read from, owners normalised, mtimes clamped to
``SOURCE_DATE_EPOCH``.  :func:`pycatar.operations.make` with ``reproducible=True`` applies all of it;
the pieces, for an encoder of one's own:

>>> from pycatar import archive, reproducible
>>> flags = reproducible.feature_flags()
>>> archive.make_archive("tree.catar", "tree", feature_flags=flags,
...                      **reproducible.encoder_options(flags))      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from . import flags as _flags
from .errors import UsageError
from .flags import Flag as F

#: REPRO-1: what ``--reproducible`` stores, before ``--with=``/``--without=`` refine it.
REPRODUCIBLE_FLAGS = int(
    F.WITH_32BIT_UIDS | F.WITH_SEC_TIME | F.WITH_PERMISSIONS | F.WITH_SYMLINKS | F.WITH_DEVICE_NODES
    | F.WITH_FIFOS | F.WITH_SOCKETS
)

_MAX_EPOCH = ((1 << 64) - 1) // 1_000_000_000  # seconds whose nanoseconds still fit in a u64


def feature_flags(with_=(), without=(), *, digest: str = "sha512-256", exclude_nodump: bool = False,
                  exclude_submounts: bool = False, exclude_file: bool = False) -> int:
    """The normalised feature flags of a reproducible archive (REPRO-1, REPRO-2): the reproducible
    set plus the ``--with=`` names, minus the ``--without=`` names.  Unlike a plain ``make`` the
    ``--with=`` names add to the set instead of replacing it, and the exclude bits are off unless
    asked for (REPRO-6)."""
    add = 0
    for name in with_:
        add |= _flags.parse_with_name(name, "--with=")
    return _flags.from_options((), without, digest=digest, exclude_nodump=exclude_nodump,
                               exclude_submounts=exclude_submounts, exclude_file=exclude_file,
                               default_with=REPRODUCIBLE_FLAGS | add)


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int | None:
    """``SOURCE_DATE_EPOCH`` in seconds, None when unset or empty; a malformed value is an error
    (REPRO-4)."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_EPOCH:
        raise UsageError(f"Failed to parse SOURCE_DATE_EPOCH={value!r}: expected seconds since 1970 "
                         "as a decimal integer")
    return int(value)


def encoder_options(flags: int, *, owner: int | None = None, group: int | None = None,
                    epoch: int | None = None, reproducible: bool = True,
                    tree: bool = True) -> dict:
    """The :class:`~pycatar.encoder.EncoderOptions` fields for an archive with ``flags``:
    with ``reproducible``, owners default to 0/0 (REPRO-3), mtimes are clamped to ``epoch``
    (REPRO-4) and, for a tree on disk (``tree``), every file system read must be able to store the
    reproducible bits still in ``flags`` (REPRO-5)."""
    opts: dict = {}
    if reproducible:
        owner = 0 if owner is None else owner
        group = 0 if group is None else group
        if epoch is not None:
            opts["clamp_mtime_ns"] = epoch * 1_000_000_000
        if tree:
            opts["require_flags"] = int(flags) & REPRODUCIBLE_FLAGS
    if owner is not None:
        opts["owner"] = owner
    if group is not None:
        opts["group"] = group
    return opts
