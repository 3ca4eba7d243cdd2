"""ddp: torch's DistributedDataParallel.

Every rank holds the whole model and reads its slice of the global batch. DDP all-reduces
gradient buckets (ring all-reduce inside gloo/NCCL) while backward still runs, so
communication overlaps compute. A comm hook times each bucket's all-reduce, from launch to
completion plus the emulated wire time added after it (trainers/common/traffic.py), and counts
its bytes. Buckets queue behind each other, so their spans overlap: `comm_s` is the time at
least one bucket was in flight (the union of the spans, `CommMeter.add_span`), not the sum
of their durations; it can overlap `compute_s` (see docs/measurement.md).
"""

import contextlib
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter, ring_allreduce_bytes
from trainers.common.trainer import ReplicaTrainer


class DDPTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, dp_rank=ctx.rank, dp_size=ctx.world_size)
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.module, device_ids=device_ids)
        self.meter = CommMeter(ctx)
        self.model.register_comm_hook(self.meter, timed_allreduce_hook)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return self.model.no_sync()  # micro-steps before the last accumulate locally

    def reduce_gradients(self, samples: int) -> tuple[float | None, int]:
        return self.meter.take()  # DDP already reduced during backward


def timed_allreduce_hook(meter: CommMeter, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:  # noqa: E501
    """Average one gradient bucket, as DDP's default hook does, and time it."""
    tensor = bucket.buffer()
    tensor.div_(dist.get_world_size())
    start = time.perf_counter()
    future = dist.all_reduce(tensor, async_op=True).get_future()

    def done(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        world = dist.get_world_size()
        sent = ring_allreduce_bytes(tensor.numel() * tensor.element_size(), world)
        # Emulated link: hold the bucket back for the wire time a ring all-reduce needs between nodes.
        meter.emulate(sent, messages=2 * (world - 1))
        meter.add_span(start, time.perf_counter(), sent)
        return fut.value()[0]

    return future.then(done)


if __name__ == "__main__":
    sys.exit(main(lambda ctx: DDPTrainer(ctx), "ddp"))
