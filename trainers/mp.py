"""mp: naive model parallelism. The model's blocks are cut into one stage per rank.

Each step, the whole global batch goes through the stages as one micro-batch: stage i
receives stage i-1's activation (point-to-point), runs its blocks, sends the result to
stage i+1; the last stage computes the loss and backward starts there, each stage sending
the gradient of its input back to the previous one. Only one stage works at a time, so
with K stages each rank idles about (K-1)/K of the step: this is the baseline the
pipelined strategies (gpipe, pipeline) improve on with micro-batches.

`comm_s` is the time spent in send/recv, which includes waiting for the neighbour's
compute (the bubble) and, between simulated nodes, the emulated wire time added after each
receive (trainers/common/traffic.py); `compute_s` is the time spent in this stage's own work.

`--micro-batch B` runs the batch as batch / B such passes, one after another (never
overlapped: that is `pipeline`), their gradients accumulated before the one optimizer step.
"""

from __future__ import annotations

import sys
import time

import torch

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.stages import StageTrainer
from trainers.common.trainer import StepResult, autocast, loss_fn


class ModelParallelTrainer(StageTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, stage_ranks=list(range(ctx.world_size)))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=False)
        compute, loss = 0.0, 0.0
        m = self.micro_batches  # 1, or --micro-batch's accumulation steps: one after another, never overlapped
        for xb, yb in zip(x.chunk(m), y.chunk(m), strict=True):
            piece_loss, piece_compute = self.forward_backward(xb, yb, len(yb) / len(y))
            loss, compute = loss + piece_loss, compute + piece_compute
        t0 = time.perf_counter()
        self.optimizer.step()
        compute += time.perf_counter() - t0
        comm_s, comm_bytes = self.meter.take()
        return StepResult(loss if self.is_last else None, len(y), comm_s, comm_bytes, compute)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> tuple[float, float]:
        """One (micro-)batch through the stages and back, its loss scaled by `weight` (its share of the
        batch); returns (its scaled loss on the last stage, else 0; seconds of this stage's own work)."""
        compute = 0.0
        if self.is_first:
            inp = x
        else:
            b = self.in_boundary()
            inp = self.p2p.recv((len(y), *b.shape), b.dtype, self.prev_rank).requires_grad_()
        t0 = time.perf_counter()
        with autocast(self.ctx):
            out = self.module(inp)
            loss = loss_fn(out, y) * weight if self.is_last else None
        if loss is not None:
            loss.backward()
            compute += time.perf_counter() - t0
        else:
            compute += time.perf_counter() - t0
            self.p2p.send(out, self.next_rank)
            grad = self.p2p.recv(tuple(out.shape), out.dtype, self.next_rank)
            t0 = time.perf_counter()
            out.backward(grad)
            compute += time.perf_counter() - t0
        if not self.is_first and inp.grad is not None:
            self.p2p.send(inp.grad, self.prev_rank)
        return (float(loss.detach()) if loss is not None else 0.0), compute


if __name__ == "__main__":
    sys.exit(main(lambda ctx: ModelParallelTrainer(ctx), "mp"))
