"""What the command line asked for (:class:`Options`, with casync's defaults) and the parsing of
option values the verbs share."""

from __future__ import annotations

from .. import flags, reproducible
from ..errors import UsageError

WHATS = ("archive", "archive-index", "blob", "blob-index", "directory")
TRUE_WORDS = ("1", "yes", "y", "true", "t", "on")
FALSE_WORDS = ("0", "no", "n", "false", "f", "off")


def parse_boolean(value: str, option: str) -> bool:
    v = value.lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise UsageError(f"Failed to parse {option}= parameter: {value}")


class Options:
    """What the command line asked for, with casync's defaults (the class attributes; the lists and
    the dict are each instance's own).  A plain class, not a dataclass: generating the methods of a
    dataclass this size costs 5-12 ms of every command's start-up (python3 -X importtime, 2026-12-02)."""

    verbose: bool = False
    dry_run: bool = False
    store: str | None = None
    extra_stores: list[str]
    chunk_size: str | None = None
    seeds: list[str]
    cache: str | None = None
    with_: list[str]
    without: list[str]
    what: str | None = None
    exclude_nodump: bool = True
    exclude_submounts: bool = False
    exclude_file: bool = True
    undo_immutable: bool = False
    delete: bool = True
    punch_holes: bool = True
    reflink: bool = True
    hardlink: bool = False
    seed_output: bool = True
    recursive: bool = True
    uid_shift: int | None = None
    uid_range: int | None = None
    # pycatar's own (spec/reproducible.md, spec/tar.md)
    reproducible: bool = False
    owner: int | None = None
    group: int | None = None
    input_format: str | None = None
    output_format: str | None = None
    digest: str = "sha512-256"
    compression: str = "zstd"
    json: bool = False
    mkdir: bool = True                        #: mount: create the mount point if missing
    foreground: bool = False                  #: mount: serve in the foreground
    # network (pycatar's own: spec/store.md)
    chunk_cache: str | None = None
    http: dict                                #: HTTPOptions fields the command line set
    remote: object = None                     #: the command's HTTP client, made on first use
    repair: bool = False                      #: verify: remove bad chunk files
    progress: bool = True                     #: progress bars on a terminal (--no-progress: none)
    # serve (spec/store.md, SERVE-1..3)
    index_dir: str | None = None
    listen: str | None = None
    writable: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    # object stores and signatures (spec/store.md STORE-18.., SIG-1..)
    grace: float | None = None                #: gc: seconds a chunk is safe from removal (None: default)
    sign_key: str | None = None               #: sign: the private key
    verify_key: str | None = None             #: the public key an index's signature must verify with
    allowed_signers: str | None = None        #: or a file of such keys (ssh-keygen's allowed signers)

    def __init__(self, **values) -> None:
        self.extra_stores, self.seeds, self.with_, self.without, self.http = [], [], [], [], {}
        for name, value in values.items():
            if name not in Options.__annotations__:
                raise TypeError(f"Options() got an unexpected keyword argument {name!r}")
            setattr(self, name, value)

    def feature_flags(self, default_with: int | None = None, normalized: bool = True) -> int:
        """The feature flags the options select (for an encoder), or un-normalised, the mask a
        decoder applies when reading (casync passes the same value to both)."""
        if self.reproducible and normalized and default_with is None:
            return reproducible.feature_flags(self.with_, self.without, digest=self.digest,
                                              exclude_nodump=self.exclude_nodump,
                                              exclude_submounts=self.exclude_submounts,
                                              exclude_file=self.exclude_file)
        kw = {} if default_with is None else {"default_with": default_with}
        return flags.from_options(
            self.with_, self.without, digest=self.digest, exclude_nodump=self.exclude_nodump,
            exclude_submounts=self.exclude_submounts, exclude_file=self.exclude_file,
            normalized=normalized, **kw)

    def feature_mask(self) -> int:
        return self.feature_flags(normalized=False)

    def uid_options(self) -> dict:
        if self.uid_shift is None and self.uid_range is None:
            return {}
        rng = 0x10000 if self.uid_range is None else self.uid_range
        return {"uid_shift": self.uid_shift or 0, "uid_range": 0 if rng == 0x100000000 else rng}


_MAKE_ONLY = (("reproducible", "--reproducible"), ("owner", "--owner="), ("group", "--group="),
              ("input_format", "--input-format="))
_SERVE_ONLY = (("index_dir", "--index-dir="), ("listen", "--listen="), ("writable", "--writable"),
               ("tls_cert", "--tls-cert="), ("tls_key", "--tls-key="))


def apply_format_options(opts: Options, values: dict, verb: str) -> None:
    """--reproducible, --owner=, --group=, --input-format=, --output-format= (pycatar's own), from the
    parsed command line ``values``."""
    opts.reproducible = bool(values["reproducible"])
    for name in ("owner", "group"):
        value = values[name]
        if value is not None:
            if not value.isdigit() or int(value) > 0xFFFFFFFF:
                raise UsageError(f"Failed to parse --{name}= parameter: {value} (a numeric id is expected)")
            setattr(opts, name, int(value))
    for name in ("input_format", "output_format"):
        value = values[name]
        if value is not None and value != "tar":
            raise UsageError(f"Failed to parse --{name.replace('_', '-')}= parameter: {value} (supported: tar)")
        setattr(opts, name, value)
    for name, option in _MAKE_ONLY:
        if getattr(opts, name) not in (None, False) and verb != "make":
            raise UsageError(f'{option} applies to the "make" verb only.')
    for name, option in _SERVE_ONLY:
        value = values[name]
        if value not in (None, False) and verb != "serve":
            raise UsageError(f'{option} applies to the "serve" verb only.')
        setattr(opts, name, bool(value) if name == "writable" else value)
    if opts.output_format is not None and verb != "extract":
        raise UsageError('--output-format= applies to the "extract" verb only.')
    if opts.reproducible or opts.input_format:
        # a reproducible archive holds the whole tree (REPRO-6); a tar has nothing to exclude (TAR-3)
        if values["exclude_nodump"] is None:
            opts.exclude_nodump = False
        if values["exclude_file"] is None:
            opts.exclude_file = False
    if opts.input_format and (opts.exclude_nodump or opts.exclude_file or opts.exclude_submounts):
        raise UsageError("--exclude-nodump=, --exclude-file= and --exclude-submounts= apply to directories, "
                         "not to tar input.")


def apply_network_options(opts: Options, values: dict) -> None:
    """--chunk-cache=, --concurrency=, --http-timeout=, --http-retries=, --http-auth=, --ca-cert=,
    --client-cert=, --client-key= (pycatar's own)."""
    opts.chunk_cache = values["chunk_cache"]
    opts.repair = bool(values["repair"])
    opts.progress = not values["no_progress"]
    opts.foreground = bool(values["foreground"])
    for name, key, low in (("concurrency", "concurrency", 1), ("http_retries", "retries", 0)):
        value = values[name]
        if value is not None:
            if not value.isdigit() or not low <= int(value) <= 1024:
                raise UsageError(f"Failed to parse --{name.replace('_', '-')}= parameter: {value}")
            opts.http[key] = int(value)
    value = values["http_timeout"]
    if value is not None:
        try:
            t = float(value)
        except ValueError:
            t = -1
        if not 0 < t <= 3600:
            raise UsageError(f"Failed to parse --http-timeout= parameter: {value}")
        opts.http["timeout"] = opts.http["connect_timeout"] = t
    for name, key in (("http_auth", "auth"), ("ca_cert", "ca_file"), ("client_cert", "client_cert"),
                      ("client_key", "client_key")):
        value = values[name]
        if value is not None:
            opts.http[key] = value


def apply_objstore_options(opts: Options, values: dict) -> None:
    """--grace=, --key=, --verify-key=, --allowed-signers= (pycatar's own)."""
    value = values["grace"]
    if value is not None:
        opts.grace = parse_duration(value, "--grace")
    opts.sign_key = values["key"]
    opts.verify_key = values["verify_key"]
    opts.allowed_signers = values["allowed_signers"]
    if opts.verify_key and opts.allowed_signers:
        raise UsageError("--verify-key= and --allowed-signers= cannot be combined; give one.")


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> float:
    """``90``, ``30s``, ``15m``, ``2h``, ``1d``, ``1w`` (a number and a unit) in seconds."""
    t = text.strip()
    unit = t[-1:] if t[-1:] in _UNITS else ""
    whole, dot, fraction = t[:len(t) - len(unit)].partition(".")
    if not _decimal(whole) or (dot and not _decimal(fraction)):
        raise UsageError(f"Failed to parse {option}= parameter: {text}")
    return float(whole + dot + fraction) * _UNITS[unit]


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()
