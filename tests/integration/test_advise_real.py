"""`bin/advise` on a real tiny sweep (bin/sweep, simulate backend, emulated 10gbe between the nodes):
the parameter server, whose one worker computes the whole batch while ddp's two ranks split it, ranks
last, with its reason. The ranking logic itself is tested on synthetic sweeps in tests/unit/test_advise.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import ROOT, sweep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_ps_ranks_last_on_a_real_sweep(tmp_path):
    done = sweep("--nodes", "2", "--strategies", "ddp,ps", "--steps", "8", "--global-batch", "64", "--link", "10gbe",
                 "--backend", "simulate", "--device", "cpu", "--sweep", "real", "--logs", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    out = subprocess.run([os.path.join(ROOT, "bin", "advise"), "--logs", str(tmp_path), "--max-nodes", "8",
                          "--no-plot"], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(tmp_path / "real" / "advice.json") as f:
        rows = json.load(f)["rows"]
    measured = [r for r in rows if r["source"] == "measured"]
    assert [r["nodes"] for r in measured] == [2]
    assert measured[0]["best"] == "ddp" and measured[0]["runner_up"] == "ps"
    assert "-bound" in measured[0]["why"]["ps"]
    assert [r["source"] for r in rows[1:]] == ["projected", "projected"]
    assert "projection not checked" in out.stdout  # one node count measured
