"""Layout rules of the staged/sharded strategies (mostly in-process, no launches), their bad
input (exit 2, one line), and ZeRO's optimizer-state bound at 4 ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, records, run_local, sweep
from trainers.common.config import MODEL_BLOCKS, ConfigError, ExperimentConfig, parse_trainer_args, validate
from trainers.common.data import synthetic
from trainers.common.models import balance_by_params, build_model, param_counts


def test_block_table_matches_the_models() -> None:
    for name, blocks in MODEL_BLOCKS.items():
        spec = synthetic(0, tokens=name == "transformer").spec
        assert len(build_model(name, spec, 0)) == blocks, name


def test_balance_by_params_evens_out_the_largest_stage() -> None:
    spec = synthetic(0, tokens=False).spec
    counts = param_counts(build_model("mlp", spec, 0))
    assert balance_by_params(counts, 2) == [1, 5]  # the 3072x256 input layer outweighs the rest
    assert balance_by_params([1, 1, 1, 1], 4) == [1, 1, 1, 1]


@pytest.mark.parametrize("kw, needle", [
    (dict(strategy="mp", nodes=7), "more stages than the 6 blocks"),
    (dict(strategy="hybrid", nodes=1, procs_per_node=8, stages=8), "more stages than the 6 blocks"),
    (dict(strategy="pipeline", procs_per_node=2, chunks=0), "invalid chunks 0"),
    (dict(strategy="pipeline", procs_per_node=2, chunks=3), "not divisible by chunks x data-parallel ranks"),
    (dict(strategy="hybrid", nodes=2, procs_per_node=2, chunks=32, global_batch=32),
     "not divisible by chunks x data-parallel ranks"),
    (dict(strategy="pipeline", procs_per_node=2, balance="4,4"), "covers 8 blocks"),
    (dict(strategy="pipeline", procs_per_node=2, balance="x"), "invalid balance 'x'"),
    (dict(strategy="pipeline", procs_per_node=2, schedule="zigzag"), "unknown schedule 'zigzag'"),
])
def test_bad_layouts_are_config_errors(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        validate(ExperimentConfig(**kw))
    assert "\n" not in str(e.value)


def test_good_layouts_pass() -> None:
    for kw in (dict(strategy="pipeline", procs_per_node=2, balance="time"),
               dict(strategy="hybrid", nodes=2, procs_per_node=2, chunks=2),
               dict(strategy="gpipe", stages=6, balance="1,1,1,1,1,1", chunks=8)):
        validate(ExperimentConfig(**kw))
    with pytest.raises(ConfigError, match="unknown schedule|invalid choice"):
        parse_trainer_args(["--schedule", "zigzag"], "pipeline")


def _one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_trainers_and_sweep_exit_2_on_bad_input(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    # More stages than blocks (the trainer's own command line), then dp without 2 GPUs (found at run time).
    mp = subprocess.run([sys.executable, "-m", "trainers.mp", "--nodes", "8"], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=120)
    _one_line_exit_2(mp, "more stages than the 6 blocks")
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
