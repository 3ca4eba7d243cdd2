"""What several benchmarks share: run one experiment through the simulate launcher, read it back."""

from __future__ import annotations

import os
import sys

from analysis.frames import SweepData
from analysis.load import load_run
from contract.config import ExperimentConfig, validate
from simulate.launcher import run_experiment


def run_and_read(work: str, name: str, **kw) -> SweepData:
    """Run one experiment under `work`; return its logs as analysis.load reads them (exit on failure)."""
    cfg = ExperimentConfig(**kw)
    validate(cfg)
    run_dir = os.path.join(work, name)
    status = run_experiment(cfg, run_dir, time_limit_s=900)
    if status["state"] != "COMPLETED":
        sys.exit(f"bench: {name} {status['state']}: see {run_dir}")
    return load_run(run_dir)
