"""Writing files: safely (a file appears under its final name only once it is complete) and sparsely
(all-zero blocks become holes).

Every new file pycatar installs -- archives, indexes, blobs, chunk files, cached seed tables,
signatures, uploads, the files of an extracted tree -- is built under :func:`temp_name` in the
directory of its final name and then renamed (or, for chunk files, hard-linked) into place:
:class:`AtomicFile` for files written through a file object, :func:`write_atomic` for bytes at
hand, :func:`install` for a temporary file made some other way, :func:`install_new` for a file
written once and for all (never replacing what is there).  The bytes of an extracted file (of a
tree or a blob) go through :class:`Payload`, which leaves all-zero blocks as holes when asked."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

# create: a new regular file, exclusively; Payload: writes a file's bytes, all-zero blocks left as
# holes when asked (the C module's payload writer, which the batch writer of an extraction runs
# too: one way to write a file)
from ._fileio import Payload, create, install_file, install_files
from .errors import PycatarError

#: tries at a fresh temporary name when the previous one exists already
_NAME_TRIES = 16

#: bytes handed to a :class:`Payload` writer at once (``write_many``): the writing thread then waits
#: for the GIL once per batch rather than once per chunk while other threads decode the next ones
WRITE_BATCH = 1 << 20


def write_pieces(writer: Payload, pieces) -> None:
    """Write the buffers of ``pieces`` (an iterable, e.g. a file's payload as the decoder reads it)
    with ``writer``, :data:`WRITE_BATCH` bytes a call."""
    batch: list = []
    acc = 0
    for piece in pieces:
        batch.append(piece)
        acc += len(piece) if isinstance(piece, bytes) else memoryview(piece).nbytes
        if acc >= WRITE_BATCH:
            writer.write_many(batch)
            batch, acc = [], 0
    if batch:
        writer.write_many(batch)


def pread_full(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes of ``fd`` at ``offset``, fewer only where the file ends (pread may return less)."""
    parts = []
    got = 0
    while got < size:
        b = os.pread(fd, size - got, offset + got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def random_tag(nbytes: int) -> str:
    """``nbytes`` random bytes from the kernel in hex: what sets temporary names apart (secrets'
    token_hex, without importing secrets, hmac and base64 at every start: 3-7 ms of python3 -X importtime,
    2026-12-03)."""
    return os.urandom(nbytes).hex()


def temp_name(name: str | bytes, tag: str | bytes | None = None):
    """The temporary name of ``name`` in the same directory: ``.#<name><tag>``, as casync names its
    own; ``tag`` defaults to 16 random hex digits.  ``name`` is shortened so the result stays a
    valid file name (255 bytes).  Returns the type given (str or bytes)."""
    if isinstance(name, bytes):
        if tag is None:
            tag = random_tag(8).encode()
        elif isinstance(tag, str):
            tag = tag.encode()
        return b".#" + name[: 253 - len(tag)] + tag
    if tag is None:
        tag = random_tag(8)
    elif isinstance(tag, bytes):
        tag = tag.decode()
    raw = os.fsencode(name)
    if len(raw) + len(tag) > 253:
        name = os.fsdecode(raw[: 253 - len(tag)])
    return ".#" + name + tag


def _temp_path(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, temp_name(name))


def install(tmp: str, path: str, *, dir_fd: int | None = None) -> None:
    """Rename the complete file ``tmp`` over ``path`` (both in the directory ``dir_fd`` if given);
    if that fails, ``tmp`` is removed and the error raised."""
    try:
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def install_new(path: str, data, mode: int = 0o444, *, temp: Callable[[str], str] | None = None) -> bool:
    """Write ``data`` to ``path`` once and for all: under a temporary path (``temp(path)`` gives a
    fresh one, in the same directory; default: :func:`temp_name`), installed under ``path`` without
    replacing a file already there.  True if ``path`` now holds ``data``, False if it existed
    already.  Raises OSError (ENOENT: the directory is gone)."""
    r = install_new_many([(path, data)], mode, temp=temp)[0]
    if isinstance(r, OSError):
        raise r
    return r


def install_new_many(items: list, mode: int = 0o444, *, temp: Callable[[str], str] | None = None
                     ) -> list[bool | OSError]:
    """:func:`install_new` of each ``(path, data)`` of ``items``, all written by one C call with the
    GIL released (a rare failure is retried alone).  For each item: True, False, or the OSError that
    :func:`install_new` would raise (the other items are installed regardless)."""
    if temp is None:
        temp = _temp_path
    jobs = [(temp(path), path, data) for path, data in items]
    out: list[bool | OSError] = []
    for job, r in zip(jobs, install_files(jobs, mode)):
        if not isinstance(r, tuple):
            out.append(r == 1)
            continue
        try:
            out.append(_install_again(job, r, mode, temp))
        except OSError as e:
            out.append(e)
    return out


def _install_again(job: tuple, r: tuple, mode: int, temp: Callable[[str], str]) -> bool:
    """The failure ``r`` of ``install_files`` for ``job``: another temporary name when the first was
    taken, a rename where the file system has no hard links, or the error."""
    tmp, path, data = job
    for _ in range(_NAME_TRIES):
        step, err = r
        if step == 0 and err == errno.EEXIST:  # another writer's temporary name: take another
            tmp = temp(path)
            r = install_file(tmp, path, data, mode)  # create, write, close, rename: one C call, GIL released
            if not isinstance(r, tuple):
                return r == 1
            continue
        if step == 2 and err in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            try:  # no hard links here: the content is the same by construction, so a rename will do
                if os.path.lexists(path):
                    return False
                os.rename(tmp, path)
                return True
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        if step == 2:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EEXIST, "no free temporary name", path)


class AtomicFile:
    """A new binary file written under a temporary name in the target's directory (:func:`temp_name`)
    and renamed over ``path`` on :meth:`commit` (after an fsync if ``fsync``); :meth:`discard` (or
    an exception in a ``with`` block) removes it, leaving ``path`` untouched.

    ``with AtomicFile(path) as f: f.write(...)``, or ``a = AtomicFile(path); f = a.open(); ...;
    a.commit()`` where the writing spans several calls.  :attr:`tmp` is the temporary path while
    the file is being written (None afterwards)."""

    def __init__(self, path: str | os.PathLike, mode: int = 0o666, *, fsync: bool = True,
                 buffering: int = 1 << 20):
        self.path = os.fspath(path)
        self.mode = mode
        self.fsync = fsync
        self.buffering = buffering
        self.tmp: str | None = None
        self.file = None

    def open(self):
        """Create the temporary file (exclusively; another name if one is taken) and return it open
        for writing (``buffering`` as for :func:`open`; 0 gives a raw file)."""
        for _ in range(_NAME_TRIES):
            tmp = _temp_path(self.path)
            try:
                fd = create(tmp, self.mode)
            except FileExistsError:
                continue
            self.tmp = tmp
            self.file = os.fdopen(fd, "wb", buffering=self.buffering)
            return self.file
        raise FileExistsError(errno.EEXIST, "no free temporary name", self.path)

    def commit(self) -> None:
        """Flush, fsync (if asked), close and rename the file into place.  Raises OSError; the
        temporary file is then removed."""
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            install(self.tmp, self.path)
            self.tmp = None
        finally:
            self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()  # the block's own error is the one to report
            return False
        try:
            self.commit()
        except OSError as e:
            raise PycatarError(f"Failed to write {self.path}: {e.strerror or e}") from None  # e.g. disk full
        return False


def write_atomic(path: str | os.PathLike, data, mode: int = 0o666, *, fsync: bool = False) -> None:
    """Write ``data`` (bytes) to ``path`` whole or not at all.  Raises OSError."""
    out = AtomicFile(path, mode, fsync=fsync, buffering=0)
    f = out.open()
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
    except BaseException:
        out.discard()
        raise
    out.commit()
