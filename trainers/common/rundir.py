"""The run directory contract (docs/logs.md): sweep.json, config.json, status.json. Torch-free.

Shared by every backend so a sweep looks the same whether it ran on Slurm or here.

config.json has one writer, `update_config`: {"config": the experiment's settings,
"identity": ExperimentConfig.identity() (every result-changing setting), "meta": what the
backend, the launcher and rank 0 know (each merges its part)}.

sweep.json describes the union of every invocation of `bin/sweep` under one sweep name:
  "experiments": every experiment whose directory is in the sweep folder, each with its
                 grid fields (id, skipped, strategy, nodes, ...) and its "identity";
  "invocations": one entry per invocation that still has an experiment here: its "grid"
                 (bin/sweep's arguments), "backend", "started", "git_commit", "experiments" (ids);
  "grid":        only the arguments on which every invocation agrees (so never a value that
                 some of the sweep's runs do not have); "backend" the latest one.
A re-run never relabels a run: `identity_conflict` refuses an experiment id whose directory
holds a run made with other settings, before anything is written.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
from typing import Any

from trainers.common.config import ExperimentConfig, check_name, identity_diff
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


def update_config(run_dir: str, meta: dict | None = None, cfg: ExperimentConfig | None = None, *,
                  fresh: bool = False, keep_config: bool = False) -> dict:
    """The one writer of config.json: merge `meta` into its "meta"; with `cfg`, write "config"
    and "identity" (unless `keep_config` and they are there already); `fresh` starts over."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    doc = {} if fresh else read_json(path)
    if cfg is not None and not (keep_config and isinstance(doc.get("config"), dict)):
        doc["config"] = {**cfg.to_dict(), "run_dir": cfg.run_dir or run_dir}
        doc["identity"] = cfg.identity()
    elif "identity" not in doc and isinstance(doc.get("config"), dict):
        ident = _identity_of(doc["config"])
        if ident is not None:
            doc["identity"] = ident
    if not isinstance(doc.get("meta"), dict):
        doc["meta"] = {}
    doc["meta"].update(meta or {})
    write_json(path, doc)
    return doc


def update_status(run_dir: str, **fields: Any) -> dict:
    """Merge fields into status.json (attempts and history stay)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "status.json")
    doc = read_json(path)
    doc.update(fields)
    write_json(path, doc)
    return doc


def _identity_of(config: dict) -> dict | None:
    try:
        return ExperimentConfig.from_dict(config).identity()
    except Exception:  # noqa: BLE001 - a config this version cannot read has no identity to compare
        return None


def stored_identity(run_dir: str) -> dict | None:
    """The identity of the run in `run_dir`: config.json's "identity", for older runs derived
    from its "config"; None when the directory holds no run (nothing ran or was submitted)."""
    status = read_json(os.path.join(run_dir, "status.json"))
    ran = status.get("state") not in (None, "SKIPPED", "PENDING") or bool(status.get("job_id")) or (
        os.path.isdir(run_dir) and any(n.startswith("rank-") and n.endswith(".jsonl") for n in os.listdir(run_dir)))
    if not ran:
        return None
    doc = read_json(os.path.join(run_dir, "config.json"))
    if isinstance(doc.get("identity"), dict):
        return doc["identity"]
    return _identity_of(doc["config"]) if isinstance(doc.get("config"), dict) else None


def identity_conflict(path: str, name: str, experiments: list[Experiment]) -> str | None:
    """One line naming the first experiment whose directory holds a run with other settings."""
    for exp in experiments:
        run_dir = os.path.join(path, exp.id)
        old = stored_identity(run_dir)
        if old is None:
            continue
        diff = identity_diff(old, exp.config.identity())
        if diff:
            return (f"sweep {name} already holds {exp.id} run with other settings ({', '.join(diff)}); "
                    f"use another SWEEP name or remove {run_dir}")
    return None


def sweep_doc(old: dict, path: str, name: str, backend: str, grid: dict, experiments: list[Experiment],
              now: str, commit: str | None = None) -> dict:
    """sweep.json after this invocation: the union with what `old` described (module docstring)."""
    def present(exp_id: str) -> bool:
        return os.path.isdir(os.path.join(path, exp_id))

    entries: dict[str, dict] = {}
    for e in old.get("experiments", []) if isinstance(old.get("experiments"), list) else []:
        if isinstance(e, dict) and isinstance(e.get("id"), str) and present(e["id"]):
            entries[e["id"]] = e
    for exp in experiments:
        entries[exp.id] = {**exp.describe(), "identity": exp.config.identity()}
    invocations = [i for i in old.get("invocations", []) if isinstance(i, dict)] \
        if isinstance(old.get("invocations"), list) else []
    if not invocations and isinstance(old.get("grid"), dict) and entries:  # a sweep.json from before invocations
        invocations = [{"grid": old["grid"], "backend": old.get("backend"), "started": old.get("created"),
                        "git_commit": old.get("git_commit"), "experiments": [
                            e["id"] for e in old.get("experiments", []) if isinstance(e, dict) and "id" in e]}]
    kept = []
    for inv in invocations:
        ids = [i for i in inv.get("experiments", []) if i in entries and present(i)]
        if ids:
            kept.append({**inv, "experiments": ids})
    kept.append({"grid": grid, "backend": backend, "started": now, "git_commit": commit,
                 "experiments": [e.id for e in experiments]})
    common = {k: v for k, v in grid.items() if all(isinstance(i.get("grid"), dict) and k in i["grid"]
                                                   and i["grid"][k] == v for i in kept)}
    return {"sweep": name, "backend": backend, "grid": common, "created": old.get("created", now), "updated": now,
            "git_commit": commit, "host": socket.gethostname(), "invocations": kept,
            "experiments": list(entries.values())}


def write_sweep(path: str, name: str, backend: str, grid: dict, experiments: list[Experiment]) -> None:
    """sweep.json: the union of this invocation's experiments with the sweep's earlier ones."""
    os.makedirs(path, exist_ok=True)
    for exp in experiments:  # listed experiments have a directory
        os.makedirs(os.path.join(path, exp.id), exist_ok=True)
    old = read_json(os.path.join(path, "sweep.json"))
    now = datetime.datetime.now().isoformat(timespec="seconds")
    write_json(os.path.join(path, "sweep.json"), sweep_doc(old, path, name, backend, grid, experiments, now,
                                                           git_commit()))


def prepare_experiment(path: str, exp: Experiment, backend: str, sweep: str, extra_meta: dict | None = None) -> str:
    """Create the experiment's directory and a fresh config.json; return the directory."""
    run_dir = os.path.join(path, exp.id)
    meta = {"backend": backend, "sweep": sweep, "experiment": exp.id, "git_commit": git_commit(),
            "written": datetime.datetime.now().isoformat(timespec="seconds"), **(extra_meta or {})}
    update_config(run_dir, meta, exp.config, fresh=True)
    return run_dir


def mark_skipped(path: str, exp: Experiment) -> None:
    run_dir = os.path.join(path, exp.id)
    update_config(run_dir, {"skipped": exp.skipped}, exp.config, fresh=True)
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
