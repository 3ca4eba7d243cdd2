"""The strategy registry: every fact about a strategy, in one record. Torch-free.

Every other module asks this one: the config (stages, data-parallel ranks, layout rules), the
grid (which points can never run), the Slurm templates (default layout), the projection (how
traffic grows with the ranks), the analysis (which axes apply) and the docs' strategy table
(a test compares them). No other module lists strategy names or groups them.

What a rank holds is in bytes, from the parameter count of the model (or, for a staged
strategy, of the rank's stage): torch autocast keeps fp32 weights, gradients and optimizer
state whatever the compute precision, so precision does not change these figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.tables import TP_WIDTHS

KINDS = ("one-process", "replicas", "sharded", "staged", "tensor", "mixture")
FP32 = 4  # bytes per parameter, gradient or optimizer-state element (autocast keeps fp32 storage)
OPTIMIZER_STATES = {"sgd": 1, "adam": 2}  # fp32 tensors per parameter: momentum; exp_avg + exp_avg_sq


@dataclass(frozen=True)
class Held:
    """Bytes one rank holds of the training state."""
    param_bytes: int
    grad_bytes: int
    optim_bytes: int

    @property
    def total(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optim_bytes


@dataclass(frozen=True)
class Layout:
    """A grid point's shape, as the registry's rules see it."""
    nodes: int
    procs: int
    stages: int = 1  # the stage count the strategy would run (Strategy.stages)
    blocks: int = 10**9  # blocks of the model
    gpus: int | None = None  # GPUs on a node, where known
    model: str = ""  # the model's name, where the strategy takes only some (tp)
    tp: int = 1  # tensor-parallel ranks of a mixture (mix)

    @property
    def world(self) -> int:
        return self.nodes * self.procs


@dataclass(frozen=True)
class Payloads:
    """What one mix rank's three kinds of traffic carry in a step (trainers/mix.py measures them)."""
    tp: float  # bytes its stage's TP collectives carry: collective_elements x its replica's samples x 4
    collectives: int  # TP collectives per micro-batch (forward and backward)
    boundary: float  # activations it sends forward plus gradients it sends back, every micro-batch
    sends: int  # boundaries it sends across per micro-batch: 0 (one stage), 1 (first, last) or 2
    stage: float  # bytes of its stage's parameters after the TP cut, before any dp sharding
    units: int = 1  # fully_shard groups of its stage (shard full)


def _shard(n: int, world: int) -> int:
    """Elements of one rank's share when `n` are split over `world` ranks (the largest share)."""
    return -(-n // max(world, 1))


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # one of KINDS
    summary: str  # one line: what it is (the docs' table, the sbatch header)
    runs_on: str  # where it makes sense to run it (the docs' table)
    sbatch_nodes: int = 1  # default layout of the committed slurm/<name>.sbatch
    sbatch_procs: int = 1
    sbatch_directives: tuple[str, ...] = ()
    micro_batches: bool = False  # cuts each replica's batch into CHUNKS (the chunks axis applies)
    scheduled: bool = False  # takes --schedule gpipe|1f1b
    projected: bool = False  # the scaling projection fits and extrapolates it
    # bytes(W, P) / P and messages(W, M) per step, for the rank that sends most; P: gradient bytes
    # (collectives, server) or one stage boundary's activation bytes (pipelines); M: micro-batches.
    traffic: Callable[[int], float] = field(default=lambda w: 0.0)
    messages: Callable[[int, int], int] = field(default=lambda w, m: 0)
    min_world: int = 1
    max_world: int | None = None  # one-process strategies: 1
    min_gpus: int = 0
    computing_ranks: str = "all"  # "all", or "workers" (rank 0 serves, computes no samples)
    batchnorm_note: str | None = None  # how its batch split changes BatchNorm's maths (None: it does not)
    shards: tuple[str, ...] = ()  # what is split over the data-parallel ranks: params, grads, optim
    # Communication buffers, bytes: (parameter elements of the rank's model or stage, elements of
    # the largest unit gathered at once, bytes of one micro-batch at a stage boundary).
    buffers: Callable[[int, int, float], float] = field(default=lambda n, unit, boundary: 0.0)
    stage_replicas: bool = False  # staged: ranks beyond the stages form data-parallel replicas (hybrid)
    stage_setting: str = "stages"  # the config field asking for a stage count (mix: pp)
    default_stages: Callable[[int, int], int] = field(default=lambda nodes, procs: nodes * procs)
    no_fp16: str = ""  # why it refuses fp16 (GradScaler's loss scaling); empty: it takes fp16
    no_recompute: str = ""  # why it refuses --recompute (its own recomputation); empty: it takes it
    models: tuple[str, ...] = ()  # the only models it takes (empty: every model)
    settings: tuple[str, ...] = ()  # config settings only this strategy takes (the others' identity leaves them out)
    # Whether a step computes single's update on the global batch (BatchNorm aside), given the settings
    # (a config's fields, as a mapping; a missing one reads as its default). False: judge it by accuracy.
    maths: Callable[[Mapping[str, Any]], bool] = field(default=lambda settings: True)
    # Payloads of `traffic` sent per step, averaged over steps (localsgd: one average every H steps).
    syncs: Callable[[Mapping[str, Any]], float] = field(default=lambda settings: 1.0)
    # Whether a run repeats bit for bit at these settings (asyncps with S > 0: which server version a worker
    # computes on depends on timing). The report says so where a sweep holds such a run.
    reproducible: Callable[[Mapping[str, Any]], bool] = field(default=lambda settings: True)
    # Parameter-sized fp32 tensors of further training state, counted as optimizer state (DiLoCo's outer step).
    extra_state: Callable[[Mapping[str, Any]], int] = field(default=lambda settings: 0)

    # ---- layout -------------------------------------------------------------------------
    def stages(self, nodes: int, procs: int, requested: int = 0) -> int:
        """Pipeline stages at this layout (1 where the model is not cut)."""
        if self.kind == "mixture":
            return max(requested, 1)
        if self.kind != "staged":
            return 1
        return requested or self.default_stages(nodes, procs)

    def dp_size(self, nodes: int, procs: int, stages: int = 1, tp: int = 1) -> int:
        """Ranks that each read a different slice of the global batch (a mixture: world / (pp x tp))."""
        world = nodes * procs
        if self.kind == "mixture":
            return max(world // max(stages * tp, 1), 1)
        if self.kind in ("one-process", "tensor"):
            return 1
        if self.kind == "staged":
            return max(world // max(stages, 1), 1) if self.stage_replicas else 1
        if self.computing_ranks == "workers":
            return max(world - 1, 1)
        return world

    def refusal(self, layout: Layout) -> str | None:
        """Why this strategy can never run at `layout` (a property of the strategy, not bad
        input: a sweep skips such points and says why); None when it can."""
        w = layout.world
        if self.max_world is not None and w > self.max_world:
            return f"{self.name} runs in one process; it is measured at 1 node x 1 proc only"
        if w < self.min_world:
            return f"{self.name} needs at least {self.min_world} ranks ({self.summary_short}), got {w}"
        if self.min_gpus and layout.gpus is not None and layout.gpus < self.min_gpus:
            return f"{self.name} needs at least {self.min_gpus} GPUs on the node; the node has {layout.gpus}"
        if self.kind in ("staged", "mixture") and layout.stages > layout.blocks:
            return f"{self.name} needs {layout.stages} stages here; the model has {layout.blocks} blocks"
        if self.models and layout.model and layout.model not in self.models:
            return f"{self.name} cuts only the models {', '.join(self.models)}, not {layout.model}"
        if self.kind == "mixture":
            return self._mixture_refusal(layout)
        widths = TP_WIDTHS.get(layout.model, ()) if self.kind == "tensor" else ()
        if any(n % w for n in widths):
            return (f"{self.name} needs the world size {w} to divide the heads and widths of "
                    f"{layout.model} ({', '.join(map(str, widths))})")
        return None

    def _mixture_refusal(self, layout: Layout) -> str | None:
        tp, pp, w = layout.tp, layout.stages, layout.world
        if w % (tp * pp):
            return f"{self.name} needs tp x pp ({tp} x {pp}) to divide the world size {w}"
        if tp > layout.procs:
            return f"{self.name} keeps each TP group inside a node: tp {tp} > {layout.procs} ranks per node"
        widths = TP_WIDTHS.get(layout.model, ())
        if any(n % tp for n in widths):
            return (f"{self.name} needs tp {tp} to divide the heads and widths of {layout.model} "
                    f"({', '.join(map(str, widths))})")
        return None

    @property
    def summary_short(self) -> str:
        return self.summary.split(":")[0]

    # ---- memory -------------------------------------------------------------------------
    def state_bytes(self, n_params: int, world: int, optimizer: str, precision: str = "fp32", rank: int = 0,
                    shapes: list[tuple[int, ...]] | None = None, settings: Mapping[str, Any] | None = None,
                    local: bool = False) -> Held:
        """Bytes of parameters, gradients and optimizer state on `rank` (the busiest rank of a
        sharded strategy). `n_params`: the elements of the model this rank builds (its stage's,
        for a staged strategy); `shapes`, where known, the shapes of its parameter tensors, so
        the shares are the trainers' own: ZeroRedundancyOptimizer gives whole tensors, largest
        first, to the rank holding least so far; FSDP2 cuts every tensor along dim 0. `settings`:
        the config's fields where they change the state (DiLoCo's outer step: `extra_state`). `local`
        (tp, mix): `shapes` are this rank's shards after the TP cut (replicated tensors whole), so the
        figures are exact instead of n/tp."""
        del precision  # autocast: fp32 storage for all three (see the module docstring)
        states = OPTIMIZER_STATES[optimizer]
        p = g = o = n_params
        if self.computing_ranks == "workers" and rank != 0:
            o = 0  # workers never step an optimizer: the server does
        share = _shard(n_params, world)
        if shapes and world > 1:
            share = (_fsdp_share(shapes, world) if "params" in self.shards else _greedy_share(shapes, world))
        if self.kind == "tensor":  # n/W: exact for the cut layers; the replicated norms, embedding, head undercounted
            p = g = o = sum(map(_numel, shapes)) if shapes and local else _shard(n_params, world)
        if self.kind == "mixture":  # n: the stage's elements; world: every rank (dp = world / (tp x pp))
            return _mixture_held(n_params, world, states, settings or {}, shapes if local else None)
        if "params" in self.shards:
            p = share
        if "grads" in self.shards:
            g = share
        if "optim" in self.shards:
            o = share
        return Held(FP32 * p, FP32 * g, FP32 * (states * o + self.extra_state(settings or {}) * n_params))

    def samples_in_flight(self, replica_batch: int, chunks: int, stages: int, schedule: str,
                          checkpoint: str = "never") -> tuple[float, float]:
        """(samples whose activations the busiest rank keeps at once, samples of which it keeps
        only the stage input): GPipe keeps every micro-batch until its backward, 1F1B at most as
        many as there are stages, torchgpipe's checkpointing only the stage inputs plus the one
        micro-batch being recomputed."""
        if not self.micro_batches:
            return float(replica_batch), 0.0
        micro = replica_batch / chunks
        if self.name == "gpipe" and checkpoint != "never":
            return micro, replica_batch - micro
        if self.scheduled and schedule == "1f1b" and chunks >= stages:
            return micro * min(chunks, stages), 0.0
        return float(replica_batch), 0.0

    def same_maths(self, settings: Mapping[str, Any] | None = None) -> bool:
        """True when a step is single's step on the global batch at these settings."""
        return self.maths(settings or {})

    def comm_bytes(self, world: int, p_bytes: float, settings: Mapping[str, Any] | None = None) -> float:
        """Bytes per step for a payload P (the projection's pattern). A mixture's: its dp traffic over
        world / (tp pp) ranks (its tp and boundary traffic stay at a fixed tp and pp: measured per stage)."""
        if self.kind == "mixture":
            s = settings or {}
            return _dp_traffic(s.get("shard", "none"), _mixture_dp(world, s))[0] * p_bytes
        return self.traffic(world) * p_bytes * self.syncs(settings or {}) if world > 1 else 0.0

    def comm_messages(self, world: int, chunks: int = 1, settings: Mapping[str, Any] | None = None) -> float:
        """Messages per step, averaged over steps as `comm_bytes` (bucketed payloads: a message per bucket)."""
        if self.kind == "mixture":
            s = settings or {}
            return _dp_traffic(s.get("shard", "none"), _mixture_dp(world, s))[1]
        return self.messages(world, chunks) * self.syncs(settings or {}) if world > 1 else 0

    def step_traffic(self, settings: Mapping[str, Any], dp: int, p: Payloads) -> tuple[float, int]:
        """A mixture rank's (bytes sent, messages) per step (docs/strategies.md#mix): its stage's TP
        collectives (ring all-reduce, or reduce-scatter + all-gather: the same bytes), its pipeline
        boundaries, and its dp traffic: `none` all-reduces the stage's gradients; `optim` (ZeRO-1) also
        broadcasts each parameter from the rank that stepped it ((dp-1)/dp of them, ring-equivalent);
        `full` (FSDP2, kept unsharded over the micro-batches) all-gathers once and reduce-scatters once."""
        tp, m, shard = int(settings.get("tp", 1)), int(settings.get("chunks", 1)), settings.get("shard", "none")
        nbytes = (_allreduce(tp) * p.tp if tp > 1 else 0.0) + p.boundary
        messages = (2 * (tp - 1) * p.collectives + p.sends) * m
        factor, dp_messages = _dp_traffic(shard, dp, p.units)
        return nbytes + factor * p.stage, messages + dp_messages


def _mixture_dp(world: int, settings: Mapping[str, Any]) -> int:
    return max(world // max(int(settings.get("tp", 1)) * int(settings.get("pp", 1)), 1), 1)


def _dp_traffic(shard: str, dp: int, units: int = 1) -> tuple[float, int]:
    """A mixture's dp traffic per step: (bytes per byte of the stage's parameters, messages). `none`
    all-reduces the gradients; `optim` (ZeRO-1) also broadcasts each parameter from the rank that
    stepped it; `full` (FSDP2, unsharded once per step) all-gathers once and reduce-scatters once."""
    if dp <= 1:
        return 0.0, 0
    factor = {"none": _allreduce(dp), "optim": _allreduce(dp) + (dp - 1) / dp, "full": 2 * (dp - 1) / dp}
    return factor[shard], {"none": 2 * (dp - 1), "optim": 3 * (dp - 1), "full": 2 * (dp - 1) * units}[shard]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _greedy_share(shapes: list[tuple[int, ...]], world: int) -> int:
    """The largest rank's elements under ZeroRedundancyOptimizer's partition."""
    sizes = [0] * world
    for n in sorted((_numel(s) for s in shapes), reverse=True):
        sizes[sizes.index(min(sizes))] += n
    return max(sizes)


def _fsdp_share(shapes: list[tuple[int, ...]], world: int) -> int:
    """Rank 0's elements when every tensor is cut into `world` chunks along dim 0 (FSDP2)."""
    return sum(min(-(-s[0] // world), s[0]) * _numel(s[1:]) if s else 1 for s in shapes)


def _mixture_held(n: int, world: int, states: int, s: Mapping[str, Any],
                  local: list[tuple[int, ...]] | None = None) -> Held:
    """A mix rank: its stage's n elements cut over tp (n/tp: exact for the cut layers, the replicated
    norms, embedding and head undercounted, as tp), then over dp as `shard` says: optim the optimizer
    state, full all three (ZeroRedundancyOptimizer's greedy whole-tensor shares and FSDP2's dim-0
    shares are close to n/(tp dp) for the project's models). `local`: the shapes of the stage's
    tensors after the TP cut, where known: exact figures, the trainers' own shares."""
    tp, pp, shard = int(s.get("tp", 1)), int(s.get("pp", 1)), s.get("shard", "none")
    dp = max(world // max(tp * pp, 1), 1)
    if shard == "none" or dp == 1:  # mix: one replica has nothing to shard over
        shard = "none"
    mine = sum(map(_numel, local)) if local else _shard(n, tp)
    split = _shard(mine, dp)
    if local and dp > 1:
        split = _fsdp_share(local, dp) if shard == "full" else _greedy_share(local, dp)
    p = g = split if shard == "full" else mine
    o = split if shard in ("optim", "full") else mine
    return Held(FP32 * p, FP32 * g, FP32 * states * o)


def _allreduce(w: int) -> float:
    return 2 * (w - 1) / w  # ring all-reduce: reduce-scatter + all-gather


def _localsgd_maths(s: Mapping[str, Any]) -> bool:
    """Averaging parameters after every step (H 1, no outer step) is DDP's update for SGD, momentum
    included (the average of the replicas' momenta follows DDP's, it is linear); not for Adam."""
    return (int(s.get("sync_every", 1)) == 1 and s.get("outer", "sgd") == "sgd"
            and float(s.get("outer_lr", 1.0)) == 1.0 and s.get("optimizer", "sgd") == "sgd")


def _localsgd_outer_state(s: Mapping[str, Any]) -> int:
    """The outer step's copy of the parameters at the last sync and its pseudo-gradient, plus the outer
    momentum for nesterov; nothing for plain averaging (sgd at learning rate 1)."""
    outer = s.get("outer", "sgd")
    if outer == "sgd" and float(s.get("outer_lr", 1.0)) == 1.0:
        return 0
    return 3 if outer == "nesterov" else 2


def _localsgd_syncs(s: Mapping[str, Any]) -> float:
    """One average of the parameters every H steps, and of the optimizer state's tensors with them."""
    states = OPTIMIZER_STATES[str(s.get("optimizer", "sgd"))] if s.get("sync_optim", "keep") == "average" else 0
    return (1 + states) / max(int(s.get("sync_every", 1)), 1)


def _stage(w: int) -> float:
    """A middle stage sends a boundary's activation forward and a gradient back; with 2 stages, one of them."""
    return 1.0 if w <= 2 else 2.0


REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("single", "one-process", "baseline: one process, one device", "any", max_world=1),
    Strategy("dp", "one-process", "torch.nn.DataParallel: one process driving every GPU of one node",
             "GPU (>= 2)", sbatch_directives=("--gpus-per-node=2",), max_world=1, min_gpus=2,
             batchnorm_note="GPU replica"),
    Strategy("ddp", "replicas", "DistributedDataParallel: a model replica per rank, gradients all-reduced "
             "(gloo/NCCL ring) while backward runs", "any", sbatch_nodes=2, projected=True,
             traffic=_allreduce, messages=lambda w, m: 2 * (w - 1), batchnorm_note="rank",
             buffers=lambda n, unit, boundary: FP32 * n),  # the reducer's gradient buckets
    Strategy("ps", "replicas", "parameter server: rank 0 holds the optimizer, workers push gradients and "
             "pull parameters (point-to-point, written here)", "any", sbatch_nodes=2, projected=True,
             traffic=lambda w: w - 1.0, messages=lambda w, m: 2, min_world=2, computing_ranks="workers",
             batchnorm_note="rank", buffers=lambda n, unit, boundary: 2 * FP32 * n),  # gradient + parameter buckets
    Strategy("ring", "replicas", "ring all-reduce written here: reduce-scatter + all-gather after backward",
             "any", sbatch_nodes=2, projected=True, traffic=_allreduce, messages=lambda w, m: 2 * (w - 1),
             batchnorm_note="rank", buffers=lambda n, unit, boundary: FP32 * n),  # flat gradient buckets
    Strategy("localsgd", "replicas", "local SGD / DiLoCo: replicas step on their own slice and average "
             "parameters every H steps, optionally through an outer optimizer", "any", sbatch_nodes=2,
             projected=True, traffic=_allreduce, messages=lambda w, m: 2 * (w - 1), batchnorm_note="rank",
             buffers=lambda n, unit, boundary: FP32 * n,  # flat parameter buckets (DiLoCo: + the last sync's copy)
             settings=("sync_every", "outer", "outer_lr", "sync_optim"), maths=_localsgd_maths,
             syncs=_localsgd_syncs, extra_state=_localsgd_outer_state),
    Strategy("asyncps", "replicas", "asynchronous parameter server: workers push and pull without waiting "
             "for each other, parameters at most S server versions stale", "any", sbatch_nodes=2,
             projected=True, traffic=lambda w: w - 1.0, messages=lambda w, m: 2, min_world=2, computing_ranks="workers",
             batchnorm_note="rank", buffers=lambda n, unit, boundary: 2 * FP32 * n, settings=("staleness",),
             no_fp16="its workers step on parameters of other server versions, without one loss scale",
             maths=lambda s: int(s.get("staleness", 0)) == 0, reproducible=lambda s: int(s.get("staleness", 0)) == 0),
    Strategy("zero", "sharded", "DDP + ZeroRedundancyOptimizer: optimizer state sharded over ranks", "any",
             sbatch_nodes=2, projected=True, traffic=_allreduce, messages=lambda w, m: 2 * (w - 1),
             batchnorm_note="rank", shards=("optim",), buffers=lambda n, unit, boundary: FP32 * n),
    Strategy("fsdp", "sharded", "FSDP2 fully_shard: parameters, gradients and optimizer state sharded",
             "any", sbatch_nodes=2, projected=True, traffic=lambda w: 3 * (w - 1) / w,
             messages=lambda w, m: 3 * (w - 1), batchnorm_note="rank", shards=("params", "grads", "optim"),
             buffers=lambda n, unit, boundary: 3 * FP32 * unit),  # 2 units all-gathered + 1 reduce-scattered
    Strategy("mp", "staged", "naive model parallel: one stage per rank, the batch as one micro-batch",
             "any", sbatch_nodes=2, projected=True, traffic=_stage, messages=lambda w, m: 2,
             buffers=lambda n, unit, boundary: 2 * boundary),  # a boundary's send and receive
    Strategy("gpipe", "staged", "GPipe through torchgpipe: one process, one device per stage",
             "GPU for speed, CPU for correctness", micro_batches=True, max_world=1,
             default_stages=lambda nodes, procs: 2,
             batchnorm_note="micro-batch",
             no_recompute="torchgpipe recomputes by itself: use --checkpoint always|except_last|never"),
    Strategy("pipeline", "staged", "torch.distributed.pipelining: one stage per rank, GPipe or 1F1B "
             "schedule over micro-batches", "any", sbatch_nodes=2, micro_batches=True, scheduled=True,
             projected=True, traffic=_stage, messages=lambda w, m: 2 * m, batchnorm_note="micro-batch",
             buffers=lambda n, unit, boundary: 2 * boundary),
    Strategy("hybrid", "staged", "pipeline stages inside a node x data-parallel replicas across nodes",
             "any", sbatch_nodes=2, sbatch_procs=2, micro_batches=True, scheduled=True,
             batchnorm_note="micro-batch", stage_replicas=True,
             buffers=lambda n, unit, boundary: FP32 * n + 2 * boundary, default_stages=lambda nodes, procs: procs),
    # P: the bytes of every activation all-reduced in a step (trainers/tp.py, activation_bytes)
    Strategy("tp", "tensor", "tensor parallel (DTensor): every layer pair cut over the ranks, colwise then "
             "rowwise, attention heads split; optional sequence parallel norms", "any", sbatch_procs=2,
             projected=True, traffic=_allreduce, messages=lambda w, m: 2 * (w - 1),
             no_fp16="not tried with DTensor's sharded gradients", models=("mlp", "transformer"),
             settings=("sequence_parallel",)),
    # traffic and state: Strategy.step_traffic, _mixture_held (three payloads and three degrees)
    Strategy("mix", "mixture", "pp x dp x tp in one run: pipeline stages (torch.distributed.pipelining), "
             "TP inside each stage (DTensor), dp replicas, ZeRO-1 or FSDP2 over dp", "any",
             sbatch_nodes=2, sbatch_procs=4, micro_batches=True, scheduled=True, stage_replicas=True,
             stage_setting="pp", projected=True, no_fp16="not tried with DTensor's sharded gradients",
             models=("mlp", "transformer"),
             settings=("tp", "pp", "shard", "sequence_parallel")),
)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}: choose from {', '.join(NAMES)}") from None


def names(**facts: object) -> tuple[str, ...]:
    """Strategies whose attributes equal `facts`, e.g. names(kind="staged"), names(micro_batches=True)."""
    return tuple(n for n, s in REGISTRY.items() if all(getattr(s, k) == v for k, v in facts.items()))


def markdown_table() -> str:
    """The strategy table of README.md and docs/strategies.md (a test keeps them equal to this)."""
    rows = ["| name | kind | what | runs on |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.kind} | {s.summary} | {s.runs_on} |" for s in REGISTRY.values()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
