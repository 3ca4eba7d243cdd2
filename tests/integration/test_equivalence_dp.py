"""Data-parallel strategies do single's maths: same per-step loss, same final parameters.

Seed 0, global batch 32, 10 steps of mlp on synthetic. `single` runs once per module; each
of ddp, ps and ring runs at 2 and 4 ranks (one simulated node per rank). ps at 4 ranks has
3 workers, so it also covers an uneven split of the batch (11, 11, 10).
"""

from __future__ import annotations

import pytest

from tests.helpers import assert_params_close, final_params, records, run_local, step_losses

COMMON = dict(model="mlp", dataset="synthetic", seed=0, global_batch=32, steps=10, save_params=True)
RTOL = 1e-5


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], dict]:
    run_dir = tmp_path_factory.mktemp("single")
    status = run_local(run_dir, "single", **COMMON)
    assert status["state"] == "COMPLETED", status
    losses = step_losses(run_dir, 1)
    assert len(losses) == COMMON["steps"]
    assert max(losses) - min(losses) > 1e-3  # the comparison is not between two constant curves
    return losses, final_params(run_dir)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("strategy", ["ddp", "ps", "ring"])
def test_matches_single(strategy: str, world: int, single: tuple[list[float], dict],
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path_factory.mktemp(f"{strategy}{world}")
    status = run_local(run_dir, strategy, nodes=world, procs=1, **COMMON)
    assert status["state"] == "COMPLETED", status
    want_losses, want_params = single
    losses = step_losses(run_dir, world)
    assert len(losses) == len(want_losses)
    for step, (got, want) in enumerate(zip(losses, want_losses, strict=True)):
        assert abs(got - want) <= RTOL * abs(want), f"step {step}: {strategy} x{world} loss {got} != single {want}"
    assert_params_close(final_params(run_dir), want_params, rtol=RTOL)
    # Every sample of the global batch is read exactly once per step, by a computing rank.
    steps = [records(run_dir, r, "step") for r in range(world)]
    assert all(sum(recs[s]["samples"] for recs in steps) == COMMON["global_batch"] for s in range(COMMON["steps"]))
    if strategy == "ps":
        assert all(r["loss"] is None and r["samples"] == 0 for r in steps[0]), "the server computes nothing"
        assert [steps[w][0]["samples"] for w in range(1, world)] == ([32] if world == 2 else [11, 11, 10])
        assert records(run_dir, 1, "start")[0]["optim_bytes"] == 0, "workers hold no optimizer state"
        assert records(run_dir, 0, "end")[0]["optim_bytes"] > 0, "the server does"
    if strategy in ("ps", "ring"):
        assert all(r["comm_bytes"] > 0 and r["comm_s"] is not None for recs in steps for r in recs)
