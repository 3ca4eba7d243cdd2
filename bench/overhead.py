"""Benchmark: the `single` trainer's harness overhead against a bare torch loop.

    python -m bench.overhead [--rounds 5] [--threads 1] [--quick]

A fresh process on a shared machine swings a 3 ms step by +-20%, so the comparisons that
decide the goals run in one process, alternating blocks of steps, several rounds:

1. Allocator. A bare `cnn` loop (one fixed batch, no data set) in fresh processes, alternately
   with the allocator state the trainers choose (trainers/common/allocator.py) and with the one
   a fresh process inherits. Median step time of each; their ratio.
2. Trainer against bare loop, in this process: one allocator state (the chosen one), one thread
   count, so only the harness differs. Blocks of K steps alternate: the bare loop (same model,
   seed, optimizer, batch size and data; it fetches each batch as the trainer does), then the
   trainer's own loop (`setup.setup` + `single.build` + `loop.train`, logging to a
   temporary run directory, read back with analysis.load). A step's time is the median gap
   between consecutive iterations: perf_counter stamps in the bare loop, consecutive `step`
   records in the trainer, so it includes fetching the batch, timers, peak-memory reads and the
   log line. Ratio trainer / bare per round; median and range. Goal at `cnn`: at most 1.01.
3. Bookkeeping at `mlp`, measured inside the trainer: per step, the gap between consecutive
   `step` records minus that step's `step_s` is everything the loop does outside train_step.
   Minus the batch fetch (median of the bare loop's fetch times) it is the harness's
   bookkeeping. Goal: at most 0.1 ms a step. Then what each piece of it costs (microseconds,
   one call repeated).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from analysis.load import load_run
from contract.config import ExperimentConfig, validate
from trainers import single
from trainers.common import allocator, loop, setup
from trainers.common.data import GlobalBatches, data_spec, load
from trainers.common.logwriter import RankLog
from trainers.common.models import build_model
from trainers.common.trainer import make_optimizer

CNN_GOAL = 1.01  # trainer / bare step time at cnn
BOOKKEEPING_GOAL_MS = 0.1  # per step outside train_step, batch fetch excluded, at mlp


def _gaps_ms(stamps: list[float], skip: int) -> list[float]:
    return [(b - a) * 1000 for a, b in zip(stamps[skip:], stamps[skip + 1:], strict=False)]


class BareLoop:
    """A plain training loop on this process's model and data: no timers, no logs, no checks."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.data = load(cfg.dataset, cfg.seed, cfg.data_dir, tokens=cfg.model == "transformer")
        self.model = build_model(cfg.model, self.data.spec, cfg.seed)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.batches = GlobalBatches(len(self.data.y_train), cfg.global_batch, cfg.seed)

    def run(self, steps: int) -> tuple[list[float], list[float]]:
        """Per-iteration stamps (steps + 1) and each step's batch-fetch time in ms."""
        x_all, y_all, model, opt = self.data.x_train, self.data.y_train, self.model, self.optimizer
        stamps, fetch_ms = [time.perf_counter()], []
        for step in range(steps):
            t0 = time.perf_counter()
            idx = self.batches.indices(step)
            x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
            fetch_ms.append((time.perf_counter() - t0) * 1000)
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            float(loss.detach())
            stamps.append(time.perf_counter())
        return stamps, fetch_ms


def trainer_block(cfg: ExperimentConfig, run_dir: str, skip: int) -> tuple[list[float], list[float]]:
    """Run the trainer's loop in this process; per-step gaps (ms) and gap - step_s (ms)."""
    cfg = ExperimentConfig(**{**cfg.to_dict(), "run_dir": run_dir})
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        ctx = setup.setup(cfg)
        loop.train(ctx, single.build(ctx))
    steps = load_run(run_dir).steps.sort_values("step")
    gaps = _gaps_ms(steps["time"].tolist(), skip)
    outside = [g - s * 1000 for g, s in zip(gaps, steps["step_s"].tolist()[skip + 1:], strict=True)]
    return gaps, outside


def compare(model: str, steps: int, rounds: int, work: str) -> dict[str, list[float]]:
    cfg = ExperimentConfig(strategy="single", model=model, steps=steps, warmup=0)
    validate(cfg)
    bare = BareLoop(cfg)
    skip = 2  # the first steps of a block warm caches and the optimizer state
    out: dict[str, list[float]] = {"bare": [], "trainer": [], "ratio": [], "outside": [], "fetch": []}
    for r in range(rounds):
        stamps, fetch = bare.run(steps)
        b = statistics.median(_gaps_ms(stamps, skip))
        gaps, outside = trainer_block(cfg, os.path.join(work, f"{model}-{r}"), skip)
        t = statistics.median(gaps)
        out["bare"].append(b)
        out["trainer"].append(t)
        out["ratio"].append(t / b)
        out["outside"].append(statistics.median(outside))
        out["fetch"].append(statistics.median(fetch[skip:]))
    return out


def _spread(values: list[float], fmt: str = ".3f") -> str:
    return f"{statistics.median(values):{fmt}} (range {min(values):{fmt}}-{max(values):{fmt}})"


# ---- 1. the allocator: fresh processes ------------------------------------------------------

def bare_child(model: str, steps: int, chosen: bool, threads: int) -> None:
    """One fresh process: a bare loop on one fixed batch that frees no large block before it."""
    if chosen:
        allocator.apply()
    torch.set_num_threads(threads)
    cfg = ExperimentConfig(model=model)
    spec = data_spec(cfg.dataset)  # an image model (mlp, cnn) on the default data set's shape
    net = build_model(model, spec, 0)
    opt = make_optimizer(net.parameters(), cfg)
    x = torch.randn(cfg.global_batch, *spec.shape)
    y = torch.randint(0, spec.num_classes, (cfg.global_batch,))
    stamps = [time.perf_counter()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        stamps.append(time.perf_counter())
    print(statistics.median(_gaps_ms(stamps, 2)))


def allocator_rounds(model: str, steps: int, rounds: int, threads: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"chosen": [], "inherited": []}
    for r in range(rounds):
        order = ("chosen", "inherited") if r % 2 == 0 else ("inherited", "chosen")
        for side in order:
            argv = [sys.executable, "-m", "bench.overhead", "--bare-child", model, "--steps", str(steps),
                    "--threads", str(threads)] + (["--chosen"] if side == "chosen" else [])
            res = subprocess.run(argv, capture_output=True, text=True, check=True,
                                 env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
            out[side].append(float(res.stdout.split()[-1]))
    return out


# ---- 3. what each piece of the bookkeeping costs ----------------------------------------------

def piece_costs_us(work: str) -> dict[str, float]:
    cfg = ExperimentConfig(model="mlp")
    data = load(cfg.dataset, 0, cfg.data_dir)
    batches = GlobalBatches(len(data.y_train), cfg.global_batch, 0)
    idx = batches.shard(3, 0, 1)
    log = RankLog(work, 0, "node0", attempt=1)
    fields = dict(step=5, epoch=0, samples=64, step_s=0.0031, compute_s=None, comm_s=None, comm_bytes=0,
                  loss=2.3012, mem_bytes=123456789, cpu_s=0.0062, warmup=False)
    cpu = torch.device("cpu")
    pieces = {
        "step record (encode + write + flush)": lambda: log.write("step", **fields),
        "peak memory read": lambda: loop.peak_memory_bytes(cpu),
        "process_time x2": lambda: (time.process_time(), time.process_time()),
        "batch indices (shard)": lambda: batches.shard(3, 0, 1),
        "fetch x[idx], y[idx]": lambda: (data.x_train[idx], data.y_train[idx]),
        "fetch index_select": lambda: (data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)),
        "fault check": lambda: cfg.fault_spec(),
    }
    costs = {}
    for name, f in pieces.items():
        n = 2000
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        costs[name] = (time.perf_counter() - t0) / n * 1e6
    return costs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides (1: steadiest)")
    p.add_argument("--quick", action="store_true", help="3 rounds, shorter blocks")
    p.add_argument("--bare-child", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--chosen", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bare_child:
        bare_child(args.bare_child, args.steps, args.chosen, args.threads)
        return 0
    rounds = 3 if args.quick else args.rounds
    cnn_steps, mlp_steps = (12, 60) if args.quick else (25, 200)
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores); torch threads {args.threads}; "
          f"{rounds} rounds; median (range over rounds)")

    alloc = allocator_rounds("cnn", cnn_steps, rounds, args.threads)
    print(f"1. bare cnn loop, fresh processes: chosen allocator {_spread(alloc['chosen'], '.1f')} ms/step, "
          f"inherited {_spread(alloc['inherited'], '.1f')} ms/step; inherited / chosen "
          f"{statistics.median(alloc['inherited']) / statistics.median(alloc['chosen']):.2f}")

    allocator.apply()  # both sides of 2. and 3. share this process's (chosen) state
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as work:
        cnn = compare("cnn", cnn_steps, rounds, work)
        ok = statistics.median(cnn["ratio"]) <= CNN_GOAL
        print(f"2. cnn: bare {_spread(cnn['bare'], '.2f')} ms, trainer {_spread(cnn['trainer'], '.2f')} ms; "
              f"trainer / bare {_spread(cnn['ratio'])} (goal <= {CNN_GOAL}: {'met' if ok else 'NOT met'})")
        mlp = compare("mlp", mlp_steps, rounds, work)
        print(f"   mlp: bare {_spread(mlp['bare'], '.3f')} ms, trainer {_spread(mlp['trainer'], '.3f')} ms; "
              f"trainer / bare {_spread(mlp['ratio'])}")
        keeping = [o - f for o, f in zip(mlp["outside"], mlp["fetch"], strict=True)]
        ok = statistics.median(keeping) <= BOOKKEEPING_GOAL_MS
        print(f"3. mlp, per step outside train_step: {_spread(mlp['outside'])} ms, of which the batch fetch "
              f"{_spread(mlp['fetch'])} ms; bookkeeping {_spread(keeping)} ms "
              f"(goal <= {BOOKKEEPING_GOAL_MS}: {'met' if ok else 'NOT met'})")
        print("   pieces, one call (us): " + "; ".join(f"{k} {v:.1f}" for k, v in piece_costs_us(work).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
