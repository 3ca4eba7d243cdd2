"""Benchmark: the `pipeline` strategy's step against the bound its stages' compute allows.

    python -m bench.pipeline [--quick] [--chunks 1,2,4,8,16] [--rounds 7] [--profile DIR]

Two ranks (gloo on 127.0.0.1, one core and one torch thread each, as the simulate backend
runs them) build the real `PipelineTrainer` for every schedule x chunks point and time its
`train_step`, the call the training loop times as `step_s`. In the same processes, right
before or after it (the side alternates every round), each rank times its stage's compute
alone: zero_grad, M micro-batches of forward (+ loss on the last stage) and backward in the
schedule's order, the optimizer step; no communication, no schedule. That gives, per stage
k, c_k = the compute of one micro-batch and o_k = zero_grad + optimizer step. The bound is

    ideal = sum_k c_k + (M - 1) x max_k c_k + max_k o_k

the critical path of a fill-drain schedule over K stages when messages cost nothing: the
first micro-batch crosses every stage, the other M - 1 follow at the slowest stage's pace
(for equal stages (M + K - 1) c, i.e. the bubble (K-1)/(M+K-1)). Because c_k is measured at
the micro-batch size, a smaller micro-batch's different speed per sample is in the bound
and not credited to the schedule. What it leaves out is what the ratio ideal / measured
charges: sends and receives, waiting, the schedule's bookkeeping per micro-batch and ours.
Each round gives one ratio per point; the table shows their median and spread. Column
cpu+ compares CPU rather than wall time (the main thread's, step against compute): the work
the schedule and the sends add, which the machine's other load does not change.

`gpipe` (torchgpipe, one process) is checked the same way on one core: its step against the
whole model's compute over the same micro-batches. At the largest chunks, one step per rank
and schedule is profiled (cProfile on the thread's CPU clock) and summarised: the stage's
compute against the rest, with the rest's largest entries (`--profile DIR` saves the
profiles). Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError
from simulate.launcher import free_port, plan_cpus
from trainers.common import distenv
from trainers.common.context import Context
from trainers.common.data import GlobalBatches, load
from trainers.common.logwriter import RankLog
from trainers.common.stages import StageTrainer
from trainers.common.trainer import loss_fn

K = 2
GOALS = {4: 0.95, 8: 0.90, 16: 0.85}  # chunks -> the ideal / step ratio to reach


@dataclass(frozen=True)
class Point:
    strategy: str
    schedule: str
    chunks: int

    @property
    def name(self) -> str:
        return f"{self.schedule if self.strategy == 'pipeline' else 'torchgpipe'}-c{self.chunks}"


def make_context(cfg: ExperimentConfig, env: distenv.DistEnv, work: str) -> Context:
    """A rank's Context as setup.setup builds it, for a process group that already exists."""
    data = load(cfg.dataset, cfg.seed, cfg.data_dir, tokens=cfg.model == "transformer")
    run_dir = os.path.join(work, f"{cfg.strategy}-{cfg.schedule}-c{cfg.chunks}")
    return Context(cfg, env, torch.device("cpu"), data, GlobalBatches(len(data.y_train), cfg.global_batch, cfg.seed),
                   RankLog(run_dir, env.rank, env.node, attempt=1), run_dir, 1)


class StageCompute:
    """One stage's compute for a step of M micro-batches, without communication: the bound's
    c_k (per micro-batch) and o_k (zero_grad + optimizer step). The passes run in the
    schedule's order (GPipe: every forward, then every backward; 1F1B: K - k forwards first,
    then one backward and one forward), so the activations alive at once, and what the caches
    hold, are the schedule's too."""

    def __init__(self, trainer: StageTrainer, x: torch.Tensor, y: torch.Tensor, chunks: int, schedule: str) -> None:
        self.t = trainer
        self.xs, self.ys = x.chunk(chunks), y.chunk(chunks)
        gen = torch.Generator().manual_seed(trainer.index)
        if not trainer.is_first:
            b = trainer.in_boundary()
            self.inputs = [torch.randn((len(ym), *b.shape), generator=gen).to(b.dtype) for ym in self.ys]
        if not trainer.is_last:
            b = trainer.out_boundary()
            self.grads = [torch.randn((len(ym), *b.shape), generator=gen).to(b.dtype) for ym in self.ys]
        ahead = chunks if schedule == "gpipe" else min(chunks, trainer.count - trainer.index)
        # The order of passes: ("f", i) forward of micro-batch i, ("b", i) its backward.
        self.order: list[tuple[str, int]] = [("f", i) for i in range(ahead)]
        for i in range(chunks):
            self.order.append(("b", i))
            if ahead + i < chunks:
                self.order.append(("f", ahead + i))

    def run(self) -> tuple[float, float, float]:
        """(seconds of the M forward+backward passes, seconds of zero_grad + optimizer step,
        this thread's CPU seconds for all of it)."""
        t = self.t
        cpu0, t0 = time.thread_time(), time.perf_counter()
        t.optimizer.zero_grad(set_to_none=False)
        t1 = time.perf_counter()
        pending: dict[int, torch.Tensor] = {}
        for kind, i in self.order:
            if kind == "f":
                h = self.xs[i] if t.is_first else self.inputs[i].requires_grad_()
                out = t.module(h)
                pending[i] = loss_fn(out, self.ys[i]) if t.is_last else out
            elif t.is_last:
                pending.pop(i).backward()
            else:
                pending.pop(i).backward(self.grads[i])
        t2 = time.perf_counter()
        t.optimizer.step()
        t3 = time.perf_counter()
        return t2 - t1, (t1 - t0) + (t3 - t2), time.thread_time() - cpu0


def _gather(values: list[float]) -> torch.Tensor:
    """Every rank's `values`, as a (world, len) tensor."""
    mine = torch.tensor(values, dtype=torch.float64)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return torch.stack(out)


def _timed_steps(trainer, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """(seconds of a step, the slowest rank's; the ranks' mean main-thread CPU seconds of a step)."""
    dist.barrier()
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)
    both = _gather([(time.perf_counter() - t0) / steps, (time.thread_time() - cpu0) / steps])
    return float(both[:, 0].max()), float(both[:, 1].mean())


def _ideal(compute: StageCompute, chunks: int, steps: int) -> tuple[float, float]:
    """(the bound on a step's seconds; the ranks' mean main-thread CPU seconds of the compute)."""
    dist.barrier()
    fb, opt, cpu = 0.0, 0.0, 0.0
    for _ in range(steps):
        a, b, c = compute.run()
        fb, opt, cpu = fb + a / steps, opt + b / steps, cpu + c / steps
    per_rank = _gather([fb / chunks, opt, cpu])  # rows: stages (rank = stage here)
    c, o = per_rank[:, 0], per_rank[:, 1]
    return float(c.sum() + (chunks - 1) * c.max() + o.max()), float(per_rank[:, 2].mean())


# The stage's own compute in a profile: module calls, autograd's backward, the loss.
COMPUTE_ROOTS = ("_wrapped_call_impl", "run_backward", "loss_fn")


# torch's schedules wait for their receives (and 1F1B for some sends) in these functions.
WAIT_FUNCS = ("_wait_batch_p2p", "_wait_and_release_fwd_send")


def _profile_step(trainer, x: torch.Tensor, y: torch.Tensor, out_dir: str, name: str,
                  rank: int) -> tuple[float, float, list[tuple[float, str]], float, float]:
    """Two profiled steps. On this thread's CPU clock: (CPU seconds of the step, of its stage
    compute, the 6 largest own times outside the compute); on the wall clock: (seconds of the
    step, of it spent in the schedule's waits). Saves both profiles under `out_dir` if given."""
    out = []
    for clock, label in ((time.thread_time, "cpu"), (time.perf_counter, "wall")):
        dist.barrier()
        prof = cProfile.Profile(clock)
        prof.enable()
        trainer.train_step(x, y)
        prof.disable()
        if out_dir:
            prof.dump_stats(os.path.join(out_dir, f"{name}-rank{rank}-{label}.prof"))
        out.append(pstats.Stats(prof).stats)  # type: ignore[attr-defined]
    cpu, wall = out

    def cumulative(stats: dict, names: tuple[str, ...]) -> float:
        return sum(v[3] for (_, _, fn), v in stats.items() if fn in names)

    # Own time of everything called only from within the compute: close over the callers' graph.
    inside: set = {k for k in cpu if k[2] in COMPUTE_ROOTS or k[2].startswith("<method 'run_backward'")}
    grew = True
    while grew:
        grew = False
        for key, v in cpu.items():
            if key not in inside and v[4] and all(caller in inside for caller in v[4]):
                inside.add(key)
                grew = True
    compute = sum(cpu[k][2] for k in inside)
    outside = sorted(((v[2], f"{os.path.basename(f)}:{fn}") for (f, line, fn), v in cpu.items()
                      if (f, line, fn) not in inside), reverse=True)[:6]
    return (cumulative(cpu, ("train_step",)), compute, outside, cumulative(wall, ("train_step",)),
            cumulative(wall, WAIT_FUNCS))


def _pipeline_worker(rank: int, port: int, args: argparse.Namespace, work: str, results: mp.SimpleQueue) -> None:
    from trainers.pipeline import PipelineTrainer

    plan = plan_cpus(K)
    os.sched_setaffinity(0, plan.cores[rank])
    torch.set_num_threads(plan.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=K)
    env = distenv.DistEnv(rank, K, rank, K, f"n{rank}", "127.0.0.1", port, "env")
    points = [Point("pipeline", s, c) for s in ("gpipe", "1f1b") for c in args.chunk_list]
    setups = {}
    for p in points:
        cfg = ExperimentConfig(strategy="pipeline", nodes=1, procs_per_node=K, model=args.model,
                               global_batch=args.batch, chunks=p.chunks, schedule=p.schedule, balance=args.balance)
        ctx = make_context(cfg, env, work)
        trainer = PipelineTrainer(ctx)
        idx = ctx.batches.shard(0, 0, 1)
        x, y = ctx.data.x_train[idx], ctx.data.y_train[idx]
        setups[p] = (trainer, x, y, StageCompute(trainer, x, y, p.chunks, p.schedule))
    rows: dict[Point, list[tuple[float, ...]]] = {p: [] for p in points}
    for rnd in range(args.warmup + args.rounds):
        shift = rnd % len(points)
        for p in points[shift:] + points[:shift]:  # drift on a shared machine hits every point alike
            trainer, x, y, compute = setups[p]
            if rnd % 2:
                ideal, ideal_cpu = _ideal(compute, p.chunks, args.steps)
                step, step_cpu = _timed_steps(trainer, x, y, args.steps)
            else:
                step, step_cpu = _timed_steps(trainer, x, y, args.steps)
                ideal, ideal_cpu = _ideal(compute, p.chunks, args.steps)
            if rnd >= args.warmup:
                rows[p].append((step, ideal, step_cpu, ideal_cpu))
    profiles = {}
    for p in points:
        if p.chunks == max(args.chunk_list):
            trainer, x, y, _ = setups[p]
            profiles[p] = _profile_step(trainer, x, y, args.profile, p.name, rank)
    gathered: list = [None] * K
    dist.all_gather_object(gathered, profiles)
    if rank == 0:
        results.put({"rows": rows, "profiles": gathered})
    dist.barrier()
    dist.destroy_process_group()


def _gpipe_worker(args: argparse.Namespace, work: str, results: mp.SimpleQueue) -> None:
    """torchgpipe on one core: its step against the whole model's compute on the same micro-batches."""
    from trainers.gpipe import GPipeTrainer

    os.sched_setaffinity(0, plan_cpus(K).cores[0])
    torch.set_num_threads(1)
    env = distenv.DistEnv(0, 1, 0, 1, "n0", "127.0.0.1", 0, "single")
    points = [Point("gpipe", "gpipe", c) for c in args.chunk_list]
    out: dict[Point, list[float]] = {p: [] for p in points}
    setups = {}
    for p in points:
        cfg = ExperimentConfig(strategy="gpipe", model=args.model, global_batch=args.batch, chunks=p.chunks,
                               balance=args.balance)
        ctx = make_context(cfg, env, work)
        trainer = GPipeTrainer(ctx)
        idx = ctx.batches.shard(0, 0, 1)
        setups[p] = trainer, ctx.data.x_train[idx], ctx.data.y_train[idx]
    for rnd in range(args.warmup + args.rounds):
        for p in points:
            trainer, x, y = setups[p]
            xs, ys = x.chunk(p.chunks), y.chunk(p.chunks)

            def compute(trainer=trainer, xs=xs, ys=ys) -> None:
                trainer.optimizer.zero_grad(set_to_none=False)
                for xm, ym in zip(xs, ys, strict=True):
                    loss_fn(trainer.module(xm), ym).backward()
                trainer.optimizer.step()

            times = {}
            for side in (("ideal", "step") if rnd % 2 else ("step", "ideal")):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    compute() if side == "ideal" else trainer.train_step(x, y)
                times[side] = (time.perf_counter() - t0) / args.steps
            if rnd >= args.warmup:
                out[p].append(times["ideal"] / times["step"])
    results.put(out)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _goal(chunks: int, ratio: float) -> str:
    goal = GOALS.get(chunks)
    if goal is None:
        return "-"
    return f">= {goal:.2f} {'met' if ratio >= goal else 'MISSED'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--chunks", default="1,2,4,8,16")
    p.add_argument("--balance", default="", help="blocks per stage, or params/time (default: by parameters)")
    p.add_argument("--steps", type=int, default=2, help="steps per timing (each side of a round)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (median and spread of the ratio)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--profile", default="", help="also save the cProfile of each rank's profiled step here")
    p.add_argument("--quick", action="store_true", help="chunks 4 and 16, 3 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.chunks, args.rounds = "4,16", 3
    try:
        try:
            args.chunk_list = [int(c) for c in args.chunks.split(",")]
        except ValueError:
            raise ConfigError(f"invalid --chunks {args.chunks!r}: give a comma list of integers") from None
        for c in args.chunk_list:
            validate(ExperimentConfig(strategy="pipeline", nodes=1, procs_per_node=K, model=args.model,
                                      global_batch=args.batch, chunks=c, balance=args.balance))
        if args.rounds < 3 or args.steps < 1 or args.warmup < 0:
            raise ConfigError("invalid --rounds/--steps/--warmup: need rounds >= 3, steps >= 1, warmup >= 0")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    load_before = os.getloadavg()[0]
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        results = ctx.SimpleQueue()
        mp.start_processes(_pipeline_worker, args=(free_port(), args, work, results), nprocs=K, join=True,
                           start_method="fork")
        res = results.get()
        gq = ctx.SimpleQueue()
        proc = ctx.Process(target=_gpipe_worker, args=(args, work, gq))
        proc.start()
        gpipe = gq.get()
        proc.join()
    print(f"model {args.model}, global batch {args.batch}, {K} ranks x 1 core x 1 thread, gloo on 127.0.0.1, "
          f"balance {args.balance or 'params'}; {args.rounds} rounds of {args.steps} steps a side")
    print("ideal = sum_k c_k + (M-1) max_k c_k + max_k o_k, from each stage's compute timed alone in the same "
          "round; ratio = ideal / step, median [min-max] over rounds; cpu+ = the step's main-thread CPU over "
          "the compute's (the schedule's and the sends' own work)")
    print(f"{'point':>10} {'step ms':>8} {'ideal ms':>8} {'ratio':>17} {'goal':>13} {'cpu+':>6}")
    for pt, rows in res["rows"].items():
        step, ideal, step_cpu, ideal_cpu = (statistics.median(col) for col in zip(*rows, strict=True))
        ratio = statistics.median(i / s for s, i, _, _ in rows)
        print(f"{pt.name:>10} {step * 1e3:>8.1f} {ideal * 1e3:>8.1f} "
              f"{_spread([i / s for s, i, _, _ in rows]):>17} {_goal(pt.chunks, ratio):>13} "
              f"{step_cpu / ideal_cpu - 1:>+6.0%}")
    print("torchgpipe (gpipe strategy) on one core: its step against the whole model's compute on the same "
          "micro-batches (ratio = compute / step, median [min-max])")
    for pt, ratios in gpipe.items():
        print(f"{pt.name:>14} {_spread(ratios):>17}")
    print("profiled steps per rank (cProfile): on the wall clock, the time in the schedule's p2p waits (the "
          "bubble alone is about one micro-batch of the other stage); on the main thread's CPU clock, the stage's "
          "compute (module calls, autograd, loss) against the rest, with the rest's largest own times in ms"
          + (f"; saved under {args.profile}" if args.profile else ""))
    for rank, profiles in enumerate(res["profiles"]):
        for pt, (total, compute, outside, wall, waits) in profiles.items():
            top = ", ".join(f"{name} {sec * 1e3:.1f}" for sec, name in outside)
            print(f"{pt.name:>10} rank {rank}: wall {wall * 1e3:.1f} ms, {waits * 1e3:.1f} of it in the schedule's "
                  f"waits; CPU {total * 1e3:.1f} ms, compute {compute * 1e3:.1f}, rest {(total - compute) * 1e3:.1f}: "
                  f"{top}")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
