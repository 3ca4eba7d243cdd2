"""Sweep grids: comma lists -> validated experiments with stable ids. Torch-free.

A grid value that no experiment can ever run (a strategy that runs in one process, at
several nodes) becomes a *skipped* experiment with its reason; any other bad value is a
`ConfigError` (exit 2) before anything is written or submitted.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass

from trainers.common import registry
from trainers.common.config import ConfigError, ExperimentConfig, layout, validate
from trainers.common.registry import NAMES as STRATEGIES


def parse_int_list(name: str, text: str, minimum: int = 1) -> list[int]:
    items = str(text).split(",")
    values: list[int] = []
    for item in items:
        item = item.strip()
        if not item.lstrip("-").isdigit():
            raise ConfigError(f"invalid {name} {text!r}: expected a comma list of integers, e.g. 1,2,4")
        value = int(item)
        if value < minimum:
            raise ConfigError(f"invalid {name} {text!r}: {value} is below {minimum}")
        values.append(value)
    return list(dict.fromkeys(values))


def parse_strategies(text: str) -> list[str]:
    if text.strip() == "all":
        return list(STRATEGIES)
    names = [s.strip() for s in text.split(",")]
    for name in names:
        if name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)} or all")
    return list(dict.fromkeys(names))


def gpu_count() -> int:
    """GPUs on this machine without importing torch (nvidia-smi), 0 when none answers."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def skip_reason(cfg: ExperimentConfig, gpus: int | None) -> str | None:
    """Why this grid point cannot run at all (not a user error: a property of the strategy)."""
    return cfg.traits.refusal(layout(cfg, gpus))


@dataclass
class Experiment:
    id: str
    config: ExperimentConfig
    skipped: str | None = None

    def describe(self) -> dict:
        return {"id": self.id, "skipped": self.skipped, **{k: getattr(self.config, k) for k in (
            "strategy", "nodes", "procs_per_node", "global_batch", "chunks", "schedule", "repeat")}}


def expand(base: ExperimentConfig, strategies: list[str], nodes: list[int], chunks: list[int],
           repeats: int, scaling: str = "strong", gpus: int | None = None) -> list[Experiment]:
    """The grid strategies x nodes x chunks (pipelined strategies only) x repeats.

    Repeats are the outer loop: the whole grid runs once, then again. A slow spell of the
    machine (other jobs, thermal limits) then lands on one repeat of every point instead of
    on every repeat of one point, which the median over repeats can no longer filter out."""
    if scaling not in ("strong", "weak"):
        raise ConfigError(f"invalid scaling {scaling!r}: choose strong or weak")
    if repeats < 1:
        raise ConfigError(f"invalid repeats {repeats!r}: must be >= 1")
    experiments: list[Experiment] = []
    smallest = min(nodes)
    for r in range(repeats):
        for strategy in strategies:
            for n in nodes:
                batch = base.global_batch * (n // smallest if scaling == "weak" else 1)
                if scaling == "weak" and n % smallest:
                    raise ConfigError(f"invalid nodes {n}: weak scaling needs multiples of the smallest ({smallest})")
                for c in chunks if registry.get(strategy).micro_batches else [base.chunks]:
                    cfg = dataclasses.replace(base, strategy=strategy, nodes=n, chunks=c, repeat=r,
                                              global_batch=batch)
                    reason = skip_reason(cfg, gpus if cfg.traits.min_gpus else None)
                    if reason is None:
                        validate(cfg)
                    experiments.append(Experiment(cfg.experiment_id(), cfg, reason))
    return experiments
