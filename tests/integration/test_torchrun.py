"""A trainer under torchrun takes its layout from the launcher (WORLD_SIZE, LOCAL_WORLD_SIZE) when
the command line gives none: `torchrun --standalone --nproc_per_node 2 -m trainers.ddp` runs
1 node x 2 ranks, each on its half of the batch. The rules in process: tests/unit/test_launcher_layout.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT, records


def torchrun() -> list[str]:
    """The venv's torchrun script (python -m torch.distributed.run where there is none)."""
    script = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "torch.distributed.run"]


def test_torchrun_two_procs_without_a_layout(tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "trainers.ddp",
                           "--steps", "3", "--global-batch", "32", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=os.environ)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(run_dir / "config.json") as f:
        meta = json.load(f)
    assert (meta["config"]["nodes"], meta["config"]["procs_per_node"]) == (1, 2)
    assert meta["meta"]["env_source"] == "env" and len(meta["meta"]["ranks"]) == 2
    for rank in range(2):
        start = records(str(run_dir), rank, "start")[0]
        assert (start["world_size"], start["dp_rank"], start["dp_size"]) == (2, rank, 2)
        steps = records(str(run_dir), rank, "step")
        assert [r["samples"] for r in steps] == [16, 16, 16]
        assert records(str(run_dir), rank, "end")[0]["status"] == "COMPLETED"
