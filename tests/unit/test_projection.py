"""Scaling projection (analysis/projection/), in process: the model's algebra, and the fit on
sweeps written in the real on-disk format from known constants, which it must recover.

How well the model predicts a held-out node count on this machine is a measurement, not a test:
`make bench BENCH=projection` prints it per strategy.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from analysis.projection.cli import main
from analysis.projection.fit import fit_all, fit_thread_gain, held_out_check
from analysis.projection.model import (
    PIPELINE,
    PROJECTED,
    Fit,
    contention,
    critical_hops,
    dp_size,
    messages,
    micro_batches,
    node_counts,
    pattern,
    predict_here,
    project,
    staged_terms,
)
from analysis.projection.points import Point, load_points
from contract import registry, rundir
from contract.config import ExperimentConfig
from contract.tables import LINKS


def _point(strategy: str, nodes: int, f: Fit, cores: int = 2, batch: int = 64) -> Point:
    world = nodes
    r = contention(world, cores)
    step, comp, _, _ = f.step_s(world, batch, r)
    samples = -(-batch // dp_size(strategy, world))  # the slowest rank's slice
    return Point(strategy, nodes, 1, batch, 4, cores, step, comp,
                    int(f.param_bytes * pattern(strategy, world)), samples, 0.0, 0.0)


@pytest.mark.parametrize("strategy", ["ddp", "ps"])
def test_fit_recovers_the_model(strategy):
    truth = Fit(strategy, c0=1e-3, s=5e-5, kappa=2e-9, param_bytes=4e6, chunks=4)
    nodes = [1, 2, 4] if strategy == "ddp" else [2, 3, 4]
    fits = fit_all([_point(strategy, n, truth) for n in nodes])
    got = fits[strategy]
    assert got.c0 == pytest.approx(truth.c0, rel=1e-6) and got.s == pytest.approx(truth.s, rel=1e-6)
    assert got.kappa == pytest.approx(truth.kappa, rel=1e-6)
    assert got.param_bytes == pytest.approx(truth.param_bytes, rel=1e-6)
    # 8 ranks on 2 cores: 4 ranks per core
    want = truth.step_s(8, 64, 4.0)[0]
    assert predict_here(got, 8, 1, 2, 64) == pytest.approx(want, rel=1e-6)


def test_link_formulas():
    assert pattern("ring", 4) == 1.5 and pattern("ps", 4) == 3 and pattern("pipeline", 4) == 2
    assert pattern("mp", 2) == 1  # two stages: each sends one boundary's tensor; a middle stage two
    assert messages("ddp", 4, 4) == 6 and messages("ps", 4, 4) == 2
    assert messages("mp", 2, 4) == 2 and messages("pipeline", 2, 4) == 8  # mp: one micro-batch, any CHUNKS
    f = Fit("ddp", 0.0, 1e-4, 0.0, 8e6, 4)
    row = project(f, 64, 1, 2, 64, "weak", 25e-6, 10e9 / 8)
    assert row["link_s"] == pytest.approx(2 * 63 * 25e-6 + 8e6 * 2 * 63 / 64 / (10e9 / 8))
    assert row["global_batch"] == 64 * 64 and not row["note"]


def test_staged_critical_path():
    """mp runs the batch whole (M = 1, whatever CHUNKS): its compute is the whole model's at any stage
    count, and its critical path crosses every boundary twice; a pipeline adds M-1 hops each way."""
    assert micro_batches("mp", 4) == 1 and micro_batches("pipeline", 4) == 4
    assert staged_terms(4, 1, 1000.0) == (1.0, 6000.0, 6)
    factor, nbytes, hops = staged_terms(4, 4, 1000.0)
    assert factor == pytest.approx(7 / 16) and hops == 12 and nbytes == pytest.approx(3000.0)
    assert critical_hops(1, 4) == 0
    mp = Fit("mp", 0.0, 1e-4, 1e-9, 1000.0, 4)
    assert mp.compute(4, 64, 1.0) == pytest.approx(mp.compute(1, 64, 1.0))
    step, comp, local, wire = mp.step_s(4, 64, 1.0, 25e-6, 10e9 / 8)
    assert wire == pytest.approx(6 * 25e-6 + 6000 / (10e9 / 8)) and local == pytest.approx(6000e-9)
    assert mp.bubble(4, 64, 1.0) == pytest.approx(comp * 3 / 4)


# ---- the fit on logs in the on-disk format --------------------------------------------------------
# A small generator (analysis.synthetic's toy cost model is not the projection's): every step of
# every rank logs exactly what the projection's model says for the true constants below.

CORES, BUSY, BATCH, STEPS, WARMUP = 2, 0.8, 64, 6, 2
TRUTH = dict(c0=1e-3, s=5e-5, kappa=2e-9, param_bytes=4e6, chunks=4)
SERIAL_S = 2e-4  # the ps server's update


def _truth(strategy: str) -> Fit:
    if strategy in PIPELINE:  # pipelines: the whole model's compute A = s * B, no per-step part
        whole = TRUTH["c0"] + TRUTH["s"] * BATCH
        busy = 1.0 if registry.get(strategy).micro_batches else BUSY  # a pipeline's stages compute at once
        return Fit(strategy, 0.0, whole / BATCH, TRUTH["kappa"], TRUTH["param_bytes"], TRUTH["chunks"],
                      busy=busy)
    serial = SERIAL_S if registry.get(strategy).computing_ranks == "workers" else 0.0
    return Fit(strategy, TRUTH["c0"], TRUTH["s"], TRUTH["kappa"], TRUTH["param_bytes"], TRUTH["chunks"],
                  busy=BUSY, serial_s=serial)


def _write_run(sweep_dir: str, truth: Fit, nodes: int, link: str = "10gbe") -> str:
    cfg = ExperimentConfig(strategy=truth.strategy, nodes=nodes, global_batch=BATCH, chunks=truth.chunks,
                           link=link, steps=STEPS, warmup=WARMUP, device="cpu")
    world, run_dir = cfg.world_size, os.path.join(sweep_dir, cfg.experiment_id())
    lat_us, gbps = LINKS[link] if nodes > 1 else (0.0, 0.0)
    r = truth.contention(world, CORES)
    step, comp, _, _ = truth.step_s(world, BATCH, r, lat_us * 1e-6, gbps * 1e9 / 8, nodes > 1)
    comm_bytes = truth.param_bytes * pattern(truth.strategy, world)
    assert comm_bytes == int(comm_bytes)  # the constants keep every figure whole
    staged = truth.strategy in PIPELINE
    samples = math.ceil(BATCH / dp_size(truth.strategy, world))
    plan = {"machine_cores": CORES, "threads_per_rank": 1, "oversubscribed": world > CORES}
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"config": cfg.to_dict(), "identity": cfg.identity(),
                   "meta": {"backend": "simulate", "cpu_plan": plan}}, f)
    rundir.write_status(run_dir, "COMPLETED", exit_code=0, attempts=1, cpu_plan=plan)
    for rank in range(world):
        server = registry.get(truth.strategy).computing_ranks == "workers" and rank == 0
        lines = [{"event": "start", "rank": rank, "node": f"node{rank}", "time": 0.0, "attempt": 1}]
        for i in range(STEPS):
            lines.append({"event": "step", "rank": rank, "node": f"node{rank}", "time": float(i), "step": i,
                          "epoch": 0, "samples": 0 if server else samples, "step_s": step,
                          "compute_s": truth.serial_s if server else (None if staged else comp),
                          "comm_s": None, "comm_bytes": int(comm_bytes), "loss": None, "mem_bytes": 0,
                          "cpu_s": BUSY * step, "warmup": i < WARMUP})
        with open(os.path.join(run_dir, f"rank-{rank}.jsonl"), "w") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


def _nodes(strategy: str) -> tuple[int, ...]:
    return (2, 3, 4) if registry.get(strategy).min_world > 1 else (1, 2, 4)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    sweep_dir = str(tmp_path_factory.mktemp("proj") / "known")
    os.makedirs(sweep_dir)
    for strategy in PROJECTED:
        for n in _nodes(strategy):
            _write_run(sweep_dir, _truth(strategy), n)
    return sweep_dir


@pytest.mark.parametrize("strategy", PROJECTED)
def test_fit_on_logs_recovers_the_constants(written, strategy):
    """Loaded from the run directories and fitted on all node counts: every constant within 1%."""
    points = [p for p in load_points(written) if p.strategy == strategy]
    assert sorted(p.nodes for p in points) == list(_nodes(strategy))
    truth, got = _truth(strategy), fit_all(points)[strategy]
    assert got.busy == pytest.approx(truth.busy, rel=0.01)
    assert got.param_bytes == pytest.approx(truth.param_bytes, rel=0.01)
    assert got.kappa == pytest.approx(truth.kappa, rel=0.01)
    if strategy in PIPELINE:
        assert got.s * BATCH + got.c0 == pytest.approx(truth.s * BATCH, rel=0.01)
    else:
        assert got.c0 == pytest.approx(truth.c0, rel=0.01) and got.s == pytest.approx(truth.s, rel=0.01)
        assert got.serial_s == pytest.approx(truth.serial_s, rel=0.01, abs=1e-12)


def test_held_out_node_count_is_predicted_from_the_others(written):
    """Fitted without the largest node count, the model predicts it (exact logs: within 1%)."""
    checks = {s: (n, measured, pred) for s, n, measured, pred in held_out_check(load_points(written))}
    assert set(checks) == set(PROJECTED)
    for strategy, (n, measured, pred) in checks.items():
        assert n == 4 and pred == pytest.approx(measured, rel=0.01), strategy


def test_thread_gain_from_the_stages_compute_summed():
    """mp at N=1 runs the model on both cores' threads, at N=2 each stage on one: the stages' compute
    added up, against N=1's, says what a thread is worth; runs sharing cores do not count."""
    def point(nodes: int, threads: int, summed: float) -> Point:
        return Point("mp", nodes, 1, 64, 1, 2, summed, summed, 0, 64, 0.0, 0.0, threads=threads,
                        compute_sum_s=summed)
    assert fit_thread_gain([point(1, 2, 2e-3), point(2, 1, 3.6e-3)]) == pytest.approx(math.log2(1.8))
    assert fit_thread_gain([point(1, 2, 2e-3), point(4, 1, 9e-3)]) == 0.0  # W=4 > 2 cores: left out
    f = Fit("mp", 0.0, 1e-4, 0.0, 0.0, 1, thread_gain=1.0)
    assert f.slowdown(1, 2) == pytest.approx(0.5) and f.slowdown(2, 2) == pytest.approx(1.0)


def test_projection_command_on_the_written_sweep(written, capsys):
    logs, name = os.path.split(written)
    assert main(["--sweep", name, "--logs", logs, "--link", "10gbe", "--max-nodes", "64", "--no-plot"]) == 0
    with open(os.path.join(written, "projection.csv")) as f:
        header, *rows = f.read().splitlines()
    assert "efficiency" in header and len(rows) == len(PROJECTED) * len(node_counts(64))
    assert "check ddp: fitted without 4 nodes" in capsys.readouterr().out
