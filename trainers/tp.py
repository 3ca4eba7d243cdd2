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
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from contract import registry
from trainers.common.context import Context
from trainers.common.models import DecoderBlock
from trainers.common.recompute import apply_recompute
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult, make_optimizer


class TPAttention(nn.Module):
    """Causal self-attention with separate q, k, v, out projections (cut by parallelize_module)."""

    attention_core = True  # --recompute selective finds its scaled_dot_product_attention (recompute.py)

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        d, self.head_dim = mha.embed_dim, mha.head_dim
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(mha.in_proj_weight[i * d:(i + 1) * d])
                lin.bias.copy_(mha.in_proj_bias[i * d:(i + 1) * d])
            self.out.weight.copy_(mha.out_proj.weight)
            self.out.bias.copy_(mha.out_proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t = h.shape[:2]
        # -1: the heads this rank holds (heads/W under ColwiseParallel, all of them unsharded)
        q, k, v = (lin(h).view(b, t, -1, self.head_dim).transpose(1, 2) for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(1, 2).reshape(b, t, -1))


class TPBlock(nn.Module):
    """DecoderBlock's maths with the attention as TPAttention."""

    def __init__(self, block: DecoderBlock) -> None:
        super().__init__()
        self.norm1, self.norm2, self.mlp = block.norm1, block.norm2, block.mlp
        self.attn = TPAttention(block.attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def block_plan(sp: bool) -> dict[str, object]:
    """One decoder block's plan; with sequence parallelism, torchtitan's layouts."""
    if not sp:
        return {"attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
                "attn.out": RowwiseParallel(), "mlp.0": ColwiseParallel(), "mlp.2": RowwiseParallel()}
    gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
    return {"norm1": SequenceParallel(), "norm2": SequenceParallel(), "attn": gather,
            "attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
            "attn.out": RowwiseParallel(output_layouts=Shard(1)),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "mlp.0": ColwiseParallel(), "mlp.2": RowwiseParallel(output_layouts=Shard(1))}


def linear_path(block: nn.Module) -> str:
    """The name of an mlp block's one Linear inside it ('' when the block is the Linear)."""
    return next(n for n, m in block.named_modules() if isinstance(m, nn.Linear))


class TPTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)  # dp_size 1: every rank reads the whole global batch
        world, sp = ctx.world_size, ctx.cfg.sequence_parallel == "on"
        mesh = init_device_mesh(ctx.device.type, (world,))
        blocks = list(self.module)
        if ctx.cfg.model == "transformer":
            for i, b in enumerate(blocks):
                if isinstance(b, DecoderBlock):
                    self.module[i] = TPBlock(b)
                    parallelize_module(self.module[i], mesh, block_plan(sp))
            if sp:  # the residual stream leaves the embedding cut along the sequence, re-gathered for the head
                parallelize_module(self.module[0], mesh, PrepareModuleOutput(
                    output_layouts=(Replicate(),), desired_output_layouts=(Shard(1),)))
                parallelize_module(self.module[-1], mesh, PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True))
        else:  # mlp: blocks 2i (colwise) and 2i+1 (rowwise)
            for i, b in enumerate(blocks):
                style = ColwiseParallel() if i % 2 == 0 else RowwiseParallel()
                parallelize_module(b, mesh, {linear_path(b): style} if linear_path(b) else style)
        apply_recompute(self.module, ctx.cfg.recompute)  # the rebuilt blocks too (selective: TPAttention's core)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, ctx.cfg)
        self.step_bytes = int(registry.get("tp").comm_bytes(world, self.activation_bytes(ctx)))
        self.meter = CommMeter(ctx)
        self.notes.append(f"tensor parallel over {world} ranks, sequence parallel {ctx.cfg.sequence_parallel}")

    def activation_bytes(self, ctx: Context) -> int:
        """P of the registry's formula: the bytes of every activation all-reduced in a step (forward and
        backward): the transformer 4 per block of (B, T, dim); the mlp one per pair forward, one per pair
        backward but the first (its input needs no gradient), of (B, hidden)."""
        batch = ctx.cfg.global_batch
        if ctx.cfg.model == "transformer":
            blocks = [m for m in self.module if isinstance(m, TPBlock)]
            dim, seq = blocks[0].attn.out.out_features, ctx.data.spec.shape[0]
            return 4 * len(blocks) * batch * seq * dim * registry.FP32
        hidden = [m for m in self.module[::2].modules() if isinstance(m, nn.Linear)]
        pairs = len(hidden)
        return (2 * pairs - 1) * batch * hidden[0].out_features * registry.FP32

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        out = super().train_step(x, y)
        # Emulated slow link: the wire time of this step's all-reduces, serialised after the step.
        messages = int(registry.get("tp").comm_messages(self.ctx.world_size)) * self.micro_steps  # per micro-step
        self.meter.emulate(self.step_bytes, messages=messages)
        # Every rank computes the whole batch: rank 0 counts its samples, the others none (throughput).
        return StepResult(out.loss, out.samples if self.ctx.rank == 0 else 0, None, self.step_bytes)

    def state_bytes(self) -> tuple[int, int, int]:
        state = [v for s in self.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor) and v.dim() > 0]
        return local_bytes(self.module.parameters()), local_bytes(p.grad for p in self.params), local_bytes(state)

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        """single's names: TPAttention's q, k, v are concatenated back into in_proj_*."""
        full = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
                for k, v in self.module.state_dict().items()}
        for key in [k for k in full if ".attn.q." in k]:
            kind, prefix = key.rsplit(".", 1)[1], key.split(".attn.q.")[0]
            parts = [full.pop(f"{prefix}.attn.{n}.{kind}") for n in "qkv"]
            full[f"{prefix}.attn.in_proj_{kind}"] = torch.cat(parts)
            full[f"{prefix}.attn.out_proj.{kind}"] = full.pop(f"{prefix}.attn.out.{kind}")
        return full if dist.get_rank() == 0 else None


def local_bytes(tensors: object) -> int:
    """Bytes this rank holds of (possibly sharded) tensors."""
    return sum(t.numel() * t.element_size() for t in
               ((x.to_local() if isinstance(x, DTensor) else x) for x in tensors) if t is not None)  # type: ignore


if __name__ == "__main__":
    sys.exit(main(lambda ctx: TPTrainer(ctx), "tp"))
