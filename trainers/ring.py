"""ring: data parallelism with a ring all-reduce written here (not the backend's).

Every rank holds the whole model and an optimizer, reads its slice of the global batch, and
runs forward and backward on it. Then the gradients are averaged: each rank packs them into
flat buckets (25 MB, like DDP's), scaled by its share of the global batch (samples / global
batch), and sums every bucket over the ranks with `ring_allreduce`
(trainers/common/collectives.py): reduce-scatter, then all-gather, over world-size chunks,
with non-blocking sends. Each rank then takes the same optimizer step, so the replicas stay
identical and the maths is `single`'s on the global batch.

Unlike DDP, nothing overlaps: the ring starts after backward. `comm_s` is the whole
reduction (packing, ring, unpacking); `comm_bytes` the bytes this rank sent, 2(N-1)/N x
gradient bytes. Between simulated nodes, each ring step's emulated wire time is added after
its real transfer (the one rule of trainers/common/traffic.py).
"""

from __future__ import annotations

import sys
import time

from trainers.common.collectives import Buckets, comm_device, ring_allreduce
from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, flat_grads


class RingTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, dp_rank=ctx.rank, dp_size=ctx.world_size)
        self.meter = CommMeter(ctx)
        self.device = comm_device(ctx.device)
        self.buckets = Buckets(self.params, self.device)

    def reduce_gradients(self, samples: int) -> tuple[float | None, int]:
        start = time.perf_counter()
        self.ctx.sync_device()
        grads = list(flat_grads(self.params))
        # Weight by this rank's share, so the sum over ranks is the gradient of the global-batch mean.
        sent = 0
        for bucket in self.buckets.pack(grads, scale=samples / self.ctx.cfg.global_batch):
            sent += ring_allreduce(bucket, meter=self.meter)
        self.buckets.unpack(grads)
        return time.perf_counter() - start, sent


if __name__ == "__main__":
    sys.exit(main(RingTrainer, "ring"))
