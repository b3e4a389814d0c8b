"""The ``pycatar`` command: casync's verbs and options, accepted before or after the verb.

The command parses the options shared by every verb into :class:`~.options.Options`, then hands the
verb's arguments to the verb's module (:data:`VERBS`), which calls the library.  Every error ends as
one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading

from .. import __version__
from ..digest import DIGEST_NAMES
from ..errors import PycatarError, UsageError
from ..flags import WITH_MASK, format_with_flags, parse_with_name
from .options import (WHATS, Options, apply_format_options, apply_network_options, apply_objstore_options,
                      parse_boolean)

#: verb -> (module of :mod:`pycatar.cli`, its function taking (Options, arguments)).  The command imports
#: only the module of the verb it runs: importing all of them (and so the whole library: the HTTP client,
#: the server, FUSE...) costs about 0.5 s of start-up (python3 -X importtime, measured 2026-12-02) that
#: ``pycatar list`` or ``pycatar --help`` should not pay.
VERBS = {
    "make": ("make", "run"),
    "extract": ("extract", "run"),
    "gc": ("gc", "run"),
    "list": ("list", "run_list"),
    "mtree": ("list", "run_mtree"),
    "stat": ("list", "run_stat"),
    "digest": ("digest", "run"),
    "verify": ("verify", "run"),
    "info": ("info", "run"),
    "cat": ("cat", "run"),
    "chunk": ("chunk", "run"),
    "list-chunks": ("list_chunks", "run"),
    "serve": ("serve", "run"),
    "mount": ("mount", "run"),
    "sign": ("sign", "run"),
}


def _verb_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")  # only the verb's module: see VERBS


def verb_handler(verb: str):
    """The function that runs ``verb`` (None for a verb pycatar does not have)."""
    where = VERBS.get(verb)
    return None if where is None else getattr(_verb_module(where[0]), where[1])


COMMAND_HELP = """Content-addressable archives, casync-compatible.

pycatar [OPTIONS...] make [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH]
pycatar [OPTIONS...] extract [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH] [SUBPATH]
pycatar [OPTIONS...] list [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]
pycatar [OPTIONS...] mtree [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]
pycatar [OPTIONS...] stat [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [PATH]
pycatar [OPTIONS...] digest [ARCHIVE|BLOB|ARCHIVE_INDEX|BLOB_INDEX|DIRECTORY]
pycatar [OPTIONS...] gc BLOB_INDEX|ARCHIVE_INDEX...
pycatar [OPTIONS...] verify [--repair] STORE | verify INDEX
pycatar [OPTIONS...] info [--seed=…] [--store=…] [--json] INDEX
pycatar [OPTIONS...] cat INDEX [OFFSET [LENGTH]]
pycatar [OPTIONS...] chunk FILE
pycatar [OPTIONS...] list-chunks INDEX
pycatar [OPTIONS...] mount [--foreground] ARCHIVE|ARCHIVE_INDEX PATH [SUBPATH]
pycatar [OPTIONS...] mount [--foreground] BLOB_INDEX PATH
pycatar [OPTIONS...] make --input-format=tar [ARCHIVE|ARCHIVE_INDEX] TAR|-
pycatar [OPTIONS...] extract --output-format=tar ARCHIVE|ARCHIVE_INDEX|- TAR|- [SUBPATH]
pycatar [OPTIONS...] serve --store=DIR|s3+http(s)://… [--index-dir=DIR] [--listen=HOST:PORT] [--writable]
pycatar [OPTIONS...] sign --key=KEY INDEX|ARCHIVE
pycatar vectors verify|generate ...    (test vectors: pycatar vectors --help)

pycatar VERB --help shows the options of one verb. Shell completion:
eval "$(_PYCATAR_COMPLETE=bash_source pycatar)"    (zsh: zsh_source)
"""


class _Option:
    """One option of the command: its names, the key it is kept under, and its help.  ``metavar`` None:
    a flag; ``many``: every occurrence is kept (a list)."""

    __slots__ = ("names", "key", "metavar", "many", "help")

    def __init__(self, names: str, metavar: str | None, help_text: str, many: bool = False) -> None:
        self.names = tuple(names.split())
        self.key = self.names[-1].lstrip("-").replace("-", "_")
        self.metavar = metavar
        self.many = many
        self.help = help_text

    def label(self) -> str:
        """The option as help shows it: ``-l, --log-level LEVEL``."""
        return ", ".join(self.names) + (f" {self.metavar}" if self.metavar else "")


def _bool(name: str, help_text: str) -> _Option:
    return _Option(f"--{name}", "BOOL", help_text)


#: every option of the command (casync's first, then pycatar's own), in the order --help lists them
OPTIONS = (
    _Option("--version", None, "Show brief version information."),
    _Option("-l --log-level", "LEVEL", "Set log level (debug, info, err)."),
    _Option("-v --verbose", None, "Show terse status information during runtime."),
    _Option("-n --dry-run", None, "When garbage collecting, only print what would be done."),
    _Option("--store", "PATH", "The primary chunk store to use."),
    _Option("--extra-store", "PATH", "Additional chunk store to look for chunks in.", many=True),
    _Option("--chunk-size", "[MIN:]AVG[:MAX]", "The minimal/average/maximum bytes in a chunk."),
    _Option("--digest", "DIGEST", "Digest algorithm: sha512-256 (default), sha256 or blake3."),
    _Option("--compression", "COMPRESSION", "Compression algorithm: zstd (default), xz or gzip."),
    _Option("--seed", "PATH", "Additional file or directory to use as seed.", many=True),
    _Option("--cache", "PATH", "Directory to use as encoder cache (extract: seed cache)."),
    _Option("-c --cache-auto", None, "Pick encoder cache directory automatically."),
    _Option("--rate-limit-bps", "LIMIT", "Maximum bandwidth for remote communication."),
    _bool("exclude-nodump", "Exclude files with chattr(1)'s +d 'nodump' flag (default: yes)."),
    _bool("exclude-submounts", "Exclude submounts when creating an archive (default: no)."),
    _bool("exclude-file", "Respect .caexclude files in the file tree (default: yes)."),
    _bool("reflink", "Create reflinks from seeds when extracting (default: yes)."),
    _bool("hardlink", "Create hardlinks from seeds when extracting (default: no)."),
    _bool("punch-holes", "Create sparse files when extracting (default: yes)."),
    _bool("delete", "Delete existing files not in the archive after extraction (default: yes)."),
    _bool("undo-immutable", "When removing existing files, undo chattr(1)'s +i (default: no)."),
    _bool("seed-output", "Implicitly use pre-existing output as seed when extracting (default: yes)."),
    _bool("recursive", "List recursively (default: yes)."),
    _bool("mkdir", "Create the mount directory if missing (default: yes)."),
    _Option("--uid-shift", "yes|SHIFT", "Shift UIDs/GIDs."),
    _Option("--uid-range", "RANGE", "Restrict UIDs/GIDs to range."),
    _Option("--with", "FEATURE", "Store this feature (see --with=help).", many=True),
    _Option("--without", "FEATURE", "Do not store this feature.", many=True),
    _Option("--what", "WHAT", "archive, archive-index, blob, blob-index or directory."),
    _Option("--reproducible", None, "make: the same bytes on any machine (fixed feature set, owners 0/0, mtimes "
            "clamped to $SOURCE_DATE_EPOCH); --with=/--without= refine it."),
    _Option("--owner", "UID", "make: store this numeric owner for every entry."),
    _Option("--group", "GID", "make: store this numeric group for every entry."),
    _Option("--input-format", "FORMAT", "make: read a tar (file or -) instead of a directory."),
    _Option("--output-format", "FORMAT", "extract: write a tar (file or -) instead of a directory."),
    _Option("--chunk-cache", "DIR", "A local store in front of the others: chunks are read from it first, and "
            "every chunk fetched elsewhere is kept in it."),
    _Option("--concurrency", "N", "Requests to remote stores in flight at once (default: 16)."),
    _Option("--http-timeout", "SECONDS", "Give up on a silent server after this long (default: 30)."),
    _Option("--http-retries", "N", "Retries of a failed request, with backoff (default: 5)."),
    _Option("--http-auth", "VALUE", "Authorization header sent to HTTP servers (default: $PYCATAR_HTTP_AUTH); "
            "never printed."),
    _Option("--ca-cert", "FILE", "Trust this CA certificate bundle for https:// instead of the system's."),
    _Option("--client-cert", "FILE", "Client certificate (PEM) for https:// servers that ask for one."),
    _Option("--client-key", "FILE", "Key of the client certificate, if not in its file."),
    _Option("--no-progress", None, "No progress display (shown on standard error only when it is a terminal)."),
    _Option("--repair", None, "verify: remove chunk files that fail verification from the store."),
    _Option("--index-dir", "DIR", "serve: serve the index files (and other files) of DIR too."),
    _Option("--listen", "HOST:PORT", "serve: the address to listen on (default: 127.0.0.1:8740; [::1]:PORT for "
            "IPv6; port 0: any)."),
    _Option("--writable", None, "serve: accept chunks and indexes uploaded with PUT (verified first)."),
    _Option("--tls-cert", "FILE", "serve: serve HTTPS with this certificate (PEM chain)."),
    _Option("--tls-key", "FILE", "serve: the private key of --tls-cert= (PEM)."),
    _Option("--foreground", None, "mount: serve in the foreground (default: return once mounted)."),
    _Option("--grace", "DURATION", "gc: never remove a chunk written less than this long ago (default: 1d; "
            "0: as casync; units s, m, h, d)."),
    _Option("--key", "FILE", "sign: the OpenSSH private key to sign with."),
    _Option("--verify-key", "FILE", "Refuse an index or archive unless INDEX.sig (beside it) is its signature "
            "by this OpenSSH public key (namespace pycatar)."),
    _Option("--allowed-signers", "FILE", "Like --verify-key=, with any key of this ssh-keygen allowed-signers "
            "file."),
    _Option("--json", None, "make, extract, gc, verify, info, list-chunks: print the result as JSON on standard "
            "output (schemas in the README)."),
    _Option("-h --help", None, "Show this message and exit."),
)
_BY_NAME = {name: o for o in OPTIONS for name in o.names}
_BY_KEY = {o.key: o for o in OPTIONS}


class _CommandLineError(Exception):
    """The arguments do not parse (exit status 2, as casync's getopt errors)."""


def parse(args: list[str]) -> dict:
    """The command line ``args`` as {option key: value} (None or False when absent, a list for the
    options given many times) plus ``args``: the verb and its arguments.

    Read as casync's getopt_long reads its own: options anywhere, before or after the verb (getopt
    permutes them); ``--`` ends them; a value in the same argument (``--store=S``, ``-ldebug``) or the
    next one, whatever it starts with; short flags bundled (``-vn``).  Unlike getopt_long, a long
    option is named in full: no abbreviations.  (Not argparse: this is all of it, and argparse with
    gettext and locale took 5-7 ms of every command's start-up, 2026-12-03.)"""
    values: dict = {o.key: [] if o.many else None if o.metavar else False for o in OPTIONS}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            rest += args[i:]
            break
        if not a.startswith("-") or a == "-":
            rest.append(a)
            continue
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            o = _BY_NAME.get(name)
            if o is None:
                raise _CommandLineError(f"unrecognized option '{name}'")
            if o.metavar is None and eq:
                raise _CommandLineError(f"option '{name}' doesn't allow an argument")
            todo = [(o, value if eq else None)]
        else:
            todo = []
            for k in range(1, len(a)):
                o = _BY_NAME.get("-" + a[k])
                if o is None:
                    raise _CommandLineError(f"unrecognized option '-{a[k]}'")
                if o.metavar is not None:  # the rest of the argument is its value, if any
                    todo.append((o, a[k + 1:] or None))
                    break
                todo.append((o, None))
        for o, value in todo:
            if o.metavar is None:
                values[o.key] = True
                continue
            if value is None:
                if i == len(args):
                    raise _CommandLineError(f"option '{o.names[-1]}' requires an argument")
                value = args[i]
                i += 1
            if o.many:
                values[o.key].append(value)
            else:
                values[o.key] = value
    values["args"] = rest
    return values


def command(values: dict) -> int:
    """Run the parsed command line (:func:`parse`)."""
    if values["version"]:
        print(f"pycatar {__version__}")
        return 0
    if values["help"]:
        sys.stdout.write(command_help())
        return 0
    with_, without, what = values["with"], values["without"], values["what"]
    if "help" in with_ or "help" in without:
        print("Supported --with= and --without= flags:")
        for bit in range(64):
            if (1 << bit) & WITH_MASK:
                print(format_with_flags(1 << bit))
        return 0
    if what == "help":
        print("Allowed --what= selectors:\narchive\narchive-index\nblob\nblob-index\ndirectory")
        return 0
    opts = Options(verbose=values["verbose"] or os.environ.get("CASYNC_VERBOSE") == "1", dry_run=values["dry_run"])
    opts.store = values["store"]
    opts.extra_stores = values["extra_store"]
    opts.seeds = values["seed"]
    opts.cache = values["cache"]
    opts.json = values["json"]
    opts.with_ = with_
    opts.without = without
    for name in opts.with_:
        parse_with_name(name, "--with=")
    for name in opts.without:
        parse_with_name(name, "--without=")
    if what is not None:
        if what not in WHATS:
            raise UsageError(f"Failed to parse --what= selector: {what}")
        opts.what = what
    digest = values["digest"]
    if digest is not None:
        if digest not in DIGEST_NAMES:
            raise UsageError(f"Failed to parse --digest= parameter: {digest}")
        opts.digest = digest
    compression = values["compression"]
    if compression is not None:
        if compression not in ("zstd", "xz", "gzip"):
            raise UsageError(f"Failed to parse --compression= parameter: {compression}")
        opts.compression = compression
    if values["chunk_size"] is not None:
        opts.chunk_size = values["chunk_size"]
    for o in OPTIONS:
        if o.metavar == "BOOL" and values[o.key] is not None:
            setattr(opts, o.key, parse_boolean(values[o.key], o.names[-1]))
    uid_shift = values["uid_shift"]
    if uid_shift is not None:
        if uid_shift.isdigit():
            opts.uid_shift = int(uid_shift)
        elif not parse_boolean(uid_shift, "--uid-shift"):
            opts.uid_shift = None
        else:
            opts.uid_shift = 0
    uid_range = values["uid_range"]
    if uid_range is not None:
        if uid_range.isdigit() and 0 < int(uid_range) <= 0x100000000:
            opts.uid_range = int(uid_range)
        elif parse_boolean(uid_range, "--uid-range"):
            opts.uid_range = 0x10000
    args = values["args"]
    if not args:
        raise UsageError("No verb specified (see --help).")
    verb, rest = args[0], list(args[1:])
    apply_format_options(opts, values, verb)
    apply_network_options(opts, values)
    apply_objstore_options(opts, values)
    handler = verb_handler(verb)
    if handler is None:
        if verb in ("mkdev", "udev", "push", "pull"):
            raise UsageError(f'The "{verb}" verb is not supported by pycatar.')
        raise UsageError(f"Unknown verb '{verb}'.")
    return handler(opts, rest) or 0


# --------------------------------------------------------------------------- per-verb help

_NET = ["chunk_cache", "concurrency", "http_timeout", "http_retries", "http_auth", "ca_cert", "client_cert",
        "client_key"]
_FLAGS = ["with", "without", "what"]
_VERIFY = ["verify_key", "allowed_signers"]
_SEEDING = ["seed", "seed_output", "cache", "reflink", "hardlink"]
#: verb -> (usage after "pycatar", what it does, the options that apply)
VERB_HELP = {
    "make": ("make [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH]",
             "Archive a directory (.catar, or chunked: .caidx) or chunk a file or block device (.caibx) into "
             "a chunk store; prints the digest. An http(s):// index is uploaded once its chunks are stored.",
             ["store", "chunk_size", "digest", "compression", *_FLAGS, "exclude_nodump", "exclude_submounts",
              "exclude_file", "uid_shift", "uid_range", "reproducible", "owner", "group", "input_format",
              "verbose", "no_progress", "json", *_NET]),
    "extract": ("extract [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH] [SUBPATH]",
                "Restore an archive or index (a path or an http(s):// URL) into a directory, file or device, "
                "taking chunks from the seeds first, then from the stores.",
                ["store", "extra_store", *_SEEDING, "what", "with", "without", "delete", "undo_immutable",
                 "punch_holes", "uid_shift", "uid_range", "output_format", "json", "verbose", "no_progress",
                 *_NET, *_VERIFY]),
    "list": ("list [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]", "List the entries, as casync does.",
             ["store", "extra_store", *_FLAGS, "recursive", *_NET, *_VERIFY]),
    "mtree": ("mtree [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]", "List the entries in mtree(5) format.",
              ["store", "extra_store", *_FLAGS, "recursive", "digest", *_NET, *_VERIFY]),
    "stat": ("stat [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [PATH]", "Show one entry's metadata.",
             ["store", "extra_store", *_FLAGS, *_NET, *_VERIFY]),
    "digest": ("digest [ARCHIVE|BLOB|ARCHIVE_INDEX|BLOB_INDEX|DIRECTORY]",
               "Print the digest of the archive, blob or tree.",
               ["store", "extra_store", *_FLAGS, "digest", *_NET, *_VERIFY]),
    "gc": ("gc BLOB_INDEX|ARCHIVE_INDEX...",
           "Remove the chunks of the store that none of the indexes (paths or URLs) references.",
           ["store", "dry_run", "grace", "verbose", "no_progress", "json", *_NET]),
    "verify": ("verify [--repair] STORE | verify INDEX",
               "Check that every chunk of a store, or every chunk an index needs, decompresses and matches "
               "its id; list the missing and bad ones (exit status 1).",
               ["store", "extra_store", "repair", "digest", "what", "json", "verbose", "no_progress", *_NET,
                *_VERIFY]),
    "info": ("info [--seed=PATH…] [--store=…] INDEX",
             "Size, chunk counts and sizes, dedup ratio; with seeds and stores, how many chunks and bytes an "
             "extraction would take from each (what an update downloads).",
             ["store", "extra_store", "seed", "cache", "what", "json", *_NET, *_VERIFY]),
    "cat": ("cat INDEX [OFFSET [LENGTH]]", "Write bytes of the stream to standard output, fetching only "
            "the chunks that hold them.", ["store", "extra_store", "what", *_NET, *_VERIFY]),
    "chunk": ("chunk FILE|-", "Print where the chunker cuts FILE: START, SIZE and ID per line; nothing is "
              "stored.", ["chunk_size", "digest"]),
    "list-chunks": ("list-chunks INDEX", "Print the chunk ids of an index in order.", ["what", "json"]),
    "mount": ("mount [--foreground] ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX MOUNTPOINT [SUBPATH]",
              "Show an archive or index (a path or an http(s):// URL) as a read-only FUSE file system without "
              "extracting it (a blob index as one file); only the chunks that reads need are fetched.",
              ["store", "extra_store", "seed", "cache", "what", "uid_shift", "uid_range", "mkdir", "foreground",
               *_NET, *_VERIFY]),
    "serve": ("serve --store=DIR|s3+http(s)://… [--index-dir=DIR] [--listen=HOST:PORT] [--writable]",
              "Serve a chunk store (in a local store's layout) and a directory of index files over HTTP(S), "
              "until SIGTERM or Ctrl-C. With --writable, uploads (PUT) are verified, then installed.",
              ["store", "index_dir", "listen", "writable", "digest", "tls_cert", "tls_key", "verbose", *_NET]),
    "sign": ("sign --key=KEY INDEX|ARCHIVE",
             "Write INDEX.sig, the signature of the file by an OpenSSH private key (ssh-keygen -Y sign's format, "
             "namespace pycatar); readers check it with --verify-key= or ssh-keygen -Y verify.",
             ["key"]),
}
#: every verb pycatar has, for --help and completion (vectors has its own parser)
ALL_VERBS = (*VERB_HELP, "vectors")


def _option_list(options) -> str:
    """The "Options:" section: each option's label, its help wrapped beside it (100 columns)."""
    import textwrap  # start-up: only help needs it (1.2 ms of python3 -X importtime, 2026-12-03)

    width = min(max(len(o.label()) for o in options), 28) + 2
    lines = ["Options:"]
    for o in options:
        label = o.label()
        text = textwrap.wrap(o.help, 100 - 2 - width) or [""]
        if len(label) > width - 2:
            lines.append(f"  {label}")
        else:
            lines.append(f"  {label:<{width}}{text.pop(0)}")
        lines += [" " * (width + 2) + t for t in text]
    return "\n".join(lines) + "\n"


def command_help() -> str:
    """``pycatar --help``: every verb's synopsis, then every option."""
    text = "".join(f"  {line}".rstrip() + "\n" for line in COMMAND_HELP.splitlines())
    return f"Usage: pycatar [OPTIONS...] VERB [ARGUMENTS...]\n\n{text}\n{_option_list(OPTIONS)}"


def _find_verb(args: list[str]) -> str | None:
    """The verb among ``args`` (options may stand before it, with their values)."""
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--":
            continue
        if a.startswith("-"):
            o = _BY_NAME.get(a)
            skip = o is not None and o.metavar is not None
            continue
        return a
    return None


def verb_help(verb: str) -> str:
    """``pycatar VERB --help``: the verb's usage, what it does and the options that apply to it."""
    import textwrap  # start-up: only help needs it (1.2 ms of python3 -X importtime, 2026-12-03)

    usage, text, keys = VERB_HELP[verb]
    head = textwrap.fill(f"Usage: pycatar [OPTIONS...] {usage}", 100, subsequent_indent=" " * 15)
    body = textwrap.fill(text, 100)
    return (f"{head}\n\n{body}\n\n{_option_list([_BY_KEY[k] for k in [*keys, 'help']])}\n"
            "Every option may stand before or after the verb. pycatar --help lists all verbs.\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the command, turns errors into one line."""
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        if "_PYCATAR_COMPLETE" in os.environ:
            from .completion import complete  # start-up: only shell completion needs it

            takes_value = {name: o.metavar is not None for name, o in _BY_NAME.items()}
            rc = complete(os.environ["_PYCATAR_COMPLETE"], args, takes_value, ALL_VERBS)
        else:
            verb = _find_verb(args)
            if verb in VERB_HELP and ("--help" in args or "-h" in args):
                sys.stdout.write(verb_help(verb))
                rc = 0
            elif verb == "vectors":  # its own options (--impl, --vectors...): not casync's
                rc = _verb_module("vectors").main(args[args.index("vectors") + 1:], entry=main)
            else:
                rc = command(parse(args))
    except _CommandLineError as e:
        _fail(str(e), 2)
    except PycatarError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        _fail("Got exit signal, quitting.", 130)
    except BrokenPipeError:
        # the reader went away (``pycatar list x | head``): end quietly, as casync does
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os._exit(0)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def console() -> None:
    """The ``pycatar`` command (the console script, ``python3 -m pycatar``): :func:`main`, then the
    process ends without the interpreter's teardown, which frees every module and object one by one
    (20-60 ms of a make's or a small verb's wall time, measured 2026-12-02).  Only once the command is
    over: no other thread left running, the exit handlers run and standard output and error flushed;
    otherwise (or for an exit status that is not a number) the interpreter exits the usual way."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    me = threading.current_thread()
    if not isinstance(code, int) or any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - e.g. the reader of standard output went away: the usual exit reports it
        sys.exit(code)
    os._exit(code)


def _fail(message: str, code: int) -> None:
    message = " ".join(str(message).split("\n"))
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()
    sys.exit(code)
