"""The pycatar command against the casync command, verb by verb, on the same inputs (issue 2, 3)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trees import make_full_tree, remove_tree

FLAG_SETS = [[], ["--with=unix"], ["--without=all"], ["--without=privileged"],
             ["--with=best", "--without=xattrs", "--without=user-names"],
             ["--with=unix", "--with=xattrs", "--without=sockets"], ["--without=acl", "--with=2sec-time"]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli") / "tree")
    make_full_tree(root, large_size=1 << 20, seed=3)
    yield root
    remove_tree(root)


def pycatar(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pycatar", *map(str, args)], capture_output=True, **kw)


def both(run_casync, *args):
    ref = run_casync(*args, check=False)
    ours = pycatar(*args)
    return ref, ours


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda a: " ".join(a) or "default")
def test_listing_verbs_equal_casync(flags, tree, run_casync, tmp_path):
    """list/mtree/stat/digest print the same for the directory, the .catar and the .caidx."""
    catar, caidx, store = tmp_path / "t.catar", tmp_path / "t.caidx", tmp_path / "s.castr"
    assert pycatar(*flags, "make", catar, tree).returncode == 0
    assert pycatar(*flags, "make", "--store", store, caidx, tree).returncode == 0
    for verb in ("list", "mtree", "digest"):
        for target in (tree, catar, caidx):
            ref, ours = both(run_casync, *flags, verb, "--store", store, target)
            assert ref.returncode == 0, ref.stderr
            assert (ours.returncode, ours.stdout) == (0, ref.stdout), (verb, target, ours.stderr)
    for sub in ("dir", "dir/sub/deeper/random.bin", "link", "dir/chardev"):
        ref, ours = both(run_casync, *flags, "stat", catar, sub)
        assert (ours.returncode, ours.stdout) == (ref.returncode, ref.stdout), (sub, ours.stderr)


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda a: " ".join(a) or "default")
def test_each_tool_extracts_the_others_archive(flags, tree, run_casync, tmp_path):
    """casync's mtree cannot tell pycatar's extraction of casync's archive (and the reverse) apart."""
    ref, ours = tmp_path / "ref.catar", tmp_path / "ours.catar"
    run_casync(*flags, "make", ref, tree)
    assert pycatar(*flags, "make", ours, tree).returncode == 0
    assert ours.read_bytes() == ref.read_bytes()
    p = pycatar("extract", ref, tmp_path / "a")
    assert p.returncode == 0, p.stderr
    run_casync("extract", ours, tmp_path / "b")
    mt = lambda path: run_casync(*flags, "mtree", path).stdout
    assert mt(tmp_path / "a") == mt(tmp_path / "b") == mt(tree)


def test_subpath_extract_cli(tree, run_casync, tmp_path):
    catar = tmp_path / "t.catar"
    run_casync("make", catar, tree)
    p = pycatar("extract", catar, tmp_path / "a", "dir/sub")
    assert p.returncode == 0, p.stderr
    run_casync("extract", catar, tmp_path / "b", "dir/sub")
    # casync puts the sub-path under its own name inside OUT; OUT itself is just created
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sub"]
    assert run_casync("mtree", tmp_path / "a" / "sub").stdout == run_casync("mtree", tmp_path / "b" / "sub").stdout


@pytest.mark.parametrize("cut", [0, 10, 64, 100, 1000, -100, -30, -1])
def test_truncated_archive_one_line_error(cut, tree, run_casync, tmp_path):
    catar = tmp_path / "t.catar"
    run_casync("make", catar, tree)
    data = catar.read_bytes()
    bad = tmp_path / "bad.catar"
    bad.write_bytes(data[:cut] if cut > 0 else data[:len(data) + cut] if cut else b"")
    for argv in (["list", bad], ["mtree", bad], ["digest", bad], ["extract", bad, tmp_path / "out"]):
        p = pycatar(*argv, timeout=60)
        err = p.stderr.decode()
        assert p.returncode != 0 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("flags", [["--with=unix"], ["--without=all"]], ids=lambda a: a[0])
def test_stat_directory_failing_like_casync_prints_once(flags, tree, run_casync):
    """casync prints the root's block, then fails on the xattrs these flags leave out: once."""
    ref, ours = both(run_casync, "stat", tree, *flags)
    assert ours.returncode == ref.returncode != 0
    assert ours.stdout == ref.stdout and ours.stdout.count(b"File: ") == 1


def test_output_into_a_closed_pipe_ends_quietly(tree, casync, tmp_path):
    """`pycatar list x | head -1` exits 0 with nothing on stderr, as casync does."""
    catar = tmp_path / "t.catar"
    assert pycatar("make", catar, tree).returncode == 0
    for cmd in ([casync, "list", catar], [sys.executable, "-m", "pycatar", "list", catar],
                [sys.executable, "-m", "pycatar", "mtree", tree]):
        for _ in range(3):
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert p.stdout.read(20)
            p.stdout.close()
            assert p.wait(60) == 0, cmd
            assert p.stderr.read() == b""
