"""The command line helps: per-verb --help, every verb listed, shell completion."""

from __future__ import annotations

import os
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


def test_bash_completion_offers_verbs_then_files(tmp_path):
    env = {"_PYCATAR_COMPLETE": "bash_complete", "COMP_WORDS": "pycatar --store=x ma", "COMP_CWORD": "2"}
    assert pycatar(env=env).stdout.split() == ["plain,make"]
    env = {"_PYCATAR_COMPLETE": "bash_complete", "COMP_WORDS": "pycatar li", "COMP_CWORD": "1"}
    assert sorted(pycatar(env=env).stdout.split()) == ["plain,list", "plain,list-chunks"]
    env = {"_PYCATAR_COMPLETE": "bash_complete", "COMP_WORDS": "pycatar extract x", "COMP_CWORD": "2"}
    assert pycatar(env=env).stdout.split() == ["file,x"]
    p = pycatar(env={"_PYCATAR_COMPLETE": "zsh_source"})
    assert p.returncode == 0 and "compdef" in p.stdout
