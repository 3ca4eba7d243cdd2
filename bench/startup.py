"""Benchmark: the fixed cost of one experiment on the simulate backend, per strategy, warm start
against cold (simulate/warmstart.py), in one run.

    python -m bench.startup [--rounds 3] [--strategies single,ddp,ring,fsdp,pipeline] [--quick]
                            [--sweep-rounds 1] [--probes]

Runs each strategy (`single` on 1 rank, the others on 2 simulated nodes x 1 rank; `mlp`, batch
64, 8 steps) through `simulate.launcher.run_experiment`, warm and cold alternating (the
side that goes first alternates too), the strategies' order rotated every round. The warm-start
server is started (and one warm experiment run) before the first round: the fixed cost of a
sweep's later experiments, which is what warm start changes; its import time is printed apart.
The fixed cost of an experiment is what it spends around its steps:

- start: from the launch (status.json `started`) to the first `step` record (the slowest
  rank's: a step is done when every rank is), less one step's time (the run's median `step_s`
  after the first step, which is also the step time printed);
- end: from the last `step` record to the launcher seeing every rank exit (`ended`).

Goal: the median over strategies of start + end (each the median over rounds) at most 0.5 s
warm. Also per side: the median step time (a warm rank must step as fast as a cold one: `spread`
says `within` where the warm and cold rounds' [min-max] overlap, `APART` where they do not), the
seconds a warm rank on more than one core spends making its memory its own (`own mem`, part of
its start; warmstart.own_memory), the ranks' torch threads, interop threads and allocator state
(config.json), and the wall time of
README's first sweep (`bin/sweep --nodes 1,2 --strategies ddp,ring`, 4 experiments) warm and
cold, alternating. `--probes`: where a cold rank's start goes, from probes in fresh processes
started two at a time like the ranks: interpreter start, `import torch`, the strategy's other
imports, torch._dynamo (which torch imports at a rank's first optimizer call and in DDP's
constructor), the data set, the process group, in wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from contract import envnames
from contract.config import ExperimentConfig, validate
from contract.paths import ROOT

# analysis.load (pandas) and simulate.launcher are imported where used: a probe process must
# start with what a rank imports and nothing more.

GOAL_S = 0.5
STRATEGIES = "single,ddp,ring,fsdp,pipeline"
SIDES = ("warm", "cold")
README_SWEEP = ["--nodes", "1,2", "--strategies", "ddp,ring"]
# "torch._dynamo": imported by torch itself at a rank's first optimizer (torch.optim's methods
# are wrapped in torch._disable_dynamo) and by DDP's constructor; pipelining imports it at once.
PHASES = ("interpreter", "import torch", "strategy imports", "torch._dynamo", "data",
          "process group")  # process group: init + a barrier


def config(strategy: str, steps: int) -> ExperimentConfig:
    nodes = 1 if strategy == "single" else 2
    cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=1, steps=steps, warmup=0)
    validate(cfg)
    return cfg


def measure(cfg: ExperimentConfig, run_dir: str, warm: bool) -> dict:
    from analysis.load import load_run
    from simulate.launcher import run_experiment

    status = run_experiment(cfg, run_dir, time_limit_s=300, warm=warm)
    if status["state"] != "COMPLETED" or status["warm_start"] != warm:
        sys.exit(f"bench: {cfg.strategy} {status['state']} (warm start {status['warm_start']}): see {run_dir}")
    data = load_run(run_dir)
    first_step = float(data.steps.groupby("rank")["time"].min().max())
    last_step = float(data.steps["time"].max())
    step_s = float(data.steps[data.steps["step"] > 0]["step_s"].median())  # a typical step: not the first
    with open(os.path.join(run_dir, "config.json")) as f:
        ranks = json.load(f)["meta"]["ranks"]
    from simulate.warmstart import OWNED_RE  # here: a probe process imports no more than a rank would

    outs = "".join(_read(out) for out in glob.glob(os.path.join(run_dir, "node-*.out")))
    owned = [float(seconds) for _, seconds, _ in OWNED_RE.findall(outs)]
    return {"start": first_step - status["started"] - step_s, "end": status["ended"] - last_step, "step": step_s,
            "own": max(owned, default=0.0),
            "ranks": sorted({(m["threads"], m["interop_threads"], m["allocator"]["mmap_threshold"],
                              m["allocator"]["trim_threshold"]) for m in ranks})}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def sweep_wall(work: str, name: str, warm: bool) -> float:
    """Wall seconds of README's first sweep through bin/sweep (its own warm-start server included)."""
    cmd = [os.path.join(ROOT, "bin", "sweep"), "--backend", "simulate", "--logs", work, "--sweep", name,
           *README_SWEEP, *([] if warm else ["--cold"])]
    t0 = time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {done.returncode}: {done.stderr[-500:]}")
    return time.time() - t0


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


def _machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat: user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the ranks, the warm-start server once stopped)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def others_cpu(start: tuple[float, float, float]) -> tuple[float, float]:
    """CPU seconds other processes (another user's benchmark) took since `start`, and the wall seconds:
    a step time measured while they ran is not an idle machine's."""
    return (_machine_cpu_s() - start[0]) - (_own_cpu_s() - start[1]), time.time() - start[2]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} [{min(values):.2f}-{max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.startup", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--strategies", default=STRATEGIES)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="2 rounds, no sweep")
    p.add_argument("--sweep-rounds", type=int, default=1, help="README's sweep, warm and cold, this many times each")
    p.add_argument("--probes", action="store_true", help="also time the phases of a cold rank's start")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        probe(args.probe)
    from simulate import warmstart

    strategies = args.strategies.split(",")
    rounds, sweep_rounds = (2, 0) if args.quick else (args.rounds, args.sweep_rounds)
    cfgs = {s: config(s, args.steps) for s in strategies}
    runs: dict[tuple[str, str], list[dict]] = {(s, side): [] for s in strategies for side in SIDES}
    phases: dict[str, list[list[float]]] = {s: [] for s in strategies}
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    load_before, cpu0 = os.getloadavg()[0], (_machine_cpu_s(), _own_cpu_s(), time.time())
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as work:
        t0 = time.time()
        measure(cfgs[strategies[0]], os.path.join(work, "server-start"), True)  # starts the server
        server_s, ready = time.time() - t0, warmstart.server(dict(os.environ)).wait_ready()
        for r in range(rounds):
            sides = SIDES if r % 2 == 0 else SIDES[::-1]
            for s in strategies[r % len(strategies):] + strategies[:r % len(strategies)]:
                for side in sides:
                    runs[s, side].append(measure(cfgs[s], os.path.join(work, f"{s}-{side}-{r}"), side == "warm"))
                if args.probes:
                    phases[s].append(probe_round(s, cfgs[s].world_size))
        warmstart.shutdown()  # bin/sweep starts its own
        others = others_cpu(cpu0)
        for r in range(sweep_rounds):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                walls[side].append(sweep_wall(work, f"readme-{side}-{r}", side == "warm"))
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores); "
          f"mlp, {args.steps} steps; median [min-max] of {rounds} rounds, seconds")
    print(f"other processes' CPU during the rounds: {others[0]:.1f} s in {others[1]:.0f} s "
          f"({100 * others[0] / (others[1] * (os.cpu_count() or 1)):.0f}% of the machine; about +-1 s: the "
          "kernel counts the machine's time by ticks)")
    print(f"warm-start server: first experiment {server_s:.2f} s (server imports {ready['import_s']:.2f} s, "
          f"{ready['modules']} modules, {ready['threads']} thread)")
    print(f"{'strategy':>9} {'ranks':>5} | {'warm fixed':>18} {'start':>5} {'end':>5} | {'cold fixed':>18} "
          f"{'start':>5} {'end':>5} | {'step ms warm':>18} {'cold':>18} {'spread':>6} | {'own mem':>7} | "
          "threads, interop, mmap/trim thr.")
    fixed = {side: {} for side in SIDES}
    for s in strategies:
        row = f"{s:>9} {cfgs[s].world_size:>5} |"
        for side in SIDES:
            ms = runs[s, side]
            fixed[side][s] = [m["start"] + m["end"] for m in ms]
            row += (f" {_spread(fixed[side][s]):>18} {statistics.median(m['start'] for m in ms):5.2f} "
                    f"{statistics.median(m['end'] for m in ms):5.2f} |")
        steps = {side: [1000 * m["step"] for m in runs[s, side]] for side in SIDES}
        row += " ".join(f" {_spread(steps[side]):>18}" for side in SIDES)
        apart = min(steps["warm"]) > max(steps["cold"]) or min(steps["cold"]) > max(steps["warm"])
        row += f" {'APART' if apart else 'within':>6} | {statistics.median(m['own'] for m in runs[s, 'warm']):5.2f} s"
        states = {side: sorted({str(x) for m in runs[s, side] for x in m["ranks"]}) for side in SIDES}
        row += f" | {'same' if states['warm'] == states['cold'] else 'DIFFER'}: {', '.join(states['warm'])}"
        print(row)
    for side in SIDES:
        med = statistics.median(statistics.median(v) for v in fixed[side].values())
        verdict = ("met" if med <= GOAL_S else "NOT met") if side == "warm" else "-"
        print(f"median over strategies, {side}: {med:.2f} s  (goal <= {GOAL_S} s warm: {verdict})")
    for side in SIDES:
        if walls[side]:
            print(f"README sweep ({' '.join(README_SWEEP)}), {side}: {_spread(walls[side])} s wall")
    if args.probes:
        print_probes(strategies, phases, runs)
    return 0


def print_probes(strategies: list[str], phases: dict[str, list[list[float]]], runs: dict) -> None:
    print("where a cold start goes (probes, slowest of the ranks started together; median, seconds; in "
          "brackets the CPU seconds, what an idle machine would take):")
    print(f"{'strategy':>9} " + " ".join(f"{ph:>16}" for ph in PHASES) + f" {'rest of start':>14}")
    n = len(PHASES)
    for s in strategies:
        med = [statistics.median(col) for col in zip(*phases[s], strict=True)]
        rest = statistics.median(m["start"] for m in runs[s, "cold"]) - sum(med[:n])
        print(f"{s:>9} " + " ".join(f"{w:>9.2f} [{c:4.2f}]" for w, c in zip(med[:n], med[n:], strict=True))
              + f" {rest:>14.2f}")


if __name__ == "__main__":
    sys.exit(main())
