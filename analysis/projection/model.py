"""The step-time model and what it predicts: a fitted `Fit` per strategy, the step time on this
machine (`predict_here`) and on a cluster of such machines (`project`, one CSV row).

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
    Both per step, averaged over steps at a fit's settings: localsgd's are ddp's x syncs = (1 + averaged
    optimizer-state tensors) / H (its points are means over a sync period: points.py).
    Pipelines: compute = A (M+K-1)/(M K) * r, A the whole model's compute per step, K stages,
    M micro-batches: the bubble (K-1)/(M+K-1) idles each stage.

c0, s come from the measured `compute_s` (least squares over the node counts; a strategy with
one slice size borrows the others' split between c0 and s), kappa from the rest of the measured step time.
On the projected cluster every node is this machine (r = max(1, procs x busy / cores)); on this
machine r grows with the ranks, which is how NODES=4 on 2 cores is predicted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis import layouts
from analysis.projection.points import Point
from contract import registry
from contract.errors import ConfigError
from contract.tables import LINKS, MODEL_BLOCKS, link_wire


def projected(strategy: str) -> bool:
    """Whether the projection fits and extrapolates the strategy (the registry's flag, asked per call)."""
    return registry.get(strategy).projected


def staged_per_rank(strategy: str) -> bool:
    """A staged strategy with one stage per rank (mp, pipeline): the staged model. A layout with
    degrees (tp x pp x dp) keeps its pp over the node counts: the data-parallel model, its bubble
    a constant share of its compute."""
    record = registry.get(strategy)
    return record.kind == "staged" and not record.stage_replicas and not layouts.lays_out_degrees(strategy)


PROJECTED = registry.names(projected=True)
PIPELINE = tuple(s for s in PROJECTED if staged_per_rank(s))  # one stage per rank


def dp_size(strategy: str, world: int, settings: Mapping[str, Any] | None = None) -> int:
    """Data-parallel ranks on `world` ranks at these settings (analysis/layouts.py: mix's world / (tp x pp))."""
    return layouts.dp_at(strategy, 1, world, settings or {})


def pattern(strategy: str, world: int, settings: Mapping[str, Any] | None = None) -> float:
    """bytes(W) / P per step: how the bottleneck rank's traffic grows with the ranks (the registry's),
    averaged over steps at these settings (localsgd: one sync of P-sized payloads every H steps)."""
    return registry.get(strategy).comm_bytes(world, 1.0, settings)


def messages(strategy: str, world: int, chunks: int, settings: Mapping[str, Any] | None = None) -> float:
    return registry.get(strategy).comm_messages(world, chunks, settings)


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
    record = registry.get(strategy)
    if record.computing_ranks == "workers":
        return 1.0
    return r / busy if r > 1.0 and record.kind == "replicas" else r


def link_s(strategy: str, world: int, chunks: int, nbytes: float, latency_s: float, bandwidth: float,
           settings: Mapping[str, Any] | None = None) -> float:
    transfer = nbytes / bandwidth if bandwidth > 0 else 0.0
    return latency_s * messages(strategy, world, chunks, settings) + transfer


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
    settings: dict[str, Any] = field(default_factory=dict)  # the strategy's own settings (its points')

    @property
    def series(self) -> str:
        """The strategy with its settings off their defaults (points.Point.series): a row's name."""
        return self.points[0].series if self.points else self.strategy

    def contention(self, ranks_on_machine: int, cores: int) -> float:
        return contention(ranks_on_machine, cores, self.busy)

    def slowdown(self, ranks_on_machine: int, cores: int) -> float:
        """r of step_s: time sharing, and for staged strategies the threads each rank gets (their
        A is one thread's; the CPU plan gives a rank cores // ranks threads)."""
        threads = max(1, cores // max(ranks_on_machine, 1))
        return self.contention(ranks_on_machine, cores) * threads ** -self.thread_gain

    def compute(self, world: int, batch: float, r: float) -> float:
        if staged_per_rank(self.strategy):
            factor, _, _ = staged_terms(world, micro_batches(self.strategy, self.chunks), self.param_bytes)
            return (self.c0 + self.s * batch) * factor * r
        per_rank = batch / dp_size(self.strategy, world, self.settings)
        per_rank = math.ceil(per_rank - 1e-9) if per_rank >= 1 else per_rank  # the slowest rank's slice
        work = per_rank / layouts.tp_at(self.strategy, world, self.settings)  # Point.work: 1/tp of the slice
        return (self.c0 + self.s * work) * r

    def step_s(self, world: int, batch: float, r: float, latency_s: float = 0.0, bandwidth: float = 0.0,
               crosses_nodes: bool = True) -> tuple[float, float, float, float]:
        """(step, compute, local comm, link) seconds."""
        comp = self.compute(world, batch, r)
        if staged_per_rank(self.strategy):  # one stage per rank: the messages on the critical path
            _, nbytes, hops = staged_terms(world, micro_batches(self.strategy, self.chunks), self.param_bytes)
            local = self.kappa * nbytes * r
            wire = (latency_s * hops + (nbytes / bandwidth if bandwidth > 0 else 0.0)) if crosses_nodes else 0.0
            return comp + local + wire, comp, local, wire
        nbytes = self.param_bytes * pattern(self.strategy, world, self.settings)
        local = self.kappa * nbytes * comm_contention(self.strategy, r, self.busy) + \
            (self.serial_s * r if world > 1 else 0.0)
        wire = link_s(self.strategy, world, self.chunks, nbytes, latency_s, bandwidth, self.settings) \
            if crosses_nodes else 0.0
        return comp + local + wire, comp, local, wire

    def bubble(self, world: int, batch: float, r: float) -> float:
        """Seconds of the step a stage idles, (K-1)/(M+K-1) of the staged compute (0 for the others)."""
        if not staged_per_rank(self.strategy):
            return 0.0
        m = micro_batches(self.strategy, self.chunks)
        return self.compute(world, batch, r) * (world - 1) / (m + world - 1)


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
    dp = dp_size(f.strategy, world, f.settings)
    per_rank = batch / dp_size(f.strategy, procs, f.settings) if scaling == "weak" else None
    gbatch = per_rank * dp if per_rank is not None else batch
    step, comp, local, wire = f.step_s(world, gbatch, r, latency_s, bandwidth, nodes > 1)
    one = f.compute(procs, batch, r) if not staged_per_rank(f.strategy) else f.compute(1, batch, r)
    base_thr = batch / one if one > 0 else math.nan
    thr = gbatch / step if step > 0 else math.nan
    note = ""
    blocks = MODEL_BLOCKS.get(f.points[0].model if f.points else "", 10**9)
    if staged_per_rank(f.strategy) and world > blocks:
        note = f"more stages than the model's {blocks} blocks: not runnable"
    elif gbatch / dp < 1:
        note = "fewer than one sample per rank (strong scaling past the global batch)"
    return {"strategy": f.strategy, "series": f.series, "nodes": nodes, "world_size": world,
            "global_batch": round(gbatch, 3),
            "step_s": step, "compute_s": comp, "bubble_s": f.bubble(world, gbatch, r), "local_comm_s": local,
            "link_s": wire,
            "comm_bytes": f.param_bytes * pattern(f.strategy, world, f.settings), "throughput": thr,
            "efficiency": thr / (nodes * base_thr) if base_thr == base_thr else math.nan, "note": note}


def link_of(link: str, latency_us: float = -1.0, bandwidth_gbps: float = -1.0) -> tuple[float, float]:
    """(latency s, bandwidth bytes/s) of a link preset of config.LINKS, with overrides (-1: the preset's)."""
    if link not in LINKS:
        raise ConfigError(f"unknown link {link!r}: choose from {', '.join(LINKS)}")
    for name, value in (("latency_us", latency_us), ("bandwidth_gbps", bandwidth_gbps)):
        if value < 0 and value != -1.0:
            raise ConfigError(f"invalid {name} {value!r}: must be >= 0")
    return link_wire(link, latency_us, bandwidth_gbps)
