"""The ``pycatar`` command: casync's verbs and options, accepted before or after the verb.

This is a thin layer: it parses the command line like casync, decides what kind of input and output
each verb deals with, and calls the library (:mod:`pycatar.archive` and friends).
Every error ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import click

from .errors import PycatarError, UsageError

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


@dataclass
class Options:
    """What the command line asked for, with casync's defaults."""

    verbose: bool = False
    dry_run: bool = False
    store: str | None = None
    extra_stores: list[str] = field(default_factory=list)
    chunk_size: str | None = None
    seeds: list[str] = field(default_factory=list)
    cache: str | None = None
    with_: list[str] = field(default_factory=list)
    without: list[str] = field(default_factory=list)
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

    def feature_flags(self, default_with: int | None = None, normalized: bool = True) -> int:
        """The feature flags the options select (for an encoder), or un-normalised, the mask a
        decoder applies when reading (casync passes the same value to both)."""
        from . import flags

        if self.reproducible and normalized and default_with is None:
            from .reproducible import feature_flags

            return feature_flags(self.with_, self.without, digest=self.digest,
                                 exclude_nodump=self.exclude_nodump, exclude_submounts=self.exclude_submounts,
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


def _bool_option(name: str, help_text: str):
    return click.option(f"--{name}", metavar="BOOL", default=None, help=help_text)


def _meta_option(*decls, **kw):
    """An option kept in the click context (``pycatar.NAME``) instead of a parameter of ``command``;
    :func:`_apply_format_options` moves it into :class:`Options`."""

    def store(ctx, param, value):
        ctx.meta[f"pycatar.{param.name}"] = value
        return value

    return click.option(*decls, expose_value=False, callback=store, **kw)


_MAKE_ONLY = (("reproducible", "--reproducible"), ("owner", "--owner="), ("group", "--group="),
              ("input_format", "--input-format="))


def _apply_format_options(opts: Options, verb: str, exclude_nodump, exclude_file) -> None:
    """--reproducible, --owner=, --group=, --input-format=, --output-format= (pycatar's own)."""
    meta = click.get_current_context().meta
    opts.reproducible = bool(meta.get("pycatar.reproducible"))
    for name in ("owner", "group"):
        value = meta.get(f"pycatar.{name}")
        if value is not None:
            if not value.isdigit() or int(value) > 0xFFFFFFFF:
                raise UsageError(f"Failed to parse --{name}= parameter: {value} (a numeric id is expected)")
            setattr(opts, name, int(value))
    for name in ("input_format", "output_format"):
        value = meta.get(f"pycatar.{name}")
        if value is not None and value != "tar":
            raise UsageError(f"Failed to parse --{name.replace('_', '-')}= parameter: {value} (supported: tar)")
        setattr(opts, name, value)
    for name, option in _MAKE_ONLY:
        if getattr(opts, name) not in (None, False) and verb != "make":
            raise UsageError(f'{option} applies to the "make" verb only.')
    if opts.output_format is not None and verb != "extract":
        raise UsageError('--output-format= applies to the "extract" verb only.')
    if opts.reproducible or opts.input_format:
        # a reproducible archive holds the whole tree (REPRO-6); a tar has nothing to exclude (TAR-3)
        if exclude_nodump is None:
            opts.exclude_nodump = False
        if exclude_file is None:
            opts.exclude_file = False
    if opts.input_format and (opts.exclude_nodump or opts.exclude_file or opts.exclude_submounts):
        raise UsageError("--exclude-nodump=, --exclude-file= and --exclude-submounts= apply to directories, "
                         "not to tar input.")


COMMAND_HELP = """Content-addressable archives, casync-compatible.

\b
pycatar [OPTIONS...] make [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH]
pycatar [OPTIONS...] extract [ARCHIVE|ARCHIVE_INDEX|BLOB_INDEX] [PATH] [SUBPATH]
pycatar [OPTIONS...] list [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]
pycatar [OPTIONS...] mtree [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [SUBPATH]
pycatar [OPTIONS...] stat [ARCHIVE|ARCHIVE_INDEX|DIRECTORY] [PATH]
pycatar [OPTIONS...] digest [ARCHIVE|BLOB|ARCHIVE_INDEX|BLOB_INDEX|DIRECTORY]
pycatar [OPTIONS...] gc BLOB_INDEX|ARCHIVE_INDEX...
pycatar [OPTIONS...] mount [--foreground] ARCHIVE|ARCHIVE_INDEX PATH [SUBPATH]
pycatar [OPTIONS...] mount [--foreground] BLOB_INDEX PATH
pycatar [OPTIONS...] make --input-format=tar [ARCHIVE|ARCHIVE_INDEX] TAR|-
pycatar [OPTIONS...] extract --output-format=tar ARCHIVE|ARCHIVE_INDEX|- TAR|- [SUBPATH]
"""


@click.command(help=COMMAND_HELP, context_settings={"help_option_names": ["-h", "--help"],
                                                    "max_content_width": 100})
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
@_meta_option("--foreground", is_flag=True, help="mount: serve in the foreground (default: return once mounted).")
@click.option("--json", "json_", is_flag=True,
              help="extract: print where the chunks came from (seeds, stores) as JSON on standard output.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(version, log_level, verbose, dry_run, store, extra_store, chunk_size, digest, compression,
            seed, cache, cache_auto, rate_limit_bps, exclude_nodump, exclude_submounts, exclude_file,
            reflink, hardlink, punch_holes, delete, undo_immutable, seed_output, recursive, mkdir,
            uid_shift, uid_range, with_, without, what, json_, args):
    if version:
        from . import __version__

        click.echo(f"pycatar {__version__}")
        return 0
    if "help" in with_ or "help" in without:
        from .flags import WITH_MASK, format_with_flags

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
    from .flags import parse_with_name

    for name in opts.with_:
        parse_with_name(name, "--with=")
    for name in opts.without:
        parse_with_name(name, "--without=")
    if what is not None:
        if what not in WHATS:
            raise UsageError(f"Failed to parse --what= selector: {what}")
        opts.what = what
    if digest is not None:
        from .digest import DIGEST_NAMES

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
    _apply_format_options(opts, verb, exclude_nodump, exclude_file)
    from . import verbs

    handler = verbs.VERBS.get(verb)
    if handler is None:
        if verb in ("mkdev", "udev", "push", "pull"):
            raise UsageError(f'The "{verb}" verb is not supported by pycatar.')
        raise UsageError(f"Unknown verb '{verb}'.")
    return handler(opts, rest) or 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the command, turns errors into one line."""
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        if args[:1] == ["vectors"]:  # its own options (--impl, --vectors...): not casync's
            from .vectors import main as vectors_main

            rc = vectors_main(args[1:])
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
    except BrokenPipeError:
        try:
            sys.stdout = None
        finally:
            os._exit(1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, code: int) -> None:
    message = " ".join(str(message).split("\n"))
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()
    sys.exit(code)
