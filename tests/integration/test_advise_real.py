"""`bin/advise` on a real tiny sweep (bin/sweep, simulate backend, 4 nodes on an emulated 10gbe link
slowed to 1 Gbit/s): the parameter server's one rank sends (W-1) x the gradient bytes per step where
ddp's ranks send 2(W-1)/W x, so at 4 nodes ps carries twice ddp's wire time and ranks last, with its
reason. (At 2 nodes on this machine ps can win: gloo's all-reduce costs ddp more than the wire.)
The ranking logic itself is tested on synthetic sweeps in tests/unit/test_advise.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import ROOT, sweep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_ps_ranks_last_on_a_real_sweep(tmp_path):
    done = sweep("--nodes", "4", "--strategies", "ddp,ps", "--steps", "8", "--global-batch", "64", "--link", "10gbe",
                 "--bandwidth-gbps", "1", "--backend", "simulate", "--device", "cpu", "--sweep", "real",
                 "--logs", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    out = subprocess.run([os.path.join(ROOT, "bin", "advise"), "--logs", str(tmp_path), "--max-nodes", "8",
                          "--no-plot"], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(tmp_path / "real" / "advice.json") as f:
        rows = json.load(f)["rows"]
    measured = [r for r in rows if r["source"] == "measured"]
    assert [r["nodes"] for r in measured] == [4]
    assert measured[0]["best"] == "ddp" and measured[0]["runner_up"] == "ps"
    assert measured[0]["why"]["ps"].startswith("communication-bound")
    assert [r["source"] for r in rows[1:]] == ["projected"]
    assert "projection not checked" in out.stdout  # one node count measured
