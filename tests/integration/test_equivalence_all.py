"""Every staged and sharded strategy follows `single` step by step (mlp, synthetic, seed 0,
global batch 64, 10 steps): loss within 1e-4 relative at every step, final parameters
(gathered to rank 0 under single's names) within 1e-4. FSDP runs at 4 ranks, so the same
run also checks its per-rank memory bound against single's unsharded state.

Each experiment runs once per module (lazily, so `-k` selects what runs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.helpers import assert_params_close, final_params, records, run_local, step_losses

STEPS = 10
# name -> (strategy, nodes, procs, overrides); the baseline a case compares with is single + same optimizer
CASES: dict[str, tuple[str, int, int, dict]] = {
    "single": ("single", 1, 1, {}),
    "single-adam": ("single", 1, 1, {"optimizer": "adam", "lr": 0.001}),
    "mp-2nodes": ("mp", 2, 1, {}),
    "gpipe-c4": ("gpipe", 1, 1, {"chunks": 4, "gpipe_checkpoint": "except_last"}),
    "pipeline-gpipe-c4": ("pipeline", 1, 2, {"schedule": "gpipe", "chunks": 4}),
    # 1f1b with 1 micro-batch < 2 stages is GPipe's order (trainers/pipeline.py): covers both schedules at c1
    "pipeline-1f1b-c1": ("pipeline", 1, 2, {"schedule": "1f1b", "chunks": 1}),
    "pipeline-1f1b-c4-2nodes": ("pipeline", 2, 1, {"schedule": "1f1b", "chunks": 4}),
    "hybrid-2x2-c2": ("hybrid", 2, 2, {"schedule": "1f1b", "chunks": 2}),
    "zero-adam": ("zero", 1, 2, {"optimizer": "adam", "lr": 0.001}),
    "fsdp-adam-4": ("fsdp", 1, 4, {"optimizer": "adam", "lr": 0.001}),
}


def runner(tmp_path_factory: pytest.TempPathFactory, cases: dict[str, tuple[str, int, int, dict]] = CASES,
           **common: object) -> Callable[[str], str]:
    """name -> run directory of cases[name] with `common` settings on top (tests/integration/test_bf16.py
    adds precision), each run once, when first asked for."""
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            strategy, nodes, procs, kw = cases[name]
            d = str(tmp_path_factory.mktemp(name))
            status = run_local(d, strategy, nodes, procs, **{"steps": STEPS, "save_params": True, **kw, **common})
            assert status["state"] == "COMPLETED", f"{name}: {status}"
            done[name] = d
        return done[name]
    return get


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return runner(tmp_path_factory)


def world(name: str, cases: dict[str, tuple[str, int, int, dict]] = CASES) -> int:
    return cases[name][1] * cases[name][2]


def baseline(name: str, cases: dict[str, tuple[str, int, int, dict]] = CASES) -> str:
    """The single case a case compares with: same optimizer."""
    return "single-adam" if cases[name][3].get("optimizer") == "adam" else "single"


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("single")])
def test_follows_single(run, name: str) -> None:
    base = baseline(name)
    ref, got = step_losses(run(base), 1), step_losses(run(name), world(name))
    assert len(got) == len(ref) == STEPS
    for step, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert abs(a - b) <= 1e-4 * abs(b), f"{name} step {step}: loss {a} vs single {b}"
    # Adam divides by sqrt(v): a weight whose gradient is ~0 turns rounding-level differences of the
    # reduction order into update differences of order 1e-6 (lr 1e-3), hence the absolute floor.
    atol = 1e-5 if base == "single-adam" else 1e-6
    assert_params_close(final_params(run(name)), final_params(run(base)), rtol=1e-4, atol=atol)


def test_staged_loss_only_on_last_stage(run) -> None:
    d = run("pipeline-1f1b-c4-2nodes")
    assert all(r["loss"] is None for r in records(d, 0, "step"))
    assert all(r["loss"] is not None for r in records(d, 1, "step"))
    # rank 0 sends 4 micro-batches of 16 x 256 fp32 activations per step
    assert records(d, 0, "step")[0]["comm_bytes"] == 64 * 256 * 4
    assert records(d, 0, "epoch")[-1]["val_loss"] is None and records(d, 1, "epoch")[-1]["val_loss"] > 0


def test_fsdp_holds_a_quarter_of_the_model_state(run) -> None:
    single_end = records(run("single-adam"), 0, "end")[-1]
    full = single_end["param_bytes"] + single_end["grad_bytes"] + single_end["optim_bytes"]
    assert single_end["optim_bytes"] == 2 * single_end["param_bytes"]  # Adam: two fp32 moments
    for rank in range(4):
        end = records(run("fsdp-adam-4"), rank, "end")[-1]
        held = end["param_bytes"] + end["grad_bytes"] + end["optim_bytes"]
        assert 0 < held <= 1.15 / 4 * full, f"rank {rank} holds {held} of {full}"
