"""The run directory contract (docs/logs.md): paths, config.json, status.json, states, attempts. Torch-free.

Shared by every backend so a sweep looks the same whether it ran on Slurm or here.

config.json has one writer, `update_config`: {"config": the experiment's settings,
"identity": ExperimentConfig.identity() (every result-changing setting), "meta": what the
backend, the launcher and rank 0 know (each merges its part)}.

status.json has one writer, `write_status`, which takes only a state of `STATES`; every
backend, the job scripts (through `python -m slurm.track mark`) and the launcher call it.
`current_attempt` is the one rule for an attempt's number.

The sweep-level files (sweep.json, submission) are sweeper/sweepdir.py's.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from contract import envnames
from contract.config import ExperimentConfig, check_name
from contract.paths import LOGS, ROOT

STATUS = "status.json"
# The final states; STATES: every state status.json may hold, the two before them first.
FINAL_STATES = ("COMPLETED", "FAILED", "TIMEOUT", "PREEMPTED", "CANCELLED", "SKIPPED")
STATES = ("PENDING", "RUNNING", *FINAL_STATES)
# Final, and neither completed nor skipped: the experiment ended without its result.
FAILED_STATES = tuple(s for s in FINAL_STATES if s not in ("COMPLETED", "SKIPPED"))


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


def list_sweeps(logs: str) -> list[str]:
    """Sweep names under `logs`, oldest first (by the mtime of their sweep.json)."""
    found = []
    for name in os.listdir(logs) if os.path.isdir(logs) else []:
        meta = os.path.join(logs, name, "sweep.json")
        if os.path.isfile(meta):
            found.append((os.path.getmtime(meta), name))
    return [n for _, n in sorted(found)]


def experiment_ids(sweep_path: str, meta: dict) -> list[str]:
    """The experiments of a sweep directory: the ids its sweep.json (`meta`) lists, in its order,
    then every other directory that holds a run (a config.json or a rank log), by name. Dot
    directories (the analysis cache) are none."""
    entries = meta.get("experiments") if isinstance(meta.get("experiments"), list) else []
    ids = list(dict.fromkeys(e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)))
    listed = set(ids)
    for name in sorted(os.listdir(sweep_path)) if os.path.isdir(sweep_path) else []:
        sub = os.path.join(sweep_path, name)
        if name in listed or name.startswith(".") or not os.path.isdir(sub):
            continue
        if any(n == "config.json" or (n.startswith("rank-") and n.endswith(".jsonl")) for n in os.listdir(sub)):
            ids.append(name)
    return ids


def read_status(run_dir: str) -> dict:
    """status.json of `run_dir`; {} when there is none (or it cannot be read)."""
    return read_json(os.path.join(run_dir, STATUS))


def status_of(run_dir: str) -> str | None:
    return read_status(run_dir).get("state")


def write_status(run_dir: str, state: str | None = None, *, fresh: bool = False, drop: Iterable[str] = (),
                 **fields: Any) -> dict:
    """The one writer of status.json: merge `fields` and `state` (one of STATES; None keeps the
    state there) into it, `drop` removes fields, `fresh` starts over. Returns what was written."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown status.json state {state!r}: choose from {', '.join(STATES)}")
    os.makedirs(run_dir, exist_ok=True)
    doc = {} if fresh else read_status(run_dir)
    for name in drop:
        doc.pop(name, None)
    doc.update(fields)
    if state is not None:
        doc["state"] = state
    write_json(os.path.join(run_dir, STATUS), doc)
    return doc


def current_attempt(env: Mapping[str, str] | None = None) -> int:
    """This run's attempt: TS_ATTEMPT (the simulate launcher counts them), else the attempts the
    experiment had before this job (TS_ATTEMPT_BASE, set by the Slurm backends at submission)
    plus Slurm's restart count plus one."""
    env = os.environ if env is None else env
    if env.get(envnames.ATTEMPT):
        return int(env[envnames.ATTEMPT])
    return int(env.get(envnames.ATTEMPT_BASE) or 0) + int(env.get("SLURM_RESTART_COUNT") or 0) + 1


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


def _identity_of(config: dict) -> dict | None:
    try:
        return ExperimentConfig.from_dict(config).identity()
    except Exception:  # noqa: BLE001 - a config this version cannot read has no identity to compare
        return None


def stored_identity(run_dir: str) -> dict | None:
    """The identity of the run in `run_dir`: config.json's "identity", for older runs derived
    from its "config"; None when the directory holds no run (nothing ran or was submitted)."""
    status = read_status(run_dir)
    ran = status.get("state") not in (None, "SKIPPED", "PENDING") or bool(status.get("job_id")) or (
        os.path.isdir(run_dir) and any(n.startswith("rank-") and n.endswith(".jsonl") for n in os.listdir(run_dir)))
    if not ran:
        return None
    doc = read_json(os.path.join(run_dir, "config.json"))
    if isinstance(doc.get("identity"), dict):
        return doc["identity"]
    return _identity_of(doc["config"]) if isinstance(doc.get("config"), dict) else None


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


def failure_reason(run_dir: str, status: dict | None = None) -> str:
    """Why a run did not complete: its first error record, else the ranks' exit codes, else
    status.json's reason (`status`: that file's document, when the caller has read it)."""
    status = read_status(run_dir) if status is None else status
    detail = last_error(run_dir)
    if detail is None and status.get("failed_ranks"):
        detail = "exit codes " + ", ".join(f"rank {r}: {c}" for r, c in status["failed_ranks"].items())
    return detail or status.get("reason") or "no error record"


def failure_line(run_dir: str, exp_id: str) -> str:
    status = read_status(run_dir)
    return f"{status.get('state', 'UNKNOWN')} {exp_id}: {failure_reason(run_dir, status)} (logs: {run_dir})"
