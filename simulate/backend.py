"""The `simulate` backend: run a sweep's experiments one after another on this machine.

`SimulateBackend` implements sweeper/backends.py's interface; the books (sweep.json,
status.json, resume, summary, interrupts) are kept there. On SIGINT/SIGTERM the launcher
stops every rank of the running experiment (SIGTERM, then SIGKILL) and writes CANCELLED
before the interrupt reaches `backends.run`. The launcher's warm-start server (one for the
sweep, simulate/warmstart.py) is stopped when the sweep ends, interrupted or not.
"""

from __future__ import annotations

import shlex
import sys
import time

from simulate import warmstart
from simulate.launcher import plan_cpus, run_experiment
from sweeper.backends import Backend, SweepLedger
from sweeper.grid import Experiment


def _progress_printer(number: str, exp_id: str):
    tty = sys.stdout.isatty()
    last = {"pct": -1}

    def show(step: int, total: int) -> None:
        pct = 100 * step // max(total, 1)
        if tty:
            print(f"\r{number} {exp_id}: step {step}/{total}", end="", flush=True)
        elif pct // 25 != last["pct"] // 25:  # quarter marks in logs, not a line per step
            print(f"{number} {exp_id}: step {step}/{total}", flush=True)
        last["pct"] = pct

    return show


class SimulateBackend(Backend):
    name = "simulate"

    def __init__(self, time_limit_s: float = 0, warm: bool = True) -> None:
        self.time_limit_s = time_limit_s
        self.warm = warm and warmstart.enabled()  # --cold or TS_WARM=0: every rank in a fresh interpreter
        self.running: str | None = None

    def dry_run(self, book: SweepLedger, runnable: list[Experiment]) -> int:
        for e in runnable:
            print(f"  would run {e.id}: python -m trainers.{e.config.strategy} {shlex.join(e.config.to_argv())}")
        return 0

    def submit(self, book: SweepLedger, todo: list[Experiment]) -> None:
        pass  # one after another, in wait

    def wait(self, book: SweepLedger, todo: list[Experiment]) -> dict[str, str]:
        try:
            return self._run_all(book, todo)
        finally:  # the end of the sweep, or its interrupt: the warm-start server goes with it
            warmstart.shutdown()

    def _run_all(self, book: SweepLedger, todo: list[Experiment]) -> dict[str, str]:
        states: dict[str, str] = {}
        for exp in todo:
            number = book.number(exp.id)
            plan = plan_cpus(exp.config.world_size)
            run_dir = book.prepare(exp, {"cpu_plan": plan.describe()})
            note = " (oversubscribed: more ranks than cores)" if plan.oversubscribed else ""
            print(f"{number} {exp.id}: {exp.config.world_size} ranks on {exp.config.nodes} simulated node(s){note}",
                  flush=True)
            t0 = time.time()
            self.running = exp.id
            status = run_experiment(exp.config, run_dir, self.time_limit_s, _progress_printer(number, exp.id),
                                    warm=self.warm)
            self.running = None
            if sys.stdout.isatty():
                print()
            print(f"{number} {exp.id}: {status['state']} in {time.time() - t0:.1f} s", flush=True)
            states[exp.id] = status["state"]
        return states

    def cancel(self, book: SweepLedger) -> list[str]:
        """The launcher already stopped the ranks and wrote CANCELLED (run_experiment re-raises after);
        an interrupt in the instant between the ranks' end and that record leaves RUNNING: CANCELLED."""
        if self.running is None:
            return []
        if book.state(self.running) == "RUNNING":
            book.mark(self.running, state="CANCELLED", reason="interrupted before the launcher recorded the end")
        return [self.running] if book.state(self.running) == "CANCELLED" else []
