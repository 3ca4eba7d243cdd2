"""bench.plan's tensor-parallel rows: the planner (analysis/layoutplan.py through plan_one) against `tp` and
`mix` runs, per layout, shard mode and recomputation.

Each row runs one step (Adam) through the simulate backend and divides the planned bytes of the busiest
rank by the largest of the ranks' `end` records: parameters, gradients, optimizer state (goal 1.00 +- 0.01)
and activations (planned from the TP rank's measured block profile, trainers/common/activations.py
profile_tp; measured: `saved_peak_bytes`, the peak of what autograd keeps in the first step; goal
within 10%).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from functools import cache
from typing import Any

from analysis import plan
from bench.runs import run_and_read
from contract import registry
from contract.config import ExperimentConfig

GLOBAL_BATCH, CHUNKS = 32, 4
FIELDS = ("param_bytes", "grad_bytes", "optim_bytes")


def layouts(model: str, quick: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, run settings) of every row: tp at 2 ranks; mix dp2 x tp2, tp2 x pp2 (1f1b, gpipe),
    dp2 x tp2 x pp2 in each shard mode where dp > 1; each with every recomputation the model takes."""
    modes = ("none", "full", "selective") if model == "transformer" else ("none", "full")
    shapes: list[tuple[str, dict[str, Any]]] = [("tp2", dict(strategy="tp", nodes=1, procs_per_node=2))]
    for shard in ("none", "optim", "full"):
        shapes.append((f"dp2xtp2 {shard}", dict(strategy="mix", nodes=1, procs_per_node=4, tp=2, pp=1, shard=shard)))
    for schedule in ("1f1b", "gpipe"):
        shapes.append((f"tp2xpp2 {schedule}", dict(strategy="mix", nodes=1, procs_per_node=4, tp=2, pp=2,
                                                   schedule=schedule)))
    for shard in ("none", "optim", "full"):
        shapes.append((f"dp2xtp2xpp2 {shard}", dict(strategy="mix", nodes=2, procs_per_node=4, tp=2, pp=2,
                                                    shard=shard)))
    if quick:
        shapes = [s for s in shapes if s[0] in ("tp2", "dp2xtp2 full", "tp2xpp2 1f1b")]
        modes = modes[:2]
    for label, kw in shapes:
        for mode in modes:
            yield f"{label} rc={mode}", {**kw, "recompute": mode}


@cache
def shape_of(model: str, tp: int, recompute: str, sp: bool) -> plan.ModelShape:
    """The planner's profile of TP rank 0 of `model` cut over tp (sequence parallel `sp`), under `recompute`
    (measured in this process)."""
    from trainers.common.activations import profile_model, profile_tp

    whole = tuple(b.params for b in profile_model(model, "synthetic"))
    blocks = tuple(plan.Block(b.params, b.saved_per_sample, b.output_per_sample, b.shapes, b.batch_per_sample)
                   for b in profile_tp(model, "synthetic", tp, recompute, sp))
    return plan.ModelShape(model, blocks, tp=tp, whole=whole)


def planned(model: str, kw: dict[str, Any]) -> dict:
    record = registry.get(kw["strategy"])
    world = kw["nodes"] * kw["procs_per_node"]
    tp = world if record.kind == "tensor" else kw["tp"]
    settings = {k: kw[k] for k in ("tp", "pp", "shard", "recompute") if k in kw}
    o = plan.Options([kw["nodes"]], kw["procs_per_node"], GLOBAL_BATCH, CHUNKS, kw.get("schedule", "1f1b"), "adam",
                     "fp32", 80 * plan.GIB, settings=settings)
    sp = kw.get("sequence_parallel", ExperimentConfig.sequence_parallel) == "on"  # the runs' default: on
    return plan.plan_one(record, shape_of(model, tp, kw["recompute"], sp), kw["nodes"], o)


def saved_peaks(run_dir: str) -> list[int]:
    """Every rank's `saved_peak_bytes`, from its `end` record (analysis.load does not carry it)."""
    out = []
    for path in glob.glob(os.path.join(run_dir, "rank-*.jsonl")):
        with open(path) as f:
            out += [r["saved_peak_bytes"] for r in map(json.loads, f) if r.get("event") == "end"
                    and "saved_peak_bytes" in r]
    return out


def _ratio(p: float, m: float) -> float:
    return p / m if m else (1.0 if p == 0 else float("inf"))


def main(work: str, models: tuple[str, ...], quick: bool) -> tuple[float, float]:
    """Print the rows; return the largest state and activation deviations."""
    print(f"tp / mix, one step, Adam fp32, global batch {GLOBAL_BATCH}, chunks {CHUNKS}: planned / largest `end` "
          "record (state), planned / largest saved_peak_bytes (activations)")
    print(f"{'model':>11} {'layout':<28} {'params':>7} {'grads':>7} {'optim':>7} {'planned A':>10} "
          f"{'measured A':>10} {'act':>6}")
    worst_state = worst_act = 0.0
    for model in models:
        for label, kw in layouts(model, quick):
            row = planned(model, kw)
            name = f"{model}-{label}".replace(" ", "-").replace("=", "")
            data = run_and_read(work, name, model=model, optimizer="adam", lr=0.001, steps=1, warmup=0,
                                global_batch=GLOBAL_BATCH, chunks=CHUNKS, **kw)
            state = [_ratio(row[k], float(data.ranks[f"end_{k}"].max())) for k in FIELDS]
            measured = float(max(saved_peaks(os.path.join(work, name))))
            act = _ratio(row["activation_bytes"], measured)
            worst_state = max(worst_state, *(abs(r - 1) for r in state))
            worst_act = max(worst_act, abs(act - 1))
            print(f"{model:>11} {label:<28} " + " ".join(f"{r:>7.3f}" for r in state)
                  + f" {row['activation_bytes']:>10} {measured:>10.0f} {act:>6.3f}", flush=True)
    print(f"tp / mix: largest state deviation {worst_state:.4f} (goal <= 0.01), "
          f"largest activation deviation {worst_act:.4f} (goal <= 0.10)")
    return worst_state, worst_act
