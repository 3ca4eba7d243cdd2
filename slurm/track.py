"""Job tracking for the Slurm backends: status.json updates from job scripts, sweep status, cancel.

    python -m slurm.track status [--sweep NAME] [--logs DIR]   # one line per experiment (make status)
    python -m slurm.track cancel [--sweep NAME] [--logs DIR]   # scancel what is still queued or running
    python -m slurm.track mark RUN_DIR STATE [...]           # called by the job scripts
    python -m slurm.track attempt                            # this job's attempt (rundir.current_attempt)

Where a state comes from, best first: a final state the job itself wrote to status.json (it
knows the exit code), then Slurm's view (squeue, then scontrol, then sacct where accounting
exists), then whatever status.json said last. Torch-free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from contract import envnames, rundir
from contract.config import check_name
from contract.errors import ConfigError

JOBS_FILE = "slurm-jobs.json"  # in the sweep folder: experiment id -> Slurm job id
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD")
# Slurm's final job states -> the run directory contract's states.
FINAL_MAP = {"COMPLETED": "COMPLETED", "CANCELLED": "CANCELLED", "TIMEOUT": "TIMEOUT", "PREEMPTED": "PREEMPTED",
             "DEADLINE": "TIMEOUT", "FAILED": "FAILED", "NODE_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED",
             "BOOT_FAIL": "FAILED"}


# ---- status.json, written from inside a job ------------------------------------------------

def mark(run_dir: str, state: str, exit_code: int | None = None, attempt: int | None = None,
         requeued: bool = False, reason: str | None = None, env: dict[str, str] | None = None) -> dict:
    """Update status.json through rundir.write_status: state, exit code, attempts (a restarted job
    counts up), history. `attempt`: the experiment's attempt, by default rundir.current_attempt(env)."""
    env = dict(os.environ) if env is None else env
    doc = rundir.read_status(run_dir)
    now = time.time()
    attempt = attempt or rundir.current_attempt(env)
    fields: dict = {"backend": doc.get("backend", "slurm"), "started": doc.get("started", now)}
    if env.get("SLURM_JOB_ID"):
        fields["job_id"] = env["SLURM_JOB_ID"]
    history = fields["history"] = doc.get("history", [])
    if state == "RUNNING" and not any(h.get("attempt") == attempt for h in history):
        history.append({"attempt": attempt, "started": now, "nodes": env.get("SLURM_JOB_NODELIST"),
                        "job_id": env.get("SLURM_JOB_ID")})
    for h in history:
        if h.get("attempt") == attempt and state != "RUNNING":
            h.update({"ended": now, "state": state, "exit_code": exit_code})
    fields.update({"attempts": max(int(doc.get("attempts", 0)), attempt), "requeued": requeued, "updated": now})
    if exit_code is not None:
        fields["exit_code"] = exit_code
    if reason:
        fields["reason"] = reason
    if state in rundir.FINAL_STATES and not requeued:
        fields.update(ended=now, wall_s=now - float(fields["started"]))
    drop = ("reason",) if not reason and state in ("RUNNING", "COMPLETED") else ()  # an earlier attempt's
    return rundir.write_status(run_dir, state, drop=drop, **fields)


# ---- reading Slurm ----------------------------------------------------------------------------

def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def accounting_exists() -> bool:
    out = _run(["scontrol", "show", "config"])
    return bool(out and out.returncode == 0 and "AccountingStorageType" in out.stdout
                and "accounting_storage/none" not in out.stdout)


@dataclass
class JobState:
    state: str  # Slurm's state, or UNKNOWN when no source knows the job
    reason: str = ""


def slurm_states(job_ids: list[str], use_sacct: bool | None = None) -> dict[str, JobState]:
    """Slurm's view of these jobs: squeue (includes recently finished), then scontrol, then sacct."""
    found: dict[str, JobState] = {}
    if not job_ids:
        return found
    out = _run(["squeue", "-h", "--array", "--states=all", "-o", "%i|%T|%r", "--jobs", ",".join(job_ids)])
    if out is not None and out.returncode == 0:
        for line in out.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in job_ids:
                found[parts[0]] = JobState(parts[1], parts[2])
    for jid in (j for j in job_ids if j not in found):
        out = _run(["scontrol", "show", "job", jid, "-o"])
        if out is not None and out.returncode == 0 and "JobState=" in out.stdout:
            words = dict(w.split("=", 1) for w in out.stdout.split() if "=" in w)
            found[jid] = JobState(words.get("JobState", "UNKNOWN"), words.get("Reason", ""))
    rest = [j for j in job_ids if j not in found]
    if rest and (accounting_exists() if use_sacct is None else use_sacct):
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)])
        for line in (out.stdout.splitlines() if out is not None and out.returncode == 0 else []):
            jid, _, state = line.partition("|")
            if jid in rest and state:
                found[jid] = JobState(state.split()[0])
    return found


def combined_state(status: dict, slurm: JobState | None) -> str:
    """One state for an experiment: see the module docstring for the order of the sources."""
    mine = status.get("state")
    if mine in rundir.FINAL_STATES and not status.get("requeued"):
        return mine
    if slurm is not None:
        if slurm.state in FINAL_MAP:
            return FINAL_MAP[slurm.state]
        if slurm.state.startswith("REQUEUE") or (slurm.state == "PENDING" and status.get("requeued")):
            return "REQUEUED"
        return slurm.state if slurm.state in ACTIVE else "FAILED"
    if mine in (None, "SUBMITTED", "PENDING", "RUNNING") or status.get("requeued"):
        return "UNKNOWN"  # Slurm forgot the job and it never wrote a final state: it died hard
    return str(mine)


def release_requeued(job_id: str, slurm: JobState | None) -> bool:
    """A requeued job waits for cred_expire (120 s by default, Reason=BeginTime): start it now."""
    if slurm is None or slurm.state != "PENDING" or slurm.reason != "BeginTime":
        return False
    out = _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    return bool(out and out.returncode == 0)


def is_final(state: str) -> bool:
    return state in rundir.FINAL_STATES or state == "UNKNOWN"


# ---- a sweep's jobs ---------------------------------------------------------------------------

def sweep_jobs(path: str) -> dict[str, str]:
    """Experiment id -> job id, for the experiments of this sweep that were submitted."""
    return {k: str(v) for k, v in rundir.read_json(os.path.join(path, JOBS_FILE)).items()}


def record_job(path: str, exp_id: str, job_id: str) -> None:
    jobs = sweep_jobs(path)
    jobs[exp_id] = job_id
    rundir.write_json(os.path.join(path, JOBS_FILE), jobs)


def sweep_states(path: str, release: bool = False) -> dict[str, tuple[str, str]]:
    """Experiment id -> (state, job id) for every submitted experiment of the sweep."""
    jobs = sweep_jobs(path)
    slurm = slurm_states(sorted(set(jobs.values())))
    out = {}
    for exp_id, jid in jobs.items():
        status = rundir.read_status(os.path.join(path, exp_id))
        state = combined_state(status, slurm.get(jid))
        if release and state == "REQUEUED":
            release_requeued(jid, slurm.get(jid))
        out[exp_id] = (state, jid)
    return out


def status_command(path: str) -> int:
    if not os.path.isdir(path):
        print(f"error: no sweep at {path}", file=sys.stderr)
        return 2
    states = sweep_states(path)
    if not states:  # a sweep that ran here (simulate, submitit's LocalExecutor): what status.json says
        ids = [e["id"] for e in rundir.read_json(os.path.join(path, "sweep.json")).get("experiments", [])
               if isinstance(e, dict) and isinstance(e.get("id"), str)]
        states = {e: (rundir.status_of(os.path.join(path, e)) or "UNKNOWN", "-") for e in ids}
        if not states:
            print(f"sweep {os.path.basename(path)}: no Slurm jobs recorded ({path})")
            return 0
    width = max(len(e) for e in states)
    for exp_id, (state, jid) in sorted(states.items()):
        attempts = rundir.read_status(os.path.join(path, exp_id)).get("attempts", 0)
        print(f"{exp_id:<{width}}  job {jid:<10} {state:<10} attempts {attempts}")
    counts: dict[str, int] = {}
    for state, _ in states.values():
        counts[state] = counts.get(state, 0) + 1
    print(f"sweep {os.path.basename(path)}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    return 0


def cancel_command(path: str) -> int:
    if not os.path.isdir(path):
        print(f"error: no sweep at {path}", file=sys.stderr)
        return 2
    live = {e: j for e, (s, j) in sweep_states(path).items() if not is_final(s)}
    if not live:
        print(f"sweep {os.path.basename(path)}: nothing to cancel")
        return 0
    out = _run(["scancel", *sorted(set(live.values()))])
    if out is None or out.returncode != 0:
        print(f"error: scancel failed: {out.stderr.strip() if out else 'not found'}", file=sys.stderr)
        return 1
    for exp_id in live:
        status = rundir.read_status(os.path.join(path, exp_id))
        if status.get("state") in (None, "SUBMITTED", "PENDING") or status.get("requeued"):
            # A pending job never runs its script, so nobody else records the cancellation.
            mark(os.path.join(path, exp_id), "CANCELLED", reason="cancelled before it ran", env={})
    print(f"sweep {os.path.basename(path)}: cancelled {len(live)} job(s): {', '.join(sorted(live.values()))}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m slurm.track")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("status", "cancel"):
        s = sub.add_parser(name)
        s.add_argument("--sweep", default="", help="sweep name (default: the newest sweep under --logs)")
        s.add_argument("--logs", default=rundir.LOGS)
    m = sub.add_parser("mark")
    m.add_argument("run_dir")
    m.add_argument("state", choices=rundir.STATES)
    m.add_argument("--exit-code", type=int)
    m.add_argument("--attempt", type=int, help="the experiment's attempt (default: rundir.current_attempt)")
    m.add_argument("--requeued", action="store_true")
    m.add_argument("--reason")
    sub.add_parser("attempt", help="print this job's attempt number")
    args = p.parse_args(argv)
    if args.command == "mark":
        mark(args.run_dir, args.state, args.exit_code, args.attempt, args.requeued, args.reason)
        return 0
    if args.command == "attempt":  # without TS_ATTEMPT, as the job's ranks (slurm/launch.py FOREIGN)
        print(rundir.current_attempt({k: v for k, v in os.environ.items() if k != envnames.ATTEMPT}))
        return 0
    try:
        if args.sweep:
            path = os.path.join(args.logs, check_name("sweep name", args.sweep))
        else:
            sweeps = rundir.list_sweeps(args.logs)
            if not sweeps:
                raise ConfigError(f"no sweep found under {args.logs}: give SWEEP=<name>")
            path = os.path.join(args.logs, sweeps[-1])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return status_command(path) if args.command == "status" else cancel_command(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
