"""`--recompute` and `--micro-batch` change memory and time, never the maths: each case follows
`single` without either (same model, synthetic data, global batch 64, 10 steps) within 1e-4
relative loss at every step, final parameters within 1e-4 (test_equivalence_all.py's bounds).

- single, on the transformer (batch 8, 4 steps: it is the slow model): full recomputation with
  accumulation over 4 micro-steps of 2, and selective recomputation (only the attention core
  recomputed; tests/unit/test_recompute.py counts what backward reruns).
- ddp, fsdp at 2 ranks: accumulation (DDP's no_sync, FSDP2's set_requires_gradient_sync) with
  full recomputation (fsdp: wrapped before fully_shard).
- pipeline at 2 stages: --micro-batch sets its chunks (64 / 8 = 8 micro-batches), recomputation
  on each stage; mp at 2 stages: accumulation through its stages.

Bad combinations are refused before anything runs, in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT, assert_params_close, final_params, step_losses, sweep
from tests.integration.test_equivalence_all import STEPS, runner, world
from tests.integration.test_strategies_staged import _one_line_exit_2

TF = {"model": "transformer", "global_batch": 8, "steps": 4}  # a small batch, fewer steps: the transformer is slow
CASES: dict[str, tuple[str, int, int, dict]] = {
    "single": ("single", 1, 1, {}),
    "single-tf": ("single", 1, 1, TF),
    "single-tf-full-mb2": ("single", 1, 1, {**TF, "recompute": "full", "micro_batch": 2}),
    "single-tf-selective": ("single", 1, 1, {**TF, "recompute": "selective"}),
    "ddp-mb8-full": ("ddp", 1, 2, {"micro_batch": 8, "recompute": "full"}),
    "fsdp-mb16-full": ("fsdp", 1, 2, {"micro_batch": 16, "recompute": "full"}),
    "pipeline-mb8-full": ("pipeline", 1, 2, {"micro_batch": 8, "recompute": "full", "schedule": "1f1b"}),
    "mp-mb16": ("mp", 1, 2, {"micro_batch": 16}),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return runner(tmp_path_factory, CASES)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("single", "single-tf")])
def test_follows_single(run, name: str) -> None:
    base = "single-tf" if CASES[name][3].get("model") == "transformer" else "single"
    ref, got = step_losses(run(base), 1), step_losses(run(name), world(name, CASES))
    assert len(got) == len(ref) == CASES[name][3].get("steps", STEPS)
    for step, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert abs(a - b) <= 1e-4 * abs(b), f"{name} step {step}: loss {a} vs single {b}"
    assert_params_close(final_params(run(name)), final_params(run(base)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("args, needle", [
    (["--strategies", "single", "--recompute", "selective"], "mlp has no attention"),
    (["--strategies", "ddp", "--micro-batch", "24"], "must divide the rank's share"),
    (["--strategies", "pipeline", "--micro-batch", "8", "--chunks", "2"], "give one of --chunks, --micro-batch"),
])
def test_bad_combinations_are_refused_in_one_line(args, needle) -> None:
    _one_line_exit_2(sweep("--dry-run", "--nodes", "2", *args), needle)


def test_gpipe_names_its_own_checkpointing() -> None:
    out = subprocess.run([sys.executable, "-m", "trainers.gpipe", "--recompute", "full"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    _one_line_exit_2(out, "--checkpoint always|except_last|never")
