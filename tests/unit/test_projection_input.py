"""`make project` (analysis.projection) bad input: one line on stderr, exit 2, nothing written;
and a sweep of fewer than three node counts says its projection is not checked."""

from __future__ import annotations

import os

import pytest

from analysis.projection.cli import main
from analysis.synthetic import write_sweep


@pytest.fixture
def sweep(tmp_path) -> str:
    return write_sweep(str(tmp_path), "s", strategies=("ddp",), nodes=(1, 2), steps=8)


@pytest.mark.parametrize("args,needle", [
    (["--link", "token-ring"], "unknown link 'token-ring'"),
    (["--max-nodes", "0"], "invalid max-nodes '0'"),
    (["--max-nodes", "x8"], "invalid max-nodes 'x8'"),
    (["--max-nodes", "2.5"], "invalid max-nodes '2.5'"),
    (["--procs-per-node", "-1"], "invalid procs-per-node '-1'"),
    (["--latency-us", "fast"], "invalid latency-us 'fast'"),
    (["--bandwidth-gbps", "-3"], "invalid bandwidth_gbps -3.0"),
    (["--scaling", "sideways"], "invalid scaling 'sideways'"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input(sweep, capsys, args, needle):
    logs, name = os.path.split(sweep)
    before = sorted(os.listdir(sweep))
    assert main(["--logs", logs, "--sweep", name, "--no-plot", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert sorted(os.listdir(sweep)) == before


def test_no_completed_run(tmp_path, capsys):
    path = write_sweep(str(tmp_path), "dead", strategies=("ddp",), nodes=(2,), steps=6, state="FAILED")
    assert main(["--logs", str(tmp_path), "--sweep", "dead", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert "no COMPLETED experiment" in err and err.count("\n") == 1
    assert not os.path.exists(os.path.join(path, "projection.csv"))


def test_two_node_counts_are_not_checked(sweep, capsys):
    logs, name = os.path.split(sweep)
    assert main(["--logs", logs, "--sweep", name, "--no-plot", "--max-nodes", "8"]) == 0
    out = capsys.readouterr().out
    assert "projection not checked" in out and "check ddp" not in out
