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

import click
from click.shell_completion import CompletionItem

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

def _bool_option(name: str, help_text: str):
    return click.option(f"--{name}", metavar="BOOL", default=None, help=help_text)


def _meta_option(*decls, **kw):
    """An option kept in the click context (``pycatar.NAME``) instead of a parameter of ``command``;
    the ``apply_*`` functions of :mod:`.options` move it into :class:`Options`."""

    def store(ctx, param, value):
        ctx.meta[f"pycatar.{param.name}"] = value
        return value

    return click.option(*decls, expose_value=False, callback=store, **kw)


def _show_help(ctx, param, value):
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


#: -h/--help as click's own help option is, but with its text given here: click's asks gettext for
#: it at every start (a search for translations, and the locale module's import: 1.5-3 ms)
_help_option = click.option("-h", "--help", is_flag=True, expose_value=False, is_eager=True,
                             callback=_show_help, help="Show this message and exit.")


COMMAND_HELP = """Content-addressable archives, casync-compatible.

\b
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

\b
pycatar VERB --help shows the options of one verb. Shell completion:
eval "$(_PYCATAR_COMPLETE=bash_source pycatar)"    (zsh: zsh_source)
"""


@click.command(help=COMMAND_HELP, add_help_option=False, context_settings={"max_content_width": 100})
@click.option("--version", is_flag=True, help="Show brief version information.")
@click.option("-l", "--log-level", metavar="LEVEL", help="Set log level (debug, info, err).")
@click.option("-v", "--verbose", is_flag=True, help="Show terse status information during runtime.")
@click.option("-n", "--dry-run", is_flag=True, help="When garbage collecting, only print what would be done.")
@click.option("--store", metavar="PATH", help="The primary chunk store to use.")
@click.option("--extra-store", metavar="PATH", multiple=True, help="Additional chunk store to look for chunks in.")
@click.option("--chunk-size", metavar="[MIN:]AVG[:MAX]", help="The minimal/average/maximum bytes in a chunk.")
@click.option("--digest", metavar="DIGEST", help="Digest algorithm: sha512-256 (default), sha256 or blake3.")
@click.option("--compression", metavar="COMPRESSION", help="Compression algorithm: zstd (default), xz or gzip.")
@click.option("--seed", metavar="PATH", multiple=True, help="Additional file or directory to use as seed.")
@click.option("--cache", metavar="PATH", help="Directory to use as encoder cache (extract: seed cache).")
@click.option("-c", "--cache-auto", is_flag=True, help="Pick encoder cache directory automatically.")
@click.option("--rate-limit-bps", metavar="LIMIT", help="Maximum bandwidth for remote communication.")
@_bool_option("exclude-nodump", "Exclude files with chattr(1)'s +d 'nodump' flag (default: yes).")
@_bool_option("exclude-submounts", "Exclude submounts when creating an archive (default: no).")
@_bool_option("exclude-file", "Respect .caexclude files in the file tree (default: yes).")
@_bool_option("reflink", "Create reflinks from seeds when extracting (default: yes).")
@_bool_option("hardlink", "Create hardlinks from seeds when extracting (default: no).")
@_bool_option("punch-holes", "Create sparse files when extracting (default: yes).")
@_bool_option("delete", "Delete existing files not in the archive after extraction (default: yes).")
@_bool_option("undo-immutable", "When removing existing files, undo chattr(1)'s +i (default: no).")
@_bool_option("seed-output", "Implicitly use pre-existing output as seed when extracting (default: yes).")
@_bool_option("recursive", "List recursively (default: yes).")
@_bool_option("mkdir", "Create the mount directory if missing (default: yes).")
@click.option("--uid-shift", metavar="yes|SHIFT", help="Shift UIDs/GIDs.")
@click.option("--uid-range", metavar="RANGE", help="Restrict UIDs/GIDs to range.")
@click.option("--with", "with_", metavar="FEATURE", multiple=True, help="Store this feature (see --with=help).")
@click.option("--without", metavar="FEATURE", multiple=True, help="Do not store this feature.")
@click.option("--what", metavar="WHAT", help="archive, archive-index, blob, blob-index or directory.")
@_meta_option("--reproducible", is_flag=True,
              help="make: the same bytes on any machine (fixed feature set, owners 0/0, mtimes clamped to "
                   "$SOURCE_DATE_EPOCH); --with=/--without= refine it.")
@_meta_option("--owner", metavar="UID", help="make: store this numeric owner for every entry.")
@_meta_option("--group", metavar="GID", help="make: store this numeric group for every entry.")
@_meta_option("--input-format", metavar="FORMAT", help="make: read a tar (file or -) instead of a directory.")
@_meta_option("--output-format", metavar="FORMAT", help="extract: write a tar (file or -) instead of a directory.")
@_meta_option("--chunk-cache", metavar="DIR",
              help="A local store in front of the others: chunks are read from it first, and every chunk "
                   "fetched elsewhere is kept in it.")
@_meta_option("--concurrency", metavar="N", help="Requests to remote stores in flight at once (default: 16).")
@_meta_option("--http-timeout", metavar="SECONDS", help="Give up on a silent server after this long (default: 30).")
@_meta_option("--http-retries", metavar="N", help="Retries of a failed request, with backoff (default: 5).")
@_meta_option("--http-auth", metavar="VALUE",
              help="Authorization header sent to HTTP servers (default: $PYCATAR_HTTP_AUTH); never printed.")
@_meta_option("--ca-cert", metavar="FILE", help="Trust this CA certificate bundle for https:// instead of the system's.")
@_meta_option("--client-cert", metavar="FILE", help="Client certificate (PEM) for https:// servers that ask for one.")
@_meta_option("--client-key", metavar="FILE", help="Key of the client certificate, if not in its file.")
@_meta_option("--no-progress", is_flag=True,
              help="No progress display (shown on standard error only when it is a terminal).")
@_meta_option("--repair", is_flag=True, help="verify: remove chunk files that fail verification from the store.")
@_meta_option("--index-dir", metavar="DIR", help="serve: serve the index files (and other files) of DIR too.")
@_meta_option("--listen", metavar="HOST:PORT",
              help="serve: the address to listen on (default: 127.0.0.1:8740; [::1]:PORT for IPv6; port 0: any).")
@_meta_option("--writable", is_flag=True, help="serve: accept chunks and indexes uploaded with PUT (verified first).")
@_meta_option("--tls-cert", metavar="FILE", help="serve: serve HTTPS with this certificate (PEM chain).")
@_meta_option("--tls-key", metavar="FILE", help="serve: the private key of --tls-cert= (PEM).")
@_meta_option("--foreground", is_flag=True, help="mount: serve in the foreground (default: return once mounted).")
@_meta_option("--grace", metavar="DURATION",
              help="gc: never remove a chunk written less than this long ago (default: 1d; 0: as casync; "
                   "units s, m, h, d).")
@_meta_option("--key", metavar="FILE", help="sign: the OpenSSH private key to sign with.")
@_meta_option("--verify-key", metavar="FILE",
              help="Refuse an index or archive unless INDEX.sig (beside it) is its signature by this OpenSSH "
                   "public key (namespace pycatar).")
@_meta_option("--allowed-signers", metavar="FILE",
              help="Like --verify-key=, with any key of this ssh-keygen allowed-signers file.")
@click.option("--json", "json_", is_flag=True,
              help="make, extract, gc, verify, info, list-chunks: print the result as JSON on standard output "
                   "(schemas in the README).")
@_help_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED, shell_complete=lambda ctx, param, incomplete:
                _complete(ctx, incomplete))
def command(version, log_level, verbose, dry_run, store, extra_store, chunk_size, digest, compression,
            seed, cache, cache_auto, rate_limit_bps, exclude_nodump, exclude_submounts, exclude_file,
            reflink, hardlink, punch_holes, delete, undo_immutable, seed_output, recursive, mkdir,
            uid_shift, uid_range, with_, without, what, json_, args):
    if version:
        click.echo(f"pycatar {__version__}")
        return 0
    if "help" in with_ or "help" in without:
        click.echo("Supported --with= and --without= flags:")
        for bit in range(64):
            if (1 << bit) & int(WITH_MASK):
                click.echo(format_with_flags(1 << bit))
        return 0
    if what == "help":
        click.echo("Allowed --what= selectors:\narchive\narchive-index\nblob\nblob-index\ndirectory")
        return 0
    opts = Options(verbose=verbose or os.environ.get("CASYNC_VERBOSE") == "1", dry_run=dry_run)
    opts.store = store
    opts.extra_stores = list(extra_store)
    opts.seeds = list(seed)
    opts.cache = cache
    opts.json = json_
    opts.with_ = list(with_)
    opts.without = list(without)
    for name in opts.with_:
        parse_with_name(name, "--with=")
    for name in opts.without:
        parse_with_name(name, "--without=")
    if what is not None:
        if what not in WHATS:
            raise UsageError(f"Failed to parse --what= selector: {what}")
        opts.what = what
    if digest is not None:
        if digest not in DIGEST_NAMES:
            raise UsageError(f"Failed to parse --digest= parameter: {digest}")
        opts.digest = digest
    if compression is not None:
        if compression not in ("zstd", "xz", "gzip"):
            raise UsageError(f"Failed to parse --compression= parameter: {compression}")
        opts.compression = compression
    if chunk_size is not None:
        opts.chunk_size = chunk_size
    for name, value in (("exclude-nodump", exclude_nodump), ("exclude-submounts", exclude_submounts),
                        ("exclude-file", exclude_file), ("reflink", reflink), ("hardlink", hardlink),
                        ("punch-holes", punch_holes), ("delete", delete),
                        ("undo-immutable", undo_immutable), ("seed-output", seed_output),
                        ("recursive", recursive), ("mkdir", mkdir)):
        if value is not None:
            setattr(opts, name.replace("-", "_"), parse_boolean(value, "--" + name))
    if uid_shift is not None:
        if uid_shift.isdigit():
            opts.uid_shift = int(uid_shift)
        elif not parse_boolean(uid_shift, "--uid-shift"):
            opts.uid_shift = None
        else:
            opts.uid_shift = 0
    if uid_range is not None:
        if uid_range.isdigit() and 0 < int(uid_range) <= 0x100000000:
            opts.uid_range = int(uid_range)
        elif parse_boolean(uid_range, "--uid-range"):
            opts.uid_range = 0x10000
    if not args:
        raise UsageError("No verb specified (see --help).")
    verb, rest = args[0], list(args[1:])
    meta = click.get_current_context().meta
    apply_format_options(opts, meta, verb, exclude_nodump, exclude_file)
    apply_network_options(opts, meta)
    apply_objstore_options(opts, meta)
    handler = verb_handler(verb)
    if handler is None:
        if verb in ("mkdev", "udev", "push", "pull"):
            raise UsageError(f'The "{verb}" verb is not supported by pycatar.')
        raise UsageError(f"Unknown verb '{verb}'.")
    try:
        return handler(opts, rest) or 0
    except BrokenPipeError:
        raise _ReaderGone() from None  # (click would turn EPIPE into exit status 1)


class _ReaderGone(Exception):
    """Standard output was closed by its reader."""


def _complete(ctx, incomplete: str):
    """Shell completion of the positional arguments: a verb first, then file names."""
    if not ctx.params.get("args"):
        return [CompletionItem(v) for v in ALL_VERBS if v.startswith(incomplete)]
    return [CompletionItem(incomplete, type="file")]


# --------------------------------------------------------------------------- per-verb help

_NET = ["chunk_cache", "concurrency", "http_timeout", "http_retries", "http_auth", "ca_cert", "client_cert",
        "client_key"]
_FLAGS = ["with_", "without", "what"]
_VERIFY = ["verify_key", "allowed_signers"]
_SEEDING = ["seed", "seed_output", "cache", "reflink", "hardlink"]
#: verb -> (usage after "pycatar", what it does, the options that apply)
VERB_HELP = {
    "make": ("make [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH]",
             "Archive a directory (.catar, or chunked: .caidx) or chunk a file or block device (.caibx) into "
             "a chunk store; prints the digest. An http(s):// index is uploaded once its chunks are stored.",
             ["store", "chunk_size", "digest", "compression", *_FLAGS, "exclude_nodump", "exclude_submounts",
              "exclude_file", "uid_shift", "uid_range", "reproducible", "owner", "group", "input_format",
              "verbose", "no_progress", "json_", *_NET]),
    "extract": ("extract [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH] [SUBPATH]",
                "Restore an archive or index (a path or an http(s):// URL) into a directory, file or device, "
                "taking chunks from the seeds first, then from the stores.",
                ["store", "extra_store", *_SEEDING, "what", "with_", "without", "delete", "undo_immutable",
                 "punch_holes", "uid_shift", "uid_range", "output_format", "json_", "verbose", "no_progress",
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
           ["store", "dry_run", "grace", "verbose", "no_progress", "json_", *_NET]),
    "verify": ("verify [--repair] STORE | verify INDEX",
               "Check that every chunk of a store, or every chunk an index needs, decompresses and matches "
               "its id; list the missing and bad ones (exit status 1).",
               ["store", "extra_store", "repair", "digest", "what", "json_", "verbose", "no_progress", *_NET,
                *_VERIFY]),
    "info": ("info [--seed=PATH…] [--store=…] INDEX",
             "Size, chunk counts and sizes, dedup ratio; with seeds and stores, how many chunks and bytes an "
             "extraction would take from each (what an update downloads).",
             ["store", "extra_store", "seed", "cache", "what", "json_", *_NET, *_VERIFY]),
    "cat": ("cat INDEX [OFFSET [LENGTH]]", "Write bytes of the stream to standard output, fetching only "
            "the chunks that hold them.", ["store", "extra_store", "what", *_NET, *_VERIFY]),
    "chunk": ("chunk FILE|-", "Print where the chunker cuts FILE: START, SIZE and ID per line; nothing is "
              "stored.", ["chunk_size", "digest"]),
    "list-chunks": ("list-chunks INDEX", "Print the chunk ids of an index in order.", ["what", "json_"]),
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


def _find_verb(args: list[str]) -> str | None:
    """The verb among ``args`` (options may stand before it, with their values)."""
    takes_value = {o for p in command.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--":
            continue
        if a.startswith("-"):
            skip = "=" not in a and a in takes_value
            continue
        return a
    return None


def verb_help(verb: str) -> str:
    """``pycatar VERB --help``: the verb's usage, what it does and the options that apply to it."""
    usage, text, names = VERB_HELP[verb]
    ctx = click.Context(command, info_name="pycatar", max_content_width=100)
    fmt = ctx.make_formatter()
    fmt.write_usage("pycatar", f"[OPTIONS...] {usage}")
    fmt.write_paragraph()
    fmt.write_text(text)
    params = {p.name: p for p in command.params}
    records = [params[n].get_help_record(ctx) for n in [*names, "help"] if n in params]
    with fmt.section("Options"):
        fmt.write_dl([r for r in records if r])  # the last: -h, --help
    fmt.write_paragraph()
    fmt.write_text("Every option may stand before or after the verb. pycatar --help lists all verbs.")
    return fmt.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the command, turns errors into one line."""
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        verb = _find_verb(args)
        if verb in VERB_HELP and ("--help" in args or "-h" in args):
            sys.stdout.write(verb_help(verb))
            rc = 0
        elif verb == "vectors":  # its own options (--impl, --vectors...): not casync's
            rc = _verb_module("vectors").main(args[args.index("vectors") + 1:], entry=main)
        else:
            rc = command.main(args=argv, prog_name="pycatar", standalone_mode=False)
    except click.exceptions.NoSuchOption as e:
        _fail(f"unrecognized option '{e.option_name}'", 2)
    except click.exceptions.BadParameter as e:
        _fail(e.format_message(), 2)
    except click.exceptions.UsageError as e:
        _fail(e.format_message(), 2)
    except click.exceptions.Abort:
        _fail("aborted", 1)
    except PycatarError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        _fail("Got exit signal, quitting.", 130)
    except (BrokenPipeError, _ReaderGone):
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
