"""Tar archives built with Python's tarfile for the tar-input tests (test_tarconv, test_hostile)."""

from __future__ import annotations

import io
import tarfile


def tar_bytes(members) -> bytes:
    """A PAX tar built with tarfile from (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_member(name, type=tarfile.REGTYPE, data=b"", **kw):
    """(TarInfo, data or None) of a member; keyword arguments set TarInfo attributes."""
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = len(data) if type == tarfile.REGTYPE else 0
    ti.mtime = kw.pop("mtime", 1_600_000_000)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, (data if type == tarfile.REGTYPE else None)
