"""Checkpoints: each rank saves its share; a step counts only once every rank has saved it.

Layout: `<run_dir>/checkpoints/step-<S>/rank-<R>.pt` plus `COMPLETE`, written by rank 0
after a barrier. Files are written to a temporary name and renamed (atomic on POSIX), and
loaded with `weights_only=True`. A restarted run resumes after the newest complete step.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from contract import envnames

if TYPE_CHECKING:
    from trainers.common.context import Context
    from trainers.common.trainer import Trainer

PREEMPT_EXIT = 3  # exit status of a rank that checkpointed on the time-limit warning
KEEP = 2  # complete checkpoints kept


def watch_signal() -> bool:
    """Whether the job asked for a checkpoint on Slurm's --signal warning (set by the sbatch)."""
    return os.environ.get(envnames.CHECKPOINT_ON_SIGNAL) == "1"


def _root(ctx: Context) -> str:
    return os.path.join(ctx.run_dir, "checkpoints")


def complete_steps(run_dir: str) -> list[int]:
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    steps = [int(d[5:]) for d in os.listdir(root)
             if d.startswith("step-") and os.path.exists(os.path.join(root, d, "COMPLETE"))]
    return sorted(steps)


def save(ctx: Context, trainer: Trainer, step: int) -> None:
    folder = os.path.join(_root(ctx), f"step-{step}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"rank-{ctx.rank}.pt")
    state = {"step": step, "trainer": trainer.state_dict(), "rng": torch.get_rng_state()}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    if ctx.world_size > 1:
        dist.barrier()
    if ctx.rank == 0:
        with open(os.path.join(folder, "COMPLETE"), "w") as f:
            f.write(f"{step}\n")
        for old in complete_steps(ctx.run_dir)[:-KEEP]:
            shutil.rmtree(os.path.join(_root(ctx), f"step-{old}"), ignore_errors=True)
    ctx.say(f"checkpoint saved at step {step}")


def resume(ctx: Context, trainer: Trainer) -> int:
    """Load the newest complete checkpoint; return the first step still to run (0 if none)."""
    steps = complete_steps(ctx.run_dir)
    if not steps:
        return 0
    path = os.path.join(_root(ctx), f"step-{steps[-1]}", f"rank-{ctx.rank}.pt")
    state = torch.load(path, map_location=ctx.device, weights_only=True)
    trainer.load_state_dict(state["trainer"])
    torch.set_rng_state(state["rng"].cpu())
    return int(state["step"]) + 1
