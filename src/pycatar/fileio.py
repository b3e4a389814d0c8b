"""Writing files safely: a file appears under its final name only once it is complete."""

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
