"""Metrics: per step, per experiment, and over repeats.

Definitions (the README repeats them):
- A synchronous step is gated by its slowest rank: step time = max over ranks of `step_s`.
  Warm-up steps are left out of every timing figure.
- Global samples/s = global batch / median step time. Samples are *not* summed over ranks:
  pipeline stages (and a parameter server) see the same samples.
- Loss per step = sample-weighted mean of the ranks' non-null losses (= mean over the global batch).
- Speed-up and efficiency are relative to the smallest node count of the same configuration
  (strong scaling: efficiency = speed-up / (nodes / n0); weak scaling: per-rank throughput ratio),
  computed on the median over repeats; `speedup_vs_single` compares with the `single` baseline.
- Time split: compute and communication are the ranks' own timers scaled to the median step;
  for a pipeline whose timers are null, the bubble is the GPipe formula (K-1)/(M+K-1) of the step.
- Skew: the ranks' median busy time (compute where measured, else the step) as
  (slowest - fastest) / median; a straggler computes longer while the others wait in communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import SweepData
from trainers.common import registry

CONFIG_KEY = ["sweep", "strategy", "nodes", "procs_per_node", "global_batch", "chunks", "schedule", "model",
              "dataset", "precision", "link"]  # an experiment minus its repeat index
TARGET_FRACTION = 0.9  # default target accuracy: this fraction of the best accuracy any experiment reached


@dataclass
class Analysis:
    data: SweepData
    summary: pd.DataFrame  # one row per experiment (skipped and failed ones too)
    groups: pd.DataFrame  # one row per configuration: medians and spread over repeats, speed-up, efficiency
    per_step: pd.DataFrame  # one row per (experiment, step)
    curves: pd.DataFrame  # one row per (experiment, epoch): validation accuracy and loss
    per_rank: pd.DataFrame  # one row per (experiment, rank): median busy time, peak memory, state bytes
    target_acc: float | None

    @property
    def problems(self) -> pd.DataFrame:
        return self.data.problems

    @property
    def skipped(self) -> pd.DataFrame:
        e = self.data.experiments
        return e[e["state"] == "SKIPPED"][["experiment", "strategy", "nodes", "procs_per_node", "reason"]]

    @property
    def measured(self) -> pd.DataFrame:
        """Experiments with timing data (whatever their final state)."""
        return self.summary[self.summary["samples_per_s"].notna()]


def per_step_table(data: SweepData) -> pd.DataFrame:
    s = data.steps
    if s.empty:
        return pd.DataFrame(columns=["experiment", "step", "step_time", "loss", "time", "warmup", "comm_bytes",
                                     "t_since_start"])
    s = s.assign(busy=s["compute_s"].fillna(s["step_s"]),
                 lw=s["loss"] * s["samples"], lsamples=s["samples"].where(s["loss"].notna()))
    g = s.groupby(["experiment", "step"], observed=True, sort=True)
    out = g.agg(step_time=("step_s", "max"), step_min=("step_s", "min"), time=("time", "max"),
                warmup=("warmup", "any"), comm_bytes=("comm_bytes", "sum"), lw=("lw", "sum"),
                lsamples=("lsamples", "sum"), ranks=("rank", "count")).reset_index()
    out["loss"] = (out["lw"] / out["lsamples"]).where(out["lsamples"] > 0)
    start = _start_times(data)
    out["t_since_start"] = out["time"] - out["experiment"].astype(str).map(start)
    return out.drop(columns=["lw", "lsamples"])


def _start_times(data: SweepData) -> pd.Series:
    """Per experiment: when its ranks started (the earliest start record; else the first step's start)."""
    r = data.ranks.groupby("experiment")["start_time"].min()
    s = data.steps
    first = pd.Series(dtype=float)
    if not s.empty:  # group on the categorical column: converting half a million rows to str is slow
        first = (s["time"] - s["step_s"]).groupby(s["experiment"], observed=True).min()
        first.index = first.index.astype(str)
    return r.combine_first(first) if not r.empty else first


def per_rank_table(data: SweepData) -> pd.DataFrame:
    s = data.steps[~data.steps["warmup"]]
    if s.empty:
        return pd.DataFrame(columns=["experiment", "rank", "busy_s", "step_s", "mem_bytes"])
    s = s.assign(busy=s["compute_s"].fillna(s["step_s"]))
    out = s.groupby(["experiment", "rank"], observed=True).agg(
        busy_s=("busy", "median"), step_s=("step_s", "median"), mem_bytes=("mem_bytes", "max")).reset_index()
    out["experiment"] = out["experiment"].astype(str)
    r = data.ranks.copy()
    for kind in ("param", "grad", "optim"):  # bytes held after training (measured), else at start
        r[f"{kind}_bytes"] = r[f"end_{kind}_bytes"].combine_first(r[f"{kind}_bytes"])
    keep = ["experiment", "rank", "param_bytes", "grad_bytes", "optim_bytes", "peak_mem_bytes"]
    out = out.merge(r[keep], on=["experiment", "rank"], how="left")
    out["mem_bytes"] = out[["mem_bytes", "peak_mem_bytes"]].max(axis=1)
    return out.drop(columns=["peak_mem_bytes"])


def curves_table(data: SweepData, per_step: pd.DataFrame) -> pd.DataFrame:
    e = data.epochs
    if e.empty:
        return pd.DataFrame(columns=["experiment", "epoch", "val_acc", "val_loss", "time", "t_since_start",
                                     "step"])
    # Replicas evaluate the same weights; pipeline stages without the head log null: take the median of non-nulls.
    out = e.groupby(["experiment", "epoch"]).agg(val_acc=("val_acc", "median"), val_loss=("val_loss", "median"),
                                                 time=("time", "max")).reset_index()
    out["t_since_start"] = out["time"] - out["experiment"].map(_start_times(data))
    s = data.steps
    last_step = s.groupby(["experiment", "epoch"], observed=True)["step"].max()
    last_step.index = last_step.index.set_levels(last_step.index.levels[0].astype(str), level=0)
    out["step"] = [last_step.get((x, float(ep)), np.nan) for x, ep in zip(out["experiment"], out["epoch"],
                                                                          strict=True)]
    return out


def _time_split(steps: pd.DataFrame, exp: pd.Series, median_step: float) -> dict[str, float]:
    """compute / comm / bubble / other seconds of the median step."""
    out = {"compute_s": np.nan, "comm_s": np.nan, "bubble_s": np.nan, "other_s": np.nan}
    if steps.empty or not np.isfinite(median_step):
        return out
    mean_step = steps["step_s"].mean()
    comp, comm = steps["compute_s"].mean(), steps["comm_s"].mean()
    if np.isfinite(comp) or np.isfinite(comm):
        out["compute_s"] = median_step * (comp if np.isfinite(comp) else 0.0) / mean_step
        out["comm_s"] = median_step * (comm if np.isfinite(comm) else 0.0) / mean_step
        out["other_s"] = max(median_step - out["compute_s"] - out["comm_s"], 0.0)
        out["bubble_s"] = 0.0
    elif exp["strategy"] in registry.names(micro_batches=True):
        k, m = int(exp["stages"]), int(exp["chunks"])
        out["bubble_s"] = median_step * (k - 1) / (m + k - 1)
        out["compute_s"] = median_step - out["bubble_s"]
        out["comm_s"] = out["other_s"] = 0.0
    return out


def experiment_table(data: SweepData, per_step: pd.DataFrame, per_rank: pd.DataFrame, curves: pd.DataFrame,
                     target_acc: float | None) -> pd.DataFrame:
    timed = per_step[~per_step["warmup"].astype(bool)] if not per_step.empty else per_step
    steps = data.steps[~data.steps["warmup"]]
    steps_by = {str(k): v for k, v in steps.groupby("experiment", observed=True)}
    timed_by = {str(k): v for k, v in timed.groupby("experiment", observed=True)} if not timed.empty else {}
    rank_by = {k: v for k, v in per_rank.groupby("experiment")} if not per_rank.empty else {}
    curve_by = {k: v for k, v in curves.groupby("experiment")} if not curves.empty else {}
    all_steps = {str(k): v for k, v in per_step.groupby("experiment", observed=True)} if not per_step.empty else {}
    rows = []
    for _, exp in data.experiments.iterrows():
        x = exp["experiment"]
        t = timed_by.get(x, pd.DataFrame())
        row = exp.to_dict()
        median = float(t["step_time"].median()) if not t.empty else np.nan
        row.update({"timed_steps": len(t), "median_step_s": median,
                    "step_s_p10": float(t["step_time"].quantile(0.1)) if not t.empty else np.nan,
                    "step_s_p90": float(t["step_time"].quantile(0.9)) if not t.empty else np.nan,
                    "samples_per_s": exp["global_batch"] / median if median > 0 else np.nan})
        row["samples_per_s_per_rank"] = row["samples_per_s"] / exp["world_size"]
        row.update(_time_split(steps_by.get(x, pd.DataFrame()), exp, median))
        row["comm_bytes_per_step"] = float(t["comm_bytes"].median()) if not t.empty else np.nan
        r = rank_by.get(x, pd.DataFrame())
        row["peak_mem_bytes_per_rank"] = float(r["mem_bytes"].max()) if not r.empty else np.nan
        row["state_bytes_per_rank"] = float((r["param_bytes"].fillna(0) + r["grad_bytes"].fillna(0) +
                                             r["optim_bytes"].fillna(0)).max()) if not r.empty else np.nan
        if len(r) > 1 and r["busy_s"].median() > 0:
            row["skew"] = float((r["busy_s"].max() - r["busy_s"].min()) / r["busy_s"].median())
            row["slowest_rank"] = int(r.loc[r["busy_s"].idxmax(), "rank"])
        else:
            row["skew"], row["slowest_rank"] = (0.0, 0) if len(r) == 1 else (np.nan, None)
        a = all_steps.get(x, pd.DataFrame())
        losses = a["loss"].dropna() if not a.empty else pd.Series(dtype=float)
        row["final_loss"] = float(losses.iloc[-1]) if len(losses) else np.nan
        c = curve_by.get(x, pd.DataFrame())
        acc = c["val_acc"].dropna() if not c.empty else pd.Series(dtype=float)
        row["final_val_acc"] = float(acc.iloc[-1]) if len(acc) else np.nan
        row["best_val_acc"] = float(acc.max()) if len(acc) else np.nan
        row["time_to_target_s"], row["epochs_to_target"] = np.nan, np.nan
        if target_acc is not None and len(acc):
            hit = c[c["val_acc"] >= target_acc - 1e-12]
            if not hit.empty:
                row["time_to_target_s"] = float(hit["t_since_start"].iloc[0])
                row["epochs_to_target"] = int(hit["epoch"].iloc[0]) + 1
        rows.append(row)
    return pd.DataFrame(rows)


def group_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Median and spread over repeats, then speed-up and efficiency along each scaling series."""
    m = summary[summary["samples_per_s"].notna()]
    if m.empty:
        return pd.DataFrame(columns=[*CONFIG_KEY, "repeats", "samples_per_s", "speedup", "efficiency"])
    g = m.groupby(CONFIG_KEY, dropna=False)
    out = g.agg(repeats=("experiment", "count"), world_size=("world_size", "first"),
                scaling=("scaling", "first"), oversubscribed=("oversubscribed", "any"),
                samples_per_s=("samples_per_s", "median"), samples_per_s_min=("samples_per_s", "min"),
                samples_per_s_max=("samples_per_s", "max"), samples_per_s_std=("samples_per_s", "std"),
                median_step_s=("median_step_s", "median"), median_step_s_min=("median_step_s", "min"),
                median_step_s_max=("median_step_s", "max")).reset_index()
    out["samples_per_s_spread"] = (out["samples_per_s_max"] - out["samples_per_s_min"]) / out["samples_per_s"]
    out["samples_per_s_per_rank"] = out["samples_per_s"] / out["world_size"]
    out["speedup"] = np.nan
    out["efficiency"] = np.nan
    out["base_nodes"] = np.nan
    for (weak, _), idx in out.groupby([out["scaling"] == "weak", out.apply(_series_key, axis=1)]).groups.items():
        part = out.loc[idx]
        base = part.loc[part["nodes"].idxmin()]
        out.loc[idx, "base_nodes"] = base["nodes"]
        out.loc[idx, "speedup"] = part["samples_per_s"] / base["samples_per_s"]
        if weak:
            out.loc[idx, "efficiency"] = part["samples_per_s_per_rank"] / base["samples_per_s_per_rank"]
        else:
            out.loc[idx, "efficiency"] = out.loc[idx, "speedup"] / (part["nodes"] / base["nodes"])
    out["speedup_vs_single"] = np.nan
    single = out[out["strategy"] == "single"]
    for i, row in out.iterrows():
        same = single[(single["sweep"] == row["sweep"]) & (single["model"] == row["model"]) &
                      (single["dataset"] == row["dataset"]) & (single["precision"] == row["precision"])]
        if row["scaling"] != "weak":
            same = same[same["global_batch"] == row["global_batch"]]
        if not same.empty:
            out.loc[i, "speedup_vs_single"] = row["samples_per_s"] / same["samples_per_s"].iloc[0]
    return out


def _series_key(row: pd.Series) -> tuple:
    """A scaling series: the configuration minus the node count (and the batch under weak scaling)."""
    drop = {"nodes"} | ({"global_batch"} if row["scaling"] == "weak" else set())
    return tuple(row[k] for k in CONFIG_KEY if k not in drop)


def default_target(curves: pd.DataFrame) -> float | None:
    acc = curves["val_acc"].dropna() if not curves.empty else pd.Series(dtype=float)
    return round(float(acc.max()) * TARGET_FRACTION, 4) if len(acc) else None


def analyse(data: SweepData, target_acc: float | None = None) -> Analysis:
    per_step = per_step_table(data)
    per_rank = per_rank_table(data)
    curves = curves_table(data, per_step)
    target = target_acc if target_acc is not None else default_target(curves)
    summary = experiment_table(data, per_step, per_rank, curves, target)
    groups = group_table(summary)
    cols = ["repeats", "samples_per_s_spread", "speedup", "efficiency", "speedup_vs_single", "base_nodes"]
    if not summary.empty:
        summary = summary.merge(groups[CONFIG_KEY + cols].rename(columns={"samples_per_s_spread": "repeat_spread"}),
                                on=CONFIG_KEY, how="left")
    return Analysis(data, summary, groups, per_step, curves, per_rank, target)
