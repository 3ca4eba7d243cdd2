"""ps: a parameter server written here with torch.distributed point-to-point.

Rank 0 is the server; ranks 1..W-1 are workers. The global batch is cut into W-1
contiguous slices as evenly as possible (`split_sizes`: 32 samples over 3 workers =
11, 11, 10); worker k reads slice k-1. One step:

1. every worker runs forward and backward on its slice and pushes its gradients, packed
   into flat buckets and multiplied by its sample count (`ps_push`, isend/irecv);
2. the server adds them (rank order), divides by the global batch - the gradient of the
   mean loss over the whole global batch, exactly `single`'s - and takes the optimizer step;
3. the server sends the new parameters to every worker (`ps_pull`).

Only the server holds optimizer state. It reads no data and computes no loss: its step
records have `loss` null and `samples` 0, and its `comm_s` includes the time it waits for
the workers' gradients. Between simulated nodes the emulated wire time is added after the
real transfers (at the server once the pushes are in, at a remote worker once the pull
arrived: trainers/common/traffic.py) and is part of `comm_s`. The server holds the current
model, so it runs validation. With fp16 the server owns the loss scale (GradScaler) and
sends it along with the parameters.
"""

from __future__ import annotations

import sys
import time

import torch

from trainers.common.collectives import Buckets, comm_device, ps_pull, ps_push
from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult, flat_grads

SERVER = 0


class PSTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        workers = ctx.world_size - 1
        # The loop reads a slice for every rank; the server's (worker 0's) is never used.
        super().__init__(ctx, dp_rank=max(ctx.rank - 1, 0), dp_size=workers)
        self.is_server = ctx.rank == SERVER
        self.meter = CommMeter(ctx)
        self.device = comm_device(ctx.device)
        self.grad_buckets = Buckets(self.params, self.device)
        self.param_buckets = Buckets(self.params, self.device)
        if self.scaler.is_enabled() and self.is_server:
            self.scaler.scale(torch.ones((), device=ctx.device))  # creates the scale tensor step() needs
        # Workers scale their loss by the server's current loss scale (1 without fp16).
        self.loss_scale = torch.tensor([self.scaler.get_scale()], dtype=torch.float32, device=self.device)
        self.synced = False  # workers get the server's parameters (and scale) before the first step

    def _send_params(self) -> int:
        """Server -> workers: parameters (and loss scale); both ends run this."""
        if self.is_server:
            self.loss_scale.fill_(self.scaler.get_scale())
            self.param_buckets.pack(self.params)
        sent = sum(ps_pull(b, SERVER, self.meter) for b in self.param_buckets.buffers)
        if self.scaler.is_enabled():
            sent += ps_pull(self.loss_scale, SERVER, self.meter)
        if not self.is_server:
            self.param_buckets.unpack(self.params)
        return sent

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        comm_s, sent = 0.0, 0
        if not self.synced:
            start = time.perf_counter()
            sent += self._send_params()
            comm_s += time.perf_counter() - start
            self.synced = True
        if self.is_server:
            result = self._serve()
        else:
            result = self._work(x, y)
        result.comm_s = (result.comm_s or 0.0) + comm_s
        result.comm_bytes += sent
        return result

    def _work(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.forward_backward(x, y)
        self.ctx.sync_device()
        start = time.perf_counter()
        # Mean over the slice x its size = sum over the slice; the server divides by the global batch.
        sent = sum(ps_push(b, SERVER, self.meter) for b in self.grad_buckets.pack(list(flat_grads(self.params)),
                                                                                    scale=float(len(y))))
        sent += self._send_params()
        return StepResult(loss, len(y), time.perf_counter() - start, sent)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * float(self.loss_scale)  # the server's loss scale (1 without fp16)

    def _serve(self) -> StepResult:
        start = time.perf_counter()
        for b in self.grad_buckets.buffers:
            b.zero_()  # the server contributes nothing to the sum
            ps_push(b, SERVER, self.meter)
        comm_s = time.perf_counter() - start
        grads = list(flat_grads(self.params))
        self.grad_buckets.unpack(grads, scale=1.0 / self.ctx.cfg.global_batch)
        self.scaler.step(self.optimizer)  # without fp16: optimizer.step(); with: unscale, skip on inf/nan
        self.scaler.update()
        start = time.perf_counter()
        sent = self._send_params()
        return StepResult(None, 0, comm_s + time.perf_counter() - start, sent)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        return super().evaluate(x, y) if self.is_server else None  # workers' copies are identical


if __name__ == "__main__":
    sys.exit(main(PSTrainer, "ps"))
