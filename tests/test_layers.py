"""The package's modules import downward only: no import cycle, counting imports inside functions; the
library never imports the command line (``pycatar.cli``); the command line imports at module top."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "pycatar")


def _modules() -> dict[str, str]:
    mods = {}
    for root, _dirs, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                mods[rel.removesuffix(".__init__")] = os.path.join(root, f)
    return mods


def _edges(mods: dict[str, str]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.endswith("__init__.py") else m.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and t != "pycatar":  # the top package: __version__ and the like
                    edges[m].add(t)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                found.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m)
    return found


def test_no_import_cycles():
    mods = _modules()
    assert "pycatar.store" in mods and "pycatar.cli" in mods
    assert _cycles(_edges(mods)) == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _is_command(module: str) -> bool:
    return module in ("pycatar.cli", "pycatar.__main__") or module.startswith("pycatar.cli.")


def test_library_modules_never_import_the_command_line():
    edges = _edges(_modules())
    command = {m for m in edges if _is_command(m)}
    assert {"pycatar.cli", "pycatar.cli.main", "pycatar.cli.make", "pycatar.cli.extract"} <= command
    for m, targets in edges.items():
        if m not in command:
            assert not targets & command, (m, targets & command)


def test_the_checker_sees_an_import_of_the_command_line_package(tmp_path):
    """An import of ``pycatar.cli`` (a package: its __init__) is an edge like any other."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "__init__.py").write_text("")
    (tmp_path / "store.py").write_text("from .cli import main\nfrom . import cli\n")
    mods = {"pycatar.cli": str(tmp_path / "cli" / "__init__.py"), "pycatar.store": str(tmp_path / "store.py")}
    assert _edges(mods)["pycatar.store"] == {"pycatar.cli"}
    assert _is_command("pycatar.cli.make") and not _is_command("pycatar.client")


def _function_level_imports(path: str) -> list[int]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    with open(path, encoding="utf-8") as f:
        text = f.read().splitlines()
    lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines += [n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))
                      and "# start-up:" not in text[n.lineno - 1]]  # a measured exception, said where
    return sorted(set(lines))


def test_the_command_line_and_operations_import_at_module_top():
    """Imports sit at module top; pycatar.cli.main imports a verb's module when the verb runs (through
    importlib, a measured start-up cost: see VERBS there), and an import inside a function says why
    (``# start-up:`` and the measurement)."""
    mods = _modules()
    checked = [m for m in mods if _is_command(m)] + ["pycatar.operations", "pycatar.sources", "pycatar.location"]
    inside = {m: _function_level_imports(mods[m]) for m in checked}
    assert {m: lines for m, lines in inside.items() if lines} == {}


#: what a small verb on a local file must not load: the network stack, the writer side, construct,
NOT_AT_START_UP = ("pycatar._curl", "ssl", "aiohttp", "boto3", "botocore", "cryptography", "construct", "pycatar.httpclient",
                   "pycatar.httpstore", "pycatar.s3store", "pycatar.encoder", "pycatar.archive", "pycatar.tarconv",
                   "pycatar.extract", "pycatar.assembly", "pycatar.mount",
                   # nor what only some uses need (typing: annotations only; the others: uploads, mounts of a
                   # URL, pipes, temporary names), nor dataclasses and the inspect it loads (pycatar.record), nor
                   # concurrent.futures and the logging it loads (pycatar.pool)
                   "typing", "shutil", "tempfile", "urllib", "secrets", "dataclasses", "inspect", "concurrent",
                   "logging")


def _imported(args: list[str], cwd) -> set[str]:
    """The modules ``python3 -m pycatar ARGS`` loads, as a user's interpreter would: without the site
    hooks of this one (-S: no .pth file runs; a sandbox's imports certifi, and with it typing,
    tempfile, urllib...), finding modules where this process does (its sys.path as PYTHONPATH)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "pycatar", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines()
            if line.startswith("import time:") and "imported package" not in line}


def test_small_verbs_on_local_files_load_no_network_nor_writer_module(tmp_path):
    """The start-up rule (``# start-up:`` imports in location, sources, operations, cli.list): list,
    mtree, stat and digest of a local .catar or .caidx, --version and --help stay clear of
    :data:`NOT_AT_START_UP` (see benchmarks/startup.py for what that saves)."""
    (tmp_path / "tree" / "d").mkdir(parents=True)
    (tmp_path / "tree" / "d" / "f").write_bytes(b"x" * 5000)
    for name in ("t.catar", "t.caidx"):
        p = subprocess.run([sys.executable, "-m", "pycatar", "make", name, "tree"], cwd=tmp_path,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    runs = [["--version"], ["--help"], ["list", "--help"]]
    runs += [[verb, name] for verb in ("list", "mtree", "stat", "digest") for name in ("t.catar", "t.caidx")]
    for args in runs:
        loaded = _imported(args, tmp_path)
        assert "pycatar.cli.main" in loaded  # the check sees the package's own imports
        bad = sorted(m for m in loaded if m.split(".")[0] in NOT_AT_START_UP or m in NOT_AT_START_UP)
        assert bad == [], (args, bad)


def test_make_and_extract_of_local_files_load_no_network_module_nor_dataclasses(tmp_path):
    """make to a local .catar, .caidx or .caibx and store, and their extraction, load the writer and
    extraction side but nothing of the network nor dataclasses/inspect/typing (pycatar.record; 12-17 ms
    a make) nor concurrent.futures/logging (pycatar.pool; 15-20 ms; benchmarks/RESULTS.md)."""
    (tmp_path / "tree" / "d").mkdir(parents=True)
    (tmp_path / "tree" / "d" / "f").write_bytes(b"x" * 5000)
    (tmp_path / "blob").write_bytes(b"y" * 200000)
    for args, wanted in ((["make", "t.catar", "tree"], "pycatar.archive"),
                         (["make", "--store=s.castr", "t.caidx", "tree"], "pycatar.archive"),
                         (["make", "--store=s.castr", "t.caibx", "blob"], "pycatar.blob"),
                         (["extract", "t.catar", "x1"], "pycatar.extract"),
                         (["extract", "--store=s.castr", "t.caidx", "x2"], "pycatar.assembly"),
                         (["extract", "--store=s.castr", "t.caibx", "x3"], "pycatar.assembly")):
        loaded = _imported(args, tmp_path)
        assert wanted in loaded, args
        allowed = {"pycatar.encoder", "pycatar.archive", "pycatar.extract", "pycatar.assembly"}
        bad = sorted(m for m in loaded if (m.split(".")[0] in NOT_AT_START_UP or m in NOT_AT_START_UP)
                     and m not in allowed)
        assert bad == [], (args, bad)
