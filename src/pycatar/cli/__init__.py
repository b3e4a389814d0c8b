"""The ``pycatar`` command line: :mod:`.main` holds the command (the options every verb shares, the
per-verb help, :func:`main`), :mod:`.options` what the options mean, :mod:`.common` how arguments name
inputs and outputs, :mod:`.completion` the shell completion; each verb has a module (``make``,
``extract``, ``list`` for list/mtree/stat, ``digest``, ``gc``, ``verify``, ``info``, ``cat``, ``chunk``,
``list_chunks``, ``mount``, ``serve``, ``sign``, ``vectors``) that parses its arguments and calls the
library.  The library never imports this package."""

from .main import VERB_HELP, VERBS, console, main

__all__ = ["VERBS", "VERB_HELP", "console", "main"]
