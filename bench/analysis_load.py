"""Benchmark: load and summarise 256 ranks x 2000 steps of logs, against a plain json.loads loop.

    python -m bench.analysis_load [--ranks 256] [--steps 2000] [--runs 3]

Writes a synthetic sweep in the real on-disk format (one experiment, 32 nodes x 8 ranks) to a
temporary directory, then alternates, in the same process: (a) the baseline, a plain loop of
`json.loads` over every line of every rank file (parsing only: no DataFrame, no metrics), and
(b) the analysis: `load_sweep` + `analyse` (DataFrames, per-step maxima, losses, summary,
speed-up tables). Reports the median of the runs of each and their ratio (baseline / analysis:
above 1 means the full analysis is faster than merely parsing the lines with json.loads).
The files are read once before timing so both sides see a warm page cache.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

from analysis.load import load_sweep
from analysis.metrics import analyse
from analysis.synthetic import write_sweep


def json_loop(path: str) -> int:
    n = 0
    for name in sorted(glob.glob(os.path.join(path, "*", "rank-*.jsonl"))):
        with open(name) as f:
            for line in f:
                if line.strip():
                    json.loads(line)
                    n += 1
    return n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.analysis_load", description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=256)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="64 ranks x 500 steps")
    p.add_argument("--attempt-field", action="store_true",
                   help="every record carries `attempt` (newer writers), not only the start record")
    args = p.parse_args(argv)
    if args.quick:
        args.ranks, args.steps = 64, 500
    if args.ranks < 8 or args.ranks % 8 or args.steps < 3 or args.runs < 1:
        print("error: --ranks must be a multiple of 8, --steps >= 3, --runs >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ts-bench-") as tmp:
        t = time.perf_counter()
        path = write_sweep(tmp, "bench", strategies=("ddp",), nodes=(args.ranks // 8,), procs=8, batch=8 * args.ranks,
                           steps=args.steps, steps_per_epoch=max(args.steps // 10, 1),
                           attempt_field=args.attempt_field)
        size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*", "rank-*.jsonl")))
        print(f"wrote {args.ranks} ranks x {args.steps} steps ({size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t:.1f} s")
        records = json_loop(path)  # warm the page cache for both sides
        base, ours = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            json_loop(path)
            base.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = analyse(load_sweep(path))
            ours.append(time.perf_counter() - t)
        rows = len(result.data.steps)
        assert rows == args.ranks * args.steps, f"loaded {rows} rank-steps, expected {args.ranks * args.steps}"
        b, o = statistics.median(base), statistics.median(ours)
        print(f"json.loads loop (parse only): {b:.2f} s for {records} records (median of {args.runs})")
        print(f"analysis load + summarise:    {o:.2f} s for {rows} rank-steps (median of {args.runs})")
        print(f"ratio json.loads loop / analysis: {b / o:.2f}x ({'faster' if o < b else 'slower'} than parsing alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
