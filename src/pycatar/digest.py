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
    """The 32-byte digest of each of ``datas``: SHA-2 by pycatar._sha, the whole batch in one call with
    the GIL released once (SHA-512/256 several buffers at a time where the CPU allows, else by
    libcrypto, loaded on first need); BLAKE3 a call each (released on large buffers)."""
    if name in _SHA2:
        sha = _sha or _load_sha()
        if sha.needs_load(name, len(datas)):
            if name == "sha512-256" and sha.LANES and _narrow_lanes(datas):
                return sha.digest_many(name, datas, sha.LANES)
            _load_libcrypto(sha)
        return sha.digest_many(name, datas)
    out = []
    for d in datas:
        h = new(name)
        h.update(d)
        out.append(h.digest())
    return out


_SHA2 = ("sha512-256", "sha256")
#: SHA-512/256 batches too small for the lanes to beat libcrypto (below LANES_MIN) still go through
#: them while libcrypto is not loaded, up to this many bytes in all.  Loading it (hashlib's import and
#: OpenSSL's set-up) takes 3-4 ms, what one lane loses to libcrypto over about 1 MiB (238 against 503
#: MB/s): an extraction, which verifies its chunks in batches and the chunk of zeros alone, needs none.
NARROW_LANES_BYTES = 1 << 20
_narrow_bytes = 0
#: where libcrypto is looked for after the one hashlib loaded
LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
_sha = None


def _load_sha():
    global _sha
    from . import _sha as mod

    _sha = mod
    return mod


def _narrow_lanes(datas: list) -> bool:
    """Whether a small SHA-512/256 batch still goes through the lanes (NARROW_LANES_BYTES)."""
    global _narrow_bytes
    size = sum(len(d) for d in datas)
    if _narrow_bytes + size > NARROW_LANES_BYTES:
        return False
    _narrow_bytes += size  # (two threads at once may both count: the bound is a cost, not a limit)
    return True


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


def _load_libcrypto(sha) -> None:
    """libcrypto loaded into pycatar._sha (PycatarError saying what to install).  Only when a digest
    first needs it: hashlib's import and OpenSSL's set-up take 3-4 ms, and an extraction whose
    batches all take the lanes needs none of it."""
    problems = []
    for name in _libcrypto_names():
        try:
            sha.load(name)
        except OSError as e:
            problems.append(str(e))
            continue
        return
    raise PycatarError(f"SHA-2 digests need libcrypto (Debian: apt-get install libssl3): {'; '.join(problems)}")
