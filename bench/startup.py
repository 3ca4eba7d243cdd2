"""Benchmark: the fixed cost of one experiment on the simulate backend, per strategy.

    python -m bench.startup [--rounds 3] [--strategies single,ddp,ring,fsdp,pipeline] [--quick]

Runs each strategy (`single` on 1 rank, the others on 2 simulated nodes x 1 rank; `mlp`, batch
64, a few steps) through `simulate.launcher.run_experiment`, rotating the order every round.
The fixed cost of an experiment is what it spends around its steps:

- start: from the launch (status.json `started`) to the first `step` record (the slowest
  rank's: a step is done when every rank is), so it includes the first step itself;
- end: from the last `step` record to the launcher seeing every rank exit (`ended`), split
  into last step -> `end` record (the last validation) and `end` record -> exit (teardown,
  process exit, the launcher noticing).

Goal: start + end at most 1.5 s (median over rounds). Then where the start goes, from probes
in fresh processes started two at a time like the ranks (`--probe`): interpreter start, `import
torch`, the strategy's other imports, torch._dynamo (which torch imports at a rank's first
optimizer call and in DDP's constructor), the data set, the process group (torch.distributed's
rendezvous and gloo's connections), in wall and CPU seconds. The rest of the start (trainer
build, config.json, the first step, the launcher's own work) is what is left of the measured
start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from contract import envnames
from contract.config import ExperimentConfig, validate

# analysis.load (pandas) and simulate.launcher are imported where used: a probe process must
# start with what a rank imports and nothing more.

GOAL_S = 1.5
STRATEGIES = "single,ddp,ring,fsdp,pipeline"
# "torch._dynamo": imported by torch itself at a rank's first optimizer (torch.optim's methods
# are wrapped in torch._disable_dynamo) and by DDP's constructor; pipelining imports it at once.
PHASES = ("interpreter", "import torch", "strategy imports", "torch._dynamo", "data",
          "process group")  # process group: init + a barrier


def config(strategy: str, steps: int) -> ExperimentConfig:
    nodes = 1 if strategy == "single" else 2
    cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=1, steps=steps, warmup=0)
    validate(cfg)
    return cfg


def measure(cfg: ExperimentConfig, run_dir: str) -> dict[str, float]:
    from analysis.load import load_run
    from simulate.launcher import run_experiment

    status = run_experiment(cfg, run_dir, time_limit_s=300)
    if status["state"] != "COMPLETED":
        sys.exit(f"bench: {cfg.strategy} {status['state']}: see {run_dir}")
    data = load_run(run_dir)
    first_step = float(data.steps.groupby("rank")["time"].min().max())
    last_step = float(data.steps["time"].max())
    end_record = float(data.ranks["end_time"].max())
    return {"start": first_step - status["started"], "end": status["ended"] - last_step,
            "to end record": end_record - last_step, "end record to exit": status["ended"] - end_record}


# ---- probes: one rank's start, phase by phase, in a fresh process ------------------------------

def probe(strategy: str) -> None:
    """Run as a fresh process (`--probe`): time each phase of a rank's start; print the wall
    times, then the CPU times (this process's; on an idle machine the two would match)."""
    spawned = float(os.environ[envnames.BENCH_SPAWNED])
    t, cpu = [time.time()], [time.process_time()]
    import torch  # noqa: F401

    t.append(time.time())
    cpu.append(time.process_time())
    import importlib

    importlib.import_module(f"trainers.{strategy}")
    from trainers.common import distenv, setup
    from trainers.common.data import load

    t.append(time.time())
    cpu.append(time.process_time())
    import torch._dynamo  # noqa: F401

    t.append(time.time())
    cpu.append(time.process_time())
    cfg = config(strategy, 1)
    load(cfg.dataset, cfg.seed, cfg.data_dir, tokens=cfg.model == "transformer")
    t.append(time.time())
    cpu.append(time.process_time())
    if setup._init_process_group(distenv.from_environ(), torch.device("cpu"), strategy) != "none":
        torch.distributed.barrier()  # a rank that left at once would reset its peer's half-made connections
    t.append(time.time())
    cpu.append(time.process_time())
    walls = [b - a for a, b in zip([spawned, *t], t, strict=False)]
    cpus = [cpu[0]] + [b - a for a, b in zip(cpu, cpu[1:], strict=False)]
    print(" ".join(str(v) for v in walls + cpus), flush=True)
    os._exit(0)


def probe_round(strategy: str, world: int) -> list[float]:
    """The slowest rank's time per phase, `world` probes started together."""
    from simulate.launcher import free_port

    port, procs = free_port(), []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), envnames.THREADS: "1", "OMP_NUM_THREADS": "1",
               envnames.BENCH_SPAWNED: repr(time.time())}
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.startup", "--probe", strategy], env=env,
                                      stdout=subprocess.PIPE, text=True))
    rows = [[float(v) for v in p.communicate()[0].split()] for p in procs]
    return [max(col) for col in zip(*rows, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.startup", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--strategies", default=STRATEGIES)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 rounds")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        probe(args.probe)
    strategies = args.strategies.split(",")
    rounds = 2 if args.quick else args.rounds
    cfgs = {s: config(s, args.steps) for s in strategies}
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in strategies}
    phases: dict[str, list[list[float]]] = {s: [] for s in strategies}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as work:
        for r in range(rounds):
            for s in strategies[r % len(strategies):] + strategies[:r % len(strategies)]:
                runs[s].append(measure(cfgs[s], os.path.join(work, f"{s}-{r}")))
                phases[s].append(probe_round(s, cfgs[s].world_size))
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores); "
          f"mlp, {args.steps} steps; median of {rounds} rounds, seconds")
    print(f"{'strategy':>9} {'ranks':>5} {'start':>6} {'end':>6} {'fixed':>6} {'range':>11}  goal <= {GOAL_S} | "
          f"end: {'to end rec':>10} {'rec->exit':>9}")
    for s in strategies:
        fixed = [m["start"] + m["end"] for m in runs[s]]
        med = {k: statistics.median(m[k] for m in runs[s]) for k in runs[s][0]}
        verdict = "met" if statistics.median(fixed) <= GOAL_S else "NOT met"
        print(f"{s:>9} {cfgs[s].world_size:>5} {med['start']:>6.2f} {med['end']:>6.2f} "
              f"{statistics.median(fixed):>6.2f} {min(fixed):>5.2f}-{max(fixed):<5.2f}  {verdict:<12} | "
              f"     {med['to end record']:>10.2f} {med['end record to exit']:>9.2f}")
    print("where the start goes (probes, slowest of the ranks started together; median, seconds; in brackets "
          "the CPU seconds, what an idle machine would take):")
    print(f"{'strategy':>9} " + " ".join(f"{ph:>16}" for ph in PHASES) + f" {'rest of start':>14}")
    n = len(PHASES)
    for s in strategies:
        med = [statistics.median(col) for col in zip(*phases[s], strict=True)]
        rest = statistics.median(m["start"] for m in runs[s]) - sum(med[:n])
        print(f"{s:>9} " + " ".join(f"{w:>9.2f} [{c:4.2f}]" for w, c in zip(med[:n], med[n:], strict=True))
              + f" {rest:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
