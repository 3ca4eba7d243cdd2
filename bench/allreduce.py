"""All-reduce bandwidth: our ring and parameter server against gloo's `dist.all_reduce`.

    python -m bench.allreduce [--quick] [--sizes-mb 1,16,64] [--ranks 2,4] [--runs 15] [--pin]

For each world size, one set of processes (gloo over 127.0.0.1) times the three
algorithms on the same float32 tensors, interleaved (the order rotates every repetition, so
drift on a shared machine hits all three alike). A run is timed from a barrier to the
slowest rank's finish; the bandwidths are from the median of `--runs` runs after `--warmup`.
The ratios to gloo are the median [first-third quartile] of each repetition's own ratio
(gloo's time / ours, from runs seconds apart), which a loaded machine disturbs less than a
ratio of medians. `--pin` puts each rank on its own core (round-robin when there are fewer
cores), as the simulate launcher does; by default the ranks float over every core.

    algbw = size / time        busbw = size x 2(N-1)/N / time

busbw is the all-reduce's bus bandwidth (what each rank's link must carry, as in
nccl-tests); ps gets the same formula so every column compares times on one scale, though
a server really carries (N-1) x size each way. Each run also checks that ring and ps give
gloo's result. Ratios > 1 mean faster than gloo; the goal is ring >= 1.0 x gloo
at 16 and 64 MiB, printed next to the ratio. Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simulate.launcher import free_port, plan_cpus
from trainers.common.collectives import ps_allreduce, ring_allreduce

MIB = 1024 * 1024
RING_GOAL = {16: 1.0, 64: 1.0}  # size in MiB -> ring / gloo busbw to reach
ALGORITHMS: dict[str, Callable[[torch.Tensor], object]] = {
    "gloo": dist.all_reduce,
    "ring": ring_allreduce,
    "ps": ps_allreduce,
}


class BenchError(ValueError):
    pass


def _int_list(name: str, text: str, minimum: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise BenchError(f"invalid --{name} {text!r}: give a comma list of integers") from None
    if not values or any(v < minimum for v in values):
        raise BenchError(f"invalid --{name} {text!r}: every value must be >= {minimum}")
    return values


def _worker(rank: int, world: int, port: int, sizes_mb: list[int], warmup: int, runs: int, pin: bool,
            results: mp.SimpleQueue) -> None:
    if pin:
        os.sched_setaffinity(0, plan_cpus(world).cores[rank])
    torch.set_num_threads(1)  # the collectives, not intra-op threads, are what is measured
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    names = list(ALGORITHMS)
    out: dict[str, dict[str, list[float] | bool]] = {}
    for mb in sizes_mb:
        numel = mb * MIB // 4
        src = torch.randn(numel, generator=torch.Generator().manual_seed(rank))
        x = torch.empty_like(src)
        times: dict[str, list[float] | bool] = {n: [] for n in names}
        for rep in range(warmup + runs):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                x.copy_(src)
                dist.barrier()
                start = time.perf_counter()
                ALGORITHMS[name](x)
                elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a collective is done when its slowest rank is
                if rep >= warmup:
                    times[name].append(float(elapsed))  # type: ignore[union-attr]
        # Correctness on this size: ours against gloo's result.
        want = src.clone()
        dist.all_reduce(want)
        for name in ("ring", "ps"):
            x.copy_(src)
            ALGORITHMS[name](x)
            ok = torch.tensor([1.0 if torch.allclose(x, want, rtol=1e-5, atol=1e-5) else 0.0])
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            times[f"{name}_ok"] = bool(ok.item() == 1.0)
        out[str(mb)] = times
    if rank == 0:
        results.put(out)
    dist.barrier()
    dist.destroy_process_group()


def measure(world: int, sizes_mb: list[int], warmup: int, runs: int, pin: bool) -> dict:
    results = mp.get_context("fork").SimpleQueue()
    mp.start_processes(_worker, args=(world, free_port(), sizes_mb, warmup, runs, pin, results), nprocs=world,
                       join=True, start_method="fork")
    return results.get()


def _ratio(gloo_s: list[float], ours_s: list[float]) -> dict[str, float]:
    """gloo's time / ours, per repetition (the runs of one repetition are seconds apart):
    median and quartiles. The same as the busbw ratio, run by run."""
    per_run = [g / o for g, o in zip(gloo_s, ours_s, strict=True)]
    q1, median, q3 = statistics.quantiles(per_run, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def _goal(size_mb: int, ratio: float) -> str:
    goal = RING_GOAL.get(size_mb)
    return "-" if goal is None else f">= {goal:.2f} {'met' if ratio >= goal else 'MISSED'}"


def table(rows: list[dict]) -> str:
    head = (f"{'size':>7} {'ranks':>5} | {'gloo algbw':>10} {'busbw':>7} | {'ring algbw':>10} {'busbw':>7} | "
            f"{'ps algbw':>8} {'busbw':>7} | {'ring/gloo [q1-q3]':>17} {'goal':>12} | {'ps/gloo':>7} | ok")
    lines = [head, "-" * len(head)]
    for r in rows:
        bw = {n: r[n] for n in ALGORITHMS}
        ring = r["ring/gloo"]
        spread = f"{ring['median']:.2f} [{ring['q1']:.2f}-{ring['q3']:.2f}]"
        lines.append(f"{r['size_mb']:>4} MiB {r['ranks']:>5} | "
                     f"{bw['gloo']['algbw']:>10.3f} {bw['gloo']['busbw']:>7.3f} | "
                     f"{bw['ring']['algbw']:>10.3f} {bw['ring']['busbw']:>7.3f} | "
                     f"{bw['ps']['algbw']:>8.3f} {bw['ps']['busbw']:>7.3f} | "
                     f"{spread:>17} {_goal(r['size_mb'], ring['median']):>12} | "
                     f"{r['ps/gloo']['median']:>7.2f} | {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.allreduce", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", default="1,16,64", help="tensor sizes in MiB (float32)")
    parser.add_argument("--ranks", default="2,4", help="world sizes")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per point (median; at least 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--quick", action="store_true", help="1 and 16 MiB only")
    parser.add_argument("--pin", action="store_true", help="each rank on its own core, as the simulate launcher")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        sizes = [1, 16] if args.quick else _int_list("sizes-mb", args.sizes_mb, 1)
        worlds = _int_list("ranks", args.ranks, 2)
        if args.runs < 5:
            raise BenchError(f"invalid --runs {args.runs}: at least 5 (the figure is a median)")
        if args.warmup < 0:
            raise BenchError(f"invalid --warmup {args.warmup}: must be >= 0")
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    print(f"all-reduce of float32 tensors, gloo on 127.0.0.1, {cores} cores, ranks "
          f"{'pinned one core each' if args.pin else 'floating'}; median of {args.runs} runs after {args.warmup} "
          "warm-up; bandwidths in GB/s (1e9 B/s); ratios: median [quartiles] of each repetition's ratio")
    load_before = os.getloadavg()[0]
    rows = []
    for world in worlds:
        if world > cores:
            print(f"note: {world} ranks on {cores} cores: ranks share cores, so the figures mix in scheduling")
        measured = measure(world, sizes, args.warmup, args.runs, args.pin)
        for mb in sizes:
            m = measured[str(mb)]
            nbytes = mb * MIB
            row: dict = {"size_mb": mb, "ranks": world, "ok": m["ring_ok"] and m["ps_ok"]}
            for name in ALGORITHMS:
                t = statistics.median(m[name])
                row[name] = {"median_s": t, "runs_s": m[name], "algbw": nbytes / t / 1e9,
                             "busbw": nbytes * 2 * (world - 1) / world / t / 1e9}
            row["ring/gloo"] = _ratio(m["gloo"], m["ring"])
            row["ps/gloo"] = _ratio(m["gloo"], m["ps"])
            rows.append(row)
    print(table(rows))
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {cores} cores; "
          "a loaded machine makes every column noisy")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if not all(r["ok"] for r in rows):
        print("error: ring or ps disagreed with gloo's all_reduce (column ok)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
