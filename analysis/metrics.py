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
- Configuration: the sweep plus every identity setting (config.json's `identity`) but the repeat
  index; only repeats of one configuration are ever pooled, never experiments that differ in a
  setting (data_size, optimizer, lr, ...).
- Epochs: an epoch's time is the slowest rank's `epoch_s`; `mean_epoch_s` averages the complete
  epochs (a last epoch cut short by STEPS is left out); epochs to the target count from 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis import gridmetrics
from analysis.frames import SweepData
from contract import registry
from contract.config import ExperimentConfig
from contract.tables import TRAIN_SAMPLES

CONFIG_KEY = ["sweep", "strategy", "nodes", "procs_per_node", "global_batch", "chunks", "schedule", "model",
              "dataset", "precision", "link"]  # always in a configuration's key; identity settings are added
# Settings older config.json files lack, with the value that meant (data_size: 0 = the whole training set).
ABSENT_DEFAULTS = {"data_size": 0}
# Identity settings whose name the experiments table gives a derived value (stages: the stages in use),
# and the column that holds the setting itself (0: automatic).
RENAMED = {"stages": "stages_setting"}
# Where a strategy runs and how it splits the work: not matched when comparing with `single`.
LAYOUT_SETTINGS = {"strategy", "nodes", "procs_per_node", "chunks", "schedule", "stages_setting", "balance",
                   "gpipe_checkpoint"}
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
    config_key: list[str] = dataclasses.field(default_factory=lambda: list(CONFIG_KEY))  # a configuration

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


def columns(df: pd.DataFrame, names: tuple[str, ...], **extra: pd.Series) -> pd.DataFrame:
    """A frame of `df`'s columns `names` (and `extra`) that shares their arrays: no copy of the
    steps' other columns, as `df[names]` and `df.assign` make (230 MB at 1024 ranks x 2000 steps)."""
    return pd.DataFrame({**{k: df[k] for k in names}, **extra}, copy=False)


def timed_steps(data: SweepData, names: tuple[str, ...]) -> pd.DataFrame:
    """The steps' columns `names`, warm-up steps left out: each column copied once, the others never."""
    s = data.steps
    keep = ~s["warmup"].to_numpy()
    if keep.all():
        return columns(s, names)
    return pd.DataFrame({k: s[k].array[keep] for k in names}, index=s.index[keep], copy=False)


def by_experiment(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`frame`'s rows per experiment: slices of it (views, in its order) where its rows come in
    experiment order, as the steps frame's do; else groupby's sub-frames (copies of every row)."""
    col = frame["experiment"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        if not len(codes) or (codes[0] >= 0 and bool((np.diff(codes) >= 0).all())):
            present = np.unique(codes)
            bounds = zip(np.searchsorted(codes, present, "left"), np.searchsorted(codes, present, "right"),
                         strict=True)
            return {str(col.cat.categories[c]): frame.iloc[a:b] for c, (a, b) in zip(present, bounds, strict=True)}
    return {str(k): v for k, v in frame.groupby("experiment", observed=True)}


def per_step_table(data: SweepData) -> pd.DataFrame:
    grids = data.grids()
    if grids is not None:  # rank by rank, without the steps frame (analysis/gridmetrics.py)
        out = gridmetrics.per_step(grids, data.files.ids)
    elif data.steps.empty:
        out = pd.DataFrame()
    else:
        s = data.steps
        s = columns(s, ("experiment", "step", "step_s", "time", "warmup", "comm_bytes", "rank", "compute_s",
                        "comm_s", "mem_bytes"),
                    lw=s["loss"] * s["samples"], lsamples=s["samples"].where(s["loss"].notna()))
        g = s.groupby(["experiment", "step"], observed=True, sort=True)
        out = g.agg(step_time=("step_s", "max"), step_min=("step_s", "min"), time=("time", "max"),
                    warmup=("warmup", "any"), comm_bytes=("comm_bytes", "sum"), lw=("lw", "sum"),
                    lsamples=("lsamples", "sum"), ranks=("rank", "count"), compute_s=("compute_s", "mean"),
                    comm_s=("comm_s", "mean"), mem_bytes=("mem_bytes", "max")).reset_index()
    if out.empty:
        return pd.DataFrame(columns=["experiment", "step", "step_time", "loss", "time", "warmup", "comm_bytes",
                                     "compute_s", "comm_s", "mem_bytes", "t_since_start"])
    out["loss"] = (out["lw"] / out["lsamples"]).where(out["lsamples"] > 0)
    start = _start_times(data)
    out["t_since_start"] = out["time"] - out["experiment"].astype(str).map(start)
    return out.drop(columns=["lw", "lsamples"])


def _start_times(data: SweepData) -> pd.Series:
    """Per experiment: when its ranks started (the earliest start record; else the first step's start)."""
    r = data.ranks.groupby("experiment")["start_time"].min()
    grids = data.grids()
    if grids is not None:
        first = gridmetrics.start_times(grids)
    else:
        s = data.steps
        first = pd.Series(dtype=float)
        if not s.empty:  # group on the categorical column: converting half a million rows to str is slow
            first = (s["time"] - s["step_s"]).groupby(s["experiment"], observed=True).min()
            first.index = first.index.astype(str)
    return r.combine_first(first) if not r.empty else first


def _per_rank_groupby(data: SweepData) -> pd.DataFrame:
    s = timed_steps(data, ("experiment", "rank", "compute_s", "step_s", "mem_bytes"))
    if s.empty:
        return s
    s = columns(s, ("experiment", "rank", "step_s", "mem_bytes"), busy=s["compute_s"].fillna(s["step_s"]))
    out = s.groupby(["experiment", "rank"], observed=True).agg(
        busy_s=("busy", "median"), step_s=("step_s", "median"), mem_bytes=("mem_bytes", "max")).reset_index()
    out["experiment"] = out["experiment"].astype(str)
    return out


def per_rank_table(data: SweepData) -> pd.DataFrame:
    grids = data.grids()
    out = gridmetrics.per_rank(grids) if grids is not None else _per_rank_groupby(data)
    if out.empty:
        return pd.DataFrame(columns=["experiment", "rank", "busy_s", "step_s", "mem_bytes"])
    r = data.ranks.copy()
    for kind in ("param", "grad", "optim"):  # bytes held after training (measured), else at start
        r[f"{kind}_bytes"] = r[f"end_{kind}_bytes"].combine_first(r[f"{kind}_bytes"])
    keep = ["experiment", "rank", "param_bytes", "grad_bytes", "optim_bytes", "peak_mem_bytes"]
    out = out.merge(r[keep], on=["experiment", "rank"], how="left")
    out["mem_bytes"] = out[["mem_bytes", "peak_mem_bytes"]].max(axis=1)
    return out.drop(columns=["peak_mem_bytes"])


def curves_table(data: SweepData, per_step: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, epoch): validation accuracy and loss, the epoch's time (its slowest
    rank's), the last step it ran and how many steps it ran."""
    e = data.epochs
    if e.empty:
        return pd.DataFrame(columns=["experiment", "epoch", "val_acc", "val_loss", "epoch_s", "time",
                                     "t_since_start", "step", "steps"])
    # Replicas evaluate the same weights; pipeline stages without the head log null: take the median of non-nulls.
    out = e.groupby(["experiment", "epoch"]).agg(val_acc=("val_acc", "median"), val_loss=("val_loss", "median"),
                                                 epoch_s=("epoch_s", "max"), time=("time", "max")).reset_index()
    out["t_since_start"] = out["time"] - out["experiment"].map(_start_times(data))
    grids = data.grids()
    if grids is not None:
        last_step, n_steps = gridmetrics.epoch_steps(grids)
    else:
        by_epoch = data.steps.groupby(["experiment", "epoch"], observed=True)["step"]
        last_step, n_steps = by_epoch.max(), by_epoch.nunique()
        for table in (last_step, n_steps):
            table.index = table.index.set_levels(table.index.levels[0].astype(str), level=0)
    keys = list(zip(out["experiment"], out["epoch"].astype(float), strict=True))
    out["step"] = [last_step.get(k, np.nan) for k in keys]
    out["steps"] = [n_steps.get(k, np.nan) for k in keys]
    return out


def _setting_default(name: str):
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    return defaults.get(name, ABSENT_DEFAULTS.get(name))


def identity_of(doc: dict) -> dict:
    """config.json's `identity`; where a hand-edited or older file lacks it, the one its `config` gives."""
    if isinstance(doc.get("identity"), dict):
        return doc["identity"]
    try:
        return ExperimentConfig.from_dict(doc["config"]).identity()
    except Exception:  # noqa: BLE001 - no config, or an odd one: the defaults stand in
        return {}


def identity_table(data: SweepData) -> pd.DataFrame:
    """Per experiment, the identity settings (config.json's `identity`) that the experiments table
    lacks: data_size, optimizer, lr, steps, ... A setting an identity leaves out (a skipped
    experiment has none, an older sweep has no data_size) takes the setting's default."""
    have = set(data.experiments.columns)
    found = {}
    for exp in data.experiments.get("experiment", pd.Series(dtype=str)):
        ident = identity_of(data.configs.get(exp) or {})
        found[exp] = {k: v for k, v in ident.items() if k not in have or k in RENAMED}
    order = [f.name for f in dataclasses.fields(ExperimentConfig)]
    names = sorted({k for ident in found.values() for k in ident} | set(ABSENT_DEFAULTS),
                   key=lambda k: (order.index(k) if k in order else len(order), k))
    rows = [{"experiment": exp, **{RENAMED.get(k, k): ident[k] if ident.get(k) is not None else _setting_default(k)
                                   for k in names}} for exp, ident in found.items()]
    return pd.DataFrame(rows, columns=["experiment", *[RENAMED.get(k, k) for k in names]])


def train_samples(row: pd.Series) -> float:
    """Training samples an experiment used: data_size, or where it is 0 the whole data set's
    (NaN for a data set whose size this module does not know)."""
    return float(row.get("data_size") or TRAIN_SAMPLES.get(str(row.get("dataset")), np.nan))


def epoch_steps(row: pd.Series) -> float:
    """Steps in a full epoch: the training samples used over the global batch (NaN if unknown)."""
    samples = train_samples(row)
    return float(samples // row["global_batch"]) if np.isfinite(samples) and row.get("global_batch") else np.nan


def _epoch_figures(c: pd.DataFrame, full_steps: float) -> dict[str, float]:
    """epochs_done (complete epochs) and mean_epoch_s over them. A full epoch's length comes from
    the logs where an epoch was followed by another (the loop moved on: it was full), else from
    the settings (`epoch_steps`); an epoch that ran fewer steps (STEPS cut it short) is left out."""
    if c.empty:
        return {"epochs_done": 0, "mean_epoch_s": np.nan}
    followed = c[c["epoch"] < c["epoch"].max()]
    full = followed["steps"].max() if not followed.empty else full_steps
    done = c[c["steps"] >= full] if np.isfinite(full) else c.iloc[:0]
    return {"epochs_done": len(done), "mean_epoch_s": float(done["epoch_s"].mean()) if len(done) else np.nan}


TIMED_MEANS = ("step_s", "compute_s", "comm_s", "staleness")  # per experiment, over its ranks' timed steps


def _timed_means(data: SweepData) -> dict[str, dict[str, float]]:
    """Per experiment with timed steps: the mean of each field of TIMED_MEANS over them, NaN skipped
    (numpy floats: a mean step of 0 makes the split infinite, as it always did, not an exception)."""
    grids = data.grids()
    if grids is not None:
        return {x: gridmetrics.timed_means(g, TIMED_MEANS) for x, g in grids.items() if g.timed_rows()}
    steps = by_experiment(timed_steps(data, ("experiment", *TIMED_MEANS)))
    return {x: {k: np.float64(v[k].mean()) for k in TIMED_MEANS} for x, v in steps.items() if not v.empty}


def _time_split(means: dict[str, float] | None, exp: pd.Series, median_step: float) -> dict[str, float]:
    """compute / comm / bubble / other seconds of the median step, from the timed steps' means."""
    out = {"compute_s": np.nan, "comm_s": np.nan, "bubble_s": np.nan, "other_s": np.nan}
    if means is None or not np.isfinite(median_step):
        return out
    mean_step, comp, comm = means["step_s"], means["compute_s"], means["comm_s"]
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
    """One row per experiment: its settings (identity included) and every per-experiment metric."""
    experiments = data.experiments.merge(identity_table(data), on="experiment", how="left") \
        if "experiment" in data.experiments else data.experiments
    timed = per_step[~per_step["warmup"].astype(bool)] if not per_step.empty else per_step
    means = _timed_means(data)
    timed_by = {str(k): v for k, v in timed.groupby("experiment", observed=True)} if not timed.empty else {}
    rank_by = {k: v for k, v in per_rank.groupby("experiment")} if not per_rank.empty else {}
    curve_by = {k: v for k, v in curves.groupby("experiment")} if not curves.empty else {}
    all_steps = {str(k): v for k, v in per_step.groupby("experiment", observed=True)} if not per_step.empty else {}
    rows = []
    for _, exp in experiments.iterrows():
        x = exp["experiment"]
        t = timed_by.get(x, pd.DataFrame())
        row = exp.to_dict()
        median = float(t["step_time"].median()) if not t.empty else np.nan
        row.update({"timed_steps": len(t), "median_step_s": median,
                    "step_s_p10": float(t["step_time"].quantile(0.1)) if not t.empty else np.nan,
                    "step_s_p90": float(t["step_time"].quantile(0.9)) if not t.empty else np.nan,
                    "samples_per_s": exp["global_batch"] / median if median > 0 else np.nan})
        row["samples_per_s_per_rank"] = row["samples_per_s"] / exp["world_size"]
        row.update(_time_split(means.get(x), exp, median))
        row["comm_bytes_per_step"] = float(t["comm_bytes"].median()) if not t.empty else np.nan
        row["staleness_mean"] = means[x]["staleness"] if x in means else np.nan  # asyncps workers only
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
        row.update(_epoch_figures(c, epoch_steps(exp)))
        row["time_to_target_s"], row["epochs_to_target"] = np.nan, np.nan
        if target_acc is not None and len(acc):
            hit = c[c["val_acc"] >= target_acc - 1e-12]
            if not hit.empty:
                row["time_to_target_s"] = float(hit["t_since_start"].iloc[0])
                row["epochs_to_target"] = int(hit["epoch"].iloc[0]) + 1
        rows.append(row)
    return pd.DataFrame(rows)


GROUP_MEDIANS = ("compute_s", "comm_s", "peak_mem_bytes_per_rank", "final_loss", "final_val_acc", "mean_epoch_s",
                 "time_to_target_s", "epochs_to_target")  # per-experiment figures the views compare, medians


# what group_table adds to a configuration's key, and analyse merges into the summary: there even when empty
GROUP_COLUMNS = ("repeats", "world_size", "scaling", "oversubscribed", "samples_per_s", "samples_per_s_min",
                 "samples_per_s_max", "median_step_s", "samples_per_s_spread", "speedup", "efficiency",
                 "speedup_vs_single", "base_nodes")


def config_key(summary: pd.DataFrame) -> list[str]:
    """What makes a configuration: CONFIG_KEY and every identity setting in the summary, not the repeat."""
    extra = [c for c in identity_columns(summary) if c not in CONFIG_KEY]
    return [*CONFIG_KEY, *extra]


def identity_columns(summary: pd.DataFrame) -> list[str]:
    """The summary's columns that hold identity settings, but the repeat index."""
    names = {f.name for f in dataclasses.fields(ExperimentConfig)} | set(ABSENT_DEFAULTS)
    return [c for c in summary.columns if (c in names and c not in RENAMED and c != "repeat") or
            c in RENAMED.values()]


def group_table(summary: pd.DataFrame, key: list[str] | None = None) -> pd.DataFrame:
    """Median and spread over repeats, then speed-up and efficiency along each scaling series."""
    key = key or list(CONFIG_KEY)
    m = summary[summary["samples_per_s"].notna()]
    if m.empty:
        return pd.DataFrame(columns=[*key, *GROUP_COLUMNS])
    g = m.groupby(key, dropna=False)
    medians = {c: (c, "median") for c in GROUP_MEDIANS if c in m}
    out = g.agg(repeats=("experiment", "count"), world_size=("world_size", "first"),
                scaling=("scaling", "first"), oversubscribed=("oversubscribed", "any"),
                samples_per_s=("samples_per_s", "median"), samples_per_s_min=("samples_per_s", "min"),
                samples_per_s_max=("samples_per_s", "max"), samples_per_s_std=("samples_per_s", "std"),
                median_step_s=("median_step_s", "median"), median_step_s_min=("median_step_s", "min"),
                median_step_s_max=("median_step_s", "max"), **medians).reset_index()
    out["samples_per_s_spread"] = (out["samples_per_s_max"] - out["samples_per_s_min"]) / out["samples_per_s"]
    out["samples_per_s_per_rank"] = out["samples_per_s"] / out["world_size"]
    out["speedup"] = np.nan
    out["efficiency"] = np.nan
    out["base_nodes"] = np.nan
    series = out.apply(lambda row: _series_key(row, key), axis=1)
    for (weak, _), idx in out.groupby([out["scaling"] == "weak", series]).groups.items():
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
    for i, row in out.iterrows():  # the same settings but where and how it runs (and the batch, weak scaling)
        same = [k for k in key if k not in LAYOUT_SETTINGS and (k != "global_batch" or row["scaling"] != "weak")]
        match = single[(single[same] == row[same]).all(axis=1)] if same else single
        if not match.empty:
            out.loc[i, "speedup_vs_single"] = row["samples_per_s"] / match["samples_per_s"].iloc[0]
    return out


def _series_key(row: pd.Series, key: list[str]) -> tuple:
    """A scaling series: the configuration minus the node count (and the batch under weak scaling)."""
    drop = {"nodes"} | ({"global_batch"} if row["scaling"] == "weak" else set())
    return tuple(row[k] for k in key if k not in drop)


def settings_of(row: pd.Series) -> dict:
    """A summary row's settings, without the empty cells of settings its strategy does not take."""
    return {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}


def label_of(strategy: str, settings: Mapping[str, Any]) -> str:
    """The strategy with its own settings (registry: Strategy.settings) that are off their defaults,
    e.g. `localsgd[sync_every=4]`; "" when all are at their defaults. Advice candidates and the
    projection's series are named by it."""
    own = [f"{k}={_plain(settings[k])}" for k in registry.get(strategy).settings
           if k in settings and settings[k] != _setting_default(k)]
    return f"{strategy}[{','.join(own)}]" if own else ""


def _plain(v: object) -> object:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def same_maths(row: pd.Series) -> bool:
    """Whether this experiment's step is single's on the global batch (registry: Strategy.same_maths)."""
    return registry.get(str(row["strategy"])).same_maths(settings_of(row))


def default_target(curves: pd.DataFrame) -> float | None:
    acc = curves["val_acc"].dropna() if not curves.empty else pd.Series(dtype=float)
    return round(float(acc.max()) * TARGET_FRACTION, 4) if len(acc) else None


def analyse(data: SweepData, target_acc: float | None = None) -> Analysis:
    per_step = per_step_table(data)
    per_rank = per_rank_table(data)
    curves = curves_table(data, per_step)
    target = target_acc if target_acc is not None else default_target(curves)
    summary = experiment_table(data, per_step, per_rank, curves, target)
    key = config_key(summary)
    groups = group_table(summary, key)
    cols = ["repeats", "samples_per_s_spread", "speedup", "efficiency", "speedup_vs_single", "base_nodes"]
    if not summary.empty:
        summary = summary.merge(groups[key + cols].rename(columns={"samples_per_s_spread": "repeat_spread"}),
                                on=key, how="left")
    return Analysis(data, summary, groups, per_step, curves, per_rank, target, key)
