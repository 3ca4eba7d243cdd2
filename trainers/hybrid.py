"""hybrid: pipeline stages inside a node x data parallelism across nodes (a 2-D layout).

The world is a grid of `replicas x stages` ranks (`--stages`, default: ranks per node, so
each pipeline stays inside one node, where links are fast). Rank r runs stage r % stages
of replica r // stages. Each replica is a `pipeline` (torch.distributed.pipelining,
`--schedule`, `--chunks`) over its own process group and reads its own slice of the global
batch. After the schedule, each stage all-reduces its gradients with the same stage of the
other replicas (one process group per stage, which crosses nodes), then every replica
takes the same optimizer step, so the replicas stay identical.

Maths: replica j's stage gradients are the mean-loss gradient over its slice; averaging
over equal slices gives the mean-loss gradient over the global batch, as in `single`.
`comm_s` stays null (the pipeline's own sends cannot be timed apart); `comm_bytes` adds
the all-reduce's bytes to the activations and gradients this rank sends.
"""

from __future__ import annotations

import sys
import time

import torch.distributed as dist

from trainers.common.context import Context
from trainers.common.dataparallel import allreduce_mean
from trainers.common.runtime import main
from trainers.common.traffic import ring_allreduce_bytes
from trainers.pipeline import PipelineTrainer


def grid_groups(world: int, stages: int, rank: int) -> tuple[list[int], list[int], object, object]:
    """This rank's pipeline ranks and data-parallel ranks, and their process groups.
    Every rank creates every group, in the same order (new_group is collective)."""
    replicas = world // stages
    pipe_group = dp_group = None
    pipe_ranks: list[int] = []
    dp_ranks: list[int] = []
    for r in range(replicas):
        ranks = [r * stages + s for s in range(stages)]
        group = dist.new_group(ranks)
        if rank in ranks:
            pipe_ranks, pipe_group = ranks, group
    for s in range(stages):
        ranks = [r * stages + s for r in range(replicas)]
        group = dist.new_group(ranks)
        if rank in ranks:
            dp_ranks, dp_group = ranks, group
    return pipe_ranks, dp_ranks, pipe_group, dp_group


class HybridTrainer(PipelineTrainer):
    def __init__(self, ctx: Context) -> None:
        stages = ctx.cfg.pipeline_stages
        pipe_ranks, dp_ranks, pipe_group, dp_group = grid_groups(ctx.world_size, stages, ctx.rank)
        super().__init__(ctx, pipe_ranks, pipe_group, dp_rank=ctx.rank // stages, dp_size=len(dp_ranks))
        self.dp_ranks, self.dp_group = dp_ranks, dp_group
        # A data-parallel peer on another simulated node, if any: then the all-reduce crosses the link.
        self.remote_peer = next((r for r in dp_ranks if self.meter.crosses_nodes(r)), None)
        if ctx.rank == 0:
            self.notes.append(f"{len(dp_ranks)} replicas x {stages} stages")

    def reduce_gradients(self) -> tuple[float, int]:
        if self.dp_size == 1 or not self.params:
            return 0.0, 0
        start = time.perf_counter()
        sent = ring_allreduce_bytes(allreduce_mean([p.grad for p in self.params], self.dp_group, self.dp_size),
                                    self.dp_size)
        if self.remote_peer is not None:
            self.meter.emulate(sent, messages=2 * (self.dp_size - 1), peer=self.remote_peer)
        return time.perf_counter() - start, sent


if __name__ == "__main__":
    sys.exit(main(lambda ctx: HybridTrainer(ctx), "hybrid"))
