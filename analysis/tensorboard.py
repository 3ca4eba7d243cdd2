"""TensorBoard event files of a sweep: one run per experiment (`make tensorboard SWEEP=x`).

    logs/<sweep>/tensorboard/<experiment>/events.out.tfevents.*    view: tensorboard --logdir logs/<sweep>/tensorboard

Written from the analysis (`analysis.metrics`), never from the trainers: a sweep that ran
anywhere, any time, gets the same files. Per timed or warm-up step (x = the optimizer step,
wall time = the step's end): the training loss, the step time (slowest rank), compute and
communication (the ranks' mean, where the strategy times them), throughput and peak memory;
per epoch (x = its last step): validation accuracy and loss and the epoch's time; once, at the
last step, the summary figures the hparams table shows. The experiment's identity settings
(config.json) are its hparams. Only tensorboard's own, TensorFlow-free modules are used.

A rebuild replaces the whole folder (written beside it, then swapped in), so running it twice
never duplicates an event. The one module that imports tensorboard (a slow import).
"""

from __future__ import annotations

import math
import numbers
import os
import shutil

import pandas as pd
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from analysis.metrics import Analysis, identity_of

FOLDER = "tensorboard"
MIB = 2**20
# tag -> (per-step column, scale)
STEP_TAGS = {"loss/train": ("loss", 1.0), "time/step_s": ("step_time", 1.0), "time/compute_s": ("compute_s", 1.0),
             "time/comm_s": ("comm_s", 1.0), "throughput/samples_per_s": ("samples_per_s", 1.0),
             "memory/peak_mib": ("mem_bytes", 1 / MIB)}
EPOCH_TAGS = {"val/acc": ("val_acc", 1.0), "val/loss": ("val_loss", 1.0), "epoch/time_s": ("epoch_s", 1.0)}
# the hparams table's metrics: summary.csv columns, written once per run
SUMMARY_TAGS = {"summary/samples_per_s": ("samples_per_s", 1.0), "summary/median_step_s": ("median_step_s", 1.0),
                "summary/peak_mem_mib": ("peak_mem_bytes_per_rank", 1 / MIB),
                "summary/final_loss": ("final_loss", 1.0), "summary/final_val_acc": ("final_val_acc", 1.0),
                "summary/mean_epoch_s": ("mean_epoch_s", 1.0), "summary/time_to_target_s": ("time_to_target_s", 1.0)}


def _values(row, tags: dict[str, tuple[str, float]]) -> list[Summary.Value]:
    out = []
    for tag, (col, scale) in tags.items():
        v = row.get(col)
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v):
            out.append(Summary.Value(tag=tag, simple_value=float(v) * scale))
    return out


def hparam_value(v):
    """An hparam must be a bool, a number or a string (numpy scalars become Python ones)."""
    v = v.item() if hasattr(v, "item") else v
    return v if isinstance(v, bool | int | float | str) else str(v)


def hparams(a: Analysis, row: pd.Series) -> dict:
    """The experiment's identity settings (config.json), data_size 0 where an older sweep lacks it;
    without a config.json, the settings the analysis has for it."""
    ident = identity_of(a.data.configs.get(row["experiment"]) or {}) or \
        {k: row[k] for k in a.config_key if k != "sweep"}
    return {k: hparam_value(v) for k, v in {"data_size": 0, **ident}.items() if v is not None}


class _Run:
    def __init__(self, path: str):
        self.writer = EventFileWriter(path, max_queue_size=1000, flush_secs=3600)

    def add(self, step: int, wall_time: float, values: list[Summary.Value]) -> None:
        if values:
            self.writer.add_event(Event(step=step, wall_time=wall_time, summary=Summary(value=values)))

    def add_summary(self, summary: Summary, wall_time: float) -> None:
        self.writer.add_event(Event(wall_time=wall_time, summary=summary))

    def close(self) -> None:
        self.writer.close()


def _write_run(a: Analysis, row: pd.Series, steps: pd.DataFrame, curves: pd.DataFrame, path: str) -> None:
    run = _Run(path)
    start = float((steps["time"] - steps["t_since_start"]).min()) if not steps.empty else 0.0  # the first start
    run.add_summary(hp.hparams_pb(hparams(a, row), trial_id=row["experiment"], start_time_secs=start), start)
    for r in steps.to_dict("records"):
        run.add(int(r["step"]), float(r["time"]), _values(r, STEP_TAGS))
    for r in curves.to_dict("records"):
        step = r["step"] if isinstance(r["step"], numbers.Real) and math.isfinite(r["step"]) else r["epoch"]
        run.add(int(step), float(r["time"]), _values(r, EPOCH_TAGS))
    if not steps.empty:
        last = steps.iloc[-1]
        run.add(int(last["step"]), float(last["time"]), _values(row.to_dict(), SUMMARY_TAGS))
    run.close()


def _domains(a: Analysis, runs: pd.DataFrame) -> list[hp.HParam]:
    """Every hparam with the values it takes in this sweep (the dashboard's filters)."""
    seen: dict[str, set] = {}
    for _, row in runs.iterrows():
        for k, v in hparams(a, row).items():
            seen.setdefault(k, set()).add(v)
    out = []
    for k, vals in seen.items():
        if all(isinstance(v, str) for v in vals) or all(isinstance(v, bool) for v in vals):
            out.append(hp.HParam(k, hp.Discrete(sorted(vals))))
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            out.append(hp.HParam(k, hp.Discrete(sorted(float(v) for v in vals))))
        else:
            out.append(hp.HParam(k))
    return out


def write_tensorboard(a: Analysis, sweep_dir: str) -> tuple[str, list[str]]:
    """Write logs/<sweep>/tensorboard/ afresh; return (folder, the runs written: measured experiments)."""
    final = os.path.join(sweep_dir, FOLDER)
    building = f"{final}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    os.makedirs(building)
    ps = a.per_step.assign(experiment=a.per_step["experiment"].astype(str))
    ps = ps.merge(a.summary[["experiment", "global_batch"]], on="experiment", how="left")
    ps["samples_per_s"] = ps["global_batch"] / ps["step_time"].where(ps["step_time"] > 0)
    steps_by = {k: v.sort_values("step") for k, v in ps.groupby("experiment")}
    curves_by = {k: v.sort_values("epoch") for k, v in a.curves.groupby("experiment")}
    runs = a.summary[a.summary["experiment"].isin(steps_by)]
    for _, row in runs.iterrows():
        x = row["experiment"]
        _write_run(a, row, steps_by[x], curves_by.get(x, pd.DataFrame()), os.path.join(building, x))
    if not runs.empty:  # the experiment-wide hparams config: which settings and metrics the table shows
        root = _Run(building)
        config = hp.hparams_config_pb(_domains(a, runs), [hp.Metric(tag) for tag in SUMMARY_TAGS])
        root.add_summary(config, float(runs["experiment"].map(lambda x: steps_by[x]["time"].min()).min()))
        root.close()
    old = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(building, final)
    shutil.rmtree(old, ignore_errors=True)
    return final, list(runs["experiment"])
