"""Building a sweep's DataFrames: one row per experiment, rank-step, rank-epoch and rank, and a
problems table.

What sweep.json, config.json and status.json say of each experiment (`ExperimentHead`), then
its rank files (analysis/rankfiles.py, each file's last attempt), become `SweepData`. A missing
file, a bad line or a FAILED experiment is a row of `problems`, never an exception.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.logread import RankFile, read_json
from analysis.rankfiles import read_rank_files
from analysis.stepfiles import Grid, StepFiles
from contract.config import ExperimentConfig
from contract.rundir import FAILED_STATES, STATUS
from contract.tables import SCALINGS

ID_RE = re.compile(r"^(?P<strategy>[a-z]+)-n(?P<nodes>\d+)-p(?P<procs>\d+)-b(?P<batch>\d+)(?:-c(?P<chunks>\d+))?"
                   r".*-r(?P<repeat>\d+)$")
EPOCH_FIELDS = ("epoch", "epoch_s", "val_loss", "val_acc", "time")
RANK_FIELDS = ("attempt", "world_size", "dp_size", "total_steps", "start_time", "param_bytes", "grad_bytes",
               "optim_bytes", "end_status", "end_param_bytes", "end_grad_bytes", "end_optim_bytes",
               "peak_mem_bytes", "end_time", "error")
PROBLEM_COLUMNS = ("sweep", "experiment", "rank", "kind", "detail", "file", "line")
BAD_STATES = FAILED_STATES
DEFAULT_CHUNKS = ExperimentConfig.chunks  # what a config.json without the field ran with


@dataclass
class SweepData:
    name: str
    path: str
    meta: dict  # sweep.json
    experiments: pd.DataFrame  # one row per experiment (skipped ones too)
    files: StepFiles  # the rank files' step columns (analysis/stepfiles.py): what `steps` is built from
    epochs: pd.DataFrame  # one row per rank-epoch
    ranks: pd.DataFrame  # one row per rank: start/end records
    problems: pd.DataFrame
    configs: dict[str, dict] = field(default_factory=dict)  # experiment -> config.json
    _steps: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def steps(self) -> pd.DataFrame:
        """One row per rank-step, built from `files` when first asked: the metrics of a sweep whose
        experiments are all `Grid`s never ask (analysis/stepfiles.py says why)."""
        if self._steps is None:
            self._steps = self.files.frame()
        return self._steps

    @steps.setter
    def steps(self, frame: pd.DataFrame) -> None:
        """Steps given by hand: the metrics then read them, not the rank files' columns."""
        self._steps, self.files = frame, StepFiles(self.files.ids, [])

    def grids(self) -> dict[str, Grid] | None:
        """Every experiment's steps as a Grid, or None (then the metrics group `steps`)."""
        return self.files.grids() if self._steps is None or self.files.parts else None


def _config_from_id(exp_id: str, listed: dict) -> dict:
    """Best effort when config.json is gone: the sweep.json entry, else what the id says."""
    if listed:
        return {k: v for k, v in listed.items() if k not in ("id", "skipped")}
    m = ID_RE.match(exp_id)
    if not m:
        return {}
    cfg: dict[str, Any] = {"strategy": m["strategy"], "nodes": int(m["nodes"]), "procs_per_node": int(m["procs"]),
                           "global_batch": int(m["batch"]), "repeat": int(m["repeat"])}
    if m["chunks"]:
        cfg["chunks"] = int(m["chunks"])
    return cfg


def _derived(cfg: dict) -> tuple[int, int]:
    """(pipeline stages, data-parallel size), from the one place that defines them when it parses."""
    try:
        from contract.config import ExperimentConfig  # torch-free

        c = ExperimentConfig.from_dict(cfg)
        return c.pipeline_stages, c.dp_size
    except Exception:  # noqa: BLE001 - an odd config must not stop the analysis
        return 1, int(cfg.get("nodes", 1)) * int(cfg.get("procs_per_node", 1))


@dataclass
class ExperimentHead:
    """What sweep.json, config.json and status.json say of one experiment, before its rank files."""

    exp: str
    dir: str
    doc: dict  # config.json
    cfg: dict
    status: dict
    state: str
    skipped_reason: str | None
    problems: list[tuple[str, str, str]]  # (kind, detail, file)
    nodes: int
    procs: int
    stages: int
    dp: int
    cpu_plan: dict

    @property
    def world(self) -> int:
        return self.nodes * self.procs

    @property
    def reads_ranks(self) -> bool:
        return self.state != "SKIPPED" and os.path.isdir(self.dir)

    def rank_path(self, rank: int) -> str:
        return os.path.join(self.dir, f"rank-{rank}.jsonl")


def _experiment_head(path: str, exp: str, listed: dict[str, dict]) -> ExperimentHead:
    d = os.path.join(path, exp)
    doc, cerr = read_json(os.path.join(d, "config.json"))
    status, serr = read_json(os.path.join(d, STATUS))
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    if not cfg:
        cfg = _config_from_id(exp, listed.get(exp, {}))
    exp_meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    skipped_reason = (listed.get(exp) or {}).get("skipped") or exp_meta.get("skipped")
    state = status.get("state") or ("SKIPPED" if skipped_reason else "UNKNOWN")
    problems = []
    if not os.path.isdir(d):
        if state != "SKIPPED":
            problems.append(("missing experiment directory", f"{exp} is in sweep.json but has no directory", exp))
        state = "SKIPPED" if skipped_reason else "MISSING"
    elif state != "SKIPPED":
        if cerr:
            problems.append((f"config.json {cerr}", "layout taken from sweep.json / the experiment id",
                             f"{exp}/config.json"))
        if serr:
            problems.append((f"{STATUS} {serr}", "the experiment's final state is unknown", f"{exp}/{STATUS}"))
    nodes, procs = int(cfg.get("nodes", 1)), int(cfg.get("procs_per_node", 1))
    stages, dp = _derived(cfg) if cfg else (1, nodes * procs)
    cpu_plan = exp_meta.get("cpu_plan") or status.get("cpu_plan") or {}
    return ExperimentHead(exp, d, doc, cfg, status, state, skipped_reason, problems, nodes, procs, stages, dp, cpu_plan)

def build(path: str, meta: dict, ids: list[str], meta_problem: str | None = None,
          use_cache: bool = True) -> SweepData:
    """The frames of experiments `ids` of the sweep directory `path`. `meta`: its sweep.json;
    `meta_problem`: why sweep.json could not be read (a row of the problems table), or None."""
    name = os.path.basename(os.path.normpath(path))
    problems: list[dict] = []

    def problem(exp: str, kind: str, detail: str, file: str = "", rank: int | None = None, line: int = 0) -> None:
        problems.append({"sweep": name, "experiment": exp, "rank": rank, "kind": kind, "detail": detail,
                         "file": file, "line": line})

    if meta_problem:
        problem("", f"sweep.json {meta_problem}", "the grid and meta of the sweep are unknown", "sweep.json")
    listed = {e["id"]: e for e in meta.get("experiments", []) if isinstance(e, dict) and "id" in e}
    scaling = str((meta.get("grid") or {}).get("scaling") or SCALINGS[0])
    exp_rows, rank_rows, epoch_rows = [], [], []
    step_parts: list[tuple[int, int, RankFile]] = []
    configs: dict[str, dict] = {}
    heads = [_experiment_head(path, exp, listed) for exp in ids]
    files = read_rank_files([h.rank_path(r) for h in heads if h.reads_ranks for r in range(h.world)], use_cache)
    for k, h in enumerate(heads):
        exp, cfg, status, state, world = h.exp, h.cfg, h.status, h.state, h.world
        configs[exp] = h.doc
        for kind, detail, file in h.problems:
            problem(exp, kind, detail, file)
        first_error = None
        found = earlier_attempts = earlier_records = 0
        if h.reads_ranks:
            for rank in range(world):
                fname = f"rank-{rank}.jsonl"
                rf = files[h.rank_path(rank)]
                if isinstance(rf, FileNotFoundError):
                    problem(exp, "missing rank file", f"{fname} of {world} ranks is missing", f"{exp}/{fname}", rank)
                    continue
                found += 1
                if isinstance(rf, OSError):
                    problem(exp, "unreadable rank file", str(rf), f"{exp}/{fname}", rank)
                    continue
                for kind, detail, line in rf.problems:
                    problem(exp, kind, detail, f"{exp}/{fname}", rank, line)
                step_parts.append((k, rank, rf))
                earlier_attempts = max(earlier_attempts, rf.earlier_attempts)
                earlier_records += rf.earlier_records
                start = rf.starts[-1] if rf.starts else {}
                end = rf.ends[-1] if rf.ends else {}
                error = rf.errors[0] if rf.errors else {}
                if error and (first_error is None or error.get("time", 0) < first_error[0]):
                    first_error = (error.get("time", 0), f"rank {rank}: {error.get('message')}")
                rank_rows.append({
                    "experiment": exp, "rank": rank, "node": start.get("node") or end.get("node"),
                    "attempt": start.get("attempt"), "world_size": start.get("world_size"),
                    "dp_size": start.get("dp_size"), "total_steps": start.get("total_steps"),
                    "start_time": min((s.get("time", np.nan) for s in rf.starts), default=np.nan),
                    "param_bytes": start.get("param_bytes"), "grad_bytes": start.get("grad_bytes"),
                    "optim_bytes": start.get("optim_bytes"), "end_status": end.get("status"),
                    "end_param_bytes": end.get("param_bytes"), "end_grad_bytes": end.get("grad_bytes"),
                    "end_optim_bytes": end.get("optim_bytes"), "peak_mem_bytes": end.get("peak_mem_bytes"),
                    "end_time": end.get("time"), "error": error.get("message")})
                for e in rf.epochs:
                    epoch_rows.append({"experiment": exp, "rank": rank,
                                       **{f: e.get(f) for f in EPOCH_FIELDS}})
        if state in BAD_STATES:
            detail = first_error[1] if first_error else (status.get("reason") or status.get("failed_ranks") or
                                                         "no error record")
            problem(exp, state, str(detail), f"{exp}/{STATUS}")
        exp_rows.append({
            "sweep": name, "experiment": exp, "strategy": cfg.get("strategy", exp.split("-")[0]),
            "nodes": h.nodes, "procs_per_node": h.procs, "world_size": world, "stages": h.stages, "dp_size": h.dp,
            "global_batch": int(cfg.get("global_batch", 0) or 0), "chunks": int(cfg.get("chunks") or DEFAULT_CHUNKS),
            "schedule": cfg.get("schedule", ""), "model": cfg.get("model", ""), "dataset": cfg.get("dataset", ""),
            "precision": cfg.get("precision", "fp32"), "link": cfg.get("link", "loopback"),
            "repeat": int(cfg.get("repeat", 0) or 0), "steps_configured": cfg.get("steps"),
            "scaling": scaling, "state": state, "reason": h.skipped_reason if state == "SKIPPED" else None,
            "error": first_error[1] if first_error else None, "attempts": status.get("attempts"),
            "wall_s": status.get("wall_s"), "ranks_found": found,
            "earlier_attempts": earlier_attempts, "earlier_records": earlier_records,
            "oversubscribed": bool(h.cpu_plan.get("oversubscribed", False)),
            "threads_per_rank": h.cpu_plan.get("threads_per_rank"), "machine_cores": h.cpu_plan.get("machine_cores")})
    experiments = pd.DataFrame(exp_rows, columns=list(exp_rows[0]) if exp_rows else ["experiment"])
    return SweepData(name, path, meta, experiments, StepFiles(ids, step_parts),
                     pd.DataFrame(epoch_rows, columns=["experiment", "rank", *EPOCH_FIELDS]),
                     pd.DataFrame(rank_rows, columns=["experiment", "rank", "node", *RANK_FIELDS]),
                     pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS)), configs)
