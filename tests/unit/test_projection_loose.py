"""The projection of the loosely coupled strategies (localsgd, asyncps) on synthetic sweeps: each
setting its own series, localsgd's traffic 1/H of ddp's at the same P, asyncps as ps."""

from __future__ import annotations

import pytest

from analysis.advise import memory_check, projected
from analysis.plan import params_shape
from analysis.projection.fit import fit_all
from analysis.projection.model import Fit, pattern
from analysis.projection.points import load_points
from analysis.projection.sweep import for_advice, project_sweep
from analysis.synthetic import write_sweep

SETTINGS = {"localsgd": ({"sync_every": 1}, {"sync_every": 4}), "asyncps": ({"staleness": 2},)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    return write_sweep(str(tmp_path_factory.mktemp("logs")), "loose", strategies=("ddp", "localsgd", "ps", "asyncps"),
                       nodes=(1, 2, 4), steps=22, settings=SETTINGS)


def rows_of(rows: list[dict], series: str) -> dict[int, dict]:
    return {r["nodes"]: r for r in rows if r["series"] == series}


def test_each_setting_is_a_series_of_its_own(sweep: str) -> None:
    points = load_points(sweep)
    assert {p.series for p in points} == {"ddp", "localsgd", "localsgd[sync_every=4]", "ps", "asyncps[staleness=2]"}
    fits = fit_all(points)
    assert set(fits) == {p.series for p in points}
    assert fits["localsgd[sync_every=4]"].settings["sync_every"] == 4 and fits["localsgd"].settings["sync_every"] == 1
    assert fits["localsgd[sync_every=4]"].strategy == "localsgd"


def test_localsgd_point_is_the_mean_over_a_sync_period(sweep: str) -> None:
    """Synthetic localsgd sends on every 4th step only: its point's bytes are a quarter of a sync's, and
    its step the mean over each window of 4 steps (the lower quartile alone would leave the sync out)."""
    pts = {(p.series, p.nodes): p for p in load_points(sweep)}
    for n in (2, 4):
        h1, h4 = pts[("localsgd", n)], pts[("localsgd[sync_every=4]", n)]
        assert h4.comm_bytes == h1.comm_bytes // 4
        comm = 0.002 * (n - 1) ** 0.8  # synthetic.py's communication time of a syncing step
        assert h1.step_s - h4.step_s == pytest.approx(0.75 * comm, rel=0.25)


def test_localsgd_h4_projects_a_quarter_of_ddps_link_time_at_the_same_p(sweep: str) -> None:
    proj = project_sweep(sweep, link="10gbe", max_nodes=64)
    ddp, h1, h4 = (rows_of(proj.rows, s) for s in ("ddp", "localsgd", "localsgd[sync_every=4]"))
    fits = proj.fits
    assert fits["localsgd[sync_every=4]"].param_bytes == pytest.approx(fits["ddp"].param_bytes, rel=1e-9)
    assert fits["localsgd"].param_bytes == pytest.approx(fits["ddp"].param_bytes, rel=1e-9)
    for n in (2, 8, 64):
        assert ddp[n]["link_s"] > 0
        assert h4[n]["link_s"] == pytest.approx(ddp[n]["link_s"] / 4, rel=1e-9)  # latency and bytes, / H
        assert h1[n]["link_s"] == pytest.approx(ddp[n]["link_s"], rel=1e-9)
        assert h4[n]["comm_bytes"] == pytest.approx(ddp[n]["comm_bytes"] / 4, rel=1e-9)
        assert h4[n]["step_s"] < h1[n]["step_s"]
    assert h4[1]["link_s"] == 0.0 and h4[1]["series"] == "localsgd[sync_every=4]" and h4[1]["strategy"] == "localsgd"


def test_averaged_optimizer_state_is_more_payloads_of_the_same_p() -> None:
    settings = {"sync_every": 4, "sync_optim": "average", "optimizer": "adam"}
    assert pattern("localsgd", 4, settings) == pytest.approx(3 * pattern("ddp", 4) / 4)
    f = Fit("localsgd", 1e-3, 1e-5, 0.0, 4e6, 4, settings=settings)
    g = Fit("ddp", 1e-3, 1e-5, 0.0, 4e6, 4)
    assert f.step_s(4, 64, 1.0, 1e-5, 1e9)[3] == pytest.approx(0.75 * g.step_s(4, 64, 1.0, 1e-5, 1e9)[3])


def test_asyncps_projects_like_ps(sweep: str) -> None:
    proj = project_sweep(sweep, link="10gbe", max_nodes=64)
    ps, aps = rows_of(proj.rows, "ps"), rows_of(proj.rows, "asyncps[staleness=2]")
    assert proj.fits["asyncps[staleness=2]"].param_bytes == pytest.approx(proj.fits["ps"].param_bytes, rel=1e-9)
    for n in (2, 8, 64):
        assert aps[n]["link_s"] == pytest.approx(ps[n]["link_s"], rel=1e-9)  # (W-1) P at the server, 2 messages
        assert aps[n]["step_s"] == pytest.approx(ps[n]["step_s"], rel=0.15)  # the same synthetic costs, other noise
    checked = {s for s, *_ in proj.checks}
    assert {"localsgd[sync_every=4]", "asyncps[staleness=2]"} <= checked


def test_advice_names_projected_series_like_measured_ones(sweep: str) -> None:
    inputs = projected(for_advice(sweep, "10gbe", 16), [16], ["ddp", "localsgd", "ps", "asyncps"], "mlp")
    assert set(inputs.candidates[16]) == {"localsgd", "localsgd[sync_every=4]", "asyncps[staleness=2]", "ddp", "ps"}
    assert inputs.candidates[16]["localsgd[sync_every=4]"].strategy == "localsgd"
    assert inputs.candidates[16]["localsgd[sync_every=4]"].key == "localsgd[sync_every=4]"
    assert not inputs.refused[16]


def test_memory_check_of_a_projected_series_takes_its_own_settings(sweep: str) -> None:
    """A series' settings reach the planner: DiLoCo's outer state (3 copies of the parameters) can make a
    localsgd series not fit where plain averaging does, whatever the sweep's first config says."""
    p = for_advice(sweep, "10gbe", 16)
    assert p.settings["localsgd[sync_every=4]"]["sync_every"] == 4
    assert p.settings["ddp"] == {"optimizer": "sgd", "recompute": "none", "micro_batch": 0}
    n = 1_000_000  # sgd: params + grads + momentum + ddp-like buckets = 16 B/param; DiLoCo + 12
    check = memory_check(params_shape(n), {"procs_per_node": 1, "optimizer": "sgd", "outer": "nesterov",
                                           "outer_lr": 0.7}, 20 * n)
    assert check("localsgd", 2, 32, {"sync_every": 4, "outer": "sgd", "outer_lr": 1.0}) is None
    assert check("localsgd", 2, 32, None).startswith("does not fit in memory")  # the sweep's: DiLoCo
    assert check("localsgd", 2, 32, {"outer": "nesterov", "outer_lr": 0.7}).startswith("does not fit in memory")
