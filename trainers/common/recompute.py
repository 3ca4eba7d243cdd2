"""Activation recomputation (`--recompute`), one block at a time, for every trainer that builds a model.

`apply_recompute(blocks, mode)` takes an `nn.Sequential` of blocks (a whole model, a pipeline
stage, blocks rebuilt for tensor parallelism) and makes each block's forward run under
`torch.utils.checkpoint.checkpoint(use_reentrant=False)`:

- `full`: the block keeps only its input; backward runs the block's forward again first.
- `selective` (after Korthikanti et al. 2022): backward recomputes the attention core,
  softmax(QK^T)V, from the saved q, k, v, and keeps the costly activations. It is torch's
  selective checkpointing with a policy that saves the outputs of the matrix multiplies outside
  the core (the q, k, v, out and MLP projections: `mm`, `addmm`) and recomputes every other op:
  the core (`scaled_dot_product_attention`'s kernels, or its math path's softmax and batched
  matmuls) and the cheap element-wise ones (norms, GELU, residual adds), whose inputs it has. A
  policy that saved every op's output but the core's would cache outputs autograd never keeps
  (measured: more than no recomputation at all). Only blocks holding attention are wrapped
  (nn.MultiheadAttention, or a module that says `attention_core = True`, as
  trainers/common/tensor_parallel.py's TPAttention); the others keep everything.

The block's class is swapped for a subclass with the checkpointed forward (as FSDP2's
fully_shard does), so parameter names stay single's, module replicas (DataParallel) run their
own copy, and `fully_shard` or `parallelize_module` can come after. Wrap before fully_shard.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from contract.errors import ConfigError
from contract.tables import RECOMPUTE as MODES

_aten = torch.ops.aten
# The attention core at the dispatcher: scaled_dot_product_attention's fused kernels, and the ops of its math path.
CORE_OPS = frozenset(getattr(_aten, name).default for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_softmax", "_safe_softmax", "bmm", "baddbmm")
    if hasattr(_aten, name))


def has_attention(module: nn.Module) -> bool:
    """Whether `module` holds an attention core that selective recomputation can drop."""
    return any(isinstance(m, nn.MultiheadAttention) or getattr(m, "attention_core", False) for m in module.modules())


# The projections' matrix multiplies (F.linear at the dispatcher): their outputs are what selective keeps.
SAVED_OPS = frozenset((_aten.mm.default, _aten.addmm.default))


def _save_projections(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_save_projections)


@functools.cache
def _recomputed_class(cls: type[nn.Module], mode: str) -> type[nn.Module]:
    """`cls` with its forward checkpointed in `mode` (one class per pair, made once)."""
    context = _selective_context if mode == "selective" else None

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        inner = super(sub, self).forward
        if context is None:
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        # respect_saved_tensors_hooks: what the policy saves goes through savedpeak's hooks, as every saved tensor
        return checkpoint(inner, *args, use_reentrant=False, context_fn=context, respect_saved_tensors_hooks=True,
                          **kwargs)

    sub = type(f"Recompute{cls.__name__}", (cls,), {"forward": forward, "recompute": mode})
    return sub


def apply_recompute(blocks: nn.Sequential, mode: str) -> int:
    """Checkpoint each block of `blocks` in `mode` (none: nothing); returns the blocks wrapped.
    Idempotent: a block already wrapped stays as it is. Selective on blocks without any
    attention is a ConfigError (one line)."""
    if mode not in MODES:
        raise ConfigError(f"unknown recompute {mode!r}: choose from {', '.join(MODES)}")
    if mode == "none":
        return 0
    chosen = [b for b in blocks if mode == "full" or has_attention(b)]
    if not chosen:
        raise ConfigError("invalid recompute selective: the model has no attention (it recomputes the attention "
                          "core only); use --recompute full")
    for block in chosen:
        if getattr(block, "recompute", None) is None:
            block.__class__ = _recomputed_class(type(block), mode)
    return len(chosen)


def recompute_mode(block: nn.Module) -> str:
    """The mode a block runs in ('none' when unwrapped)."""
    return getattr(block, "recompute", None) or "none"
