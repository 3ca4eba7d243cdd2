"""What state a sweep is in, and the one line a command prints when none of its experiments COMPLETED.

Every command that needs results asks here before it reads a log: `make plots` and `make report`
then write a report.html of the problems alone, `make tensorboard`, `make compare`, `make advise`
and `make project` write nothing; each prints one line and exits NO_RESULTS (docs/analysis.md,
"Sweeps without results"). The states come from sweep.json and each experiment's status.json,
never through analysis.load, so asking writes nothing (not even the cache); a failure's reason
(its first error record, contract.rundir) is read only when asked for.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from contract import rundir

NO_RESULTS = 1  # exit status of a command given a sweep without a COMPLETED experiment (2 is bad input)
COMPLETED, SKIPPED = "COMPLETED", "SKIPPED"
MISSING = "MISSING"  # listed in sweep.json, no directory (the names analysis.load gives these states)
UNKNOWN = "UNKNOWN"  # a directory without status.json


@dataclass(frozen=True)
class Experiment:
    id: str
    state: str
    logs: str  # the experiment's directory
    status: dict = field(default_factory=dict, repr=False)  # its status.json
    skipped: str | None = None  # sweep.json's skip reason

    @cached_property
    def reason(self) -> str:
        """Why it has no result: the skip reason, else contract.rundir.failure_reason ("" when COMPLETED)."""
        if self.state == COMPLETED:
            return ""
        if self.state == SKIPPED:
            return self.status.get("reason") or self.skipped or "no reason recorded"
        if self.state == MISSING:
            return "listed in sweep.json, but it has no directory: it never started"
        return rundir.failure_reason(self.logs, self.status)


@dataclass(frozen=True)
class SweepState:
    name: str
    path: str
    experiments: tuple[Experiment, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Experiments per state: the final states in contract.rundir's order, then the others by name."""
        c = Counter(e.state for e in self.experiments)
        order = [s for s in rundir.FINAL_STATES if s in c] + sorted(set(c) - set(rundir.FINAL_STATES))
        return {s: c[s] for s in order}

    @property
    def has_results(self) -> bool:
        return any(e.state == COMPLETED for e in self.experiments)

    @property
    def problems(self) -> list[Experiment]:
        """Every experiment that did not complete, skipped ones included."""
        return [e for e in self.experiments if e.state != COMPLETED]

    def tally(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.counts.items()) or "no experiment"

    def line(self, command: str, report: str = "") -> str:
        """The one line `command` prints for this sweep when it has no result (`report`: where the problems are)."""
        out = f"{command}: sweep {self.name} has no COMPLETED experiment ({self.tally()})"
        return f"{out}; report with the problems: {report}" if report else out


def _experiment(path: str, exp_id: str, entry: dict) -> Experiment:
    d = os.path.join(path, exp_id)
    skipped = entry.get("skipped") or None
    if not os.path.isdir(d):
        return Experiment(exp_id, SKIPPED if skipped else MISSING, d, skipped=skipped)
    status = rundir.read_status(d)
    state = status.get("state") or (SKIPPED if skipped else UNKNOWN)
    return Experiment(exp_id, str(state), d, status, skipped)


def read(path: str) -> SweepState:
    """The state of the sweep in `path`: its experiments as sweep.json lists them, then any other
    experiment directory, each with its status.json's state."""
    meta = rundir.read_json(os.path.join(path, "sweep.json"))
    entries = meta.get("experiments") if isinstance(meta.get("experiments"), list) else []
    listed = {e["id"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}
    experiments = [_experiment(path, x, listed.get(x, {})) for x in rundir.experiment_ids(path, meta)]
    return SweepState(os.path.basename(os.path.normpath(path)), path, tuple(experiments))


def refuse(command: str, *paths: str) -> int | None:
    """Print `command`'s one line for the first sweep of `paths` without a COMPLETED experiment and
    return NO_RESULTS; None when every one has a result."""
    for path in paths:
        state = read(path)
        if not state.has_results:
            print(state.line(command), file=sys.stderr)
            return NO_RESULTS
    return None
