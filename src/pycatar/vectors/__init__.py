"""Test vectors for any casync-compatible implementation: :mod:`.harness` checks an implementation
against vectors/ (``pycatar vectors verify``), :mod:`.generate` writes them (``pycatar vectors
generate``).  The command (``pycatar vectors``) is :mod:`pycatar.cli.vectors`."""
