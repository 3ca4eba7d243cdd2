"""What the tensor-parallel strategies (tp, mix) share: cutting the project's models over a mesh.

- `TPBlock` / `TPAttention`: a DecoderBlock rebuilt with separate q, k, v, out Linear layers holding
  the same weights (nn.MultiheadAttention is one fused module that parallelize_module cannot cut).
- `block_plan` (a decoder block) and `parallelize` (a whole block list, in place): Megatron's colwise
  then rowwise pairs; with sequence parallelism, torchtitan's layouts (the residual stream between
  blocks is a plain tensor holding this rank's T/W positions, so a pipeline boundary carries 1/W of it).
- `collectives`: how many collectives a slice of blocks runs (forward and backward) and the elements
  per sample they carry: the P of the registry's TP traffic (docs/strategies.md#tp).
- `full_state`: a module's state with its sharded tensors gathered whole, under single's names
  (TPAttention's q, k, v concatenated back into in_proj_*).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from trainers.common.models import DecoderBlock


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


def block_plan(sp: bool) -> dict[str, Any]:
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


def parallelize(model: nn.Sequential, mesh: DeviceMesh, name: str, sp: bool) -> None:
    """Cut the whole block list `model` (model `name`) over the 1-D `mesh`, in place.
    transformer: every DecoderBlock becomes a TPBlock cut by `block_plan`; embedding and head stay
    replicated (with `sp`, the embedding's output is cut along the sequence and re-gathered for the
    head). mlp: blocks 2i colwise, 2i+1 rowwise (a boundary inside a pair carries 1/W of the hidden)."""
    if name == "transformer":
        for i, b in enumerate(list(model)):
            if isinstance(b, DecoderBlock):
                model[i] = TPBlock(b)
                parallelize_module(model[i], mesh, block_plan(sp))
        if sp:
            parallelize_module(model[0], mesh, PrepareModuleOutput(
                output_layouts=(Replicate(),), desired_output_layouts=(Shard(1),)))
            parallelize_module(model[-1], mesh, PrepareModuleInput(
                input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True))
        return
    for i, b in enumerate(model):
        style = ColwiseParallel() if i % 2 == 0 else RowwiseParallel()
        parallelize_module(b, mesh, {linear_path(b): style} if linear_path(b) else style)


def collectives(blocks: nn.Sequential, first_block: int, name: str, seq: int) -> tuple[int, int]:
    """(collectives, elements per sample they carry) of the blocks `first_block`.. of a model cut by
    `parallelize`, forward and backward; an all-reduce, or a reduce-scatter + all-gather (the same
    bytes), counts as one. transformer: 4 per TPBlock of (T, dim): the attention's and the MLP's
    rowwise outputs forward, their colwise inputs' gradients backward. mlp: a rowwise block's output
    forward, a colwise block's input gradient backward (not the first block's: its input needs none)."""
    if name == "transformer":
        dims = [b.attn.out.out_features for b in blocks if isinstance(b, TPBlock)]
        return 4 * len(dims), sum(4 * seq * d for d in dims)
    count = total = 0
    for i, b in enumerate(blocks, first_block):
        lin = b.get_submodule(linear_path(b)) if linear_path(b) else b
        if i > 0:  # block 0 is colwise on the input, which needs no gradient
            count += 1
            total += lin.out_features if i % 2 else lin.in_features
    return count, total


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """What this rank actually holds of a (possibly sharded) tensor."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state_dict with every DTensor gathered whole (collective: every rank holding a piece
    calls it), on the CPU, under single's names (q, k, v back into in_proj_*, out into out_proj)."""
    full = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
            for k, v in module.state_dict().items()}
    for key in [k for k in full if ".attn.q." in k]:
        kind, prefix = key.rsplit(".", 1)[1], key.split(".attn.q.")[0]
        parts = [full.pop(f"{prefix}.attn.{n}.{kind}") for n in "qkv"]
        full[f"{prefix}.attn.in_proj_{kind}"] = torch.cat(parts)
        full[f"{prefix}.attn.out_proj.{kind}"] = full.pop(f"{prefix}.attn.out.{kind}")
    return full
