"""The command line helps: per-verb --help, every verb listed, shell completion."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from pycatar import cli
from pycatar.cli.main import verb_handler


def pycatar(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pycatar", *args], capture_output=True, text=True, env=e)


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_verb_help_shows_the_verb_and_its_options(verb):
    for args in ([verb, "--help"], ["--store=x", verb, "-h"], [verb, "a", "b", "--help"]):
        p = pycatar(*args)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"Usage: pycatar [OPTIONS...] {verb}")
        assert "Content-addressable archives" not in p.stdout  # not the global help
    own = {"make": "--chunk-size", "extract": "--seed-output", "verify": "--repair", "gc": "--dry-run",
           "info": "--seed", "chunk": "--chunk-size", "list-chunks": "--json"}
    if verb in own:
        assert own[verb] in p.stdout
    if verb != "verify":
        assert "--repair" not in p.stdout


def test_global_help_lists_every_verb():
    p = pycatar("--help")
    assert p.returncode == 0
    for verb in [*cli.VERBS, "vectors"]:
        assert f"pycatar [OPTIONS...] {verb} " in p.stdout or f"pycatar {verb} " in p.stdout, verb
    assert set(cli.VERB_HELP) == set(cli.VERBS)
    for verb in cli.VERBS:  # each verb's module and function exist
        assert callable(verb_handler(verb)), verb


def _bash_complete(tmp_path, line: str) -> list[str]:
    """What bash offers for the last word of ``line`` (an empty last word: after a space), through the
    script ``_PYCATAR_COMPLETE=bash_source`` prints, run by the real bash with its own word splitting."""
    shim = tmp_path / "bin" / "pycatar"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pycatar "$@"\n')
    shim.chmod(0o755)
    script = pycatar(env={"_PYCATAR_COMPLETE": "bash_source"}).stdout
    driver = (f"{script}\n"
              f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
              # the words as bash's completion splits them: = is a word of its own (COMP_WORDBREAKS)
              "read -ra COMP_WORDS <<< \"${COMP_LINE//=/ = }\"\n"
              "[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')\n"
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              "_pycatar_complete pycatar\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}")
    p = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    return sorted(w for w in p.stdout.split("\n") if w)


def test_bash_completion_offers_verbs_options_then_files(tmp_path):
    (tmp_path / "x.caidx").write_bytes(b"")
    (tmp_path / "xdir").mkdir()
    assert _bash_complete(tmp_path, "pycatar --store=x ma") == ["make"]
    assert _bash_complete(tmp_path, "pycatar --store x ma") == ["make"]
    assert _bash_complete(tmp_path, "pycatar li") == ["list", "list-chunks"]
    assert _bash_complete(tmp_path, "pycatar -v --with=uid m") == ["make", "mount", "mtree"]
    assert _bash_complete(tmp_path, "pycatar --seed-o") == ["--seed-output"]
    assert _bash_complete(tmp_path, "pycatar extract x") == ["x.caidx", "xdir"]
    assert _bash_complete(tmp_path, "pycatar --store=x") == ["x.caidx", "xdir"]
    assert _bash_complete(tmp_path, "pycatar --store ") == ["bin", "x.caidx", "xdir"]
    assert _bash_complete(tmp_path, "pycatar list --recursive=no x.") == ["x.caidx"]


def test_zsh_completion_script_names_its_function():
    p = pycatar(env={"_PYCATAR_COMPLETE": "zsh_source"})
    assert p.returncode == 0 and "compdef _pycatar pycatar" in p.stdout
    p = pycatar(env={"_PYCATAR_COMPLETE": "fish_source"})
    assert p.returncode == 1 and "unknown mode" in p.stderr


def test_options_stand_anywhere_as_getopt_permutes_them():
    from pycatar.cli.main import parse

    v = parse(["-vn", "list", "--store", "s1", "x.caidx", "--extra-store=s2", "--extra-store", "s3", "--", "-y"])
    assert v["verbose"] and v["dry_run"] and v["store"] == "s1"
    assert v["extra_store"] == ["s2", "s3"]
    assert v["args"] == ["list", "x.caidx", "-y"]
    assert v["seed_output"] is None and v["json"] is False
    assert parse(["-l", "debug", "make", "-"])["log_level"] == "debug"
    assert parse(["-ldebug", "make", "-"])["args"] == ["make", "-"]
    # as getopt_long: a value in the next argument whatever it starts with, bundles ending in a value,
    # an empty value, options after the verb's arguments, nothing after "--" an option
    v = parse(["make", "--store", "-odd", "-vldebug", "--cache=", "a", "--seed=s1", "b", "--", "--seed=s2", "-"])
    assert v["store"] == "-odd" and v["verbose"] and v["log_level"] == "debug" and v["cache"] == ""
    assert v["seed"] == ["s1"] and v["args"] == ["make", "a", "b", "--seed=s2", "-"]
    assert parse(["-vn"])["dry_run"] and parse([])["args"] == [] and parse(["list"])["store"] is None


@pytest.mark.parametrize("args, message", [
    (["list", "--store"], "option '--store' requires an argument"),
    (["--sto=x", "list"], "unrecognized option '--sto'"),  # no abbreviations: an option is named in full
    (["list", "-q"], "unrecognized option '-q'"),
    (["list", "-vq"], "unrecognized option '-q'"),
    (["list", "--verbose=yes"], "option '--verbose' doesn't allow an argument"),
    (["list", "-l"], "option '--log-level' requires an argument"),
])
def test_a_bad_option_is_one_line_and_status_2(args, message):
    p = pycatar(*args)
    assert p.returncode == 2
    assert p.stderr == message + "\n"


def test_the_start_up_of_an_extraction_runs_no_cyclic_collection_and_loads_no_parser(tmp_path):
    # the collector counted from before the command's first import to its end, through python -m
    # pycatar's own route: the threshold is raised before the verb's modules load; and what the
    # start-up does without (7-13 ms of it): argparse, gettext and locale, re, enum, and libcrypto with
    # hashlib where the CPU has SHA-512/256 lanes (the chunks are verified in batches)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x" * 1000)
    assert pycatar("make", f"--store={tmp_path}/s.castr", f"{tmp_path}/t.caidx", str(tree)).returncode == 0
    # (python -S, with this interpreter's path: a .pth file of site-packages may load re or enum first)
    code = (f"import sys; sys.path[:0] = {sys.path!r}\n"
            "import atexit, gc, runpy\n"
            "runs = []\n"
            "gc.callbacks.append(lambda phase, info: phase == 'stop' and runs.append(info['generation']))\n"
            "skipped = ('argparse', 'gettext', 'locale', 're', 'enum', 'hashlib', '_hashlib')\n"
            "before = set(sys.modules)\n"
            "atexit.register(lambda: sys.stderr.write(\n"
            "    f'collections {runs} loaded {[m for m in skipped if m in sys.modules and m not in before]}'))\n"
            "sys.argv = ['pycatar', *sys.argv[1:]]\n"
            "runpy.run_module('pycatar', run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-S", "-c", code, "extract", f"--store={tmp_path}/s.castr",
                        f"{tmp_path}/t.caidx", str(tmp_path / "out")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "d" / "f").read_bytes() == b"x" * 1000
    from pycatar import _sha

    assert p.stderr == "collections [] loaded " + str([] if _sha.LANES else ["_hashlib"])


def test_durations_read_as_numbers_and_a_unit():
    """--grace=: a decimal number (a fraction allowed) and one of s, m, h, d, w (seconds without);
    the same values as the pattern it is written for, anything else an error."""
    import random
    import re

    from pycatar.cli.options import parse_duration
    from pycatar.errors import UsageError

    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    pattern = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
    rnd = random.Random(4)
    texts = ["90", " 30s ", "15m", "1.5h", "1d", "2w", "1.", ".5", "h", "", "1x", "1hh", "٣"]
    texts += ["".join(rnd.choice("01.5smhdwx ") for _ in range(rnd.randrange(6))) for _ in range(5000)]
    for text in texts:
        m = pattern.fullmatch(text.strip())
        if m is None:
            with pytest.raises(UsageError, match="Failed to parse --grace= parameter"):
                parse_duration(text, "--grace")
        else:
            assert parse_duration(text, "--grace") == float(m.group(1)) * units[m.group(2)], text
