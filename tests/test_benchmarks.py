"""The benchmark harness runs (on tiny data); no wall-clock thresholds here (see benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_harness_runs_on_tiny_data(casync, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", "bench.py"), "--quick", "--repeat", "1",
                        "--csv", str(tmp_path / "r.csv"), "--only", "caibx (blob)"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0].startswith("case,casync_s,pycatar_s,ratio")
    assert [r.split(",")[0] for r in rows[1:]] == ["make .caibx (blob)", "extract .caibx (blob)"]
    assert all(float(x) > 0 for r in rows[1:] for x in r.split(",")[1:])
    assert "| make .caibx (blob) |" in p.stdout
    bound = p.stdout.split("Lower bound on", 1)[1]  # the floor table follows the main one
    rows = [line.split("|") for line in bound.splitlines() if line.startswith("| ") and "(blob)" in line]
    assert [r[1].strip() for r in rows] == ["make .caibx (blob)", "extract .caibx (blob)"]
    for r in rows:
        casync_s, work, best, best_ratio = (float(x) for x in r[2:6])
        assert casync_s > 0 and work >= 0 and best > 0 and best_ratio > 0  # best includes the start-up


def test_network_harness_runs_on_tiny_data(casync, tmp_path):
    """benchmarks/network.py: casync and pycatar through pycatar serve (with an injected delay, and on
    plain loopback), then pycatar from the local store, through pycatar serve and through nginx with
    each side's CPU time; the outputs are checked."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", "network.py"), "--quick", "--repeat", "1",
                        "--out", str(tmp_path / "net.md")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ab, sides = (tmp_path / "net.md").read_text().split("\n\n")
    rows = [line.split("|") for line in ab.splitlines()[2:]]
    assert [r[2].strip() for r in rows] == ["casync", "casync"]
    assert all(float(r[6]) > 0 for r in rows)  # ratios
    assert float(rows[0][9]) > 0  # the delayed case's lower bound
    rows = [line.split("|") for line in sides.splitlines()[2:]]
    assert [r[2].strip() for r in rows] in (["local store", "pycatar serve", "nginx"], ["local store", "pycatar serve"])
    assert all(float(r[4]) > 0 and float(r[5]) > 0 for r in rows)  # ratio to local, client CPU
    assert float(rows[1][6]) >= 0  # the server's CPU (a tiny run may stay under one clock tick)
