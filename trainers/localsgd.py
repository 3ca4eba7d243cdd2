"""localsgd: local SGD, and DiLoCo through an outer optimizer.

Every rank holds the whole model and its own optimizer, reads its slice of the global batch and
steps on its own gradient: nothing is exchanged during a step. Every `--sync-every H` steps the
replicas synchronise (trainers/common/averaging.py):

1. the parameters are averaged over the ranks (flat buckets, the ring all-reduce written here);
   with `--sync-optim average` the optimizer state too (SGD's momentum, Adam's moments);
2. the outer optimizer steps on the pseudo-gradient, parameters at the last synchronisation
   minus the average, and every replica takes its result. `--outer sgd --outer-lr 1` lands on
   the average itself (plain local SGD); `--outer nesterov --outer-lr 0.7` is DiLoCo's choice.

With H = 1 and plain averaging of SGD (momentum included: the mean of the replicas' momenta
follows DDP's, the update is linear) every step is DDP's: the same maths as `single`. Otherwise
the replicas drift apart between synchronisations and the maths differs: judge it by the time
to a target accuracy, not by throughput (registry: `same_maths`; `make advise`).

`comm_s` is the synchronisation (0 on the steps between), `comm_bytes` what this rank
sent then: 2(W-1)/W x the parameter bytes, plus as much per optimizer-state tensor averaged.
Rank 0 validates its own replica, which between synchronisations is not the average.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from trainers.common.averaging import Averager, OuterStep, optimizer_state_tensors
from trainers.common.collectives import comm_device
from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult


class LocalSGDTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, dp_rank=ctx.rank, dp_size=ctx.world_size)
        self.meter = CommMeter(ctx)
        self.device = comm_device(ctx.device)
        self.param_averager = Averager(self.params, self.device, self.meter)
        self.state_averager: Averager | None = None  # torch creates the optimizer state at the first step
        self.outer = OuterStep(self.params, ctx.cfg.outer, ctx.cfg.outer_lr)
        self.local_steps = 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        result = super().train_step(x, y)  # forward, backward and this replica's own optimizer step
        self.local_steps += 1
        if self.local_steps % self.ctx.cfg.sync_every == 0:
            start = time.perf_counter()
            result.comm_bytes = self.average()
            result.comm_s = time.perf_counter() - start
            self.outer.step(self.params)
        return result

    def average(self) -> int:
        """Average the parameters (and the optimizer state, if asked) over the replicas; bytes sent."""
        self.ctx.sync_device()
        sent = self.param_averager.average(self.params)
        if self.ctx.cfg.sync_optim == "average":
            state = optimizer_state_tensors(self.optimizer, self.params)
            if self.state_averager is None:
                self.state_averager = Averager(state, self.device, self.meter)
            sent += self.state_averager.average(state)
        return sent

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        return super().evaluate(x, y) if self.ctx.rank == 0 else None  # one replica's accuracy is enough

    def state_bytes(self) -> tuple[int, int, int]:
        params, grads, optim = super().state_bytes()
        return params, grads, optim + self.outer.held_bytes()  # the outer optimizer's copy and momentum

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "local_steps": self.local_steps, "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.local_steps = state["local_steps"]
        self.outer.load_state_dict(state["outer"])


if __name__ == "__main__":
    sys.exit(main(LocalSGDTrainer, "localsgd"))
