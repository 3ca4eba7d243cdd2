"""Data parallelism over a process group, for strategies that run it beside other cuts (hybrid, mix).

- `allreduce_mean`: the replicas' gradients averaged in one flat all-reduce (this rank's local
  shards where they are DTensors: the dp peers hold the same shard of each).
- `PartitionedOptimizer`: ZeRO-1 written here. ZeroRedundancyOptimizer broadcasts `param.data`,
  which for a DTensor parameter is no plain tensor; this one works on the local shards. Each
  parameter belongs to one rank of the group (whole tensors, largest first to the rank holding
  least, as ZeroRedundancyOptimizer and the registry's `_greedy_share`); a rank keeps optimizer
  state for its own parameters alone and steps them, then every parameter is broadcast from its owner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from trainers.common.tensor_parallel import local


def allreduce_mean(tensors: Sequence[torch.Tensor], group: Any, size: int) -> int:
    """Average `tensors` (local shards of DTensors) over the `size` ranks of `group`, in place.
    Returns the bytes one flat buffer holds (the all-reduce's payload)."""
    parts = [local(t) for t in tensors]
    flat = torch.cat([p.reshape(-1) for p in parts])
    dist.all_reduce(flat, group=group)
    flat.div_(size)
    offset = 0
    for p in parts:
        p.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return flat.numel() * flat.element_size()


class PartitionedOptimizer:
    """ZeRO-1 over `group`: `make` builds the inner optimizer over this rank's own parameters."""

    def __init__(self, params: Sequence[torch.nn.Parameter], make: Callable[[list], torch.optim.Optimizer],
                 group: Any) -> None:
        self.params, self.group = list(params), group
        held = [0] * dist.get_world_size(group)
        self.owner: list[int] = [0] * len(self.params)
        for i in sorted(range(len(self.params)), key=lambda i: -local(self.params[i]).numel()):
            self.owner[i] = held.index(min(held))
            held[self.owner[i]] += local(self.params[i]).numel()
        me = dist.get_rank(group)
        mine = [p for p, o in zip(self.params, self.owner, strict=True) if o == me]
        self.optim = make(mine) if mine else None

    @property
    def state(self) -> dict:
        return self.optim.state if self.optim is not None else {}

    def zero_grad(self, set_to_none: bool = False) -> None:
        for p in self.params:  # every gradient is reduced, not only this rank's own
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        if self.optim is not None:
            self.optim.step()
        for p, owner in zip(self.params, self.owner, strict=True):
            dist.broadcast(local(p.data), group=self.group, group_src=owner)

    def state_dict(self) -> dict[str, Any]:  # each rank checkpoints its own shard
        return self.optim.state_dict() if self.optim is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optim is not None:
            self.optim.load_state_dict(state)
