"""Benchmark: `make plots` of 1024 ranks x 2000 steps, first and second, against a plain json.loads loop.

    python -m bench.analysis_load [--ranks 1024] [--steps 2000] [--runs 3] [--attempt-field] [--quick]
                                  [--keep DIR] [--svg]

Writes a synthetic sweep in the real on-disk format (one `ddp` experiment, ranks / 8 nodes x 8
ranks; analysis/synthetic.py) to a temporary directory (`--keep DIR`: to DIR, once, and reused
by later runs of the same size) and reads it once (a warm page cache for
every side). Then, `--runs` rounds, the order of the sides alternating from round to round:

- baseline: in this process, a plain loop that reads every line of every rank file and
  `json.loads` it, nothing else;
- first plots: `python -m analysis.cli plots` (what `make plots` runs: load, metrics,
  summary.csv/json, PNG plots, report.html; `--svg`: with SVGs, as `make plots SVG=1`) as a
  fresh process, the sweep's columnar cache (`.cache/`) deleted before;
- second plots: the same command again, with the cache the first one wrote.

Prints the median and the spread (min-max) of each side, each figure next to its goal: the
ratio baseline / first plots (medians of the same run), the second plots' seconds, and the peak
memory (ru_maxrss of each plots process, its pool workers included: wait4's rusage), the same
figures in CPU seconds (user + sys: less sensitive to a shared machine than wall time), and the
load average before and after (the machine is shared: read the spread with it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from analysis.cache import CACHE_DIR
from analysis.load import load_sweep
from analysis.synthetic import write_sweep
from contract.paths import ROOT

GOAL_RATIO, GOAL_SECOND_S, GOAL_PEAK_GIB = 2.0, 5.0, 4.0


def json_loop(path: str) -> int:
    """The baseline: every line of every rank file through json.loads."""
    n = 0
    for name in sorted(glob.glob(os.path.join(path, "*", "rank-*.jsonl"))):
        with open(name) as f:
            for line in f:
                if line.strip():
                    json.loads(line)
                    n += 1
    return n


def plots(logs: str, sweep: str, svg: bool = False) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS GiB) of one `make plots`, its pool workers included
    (wait4's rusage covers the process and the children it waited for)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", "plots", "--sweep", sweep, "--logs", logs,
                             *(["--svg"] if svg else [])],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"analysis.cli plots failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20  # KiB on Linux


def spread(values: list[float], unit: str = "s") -> str:
    return f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.analysis_load", description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=1024, help="ranks of the experiment, a multiple of 8 (1024)")
    p.add_argument("--steps", type=int, default=2000, help="steps per rank (2000)")
    p.add_argument("--runs", type=int, default=3, help="rounds of the three sides (3)")
    p.add_argument("--quick", action="store_true", help="64 ranks x 500 steps")
    p.add_argument("--attempt-field", action="store_true",
                   help="every record carries `attempt` (what trainers write), not only the start record")
    p.add_argument("--keep", default="", metavar="DIR",
                   help="write the sweep under DIR once and reuse it in later runs (default: a temporary directory)")
    p.add_argument("--svg", action="store_true", help="plots with SVGs too (`make plots SVG=1`)")
    args = p.parse_args(argv)
    if args.quick:
        args.ranks, args.steps = 64, 500
    if args.ranks < 8 or args.ranks % 8 or args.steps < 3 or args.runs < 1:
        print("error: --ranks must be a multiple of 8, --steps >= 3, --runs >= 1", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ts-bench-") as tmp:
        t = time.perf_counter()
        name = f"bench-{args.ranks}x{args.steps}{'-attempt' if args.attempt_field else ''}"
        logs = os.path.abspath(args.keep) if args.keep else tmp
        path = os.path.join(logs, name)
        reused = bool(args.keep) and os.path.isfile(os.path.join(path, "sweep.json"))
        if not reused:
            shutil.rmtree(path, ignore_errors=True)
            write_sweep(logs, name, strategies=("ddp",), nodes=(args.ranks // 8,), procs=8, batch=8 * args.ranks,
                        steps=args.steps, steps_per_epoch=max(args.steps // 10, 1), attempt_field=args.attempt_field)
        size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*", "rank-*.jsonl")))
        print(f"{'reused' if reused else 'wrote'} {args.ranks} ranks x {args.steps} steps ({size / 2**20:.0f} MiB of "
              f"JSONL) in {time.perf_counter() - t:.1f} s: {path}")
        records = json_loop(path)  # warm the page cache for every side
        base, first, second, peaks = [], [], [], []
        cpu: dict[str, list[float]] = {"baseline": [], "first": [], "second": []}
        for r in range(args.runs):
            sides = ["baseline", "plots"] if r % 2 == 0 else ["plots", "baseline"]
            for side in sides:
                if side == "baseline":
                    t, c = time.perf_counter(), time.process_time()
                    json_loop(path)
                    base.append(time.perf_counter() - t)
                    cpu["baseline"].append(time.process_time() - c)
                else:
                    shutil.rmtree(os.path.join(path, CACHE_DIR), ignore_errors=True)
                    for times, which in ((first, "first"), (second, "second")):
                        wall, seconds, peak = plots(logs, name, args.svg)
                        times.append(wall)
                        cpu[which].append(seconds)
                        peaks.append(peak)
        rows = len(load_sweep(path).steps)  # from the cache: every rank-step is there
        assert rows == args.ranks * args.steps, f"loaded {rows} rank-steps, expected {args.ranks * args.steps}"
        cache_mib = sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, CACHE_DIR, "*", "*"))) / 2**20
    ratio = statistics.median(base) / statistics.median(first)
    n = f"{args.runs} run{'s' if args.runs > 1 else ''}"
    print(f"json.loads loop (baseline):  {spread(base)} for {records} records, {n}")
    print(f"first make plots (no cache): {spread(first)}")
    print(f"second make plots (cached):  {spread(second)}; cache {cache_mib:.0f} MiB")
    if (args.ranks, args.steps) != (1024, 2000):
        print(f"(the goals below are set for 1024 ranks x 2000 steps, not {args.ranks} x {args.steps})")
    print(f"ratio baseline / first plots: {ratio:.2f}x   (goal >= {GOAL_RATIO:.1f}x: "
          f"{'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    print(f"second plots: {statistics.median(second):.2f} s   (goal <= {GOAL_SECOND_S:.0f} s: "
          f"{'met' if statistics.median(second) <= GOAL_SECOND_S else 'NOT met'})")
    cpu_ratio = statistics.median(cpu["baseline"]) / statistics.median(cpu["first"])
    print(f"CPU seconds (less sensitive to a shared machine): baseline {spread(cpu['baseline'])}, first plots "
          f"{spread(cpu['first'])} (pool workers included), second plots {spread(cpu['second'])}; "
          f"ratio baseline / first plots {cpu_ratio:.2f}x")
    print(f"peak memory: {max(peaks):.2f} GiB   (goal <= {GOAL_PEAK_GIB:.0f} GiB: "
          f"{'met' if max(peaks) <= GOAL_PEAK_GIB else 'NOT met'})")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
