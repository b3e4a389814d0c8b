"""Writing files: safely (a file appears under its final name only once it is complete) and sparsely
(all-zero blocks become holes)."""

from __future__ import annotations

import os
import secrets

from .errors import PycatarError


class AtomicFile:
    """A binary file written under a temporary name in the target's directory, fsync'ed and renamed
    over ``path`` on successful close; removed if the block raises.

    ``with AtomicFile(path) as f: f.write(...)``"""

    def __init__(self, path: str | os.PathLike, mode: int = 0o666, *, fsync: bool = True):
        self.path = os.fspath(path)
        d, name = os.path.split(self.path)
        self.tmp = os.path.join(d, f".#{name}.{secrets.token_hex(8)}.tmp")
        self.mode = mode
        self.fsync = fsync
        self.file = None

    def __enter__(self):
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.mode)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                if exc_type is None:
                    self.file.flush()
                    if self.fsync:
                        os.fsync(self.file.fileno())
                self.file.close()
                if exc_type is None:
                    os.rename(self.tmp, self.path)
            except OSError as e:
                if exc_type is not None:
                    return False  # the block's own error is the one to report
                raise PycatarError(f"Failed to write {self.path}: {e.strerror or e}") from None  # e.g. disk full
        finally:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)
        return False


#: the granularity of holes in sparse output (a file system block)
HOLE_BLOCK = 4096
_ZERO_BLOCK = bytes(HOLE_BLOCK)


class SparseWriter:
    """Appends bytes to a new file; with ``sparse``, every all-zero block of :data:`HOLE_BLOCK` bytes
    (aligned to the start of the file) is skipped over instead of written, so that it becomes a hole,
    as casync's hole punching does for runs of zeros.  The one implementation for blobs and for the
    files of a tree; a subclass says how to write, move forward and truncate."""

    def __init__(self, sparse: bool):
        self.sparse = sparse
        self.size = 0      #: bytes appended (written, skipped or kept back)
        self.holes = 0     #: bytes left as holes
        self._pending = 0  # hole bytes not moved over yet
        self._carry = b""  # the start of a block, until the block is complete

    def _write(self, view) -> None:
        raise NotImplementedError

    def _forward(self, n: int) -> None:
        """Move the file position ``n`` bytes forward (past the end: a hole)."""
        raise NotImplementedError

    def _truncate(self) -> None:
        """Make the file end at the file position."""
        raise NotImplementedError

    def _data(self, view) -> None:
        if self._pending:
            self._forward(self._pending)
            self._pending = 0
        self._write(view)

    def write(self, data) -> None:
        n = len(data)
        if not n:
            return
        self.size += n
        if not self.sparse:
            self._data(data)
            return
        buf = self._carry + bytes(data) if self._carry else data if isinstance(data, bytes) else bytes(data)
        full = n + len(self._carry) - (n + len(self._carry)) % HOLE_BLOCK
        self._carry = buf[full:]
        if not full:
            return
        view = memoryview(buf)
        if buf.find(_ZERO_BLOCK, 0, full) < 0:  # no zero block can be in there: one write
            self._data(view[:full])
            return
        start = 0  # the start of the current run of data blocks
        for off in range(0, full, HOLE_BLOCK):
            if buf.startswith(_ZERO_BLOCK, off):
                if off > start:
                    self._data(view[start:off])
                self._pending += HOLE_BLOCK
                self.holes += HOLE_BLOCK
                start = off + HOLE_BLOCK
        if full > start:
            self._data(view[start:full])

    def settle(self) -> None:
        """Put everything appended so far into the file (the kept-back partial block written, a
        pending hole made by extending the file), so that it can be read back or appended to directly."""
        carry, self._carry = self._carry, b""
        if carry:
            self._data(carry)
        if self._pending:
            self._forward(self._pending)
            self._pending = 0
            self._truncate()

    def finish(self) -> None:
        """The end of the file: a last partial block of zeros after a hole joins the hole, and the file
        gets its whole size."""
        carry, self._carry = self._carry, b""
        if carry:
            if self._pending and carry.count(0) == len(carry):
                self._pending += len(carry)
                self.holes += len(carry)
            else:
                self._data(carry)
        if self._pending:
            self._forward(self._pending)
            self._pending = 0
            self._truncate()
