"""Benchmark: the memory planner (analysis/plan.py) against what the trainers really hold.

Model state: every strategy runs one step (Adam, so optimizer state exists) at 1, 2 and 4
ranks; the planned parameter, gradient and optimizer bytes per rank are divided by the largest
of the ranks' `end` records (goal: 1.00 +- 0.01).
Activations: the planned bytes of one forward of each project model (the sum of its blocks,
measured one by one at a reference batch and scaled) are divided by what autograd saves in
one forward of the whole model at two other batch sizes (goal: within 10%).
Tensor parallelism (bench/planlayouts.py): `tp` and `mix` layouts (dp2 x tp2, tp2 x pp2, dp2 x tp2 x pp2;
every shard mode, with and without recomputation) on the transformer and the mlp, planned from the TP
rank's measured profile against the runs' `end` records and `saved_peak_bytes`.
Usage: python -m bench.plan [--model mlp] [--quick] [--layouts yes|no|only]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from analysis import plan
from bench import planlayouts
from bench.runs import run_and_read
from contract import registry
from contract.config import ExperimentConfig, validate
from contract.tables import MODELS

LAYOUT_MODELS = registry.get("tp").models  # the models tp and mix cut


def layouts(strategy: str, ranks: list[int]) -> list[tuple[int, int]]:
    """(nodes, procs) per rank count that the strategy can run."""
    record = registry.get(strategy)
    out = []
    for w in ranks:
        nodes, procs = (w // 2, 2) if record.stage_replicas and w >= 2 else (w, 1)
        cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=procs, global_batch=64)
        try:
            validate(cfg)
        except ValueError:
            continue
        out.append((nodes, procs))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.plan", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", help="model of the state runs (default: mlp)")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--quick", action="store_true", help="2 ranks, a few strategies")
    p.add_argument("--layouts", default="yes", choices=("yes", "no", "only"),
                   help="the tp / mix rows (bench/planlayouts.py): yes, no, or only them")
    args = p.parse_args(argv)
    if args.layouts == "only":
        with tempfile.TemporaryDirectory(prefix="bench-plan-") as work:
            planlayouts.main(work, LAYOUT_MODELS, args.quick)
        return 0
    from trainers.common.activations import planned_and_saved, profile_model

    ranks = [2] if args.quick else [int(r) for r in args.ranks.split(",")]
    names = ("ddp", "ps", "zero", "fsdp", "pipeline") if args.quick else registry.NAMES
    blocks = [plan.Block(b.params, b.saved_per_sample, b.output_per_sample, b.shapes)
              for b in profile_model(args.model, "synthetic")]
    shape = plan.ModelShape(args.model, tuple(blocks))
    print(f"model state, {args.model} ({shape.params:,} parameters), Adam fp32: planned / largest `end` record")
    print(f"{'strategy':>9} {'ranks':>5} {'params':>7} {'grads':>7} {'optim':>7}")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as work:
        for strategy in names:
            for nodes, procs in layouts(strategy, ranks):
                if registry.get(strategy).min_gpus:
                    continue  # needs GPUs
                if registry.get(strategy).kind in ("tensor", "mixture"):
                    continue  # planned from their TP-cut profile: the tp / mix rows below
                data = run_and_read(work, f"{strategy}-{nodes}x{procs}", strategy=strategy, nodes=nodes,
                                    procs_per_node=procs, model=args.model, optimizer="adam", lr=0.001, steps=1,
                                    warmup=0, global_batch=64)
                largest = {k: float(data.ranks[f"end_{k}"].max()) for k in ("param_bytes", "grad_bytes", "optim_bytes")}
                o = plan.Options([nodes], procs, 64, 4, "1f1b", "adam", "fp32", 80 * plan.GIB)
                row = plan.plan_one(registry.get(strategy), shape, nodes, o)
                ratios = [row[k] / m if m else (1.0 if row[k] == 0 else float("inf")) for k, m in largest.items()]
                worst = max(worst, *(abs(r - 1) for r in ratios))
                print(f"{strategy:>9} {nodes * procs:>5} " + " ".join(f"{r:>7.3f}" for r in ratios), flush=True)
    print(f"largest deviation {worst:.4f} (goal <= 0.01)")
    print("activations: planned (blocks measured at 16, scaled) / saved in one forward of the whole model")
    print(f"{'model':>12} {'batch':>5} {'planned B':>12} {'measured B':>12} {'ratio':>6}")
    for model in (("mlp", "cnn") if args.quick else MODELS):
        for batch, planned, measured in planned_and_saved(model, (4, 24)):
            print(f"{model:>12} {batch:>5} {planned:>12.0f} {measured:>12} {planned / measured:>6.3f}", flush=True)
    if args.layouts == "yes":
        with tempfile.TemporaryDirectory(prefix="bench-plan-") as work:
            planlayouts.main(work, LAYOUT_MODELS, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
