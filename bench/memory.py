"""Benchmark (b): per-rank model-state bytes of `zero` and `fsdp` against the formulas.

Plain Adam in fp32 holds 16 bytes per parameter: 4 weights, 4 gradients, 8 optimizer state.
ZeRO stage 1 shards the optimizer state: 4 + 4 + 8/N. FSDP shards all of it: 16/N. The
formula is the registry's (`registry.get(s).state_bytes`), the strategies its sharded ones.
Runs each sharded strategy for one step at 2 and 4 ranks (Adam, transformer: its many similar
tensors let ZeRO's whole-tensor partition be even) and prints, per layout, the largest
rank's measured bytes (from the `end` record), the formula, and measured/formula.
Usage: python -m bench.memory [--model transformer] [--ranks 2,4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from bench.runs import run_and_read
from contract import registry


def formula_bytes(strategy: str, params: int, n: int) -> float:
    """What the registry says the largest rank holds (parameters + gradients + Adam state)."""
    return float(registry.get(strategy).state_bytes(params, n, "adam").total)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--quick", action="store_true", help="2 ranks only")
    args = p.parse_args(argv)
    if args.quick:
        args.ranks = "2"
    from trainers.common.data import synthetic
    from trainers.common.models import build_model

    params = sum(q.numel() for q in build_model(args.model, synthetic(0, args.model == "transformer").spec,
                                                 0).parameters())
    dataset = "synthetic"
    print(f"model {args.model}: {params} parameters; plain Adam fp32 = 16 B/param = {16 * params} B per rank")
    print(f"{'strategy':>8} {'ranks':>5} {'params B':>10} {'grads B':>10} {'optim B':>10} {'total B':>10} "
          f"{'formula B':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        for strategy in registry.names(kind="sharded"):
            for n in (int(r) for r in args.ranks.split(",")):
                ranks = run_and_read(work, f"{strategy}-{n}", strategy=strategy, nodes=1, procs_per_node=n,
                                     model=args.model, dataset=dataset, optimizer="adam", lr=0.001, steps=1,
                                     warmup=0)
                ends = ranks.ranks[["end_param_bytes", "end_grad_bytes", "end_optim_bytes"]].astype(int)
                worst = ends.loc[ends.sum(axis=1).idxmax()]
                pb, gb, ob = (int(worst[f"end_{k}_bytes"]) for k in ("param", "grad", "optim"))
                total = pb + gb + ob
                formula = formula_bytes(strategy, params, n)
                print(f"{strategy:>8} {n:>5} {pb:>10} {gb:>10} {ob:>10} {total:>10} {formula:>10.0f} "
                      f"{total / formula:>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
