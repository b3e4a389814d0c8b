"""The ``pycatar`` command line: :mod:`.main` holds the command (the options every verb shares, the
per-verb help, :func:`main`), :mod:`.options` what the options mean, :mod:`.common` how arguments name
inputs and outputs, :mod:`.completion` the shell completion; each verb has a module (``make``,
``extract``, ``list`` for list/mtree/stat, ``digest``, ``gc``, ``verify``, ``info``, ``cat``, ``chunk``,
``list_chunks``, ``mount``, ``serve``, ``sign``, ``vectors``) that parses its arguments and calls the
library.  The library never imports this package."""

import gc

# The command's start-up (the options, the verb's modules) makes about 10 000 objects that live
# until it ends.  At the default threshold (700) the cyclic collector walked them 15-17 times: 4.5-5 ms
# of the 45 ms a one-file extraction takes (gc.callbacks, 2026-12-03).  At 20 000 it runs during no
# start-up, and the garbage cycles of long runs (serve, mount) are still collected.
gc.set_threshold(20_000, *gc.get_threshold()[1:])

from .main import VERB_HELP, VERBS, console, main  # noqa: E402 - after the collector's threshold

__all__ = ["VERBS", "VERB_HELP", "console", "main"]
