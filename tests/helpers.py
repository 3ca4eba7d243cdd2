"""Shared test helpers: run a strategy's ranks locally and read back what they logged."""

from __future__ import annotations

import os
import subprocess
import sys

from analysis.logread import parse_rank_file
from contract.config import ExperimentConfig, validate
from contract.paths import ROOT

PYTHON = sys.executable


def exp_id(strategy: str, nodes: int = 1, procs: int = 1, **kw) -> str:
    """The experiment id bin/sweep gives this config (tests derive ids, never spell them out)."""
    return ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=procs, **kw).experiment_id()


def synthetic_id(strategy: str, nodes: int, procs: int = 1, batch: int = 32, chunks: int = 4, steps: int = 20,
                 repeat: int = 0) -> str:
    """The id analysis.synthetic.write_sweep gives an experiment (mlp on digits)."""
    return exp_id(strategy, nodes, procs, model="mlp", dataset="digits", steps=steps, global_batch=batch,
                  chunks=chunks, repeat=repeat)


def run_local(run_dir: str, strategy: str, nodes: int = 1, procs: int = 1, extra_env: dict | None = None,
              **overrides) -> dict:
    """Run one experiment through the simulate launcher; return its status dict."""
    from simulate.launcher import run_experiment

    cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=procs, **overrides)
    validate(cfg)
    return run_experiment(cfg, str(run_dir), time_limit_s=300, extra_env=extra_env)


def records(run_dir: str, rank: int, event: str | None = None) -> list[dict]:
    """A rank's records, in file order, read by analysis.logread (a cut or garbage line is dropped there).
    Step records are rebuilt from its columns (NaN -> None, the warm-up flag as a bool)."""
    rf = parse_rank_file(os.path.join(str(run_dir), f"rank-{rank}.jsonl"))
    out: list[dict] = []
    if event in (None, "start"):
        out += rf.starts
    if event in (None, "step"):
        n = len(rf.warmup)
        for i in range(n):
            rec = {"event": "step"}
            for k, col in rf.steps.items():
                v = col[i].item()
                rec[k] = None if v != v else (int(v) if k in _INT_FIELDS else v)
            rec["warmup"] = bool(rf.warmup[i])
            rec["attempt"] = int(rf.attempt[i])
            out.append(rec)
    for name, recs in (("epoch", rf.epochs), ("end", rf.ends), ("error", rf.errors)):
        if event in (None, name):
            out += recs
    if event is None:
        out.sort(key=lambda r: (r.get("time") or 0.0))
    return out


_INT_FIELDS = ("step", "epoch", "samples", "comm_bytes", "mem_bytes")


def sweep(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run bin/sweep as a user would; returns the completed process (text output)."""
    return subprocess.run([os.path.join(ROOT, "bin", "sweep"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def step_losses(run_dir: str, world: int) -> list[float]:
    """Per step: the sample-weighted mean of the ranks' losses = the mean over the global batch."""
    per_step: dict[int, list[tuple[float, int]]] = {}
    for rank in range(world):
        for r in records(run_dir, rank, "step"):
            if r["loss"] is not None:
                per_step.setdefault(r["step"], []).append((r["loss"], r["samples"]))
    return [sum(loss * n for loss, n in v) / sum(n for _, n in v) for _, v in sorted(per_step.items())]


def final_params(run_dir: str) -> dict:
    import torch

    return torch.load(os.path.join(str(run_dir), "params.pt"), weights_only=True)


def assert_params_close(a: dict, b: dict, rtol: float, atol: float = 1e-6) -> None:
    import torch

    assert a.keys() == b.keys(), f"parameter names differ: {sorted(a)[:5]} vs {sorted(b)[:5]}"
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")
