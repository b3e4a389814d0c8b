"""list / mtree / stat / digest output, byte for byte against the real casync, for archives (decoder
side) and for directories (encoder side).  Requirement ids refer to spec/catar.md."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest

from pycatar import flags, listing
from pycatar.decoder import CatarReader
from pycatar.entry import Entry
from pycatar.errors import PycatarError
from pycatar.flags import F
from pycatar.listing import ListingError
from test_decoder import FLAGSETS, NonSeekable, flagset_flags, make_odd_tree

#: POSIX TZ string with a half-hour offset: stat's local time must follow TZ exactly like casync's
TZ = "XST-5:30"

encoder = pytest.importorskip("pycatar.encoder", reason="directory-side listings need pycatar.encoder")

# paths whose stat blocks cover every file type of the two trees
STAT_PATHS = {
    "odd": [None, "file.txt", "empty", "sparse", "dir", "dir/sub", "link", "dir/dangling", "fifo", "dir/sock",
            "blk", "chr", "many", "random.bin", "dir/ta\tb", "dir/new\nline", "nonexistent"],
    "full": [None, "file.txt", "dir", "dir/sub", "dir/sub/deeper/random.bin", "link", "dir/blockdev",
             "dir/chardev", "fifo", "dir/socket", "setuid", "sticky", "empty", "sparse.img"],
}
LIST_PATHS = [None, "dir", "dir/sub", "file.txt", "link"]


@pytest.fixture(scope="module", autouse=True)
def local_time_zone():
    """casync formats stat times in local time; run both sides in a non-UTC zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = TZ
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("lst")
    out = {"odd": make_odd_tree(str(base / "odd"))}
    if os.geteuid() == 0 and shutil.which("setcap") and shutil.which("chattr"):
        from trees import make_full_tree  # the lead's tree: ACLs, fcaps, chattr, .caexclude, nodump

        out["full"] = make_full_tree(str(base / "full"))
    return out


@pytest.fixture(scope="module")
def archives(trees, run_casync, tmp_path_factory):
    d = tmp_path_factory.mktemp("lstar")
    out = {}
    for tname, tree in trees.items():
        for fname, opts in FLAGSETS.items():
            path = str(d / f"{tname}-{fname}.catar")
            run_casync("make", *opts, path, tree)
            out[tname, fname] = path
    return out


TREES = ["odd", "full"]


def _need(trees, tname):
    if tname not in trees:
        pytest.skip("the full tree needs root, setcap and chattr")
    return trees[tname]


def casync_out(run_casync, *args):
    p = run_casync(*args, check=False)
    return p.stdout.decode("utf-8", "surrogateescape"), p.returncode, p.stderr.decode("utf-8", "replace")


def ours_archive(path, verb, sub=None, *, recursive=True, mask=None, digest="sha512-256", seekable=True):
    data = open(path, "rb").read() if not seekable else None
    f = open(path, "rb") if seekable else NonSeekable(data, 1 << 16)
    out = []
    try:
        r = CatarReader(f, feature_mask=mask)
        for piece in listing.list_archive(r, verb, path=sub, recursive=recursive, digest_name=digest):
            out.append(piece)
    except PycatarError as e:
        return "".join(out), str(e)
    finally:
        f.close()
    return "".join(out), None


def ours_directory(tree, verb, opts, *, recursive=True):
    ff = flagset_flags(opts)
    dg = [o.split("=", 1)[1] for o in opts if o.startswith("--digest=")]
    out = []
    try:
        for piece in listing.list_directory(tree, encoder.iter_entries(tree, ff), ff, verb, recursive=recursive,
                                            digest_name=dg[0] if dg else "sha512-256"):
            out.append(piece)
    except PycatarError as e:
        return "".join(out), str(e)
    return "".join(out), None


def assert_same(ours, theirs, what):
    text, err = ours
    ctext, rc, cerr = theirs
    assert text == ctext, what
    assert (err is None) == (rc == 0), (what, err, cerr)
    if err is not None:
        assert err in cerr, (what, err, cerr)


def raw_mask(opts):
    """The decoder mask casync builds from --with=/--without= (not normalised: CATAR-52)."""
    w = wo = 0
    for o in opts:
        key, _, name = o.partition("=")
        if key == "--with":
            w |= flags.parse_with_name(name)
        elif key == "--without":
            wo |= flags.parse_with_name(name, "--without=")
    m = (w or int(flags.WITH_MASK)) & ~wo
    return m | int(F.EXCLUDE_NODUMP | F.EXCLUDE_FILE) | flags.digest_flags("sha512-256")


# --------------------------------------------------------------------------- formatting units


@pytest.mark.parametrize("mode, text", [
    (0o40755, "drwxr-xr-x"), (0o41777, "drwxrwxrwt"), (0o41776, "drwxrwxrwT"), (0o101777, "-rwxrwxrwx"),
    (0o104755, "-rwsr-xr-x"), (0o104644, "-rwSr--r--"), (0o102710, "-rwx--s---"), (0o102600, "-rw---S---"),
    (0o120777, "lrwxrwxrwx"), (0o060640, "brw-r-----"), (0o020666, "crw-rw-rw-"), (0o010644, "prw-r--r--"),
    (0o140755, "srwxr-xr-x"), (0o000644, None),
])
def test_ls_format_mode(mode, text):
    """casync's ls_format_mode: the sticky bit only shows on directories."""
    assert listing.ls_format_mode(mode) == text


def test_escape_and_columns():
    assert listing.mtree_escape("a b\tc\\d#e\x7f\u00fc\n") == "a\\040b\\011c\\134d\\043e\\177\\303\\274\\012"
    assert listing.mtree_escape(b"\xff/x~") == "\\377/x~"
    assert listing.ls_format_chattr(0) == "----------"
    assert listing.ls_format_chattr(flags.FS_IMMUTABLE_FL | flags.FS_NOATIME_FL | flags.FS_PROJINHERIT_FL) == "--i--A---P"
    assert listing.ls_format_fat_attrs(flags.ATTR_HIDDEN | flags.ATTR_ARCH) == "h-a"
    assert listing.digest_label("sha256") == "sha256digest"
    assert listing.digest_label("sha512-256") == "sha512256digest"


def test_mtree_flags_of_special_files():
    """Files that carry no chattr/FAT attributes show every flag keyword as set (casync tests the
    "unknown" value -1)."""
    ff = int(flags.DEFAULT)
    fifo = Entry(path="p", mode=0o010644, feature_flags=ff)
    line = listing.mtree_line(listing.archive_view(fifo), ff)
    assert " flags=hidden,system,archive,sappend,simmutable " in line
    reg = Entry(path="f", mode=0o100644, feature_flags=ff)
    line = listing.mtree_line(listing.archive_view(reg), ff, payload_digest=b"\1" * 32)
    assert " flags=nohidden,nosystem,noarchive,nosappend,nosimmutable " in line
    assert line.endswith(" sha512256digest=" + "01" * 32 + "\n")


# --------------------------------------------------------------------------- archives


@pytest.mark.parametrize("flagset", list(FLAGSETS))
@pytest.mark.parametrize("tname", TREES)
def test_archive_list_equals_casync(tname, flagset, trees, archives, run_casync):
    """`casync list ARCHIVE [PATH]`, recursive and not (CATAR-45 for the sub-paths)."""
    _need(trees, tname)
    path = archives[tname, flagset]
    for sub in LIST_PATHS:
        for recursive in (True, False):
            extra = [] if recursive else ["--recursive=no"]
            theirs = casync_out(run_casync, "list", *extra, path, *([sub] if sub else []))
            assert_same(ours_archive(path, "list", sub, recursive=recursive), theirs, (sub, recursive))


@pytest.mark.parametrize("flagset", list(FLAGSETS))
@pytest.mark.parametrize("tname", TREES)
def test_archive_mtree_equals_casync(tname, flagset, trees, archives, run_casync):
    """`casync mtree ARCHIVE [PATH]`: the flags= keywords follow the archive's flags, the digest keyword
    the --digest= option, the value the archive's digest."""
    _need(trees, tname)
    path = archives[tname, flagset]
    for sub in (None, "dir", "file.txt"):
        theirs = casync_out(run_casync, "mtree", path, *([sub] if sub else []))
        assert_same(ours_archive(path, "mtree", sub), theirs, sub)
    theirs = casync_out(run_casync, "mtree", "--digest=sha256", path, "dir")
    assert_same(ours_archive(path, "mtree", "dir", digest="sha256"), theirs, "--digest=sha256")


@pytest.mark.parametrize("flagset", list(FLAGSETS))
@pytest.mark.parametrize("tname", TREES)
def test_archive_stat_equals_casync(tname, flagset, trees, archives, run_casync):
    """`casync stat ARCHIVE [PATH]` for every file type: local time, owners, attributes, xattrs, the
    payload digest of files and block devices, the hardlink digest of non-directories."""
    _need(trees, tname)
    path = archives[tname, flagset]
    for sub in STAT_PATHS[tname]:
        theirs = casync_out(run_casync, "stat", path, *([sub] if sub else []))
        assert_same(ours_archive(path, "stat", sub), theirs, sub)


@pytest.mark.parametrize("opts", [
    ["--without=xattrs"], ["--without=user-names", "--without=flag-hidden"], ["--without=32bit-uids"],
    ["--without=16bit-uids", "--without=32bit-uids"], ["--with=unix"], ["--without=nsec-time"],
    ["--without=chattr", "--without=fat-attrs"], ["--without=all"], ["--with=2sec-time"],
    ["--without=16bit-uids", "--without=32bit-uids", "--without=user-names"],
])
def test_archive_mask_equals_casync(opts, trees, archives, run_casync):
    """--with=/--without= when reading an archive act as casync's decoder mask (CATAR-52)."""
    tname = "full" if "full" in trees else "odd"
    path = archives[tname, "default"]
    for verb, sub in (("mtree", None), ("stat", None), ("stat", "file.txt"), ("stat", "dir/sub")):
        theirs = casync_out(run_casync, verb, *opts, path, *([sub] if sub else []))
        assert_same(ours_archive(path, verb, sub, mask=raw_mask(opts)), theirs, (verb, sub))


def test_archive_from_a_pipe(archives, run_casync):
    """Listing a non-seekable stream gives the same text."""
    path = archives["odd", "default"]
    for verb in ("list", "mtree", "stat"):
        assert ours_archive(path, verb, seekable=False) == ours_archive(path, verb)
    for verb, sub in (("list", "dir"), ("mtree", "dir/sub"), ("stat", "file.txt"), ("stat", "dir"),
                      ("list", "nonexistent")):
        assert ours_archive(path, verb, sub, seekable=False) == ours_archive(path, verb, sub), (verb, sub)


@pytest.mark.parametrize("flagset", list(FLAGSETS))
@pytest.mark.parametrize("tname", TREES)
def test_archive_digest_equals_casync(tname, flagset, trees, archives, run_casync):
    """`casync digest ARCHIVE [PATH]`: the stream digest, a directory's serialisation, a file's payload."""
    _need(trees, tname)
    path = archives[tname, flagset]
    for sub in (None, "dir", "dir/sub", "file.txt", "empty", "link", "nonexistent"):
        theirs = casync_out(run_casync, "digest", path, *([sub] if sub else []))
        with open(path, "rb") as f:
            try:
                ours = (listing.archive_digest(CatarReader(f), sub) + "\n", None)
            except ListingError as e:
                ours = ("", str(e))
        text, err = ours
        assert text == theirs[0], sub
        assert (err is None) == (theirs[1] == 0), (sub, err, theirs[2])


def test_digest_keyword_follows_the_option(archives, run_casync):
    """An archive made with --digest=sha256 and listed without --digest= shows a sha256 value under
    casync's default keyword sha512256digest."""
    path = archives["odd", "mixed"]
    text, _ = ours_archive(path, "mtree", "file.txt")
    with open(path, "rb") as f:
        r = CatarReader(f)
        for _ in r.iter_subtree(r.lookup("file.txt")):
            want = hashlib.sha256(b"".join(r.read_payload())).hexdigest()
    assert text.endswith(f" sha512256digest={want}\n")
    assert text == casync_out(run_casync, "mtree", path, "file.txt")[0]


# --------------------------------------------------------------------------- directories


@pytest.mark.parametrize("flagset", list(FLAGSETS) + ["noxattrs", "fcaps-only"])
@pytest.mark.parametrize("tname", TREES)
def test_directory_listings_equal_casync(tname, flagset, trees, run_casync):
    """`casync list|mtree|stat DIRECTORY` with --with=/--without=: the encoder's view, including its
    failures (stat without xattrs/fcaps; list --recursive=no)."""
    tree = _need(trees, tname)
    opts = {"noxattrs": ["--without=xattrs"], "fcaps-only": ["--with=fcaps", "--with=sec-time"]}.get(
        flagset, FLAGSETS.get(flagset))
    for verb in ("list", "mtree", "stat"):
        for recursive in (True, False):
            extra = [] if recursive else ["--recursive=no"]
            theirs = casync_out(run_casync, verb, *opts, *extra, tree)
            assert_same(ours_directory(tree, verb, opts, recursive=recursive), theirs, (verb, recursive))


@pytest.mark.parametrize("flagset", list(FLAGSETS))
def test_directory_digest_equals_casync(flagset, trees, run_casync):
    """`casync digest DIRECTORY` is the digest of the stream the encoder produces."""
    tree = trees.get("full", trees["odd"])
    opts = FLAGSETS[flagset]
    ff = flagset_flags(opts)
    theirs = casync_out(run_casync, "digest", *opts, tree)
    assert listing.stream_digest(encoder.encode(tree, ff), ff) + "\n" == theirs[0]


def test_directory_stat_shows_unstored_xattrs(tmp_path, run_casync):
    """With fcaps but without xattrs, casync's encoder still lists the root's user.* xattrs in stat
    although the archive would not store them."""
    tree = tmp_path / "x"
    tree.mkdir()
    os.setxattr(tree, "user.shown", b"v\tv")
    os.setxattr(tree, "trusted.too", b"\xff")
    for opts in (["--with=fcaps", "--with=sec-time"], []):
        text, err = ours_directory(str(tree), "stat", opts)
        assert "   XAttr: user.shown \u2192 v\\011v\n" in text
        assert_same((text, err), casync_out(run_casync, "stat", *opts, str(tree)), opts)


# --------------------------------------------------------------------------- the two sides differ


def test_directory_and_archive_sides_differ(trees, archives, run_casync, tmp_path):
    """The differences between listing a directory and listing the archive made from it with the same
    flags, each checked against casync as well."""
    tree = trees["odd"]

    def both(verb, flagset, *, recursive=True):
        opts = FLAGSETS[flagset]
        extra = [] if recursive else ["--recursive=no"]
        d = ours_directory(tree, verb, opts, recursive=recursive)
        a = ours_archive(archives["odd", flagset], verb, recursive=recursive)
        assert_same(d, casync_out(run_casync, verb, *opts, *extra, tree), "dir")
        assert_same(a, casync_out(run_casync, verb, *extra, archives["odd", flagset]), "archive")
        return d, a

    # 1. stat: the encoder reads the project id whenever quota-projid is on (0 on ext4, which the
    #    archive never stores); the decoder shows it only when stored
    (dtext, _), (atext, _) = both("stat", "default")
    assert "  ProjID: 0\n" in dtext and "ProjID" not in atext
    # 2. without fat-attrs (mixed) the encoder has no FAT attributes; the decoder always shows them
    (dtext, _), (atext, _) = both("stat", "mixed")
    assert " FATAttr:" not in dtext and " FATAttr: ---\n" in atext
    # 3. without xattrs and fcaps (unix) the encoder cannot enumerate xattrs: stat fails part-way
    (dtext, derr), (atext, aerr) = both("stat", "unix")
    assert derr == "Failed to enumerate extended attributes: No data available" and aerr is None
    assert dtext.endswith("   Group: 0\n") and atext.endswith("   Group: 0\n")
    # 4. list --recursive=no: the encoder cannot seek to the next sibling
    (dtext, derr), (atext, aerr) = both("list", "default", recursive=False)
    assert len(dtext.splitlines()) == 2 and derr.startswith("Failed to seek to next sibling")
    assert aerr is None and "-rw-r----- file.txt\n" in atext and " dir/sub\n" not in atext
    # 5. the root's Offset is 0 on both sides; mtime/owners show as the flags allow on both sides
    (dtext, _), (atext, _) = both("stat", "none")
    assert "  Offset: 0\n" in dtext and "  Offset: 0\n" in atext
    assert "Time:" not in dtext + atext and "User:" not in dtext + atext


def test_views_directly():
    """archive_view vs directory_view for one root-owned file with user names: both say "root" (the
    archive never stores root's name, the decoder makes it up again)."""
    ff = int(flags.DEFAULT)
    e = Entry(path="f", mode=0o100644, feature_flags=ff, uid=0, gid=0, size=3, quota_projid=None)
    a, d = listing.archive_view(e), listing.directory_view(e, ff)
    assert (a.user, a.group, d.user, d.group) == ("root",) * 4
    assert (a.quota_projid, d.quota_projid) == (None, 0)
    assert d.offset is None and a.offset is None
    names_only = int(F.WITH_USER_NAMES | F.WITH_SYMLINKS | F.EXCLUDE_NODUMP | F.SHA512_256)
    e2 = Entry(path="g", mode=0o100666, feature_flags=names_only, user="1234", group=None)
    assert listing.directory_view(e2, names_only).group == "root"
    assert listing.archive_view(e2).group is None
    masked = flags.normalize(flags.normalize_mask(ff) & ~int(F.WITH_USER_NAMES))
    assert listing.archive_view(e, masked).user is None
    assert listing.stat_text(listing.archive_view(e)).startswith("    File: f\n    Mode: -rw-r--r--\n")
