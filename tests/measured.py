"""A pycatar command's own peak memory or CPU time, as the kernel counts them.

A child spawned straight from pytest inherits pytest's high-water mark (``ru_maxrss``) through vfork
and exec, so a small fresh interpreter starts the command and reports what its one child used."""

from __future__ import annotations

import subprocess
import sys

_MEASURE = ("import resource, subprocess, sys\n"
            "rc = subprocess.call(sys.argv[3:])\n"
            "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "with open(sys.argv[1], 'w') as f:\n"
            "    f.write(str(u.ru_maxrss if sys.argv[2] == 'rss' else u.ru_utime + u.ru_stime))\n"
            "sys.exit(rc)\n")


def run_measured(tmp_path, *args, what: str = "rss", timeout: float = 300):
    """(returncode, stdout, stderr, value) of ``pycatar ARGS``: its peak RSS in KiB (``what="rss"``)
    or its CPU time in seconds (``what="cpu"``)."""
    out = tmp_path / f"measured-{what}"
    p = subprocess.run([sys.executable, "-c", _MEASURE, out, what, sys.executable, "-m", "pycatar",
                        *map(str, args)], capture_output=True, timeout=timeout)
    value = out.read_text()
    return p.returncode, p.stdout, p.stderr, int(value) if what == "rss" else float(value)
