"""Memory-fit planner: per strategy and layout, the bytes one rank holds, and whether they fit.

    bin/plan --model resnet50 --global-batch 256 --nodes 1,2,4,8 --gpu-mem 80GiB
    bin/plan --layers 32 --hidden 4096 --heads 32 --seq 2048 --vocab 32000 --optimizer adam
    bin/plan --params 7e9 --optimizer adam --json

Per rank (the busiest one of its layout), in bytes:
- parameters, gradients, optimizer state: the registry's `state_bytes` (contract/registry.py),
  which follows what the trainers hold: autocast keeps fp32 weights, gradients and optimizer
  state; ZeroRedundancyOptimizer shards the optimizer state only; FSDP2 shards all three;
  staged strategies hold their stage (the blocks split by parameter count, as the trainers do).
- activations: what autograd saves for backward. For the project's models it is measured
  (trainers/common/activations.py, saved-tensor hooks, each storage once, parameters left out)
  per block and scaled to the samples a rank keeps in flight (registry `samples_in_flight`:
  GPipe keeps every micro-batch, 1F1B at most as many as there are stages, torchgpipe's
  checkpointing only stage inputs). For a transformer given by its shape it is Korthikanti et
  al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"), per layer and
  sample s*h*(34 + 5*a*s/h) bytes at 16 bits (x2 at fp32), plus the fp32 logits 4*s*V.
  With --params alone it is unknown (null).
- communication buffers: the registry's `buffers` (DDP's gradient buckets, the ring's flat
  buckets, FSDP's gathered units, a pipeline's boundary messages).
A transformer given by its shape also gets a `mix` row: a pp x dp x tp layout (--tp --pp --shard
--recompute --micro-batch --sequence-parallel; analysis/mixplan.py), and --search ranks every layout
that fits by a step-time model (analysis/layout_search.py).
Torch-free: bin/plan passes in the measured block profile of a project model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from analysis import layout_search, layoutplan
from analysis.mixplan import Transformer
from contract import defaults, registry
from contract.balance import balance_by_params
from contract.config import ExperimentConfig
from contract.errors import ConfigError, OneLineParser
from contract.tables import DATASETS, GPUS, MODELS, OPTIMIZERS, OUTER_OPTIMIZERS, PRECISIONS, SCHEDULES, SYNC_OPTIM

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
GIB = 2**30


@dataclass(frozen=True)
class Block:
    params: int
    saved_per_sample: float | None  # bytes autograd keeps per sample; None: unknown
    output_per_sample: float  # bytes per sample of the block's output (a stage boundary)
    shapes: tuple[tuple[int, ...], ...] = ()  # parameter tensors' shapes, where known
    # Of saved_per_sample: bytes of the batch itself it saves (the first block the input, the loss the targets).
    # A micro-batch is a slice of the replica's batch; a saved slice keeps the whole storage (layoutplan.py).
    batch_per_sample: float = 0.0


@dataclass(frozen=True)
class ModelShape:
    name: str
    blocks: tuple[Block, ...]
    # A TP rank's profile (tp, mix: trainers/common/activations.py profile_tp): the TP degree its blocks are
    # cut for and the uncut blocks' parameter counts (the stages' balance); tp 0: the uncut model.
    tp: int = 0
    whole: tuple[int, ...] = ()

    @property
    def params(self) -> int:
        return sum(b.params for b in self.blocks)


def parse_size(text: str) -> int:
    """'80GiB', '512 MB', '1.5TiB' -> bytes. A number without a unit is refused: GB or GiB?"""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([A-Za-z]+)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise ConfigError(f"invalid memory size {text!r}: give a number and a unit, e.g. 80GiB or 40GB")
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"invalid memory size {text!r}: must be > 0")
    return int(value)


def positive_int(name: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"invalid {name} {text!r}: expected a positive whole number") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ConfigError(f"invalid {name} {text!r}: expected a positive whole number")
    return int(value)


def transformer_shape(layers: int, hidden: int, heads: int, seq: int, vocab: int, precision: str) -> ModelShape:
    """A decoder of `layers` blocks between an embedding and a head, as blocks the planner can split."""
    if hidden % heads:
        raise ConfigError(f"invalid heads {heads}: hidden size {hidden} is not divisible by it")
    act = 2 if precision in ("bf16", "fp16") else 4  # bytes per activation element
    per_layer = seq * hidden * (34 + 5 * heads * seq / hidden) * act / 2  # Korthikanti: bytes at 16 bits
    boundary = seq * hidden * act
    embed = Block(vocab * hidden + seq * hidden, seq * hidden * act, boundary)  # token + position tables
    layer = Block(12 * hidden * hidden + 13 * hidden, per_layer, boundary)  # attention 4h^2+4h, MLP 8h^2+5h, 2 LN
    head = Block(2 * hidden + hidden * vocab, seq * hidden * act + 4 * seq * vocab, 4 * seq * vocab)
    return ModelShape(f"transformer L{layers} h{hidden} a{heads} s{seq} V{vocab}", (embed, *[layer] * layers, head))


def params_shape(params: int) -> ModelShape:
    return ModelShape(f"{params} parameters", (Block(params, None, 0.0),))


@dataclass
class Options:
    nodes: list[int]
    procs: int
    global_batch: int
    chunks: int
    schedule: str
    optimizer: str
    precision: str
    gpu_mem: int
    checkpoint: str = "never"
    # The config's fields that change what a rank holds (registry.state_bytes: DiLoCo's outer state);
    # a missing one reads as its default.
    settings: dict[str, Any] = field(default_factory=dict)


# Fields the mix rows add; the strategies' rows carry them too (null where unknown).
MIX_FIELDS = ("dp", "tp", "pp", "shard", "recompute", "micro_batch", "step_s", "tokens_per_s")
SHARD_OF = {"zero": "optim", "fsdp": "full"}


def _stage_blocks(shape: ModelShape, stages: int) -> list[Block]:
    """The blocks of the stage with the most parameters, split as the trainers split."""
    blocks = list(shape.blocks)
    if len(blocks) == 1 and stages > 1:  # --params: an even split of an unknown model
        b = blocks[0]
        return [Block(-(-b.params // stages), None, b.output_per_sample)]
    sizes = balance_by_params([b.params for b in blocks], stages)
    cuts, start = [], 0
    for size in sizes:
        cuts.append(blocks[start:start + size])
        start += size
    return max(cuts, key=lambda c: sum(b.params for b in c))


def empty_row(strategy: str, nodes: int, procs: int, reason: str | None = None) -> dict:
    return {"strategy": strategy, "nodes": nodes, "procs_per_node": procs, "world_size": nodes * procs,
            "param_bytes": None, "grad_bytes": None, "optim_bytes": None, "activation_bytes": None,
            "buffer_bytes": None, "total_bytes": None, "fits": None, "headroom_bytes": None, "reason": reason,
            **dict.fromkeys(MIX_FIELDS)}


def plan_one(record: registry.Strategy, shape: ModelShape, nodes: int, o: Options) -> dict:
    world = nodes * o.procs
    mixture = record.kind == "mixture"  # its degrees are settings (pp, tp)
    stages = record.stages(nodes, o.procs, int(o.settings.get("pp", 1)) if mixture else 0)
    tp = int(o.settings.get("tp", 1)) if mixture else 1
    row = empty_row(record.name, nodes, o.procs)
    splittable = len(shape.blocks) > 1
    refusal = record.refusal(registry.Layout(nodes, o.procs, stages, len(shape.blocks) if splittable else 10**9,
                                             gpus=o.procs, model=shape.name if shape.name in MODELS else "", tp=tp))
    dp = record.dp_size(nodes, o.procs, stages, tp)
    row.update(dp=dp, tp=world if record.kind == "tensor" else 1, pp=stages, shard=SHARD_OF.get(record.name, "none"),
               recompute="full" if record.name == "gpipe" and o.checkpoint != "never" else "none")
    if refusal is None and o.global_batch < dp:
        refusal = f"global batch {o.global_batch} gives no sample to each of the {dp} data-parallel ranks"
    if refusal is None and record.micro_batches and o.global_batch // dp < o.chunks:
        refusal = f"{o.global_batch // dp} samples per replica cannot make {o.chunks} micro-batches"
    if refusal:
        row["reason"] = refusal
        return row
    if record.kind in ("tensor", "mixture") and shape.tp:  # the profile of this layout's TP cut
        return _plan_cut(record, shape, row, o)
    # A rank holds its stage; a one-process pipeline (gpipe) holds every stage in its process.
    one_process = record.max_world == 1
    mine = _stage_blocks(shape, stages) if record.kind == "staged" and stages > 1 and not one_process \
        else list(shape.blocks)
    n = sum(b.params for b in mine)
    replica = -(-o.global_batch // dp)
    if record.min_gpus:  # DataParallel: one process, the batch split over the node's GPUs
        replica = -(-o.global_batch // max(o.procs, 1))
    full, inputs_only = record.samples_in_flight(replica, o.chunks, stages, o.schedule, o.checkpoint)
    row["micro_batch"] = -(-replica // o.chunks) if record.micro_batches else replica
    boundary = mine[-1].output_per_sample * replica / (o.chunks if record.micro_batches else 1)
    activations = None
    if all(b.saved_per_sample is not None for b in mine):
        activations = full * sum(b.saved_per_sample for b in mine) + inputs_only * mine[0].output_per_sample
    unit = max(b.params for b in shape.blocks) if splittable else n
    shapes = [sh for b in mine for sh in b.shapes] or None
    buffers = record.buffers(n, unit, boundary)
    # Each figure is the largest over the ranks' roles (a parameter server holds the optimizer,
    # its workers the activations); the total is the largest rank's sum.
    roles = []
    for rank in ((0, 1) if record.computing_ranks == "workers" else (0,)):
        model_state = record.state_bytes(n, dp if record.shards else world, o.optimizer, o.precision, rank=rank,
                                         shapes=shapes, settings={**o.settings, "optimizer": o.optimizer})
        act = 0.0 if record.computing_ranks == "workers" and rank == 0 else activations
        roles.append((model_state, act))
    total = max(st.total + (a or 0) + buffers for st, a in roles)
    act = activations
    row.update(param_bytes=max(st.param_bytes for st, _ in roles), grad_bytes=max(st.grad_bytes for st, _ in roles),
               optim_bytes=max(st.optim_bytes for st, _ in roles),
               activation_bytes=None if act is None else int(act), buffer_bytes=int(buffers),
               total_bytes=int(total), fits=bool(total <= o.gpu_mem), headroom_bytes=int(o.gpu_mem - total))
    if act is None:
        row["reason"] = "activations unknown (--params): totals count model state and buffers only"
    return row


def _plan_cut(record: registry.Strategy, shape: ModelShape, row: dict, o: Options) -> dict:
    """tp, mix on a TP rank's profile: analysis/layoutplan.py (the settings tp, pp, shard, schedule,
    micro_batch, chunks of o.settings; the recomputation is the profile's)."""
    settings = {"schedule": o.schedule, "chunks": o.chunks, **o.settings}
    got = layoutplan.plan_layout(record, list(shape.whole), list(shape.blocks), row["world_size"], o.global_batch,
                                 o.optimizer, settings)
    if got["tp"] != shape.tp:
        raise ConfigError(f"the profile is cut for tp {shape.tp}, the layout has tp {got['tp']}")
    row.update({k: got[k] for k in ("dp", "tp", "pp", "shard", "param_bytes", "grad_bytes", "optim_bytes",
                                    "activation_bytes")}, recompute=o.settings.get("recompute", "none"),
               micro_batch=-(-o.global_batch // got["dp"] // got["micro_batches"]))
    total = sum(row[k] for k in ("param_bytes", "grad_bytes", "optim_bytes", "activation_bytes"))
    row.update(buffer_bytes=0, total_bytes=total, fits=bool(total <= o.gpu_mem), headroom_bytes=int(o.gpu_mem - total))
    return row


def plan(shape: ModelShape, o: Options) -> list[dict]:
    return [plan_one(record, shape, n, o) for record in registry.REGISTRY.values() if record.kind != "mixture"
            for n in o.nodes]  # mix: layout_search's rows


def smallest_fit(rows: list[dict]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for r in rows:
        out.setdefault(r["strategy"], None)
        if r["fits"] and (out[r["strategy"]] is None or r["nodes"] < out[r["strategy"]]):
            out[r["strategy"]] = r["nodes"]
    return out


def table(shape: ModelShape, rows: list[dict], o: Options) -> str:
    biggest = max((r["total_bytes"] or 0 for r in rows), default=0)
    unit, scale = ("GiB", GIB) if biggest >= GIB else ("MiB", 2**20)

    def _gib(v: float | None) -> str:
        return "-" if v is None else f"{v / scale:.2f}"

    lines = [f"model {shape.name}: {shape.params:,} parameters; {o.optimizer}, {o.precision}, global batch "
             f"{o.global_batch}, {o.procs} rank(s) per node, GPU memory {o.gpu_mem / GIB:.1f} GiB",
             f"{'strategy':<9} {'nodes':>5} {'params':>8} {'grads':>8} {'optim':>8} {'activ':>8} {'buffers':>8} "
             f"{'total':>8} {'fits':>5} {'headroom':>9}  ({unit} per rank)"]
    for r in rows:
        if r["total_bytes"] is None:
            lines.append(f"{r['strategy']:<9} {r['nodes']:>5}  cannot run: {r['reason']}")
            continue
        mix = (f"  {layout_search.label(r)}: {r['step_s']:.2f} s/step, {r['tokens_per_s']:,.0f} tokens/s, "
               f"{r['limit']}") if r["strategy"] == "mix" else ""
        lines.append(f"{r['strategy']:<9} {r['nodes']:>5} {_gib(r['param_bytes']):>8} {_gib(r['grad_bytes']):>8} "
                     f"{_gib(r['optim_bytes']):>8} {_gib(r['activation_bytes']):>8} {_gib(r['buffer_bytes']):>8} "
                     f"{_gib(r['total_bytes']):>8} {'yes' if r['fits'] else 'NO':>5} {_gib(r['headroom_bytes']):>9}"
                     + mix)
    lines.append("smallest node count that fits:")
    for strategy, n in smallest_fit(rows).items():
        lines.append(f"  {strategy:<9} {n if n is not None else 'none of ' + ','.join(map(str, o.nodes))}")
    if any(r["activation_bytes"] is None and r["total_bytes"] is not None for r in rows):
        lines.append("note: activations unknown (--params): give --model or the transformer shape to count them")
    return "\n".join(lines)


# The settings only some strategies take (the registry's), as flags: what a localsgd rank holds depends on them.
# tp's sequence_parallel changes activations only, and the mix plan's --sequence-parallel (layout_search) says it.
SETTING_FLAGS = tuple(dict.fromkeys(k for record in registry.REGISTRY.values() if record.kind != "mixture"
                                    for k in record.settings if k != "sequence_parallel"))  # mix: layout_search's flags


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(ExperimentConfig) if f.name == name)


def add_gpu_mem(p: argparse.ArgumentParser) -> None:
    """--gpu-mem, as the planner and the advice take it."""
    p.add_argument("--gpu-mem", default=defaults.GPU_MEM,
                   help=f"memory of one GPU, with a unit (default: {defaults.GPU_MEM})")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="bin/plan", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="", help=f"one of the project's models: {', '.join(MODELS)}")
    d = ExperimentConfig  # the trainers' defaults; the optimizer's is the planner's own (large models: adam)
    p.add_argument("--dataset", default=d.dataset, help=f"input shape for --model (default: {d.dataset})")
    for name in ("layers", "hidden", "heads", "seq", "vocab"):
        p.add_argument(f"--{name}", default="", help="transformer shape (all five together)")
    p.add_argument("--params", default="", help="parameter count alone (activations unknown)")
    p.add_argument("--precision", default=d.precision, help=f"{'|'.join(PRECISIONS)} (default: {d.precision})")
    p.add_argument("--optimizer", default="adam", help=f"{'|'.join(OPTIMIZERS)} (default: adam)")
    p.add_argument("--global-batch", default=str(d.global_batch),
                   help=f"samples per step over all ranks (default: {d.global_batch})")
    p.add_argument("--chunks", default=str(d.chunks),
                   help=f"micro-batches per step for pipelines (default: {d.chunks})")
    p.add_argument("--schedule", default=d.schedule,
                   help=f"pipeline schedule {'|'.join(SCHEDULES)} (default: {d.schedule})")
    p.add_argument("--nodes", default="1,2,4,8", help="comma list of node counts (default: 1,2,4,8)")
    p.add_argument("--procs-per-node", default=str(d.procs_per_node),
                   help=f"ranks (GPUs) per node (default: {d.procs_per_node})")
    p.add_argument("--gpu-mem", default="", help="memory of one GPU, with a unit (default: the --gpu preset's)")
    for name in SETTING_FLAGS:  # the loosely coupled strategies' own settings, the trainers' defaults
        flag = name.replace("_", "-")
        p.add_argument(f"--{flag}", default=str(getattr(d, name)), help=f"{_help(name)} (default: {getattr(d, name)})")
    layout_search.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


def parse_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The strategies' own settings of the command line, checked (ConfigError: one line, exit 2)."""
    for name, choices in (("outer", OUTER_OPTIMIZERS), ("sync_optim", SYNC_OPTIM)):
        if (value := getattr(a, name)) not in choices:
            raise ConfigError(f"unknown {name.replace('_', '-')} {value!r}: choose from {', '.join(choices)}")
    try:
        outer_lr = float(a.outer_lr)
    except ValueError:
        outer_lr = math.nan
    if not (math.isfinite(outer_lr) and outer_lr > 0):
        raise ConfigError(f"invalid outer-lr {a.outer_lr!r}: expected a number > 0")
    staleness = a.staleness.strip()
    if not staleness.isdigit():
        raise ConfigError(f"invalid staleness {a.staleness!r}: expected a whole number >= 0")
    return {"sync_every": positive_int("sync-every", a.sync_every), "outer": a.outer, "outer_lr": outer_lr,
            "sync_optim": a.sync_optim, "staleness": int(staleness)}


Profiler = Callable[[str, str, str], list[Block]]


def main(argv: list[str], profiler: Profiler | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        for name, value, choices in (("precision", a.precision, PRECISIONS), ("optimizer", a.optimizer, OPTIMIZERS),
                                     ("schedule", a.schedule, SCHEDULES), ("dataset", a.dataset, DATASETS)):
            if value not in choices:
                raise ConfigError(f"unknown {name} {value!r}: choose from {', '.join(choices)}")
        fixed, cost = layout_search.parse(a, positive_int)
        nodes = [positive_int("nodes", x.strip()) for x in a.nodes.split(",")]
        o = Options(sorted(set(nodes)), positive_int("procs per node", a.procs_per_node),
                    positive_int("global batch", a.global_batch), positive_int("chunks", a.chunks), a.schedule,
                    a.optimizer, a.precision, parse_size(a.gpu_mem) if a.gpu_mem else GPUS[cost["gpu"]][0],
                    settings=parse_settings(a))
        shape_args = [a.layers, a.hidden, a.heads, a.seq, a.vocab]
        given = sum(bool(x) for x in (a.model, a.params, any(shape_args)))
        if given != 1:
            raise ConfigError("give the model one way: --model NAME, the five transformer flags, or --params N")
        if layout_search.given(a) and not any(shape_args):
            raise ConfigError("the mix layout and --search need the transformer shape: --layers --hidden --heads "
                              "--seq --vocab")
        run, mixes = None, []
        if a.model:
            if a.model not in MODELS:
                own = ("; a module:function model is not planned: give its parameter count, --params N"
                       if ":" in a.model else "")
                raise ConfigError(f"unknown model {a.model!r}: choose from {', '.join(MODELS)}{own}")
            if profiler is None:
                raise ConfigError("--model needs the measured profile: run bin/plan")
            shape = ModelShape(a.model, tuple(profiler(a.model, a.dataset, a.precision)))
        elif a.params:
            shape = params_shape(positive_int("params", a.params))
        else:
            if not all(shape_args):
                raise ConfigError("a transformer needs all of --layers --hidden --heads --seq --vocab")
            dims = [positive_int(n, v) for n, v in zip(("layers", "hidden", "heads", "seq", "vocab"), shape_args,
                                                       strict=True)]
            shape = transformer_shape(*dims, a.precision)
            run = layout_search.Run(Transformer(*dims), o.global_batch, o.precision, o.optimizer, o.schedule,
                                    o.gpu_mem, cost["gpu"], cost["mfu"], cost["intra"], cost["inter"])
            for n in o.nodes if not a.search else ():
                try:  # the flags' layout: refused in one line where it cannot be built; the default one noted
                    mixes.append((n, layout_search.mix_layout(run, fixed, n, o.procs)))
                except ConfigError as e:
                    if fixed:
                        raise
                    mixes.append((n, str(e)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.search and run is not None:
        return layout_search.print_search(run, fixed, cost["top"], o.nodes, o.procs, a.json, shape.name)
    rows = plan(shape, o)
    if run is not None:
        rows += [empty_row("mix", n, o.procs, x) if isinstance(x, str) else layout_search.row(run, x, n, o.procs)
                 for n, x in mixes]
    if a.json:
        print(json.dumps({"model": shape.name, "params": shape.params, "gpu_mem_bytes": o.gpu_mem, "rows": rows},
                         indent=1))
    else:
        print(table(shape, rows, o))
        if run is not None:
            print("\n".join(layout_search.fastest_lines(run, o.nodes, o.procs)))
    return 0
