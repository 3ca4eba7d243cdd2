"""zero: DDP + `ZeroRedundancyOptimizer` (ZeRO stage 1: optimizer-state sharding).

Gradients are averaged exactly as in `ddp` (same bucketed all-reduce, same comm hook).
The optimizer is different: ZeroRedundancyOptimizer assigns each parameter to one rank,
which alone keeps that parameter's optimizer state (Adam: two fp32 moments, 8 bytes per
parameter) and updates it, then broadcasts the new values to the other ranks. Each rank
holds about 1/N of the optimizer state; weights and gradients stay whole.

`comm_s`/`comm_bytes` cover the gradient all-reduce; the parameter broadcasts run inside
the optimizer step and are counted in `compute_s`.
"""

from __future__ import annotations

import sys
from typing import Any

from torch.distributed.optim import ZeroRedundancyOptimizer

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.trainer import optimizer_class, optimizer_state_bytes
from trainers.ddp import DDPTrainer


class ZeroTrainer(DDPTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        cls, kwargs = optimizer_class(ctx.cfg)
        self.optimizer = ZeroRedundancyOptimizer(self.params, optimizer_class=cls, **kwargs)
        self.notes.append(f"ZeRO-1: {cls.__name__} state sharded over {ctx.world_size} ranks")

    def state_bytes(self) -> tuple[int, int, int]:
        params, grads, _ = super().state_bytes()
        return params, grads, optimizer_state_bytes(self.optimizer.optim)  # the local shard only

    def state_dict(self) -> dict[str, Any]:  # each rank checkpoints its own shard
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.optim.load_state_dict(state["optimizer"])


if __name__ == "__main__":
    sys.exit(main(lambda ctx: ZeroTrainer(ctx), "zero"))
