"""Fitting the step-time model to a sweep's measured points, and checking it on a node count
it was not fitted on."""

from __future__ import annotations

import math
import statistics

from analysis.projection.model import (
    Fit,
    comm_contention,
    contention,
    micro_batches,
    pattern,
    predict_here,
    projected,
    staged_per_rank,
    staged_terms,
)
from analysis.projection.points import Point
from contract import registry


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
    rows = [(contention(p.world, p.cores, busy), p.work, p.compute_s) for p in points
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
    staged = staged_per_rank(strategy)
    if staged and registry.get(strategy).micro_batches:
        # In a pipeline's steady state every stage computes at once: they share the cores fully.
        # (Its measured busy fraction counts the bubble's idle slots, which the staged factor has.)
        busy = 1.0
    if staged:
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
    settings = points[0].settings  # one series: one value of each of the strategy's settings
    # P per payload: a localsgd point's bytes and step are means over its sync period (points.py), and
    # the pattern averages the syncs over the steps the same way, so P is the parameter bytes at any H.
    # (a mixture's pattern is its dp traffic: 0 where its tp x pp fills the world)
    sending = [(p, pattern(strategy, p.world, settings)) for p in multi]
    pb = statistics.median([p.comm_bytes / x for p, x in sending if x > 0] or [0.0])
    serial = statistics.median([p.serial_s for p in multi]) if multi else 0.0
    if not any(p.compute_s for p in points):
        return _fit_on_steps(Fit(strategy, 0.0, 1.0, 0.0, pb, chunks, points, busy, serial, settings=settings))
    tmp = Fit(strategy, c0, s, 0.0, pb, chunks, points, busy, serial, settings=settings)
    num = den = 0.0
    for p in multi:
        r = tmp.contention(p.world, p.cores)
        _, comp, serial_part, wire = tmp.step_s(p.world, p.global_batch, r, p.latency_s, p.bandwidth, p.nodes > 1)
        x = pb * pattern(strategy, p.world, settings) * comm_contention(strategy, r, busy)
        num += (p.step_s - comp - serial_part - wire) * x  # kappa is 0 in tmp: its local comm is the serial part
        den += x * x
    tmp.kappa = max(num / den, 0.0) if den > 0 else 0.0
    return tmp


def _fit_on_steps(f: Fit) -> Fit:
    """A data-parallel series whose runs log no compute time (a layout with a pipeline times no
    compute apart): s (c0 = 0) and kappa together, least squares on the step time. `f`: s = 1, kappa 0."""
    rows = []
    for p in f.points:
        r = f.contention(p.world, p.cores)
        _, unit, serial_part, wire = f.step_s(p.world, p.global_batch, r, p.latency_s, p.bandwidth, p.nodes > 1)
        x = f.param_bytes * pattern(f.strategy, p.world, f.settings) * comm_contention(f.strategy, r, f.busy)
        rows.append((unit, x, p.step_s - serial_part - wire))
    solved = _lstsq2(rows) if len(rows) >= 2 else None
    if solved is None or solved[0] <= 0 or solved[1] < 0:  # one point, or an edge: compute alone
        solved = (sum(u * y for u, _, y in rows) / sum(u * u for u, _, _ in rows), 0.0)
    f.s, f.kappa = solved
    return f


def fit_all(points: list[Point]) -> dict[str, Fit]:
    by: dict[str, list[Point]] = {}
    for p in points:
        if projected(p.strategy):
            by.setdefault(p.series, []).append(p)
    # The compute split (per step / per sample) of strategies measured at several slice sizes,
    # for those measured at one only. An edge fit (all per step) says nothing of the split: skipped.
    shapes = []
    for pts in by.values():
        if not staged_per_rank(pts[0].strategy) and len({p.work for p in pts if p.compute_s}) >= 2:
            c0, s = fit_compute(pts, None, fit_busy(pts))
            if s > 0:
                shapes.append(_shape(c0, s, pts[0].global_batch))
    pooled = statistics.median(shapes) if shapes else None
    gain = fit_thread_gain([p for pts in by.values() for p in pts])
    return {series: fit(pts, pooled, gain) for series, pts in by.items()}


def held_out_check(points: list[Point]) -> list[tuple[str, int, float, float]]:
    """Per series (a strategy at its settings) with 2+ node counts: fit without the largest, predict it.
    (series, nodes, measured, predicted); with repeats, measured is their median."""
    out = []
    by: dict[str, list[Point]] = {}
    for p in points:
        by.setdefault(p.series, []).append(p)
    train = [p for p in points if p.nodes < max(q.nodes for q in by[p.series])]
    fits = fit_all(train)
    for series, pts in by.items():
        if series not in fits or len({p.nodes for p in pts}) < 2:
            continue
        top = max(p.nodes for p in pts)
        held_out = [p for p in pts if p.nodes == top]
        last = held_out[0]
        pred = predict_here(fits[series], last.nodes, last.procs, last.cores, last.global_batch,
                            last.latency_s, last.bandwidth)
        out.append((series, top, statistics.median(p.step_s for p in held_out), pred))
    return out


def checked(points: list[Point]) -> tuple[list[tuple[str, int, float, float]], str]:
    """The held-out check, or why there is none: a sweep with fewer than three node counts would
    fit the model on one point and 'check' it on the other."""
    counts = sorted({p.nodes for p in points})
    if len(counts) < 3:
        return [], (f"projection not checked: the sweep measured {len(counts)} node count(s) "
                    f"({', '.join(map(str, counts))}); a check needs three (fit on two, predict the third)")
    return held_out_check(points), ""
