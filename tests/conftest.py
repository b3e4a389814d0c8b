"""Shared fixtures.  Interop tests run the real casync; in CI (CI=true) a missing casync fails."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# `PYTHONPATH=src python3 -m pytest` (pycatar not installed): subprocesses that run `python -m pycatar`
# in another directory need the path made absolute
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)


def _find_casync() -> str | None:
    path = shutil.which("casync")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq casync",
            shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    return shutil.which("casync")


@pytest.fixture(scope="session")
def casync() -> str:
    """Path of the casync binary.  Fails in CI when it cannot be had; skips elsewhere."""
    path = _find_casync()
    if path is None and IN_CI:
        pytest.fail("casync is required in CI (apt-get install casync failed)")
    if path is None:  # outside CI only
        pytest.skip("casync not installed (not CI, so skipping); the interop tests need it")
    return path


@pytest.fixture(scope="session")
def run_casync(casync):
    """run_casync(*args, cwd=None, check=True) -> CompletedProcess (stdout/stderr as bytes)."""

    def run(*args, cwd=None, check=True, input=None, env=None):
        proc = subprocess.run([casync, *map(str, args)], cwd=cwd, capture_output=True, input=input, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"casync {' '.join(map(str, args))} failed: {proc.stderr.decode(errors='replace')}")
        return proc

    return run
