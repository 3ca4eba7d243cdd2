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
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from slurm import render, track
from trainers.common import rundir
from trainers.common.config import ConfigError
from trainers.common.grid import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 2.0
ARRAY_PARALLELISM = 4
MISSING = ("Slurm does not answer (sbatch/squeue): on this machine start the loopback cluster with "
           "`bin/cluster up` and `export SLURM_CONF=$PWD/.cluster/slurm.conf`, or use BACKEND=simulate")


def slurm_answers() -> bool:
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        return False
    try:
        return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def time_limit_s(text: str) -> int:
    """bin/sweep's --time-limit ('30' minutes, 'MM:SS' or 'H:MM:SS'; validated there) -> seconds."""
    if not text:
        return render.DEFAULT_TIME_S
    parts = [int(x) for x in text.split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    seconds = 0
    for x in parts:
        seconds = seconds * 60 + x
    return seconds


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


def summarize(path: str, name: str, states: dict[str, str], skipped: int) -> int:
    failures = [rundir.failure_line(os.path.join(path, e), e) for e, s in states.items() if s != "COMPLETED"]
    done = sum(1 for s in states.values() if s == "COMPLETED")
    print(f"sweep {name}: {done}/{len(states)} completed, {len(failures)} failed, {skipped} skipped; logs in {path}")
    for line in failures:
        print(f"  {line}")
    return 1 if failures else 0


# ---- BACKEND=slurm ----------------------------------------------------------------------------------

def _submit(script: str, serial_name: str = "") -> str:
    """sbatch the script; with `serial_name`, as one of the jobs of that name that Slurm runs one at a time."""
    extra = [f"--job-name={serial_name}", "--dependency=singleton"] if serial_name else []
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


def run_slurm(experiments: list[Experiment], path: str, name: str, args: argparse.Namespace) -> int:
    runnable = [e for e in experiments if e.skipped is None]
    try:
        for exp in runnable:  # render everything first: a value that cannot be rendered submits nothing
            render_job(exp, os.path.join(path, exp.id), name, args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return _dry_run(runnable, path, name, args)
    if not slurm_answers():
        print(f"error: {MISSING}", file=sys.stderr)
        return 2
    rundir.write_sweep(path, name, "slurm", vars(args), experiments)
    for exp in experiments:
        if exp.skipped:
            rundir.mark_skipped(path, exp)
    known = track.sweep_states(path)
    for k, exp in enumerate(runnable, 1):
        run_dir = os.path.join(path, exp.id)
        state, jid = known.get(exp.id, (rundir.status_of(run_dir) or "", ""))
        if state == "COMPLETED" or (jid and not track.is_final(state)):
            print(f"[{k}/{len(runnable)}] {exp.id}: already {state} (job {jid or '-'}), not submitted again")
            continue
        rundir.prepare_experiment(path, exp, "slurm", name)
        script = os.path.join(run_dir, "job.sbatch")
        with open(script, "w") as f:
            f.write(render_job(exp, run_dir, name, args))
        try:
            job_id = _submit(script, f"ts-{name}" if getattr(args, "serial", False) else "")
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        rundir.write_json(os.path.join(run_dir, "status.json"),
                          {"state": "PENDING", "job_id": job_id, "attempts": 0, "backend": "slurm",
                           "submitted": time.time()})
        track.record_job(path, exp.id, job_id)
        print(f"[{k}/{len(runnable)}] {exp.id}: submitted job {job_id} "
              f"({exp.config.nodes} node(s) x {exp.config.procs_per_node})", flush=True)
    if args.no_wait:
        print(f"submitted; follow with `make status SWEEP={name}`, stop with `make cancel SWEEP={name}`")
        return 0
    ids = [e.id for e in runnable]
    try:
        states = wait(path, ids, lambda: {e: s for e, (s, _) in track.sweep_states(path, release=True).items()})
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the jobs keep running: `make status SWEEP={name}`, `make cancel SWEEP={name}`")
        return 130
    return summarize(path, name, states, len(experiments) - len(runnable))


# ---- BACKEND=submitit -----------------------------------------------------------------------------

def run_submitit(experiments: list[Experiment], path: str, name: str, args: argparse.Namespace) -> int:
    import submitit

    from slurm.submitit_task import RankSpec, run_rank

    runnable = [e for e in experiments
                if e.skipped is None and rundir.status_of(os.path.join(path, e.id)) != "COMPLETED"]
    on_slurm = slurm_answers()
    limit_min = max(1, -(-time_limit_s(args.time_limit) // 60))
    if args.dry_run:
        where = "Slurm (SlurmExecutor job arrays)" if on_slurm else "this machine (LocalExecutor)"
        for exp in runnable:
            print(f"  would run {exp.id} on {where}: {exp.config.nodes} node(s) x {exp.config.procs_per_node}")
        return 0
    rundir.write_sweep(path, name, "submitit", vars(args), experiments)
    for exp in experiments:
        if exp.skipped:
            rundir.mark_skipped(path, exp)
    specs: dict[str, RankSpec] = {}
    for exp in runnable:
        run_dir = rundir.prepare_experiment(path, exp, "submitit", name)
        rundir.write_json(os.path.join(run_dir, "status.json"), {"state": "PENDING", "attempts": 0,
                                                                 "backend": "submitit"})
        specs[exp.id] = RankSpec(run_dir, exp.config.strategy, tuple(exp.config.to_argv()), exp.config.procs_per_node)
    folder = os.path.join(path, "submitit", "%j")
    jobs: dict[str, object] = {}
    if on_slurm:
        groups: dict[tuple[int, int], list[Experiment]] = {}
        for exp in runnable:
            groups.setdefault((exp.config.nodes, exp.config.procs_per_node), []).append(exp)
        for (nodes, procs), group in groups.items():
            ex = submitit.SlurmExecutor(folder=folder)
            serial = getattr(args, "serial", False)
            params = {"job_name": f"ts-{name}" if serial else f"ts-{name}-n{nodes}", "nodes": nodes,
                      "ntasks_per_node": procs, "cpus_per_task": 1, "time": limit_min,
                      "array_parallelism": 1 if serial else ARRAY_PARALLELISM,
                      "srun_args": ["--kill-on-bad-exit=1", "--cpus-per-task=1"],
                      "signal_delay_s": render.warning_seconds(time_limit_s(args.time_limit))}
            if serial:  # one job of this name at a time, across the arrays of every layout
                params["additional_parameters"] = {"dependency": "singleton"}
            if args.partition:
                params["partition"] = args.partition
            if args.account:
                params["account"] = args.account
            ex.update_parameters(**params)
            submitted = ex.map_array(run_rank, [specs[e.id] for e in group])
            for exp, job in zip(group, submitted, strict=True):
                jobs[exp.id] = job
                track.record_job(path, exp.id, job.job_id)
                print(f"  {exp.id}: submitted array task {job.job_id}", flush=True)
        if args.no_wait:
            print(f"submitted; follow with `make status SWEEP={name}`, stop with `make cancel SWEEP={name}`")
            return 0
    else:
        print("Slurm does not answer here: submitit's LocalExecutor runs the experiments one after the other")
        for k, exp in enumerate(runnable, 1):
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(nodes=1, tasks_per_node=exp.config.world_size, timeout_min=limit_min)
            job = ex.submit(run_rank, specs[exp.id])
            print(f"[{k}/{len(runnable)}] {exp.id}: local job {job.job_id}, {exp.config.world_size} task(s)",
                  flush=True)
            job.wait()
            jobs[exp.id] = job
    if on_slurm:  # Slurm's own view (submitit's polls sacct, which needs accounting)
        def states_of() -> dict[str, str]:
            return {e: s for e, (s, _) in track.sweep_states(path).items()}
    else:
        def states_of() -> dict[str, str]:
            return {e: _submitit_state(path, e, j) for e, j in jobs.items()}
    try:
        states = wait(path, list(jobs), states_of)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; `make status SWEEP={name}`, `make cancel SWEEP={name}`")
        return 130
    return summarize(path, name, states, len(experiments) - len(runnable))


def _submitit_state(path: str, exp_id: str, job) -> str:
    """LocalExecutor: rank 0's status.json when it wrote a final state; else submitit's view of the job."""
    status = rundir.read_json(os.path.join(path, exp_id, "status.json"))
    if status.get("state") in rundir.FINAL_STATES:
        return status["state"]
    if not job.done():
        return "RUNNING" if job.state == "RUNNING" else "PENDING"
    # Finished without rank 0 recording an end: it was killed (time limit, cancel, a peer's failure).
    final = track.FINAL_MAP.get(str(job.state).split()[0], "FAILED")
    final = "FAILED" if final == "COMPLETED" else final
    track.mark(os.path.join(path, exp_id), final, reason=f"submitit job {job.job_id} ended {job.state}", env={})
    return final


def main(experiments: list[Experiment], path: str, sweep_name: str, backend: str, args: argparse.Namespace) -> int:
    """Entry point from bin/sweep for BACKEND=slurm|submitit. Exit status as bin/sweep documents."""
    if backend == "slurm":
        return run_slurm(experiments, path, sweep_name, args)
    if backend == "submitit":
        return run_submitit(experiments, path, sweep_name, args)
    print(f"error: unknown Slurm backend {backend!r}", file=sys.stderr)
    return 2
