"""Benchmark (a): pipeline speed-up over naive model parallelism on 2 ranks.

Runs `mp` and `pipeline` (GPipe and 1F1B schedules) on 2 simulated ranks (one core each),
for chunks 1, 2, 4, 8, 16, on a model/batch where compute dominates and the two stages can
be even (transformer: embedding + 2 decoder blocks | 2 decoder blocks + head, balanced by
parameter count; global batch 128). The ideal K*M/(M+K-1) assumes equal stages, which cnn
and mlp cannot give at 2 stages (one block holds most of their time). Reports the median
step time after warm-up, the measured speed-up over `mp`, the ideal, and measured/ideal.
Usage: python -m bench.pipeline [--model transformer] [--batch 128] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from analysis.load import SweepData, load_run
from simulate.launcher import run_experiment
from trainers.common.config import ConfigError, ExperimentConfig, validate


def run_and_read(work: str, name: str, **kw) -> SweepData:
    """Run one experiment under `work`; return its logs as analysis.load reads them (exit on failure)."""
    cfg = ExperimentConfig(**kw)
    validate(cfg)
    run_dir = os.path.join(work, name)
    status = run_experiment(cfg, run_dir, time_limit_s=900)
    if status["state"] != "COMPLETED":
        sys.exit(f"bench: {name} {status['state']}: see {run_dir}")
    return load_run(run_dir)


def median_step_s(data: SweepData) -> float:
    """Median over timed steps of the slowest rank's step time (a step ends when every rank is done)."""
    timed = data.steps[~data.steps["warmup"]]
    return float(timed.groupby("step")["step_s"].max().median())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--chunks", default="1,2,4,8,16")
    p.add_argument("--balance", default="", help="blocks per stage, or params/time (default: by parameters)")
    p.add_argument("--quick", action="store_true", help="chunks 1 and 4 only, 4 timed steps")
    args = p.parse_args(argv)
    if args.quick:
        args.chunks, args.steps = "1,4", 4
    chunks = [int(c) for c in args.chunks.split(",")]
    balance = args.balance
    common = dict(nodes=1, procs_per_node=2, model=args.model, global_batch=args.batch, steps=args.steps,
                  warmup=args.warmup, balance=balance)
    try:
        for c in chunks:
            validate(ExperimentConfig(strategy="pipeline", chunks=c, **common))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    K = 2
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        mp_s = median_step_s(run_and_read(work, "mp", strategy="mp", **common))
        print(f"model {args.model}, global batch {args.batch}, 2 ranks x 1 core, balance {balance or 'params'}; "
              f"median step after {args.warmup} warm-up steps")
        print(f"mp (1 micro-batch): {mp_s * 1000:.1f} ms/step")
        print(f"{'schedule':>8} {'chunks':>6} {'step ms':>8} {'speed-up':>8} {'ideal':>6} {'ratio':>6}")
        for schedule in ("gpipe", "1f1b"):
            for c in chunks:
                s = median_step_s(run_and_read(work, f"{schedule}-c{c}", strategy="pipeline", schedule=schedule,
                                               chunks=c, **common))
                ideal = K * c / (c + K - 1)
                speed = mp_s / s
                print(f"{schedule:>8} {c:>6} {s * 1000:>8.1f} {speed:>8.2f} {ideal:>6.2f} {speed / ideal:>6.2f}",
                      flush=True)
        # The machine may be shared: a second mp measurement shows how much the baseline drifted.
        mp_again = median_step_s(run_and_read(work, "mp-again", strategy="mp", **common))
        print(f"mp again at the end: {mp_again * 1000:.1f} ms/step ({mp_again / mp_s:.2f} x the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
