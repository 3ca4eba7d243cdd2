"""Scaling projection: fit a step-time model per strategy on a sweep's runs, predict 1..1024 nodes.

    python -m analysis.projection --sweep NAME [--logs DIR] [--link 10gbe] [--max-nodes 1024]

Reads the sweep through analysis.load (the COMPLETED experiments; each rank file's last
attempt) and writes logs/<sweep>/projection.csv and logs/<sweep>/plots/projection.png.

The model of one optimizer step on W = nodes x procs ranks (docs/projection.md):

    T(W) = compute + local_comm + link
    compute    = (c0 + s * b) * r                 b: samples per computing rank, B / dp(W)
    local_comm = kappa * bytes(W) * rc + u * r    kappa: this machine's cost per byte sent; u: ps server update
    link       = latency * messages(W) + bytes(W) / bandwidth      only between nodes
    r          = max(1, ranks on a machine * busy / its cores)     CPU contention (time sharing)
    busy       = a rank's cpu_s / (step_s x its threads), measured where 1 < W <= cores
    rc         = r, except 1 for ps: its exchange is serial at the server while the workers wait

    bytes(W) per pattern, P fitted from comm_bytes:   all-reduce / sharded collectives: 2 P (W-1)/W
    (ring all-reduce sends 2(N-1)/N x the gradient size), parameter server: P (W-1) at the server,
    pipeline: P (activations at a stage boundary).   messages(W): 2(W-1), 2, 2 x chunks.
    Pipelines: compute = A (M+K-1)/(M K) * r, A the whole model's compute per step, K stages,
    M micro-batches: the bubble (K-1)/(M+K-1) idles each stage.

c0, s come from the measured `compute_s` (least squares over the node counts; a strategy with
one slice size borrows the others' split between c0 and s), kappa from the rest of the measured step time.
On the projected cluster every node is this machine (r = max(1, procs x busy / cores)); on this
machine r grows with the ranks, which is how NODES=4 on 2 cores is predicted.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import sys
from dataclasses import dataclass, field

import pandas as pd

from analysis import AnalysisError
from analysis.advise import Projected
from analysis.load import SweepData, completed, find_sweep, load_run, load_sweep, read_json
from analysis.plan import positive_int
from contract import registry
from contract.config import check_name
from contract.defaults import MAX_NODES, PROJECTED_LINK
from contract.errors import ConfigError, OneLineParser
from contract.paths import LOGS
from contract.tables import LINKS, MODEL_BLOCKS, SCALINGS, link_wire

PROJECTED = registry.names(projected=True)
PIPELINE = tuple(s for s in PROJECTED if registry.get(s).kind == "staged")  # one stage per rank


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

    @property
    def world(self) -> int:
        return self.nodes * self.procs


QUANTILE = 0.25  # of the per-step times: the lower quartile resists other load on a shared machine


def _q(values: list[float]) -> float:
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
    bottleneck), then over the steps QUANTILE (times) or the median; only steps every rank logged."""
    if not cfg or steps.empty:
        return None
    n_ranks = steps["rank"].nunique()
    by_step = steps.groupby("step", sort=True)
    steps = steps[by_step["rank"].transform("size") == n_ranks]
    if steps.empty:
        return None
    g = steps.groupby("step", sort=True)
    step_max = g["step_s"].max()
    busy_rank = steps["compute_s"].notna() & (steps["compute_s"] != 0)
    computes = steps[busy_rank & (steps["samples"] > 0)].groupby("step")["compute_s"].max()
    serial = steps[busy_rank & (steps["samples"] == 0)].groupby("step")["compute_s"].max()
    comm = steps["comm_bytes"].fillna(0).groupby(steps["step"]).max().median()
    samples = g["samples"].max().median()
    plan = meta.get("cpu_plan") or {}
    cores = int(plan.get("machine_cores") or os.cpu_count() or 1)
    threads = int(plan.get("threads_per_rank") or 1)
    cpu_all = g["cpu_s"].count() == g["cpu_s"].size()
    cpu = (g["cpu_s"].mean() / (step_max * threads))[cpu_all & (step_max > 0)]
    latency, bandwidth = _run_link(cfg, meta)
    summed = steps[busy_rank].groupby("rank")["compute_s"].median()
    staged_sum = float(summed.sum()) if registry.get(cfg["strategy"]).kind == "staged" and len(summed) == n_ranks \
        else None
    return Point(cfg["strategy"], cfg["nodes"], cfg["procs_per_node"], cfg["global_batch"], cfg.get("chunks", 1),
                 cores, _q(list(step_max)), _q(list(computes)) if len(computes) else None, int(comm), int(samples),
                 latency, bandwidth, exp, cfg.get("model", ""),
                 float(cpu.median()) if len(cpu) else None, _q(list(serial)) if len(serial) else 0.0,
                 threads, staged_sum)


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


# ---- the model ----------------------------------------------------------------------------

def dp_size(strategy: str, world: int) -> int:
    traits = registry.get(strategy)
    return traits.dp_size(1, world, traits.stages(1, world))


def pattern(strategy: str, world: int) -> float:
    """bytes(W) / P: how the bottleneck rank's traffic grows with the ranks (the registry's)."""
    return registry.get(strategy).comm_bytes(world, 1.0)


def messages(strategy: str, world: int, chunks: int) -> int:
    return registry.get(strategy).comm_messages(world, chunks)


def contention(ranks_on_machine: int, cores: int, busy: float = 1.0) -> float:
    """How much slower time sharing makes each rank: the CPU the ranks ask for over the cores.
    `busy`: the fraction of a step a rank keeps its core busy (measured; the rest it waits)."""
    return max(1.0, ranks_on_machine * busy / max(cores, 1))


def comm_contention(strategy: str, r: float, busy: float = 1.0) -> float:
    """How CPU time sharing slows the bottleneck rank's communication. Replicas all-reduce their
    gradients after the backward pass, every rank copying at once: they share the cores fully,
    r without the idle share `busy` of the step (r counts it), where the ranks oversubscribe the
    cores. Sharded strategies overlap their gathers with compute: r, as measured. A parameter
    server's exchange is serial at the server while the workers wait blocked in a receive: the
    server has a core to itself (1)."""
    traits = registry.get(strategy)
    if traits.computing_ranks == "workers":
        return 1.0
    return r / busy if r > 1.0 and traits.kind == "replicas" else r


def link_s(strategy: str, world: int, chunks: int, nbytes: float, latency_s: float, bandwidth: float) -> float:
    transfer = nbytes / bandwidth if bandwidth > 0 else 0.0
    return latency_s * messages(strategy, world, chunks) + transfer


def micro_batches(strategy: str, chunks: int) -> int:
    """Micro-batches of a staged step: CHUNKS for pipelines, 1 for mp (it runs the batch whole)."""
    return chunks if registry.get(strategy).micro_batches else 1


def critical_hops(stages: int, micro: int) -> int:
    """Messages handed from stage to stage, one after another, on a staged step's critical path:
    the first micro-batch's activation crosses K-1 boundaries, the other M-1 follow it through the
    last stage, and the gradients come back the same way: 2(M+K-2) (mp: 2(K-1)); 0 on one stage."""
    return 2 * (micro + stages - 2) if stages > 1 else 0


def staged_terms(stages: int, micro: int, boundary_bytes: float) -> tuple[float, float, int]:
    """(compute factor, bytes on the critical path, messages on it) of a staged step: compute
    factor (M+K-1)/(MK) of the whole model's compute A, the bubble included; each hop carries
    one micro-batch's activation (or gradient) of a boundary, boundary_bytes / M."""
    k, m = stages, micro
    hops = critical_hops(k, m)
    return (m + k - 1) / (m * k), hops * boundary_bytes / m, hops


@dataclass
class Fit:
    strategy: str
    c0: float  # seconds per step independent of the batch (per computing rank, one core)
    s: float  # seconds per sample; for pipelines c0 + s*B = A, the whole model's step compute
    kappa: float  # seconds per byte sent on this machine, per unit of contention
    param_bytes: float  # P of `pattern`
    chunks: int
    points: list[Point] = field(default_factory=list)
    busy: float = 1.0  # fraction of a step a rank keeps a core busy (measured where not contended)
    serial_s: float = 0.0  # ps: the server's update, on the path between the workers' push and pull
    thread_gain: float = 0.0  # staged: compute on t threads costs t**-thread_gain of one thread's

    def contention(self, ranks_on_machine: int, cores: int) -> float:
        return contention(ranks_on_machine, cores, self.busy)

    def slowdown(self, ranks_on_machine: int, cores: int) -> float:
        """r of step_s: time sharing, and for staged strategies the threads each rank gets (their
        A is one thread's; the CPU plan gives a rank cores // ranks threads)."""
        threads = max(1, cores // max(ranks_on_machine, 1))
        return self.contention(ranks_on_machine, cores) * threads ** -self.thread_gain

    def compute(self, world: int, batch: float, r: float) -> float:
        if self.strategy in PIPELINE:
            factor, _, _ = staged_terms(world, micro_batches(self.strategy, self.chunks), self.param_bytes)
            return (self.c0 + self.s * batch) * factor * r
        per_rank = batch / dp_size(self.strategy, world)
        per_rank = math.ceil(per_rank - 1e-9) if per_rank >= 1 else per_rank  # the slowest rank's slice
        return (self.c0 + self.s * per_rank) * r

    def step_s(self, world: int, batch: float, r: float, latency_s: float = 0.0, bandwidth: float = 0.0,
               crosses_nodes: bool = True) -> tuple[float, float, float, float]:
        """(step, compute, local comm, link) seconds."""
        comp = self.compute(world, batch, r)
        if self.strategy in PIPELINE:  # one stage per rank: the messages on the critical path
            _, nbytes, hops = staged_terms(world, micro_batches(self.strategy, self.chunks), self.param_bytes)
            local = self.kappa * nbytes * r
            wire = (latency_s * hops + (nbytes / bandwidth if bandwidth > 0 else 0.0)) if crosses_nodes else 0.0
            return comp + local + wire, comp, local, wire
        nbytes = self.param_bytes * pattern(self.strategy, world)
        local = self.kappa * nbytes * comm_contention(self.strategy, r, self.busy) + \
            (self.serial_s * r if world > 1 else 0.0)
        wire = link_s(self.strategy, world, self.chunks, nbytes, latency_s, bandwidth) if crosses_nodes else 0.0
        return comp + local + wire, comp, local, wire

    def bubble(self, world: int, batch: float, r: float) -> float:
        """Seconds of the step a stage idles, (K-1)/(M+K-1) of the staged compute (0 for the others)."""
        if self.strategy not in PIPELINE:
            return 0.0
        m = micro_batches(self.strategy, self.chunks)
        return self.compute(world, batch, r) * (world - 1) / (m + world - 1)


def _lstsq2(rows: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Least squares for y = a*u + b*v over rows (u, v, y); None when singular."""
    suu = sum(u * u for u, _, _ in rows)
    svv = sum(v * v for _, v, _ in rows)
    suv = sum(u * v for u, v, _ in rows)
    suy = sum(u * y for u, _, y in rows)
    svy = sum(v * y for _, v, y in rows)
    det = suu * svv - suv * suv
    if abs(det) < 1e-12 * max(suu * svv, 1e-30):
        return None
    return (suy * svv - svy * suv) / det, (svy * suu - suy * suv) / det


def fit_busy(points: list[Point]) -> float:
    """The fraction of a step a rank keeps its core busy, from the multi-rank runs that did not
    share cores (1 < W <= cores): ranks that wait in communication leave CPU to the others, so
    W ranks on C cores slow each other by W x busy / C, not W / C. 1 where nothing was measured."""
    seen = [p.busy for p in points if p.busy is not None and 1 < p.world <= p.cores]
    return min(1.0, statistics.median(seen)) if seen else 1.0


def fit_compute(points: list[Point], shape: float | None, busy: float = 1.0) -> tuple[float, float]:
    """c0, s from compute_s = (c0 + s*b) * r. With one batch size only, the split between the
    per-step and the per-sample part is borrowed: `shape` = c0 / (c0 + s * global batch)."""
    rows = [(contention(p.world, p.cores, busy), p.samples, p.compute_s) for p in points
            if p.compute_s is not None and p.samples > 0]
    if len({b for _, b, _ in rows}) >= 2:
        solved = _lstsq2([(r, r * b, c) for r, b, c in rows])
        if solved is not None and solved[0] >= 0 and solved[1] > 0:
            return solved
        # Non-negative least squares: the best fit lies on an edge, all per-step (s = 0) or all
        # per-sample (c0 = 0). A rank with more cores runs more threads, so a per-rank compute
        # that does not shrink with its slice is common on a small machine: keep the better edge.
        per_step = sum(c * r for r, _, c in rows) / sum(r * r for r, _, _ in rows)
        per_sample = sum(c * r * b for r, b, c in rows) / sum((r * b) ** 2 for r, b, _ in rows)
        err_step = sum((c - per_step * r) ** 2 for r, _, c in rows)
        err_sample = sum((c - per_sample * r * b) ** 2 for r, b, c in rows)
        return (per_step, 0.0) if err_step < err_sample else (0.0, per_sample)
    if not rows:
        return 0.0, 0.0
    phi, batch = shape or 0.0, points[0].global_batch
    whole = statistics.mean(c / (r * (phi + (1 - phi) * b / batch)) for r, b, c in rows)  # c0 + s * batch
    return phi * whole, (1 - phi) * whole / batch


def _shape(c0: float, s: float, batch: int) -> float:
    return c0 / (c0 + s * batch) if c0 + s * batch > 0 else 0.0


def fit_thread_gain(points: list[Point]) -> float:
    """g in "compute on t threads costs t**-g of one thread's", from staged runs that log each
    stage's compute: their sum is the whole model's compute on that many threads (mp at N=1 runs
    it on every core, at N=2 each stage on one). Only runs that did not share cores (W <= cores).
    The median over strategies and thread pairs; 0 (threads change nothing) where none was measured."""
    gains = []
    by: dict[str, dict[int, list[float]]] = {}
    for p in points:
        if p.compute_sum_s and p.world <= p.cores:
            by.setdefault(p.strategy, {}).setdefault(p.threads, []).append(p.compute_sum_s)
    for runs in by.values():
        ts = sorted(runs)
        for lo, hi in zip(ts, ts[1:], strict=False):
            ratio = statistics.median(runs[lo]) / statistics.median(runs[hi])
            if ratio > 0:
                gains.append(max(0.0, math.log(ratio) / math.log(hi / lo)))
    return min(1.0, statistics.median(gains)) if gains else 0.0


def fit(points: list[Point], pooled_shape: float | None = None, thread_gain: float = 0.0) -> Fit:
    strategy = points[0].strategy
    chunks = points[0].chunks
    busy = fit_busy(points)
    if strategy in PIPELINE and registry.get(strategy).micro_batches:
        # In a pipeline's steady state every stage computes at once: they share the cores fully.
        # (Its measured busy fraction counts the bubble's idle slots, which the staged factor has.)
        busy = 1.0
    if strategy in PIPELINE:
        # Staged strategies: fit A (the whole model's compute) and kappa together on the step time,
        # with the boundary's activation bytes from what the busiest stage sent (registry traffic).
        multi = [p for p in points if p.world > 1]
        boundary = statistics.median([p.comm_bytes / pattern(strategy, p.world) for p in multi]) if multi else 0.0
        rows = []
        for p in points:
            r = contention(p.world, p.cores, busy) * p.threads ** -thread_gain  # A: one thread's compute
            factor, nbytes, hops = staged_terms(p.world, micro_batches(strategy, p.chunks), boundary)
            wire = (p.latency_s * hops + (nbytes / p.bandwidth if p.bandwidth > 0 else 0.0)) if p.nodes > 1 else 0.0
            rows.append((factor * r, nbytes * r, p.step_s - wire))
        solved = _lstsq2(rows) if len(rows) >= 2 else None
        if solved is None or solved[0] <= 0 or solved[1] < 0:  # one point, or an edge: compute alone
            solved = (sum(u * y for u, _, y in rows) / sum(u * u for u, _, _ in rows), 0.0)
        a, kappa = solved
        return Fit(strategy, 0.0, a / max(points[0].global_batch, 1), kappa, boundary, chunks, points, busy,
                   thread_gain=thread_gain)
    c0, s = fit_compute(points, pooled_shape, busy)
    multi = [p for p in points if p.world > 1]
    pb = statistics.median([p.comm_bytes / pattern(strategy, p.world) for p in multi]) if multi else 0.0
    serial = statistics.median([p.serial_s for p in multi]) if multi else 0.0
    tmp = Fit(strategy, c0, s, 0.0, pb, chunks, points, busy, serial)
    num = den = 0.0
    for p in multi:
        r = tmp.contention(p.world, p.cores)
        _, comp, serial_part, wire = tmp.step_s(p.world, p.global_batch, r, p.latency_s, p.bandwidth, p.nodes > 1)
        x = pb * pattern(strategy, p.world) * comm_contention(strategy, r, busy)
        num += (p.step_s - comp - serial_part - wire) * x  # kappa is 0 in tmp: its local comm is the serial part
        den += x * x
    tmp.kappa = max(num / den, 0.0) if den > 0 else 0.0
    return tmp


def fit_all(points: list[Point]) -> dict[str, Fit]:
    by: dict[str, list[Point]] = {}
    for p in points:
        if p.strategy in PROJECTED:
            by.setdefault(p.strategy, []).append(p)
    # The compute split (per step / per sample) of strategies measured at several slice sizes,
    # for those measured at one only. An edge fit (all per step) says nothing of the split: skipped.
    shapes = []
    for strategy, pts in by.items():
        if strategy not in PIPELINE and len({p.samples for p in pts if p.compute_s}) >= 2:
            c0, s = fit_compute(pts, None, fit_busy(pts))
            if s > 0:
                shapes.append(_shape(c0, s, pts[0].global_batch))
    pooled = statistics.median(shapes) if shapes else None
    gain = fit_thread_gain([p for pts in by.values() for p in pts])
    return {strategy: fit(pts, pooled, gain) for strategy, pts in by.items()}


def predict_here(f: Fit, nodes: int, procs: int, cores: int, batch: int, latency_s: float = 0.0,
                 bandwidth: float = 0.0) -> float:
    """Step time of `nodes` simulated nodes on this machine (all ranks share its cores)."""
    world = nodes * procs
    return f.step_s(world, batch, f.slowdown(world, cores), latency_s, bandwidth, nodes > 1)[0]


def node_counts(max_nodes: int) -> list[int]:
    counts, n = [], 1
    while n <= max_nodes:
        counts.append(n)
        n *= 2
    if counts[-1] != max_nodes:
        counts.append(max_nodes)
    return counts


def project(f: Fit, nodes: int, procs: int, cores: int, batch: int, scaling: str, latency_s: float,
            bandwidth: float) -> dict:
    """One CSV row: the cluster of `nodes` machines like this one, on the given link."""
    world = nodes * procs
    r = f.slowdown(procs, cores)  # each node has its own cores
    per_rank = batch / dp_size(f.strategy, procs) if scaling == "weak" else None
    gbatch = per_rank * dp_size(f.strategy, world) if per_rank is not None else batch
    step, comp, local, wire = f.step_s(world, gbatch, r, latency_s, bandwidth, nodes > 1)
    one = f.compute(procs, batch, r) if f.strategy not in PIPELINE else f.compute(1, batch, r)
    base_thr = batch / one if one > 0 else math.nan
    thr = gbatch / step if step > 0 else math.nan
    note = ""
    blocks = MODEL_BLOCKS.get(f.points[0].model if f.points else "", 10**9)
    if f.strategy in PIPELINE and world > blocks:
        note = f"more stages than the model's {blocks} blocks: not runnable"
    elif gbatch / dp_size(f.strategy, world) < 1:
        note = "fewer than one sample per rank (strong scaling past the global batch)"
    return {"strategy": f.strategy, "nodes": nodes, "world_size": world, "global_batch": round(gbatch, 3),
            "step_s": step, "compute_s": comp, "bubble_s": f.bubble(world, gbatch, r), "local_comm_s": local,
            "link_s": wire,
            "comm_bytes": f.param_bytes * pattern(f.strategy, world), "throughput": thr,
            "efficiency": thr / (nodes * base_thr) if base_thr == base_thr else math.nan, "note": note}


# ---- command line -------------------------------------------------------------------------

def held_out_check(points: list[Point]) -> list[tuple[str, int, float, float]]:
    """Per strategy with 2+ node counts: fit without the largest, predict it.
    (strategy, nodes, measured, predicted); with repeats, measured is their median."""
    out = []
    by: dict[str, list[Point]] = {}
    for p in points:
        by.setdefault(p.strategy, []).append(p)
    train = [p for p in points if p.nodes < max(q.nodes for q in by[p.strategy])]
    fits = fit_all(train)
    for strategy, pts in by.items():
        if strategy not in fits or len({p.nodes for p in pts}) < 2:
            continue
        top = max(p.nodes for p in pts)
        held = [p for p in pts if p.nodes == top]
        last = held[0]
        pred = predict_here(fits[strategy], last.nodes, last.procs, last.cores, last.global_batch,
                            last.latency_s, last.bandwidth)
        out.append((strategy, top, statistics.median(p.step_s for p in held), pred))
    return out


def plot(rows: list[dict], points: list[Point], fits: dict[str, Fit], path: str, link: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, strategy in enumerate(sorted(fits)):
        color = f"C{i}"
        mine = [r for r in rows if r["strategy"] == strategy and not r["note"]]
        ax1.plot([r["nodes"] for r in mine], [r["throughput"] for r in mine], "-", color=color,
                 label=f"{strategy}: projected, {link}")
        ax2.plot([r["nodes"] for r in mine], [r["efficiency"] for r in mine], "-", color=color, label=strategy)
        pts = sorted((p for p in points if p.strategy == strategy), key=lambda p: p.nodes)
        if pts:
            f = fits[strategy]
            here = [predict_here(f, p.nodes, p.procs, p.cores, p.global_batch, p.latency_s, p.bandwidth)
                    for p in pts]
            ax1.plot([p.nodes for p in pts], [p.global_batch / p.step_s for p in pts], "o", color=color,
                     label=f"{strategy}: measured here")
            modelled = [p.global_batch / t for p, t in zip(pts, here, strict=True)]
            ax1.plot([p.nodes for p in pts], modelled, ":", color=color, label=f"{strategy}: model on this machine")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("samples / s")
    ax1.set_title("throughput (points: measured, oversubscribed CPU included)")
    ax2.set_ylabel("efficiency = throughput / (nodes x 1-node compute throughput)")
    ax2.set_title(f"projected scaling efficiency on {link}")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Projection:
    """A sweep's projection to a cluster: one row per (strategy, node count), and the held-out check."""
    rows: list[dict]
    fits: dict[str, Fit]
    points: list[Point]
    link: str
    latency_s: float
    bandwidth: float
    scaling: str
    checks: list[tuple[str, int, float, float]]  # (strategy, held-out nodes, measured, predicted)
    check_note: str  # why there is no check ("" when there is one)


def link_of(link: str, latency_us: float = -1.0, bandwidth_gbps: float = -1.0) -> tuple[float, float]:
    """(latency s, bandwidth bytes/s) of a link preset of config.LINKS, with overrides (-1: the preset's)."""
    if link not in LINKS:
        raise ConfigError(f"unknown link {link!r}: choose from {', '.join(LINKS)}")
    for name, value in (("latency_us", latency_us), ("bandwidth_gbps", bandwidth_gbps)):
        if value < 0 and value != -1.0:
            raise ConfigError(f"invalid {name} {value!r}: must be >= 0")
    return link_wire(link, latency_us, bandwidth_gbps)


def project_sweep(sweep_dir: str, link: str = PROJECTED_LINK, max_nodes: int = MAX_NODES, latency_us: float = -1.0,
                  bandwidth_gbps: float = -1.0, procs_per_node: int = 0, scaling: str = "") -> Projection:
    """Fit the sweep's COMPLETED runs and project every fitted strategy to 1..max_nodes nodes.
    Raises ConfigError (bad input: one line, exit 2) before anything is written."""
    latency_s, bandwidth = link_of(link, latency_us, bandwidth_gbps)
    if max_nodes < 1:
        raise ConfigError(f"invalid max-nodes {max_nodes}: must be >= 1")
    if scaling not in ("", *SCALINGS):  # before reading: a bad flag leaves even the cache unwritten
        raise ConfigError(f"invalid scaling {scaling!r}: choose {' or '.join(SCALINGS)}")
    points = load_points(sweep_dir) if completed(sweep_dir) else []
    if not points:
        raise ConfigError(f"no COMPLETED experiment in {sweep_dir}: nothing to fit")
    fits = fit_all(points)
    if not fits:
        raise ConfigError(f"nothing to project in {sweep_dir}: no COMPLETED experiment of a projected strategy "
                          f"({', '.join(PROJECTED)})")
    grid = read_json(os.path.join(sweep_dir, "sweep.json"))[0].get("grid") or {}
    scaling = scaling or grid.get("scaling", SCALINGS[0])
    rows = []
    for strategy, f in sorted(fits.items()):
        ref = min(f.points, key=lambda q: q.nodes)
        procs = procs_per_node or ref.procs
        batch = ref.global_batch if scaling == "strong" else ref.samples * dp_size(strategy, procs)
        for n in node_counts(max_nodes):
            rows.append({**project(f, n, procs, ref.cores, batch, scaling, latency_s, bandwidth),
                         "link": link, "scaling": scaling, "c0_s": f.c0, "s_per_sample": f.s,
                         "kappa_s_per_byte": f.kappa, "param_bytes": f.param_bytes})
    checks, note = checked(points)
    return Projection(rows, fits, points, link, latency_s, bandwidth, scaling, checks, note)


def checked(points: list[Point]) -> tuple[list[tuple[str, int, float, float]], str]:
    """The held-out check, or why there is none: a sweep with fewer than three node counts would
    fit the model on one point and 'check' it on the other."""
    counts = sorted({p.nodes for p in points})
    if len(counts) < 3:
        return [], (f"projection not checked: the sweep measured {len(counts)} node count(s) "
                    f"({', '.join(map(str, counts))}); a check needs three (fit on two, predict the third)")
    return held_out_check(points), ""


def for_advice(sweep_dir: str, link: str, max_nodes: int) -> Projected:
    """The projection as analysis.advise takes it (bin/advise passes this function in)."""
    proj = project_sweep(sweep_dir, link, max_nodes)
    errors = {s: (pred - measured) / measured for s, _, measured, pred in proj.checks if measured > 0}
    held = max((n for _, n, _, _ in proj.checks), default=None)
    procs = min(proj.points, key=lambda q: q.nodes).procs
    return Projected(proj.rows, errors, held, proj.check_note, procs)


def main(argv: list[str] | None = None) -> int:
    from analysis.sweepstate import refuse_args  # a sweep without a COMPLETED experiment: one line, exit 1

    if (code := refuse_args("project", argv)) is not None:
        return code
    p = OneLineParser(prog="analysis.projection", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default="", help="sweep name under --logs (default: the latest)")
    p.add_argument("--logs", default=LOGS)
    p.add_argument("--link", default=PROJECTED_LINK, help=f"link to project on: {', '.join(LINKS)}")
    p.add_argument("--latency-us", default="-1", help="override the link's latency")
    p.add_argument("--bandwidth-gbps", default="-1", help="override the link's bandwidth")
    p.add_argument("--max-nodes", default=str(MAX_NODES), help=f"largest node count (default: {MAX_NODES})")
    p.add_argument("--procs-per-node", default="0", help="ranks per node (default: the sweep's)")
    p.add_argument("--scaling", default="", help="strong or weak (default: the sweep's)")
    p.add_argument("--no-plot", action="store_true")
    try:
        args = p.parse_args(argv)
        latency_us, bandwidth_gbps = number("latency-us", args.latency_us), number("bandwidth-gbps",
                                                                                   args.bandwidth_gbps)
        max_nodes = positive_int("max-nodes", args.max_nodes)
        procs = 0 if args.procs_per_node == "0" else positive_int("procs-per-node", args.procs_per_node)
        if args.sweep:
            check_name("sweep name", args.sweep)
        try:
            sweep_dir = find_sweep(args.logs, args.sweep or None)
        except AnalysisError as e:
            raise ConfigError(str(e)) from None
        proj = project_sweep(sweep_dir, args.link, max_nodes, latency_us, bandwidth_gbps, procs, args.scaling)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, fits = proj.rows, proj.fits
    out_csv = os.path.join(sweep_dir, "projection.csv")
    with open(out_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"projection of {os.path.basename(sweep_dir)} on {args.link} ({proj.latency_s * 1e6:g} us, "
          f"{proj.bandwidth * 8 / 1e9:g} Gbit/s), {proj.scaling} scaling: {out_csv}")
    for strategy, f in sorted(fits.items()):
        print(f"  {strategy}: c0 {f.c0 * 1e3:.3f} ms, {f.s * 1e6:.2f} us/sample, kappa {f.kappa * 1e9:.3f} ns/byte, "
              f"P {f.param_bytes / 1e6:.2f} MB; measured at nodes {sorted({q.nodes for q in f.points})}")
        for n in (64, 1024):
            row = next((r for r in rows if r["strategy"] == strategy and r["nodes"] == n), None)
            if row:
                print(f"    {n} nodes: efficiency {row['efficiency']:.3f}, step {row['step_s'] * 1e3:.2f} ms"
                      + (f" ({row['note']})" if row["note"] else ""))
    for strategy, n, measured, pred in proj.checks:
        print(f"  check {strategy}: fitted without {n} nodes, predicts {pred * 1e3:.2f} ms, measured "
              f"{measured * 1e3:.2f} ms ({(pred - measured) / measured:+.1%})")
    if proj.check_note:
        print(f"  {proj.check_note}")
    if not args.no_plot:
        os.makedirs(os.path.join(sweep_dir, "plots"), exist_ok=True)
        path = os.path.join(sweep_dir, "plots", "projection.png")
        plot(rows, proj.points, fits, path, args.link)
        print(f"  plot: {path}")
    return 0


def number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"invalid {name} {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"invalid {name} {text!r}: expected a finite number")
    return value


if __name__ == "__main__":
    sys.exit(main())
