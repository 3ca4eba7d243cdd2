"""Shared test helpers: run a strategy's ranks locally and read back what they logged."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import torch

from simulate.launcher import run_experiment
from trainers.common.config import ExperimentConfig, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_local(run_dir: str, strategy: str, nodes: int = 1, procs: int = 1, extra_env: dict | None = None,
              **overrides) -> dict:
    """Run one experiment through the simulate launcher; return its status dict."""
    cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=procs, **overrides)
    validate(cfg)
    return run_experiment(cfg, str(run_dir), time_limit_s=300, extra_env=extra_env)


def records(run_dir: str, rank: int, event: str | None = None) -> list[dict]:
    path = os.path.join(str(run_dir), f"rank-{rank}.jsonl")
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if event is None or r["event"] == event]


def step_losses(run_dir: str, world: int) -> list[float]:
    """Per step: the sample-weighted mean of the ranks' losses = the mean over the global batch."""
    per_step: dict[int, list[tuple[float, int]]] = {}
    for rank in range(world):
        for r in records(run_dir, rank, "step"):
            if r["loss"] is not None:
                per_step.setdefault(r["step"], []).append((r["loss"], r["samples"]))
    return [sum(loss * n for loss, n in v) / sum(n for _, n in v) for _, v in sorted(per_step.items())]


def final_params(run_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(str(run_dir), "params.pt"), weights_only=True)


def assert_params_close(a: dict, b: dict, rtol: float, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys(), f"parameter names differ: {sorted(a)[:5]} vs {sorted(b)[:5]}"
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def sweep(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run bin/sweep as a user would; returns the completed process (text output)."""
    return subprocess.run([os.path.join(ROOT, "bin", "sweep"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def replace(cfg: ExperimentConfig, **kw) -> ExperimentConfig:
    return dataclasses.replace(cfg, **kw)


PYTHON = sys.executable
