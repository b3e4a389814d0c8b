"""Signatures of index and archive files in OpenSSH's SSHSIG format (``ssh-keygen -Y sign``;
OpenSSH's PROTOCOL.sshsig), under the namespace ``pycatar`` (spec/store.md, SIG-1..SIG-5).

A signature is the file ``<index>.sig`` beside the index: the armoured (``-----BEGIN SSH
SIGNATURE-----``, base64) blob::

    byte[6] "SSHSIG"  uint32 1  string publickey  string namespace  string reserved
    string hash_algorithm  string signature

whose ``signature`` signs ``"SSHSIG" string namespace string reserved string hash_algorithm
string H(file)``.  Keys: ed25519, ECDSA (nistp256/384/521) and RSA (rsa-sha2-512/256).  The wire
formats (key blobs, signature blobs, the envelope) are written here; the arithmetic is the
``cryptography`` library's (pyca: the well-kept binding of OpenSSL), which also reads OpenSSH
private key files.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

from .errors import PycatarError, UsageError
from .fileio import write_atomic

NAMESPACE = "pycatar"
MAGIC = b"SSHSIG"
VERSION = 1
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
SIG_SUFFIX = ".sig"
#: a signature file larger than this is not one (an RSA-16384 signature is about 5 KiB)
MAX_SIG_FILE = 64 << 10
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_ECDSA = {"ecdsa-sha2-nistp256": ("nistp256", "SECP256R1", "sha256"),
          "ecdsa-sha2-nistp384": ("nistp384", "SECP384R1", "sha384"),
          "ecdsa-sha2-nistp521": ("nistp521", "SECP521R1", "sha512")}
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *_ECDSA)


class SignatureError(PycatarError):
    """A signature that is missing, malformed, by another key, or not of this file."""


# --------------------------------------------------------------------------- wire format


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _mpint(n: int) -> bytes:
    if n == 0:
        return _string(b"")
    b = n.to_bytes((n.bit_length() + 8) // 8, "big")  # a leading 0 keeps it positive
    return _string(b)


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise SignatureError(f"{self.what}: truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        b = self.string()
        if b and b[0] & 0x80:
            raise SignatureError(f"{self.what}: negative number")
        return int.from_bytes(b, "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError(f"{self.what}: {len(self.data) - self.pos} bytes of trailing data")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    blob: bytes        #: the OpenSSH wire form (what authorized_keys lines carry in base64)
    key_type: str

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def crypto_key(self):
        """The key as a ``cryptography`` public key object."""
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        r = _Reader(self.blob, f"{self.key_type} key")
        kt = r.string().decode("ascii", "replace")
        if kt == "ssh-ed25519":
            raw = r.string()
            r.end()
            if len(raw) != 32:
                raise SignatureError("ssh-ed25519 key: not 32 bytes")
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        if kt == "ssh-rsa":
            e, n = r.mpint(), r.mpint()
            r.end()
            if n.bit_length() < 1024:
                raise SignatureError("ssh-rsa key: shorter than 1024 bits")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kt in _ECDSA:
            curve_name, curve, _ = _ECDSA[kt]
            if r.string() != curve_name.encode():
                raise SignatureError(f"{kt} key: wrong curve")
            point = r.string()
            r.end()
            try:
                return ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, curve)(), point)
            except ValueError:
                raise SignatureError(f"{kt} key: not a point of the curve") from None
        raise SignatureError(f"unsupported key type {kt!r}")


def public_key_from_crypto(key) -> PublicKey:
    """The OpenSSH wire form of a ``cryptography`` public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(_string(b"ssh-ed25519") + _string(raw), "ssh-ed25519")
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return PublicKey(_string(b"ssh-rsa") + _mpint(nums.e) + _mpint(nums.n), "ssh-rsa")
    if isinstance(key, ec.EllipticCurvePublicKey):
        for kt, (curve_name, curve, _) in _ECDSA.items():
            if isinstance(key.curve, getattr(ec, curve)):
                point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
                return PublicKey(_string(kt.encode()) + _string(curve_name.encode()) + _string(point), kt)
    raise SignatureError(f"unsupported key type {type(key).__name__}")


def parse_public_key_line(line: str, what: str) -> PublicKey:
    """``TYPE BASE64 [COMMENT]`` (an ``.pub`` file or authorized_keys entry without options)."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise SignatureError(f"{what}: not an OpenSSH public key (expected one of {', '.join(KEY_TYPES)})")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise SignatureError(f"{what}: bad base64 in the key") from None
    r = _Reader(blob, what)
    if r.string() != parts[0].encode():
        raise SignatureError(f"{what}: the key's type does not match its text")
    key = PublicKey(blob, parts[0])
    key.crypto_key()  # validates
    return key


def load_public_key(path: str) -> PublicKey:
    """The key of an OpenSSH ``.pub`` file."""
    text = _read_text(path, "public key")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise SignatureError(f"public key {path}: expected one key line")
    return parse_public_key_line(lines[0], f"public key {path}")


def _split_fields(line: str) -> list[str]:
    """Whitespace-separated fields; double quotes keep spaces (allowed-signers options)."""
    out, cur, quoted, started = [], [], False, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
            started = True
        elif ch.isspace() and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if quoted:
        raise ValueError("unbalanced quotes")
    if started:
        out.append("".join(cur))
    return out


def _split_options(text: str) -> list[str]:
    """``a,b="x,y",c``: the comma-separated options (commas inside quotes kept)."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [o for o in out if o]


def load_allowed_signers(path: str) -> list[PublicKey]:
    """The keys of an allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS) that may sign in the
    ``pycatar`` namespace: ``PRINCIPALS [OPTIONS] TYPE BASE64 [COMMENT]`` per line.  A line with
    ``namespaces=`` not matching ``pycatar`` is skipped; one with ``cert-authority``,
    ``valid-after=``/``valid-before=`` or an unknown option too (not supported: never trusted)."""
    text = _read_text(path, "allowed signers file")
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = _split_fields(line)
        except ValueError:
            raise SignatureError(f"allowed signers file {path}, line {n}: unbalanced quotes") from None
        if len(fields) < 3:
            raise SignatureError(f"allowed signers file {path}, line {n}: expected PRINCIPALS [OPTIONS] KEY")
        i = 1
        usable = True
        if fields[1] not in KEY_TYPES:
            for opt in _split_options(fields[1]):
                name, _, value = opt.partition("=")
                if name.lower() == "namespaces":
                    patterns = value.strip('"').split(",")
                    if not any(fnmatch.fnmatchcase(NAMESPACE, p.strip()) for p in patterns):
                        usable = False
                else:
                    usable = False  # cert-authority, validity windows, ...: not supported, never trusted
            i = 2
        if len(fields) <= i + 1:
            raise SignatureError(f"allowed signers file {path}, line {n}: no key")
        key = parse_public_key_line(f"{fields[i]} {fields[i + 1]}", f"allowed signers file {path}, line {n}")
        if usable:
            keys.append(key)
    if not keys:
        raise SignatureError(f"allowed signers file {path}: no key may sign in the {NAMESPACE} namespace")
    return keys


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIG_FILE + 1)
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror}") from None
    if len(data) > MAX_SIG_FILE:
        raise SignatureError(f"{what} {path}: too large")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError(f"{what} {path}: not text") from None


# --------------------------------------------------------------------------- signing


def _file_hash(f: BinaryIO, hash_alg: str) -> bytes:
    h = _HASHES[hash_alg]()
    f.seek(0)
    while True:
        piece = f.read(1 << 20)
        if not piece:
            break
        h.update(piece)
    f.seek(0)
    return h.digest()


def _signed_data(namespace: bytes, reserved: bytes, hash_alg: bytes, digest: bytes) -> bytes:
    return MAGIC + _string(namespace) + _string(reserved) + _string(hash_alg) + _string(digest)


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def load_private_key(path: str):
    """A ``cryptography`` private key from an OpenSSH (or PEM) private key file without passphrase."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise UsageError(f"key {path}: {e.strerror}") from None
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            return serialization.load_ssh_private_key(data, password=None)
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"key {path} is protected by a passphrase; sign with ssh-keygen -Y sign -n {NAMESPACE} "
                         "(the same format)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        why = str(e).splitlines()[0] if str(e) else "unreadable"
        raise UsageError(f"key {path}: not an OpenSSH private key ({why})") from None


def sign_file(f: BinaryIO, private_key, *, hash_alg: str = "sha512") -> str:
    """SIG-1: the armoured SSHSIG signature of the file ``f`` by ``private_key``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    pub = public_key_from_crypto(private_key.public_key())
    data = _signed_data(NAMESPACE.encode(), b"", hash_alg.encode(), _file_hash(f, hash_alg))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        sig = _string(b"ssh-ed25519") + _string(private_key.sign(data))
    elif isinstance(private_key, rsa.RSAPrivateKey):
        sig = _string(b"rsa-sha2-512") + _string(private_key.sign(data, padding.PKCS1v15(), hashes.SHA512()))
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        hname = _ECDSA[pub.key_type][2]
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(getattr(hashes, hname.upper())())))
        sig = _string(pub.key_type.encode()) + _string(_mpint(r) + _mpint(s))
    else:
        raise UsageError(f"unsupported key type {type(private_key).__name__}")
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(pub.blob) + _string(NAMESPACE.encode()) + _string(b"")
            + _string(hash_alg.encode()) + _string(sig))
    return armor(blob)


def signature_location(location: str) -> str:
    """SIG-2: where the signature of the file at ``location`` lives: ``.sig`` appended to its path
    (before a URL's query)."""
    if "://" in location and "?" in location:
        base, _, query = location.partition("?")
        return f"{base}{SIG_SUFFIX}?{query}"
    return location + SIG_SUFFIX


# --------------------------------------------------------------------------- verification


@dataclass
class Signature:
    key: PublicKey
    namespace: str
    hash_alg: str
    sig_type: str
    sig: bytes


def parse_signature(text: bytes, what: str) -> Signature:
    """SIG-3: the parts of an armoured SSHSIG signature; :class:`SignatureError` when malformed."""
    try:
        s = text.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SignatureError(f"{what}: malformed (not text)") from None
    if not (s.startswith(ARMOR_BEGIN) and s.endswith(ARMOR_END)):
        raise SignatureError(f"{what}: malformed (not an SSH signature)")
    body = "".join(s[len(ARMOR_BEGIN):-len(ARMOR_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except ValueError:
        raise SignatureError(f"{what}: malformed (bad base64)") from None
    r = _Reader(blob, f"{what}: malformed")
    if r.take(6) != MAGIC:
        raise SignatureError(f"{what}: malformed (no SSHSIG preamble)")
    version = r.uint32()
    if version != VERSION:
        raise SignatureError(f"{what}: unsupported version {version}")
    key_blob = r.string()
    namespace = r.string()
    r.string()  # reserved
    hash_alg = r.string().decode("ascii", "replace")
    sig_blob = r.string()
    r.end()
    kr = _Reader(key_blob, f"{what}: malformed key")
    key_type = kr.string().decode("ascii", "replace")
    if key_type not in KEY_TYPES:
        raise SignatureError(f"{what}: unsupported key type {key_type!r}")
    if hash_alg not in _HASHES:
        raise SignatureError(f"{what}: unsupported hash algorithm {hash_alg!r}")
    sr = _Reader(sig_blob, f"{what}: malformed signature")
    sig_type = sr.string().decode("ascii", "replace")
    sig = sr.string()
    sr.end()
    return Signature(PublicKey(key_blob, key_type), namespace.decode("utf-8", "replace"), hash_alg, sig_type, sig)


def verify_file(f: BinaryIO, sig_text: bytes, allowed: list[PublicKey], *, what: str) -> PublicKey:
    """SIG-4: check that ``sig_text`` is a signature of the file ``f`` in the ``pycatar`` namespace by
    one of the ``allowed`` keys; the key, or :class:`SignatureError` saying why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    sig = parse_signature(sig_text, what)
    if sig.namespace != NAMESPACE:
        raise SignatureError(f"{what}: made for namespace {sig.namespace!r}, not {NAMESPACE!r}")
    key = next((k for k in allowed if k.blob == sig.key.blob), None)
    if key is None:
        raise SignatureError(f"{what}: made by another key ({sig.key.key_type} {sig.key.fingerprint})")
    data = _signed_data(NAMESPACE.encode(), b"", sig.hash_alg.encode(), _file_hash(f, sig.hash_alg))
    pub = key.crypto_key()
    try:
        if key.key_type == "ssh-ed25519":
            if sig.sig_type != "ssh-ed25519":
                raise SignatureError(f"{what}: malformed (signature type {sig.sig_type!r} for an ed25519 key)")
            pub.verify(sig.sig, data)
        elif key.key_type == "ssh-rsa":
            h = {"rsa-sha2-512": hashes.SHA512(), "rsa-sha2-256": hashes.SHA256()}.get(sig.sig_type)
            if h is None:
                raise SignatureError(f"{what}: unsupported RSA signature type {sig.sig_type!r}")
            pub.verify(sig.sig, data, padding.PKCS1v15(), h)
        else:
            from cryptography.hazmat.primitives.asymmetric import ec

            if sig.sig_type != key.key_type:
                raise SignatureError(f"{what}: malformed (signature type {sig.sig_type!r} for a {key.key_type} key)")
            rr = _Reader(sig.sig, f"{what}: malformed ECDSA signature")
            r, s = rr.mpint(), rr.mpint()
            rr.end()
            h = getattr(hashes, _ECDSA[key.key_type][2].upper())()
            pub.verify(encode_dss_signature(r, s), data, ec.ECDSA(h))
    except InvalidSignature:
        raise SignatureError(f"{what}: does not match the file (the file or its signature was altered, "
                             "or it signs another file)") from None
    return key


def allowed_keys(verify_key: str | None, allowed_signers: str | None) -> list[PublicKey] | None:
    """The keys ``--verify-key=`` or ``--allowed-signers=`` name (None: no verification asked)."""
    if verify_key:
        return [load_public_key(verify_key)]
    if allowed_signers:
        return load_allowed_signers(allowed_signers)
    return None


def write_signature(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary name, then renamed)."""
    try:
        write_atomic(path, text.encode("ascii"))
    except OSError as e:
        raise PycatarError(f"cannot write {path}: {e.strerror}") from None
