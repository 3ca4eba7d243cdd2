"""Loosely coupled data parallelism: localsgd (local SGD, DiLoCo) and asyncps.

At their synchronous settings they do their synchronous counterpart's maths: localsgd with H = 1
and plain averaging follows ddp, asyncps with staleness 0 follows ps (loss within 1e-5 at every
step, final parameters within 1e-5). At the loose settings their traffic, their extra state and
the staleness they record are checked. mlp on synthetic, seed 0, global batch 32, 8 steps; each
experiment runs once per module, when a test first asks for it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from tests.helpers import assert_params_close, final_params, records, run_local, step_losses

STEPS = 8
COMMON = dict(model="mlp", dataset="synthetic", seed=0, global_batch=32, steps=STEPS, save_params=True)
TOL = 1e-5
# name -> (strategy, nodes, procs, overrides)
CASES: dict[str, tuple[str, int, int, dict]] = {
    "ddp": ("ddp", 2, 1, {}),
    "localsgd-h1": ("localsgd", 2, 1, {"sync_every": 1, "outer": "sgd", "outer_lr": 1.0}),
    "localsgd-h4": ("localsgd", 2, 1, {"sync_every": 4}),
    "localsgd-h4-optim": ("localsgd", 2, 1, {"sync_every": 4, "sync_optim": "average"}),
    "diloco-h4": ("localsgd", 2, 1, {"sync_every": 4, "outer": "nesterov", "outer_lr": 0.7}),
    "ps": ("ps", 3, 1, {}),
    "asyncps-s0": ("asyncps", 3, 1, {"staleness": 0}),
    "asyncps-s2": ("asyncps", 3, 1, {"staleness": 2}),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            strategy, nodes, procs, kw = CASES[name]
            d = str(tmp_path_factory.mktemp(name))
            status = run_local(d, strategy, nodes, procs, **{**COMMON, **kw})
            assert status["state"] == "COMPLETED", f"{name}: {status}"
            done[name] = d
        return done[name]
    return get


def step_field(run_dir: str, rank: int, name: str) -> list:
    """A field of a rank's step records, read from the JSONL itself (analysis.load keeps the common ones)."""
    with open(os.path.join(run_dir, f"rank-{rank}.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r.get(name, "absent") for r in recs if r["event"] == "step"]


def assert_follows(got_dir: str, want_dir: str, world: int) -> None:
    got, want = step_losses(got_dir, world), step_losses(want_dir, world)
    assert len(got) == len(want) == STEPS
    assert max(want) - min(want) > 1e-3  # not two constant curves
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert abs(a - b) <= TOL, f"step {step}: loss {a} vs {b}"
    assert_params_close(final_params(got_dir), final_params(want_dir), rtol=TOL, atol=1e-6)


def test_localsgd_every_step_with_plain_averaging_is_ddp(run) -> None:
    assert_follows(run("localsgd-h1"), run("ddp"), 2)


def test_asyncps_without_staleness_is_ps(run) -> None:
    assert_follows(run("asyncps-s0"), run("ps"), 3)
    for rank in (1, 2):
        assert step_field(run("asyncps-s0"), rank, "staleness") == [0] * STEPS
    assert step_field(run("asyncps-s0"), 0, "staleness") == ["absent"] * STEPS  # the server computes nothing


def test_localsgd_averages_every_h_steps_and_drifts_between(run) -> None:
    d = run("localsgd-h4")
    param_bytes = records(d, 0, "start")[0]["param_bytes"]
    for rank in (0, 1):
        sent = [r["comm_bytes"] for r in records(d, rank, "step")]
        # two ranks: a ring all-reduce sends 2(W-1)/W = 1 x the parameter bytes, after steps 4 and 8 only
        assert sent == [0, 0, 0, param_bytes, 0, 0, 0, param_bytes], (rank, sent)
    losses, ddp = step_losses(d, 2), step_losses(run("ddp"), 2)
    assert abs(losses[0] - ddp[0]) <= TOL  # the same start
    assert max(abs(a - b) for a, b in zip(losses, ddp, strict=True)) > 1e-4  # then the replicas drift apart


def test_averaging_the_optimizer_state_too_doubles_the_traffic_of_sgd(run) -> None:
    d = run("localsgd-h4-optim")
    param_bytes = records(d, 0, "start")[0]["param_bytes"]
    sent = [r["comm_bytes"] for r in records(d, 0, "step")]
    assert sent == [0, 0, 0, 2 * param_bytes, 0, 0, 0, 2 * param_bytes]  # parameters + SGD's momentum
    plain, averaged = step_losses(run("localsgd-h4"), 2), step_losses(d, 2)
    # the same parameters after the first average (step 4's loss); then the momenta differ: averaged or not
    assert plain[:5] == pytest.approx(averaged[:5], abs=1e-6)
    assert max(abs(a - b) for a, b in zip(plain[5:], averaged[5:], strict=True)) > 1e-6


def test_diloco_steps_an_outer_optimizer_on_the_averaged_change(run) -> None:
    plain, diloco = step_losses(run("localsgd-h4"), 2), step_losses(run("diloco-h4"), 2)
    assert plain[:4] == pytest.approx(diloco[:4], abs=TOL)  # identical until the first synchronisation
    assert abs(plain[4] - diloco[4]) > 1e-5  # the outer step lands elsewhere than the average
    end_plain, end_diloco = records(run("localsgd-h4"), 0, "end")[0], records(run("diloco-h4"), 0, "end")[0]
    # the last sync's copy, its pseudo-gradient and the outer momentum: 3 x the parameters more
    assert end_diloco["optim_bytes"] - end_plain["optim_bytes"] == 3 * end_plain["param_bytes"]


def test_asyncps_staleness_stays_within_its_bound(run) -> None:
    d = run("asyncps-s2")
    lags = step_field(d, 1, "staleness") + step_field(d, 2, "staleness")
    assert all(0 <= s <= 2 for s in lags), lags
    # Of two workers, the first to push a step's gradient is answered before that step's update.
    assert max(lags) >= 1, lags
    assert records(d, 0, "epoch")[-1]["val_loss"] is not None  # the server validates


def test_a_dead_asyncps_server_ends_the_job_quickly(tmp_path) -> None:
    start = time.time()
    status = run_local(tmp_path, "asyncps", 3, 1, **{**COMMON, "staleness": 1, "fault": "kill@0:3"})
    assert status["state"] == "FAILED", status
    assert time.time() - start < 60, "the workers waited on the dead server"
    for rank in (1, 2):
        # with S = 1 a worker gets no answer to step 4 before version 4, which the server never makes
        assert max(r["step"] for r in records(tmp_path, rank, "step")) <= 3
