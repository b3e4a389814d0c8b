""".caexclude files: which directory entries the encoder leaves out.

Each non-empty line that does not start with ``#`` is a pattern (POSIX fnmatch with FNM_PERIOD)
over path components.  ``!`` in front negates it (an exception to earlier exclusions: a negative
match wins), a trailing ``/`` restricts it to directories, and a pattern containing ``/`` is anchored to
the directory of the .caexclude file; a pattern without ``/`` applies in every directory below.
"""

from __future__ import annotations

import os
from functools import lru_cache

from .errors import PycatarError
from .record import Record

POSITIVE, NEGATIVE, INNER = 0, 1, 2
FNM_PERIOD = 1 << 2


@lru_cache(maxsize=1)
def _fnmatch():
    import ctypes  # start-up: only a tree with a .caexclude file needs it

    from .fsmeta import _libc

    f = _libc().fnmatch
    f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    f.restype = ctypes.c_int
    return f


class Rule(Record):
    __slots__ = ("kind", "pattern", "anchored", "directory_only", "children")

    def __init__(self, kind: int, pattern: bytes, anchored: bool, directory_only: bool,
                 children: list[Rule] | None = None):
        self.kind = kind
        self.pattern = pattern
        self.anchored = anchored
        self.directory_only = directory_only
        self.children = [] if children is None else children


def _parse_line(line: bytes) -> Rule:
    kind = POSITIVE
    if line.startswith(b"!"):
        kind = NEGATIVE
        line = line[1:]
    anchored = b"/" in line
    line = line.lstrip(b"/")
    first: Rule | None = None
    current: Rule | None = None
    while True:
        k = line.find(b"/")
        comp = line if k < 0 else line[:k]
        if comp in (b"", b".", b".."):
            raise PycatarError("invalid pattern in .caexclude file")
        rest = b"" if k < 0 else line[k:]
        directory_only = rest.startswith(b"/")
        rest = rest.lstrip(b"/")
        item = Rule(kind if not rest else INNER, comp, anchored, directory_only)
        if first is None:
            first = item
        else:
            current.children.append(item)
        if not rest:
            return first
        current = item
        anchored = True
        line = rest


def parse(data: bytes) -> list[Rule]:
    rules = []
    for raw in data.split(b"\n"):
        line = raw.strip(b" \t\r\n")
        if not line or line.startswith(b"#"):
            continue
        rules.append(_parse_line(line))
    return rules


def load(dir_fd: int) -> list[Rule]:
    try:
        fd = os.open(".caexclude", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        return parse(f.read())


def test(rules: list[Rule], name: bytes, is_dir: bool) -> tuple[bool, list[Rule]]:
    """(excluded?, the rules that apply inside ``name`` when it is a directory)."""
    fnmatch = _fnmatch()
    positive = negative = False
    subtree: list[Rule] = []
    for rule in rules:
        if not rule.anchored and is_dir:
            subtree.append(rule)
        if rule.directory_only and not is_dir:
            continue
        if fnmatch(rule.pattern, name, FNM_PERIOD) != 0:
            continue
        if rule.kind == NEGATIVE:
            negative = True
        elif rule.kind == POSITIVE:
            positive = True
        elif rule.children:
            subtree.extend(rule.children)
    return (positive and not negative), subtree
