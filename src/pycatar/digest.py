"""Digest algorithms for chunk ids and archive digests: sha512-256 (default), sha256, blake3."""

from __future__ import annotations

from .errors import UsageError

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
    """The 32-byte digest of ``data``.  hashlib and blake3 release the GIL on large buffers."""
    h = new(name)
    h.update(data)
    return h.digest()
