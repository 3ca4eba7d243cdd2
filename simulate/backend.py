"""The `simulate` backend: run a sweep's experiments one after another on this machine."""

from __future__ import annotations

import os
import sys
import time

from simulate.launcher import plan_cpus, run_experiment
from trainers.common.grid import Experiment
from trainers.common.rundir import prepare_experiment, status_of


def _progress_printer(k: int, n: int, exp_id: str):
    tty = sys.stdout.isatty()
    last = {"pct": -1}

    def show(step: int, total: int) -> None:
        pct = 100 * step // max(total, 1)
        if tty:
            print(f"\r[{k}/{n}] {exp_id}: step {step}/{total}", end="", flush=True)
        elif pct // 25 != last["pct"] // 25:  # quarter marks in logs, not a line per step
            print(f"[{k}/{n}] {exp_id}: step {step}/{total}", flush=True)
        last["pct"] = pct

    return show


def run_sweep(experiments: list[Experiment], path: str, sweep: str, time_limit_s: float = 0) -> dict[str, str]:
    """Run every experiment not yet COMPLETED; return id -> final state."""
    runnable = [e for e in experiments if e.skipped is None]
    states: dict[str, str] = {}
    for k, exp in enumerate(runnable, 1):
        run_dir = os.path.join(path, exp.id)
        if status_of(run_dir) == "COMPLETED":
            print(f"[{k}/{len(runnable)}] {exp.id}: already COMPLETED, skipped", flush=True)
            states[exp.id] = "COMPLETED"
            continue
        plan = plan_cpus(exp.config.world_size)
        meta = {"cpu_plan": plan.describe()}
        run_dir = prepare_experiment(path, exp, "simulate", sweep, meta)
        note = " (oversubscribed: more ranks than cores)" if plan.oversubscribed else ""
        print(f"[{k}/{len(runnable)}] {exp.id}: {exp.config.world_size} ranks on "
              f"{exp.config.nodes} simulated node(s){note}", flush=True)
        t0 = time.time()
        status = run_experiment(exp.config, run_dir, time_limit_s, _progress_printer(k, len(runnable), exp.id))
        if sys.stdout.isatty():
            print()
        print(f"[{k}/{len(runnable)}] {exp.id}: {status['state']} in {time.time() - t0:.1f} s", flush=True)
        states[exp.id] = status["state"]
    return states
