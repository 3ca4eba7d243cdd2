"""The metrics of a sweep whose experiments are all Grids (analysis/stepfiles.py) come from the
rank files' columns, reduced rank by rank (analysis/gridmetrics.py): they must be pandas'
groupby over the steps frame to the last bit, on values chosen to show any difference in the
order or the compensation of a sum (magnitudes 1e-10..1e10, both signs), NaN and infinities."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from analysis import metrics
from analysis.gridmetrics import busy_grid
from analysis.load import load_sweep
from analysis.synthetic import write_sweep

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # sums and means over infinities

FIELDS = ("step_s", "compute_s", "comm_s", "comm_bytes", "loss", "samples", "mem_bytes", "time", "staleness")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    return write_sweep(str(tmp_path_factory.mktemp("grid")), "g", strategies=("ddp", "pipeline"), nodes=(1, 2),
                       procs=4, steps=40, steps_per_epoch=7)


def scrambled(path: str, seed: int, epochs_differ: bool = False):
    """The sweep with every step field of every rank replaced by random values; and the same
    data with its steps frame built (so the metrics take the groupby)."""
    data = load_sweep(path, use_cache=False)
    rng = np.random.default_rng(seed)
    for i, (_, _, rf) in enumerate(data.files.parts):
        n = len(rf.warmup)
        for k in FIELDS:
            v = rf.steps[k]
            v[:] = rng.lognormal(0, 8, n) * rng.choice([-1.0, 1.0], n)
            v[rng.random(n) < 0.2] = np.nan
            v[rng.random(n) < 0.01] = rng.choice([np.inf, -np.inf])
        if i % 5 == 1:  # a rank without any compute timer or loss (a pipeline stage without the head)
            rf.steps["compute_s"][:] = np.nan
            rf.steps["loss"][:] = np.nan
        rf.warmup[:] = rng.random(n) < 0.1
        if epochs_differ and i % 3 == 0:
            rf.steps["epoch"][:] = np.roll(rf.steps["epoch"], 1)
    ref = copy.copy(data)
    ref.steps = data.files.frame()
    assert data.grids() is not None and ref.grids() is None
    return data, ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_tables_are_groupbys_to_the_last_bit(sweep, seed):
    data, ref = scrambled(sweep, seed, epochs_differ=seed == 2)
    per_step = metrics.per_step_table(data)
    pd.testing.assert_frame_equal(per_step, metrics.per_step_table(ref), check_exact=True)
    pd.testing.assert_frame_equal(metrics.per_rank_table(data), metrics.per_rank_table(ref), check_exact=True)
    pd.testing.assert_frame_equal(metrics.curves_table(data, per_step), metrics.curves_table(ref, per_step),
                                  check_exact=True)
    pd.testing.assert_series_equal(metrics._start_times(data), metrics._start_times(ref), check_exact=True,
                                   check_names=False, check_index_type=False)
    means, expected = metrics._timed_means(data), metrics._timed_means(ref)
    assert list(means) == list(expected)
    pd.testing.assert_frame_equal(pd.DataFrame(means), pd.DataFrame(expected), check_exact=True)
    assert per_step["loss"].notna().any() and per_step["comm_bytes"].isin([np.inf, -np.inf]).any()


def test_a_sum_in_another_order_would_show(sweep):
    """The data above tell the compensated sum from a plain one: the equality is not vacuous."""
    data, ref = scrambled(sweep, 0)
    naive = ref.steps.groupby(["experiment", "step"], observed=True)["comm_s"].apply(
        lambda v: float(np.sum(v.dropna().to_numpy())))
    kahan = metrics.per_step_table(data).set_index(["experiment", "step"])["comm_s"]
    counts = ref.steps.groupby(["experiment", "step"], observed=True)["comm_s"].count()
    assert ((naive / counts).to_numpy() != kahan.to_numpy()).any()


def test_analyse_never_builds_the_steps_frame_of_a_regular_sweep(sweep):
    data = load_sweep(sweep)
    a = metrics.analyse(data)
    assert data._steps is None and a.summary["median_step_s"].notna().all()
    framed = load_sweep(sweep)
    framed.steps = framed.files.frame()  # given by hand: the groupby path
    c = metrics.analyse(framed)
    for name in ("summary", "groups", "per_step", "curves", "per_rank"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(c, name), check_exact=True, obj=name)


def test_irregular_experiments_take_the_frame(sweep):
    """Ranks that logged different steps (one stopped early, or logged one more) are no Grid."""
    data = load_sweep(sweep, use_cache=False)
    rf = data.files.parts[1][2]
    rf.steps["step"][-1] += 1
    assert data.grids() is None
    assert not metrics.per_step_table(data).empty and data._steps is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_the_heat_maps_image_is_the_frames(sweep, seed):
    data, ref = scrambled(sweep, seed)
    for exp in data.files.ids:
        got, expected = busy_grid(data, exp), busy_grid(ref, exp)
        assert got is not None and got[1:] == expected[1:]
        np.testing.assert_array_equal(got[0], expected[0])
    assert data._steps is None
