"""MODEL=module:function launched: the example (examples/my_model.py) trains under single and,
with the same per-step loss, one strategy of each kind: ddp (replicas), fsdp (sharded) and
pipeline (staged), 2 ranks each (the others match too, run by hand: within 1e-7). A builder
that returns no blocks ends every rank with exit 2 and one line before any step. The refusals
in process: tests/unit/test_usermodel.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, records, run_local, step_losses, sweep
from tests.integration.test_strategies_staged import _one_line_exit_2

MODEL = "examples.my_model:build"
COMMON = dict(model=MODEL, dataset="synthetic", global_batch=32, chunks=2, steps=5)
# The strategies sum the same gradients in another order: rounding-level differences only.
RTOL = 1e-5


@pytest.fixture(scope="module")
def losses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    out = {}
    for name, strategy, procs in (("single", "single", 1), ("ddp", "ddp", 2), ("fsdp", "fsdp", 2),
                                  ("pipeline", "pipeline", 2)):
        run_dir = tmp_path_factory.mktemp(name)
        status = run_local(run_dir, strategy, 1, procs, **COMMON)
        assert status["state"] == "COMPLETED", status
        out[name] = step_losses(run_dir, procs)
        if strategy == "pipeline":
            assert len(records(run_dir, 0, "step")) == COMMON["steps"]
    return out


def test_the_example_trains(losses: dict[str, list[float]]) -> None:
    single = losses["single"]
    assert len(single) == COMMON["steps"] and single[-1] < single[0], single


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "pipeline"])
def test_the_example_follows_single(losses: dict[str, list[float]], strategy: str) -> None:
    for step, (got, want) in enumerate(zip(losses[strategy], losses["single"], strict=True)):
        assert abs(got - want) <= RTOL * abs(want), f"{strategy} step {step}: loss {got} vs single {want}"


def test_a_builder_without_blocks_ends_every_rank_with_one_line(tmp_path) -> None:
    (tmp_path / "ts_empty_model.py").write_text("def build(spec):\n    return []\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "trainers.single", "--model", "ts_empty_model:build",
                           "--steps", "2", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    _one_line_exit_2(proc, "invalid model 'ts_empty_model:build': returned list []")
    assert records(str(tmp_path / "run"), 0, "step") == []
    assert "returned list []" in records(str(tmp_path / "run"), 0, "error")[0]["message"]


def test_sweep_refuses_a_missing_function_before_writing(tmp_path) -> None:
    out = sweep("--dry-run", "--logs", str(tmp_path / "logs"), "--strategies", "ddp", "--nodes", "2",
                "--model", "examples.my_model:nope")
    _one_line_exit_2(out, "module 'examples.my_model' defines no 'nope'")
    assert not (tmp_path / "logs").exists()
