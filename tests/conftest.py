"""Shared fixtures.  Interop tests run the real casync; in CI (CI=true) a missing casync fails."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Tests run `python -m pycatar` in other working directories: a relative PYTHONPATH (the guide's
# `PYTHONPATH=src`) must name the same directory there.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p
                                               for p in os.environ["PYTHONPATH"].split(os.pathsep))


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failed one: whatever a test needs (root, casync, nginx, FUSE, XFS on a
    loop device, ext4, /dev/shm...) the test command installs or the machine provides; a missing one
    must show, not pass silently."""
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's standalone S3 server on loopback (``pip install 'moto[server]'``, in the test extra).
    Fails in CI when it cannot be had; skips elsewhere."""
    try:
        import moto.server  # noqa: F401
        import boto3  # noqa: F401
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"moto[server] and boto3 are required in CI ({e})")
        pytest.skip(f"moto[server] not installed (not CI, so skipping): {e}")
    from s3servers import MotoServer

    srv = MotoServer(tmp_path_factory.mktemp("moto"))
    yield srv
    srv.stop()


def _find_ssh_keygen() -> str | None:
    path = shutil.which("ssh-keygen")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client",
                       shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which("ssh-keygen")
    return path


@pytest.fixture(scope="session")
def ssh_keygen() -> str:
    """OpenSSH's ssh-keygen (Debian openssh-client), the signatures' oracle.  Fails in CI when missing."""
    path = _find_ssh_keygen()
    if path is None and IN_CI:
        pytest.fail("ssh-keygen is required in CI (apt-get install openssh-client failed)")
    if path is None:
        pytest.skip("ssh-keygen not installed (not CI, so skipping)")
    return path
