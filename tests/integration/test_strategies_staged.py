"""Staged/sharded strategies launched: bad input on the trainers' and bin/sweep's command lines (exit 2,
one line), and ZeRO's optimizer-state bound at 4 ranks. The layout rules in process: tests/unit/test_layouts.py."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, records, run_local, sweep
from trainers.common.data import synthetic
from trainers.common.models import build_model


def _one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_trainers_and_sweep_exit_2_on_bad_input(tmp_path) -> None:
    env = dict(os.environ)
    # More stages than blocks (the trainer's own command line), then dp without 2 GPUs (found at run time).
    mp = subprocess.run([sys.executable, "-m", "trainers.mp", "--nodes", "8"], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=120)
    _one_line_exit_2(mp, "needs 8 stages here; the model has 6 blocks")
    dp = subprocess.run([sys.executable, "-m", "trainers.dp", "--steps", "1", "--run-dir", str(tmp_path / "dp")],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    if dp.returncode != 0:  # a machine with 2+ GPUs runs it
        _one_line_exit_2(dp, "needs at least 2 GPUs")
    for args, needle in ((["--chunks", "0"], "chunks"), (["--schedule", "zigzag"], "zigzag"),
                         (["--chunks", "3"], "not divisible by chunks")):
        out = sweep("--dry-run", "--strategies", "pipeline", "--nodes", "2", *args)
        _one_line_exit_2(out, needle)


def test_zero_holds_a_quarter_of_adams_state(tmp_path) -> None:
    # transformer: ZeRO assigns whole tensors to ranks, and its many similar tensors split evenly
    # over 4 ranks (mlp's one 3072x256 layer is 75% of the model: no per-tensor split can be even).
    status = run_local(tmp_path, "zero", 1, 4, model="transformer", optimizer="adam", lr=0.001, steps=1,
                       warmup=0)
    assert status["state"] == "COMPLETED", status
    n_params = sum(p.numel() for p in build_model("transformer", synthetic(0, tokens=True).spec, 0).parameters())
    plain_adam = 8 * n_params  # two fp32 moments per parameter
    held = [records(tmp_path, r, "end")[-1]["optim_bytes"] for r in range(4)]
    assert sum(held) == plain_adam  # sharded, not lost
    assert max(held) <= 1.1 / 4 * plain_adam, held
