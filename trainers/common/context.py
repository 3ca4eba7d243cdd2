"""What a rank knows while it trains: its config, place in the world, device, data and log.

Its own module, importing nothing that imports it back, so the loop, the trainers and the
checkpoints can all name it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from contract.config import ExperimentConfig
from trainers.common.data import Dataset, GlobalBatches
from trainers.common.distenv import DistEnv
from trainers.common.logwriter import RankLog


@dataclass
class Context:
    cfg: ExperimentConfig
    env: DistEnv
    device: torch.device
    data: Dataset
    batches: GlobalBatches
    log: RankLog
    run_dir: str
    attempt: int
    notes: list[str] = field(default_factory=list)
    memory_fraction: float | None = None  # this rank's cap on its GPU (simulated nodes sharing one)

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    def say(self, message: str) -> None:
        """A line for the node's human-readable output."""
        print(f"[rank {self.rank} {self.env.node}] {message}", flush=True)

    def sync_device(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
