"""tp: tensor parallelism through torch's DTensor (`parallelize_module`), Megatron style.

Every rank reads the whole global batch (no data parallelism: dp_size 1) and holds a 1/W slice
of each sharded layer. Linear layers come in pairs: the first is cut by output columns
(ColwiseParallel: each rank computes its share of the hidden units, no communication), the second
by input rows (RowwiseParallel: each rank's partial product is all-reduced). `mlp`: its linear
layers pair up block by block (0-1, 2-3, 4-5). `transformer`: in each DecoderBlock the attention's
q, k, v projections are colwise (each rank computes heads/W heads) and its out projection
rowwise; the MLP's first linear colwise, its second rowwise. Embedding and head stay replicated.

Sequence parallelism (`--sequence-parallel on`, as torchtitan): between the tensor-parallel
regions the residual stream is cut along the sequence, so each rank runs the LayerNorms on
T/W positions (SequenceParallel); the all-reduce after a rowwise layer becomes a reduce-scatter
and an all-gather before the next colwise one: the same bytes, less activation memory. `mlp` has
no norms and no sequence: the setting changes nothing there.

nn.MultiheadAttention is one fused module, so the trainer rebuilds each DecoderBlock with
separate q, k, v, out Linear layers holding the same weights (`TPBlock`); the maths is single's
(scaled dot-product attention, causal), up to rounding. Communication happens inside forward and
backward, so `comm_s` is null; `comm_bytes` is the registry's formula (docs/strategies.md#tp).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from contract import registry
from trainers.common.context import Context
from trainers.common.recompute import apply_recompute
from trainers.common.runtime import main
from trainers.common.tensor_parallel import collectives, full_state, parallelize
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult, make_optimizer


class TPTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)  # dp_size 1: every rank reads the whole global batch
        world, sp = ctx.world_size, ctx.cfg.sequence_parallel == "on"
        parallelize(self.module, init_device_mesh(ctx.device.type, (world,)), ctx.cfg.model, sp)
        apply_recompute(self.module, ctx.cfg.recompute)  # the rebuilt blocks too (selective: TPAttention's core)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, ctx.cfg)
        self.step_bytes = int(registry.get("tp").comm_bytes(world, self.activation_bytes(ctx)))
        self.meter = CommMeter(ctx)
        self.notes.append(f"tensor parallel over {world} ranks, sequence parallel {ctx.cfg.sequence_parallel}")

    def activation_bytes(self, ctx: Context) -> int:
        """P of the registry's formula: the bytes of every activation all-reduced in a step (forward and
        backward), for the whole global batch (trainers/common/tensor_parallel.py, collectives)."""
        seq = ctx.data.spec.shape[0] if ctx.cfg.model == "transformer" else 1
        return ctx.cfg.global_batch * collectives(self.module, 0, ctx.cfg.model, seq)[1] * registry.FP32

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        out = super().train_step(x, y)
        # Emulated slow link: the wire time of this step's all-reduces, serialised after the step.
        messages = int(registry.get("tp").comm_messages(self.ctx.world_size)) * self.micro_steps  # per micro-step
        self.meter.emulate(self.step_bytes, messages=messages)
        # Every rank computes the whole batch: rank 0 counts its samples, the others none (throughput).
        return StepResult(out.loss, out.samples if self.ctx.rank == 0 else 0, None, self.step_bytes)

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        """single's names: TPAttention's q, k, v are concatenated back into in_proj_*."""
        full = full_state(self.module)
        return full if dist.get_rank() == 0 else None


if __name__ == "__main__":
    sys.exit(main(lambda ctx: TPTrainer(ctx), "tp"))
