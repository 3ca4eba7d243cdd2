"""The run directory contract (docs/logs.md): sweep.json, config.json, status.json. Torch-free.

Shared by every backend so a sweep looks the same whether it ran on Slurm or here.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
from typing import Any

from trainers.common.config import check_name
from trainers.common.grid import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOGS = os.path.join(ROOT, "logs")
FINAL_STATES = ("COMPLETED", "FAILED", "TIMEOUT", "PREEMPTED", "CANCELLED", "SKIPPED")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def default_sweep_name() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def sweep_dir(name: str, logs: str = LOGS) -> str:
    return os.path.join(logs, check_name("sweep name", name))


def write_json(path: str, doc: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(path + ".tmp", path)


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def status_of(run_dir: str) -> str | None:
    return read_json(os.path.join(run_dir, "status.json")).get("state")


def write_sweep(path: str, name: str, backend: str, grid: dict, experiments: list[Experiment]) -> None:
    """sweep.json: the grid, backend, experiments; a re-run keeps the first start time."""
    os.makedirs(path, exist_ok=True)
    old = read_json(os.path.join(path, "sweep.json"))
    doc = {"sweep": name, "backend": backend, "grid": grid,
           "created": old.get("created", datetime.datetime.now().isoformat(timespec="seconds")),
           "updated": datetime.datetime.now().isoformat(timespec="seconds"),
           "git_commit": git_commit(), "host": socket.gethostname(),
           "experiments": [e.describe() for e in experiments]}
    write_json(os.path.join(path, "sweep.json"), doc)


def prepare_experiment(path: str, exp: Experiment, backend: str, sweep: str, extra_meta: dict | None = None) -> str:
    """Create the experiment's directory and its config.json; return the directory."""
    run_dir = os.path.join(path, exp.id)
    os.makedirs(run_dir, exist_ok=True)
    cfg = exp.config.to_dict()
    cfg["run_dir"] = run_dir
    meta = {"backend": backend, "sweep": sweep, "experiment": exp.id, "git_commit": git_commit(),
            "written": datetime.datetime.now().isoformat(timespec="seconds"), **(extra_meta or {})}
    write_json(os.path.join(run_dir, "config.json"), {"config": cfg, "meta": meta})
    return run_dir


def mark_skipped(path: str, exp: Experiment) -> None:
    run_dir = os.path.join(path, exp.id)
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "config.json"), {"config": exp.config.to_dict(), "meta": {"skipped": exp.skipped}})
    write_json(os.path.join(run_dir, "status.json"), {"state": "SKIPPED", "reason": exp.skipped, "attempts": 0})


def last_error(run_dir: str) -> str | None:
    """The first `error` record of any rank (the root cause, not the peers' fallout)."""
    errors: list[tuple[float, str]] = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if not (name.startswith("rank-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(run_dir, name), errors="replace") as f:
            for line in f:
                if '"error"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == "error":
                    errors.append((rec.get("time", 0.0), f"rank {rec.get('rank')}: {rec.get('message')}"))
    return min(errors)[1] if errors else None


def failure_line(run_dir: str, exp_id: str) -> str:
    status = read_json(os.path.join(run_dir, "status.json"))
    state = status.get("state", "UNKNOWN")
    detail = last_error(run_dir)
    if detail is None and status.get("failed_ranks"):
        detail = "exit codes " + ", ".join(f"rank {r}: {c}" for r, c in status["failed_ranks"].items())
    return f"{state} {exp_id}: {detail or status.get('reason') or 'no error record'} (logs: {run_dir})"
