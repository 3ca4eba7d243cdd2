"""The metrics' reductions over a sweep's `Grid`s (analysis/stepfiles.py), rank by rank: the
numbers pandas' groupby gives over the steps frame, to the last bit, without the frame.

analysis/metrics.py calls these where `StepFiles.grids` gives every experiment as a Grid, and
the groupby otherwise. Bit for bit (tests/unit/test_gridmetrics.py compares them on data with
NaN, infinities and rounding to catch):
- max and min skip NaN (NaN where every rank's is); `any`; the count of ranks;
- sums and means add the ranks' values in rank order with pandas' Kahan compensation (its
  `group_sum` / `group_mean`: a compensation made NaN by an infinity is reset to 0), NaN skipped;
  a sum of nothing is 0, a mean of nothing NaN;
- medians are numpy's (the two middle values' mean, as pandas' `median_linear`);
- a mean over an experiment's timed rows is `Series.mean` over them in the frame's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.stepfiles import Grid

if TYPE_CHECKING:
    from analysis.frames import SweepData


class _Kahan:
    """Per step: the sum of the values added so far (NaN skipped), compensated as pandas does."""

    def __init__(self, n: int) -> None:
        self.sum, self.comp, self.nobs = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)

    def add(self, x: np.ndarray) -> None:
        ok = ~np.isnan(x)
        with np.errstate(invalid="ignore"):  # inf - inf: the compensation pandas resets
            y = x - self.comp
            t = self.sum + y
            comp = t - self.sum - y
        comp[np.isnan(comp)] = 0.0
        np.copyto(self.sum, t, where=ok)
        np.copyto(self.comp, comp, where=ok)
        self.nobs += ok

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.nobs > 0, self.sum / self.nobs, np.nan)


def _fold(ufunc: np.ufunc, columns: list[np.ndarray]) -> np.ndarray:
    """`ufunc` (np.fmax, np.fmin, np.logical_or) over the ranks' columns, step by step."""
    acc = columns[0].copy()
    for col in columns[1:]:
        ufunc(acc, col, out=acc)
    return acc


def per_step(grids: dict[str, Grid], ids: list[str]) -> pd.DataFrame:
    """One row per (experiment, step): what `metrics.per_step_table`'s groupby aggregates, with
    its `lw` and `lsamples` (the loss's sample-weighted sum and weight)."""
    parts = []
    for name, g in grids.items():
        n = len(g.step)
        sums = {k: _Kahan(n) for k in ("comm_bytes", "lw", "lsamples", "compute_s", "comm_s")}
        for rf in g.files:
            s = rf.steps
            loss, samples = s["loss"], s["samples"]
            sums["comm_bytes"].add(s["comm_bytes"])
            sums["lw"].add(loss * samples)
            sums["lsamples"].add(np.where(np.isnan(loss), np.nan, samples))
            sums["compute_s"].add(s["compute_s"])
            sums["comm_s"].add(s["comm_s"])
        step_s = g.column("step_s")
        parts.append({
            "experiment": np.full(n, ids.index(name), dtype=np.int64), "step": g.step,
            "step_time": _fold(np.fmax, step_s), "step_min": _fold(np.fmin, step_s),
            "time": _fold(np.fmax, g.column("time")), "warmup": _fold(np.logical_or, g.column("warmup")),
            "comm_bytes": sums["comm_bytes"].sum, "lw": sums["lw"].sum, "lsamples": sums["lsamples"].sum,
            "ranks": np.full(n, len(g.files), dtype=np.int64), "compute_s": sums["compute_s"].mean(),
            "comm_s": sums["comm_s"].mean(), "mem_bytes": _fold(np.fmax, g.column("mem_bytes"))})
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if columns:
        columns["experiment"] = pd.Categorical.from_codes(columns["experiment"], categories=ids)
    return pd.DataFrame(columns)


def start_times(grids: dict[str, Grid]) -> pd.Series:
    """Per experiment: the earliest (time - step_s) of any rank's step, NaN skipped."""
    first = {}
    for name, g in grids.items():
        starts = [np.fmin.reduce(rf.steps["time"] - rf.steps["step_s"]) for rf in g.files]
        first[name] = float(np.fmin.reduce(np.array(starts)))
    return pd.Series(first, dtype=float)


def _median(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else np.nan


def per_rank(grids: dict[str, Grid]) -> pd.DataFrame:
    """One row per (experiment, rank) with a timed step: the median busy time (compute, where a
    step has none the step) and step time, the largest memory."""
    rows = []
    for name, g in grids.items():
        for rank, rf in zip(g.ranks.tolist(), g.files, strict=True):
            timed = ~rf.warmup
            if not timed.any():
                continue
            compute, step_s = rf.steps["compute_s"][timed], rf.steps["step_s"][timed]
            busy = np.where(np.isnan(compute), step_s, compute)
            mem = np.fmax.reduce(rf.steps["mem_bytes"][timed])
            rows.append((name, rank, _median(busy), _median(step_s), float(mem)))
    out = pd.DataFrame(rows, columns=["experiment", "rank", "busy_s", "step_s", "mem_bytes"])
    return out.astype({"experiment": object, "rank": np.int64, "busy_s": float, "step_s": float,
                       "mem_bytes": float})


def epoch_steps(grids: dict[str, Grid]) -> tuple[dict[tuple[str, float], int], dict[tuple[str, float], int]]:
    """Per (experiment, epoch): the last step any rank ran in it, and how many distinct steps."""
    last, count = {}, {}
    for name, g in grids.items():
        epochs = g.column("epoch")
        if all(np.array_equal(e, epochs[0], equal_nan=True) for e in epochs[1:]):
            pairs = np.stack([epochs[0], g.step.astype(float)])
        else:  # ranks that put a step in different epochs: every (epoch, step) any rank logged
            pairs = np.unique(np.stack([np.concatenate(epochs), np.tile(g.step.astype(float), len(epochs))]), axis=1)
        pairs = pairs[:, ~np.isnan(pairs[0])]
        for epoch in np.unique(pairs[0]).tolist():
            steps = pairs[1][pairs[0] == epoch]
            last[(name, epoch)], count[(name, epoch)] = np.int64(steps.max()), np.int64(len(np.unique(steps)))
    return last, count


def timed_means(g: Grid, names: tuple[str, ...]) -> dict[str, float]:
    """`Series.mean` of each field over the experiment's timed steps, rank after rank (NaN
    skipped; NaN where there is none). One buffer of the timed rows, reused for each field."""
    buf = np.empty(g.timed_rows())
    return {k: np.float64(pd.Series(g.timed(k, out=buf), copy=False).mean()) for k in names}


def busy_grid(data: SweepData, experiment: str) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], bool] | None:
    """The heat map's image: each rank's busy time in ms (compute, where a step has none the step)
    per timed step, NaN where a rank logged none; its rank and step ranges; whether any step had a
    compute timer. None when the experiment has no timed step."""
    grids = data.grids()
    if grids is None:
        s = data.steps
        d = s[["rank", "step", "compute_s", "step_s"]][~s["warmup"].to_numpy() & (s["experiment"] == experiment)
                                                          .to_numpy()]
        if d.empty:
            return None
        cells = [(d["rank"].to_numpy(), d["step"].to_numpy(), d["compute_s"].to_numpy(), d["step_s"].to_numpy())]
    else:
        g = grids.get(experiment)
        if g is not None and g.busy is not None:
            return g.busy
        cells = [(np.full(np.count_nonzero(~rf.warmup), rank), g.step[~rf.warmup], rf.steps["compute_s"][~rf.warmup],
                  rf.steps["step_s"][~rf.warmup]) for rank, rf in zip(g.ranks.tolist(), g.files, strict=True)
                 if not rf.warmup.all()] if g is not None else []
        if not cells:
            return None
    ranks = (min(int(c[0].min()) for c in cells), max(int(c[0].max()) for c in cells))
    steps = (min(int(c[1].min()) for c in cells), max(int(c[1].max()) for c in cells))
    grid = np.full((ranks[1] - ranks[0] + 1, steps[1] - steps[0] + 1), np.nan)
    for rank, step, compute, step_s in cells:
        np.fmax.at(grid, (rank - ranks[0], step - steps[0]), np.where(np.isnan(compute), step_s, compute) * 1000)
    out = grid, ranks, steps, any(bool((~np.isnan(c[2])).any()) for c in cells)
    if grids is not None:
        grids[experiment].busy = out
    return out
