"""Sweep backends behind one small interface, and the bookkeeping they share. Torch-free.

A backend (simulate/backend.py: simulate; slurm/backend.py: slurm = sbatch, submitit) is a
`Backend` with four operations on a `SweepLedger` (one sweep folder):

    submit(book, todo)  start or queue the experiments (simulate queues; it runs them in wait)
    wait(book, todo)    block until each is final, printing progress; -> {id: state}
    status(book)        {id: state} now
    cancel(book)        stop what this process runs or waits on; -> ids it cancelled

plus `preflight` (check everything, exit 2, before anything is written), `dry_run`,
`queues` (--no-wait means something) and `stops_on_interrupt` (False where jobs live on
without this process: sbatch, submitit on Slurm).

`run()` keeps the books once for every backend:
  1. the identity check: an experiment directory that holds a run made with other settings
     (config.json "identity") stops the sweep with exit 2 and one line, before anything is
     written (sweepdir.identity_conflict);
  2. sweep.json, the union of every invocation under this sweep name (sweepdir.sweep_doc);
  3. skipped experiments; resume: COMPLETED experiments are not run again;
  4. config.json and a fresh PENDING status.json (attempts and history kept) for each
     experiment a backend starts (`SweepLedger.prepare`);
  5. interrupts: SIGINT (Ctrl-C, to the whole process group) or SIGTERM -> `cancel`, the
     running experiment CANCELLED in its status.json, ONE line on stderr saying what finished
     and the command that resumes, exit 130 (SIGINT) / 143 (SIGTERM). A backend whose jobs
     live on says how to follow and cancel them instead;
  6. the summary line and the exit status: 0 when every experiment completed (or was
     skipped), 1 otherwise, 2 for bad input.
A re-run after an interrupt starts the cancelled experiment as attempt N+1: status.json
"attempts" counts up and every rank record carries "attempt" (logwriter.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from contract import rundir
from contract.errors import ConfigError
from sweeper import sweepdir
from sweeper.grid import Experiment


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached bin/sweep (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"interrupted by {self.signame}"


class SubmitError(Exception):
    """A backend could not submit (exit 1, one line)."""


@contextmanager
def interrupts() -> Iterator[None]:
    """SIGINT/SIGTERM raise `Interrupted` once; later ones are ignored while we clean up."""
    def later(_signum: int, _frame: object) -> None:
        pass

    def first(signum: int, _frame: object) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, later)
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, first)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class SweepLedger:
    """One sweep folder and this invocation's experiments."""
    path: str
    name: str
    backend: str
    experiments: list[Experiment]
    args: argparse.Namespace
    argv: list[str] = field(default_factory=list)  # bin/sweep's arguments, for the resume command

    @property
    def runnable(self) -> list[Experiment]:
        return [e for e in self.experiments if e.skipped is None]

    def run_dir(self, exp_id: str) -> str:
        return os.path.join(self.path, exp_id)

    def number(self, exp_id: str) -> str:
        ids = [e.id for e in self.runnable]
        return f"[{ids.index(exp_id) + 1}/{len(ids)}]"

    def status(self, exp_id: str) -> dict:
        return rundir.read_status(self.run_dir(exp_id))

    def state(self, exp_id: str) -> str | None:
        return self.status(exp_id).get("state")

    def prepare(self, exp: Experiment, meta: dict | None = None) -> str:
        """config.json (with identity) and a fresh PENDING status.json that keeps attempts and history."""
        run_dir = sweepdir.prepare_experiment(self.path, exp, self.backend, self.name, meta)
        old = self.status(exp.id)
        kept = {"history": old["history"]} if old.get("history") else {}
        rundir.write_status(run_dir, "PENDING", fresh=True, attempts=int(old.get("attempts", 0) or 0),
                            backend=self.backend, **kept)
        return run_dir

    def mark(self, exp_id: str, state: str | None = None, **fields: object) -> dict:
        """Merge `fields` (and `state`) into the experiment's status.json."""
        return rundir.write_status(self.run_dir(exp_id), state, **fields)

    def resume_command(self) -> str:
        argv = list(self.argv)
        if not any(a == "--sweep" or a.startswith("--sweep=") for a in argv):
            argv += ["--sweep", self.name]
        return shlex.join(["bin/sweep", *argv])


def slurm_answers() -> bool:
    """Whether a Slurm controller answers here (BACKEND=auto picks slurm then; the Slurm backends need it)."""
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        return False
    try:
        return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def time_limit_seconds(text: str) -> int:
    """--time-limit: '30' (minutes), 'H:MM:SS' or 'MM:SS' -> seconds; '' -> 0 (none). ConfigError otherwise."""
    if not text:
        return 0
    parts = text.split(":")
    if not all(x.isdigit() for x in parts) or len(parts) > 3:
        raise ConfigError(f"invalid time limit {text!r}: use minutes or H:MM:SS")
    if len(parts) == 1:
        return int(parts[0]) * 60
    seconds = 0
    for x in parts:
        seconds = seconds * 60 + int(x)
    return seconds


class Backend:
    name = "?"
    queues = False  # submit returns before the experiments end (--no-wait applies)
    stops_on_interrupt = True  # False: the jobs live on without bin/sweep

    def preflight(self, book: SweepLedger, runnable: list[Experiment]) -> str | None:
        """Anything wrong that must stop the sweep before it writes: one line, or None."""
        return None

    def dry_run(self, book: SweepLedger, runnable: list[Experiment]) -> int:
        raise NotImplementedError

    def submit(self, book: SweepLedger, todo: list[Experiment]) -> None:
        raise NotImplementedError

    def wait(self, book: SweepLedger, todo: list[Experiment]) -> dict[str, str]:
        raise NotImplementedError

    def status(self, book: SweepLedger) -> dict[str, str]:
        return {e.id: book.state(e.id) or "UNKNOWN" for e in book.runnable}

    def cancel(self, book: SweepLedger) -> list[str]:
        return []

    def follow_hint(self, book: SweepLedger) -> str:
        return f"follow with `make status SWEEP={book.name}`, stop with `make cancel SWEEP={book.name}`"


def summarize(book: SweepLedger, states: dict[str, str]) -> int:
    failures = [rundir.failure_line(book.run_dir(e), e) for e, s in states.items() if s != "COMPLETED"]
    done = sum(1 for s in states.values() if s == "COMPLETED")
    skipped = len(book.experiments) - len(book.runnable)
    print(f"sweep {book.name}: {done}/{len(states)} completed, {len(failures)} failed, {skipped} skipped; "
          f"logs in {book.path}", flush=True)
    for line in failures:
        print(f"  {line}")
    return 1 if failures else 0


def interrupted_line(book: SweepLedger, e: Interrupted, cancelled: list[str]) -> str:
    ids = [x.id for x in book.runnable]
    states = {i: book.state(i) for i in ids}
    done = sum(1 for s in states.values() if s == "COMPLETED")
    parts = [f"{done}/{len(ids)} completed"]
    for i in cancelled:
        parts.append(f"{i} cancelled (attempt {book.status(i).get('attempts', '?')})")
    failed_states = tuple(s for s in rundir.FAILED_STATES if s != "CANCELLED")  # a cancelled one runs again
    rest = sum(1 for i in ids if states[i] not in ("COMPLETED", *failed_states) and i not in cancelled)
    if rest:
        parts.append(f"{rest} not run")
    failed = sum(1 for s in states.values() if s in failed_states)
    if failed:
        parts.append(f"{failed} failed")
    return f"sweep {book.name} {e}: {', '.join(parts)}; resume with: {book.resume_command()}"


def run(backend: Backend, book: SweepLedger) -> int:
    """bin/sweep's whole run on one backend; returns the exit status (module docstring)."""
    with interrupts():
        try:
            return _run(backend, book)
        except Interrupted as e:
            if sys.stdout.isatty():
                print(flush=True)
            if backend.stops_on_interrupt:
                cancelled = backend.cancel(book)
                print(interrupted_line(book, e, cancelled), file=sys.stderr, flush=True)
            else:
                print(f"sweep {book.name}: stopped waiting ({e.signame}); the jobs keep running: "
                      f"{backend.follow_hint(book)}", file=sys.stderr, flush=True)
            return 128 + e.signum


def _run(backend: Backend, book: SweepLedger) -> int:
    runnable = book.runnable
    conflict = sweepdir.identity_conflict(book.path, book.name, book.experiments)
    if conflict is None:
        conflict = backend.preflight(book, runnable)
    if conflict is not None:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    print(f"sweep {book.name}: {len(runnable)} experiment(s) on backend {book.backend}, logs in {book.path}")
    for exp in book.experiments:
        if exp.skipped:
            print(f"  skipped {exp.id}: {exp.skipped}")
    if book.args.dry_run:
        return backend.dry_run(book, runnable)
    sweepdir.write_sweep(book.path, book.name, book.backend, vars(book.args), book.experiments)
    for exp in book.experiments:
        if exp.skipped:
            sweepdir.mark_skipped(book.path, exp)
    states: dict[str, str] = {}
    todo = []
    for exp in runnable:
        if book.state(exp.id) == "COMPLETED":
            print(f"{book.number(exp.id)} {exp.id}: already COMPLETED, skipped", flush=True)
            states[exp.id] = "COMPLETED"
        else:
            todo.append(exp)
    try:
        backend.submit(book, todo)
    except SubmitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if backend.queues and getattr(book.args, "no_wait", False):
        print(f"submitted; {backend.follow_hint(book)}")
        return 0
    states.update(backend.wait(book, todo))
    return summarize(book, {e.id: states.get(e.id, "UNKNOWN") for e in runnable})


def _processes_under(path: str) -> list[int]:
    """Pids (not ours) whose command line names `path` or a file under it."""
    roots = {os.path.abspath(path), path.rstrip("/")}
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == r or a.startswith(r + "/") for a in args for r in roots):
            found.append(int(pid))
    return found


def stop_processes_under(path: str, grace_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after `grace_s`, every process whose command line names something
    under `path` (a sweep's or an experiment's folder): what outlived its launcher. Returns how many."""
    pids = _processes_under(path)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.time() + wait_s
        while time.time() < end and _processes_under(path):
            time.sleep(0.1)
        pids = _processes_under(path)
        if not pids:
            break
    return len(pids)
