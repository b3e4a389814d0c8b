"""Digest algorithms for chunk ids and archive digests: sha512-256 (default), sha256, blake3."""

from __future__ import annotations

from .errors import PycatarError, UsageError

DIGEST_NAMES = ("sha512-256", "sha256", "blake3")


def new(name: str):
    """A fresh hash object (with ``update``/``digest``/``hexdigest``) for the named digest."""
    import hashlib  # start-up: OpenSSL's set-up (2-3 ms) only for the commands that hash

    if name == "sha512-256":
        return hashlib.new("sha512_256")
    if name == "sha256":
        return hashlib.sha256()
    if name == "blake3":
        import blake3  # imported lazily: keep start-up fast

        return blake3.blake3(max_threads=1)
    raise UsageError(f"Failed to parse --digest= parameter: {name}")


def digest(name: str, data) -> bytes:
    """The 32-byte digest of ``data`` (see :func:`digest_many`)."""
    return digest_many(name, [data])[0]


def digest_many(name: str, datas: list) -> list[bytes]:
    """The 32-byte digest of each of ``datas``: SHA-2 by libcrypto (hashlib's OpenSSL), the whole
    batch in one call with the GIL released once; BLAKE3 a call each (released on large buffers)."""
    if name in _SHA2:
        return _libcrypto().digest_many(name, datas)
    out = []
    for d in datas:
        h = new(name)
        h.update(d)
        out.append(h.digest())
    return out


_SHA2 = ("sha512-256", "sha256")
#: where libcrypto is looked for after the one hashlib loaded
LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
_sha = None


def _libcrypto_names() -> list[str]:
    """The libcrypto hashlib loaded (the same library, found in the process's mappings), then the
    usual names."""
    names = []
    try:
        import _hashlib  # noqa: F401

        with open("/proc/self/maps") as maps:
            names = sorted({line.split()[-1] for line in maps if "/libcrypto.so" in line})
    except (ImportError, OSError):
        pass
    return names + list(LIBCRYPTO_NAMES)


def _libcrypto():
    """pycatar._sha with libcrypto loaded (PycatarError saying what to install)."""
    global _sha
    if _sha is not None:
        return _sha
    from . import _sha as mod

    problems = []
    for name in _libcrypto_names():
        try:
            mod.load(name)
        except OSError as e:
            problems.append(str(e))
            continue
        _sha = mod
        return mod
    raise PycatarError(f"SHA-2 digests need libcrypto (Debian: apt-get install libssl3): {'; '.join(problems)}")
