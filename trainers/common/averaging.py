"""Averaging whole replicas, for loosely coupled data parallelism (localsgd, DiLoCo).

- `Averager`: a fixed list of tensors (parameters, or optimizer state) averaged over every rank
  in place: packed into flat buckets scaled by 1/W and summed with the ring written here
  (`ring_allreduce`: 2(W-1)/W x the bytes sent per rank, link emulation per ring step).
- `OuterStep`: DiLoCo's outer optimizer (Douillard et al. 2023, arXiv:2311.08105). It keeps the
  parameters of the last synchronisation; after the replicas are averaged, the pseudo-gradient
  (last sync - average) is handed to an SGD over that copy (`nesterov`: momentum 0.9, Nesterov,
  as the paper), whose result every replica takes. SGD at learning rate 1 without momentum
  lands exactly on the average: that case keeps no copy and steps nothing (plain local SGD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from trainers.common.collectives import Buckets, ring_allreduce
from trainers.common.traffic import CommMeter

OUTER_MOMENTUM = 0.9  # DiLoCo's outer Nesterov momentum


class Averager:
    """Average `tensors` (fixed: their buffers are allocated once) over every rank."""

    def __init__(self, tensors: Sequence[torch.Tensor], device: torch.device, meter: CommMeter) -> None:
        self.buckets = Buckets(tensors, device)
        self.meter = meter

    @torch.no_grad()
    def average(self, tensors: Sequence[torch.Tensor]) -> int:
        """Replace every tensor by its mean over the ranks; returns the bytes this rank sent."""
        sent = 0
        for bucket in self.buckets.pack(tensors, scale=1.0 / dist.get_world_size()):
            sent += ring_allreduce(bucket, meter=self.meter)
        self.buckets.unpack(tensors)
        return sent


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The optimizer's per-element state (SGD's momentum, Adam's two moments), in parameter order.
    Scalars (Adam's step count) are left out: every replica counts the same steps."""
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        out += [state[k] for k in sorted(state) if isinstance(state[k], torch.Tensor) and state[k].dim() > 0]
    return out


class OuterStep:
    """The outer optimizer over the averaged change; a no-op for plain averaging (sgd, lr 1)."""

    def __init__(self, params: Sequence[torch.Tensor], kind: str, lr: float) -> None:
        self.plain = kind == "sgd" and lr == 1.0
        self.anchor: list[torch.Tensor] = []
        self.optimizer: torch.optim.Optimizer | None = None
        if not self.plain:
            self.anchor = [p.detach().clone() for p in params]  # the parameters at the last synchronisation
            nesterov = kind == "nesterov"
            self.optimizer = torch.optim.SGD(self.anchor, lr=lr, momentum=OUTER_MOMENTUM if nesterov else 0.0,
                                             nesterov=nesterov)

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor]) -> None:
        """`params` hold the replicas' average; afterwards, the outer optimizer's result."""
        if self.optimizer is None:
            return
        for anchor, p in zip(self.anchor, params, strict=True):
            anchor.grad = anchor - p  # pseudo-gradient: how far the average moved, as a descent direction
        self.optimizer.step()
        for anchor, p in zip(self.anchor, params, strict=True):
            p.copy_(anchor)

    def held_bytes(self) -> int:
        """The copy, its pseudo-gradient and the outer momentum."""
        tensors = [*self.anchor, *(a.grad for a in self.anchor if a.grad is not None)]
        if self.optimizer is not None:
            tensors += [v for s in self.optimizer.state.values() for v in s.values()
                        if isinstance(v, torch.Tensor) and v.dim() > 0]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {}
        return {"anchor": [a.detach().clone() for a in self.anchor], "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is None or not state:
            return
        for a, saved in zip(self.anchor, state["anchor"], strict=True):
            a.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
