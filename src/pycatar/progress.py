"""Progress on a terminal: bytes done of the total, rate and time left, drawn by tqdm on standard
error — only when standard error is a terminal and the user did not ask for ``--no-progress``.

The library reports progress through plain callables (``progress(nbytes)``); :func:`bar` makes one
that draws, or one that does nothing.  ``details`` (a callable returning a short text, e.g. where
the chunks came from so far) is shown after the bar, refreshed at most twice a second.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable


class Bar:
    """A progress bar; call it with a number of bytes (or items) done.  Thread-safe."""

    def __init__(self, desc: str, total: int | None, *, unit: str = "B",
                 details: Callable[[], str] | None = None):
        from tqdm import tqdm

        scale = unit == "B"
        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            size = None
        # a terminal that reports no size (a bare pty) gets 80x24 (tqdm would draw nothing)
        sized = {"dynamic_ncols": True} if size and size.columns and size.lines else {"ncols": 80, "nrows": 24}
        self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                         file=sys.stderr, leave=False, mininterval=0.2, **sized)
        self.details = details  #: may be set later
        self._next = 0.0
        self._lock = threading.Lock()

    def __call__(self, n: int = 1) -> None:
        with self._lock:
            self._bar.update(n)
            if self.details is not None:
                now = time.monotonic()
                if now >= self._next:
                    self._next = now + 0.5
                    self._bar.set_postfix_str(self.details(), refresh=False)

    def close(self) -> None:
        with self._lock:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Nothing:
    details = None

    def __call__(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bar(enabled: bool, desc: str, total: int | None, *, unit: str = "B",
        details: Callable[[], str] | None = None):
    """A :class:`Bar` when ``enabled`` and standard error is a terminal, else a callable doing nothing."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not (enabled and tty):
        return _Nothing()
    return Bar(desc, total, unit=unit, details=details)
