"""fsdp: FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer
state all sharded over the ranks (ZeRO stage 3).

Each block, then the root, is wrapped by `fully_shard`: every parameter becomes a DTensor
of which each rank keeps one 1/N slice along dim 0. Before a block's forward (and again
before its backward), its parameters are all-gathered, used, and freed again; after its
backward, gradients are reduce-scattered (averaged) so each rank keeps only the gradient
slice of its own parameter slice. The optimizer (built over the DTensors) therefore holds
state for 1/N of the model. Each rank reads its slice of the global batch; with equal
slices the averaged gradient is `single`'s mean-loss gradient.

Communication happens inside forward/backward (prefetched, overlapped), so `comm_s` is
null; `comm_bytes` is the traffic FSDP must send per step: two all-gathers (forward and
backward) and one reduce-scatter of the parameters, each (N-1)/N of the model's bytes.

With `--micro-batch`, every micro-step all-gathers in its forward and backward, and only the
last reduce-scatters (`set_requires_gradient_sync(False)` before: the others accumulate whole,
unsharded gradients), so a step sends (2M + 1)(N-1)/N of the model's bytes for M micro-steps.
`--recompute` wraps the blocks (ReplicaTrainer) before they are sharded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult, make_optimizer


class FSDPTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, dp_rank=ctx.rank, dp_size=ctx.world_size)
        full_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.units = 1  # fully_shard groups: one per block with parameters, plus the root
        for block in self.module:
            if any(p.requires_grad for p in block.parameters()):
                fully_shard(block)
                self.units += 1
        fully_shard(self.module)
        self.params = [p for p in self.module.parameters() if p.requires_grad]  # now DTensors
        self.optimizer = make_optimizer(self.params, ctx.cfg)
        world = ctx.world_size
        self.collectives = 2 * self.micro_steps + 1  # each micro-step's two all-gathers, one reduce-scatter
        self.step_bytes = self.collectives * (world - 1) * full_bytes // world if world > 1 else 0
        self.meter = CommMeter(ctx)
        self.notes.append(f"FSDP2 fully_shard per block over {world} ranks")

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        out = super().train_step(x, y)
        # Emulated slow link (simulated nodes): add the wire time of this step's collectives
        # (2M + 1 ring collectives of N-1 messages per fully_shard group), serialised after the step.
        self.meter.emulate(self.step_bytes, messages=self.collectives * (self.ctx.world_size - 1) * self.units)
        return StepResult(out.loss, out.samples, None, self.step_bytes)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        # full_tensor() all-gathers: every rank takes part, rank 0 keeps the result.
        full = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
                for k, v in self.module.state_dict().items()}
        return full if dist.get_rank() == 0 else None

if __name__ == "__main__":
    sys.exit(main(lambda ctx: FSDPTrainer(ctx), "fsdp"))
