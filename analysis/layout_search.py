"""Layout search: every pp x dp x tp layout of a cluster that fits GPU memory, ranked by a step-time model.

    bin/plan --layers 80 --hidden 12288 --heads 96 --seq 2048 --vocab 51200 --precision bf16 \\
        --nodes 192 --procs-per-node 8 --global-batch 2304 --gpu a100 --search --top 10

Memory: analysis/mixplan.py. The cost model (docs/plan.md states it; nothing is overlapped, as in
Megatron-LM 2021, so it is a bound from above on the step):
- compute: the busiest stage's FLOPs per micro-batch / tp at `peak x mfu` (TF32 half the bf16 peak at
  fp32): 3 forwards per layer (forward + backward), +1 forward under full recompute, + the attention
  scores and values (4bs^2h) under selective; the logits 3 x 2bshV on the last stage.
- tp-comm: per layer and micro-batch 4 all-reduces of sbh activations (2 forward, 2 backward; +2 under
  full recompute, whose forward repeats them); with SP an all-gather + reduce-scatter pair each, the
  same bytes. Ring: 2(t-1)/t of the bytes over the intra-node link, plus 2(t-1) link latencies.
- p2p: per micro-batch a boundary's activation forward and its gradient back, sbh/t each (Megatron's
  scatter-gather), on the inter-node link when the pipeline spans nodes.
- bubble: 1F1B and GPipe take (m + pp - 1) micro-batch slots for m micro-batches: (pp-1) idle slots.
- dp-comm, once per step: shard none a ring all-reduce of the busiest stage's gradients / tp;
  optim a reduce-scatter of the gradients + an all-gather of the parameters (the same bytes); full per
  micro-batch two all-gathers of the parameters and a reduce-scatter of the gradients. On the inter-
  node link when a data-parallel group spans nodes (ranks ordered tp, then dp, then pp, as Megatron).
  Inter-node bandwidth: one NIC of the link per GPU (DGX A100: 8 x HDR; DGX H100: 8 x NDR).
step = (m + pp - 1) x (compute + tp-comm + p2p per micro-batch) + dp-comm. Not counted: the optimizer
step, embedding all-reduces between the first and last stage, kernel-size effects on efficiency.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from analysis.mixplan import (
    RECOMPUTES,
    SHARDS,
    STATE_BYTES,
    Mix,
    Transformer,
    memory,
    refusal,
    stage_layers,
    stage_params,
)
from contract import defaults
from contract.errors import ConfigError
from contract.tables import GPUS, LINKS

GIB = 2**30


@dataclass(frozen=True)
class Run:
    """What every layout of one question shares."""
    model: Transformer
    global_batch: int
    precision: str
    optimizer: str
    schedule: str
    gpu_mem: int
    gpu: str = defaults.GPU
    mfu: float = 0.5
    intra: str = "nvlink"
    inter: str = "ib-hdr"

    @property
    def rate(self) -> float:
        """FLOP/s one GPU sustains: bf16 peak x mfu (TF32, half the bf16 peak, at fp32)."""
        return GPUS[self.gpu][1] * self.mfu * (0.5 if self.precision == "fp32" else 1.0)


def _link(name: str) -> tuple[float, float]:
    lat_us, gbps = LINKS[name]
    return lat_us * 1e-6, gbps * 1e9 / 8  # (seconds, bytes/s)


def _ring(nbytes: float, n: int, link: tuple[float, float], passes: float) -> float:
    """`passes` ring passes over n ranks, each (n-1)/n of the bytes in n-1 steps (all-reduce: 2, gather/scatter: 1)."""
    if n <= 1:
        return 0.0
    lat, bw = link
    return passes * ((n - 1) / n * nbytes / bw + (n - 1) * lat)


def step_time(r: Run, x: Mix, procs: int) -> dict:
    """Seconds per step and its parts for layout x on nodes of `procs` GPUs."""
    m, b, t = r.model, x.micro_batch, x.tp
    micro = x.micro_batches(r.global_batch)
    world = x.tp * x.pp * x.dp
    act = 2 if r.precision in ("bf16", "fp16") else 4
    pb, gb, _ = STATE_BYTES[r.precision]
    extra = {"none": 0.0, "selective": 4 * b * m.seq**2 * m.hidden, "full": m.layer_flops(b)}[x.recompute]
    stages = sorted({0, x.pp - 1})
    flops = max(stage_layers(m.layers, x.pp, i) * (3 * m.layer_flops(b) + extra)
                + (3 * m.logits_flops(b) if i == x.pp - 1 else 0) for i in stages) / t
    compute = flops / r.rate
    layers = stage_layers(m.layers, x.pp, 0)
    tp = layers * (6 if x.recompute == "full" else 4) * _ring(m.seq * b * m.hidden * act, t, _link(r.intra), 2)
    cross = _link(r.inter if world > procs else r.intra)
    p2p = 2 * (cross[0] + m.seq * b * m.hidden * act / t / cross[1]) if x.pp > 1 else 0.0
    slot = compute + tp + p2p
    n = max(stage_params(m, x, i) for i in stages)
    dp_link = _link(r.inter if x.tp * x.dp > procs else r.intra)
    dp = {"none": _ring(n * gb, x.dp, dp_link, 2),
          "optim": _ring(n * gb, x.dp, dp_link, 1) + _ring(n * pb, x.dp, dp_link, 1),
          "full": micro * (_ring(n * pb, x.dp, dp_link, 2) + _ring(n * gb, x.dp, dp_link, 1))}[x.shard]
    parts = {"compute": micro * compute, "bubble": (x.pp - 1) * slot, "tp-comm": micro * tp, "p2p": micro * p2p,
             "dp-comm": dp}
    step = sum(parts.values())
    per_sample = m.layers * (3 * m.layer_flops(1) + extra / b) + 3 * m.logits_flops(1)
    return {"step_s": step, "tokens_per_s": r.global_batch * m.seq / step,
            "tflops_per_gpu": r.global_batch * per_sample / step / world / 1e12,
            **{f"{k.replace('-', '_')}_s": v for k, v in parts.items()}}


def limit(row: dict, gpu_mem: int) -> str:
    """The largest overhead (>= 5% of the step), else compute; and memory when under 5% is left."""
    parts = {k: row[f"{k.replace('-', '_')}_s"] for k in ("bubble", "tp-comm", "p2p", "dp-comm")}
    name, worst = max(parts.items(), key=lambda kv: kv[1])
    out = f"{name} {worst / row['step_s']:.0%}" if worst >= 0.05 * row["step_s"] else "compute"
    if row["headroom_bytes"] < 0:
        out += f", memory: {-row['headroom_bytes'] / GIB:.1f} GiB over"
    elif row["headroom_bytes"] < 0.05 * gpu_mem:
        out += f", memory ({row['headroom_bytes'] / GIB:.1f} GiB free)"
    return out


def row(r: Run, x: Mix, nodes: int, procs: int) -> dict:
    """A `mix` row: the planner's fields, the layout, and the step-time model's figures."""
    mem = memory(r.model, x, r.global_batch, r.precision, r.optimizer)
    out = {"strategy": "mix", "nodes": nodes, "procs_per_node": procs, "world_size": nodes * procs, **mem,
           "fits": mem["total_bytes"] <= r.gpu_mem, "headroom_bytes": r.gpu_mem - mem["total_bytes"], "reason": None,
           "dp": x.dp, "tp": x.tp, "pp": x.pp, "shard": x.shard, "recompute": x.recompute,
           "micro_batch": x.micro_batch, "sequence_parallel": x.sp, "schedule": x.schedule,
           "micro_batches": x.micro_batches(r.global_batch), **step_time(r, x, procs)}
    out["limit"] = limit(out, r.gpu_mem)
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts(r: Run, nodes: int, procs: int, fixed: dict) -> list[Mix]:
    """Every layout: tp dividing a node's GPUs, the heads and the hidden size; pp dividing the layers; dp the
    rest; each shard and recompute mode; micro-batches in powers of two dividing the per-replica batch.
    SP is on wherever tp > 1 (same traffic, less memory) unless `fixed` says off. `fixed`: axes given."""
    m, world, out = r.model, nodes * procs, []
    for t in _divisors(procs):
        if m.heads % t or m.hidden % t:
            continue
        for p in _divisors(m.layers):
            if world % (t * p):
                continue
            dp = world // (t * p)
            if r.global_batch % dp:
                continue
            replica = r.global_batch // dp
            sizes = [1 << k for k in range(replica.bit_length()) if replica % (1 << k) == 0]
            for shard in SHARDS if dp > 1 else ("none",):  # sharding over one replica changes nothing
                for rc in RECOMPUTES:
                    for b in sizes:
                        out.append(Mix(t, p, dp, shard, rc, b, t > 1 and fixed.get("sp", True), r.schedule))
    return [x for x in out if all(getattr(x, k) == v for k, v in fixed.items() if k != "sp" or x.tp > 1)]


def search(r: Run, nodes: int, procs: int, fixed: dict) -> tuple[list[dict], int]:
    """(the fitting layouts' rows, fastest first (ties: less memory), how many layouts were enumerated)."""
    every = layouts(r, nodes, procs, fixed)
    rows = [row(r, x, nodes, procs) for x in every]
    fits = sorted((w for w in rows if w["fits"]), key=lambda w: (w["step_s"], w["total_bytes"]))
    for i, w in enumerate(fits, 1):
        w["rank"] = i
    return fits, len(every)


def rank_of(rows: list[dict], **match: object) -> dict | None:
    """The best-ranked row whose fields equal `match` (e.g. tp=8, pp=8, recompute="full")."""
    return next((w for w in rows if all(w[k] == v for k, v in match.items())), None)


def header(r: Run, nodes: int, procs: int) -> str:
    (_, ibw), (_, ebw) = _link(r.intra), _link(r.inter)
    return (f"{nodes} node(s) x {procs} GPUs, {r.gpu} {r.gpu_mem / GIB:.0f} GiB at {GPUS[r.gpu][1] / 1e12:.0f} TFLOP/s "
            f"x mfu {r.mfu:g}; intra {r.intra} {ibw / 1e9:.0f} GB/s, inter {r.inter} {ebw / 1e9:.0f} GB/s per GPU")


def table(rows: list[dict], gpu_mem: int, rank: bool = True) -> list[str]:
    lines = [f"{'rank ' if rank else ''}{'tp':>3} {'pp':>3} {'dp':>4} {'shard':>5} {'recomp':>9} {'B':>3} {'SP':>3} "
             f"{'m':>5} {'GiB':>6} {'step_s':>8} {'tok/s':>10} {'TFLOP/s':>7} {'comp':>5} {'bubble':>6} {'tp':>5} "
             f"{'p2p':>5} {'dp':>5}  limit"]
    for w in rows:
        share = " ".join(f"{w[k] / w['step_s']:>{n}.0%}" for k, n in (("compute_s", 5), ("bubble_s", 6),
                                                                      ("tp_comm_s", 5), ("p2p_s", 5), ("dp_comm_s", 5)))
        lines.append(f"{w['rank']:>4} " * rank + f"{w['tp']:>3} {w['pp']:>3} {w['dp']:>4} {w['shard']:>5} "
                     f"{w['recompute']:>9} {w['micro_batch']:>3} {'on' if w['sequence_parallel'] else 'off':>3} "
                     f"{w['micro_batches']:>5} {w['total_bytes'] / GIB:>6.1f} {w['step_s']:>8.2f} "
                     f"{w['tokens_per_s']:>10.0f} {w['tflops_per_gpu']:>7.0f} {share}  {w['limit']}")
    return lines


# ---- the command line (bin/plan calls these) ---------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tp", default="", help="tensor-parallel size of the mix row (default 1; --search: every)")
    p.add_argument("--pp", default="", help="pipeline stages of the mix row (default 1; --search: every)")
    p.add_argument("--shard", default="", help=f"{'|'.join(SHARDS)} over dp (default none; --search: every)")
    p.add_argument("--recompute", default="", help=f"{'|'.join(RECOMPUTES)} (default none; --search: every)")
    p.add_argument("--micro-batch", default="", help="samples per micro-batch (default 1; --search: every)")
    p.add_argument("--sequence-parallel", default="", help="on|off (default: on where tp > 1)")
    p.add_argument("--search", action="store_true", help="rank every layout that fits by the step-time model")
    p.add_argument("--top", default="10", help="layouts shown by --search (default: 10)")
    p.add_argument("--gpu", default="", help=f"{'|'.join(GPUS)}: memory, peak, links (default: "
                   f"{defaults.GPU}'s peak and links, --gpu-mem)")
    p.add_argument("--mfu", default="0.5", help="fraction of the peak the compute reaches (default: 0.5)")
    p.add_argument("--intra-link", default="", help=f"intra-node link: {', '.join(k for k, v in LINKS.items() if v[1])}"
                   " (default: the GPU's)")
    p.add_argument("--inter-link", default="", help="inter-node link, one per GPU (default: the GPU's)")


def given(a: argparse.Namespace) -> bool:
    """Whether any flag of the mixture was given (they need the transformer shape)."""
    return bool(a.tp or a.pp or a.shard or a.recompute or a.micro_batch or a.sequence_parallel or a.search
                or a.gpu or a.intra_link or a.inter_link)


def parse(a: argparse.Namespace, positive_int) -> tuple[dict, dict]:
    """(the axes given, fixed for the search; the cost settings: gpu, mfu, intra, inter, top)."""
    fixed: dict = {}
    for name in ("tp", "pp", "micro_batch"):
        if getattr(a, name):
            fixed[name] = positive_int(name.replace("_", "-"), getattr(a, name))
    for name, choices in (("shard", SHARDS), ("recompute", RECOMPUTES), ("sequence_parallel", ("on", "off"))):
        value = getattr(a, name)
        if value and value not in choices:
            raise ConfigError(f"unknown {name.replace('_', '-')} {value!r}: choose from {', '.join(choices)}")
    fixed.update({k: getattr(a, k) for k in ("shard", "recompute") if getattr(a, k)})
    if a.sequence_parallel:
        fixed["sp"] = a.sequence_parallel == "on"
    gpu = a.gpu or defaults.GPU
    if gpu not in GPUS:
        raise ConfigError(f"unknown gpu {gpu!r}: choose from {', '.join(GPUS)}")
    for link in (a.intra_link, a.inter_link):
        if link and (link not in LINKS or LINKS[link][1] <= 0):
            raise ConfigError(f"unknown link {link!r}: choose from {', '.join(k for k, v in LINKS.items() if v[1])}")
    try:
        mfu = float(a.mfu)
    except ValueError:
        mfu = -1.0
    if not 0 < mfu <= 1:
        raise ConfigError(f"invalid mfu {a.mfu!r}: expected a fraction in (0, 1]")
    cost = {"gpu": gpu, "mfu": mfu, "intra": a.intra_link or GPUS[gpu][2], "inter": a.inter_link or GPUS[gpu][3],
            "top": positive_int("top", a.top)}
    return fixed, cost


def mix_layout(r: Run, fixed: dict, nodes: int, procs: int) -> Mix:
    """The layout of the flags at one node count (defaults tp 1, pp 1, none, none, B 1); ConfigError if it
    cannot be built."""
    tp, pp, b = fixed.get("tp", 1), fixed.get("pp", 1), fixed.get("micro_batch", 1)
    why = refusal(r.model, tp, pp, nodes * procs, procs, r.global_batch, b)
    if why:
        raise ConfigError(f"layout refused: {why}")
    return Mix(tp, pp, nodes * procs // (tp * pp), fixed.get("shard", "none"), fixed.get("recompute", "none"), b,
               tp > 1 and fixed.get("sp", True), r.schedule)


def print_search(r: Run, fixed: dict, top: int, nodes_list: list[int], procs: int, as_json: bool, name: str) -> int:
    """bin/plan --search: the `top` fastest fitting layouts per node count, as a table or JSON rows."""
    rows, lines = [], []
    for nodes in nodes_list:
        fits, n = search(r, nodes, procs, fixed)
        rows += fits[:top]
        lines.append(f"search, {name}, {r.precision}, {r.optimizer}, global batch {r.global_batch}: "
                     f"{header(r, nodes, procs)}; {n} layouts, {len(fits)} fit")
        lines += table(fits[:top], r.gpu_mem) if fits else ["  none fits"]
    if as_json:
        print(json.dumps({"model": name, "params": r.model.params, "gpu_mem_bytes": r.gpu_mem, "rows": rows}, indent=1))
    else:
        print("\n".join(lines))
    return 0


def label(w: dict) -> str:
    """A row's layout in a few words: tp8 pp4 dp2 optim/selective B1 SP."""
    return Mix(w["tp"], w["pp"], w["dp"], w["shard"], w["recompute"], w["micro_batch"], w["sequence_parallel"]).label()


def fastest_lines(r: Run, nodes_list: list[int], procs: int) -> list[str]:
    """Under the planner's table: the fastest layout that fits at each node count (--search ranks them all)."""
    lines = ["fastest mix layout that fits (bin/plan --search, make plan SEARCH=1: every layout, ranked):"]
    for nodes in nodes_list:
        fits, _ = search(r, nodes, procs, {})
        w = fits[0] if fits else None
        lines.append(f"  {nodes:>5} node(s): " + (f"{label(w)}, {w['total_bytes'] / GIB:.1f} GiB, {w['step_s']:.2f} "
                                                   f"s/step, {w['tokens_per_s']:,.0f} tokens/s" if w else "none fits"))
    return lines
