"""The first `make plots` of a large sweep, made cheaper (bench/analysis_load.py), measures the same:
metrics from the steps' columns without copying the others give what the pandas round trip gave
(its code kept here as the reference), rank files parsed by a pool and read back from the cache
as parsed here, and the figures are PNG only unless SVG is asked for."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from analysis import cli, metrics, plots, rankfiles
from analysis.frames import SweepData
from analysis.load import load_sweep
from analysis.metrics import analyse, per_rank_table, per_step_table
from analysis.synthetic import write_sweep


def old_per_step_table(data: SweepData) -> pd.DataFrame:
    """per_step_table before it took only its columns: `assign` on the whole steps frame."""
    s = data.steps
    s = s.assign(busy=s["compute_s"].fillna(s["step_s"]),
                 lw=s["loss"] * s["samples"], lsamples=s["samples"].where(s["loss"].notna()))
    g = s.groupby(["experiment", "step"], observed=True, sort=True)
    out = g.agg(step_time=("step_s", "max"), step_min=("step_s", "min"), time=("time", "max"),
                warmup=("warmup", "any"), comm_bytes=("comm_bytes", "sum"), lw=("lw", "sum"),
                lsamples=("lsamples", "sum"), ranks=("rank", "count"), compute_s=("compute_s", "mean"),
                comm_s=("comm_s", "mean"), mem_bytes=("mem_bytes", "max")).reset_index()
    out["loss"] = (out["lw"] / out["lsamples"]).where(out["lsamples"] > 0)
    start = metrics._start_times(data)
    out["t_since_start"] = out["time"] - out["experiment"].astype(str).map(start)
    return out.drop(columns=["lw", "lsamples"])


def old_per_rank_table(data: SweepData) -> pd.DataFrame:
    """per_rank_table before: the whole steps frame filtered, then `assign`."""
    s = data.steps[~data.steps["warmup"]]
    s = s.assign(busy=s["compute_s"].fillna(s["step_s"]))
    out = s.groupby(["experiment", "rank"], observed=True).agg(
        busy_s=("busy", "median"), step_s=("step_s", "median"), mem_bytes=("mem_bytes", "max")).reset_index()
    out["experiment"] = out["experiment"].astype(str)
    r = data.ranks.copy()
    for kind in ("param", "grad", "optim"):
        r[f"{kind}_bytes"] = r[f"end_{kind}_bytes"].combine_first(r[f"{kind}_bytes"])
    keep = ["experiment", "rank", "param_bytes", "grad_bytes", "optim_bytes", "peak_mem_bytes"]
    out = out.merge(r[keep], on=["experiment", "rank"], how="left")
    out["mem_bytes"] = out[["mem_bytes", "peak_mem_bytes"]].max(axis=1)
    return out.drop(columns=["peak_mem_bytes"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    # every default strategy (a pipeline, replicas), 2 and 4 ranks, warm-up steps: every metric has values
    return write_sweep(str(tmp_path_factory.mktemp("fast")), "s", nodes=(1, 2), procs=2, steps=24,
                       steps_per_epoch=6)


def test_metrics_from_the_columns_equal_the_pandas_round_trip(sweep, monkeypatch):
    old = load_sweep(sweep, use_cache=False)  # parsed here, no cache, no pool
    old.steps = pd.DataFrame(dict(old.steps))  # consolidated, as the steps frame was built before
    monkeypatch.setattr(rankfiles, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(rankfiles, "cpus", lambda: 2)  # the pool's workers write entries, read back here
    new = load_sweep(sweep)
    assert new.steps["warmup"].any() and not new.steps["warmup"].all()
    pd.testing.assert_frame_equal(new.steps, old.steps)
    pd.testing.assert_frame_equal(per_step_table(new), old_per_step_table(old), check_exact=True)
    pd.testing.assert_frame_equal(per_rank_table(new), old_per_rank_table(old), check_exact=True)
    timed = old.steps[~old.steps["warmup"]]
    names = ("experiment", "step_s", "compute_s", "comm_s", "staleness")
    pd.testing.assert_frame_equal(metrics.timed_steps(new, names), timed[list(names)])
    a, b = analyse(new), analyse(old)
    for name in ("summary", "groups", "per_step", "curves", "per_rank"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)
    done = a.summary["state"] == "COMPLETED"
    assert done.sum() >= 4 and a.summary.loc[done, ["samples_per_s", "skew", "compute_s"]].notna().all().all()


def test_columns_share_the_steps_arrays(sweep):
    data = load_sweep(sweep)
    frame = metrics.columns(data.steps, ("step_s", "loss"))
    assert list(frame.columns) == ["step_s", "loss"]
    assert np.shares_memory(frame["step_s"].to_numpy(), data.steps["step_s"].to_numpy())


def _files(folder: str) -> set[str]:
    return set(os.listdir(folder))


@pytest.mark.parametrize("workers", [1, 2])
def test_png_only_unless_svg_is_asked(sweep, workers):
    a = analyse(load_sweep(sweep))
    out = os.path.join(sweep, f"plots-{workers}")
    only = [s for s in plots.PLOTS if s.name in ("throughput", "loss", "chunks")]
    written, skipped = plots.make_plots(a, out, only=only, workers=workers)
    assert [p.spec.name for p in written] == ["throughput", "loss"] and [s.name for s, _ in skipped] == ["chunks"]
    assert all(p.svg is None for p in written)
    assert _files(out) == {"throughput.png", "loss.png"}
    written, _ = plots.make_plots(a, out, only=only, svg=True, workers=workers)
    assert [os.path.basename(p.svg) for p in written] == ["throughput.svg", "loss.svg"]
    assert _files(out) == {"throughput.png", "loss.png", "throughput.svg", "loss.svg"}
    with open(os.path.join(out, "loss.svg")) as f:
        assert "<svg" in f.read(2000)
    plots.make_plots(a, out, only=only, workers=workers)  # an earlier run's SVGs would no longer match
    assert _files(out) == {"throughput.png", "loss.png"}


def test_the_svg_flag_of_make_plots(sweep, capsys):
    logs, name = os.path.split(sweep)
    assert cli.run(["plots", "--sweep", name, "--logs", logs]) == 0
    out = capsys.readouterr().out
    assert "figures, PNG:" in out and not [f for f in os.listdir(os.path.join(sweep, "plots")) if f.endswith(".svg")]
    with open(os.path.join(sweep, "report.html")) as f:
        assert "plots/throughput.svg" not in f.read()
    assert cli.run(["plots", "--sweep", name, "--logs", logs, "--svg"]) == 0
    assert "figures, PNG + SVG:" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(sweep, "plots", "throughput.svg"))
    assert os.path.isfile(os.path.join(sweep, "plots", "advice.svg"))  # the answer's figure too
    with open(os.path.join(sweep, "report.html")) as f:
        html = f.read()
    assert "plots/throughput.svg" in html and "plots/advice.svg" in html
    assert cli.run(["plots", "--sweep", name, "--logs", logs]) == 0  # the SVGs of the run before are gone
    assert not [f for f in os.listdir(os.path.join(sweep, "plots")) if f.endswith(".svg")]
    with open(os.path.join(sweep, "report.html")) as f:
        assert ".svg" not in f.read()
    assert cli.run(["tensorboard", "--sweep", name, "--logs", logs, "--svg"]) == 2  # plots and report only


def test_rows_per_experiment_are_groupbys_groups(sweep):
    steps = load_sweep(sweep).steps
    expected = {str(k): v for k, v in steps.groupby("experiment", observed=True)}
    for frame in (steps, steps.iloc[::-1]):  # in experiment order (slices), and not (groupby)
        got = metrics.by_experiment(frame)
        assert sorted(got) == sorted(expected) and len(got) >= 4
        for k, v in got.items():
            pd.testing.assert_frame_equal(v.sort_index(), expected[k])
    sliced = metrics.by_experiment(steps)
    assert all(np.shares_memory(v["step_s"].to_numpy(), steps["step_s"].to_numpy()) for v in sliced.values())
