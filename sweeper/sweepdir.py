"""The sweep's own files: sweep.json (the union of every `bin/sweep` invocation under one sweep
name), each experiment's fresh config.json at submission, and the SKIPPED status of a point the
strategy can never run.

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
import os
import socket

from contract.config import identity_diff
from contract.rundir import git_commit, read_json, stored_identity, update_config, write_json, write_status
from sweeper.grid import Experiment


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
    write_status(run_dir, "SKIPPED", fresh=True, reason=exp.skipped, attempts=0)
