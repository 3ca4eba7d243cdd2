"""Measured points: each COMPLETED experiment of a sweep reduced to what the model is fitted on."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis import layouts
from analysis.frames import SweepData
from analysis.load import load_run, load_sweep
from contract import registry
from contract.tables import LINKS, link_wire


@dataclass
class Point:
    """One COMPLETED experiment, reduced over its timed (non-warm-up) steps (times: QUANTILE; else medians)."""
    strategy: str
    nodes: int
    procs: int
    global_batch: int
    chunks: int
    cores: int  # cores of the machine it ran on
    step_s: float  # slowest rank, median over steps
    compute_s: float | None  # slowest computing rank
    comm_bytes: int  # the rank that sent most (the bottleneck)
    samples: int  # per computing rank
    latency_s: float  # emulated link in that run (0 when none)
    bandwidth: float  # bytes/s, 0 = infinite
    experiment: str = ""
    model: str = ""
    busy: float | None = None  # the ranks' mean CPU time per step / (step time x threads per rank)
    serial_s: float = 0.0  # own work of a rank that computes no samples (the ps server's update)
    threads: int = 1  # torch threads per rank (the CPU plan: the cores shared among the node's ranks)
    compute_sum_s: float | None = None  # staged: the stages' compute added up (the whole model's, on `threads`)
    settings: dict[str, Any] = field(default_factory=dict)  # its layout's settings (analysis/layouts.py), + optimizer

    @property
    def world(self) -> int:
        return self.nodes * self.procs

    @property
    def series(self) -> str:
        """What is fitted as one: the strategy, with its own settings, recompute, micro-batch and
        schedule off their defaults (`localsgd[sync_every=4]`: a different H is a different traffic
        per step; `mix[tp=2,pp=2]`: a layout; its dp grows with the nodes)."""
        return layouts.label(self.strategy, self.settings) or self.strategy

    @property
    def work(self) -> float:
        """A computing rank's share of the samples' work: its samples over the ranks each layer is
        cut over (tp: every rank reads the whole batch and computes 1/W of it)."""
        return self.samples / layouts.tp_at(self.strategy, self.world, self.settings)


QUANTILE = 0.25  # of the per-step times: the lower quartile resists other load on a shared machine


def _quantile(values: list[float]) -> float:
    """The QUANTILE of `values` (linear interpolation)."""
    v = sorted(values)
    pos = QUANTILE * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


def points_from(data: SweepData) -> list[Point]:
    """One Point per COMPLETED experiment of `data` (analysis.load's tables: the last attempt
    of each rank file), in experiment-name order."""
    if data.steps.empty:
        return []
    ok = data.experiments[data.experiments["state"] == "COMPLETED"]["experiment"]
    timed = data.steps[data.steps["experiment"].isin(ok) & ~data.steps["warmup"]]
    points = []
    for exp, steps in timed.groupby("experiment", observed=True, sort=True):
        doc = data.configs.get(str(exp)) or {}
        p = _point(str(exp), doc.get("config") or {}, doc.get("meta") or {}, steps)
        if p is not None:
            points.append(p)
    return sorted(points, key=lambda p: p.experiment)


def _point(exp: str, cfg: dict, meta: dict, steps: pd.DataFrame) -> Point | None:
    """Reduce one experiment's timed rank-steps to a Point: per step the slowest rank (the
    bottleneck), then over the steps QUANTILE (times) or the median; only steps every rank logged.
    Where only every H-th step sends (localsgd), over windows of H steps instead (docs/projection.md)."""
    if not cfg or steps.empty:
        return None
    n_ranks = steps["rank"].nunique()
    by_step = steps.groupby("step", sort=True)
    steps = steps[by_step["rank"].transform("size") == n_ranks]
    if steps.empty:
        return None
    g = steps.groupby("step", sort=True)
    step_max = g["step_s"].max()
    sent = steps["comm_bytes"].fillna(0).groupby(steps["step"]).max()
    period = _sync_period(sent)
    # A strategy that synchronises every H-th step only (localsgd): the model's step is the mean over a
    # period, so times and bytes are taken as means over each window of H consecutive steps (one sync in each).
    windows = step_max.rolling(period).mean().dropna() if period > 1 else step_max
    busy_rank = steps["compute_s"].notna() & (steps["compute_s"] != 0)
    computes = steps[busy_rank & (steps["samples"] > 0)].groupby("step")["compute_s"].max()
    serial = steps[busy_rank & (steps["samples"] == 0)].groupby("step")["compute_s"].max()
    comm = (sent.rolling(period).mean().dropna() if period > 1 else sent).median()
    samples = g["samples"].max().median()
    plan = meta.get("cpu_plan") or {}
    cores = int(plan.get("machine_cores") or os.cpu_count() or 1)
    threads = int(plan.get("threads_per_rank") or 1)
    cpu_all = g["cpu_s"].count() == g["cpu_s"].size()
    cpu = (g["cpu_s"].mean() / (step_max * threads))[cpu_all & (step_max > 0)]
    latency, bandwidth = _run_link(cfg, meta)
    record = registry.get(cfg["strategy"])
    summed = steps[busy_rank].groupby("rank")["compute_s"].median()
    staged_sum = float(summed.sum()) if record.kind == "staged" and len(summed) == n_ranks else None
    names = [*record.settings, *layouts.COMMON, *(["schedule"] if record.scheduled else []), "optimizer"]
    settings = {k: layouts.value(cfg, k) for k in names}  # a field an older config.json lacks: its default
    return Point(cfg["strategy"], cfg["nodes"], cfg["procs_per_node"], cfg["global_batch"], cfg.get("chunks", 1),
                 cores, _quantile(list(windows)), _quantile(list(computes)) if len(computes) else None, int(comm),
                 int(samples), latency, bandwidth, exp, cfg.get("model", ""),
                 float(cpu.median()) if len(cpu) else None, _quantile(list(serial)) if len(serial) else 0.0,
                 threads, staged_sum, settings)


def _sync_period(sent: pd.Series) -> int:
    """Steps from one sending step to the next where only some steps send (the median gap between
    them), else 1. Read from the records, not the config: the bytes say when a rank synchronised."""
    steps = sent.index[sent > 0].to_numpy()
    if len(steps) < 2 or len(steps) == len(sent):
        return 1
    return max(1, int(round(float(pd.Series(steps).diff().dropna().median()))))


def load_point(run_dir: str) -> Point | None:
    """The Point of one run directory (None unless it COMPLETED)."""
    points = points_from(load_run(run_dir))
    return points[0] if points else None


def _run_link(cfg: dict, meta: dict) -> tuple[float, float]:
    """The link a measured run emulated (simulate backend, several nodes), else none."""
    if meta.get("backend", "simulate") != "simulate" or cfg.get("nodes", 1) < 2:
        return 0.0, 0.0
    link = cfg.get("link", "loopback")  # an unknown one: none, as loopback (its overrides still apply)
    return link_wire(link if link in LINKS else "loopback", cfg.get("latency_us", -1), cfg.get("bandwidth_gbps", -1))


def load_points(sweep_dir: str) -> list[Point]:
    return points_from(load_sweep(sweep_dir))
