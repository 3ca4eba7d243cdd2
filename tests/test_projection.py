"""Scaling projection: the model's algebra, and its prediction of a held-out node count."""

from __future__ import annotations

import csv

import pytest

from simulate import projection as pj
from tests.helpers import sweep


def _point(strategy: str, nodes: int, f: pj.Fit, cores: int = 2, batch: int = 64) -> pj.Point:
    world = nodes
    r = pj.contention(world, cores)
    step, comp, _, _ = f.step_s(world, batch, r)
    samples = -(-batch // pj.dp_size(strategy, world))  # the slowest rank's slice
    return pj.Point(strategy, nodes, 1, batch, 4, cores, step, comp,
                    int(f.param_bytes * pj.pattern(strategy, world)), samples, 0.0, 0.0)


@pytest.mark.parametrize("strategy", ["ddp", "ps"])
def test_fit_recovers_the_model(strategy):
    truth = pj.Fit(strategy, c0=1e-3, s=5e-5, kappa=2e-9, param_bytes=4e6, chunks=4)
    nodes = [1, 2, 4] if strategy == "ddp" else [2, 3, 4]
    fits = pj.fit_all([_point(strategy, n, truth) for n in nodes])
    got = fits[strategy]
    assert got.c0 == pytest.approx(truth.c0, rel=1e-6) and got.s == pytest.approx(truth.s, rel=1e-6)
    assert got.kappa == pytest.approx(truth.kappa, rel=1e-6)
    assert got.param_bytes == pytest.approx(truth.param_bytes, rel=1e-6)
    # 8 ranks on 2 cores: 4 ranks per core
    want = truth.step_s(8, 64, 4.0)[0]
    assert pj.predict_here(got, 8, 1, 2, 64) == pytest.approx(want, rel=1e-6)


def test_link_formulas():
    assert pj.pattern("ring", 4) == 1.5 and pj.pattern("ps", 4) == 3 and pj.pattern("pipeline", 4) == 1
    assert pj.messages("ddp", 4, 4) == 6 and pj.messages("ps", 4, 4) == 2 and pj.messages("mp", 2, 4) == 8
    f = pj.Fit("ddp", 0.0, 1e-4, 0.0, 8e6, 4)
    row = pj.project(f, 64, 1, 2, 64, "weak", 25e-6, 10e9 / 8)
    assert row["link_s"] == pytest.approx(2 * 63 * 25e-6 + 8e6 * 2 * 63 / 64 / (10e9 / 8))
    assert row["global_batch"] == 64 * 64 and not row["note"]


# The goal is 20%. On a 2-core machine NODES=4 runs 4 ranks on 2 cores, and one sweep's
# step times at NODES=2 and 4 move by up to +-15% from sweep to sweep (process placement,
# gloo's polling waits): single sweeps missed by up to 44%, the median of 3 repeats by up to
# 20% (README, "Scaling projection", has the measured errors). The test fits 3 repeats of
# NODES=1,2 and predicts the median of NODES=4's repeats; a wrong model (a missing contention
# factor, the wrong traffic pattern) misses by 80% or more.
TOLERANCE = 0.30


@pytest.mark.integration
def test_projection_predicts_four_nodes(tmp_path):
    """Fitted on NODES=1,2, the model predicts NODES=4 (this machine, same link)."""
    strategies = ["ddp", "ring", "ps"]
    out = sweep("--backend", "simulate", "--nodes", "1,2,4", "--strategies", ",".join(strategies), "--steps", "30",
                "--repeats", "3", "--sweep", "proj", "--logs", str(tmp_path), "--device", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    points = pj.load_points(str(tmp_path / "proj"))
    checks = {s: (measured, pred) for s, n, measured, pred in pj.held_out_check(points) if n == 4}
    assert set(checks) == set(strategies)
    errors = {s: round((pred - measured) / measured, 3) for s, (measured, pred) in checks.items()}
    print("projection errors at NODES=4:", errors)
    assert all(abs(e) <= TOLERANCE for e in errors.values()), errors
    assert pj.main(["--sweep", "proj", "--logs", str(tmp_path), "--link", "10gbe", "--max-nodes", "1024"]) == 0
    with open(tmp_path / "proj" / "projection.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["strategy"] for r in rows} == set(strategies) and max(int(r["nodes"]) for r in rows) == 1024
    assert (tmp_path / "proj" / "plots" / "projection.png").stat().st_size > 0
