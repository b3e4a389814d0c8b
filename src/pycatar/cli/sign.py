"""``pycatar sign --key=KEY INDEX|ARCHIVE``: write the file's signature (:mod:`pycatar.sshsig`)."""

from __future__ import annotations

from .. import sshsig
from ..errors import PycatarError, UsageError
from .common import is_url, log, strip_file_url
from .options import Options


def run(opts: Options, args: list[str]) -> int:
    """``sign --key=KEY FILE``: write FILE.sig (SIG-1), what ``ssh-keygen -Y sign -n pycatar`` writes."""
    if len(args) != 1:
        raise UsageError("Usage: pycatar sign --key=KEY INDEX|ARCHIVE")
    if not opts.sign_key:
        raise UsageError("sign needs --key=FILE (an OpenSSH private key).")
    path = strip_file_url(args[0])
    if is_url(path) or path == "-":
        raise UsageError("sign signs a local file; upload the file and its .sig beside it afterwards.")
    key = sshsig.load_private_key(opts.sign_key)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PycatarError(f'Failed to open "{path}": {e.strerror}') from None
    with f:
        text = sshsig.sign_file(f, key)
    sshsig.write_signature(sshsig.signature_location(path), text)
    log(opts, f"Wrote {sshsig.signature_location(path)}")
    return 0
