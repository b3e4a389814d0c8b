"""The benchmark harness runs (on tiny data); no wall-clock thresholds here (see benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


KEYS = ["make-caibx", "extract-caibx", "make-caidx", "extract-caidx", "make-caidx-4k", "extract-caidx-include",
        "make-blake3", "list-million", "digest-million", "rss", "list-small"]


def test_harness_runs_on_tiny_data(casync, tmp_path):
    """Every case of issue 18 runs on tiny data, and every case but the memory one gets a lower bound."""
    import pycatar

    here = os.path.dirname(os.path.dirname(os.path.abspath(pycatar.__file__)))  # as a baseline: itself
    p = subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", "bench.py"), "--quick", "--repeat", "1",
                        "--csv", str(tmp_path / "r.csv"), "--out", str(tmp_path / "r.md"), "--baseline", here],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    # the file system named as mounted (df reads the mount table on its own): "ext4", not stat -f's "ext2/ext3"
    fstype = subprocess.run(["df", "--output=fstype", tempfile.gettempdir()], capture_output=True,
                            text=True, check=True).stdout.split()[-1]
    assert f"({fstype} file system)" in p.stderr.splitlines()[0], p.stderr
    rows = [r.split(",") for r in (tmp_path / "r.csv").read_text().splitlines()]
    assert rows[0][:6] == ["key", "a", "b", "a_s", "b_s", "ratio"]
    assert rows[0][-3:] == ["bound_s", "b_startup_s", "floor_s"]
    assert [r[0] for r in rows[1:]] == KEYS
    for r in rows[1:]:
        a_s, b_s, ratio = (float(x) for x in r[3:6])
        assert a_s > 0 and b_s > 0 and abs(ratio - b_s / a_s) <= 0.01 * ratio
        assert float(r[12]) > 0 and float(r[13]) > 0  # peak RSS of both sides
        if r[0] == "rss":
            assert r[1:3] == ["pycatar small", "pycatar large"] and r[-3:] == ["", "", ""]
            continue
        assert r[1:3] == ["casync", "pycatar"] and float(r[-3]) > 0.0  # at least the start-up
        if r[0] == "list-small":  # its own start-up
            assert r[-2:] == ["", ""]
        else:  # pycatar's start-up on a one-file input: more than the interpreter's, in the floor
            bound, start, floor = (float(x) for x in r[-3:])
            assert start > 0 and floor >= bound
    table = (tmp_path / "r.md").read_text()
    assert table.startswith("| case | A | A s (min-max) |") and "lower bound s" in table
    main, _, base = table.partition("Baseline (pycatar from")
    assert len([line for line in main.splitlines() if line.startswith("| ")]) == 1 + len(KEYS)
    # the baseline ran in the same rounds for every case that compares with casync
    rows = [line.split("|") for line in base.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert len(rows) == len(KEYS) - 1 and all(float(r[2]) > 0 and float(r[3].split()[0]) > 0 for r in rows)


def test_sides_take_every_place_in_turn():
    """Two sides alternate; with a baseline, each of the three sides runs first, second and last once
    every three rounds (no side always runs just after another side's extraction)."""
    sys.path.insert(0, os.path.join(HERE, "benchmarks"))
    try:
        from bench import _order
    finally:
        sys.path.pop(0)
    assert [_order(2, r) for r in range(4)] == [[0, 1], [1, 0], [0, 1], [1, 0]]
    rounds = [_order(3, r) for r in range(3)]
    assert all(sorted(o) == [0, 1, 2] for o in rounds)
    for place in range(3):
        assert sorted(o[place] for o in rounds) == [0, 1, 2]


def test_network_harness_runs_on_tiny_data(casync, tmp_path):
    """benchmarks/network.py: casync and pycatar through pycatar serve (with an injected delay, for a
    blob and for one whose chunks repeat, and on plain loopback) and through python3 -m http.server,
    then pycatar from the local store, through pycatar serve and through nginx with each side's CPU
    time; the outputs are checked."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", "network.py"), "--quick", "--repeat", "1",
                        "--out", str(tmp_path / "net.md")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ab, sides = (tmp_path / "net.md").read_text().split("\n\n")
    rows = [line.split("|") for line in ab.splitlines()[2:]]
    assert [r[2].strip() for r in rows] == ["casync", "casync", "casync", "casync"]
    assert all(float(r[6]) > 0 for r in rows)  # ratios
    assert float(rows[0][9]) > 0 and float(rows[1][9]) > 0  # the delayed cases' lower bounds
    assert "repeated chunks" in rows[1][1] and "http.server" in rows[3][1]
    rows = [line.split("|") for line in sides.splitlines()[2:]]
    assert [r[2].strip() for r in rows] in (["local store", "pycatar serve", "nginx"], ["local store", "pycatar serve"])
    assert all(float(r[4]) > 0 and float(r[5]) > 0 for r in rows)  # ratio to local, client CPU
    assert float(rows[1][6]) >= 0  # the server's CPU (a tiny run may stay under one clock tick)


def test_startup_harness_runs(casync, tmp_path):
    """benchmarks/startup.py: every small verb is timed next to casync and the bare interpreter, and the
    import breakdown names pycatar's own modules."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", "startup.py"), "--runs", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = {line[:28].strip(): line[28:].split() for line in p.stdout.splitlines()[1:]
            if line.startswith(("python3", "casync", "pycatar"))}
    expected = {"python3 -c pass", "casync list x.catar", "pycatar --version", "pycatar --help"} | {
        f"pycatar {verb} {name}" for verb in ("list", "mtree", "stat", "digest") for name in ("x.catar", "x.caidx")}
    assert set(rows) == expected
    assert all(float(r[0]) > 0 for r in rows.values())
    assert "-X importtime, list x.catar:" in p.stdout and "pycatar.cli" in p.stdout
