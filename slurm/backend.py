"""BACKEND=slurm and BACKEND=submitit for bin/sweep.

slurm: each experiment's `job.sbatch` is rendered into its run directory, submitted with
`sbatch --parsable`, its job id recorded (status.json and the sweep's slurm-jobs.json); then,
unless --no-wait, a progress line until every job is final. A requeued job that Slurm holds
(Reason=BeginTime) is released on the way. `--dry-run` renders and, where Slurm answers,
checks every script with `sbatch --test-only`.

submitit: the same experiments through submitit's SlurmExecutor, one job array per layout
(experiments in an array must share nodes x tasks), at most ARRAY_PARALLELISM at a time;
ranks meet through submitit's TorchDistributedEnvironment. Without Slurm: LocalExecutor,
one experiment after the other.

Both implement sweeper/backends.py's interface (`make_backend`); the books
(sweep.json, status.json, resume, identity check, summary, interrupts) are kept there.
Each job numbers its attempts after the experiment's earlier ones (TS_ATTEMPT_BASE in the
job's environment; contract/rundir.py current_attempt).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from contract import envnames, rundir
from contract.errors import ConfigError
from contract.paths import ROOT
from slurm import render, track
from sweeper.backends import Backend, SubmitError, SweepLedger, slurm_answers, stop_processes_under, time_limit_seconds
from sweeper.grid import Experiment

POLL_S = 2.0
ARRAY_PARALLELISM = 4
MISSING = ("Slurm does not answer (sbatch/squeue): on this machine start the loopback cluster with "
           "`bin/cluster up` and `export SLURM_CONF=$PWD/.cluster/slurm.conf`, or use BACKEND=simulate")


def time_limit_s(text: str) -> int:
    """bin/sweep's --time-limit in seconds; none given: the sbatch scripts' default."""
    return time_limit_seconds(text) or render.DEFAULT_TIME_S


def render_job(exp: Experiment, run_dir: str, sweep: str, args: argparse.Namespace) -> str:
    return render.render(exp.config, committed=False, run_dir=run_dir, root=ROOT, sweep=sweep, experiment=exp.id,
                         job_name=f"ts-{exp.id}", partition=args.partition, account=args.account,
                         time_s=time_limit_s(args.time_limit), output=os.path.join(run_dir, "job.out"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- waiting ------------------------------------------------------------------------------------

def wait(path: str, exp_ids: list[str], states_of: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Poll until every experiment is final, printing a line whenever a state changes."""
    last: dict[str, str] = {}
    tty = sys.stdout.isatty()
    while True:
        states = states_of()
        for exp_id in exp_ids:
            state = states.get(exp_id, "UNKNOWN")
            if last.get(exp_id) != state:
                if tty:
                    print()
                print(f"  {exp_id}: {state}", flush=True)
        last = {e: states.get(e, "UNKNOWN") for e in exp_ids}
        done = sum(1 for s in last.values() if track.is_final(s))
        running = sum(1 for s in last.values() if s in ("RUNNING", "COMPLETING", "CONFIGURING"))
        pending = len(exp_ids) - done - running
        line = f"sweep {os.path.basename(path)}: {pending} pending, {running} running, {done}/{len(exp_ids)} done"
        if tty:
            print(f"\r{line}", end="", flush=True)
        if done == len(exp_ids):
            if tty:
                print()
            else:
                print(line, flush=True)
            return last
        time.sleep(POLL_S)


# ---- BACKEND=slurm ----------------------------------------------------------------------------------

def _submit(script: str, serial_name: str = "", attempt_base: int = 0) -> str:
    """sbatch the script; with `serial_name`, as one of the jobs of that name that Slurm runs one at a time.
    The job numbers its attempts after the `attempt_base` the experiment had (TS_ATTEMPT_BASE)."""
    extra = [f"--job-name={serial_name}", "--dependency=singleton"] if serial_name else []
    extra.append(f"--export=ALL,{envnames.ATTEMPT_BASE}={attempt_base}")
    out = subprocess.run(["sbatch", "--parsable", *extra, script], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed: {_one_line(out.stderr or out.stdout)}")
    return out.stdout.strip().split(";")[0]


def _dry_run(experiments: list[Experiment], path: str, name: str, args: argparse.Namespace) -> int:
    check = slurm_answers()
    for exp in experiments:
        run_dir = os.path.join(path, exp.id)
        os.makedirs(run_dir, exist_ok=True)
        script = os.path.join(run_dir, "job.sbatch")
        with open(script, "w") as f:
            f.write(render_job(exp, run_dir, name, args))
        if not check:
            print(f"  rendered {script}")
            continue
        out = subprocess.run(["sbatch", "--test-only", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
        if out.returncode != 0:
            print(f"error: sbatch --test-only refused {exp.id}: {_one_line(out.stderr or out.stdout)}", file=sys.stderr)
            return 2
        print(f"  checked {script}: {_one_line(out.stderr or out.stdout)}")
    note = "each checked with sbatch --test-only" if check else "Slurm does not answer here: not checked"
    print(f"dry run: {len(experiments)} script(s) rendered ({note}); nothing submitted")
    return 0


class SbatchBackend(Backend):
    """BACKEND=slurm: one `sbatch` job per experiment; Ctrl-C stops waiting, the jobs keep running."""
    name = "slurm"
    queues = True
    stops_on_interrupt = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def preflight(self, book: SweepLedger, runnable: list[Experiment]) -> str | None:
        try:
            for exp in runnable:  # render everything first: a value that cannot be rendered submits nothing
                render_job(exp, book.run_dir(exp.id), book.name, self.args)
        except ConfigError as e:
            return str(e)
        if not self.args.dry_run and not slurm_answers():
            return MISSING
        return None

    def dry_run(self, book: SweepLedger, runnable: list[Experiment]) -> int:
        return _dry_run(runnable, book.path, book.name, self.args)

    def submit(self, book: SweepLedger, todo: list[Experiment]) -> None:
        known = track.sweep_states(book.path)
        for exp in todo:
            run_dir = book.run_dir(exp.id)
            state, jid = known.get(exp.id, (rundir.status_of(run_dir) or "", ""))
            if jid and not track.is_final(state):
                print(f"{book.number(exp.id)} {exp.id}: already {state} (job {jid}), not submitted again")
                continue
            book.prepare(exp)
            base = int(book.status(exp.id).get("attempts", 0) or 0)
            script = os.path.join(run_dir, "job.sbatch")
            with open(script, "w") as f:
                f.write(render_job(exp, run_dir, book.name, self.args))
            try:
                job_id = _submit(script, f"ts-{book.name}" if getattr(self.args, "serial", False) else "", base)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                raise SubmitError(str(e)) from None
            book.mark(exp.id, state="PENDING", job_id=job_id, submitted=time.time())
            track.record_job(book.path, exp.id, job_id)
            print(f"{book.number(exp.id)} {exp.id}: submitted job {job_id} "
                  f"({exp.config.nodes} node(s) x {exp.config.procs_per_node})", flush=True)

    def wait(self, book: SweepLedger, todo: list[Experiment]) -> dict[str, str]:
        return wait(book.path, [e.id for e in todo], lambda: {
            e: s for e, (s, _) in track.sweep_states(book.path, release=True).items()})

    def status(self, book: SweepLedger) -> dict[str, str]:
        return {e: s for e, (s, _) in track.sweep_states(book.path).items()}

    def cancel(self, book: SweepLedger) -> list[str]:
        live = [e for e, s in self.status(book).items() if not track.is_final(s)]
        track.cancel_command(book.path)
        return live


# ---- BACKEND=submitit -----------------------------------------------------------------------------

class SubmititBackend(Backend):
    """BACKEND=submitit: job arrays on Slurm (they live on after Ctrl-C), else the LocalExecutor,
    one experiment after the other (Ctrl-C / SIGTERM cancel the running one)."""
    name = "submitit"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.on_slurm = slurm_answers()
        self.queues = self.on_slurm
        self.stops_on_interrupt = not self.on_slurm
        self.limit_min = max(1, -(-time_limit_s(args.time_limit) // 60))
        self.jobs: dict[str, object] = {}
        self.running: str | None = None

    def dry_run(self, book: SweepLedger, runnable: list[Experiment]) -> int:
        where = "Slurm (SlurmExecutor job arrays)" if self.on_slurm else "this machine (LocalExecutor)"
        for exp in runnable:
            if book.state(exp.id) != "COMPLETED":
                print(f"  would run {exp.id} on {where}: {exp.config.nodes} node(s) x {exp.config.procs_per_node}")
        return 0

    def _spec(self, book: SweepLedger, exp: Experiment):
        from slurm.submitit_task import RankSpec

        run_dir = book.prepare(exp)
        return RankSpec(run_dir, exp.config.strategy, tuple(exp.config.to_argv()), exp.config.procs_per_node)

    def submit(self, book: SweepLedger, todo: list[Experiment]) -> None:
        if not self.on_slurm:
            if todo:
                print("Slurm does not answer here: submitit's LocalExecutor runs the experiments one after the other")
            return  # one after another, in wait
        import submitit

        from slurm.submitit_task import run_rank

        folder = os.path.join(book.path, "submitit", "%j")
        groups: dict[tuple[int, int, int], list[tuple[Experiment, object]]] = {}
        for exp in todo:
            spec = self._spec(book, exp)
            base = int(book.status(exp.id).get("attempts", 0) or 0)
            groups.setdefault((exp.config.nodes, exp.config.procs_per_node, base), []).append((exp, spec))
        for (nodes, procs, base), group in groups.items():
            ex = submitit.SlurmExecutor(folder=folder)
            serial = getattr(self.args, "serial", False)
            params = {"job_name": f"ts-{book.name}" if serial else f"ts-{book.name}-n{nodes}", "nodes": nodes,
                      "ntasks_per_node": procs, "cpus_per_task": 1, "time": self.limit_min,
                      "array_parallelism": 1 if serial else ARRAY_PARALLELISM,
                      "srun_args": ["--kill-on-bad-exit=1", "--cpus-per-task=1"],
                      "signal_delay_s": render.warning_seconds(time_limit_s(self.args.time_limit))}
            if serial:  # one job of this name at a time, across the arrays of every layout
                params["additional_parameters"] = {"dependency": "singleton"}
            if self.args.partition:
                params["partition"] = self.args.partition
            if self.args.account:
                params["account"] = self.args.account
            ex.update_parameters(**params)
            with _attempt_base(base):  # the job's environment numbers its attempts after the earlier ones
                submitted = ex.map_array(run_rank, [spec for _, spec in group])
            for (exp, _), job in zip(group, submitted, strict=True):
                self.jobs[exp.id] = job
                track.record_job(book.path, exp.id, job.job_id)
                book.mark(exp.id, job_id=job.job_id)
                print(f"  {exp.id}: submitted array task {job.job_id}", flush=True)

    def wait(self, book: SweepLedger, todo: list[Experiment]) -> dict[str, str]:
        if self.on_slurm:  # Slurm's own view (submitit's polls sacct, which needs accounting)
            return wait(book.path, list(self.jobs), lambda: {
                e: s for e, (s, _) in track.sweep_states(book.path).items()})
        import submitit

        from slurm.submitit_task import run_rank

        folder = os.path.join(book.path, "submitit", "%j")
        for exp in todo:
            spec = self._spec(book, exp)
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(nodes=1, tasks_per_node=exp.config.world_size, timeout_min=self.limit_min)
            self.running = exp.id
            # The local job keeps SIGINT blocked (the mask is inherited), so a terminal's Ctrl-C to
            # the process group reaches only bin/sweep, which then stops the job (`cancel`).
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                with _attempt_base(int(book.status(exp.id).get("attempts", 0) or 0)):
                    self.jobs[exp.id] = job = ex.submit(run_rank, spec)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            print(f"{book.number(exp.id)} {exp.id}: local job {job.job_id}, {exp.config.world_size} task(s)",
                  flush=True)
            while not job.done():
                time.sleep(0.2)
            self.running = None
        return wait(book.path, list(self.jobs), lambda: {e: _submitit_state(book.path, e, j)
                                                         for e, j in self.jobs.items()})

    def status(self, book: SweepLedger) -> dict[str, str]:
        if self.on_slurm:
            return {e: s for e, (s, _) in track.sweep_states(book.path).items()}
        return {e: _submitit_state(book.path, e, j) for e, j in self.jobs.items()}

    def cancel(self, book: SweepLedger) -> list[str]:
        """LocalExecutor: stop the running job (controller, tasks, trainers); CANCELLED."""
        exp_id = self.running
        if exp_id is None:
            return []
        proc = getattr(self.jobs.get(exp_id), "_process", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the controller forwards it to its tasks
        stop_processes_under(book.path)  # the trainers (children of the tasks), and anything left
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        track.mark(book.run_dir(exp_id), "CANCELLED", reason="interrupted: bin/sweep stopped", env={},
                   attempt=int(book.status(exp_id).get("attempts", 0) or 0) or None)
        return [exp_id]


@contextmanager
def _attempt_base(base: int) -> Iterator[None]:
    old = os.environ.get(envnames.ATTEMPT_BASE)
    os.environ[envnames.ATTEMPT_BASE] = str(base)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(envnames.ATTEMPT_BASE, None)
        else:
            os.environ[envnames.ATTEMPT_BASE] = old


def _submitit_state(path: str, exp_id: str, job) -> str:
    """LocalExecutor: rank 0's status.json when it wrote a final state; else submitit's view of the job."""
    status = rundir.read_status(os.path.join(path, exp_id))
    if status.get("state") in rundir.FINAL_STATES:
        return status["state"]
    if not job.done():
        return "RUNNING" if job.state == "RUNNING" else "PENDING"
    # Finished without rank 0 recording an end: it was killed (time limit, cancel, a peer's failure).
    final = track.FINAL_MAP.get(str(job.state).split()[0], "FAILED")
    final = "FAILED" if final == "COMPLETED" else final
    track.mark(os.path.join(path, exp_id), final, reason=f"submitit job {job.job_id} ended {job.state}", env={})
    return final


def make_backend(backend: str, args: argparse.Namespace) -> Backend:
    """bin/sweep's BACKEND=slurm|submitit."""
    return SbatchBackend(args) if backend == "slurm" else SubmititBackend(args)
