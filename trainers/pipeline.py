"""pipeline: multi-process pipeline parallelism with `torch.distributed.pipelining`.

The blocks are cut into one stage per rank (across nodes too), as in `mp`, but each step's
global batch is split into `--chunks` micro-batches that flow through the stages one after
another, so stages work on different micro-batches at the same time. With K stages and M
micro-batches the ideal speed-up over `mp` is K*M/(M+K-1) (the bubble is K-1 slots).

Schedules (`--schedule`): `gpipe` runs every micro-batch's forward, then every backward
(activations of all M micro-batches alive at once); `1f1b` alternates one forward and one
backward after a warm-up, which bounds live activations by K instead of M.

Maths: the last stage computes the mean loss of each micro-batch; the schedule sums the
micro-batch gradients and divides by M (`scale_grads=True`), which for equal micro-batches
is exactly the gradient of the mean loss over the global batch, as in `single`. The logged
loss is the mean of the micro-batch losses, i.e. the mean over the global batch.

The library does its own sends and receives, so compute and communication cannot be
timed apart (`comm_s` null); `comm_bytes` counts the activations and gradients this rank
sends. An emulated slow link between simulated nodes is applied after the schedule, as
the serialised wire time of this rank's cross-node messages (a pessimistic bound: a real
link would overlap part of it with compute).
"""

from __future__ import annotations

import sys

import torch
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.stages import StageTrainer, micro_batches
from trainers.common.trainer import StepResult, autocast, loss_fn


class PipelineTrainer(StageTrainer):
    def __init__(self, ctx: Context, stage_ranks: list[int] | None = None, group=None,
                 dp_rank: int = 0, dp_size: int = 1) -> None:
        super().__init__(ctx, stage_ranks or list(range(ctx.world_size)), dp_rank, dp_size)
        self.chunks = micro_batches(ctx.cfg)
        stage = PipelineStage(self.module, self.index, self.count, ctx.device, group=group)
        schedule = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[ctx.cfg.schedule]
        if schedule is Schedule1F1B and self.chunks < self.count:
            # With fewer micro-batches than stages, 1F1B's warm-up already holds every forward:
            # its order is GPipe's. torch's Schedule1F1B refuses that case, so run ScheduleGPipe.
            schedule = ScheduleGPipe
            if ctx.rank == 0:
                self.notes.append(f"1f1b with {self.chunks} micro-batches < {self.count} stages is the "
                                  "GPipe order: running ScheduleGPipe")
        self.schedule = schedule(stage, n_microbatches=self.chunks, loss_fn=loss_fn, scale_grads=True)
        if ctx.rank == 0:
            self.notes.append(f"schedule {ctx.cfg.schedule}, {self.chunks} micro-batches per step")

    def reduce_gradients(self) -> tuple[float, int]:
        """Between replicas (hybrid); a single pipeline has nothing to reduce."""
        return 0.0, 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=False)
        losses: list[torch.Tensor] = []
        with autocast(self.ctx):
            if self.is_first and self.is_last:
                self.schedule.step(x, target=y, losses=losses)
            elif self.is_first:
                self.schedule.step(x)
            elif self.is_last:
                self.schedule.step(target=y, losses=losses)
            else:
                self.schedule.step()
        fwd, bwd = self.activation_bytes(len(y))
        if self.meter.link is not None:  # emulated wire time of this rank's cross-node messages
            for peer, nbytes in ((None if self.is_last else self.next_rank, fwd),
                                 (None if self.is_first else self.prev_rank, bwd)):
                if peer is not None:
                    self.meter.emulate(nbytes, messages=self.chunks, peer=peer)
        _, dp_bytes = self.reduce_gradients()
        self.optimizer.step()
        loss = float(torch.stack([t.detach().float() for t in losses]).mean()) if losses else None
        return StepResult(loss, len(y), None, fwd + bwd + dp_bytes)


if __name__ == "__main__":
    sys.exit(main(lambda ctx: PipelineTrainer(ctx), "pipeline"))
