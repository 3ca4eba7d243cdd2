"""What autograd keeps for backward, measured: the activation side of the memory planner.

`saved_bytes` runs one forward of a module under `torch.autograd.graph.saved_tensors_hooks`
and adds up the storages autograd saves for backward, each storage once, leaving out the
parameters (the planner counts those as parameter bytes). It works on CPU, so a plan for a
GPU can be made on a laptop: autograd saves the same tensors on either device.

`profile_model` measures the project's models block by block at one batch size, so the
planner can sum the blocks of a pipeline stage and scale to the micro-batch a rank runs;
`profile_tp` does so for TP rank 0 of the model cut over tp ranks (tp, mix), in this process, on
torch's fake process group, under the layout's recomputation (analysis/layoutplan.py plans from it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

from trainers.common.data import data_spec
from trainers.common.models import build_model
from trainers.common.recompute import apply_recompute
from trainers.common.savedpeak import parameter_keys, storage_key
from trainers.common.tensor_parallel import local, parallelize
from trainers.common.trainer import loss_fn

REFERENCE_BATCH = 16  # samples per measuring forward; activations grow linearly with the batch


_storage_key = storage_key  # a DTensor by its local shard (tp, mix)


class SavedTensors:
    """Collects the storages autograd saves while the context is active."""

    def __init__(self, exclude: set[tuple[int, int]] | None = None) -> None:
        self.exclude = exclude or set()
        self.seen: dict[tuple[int, int], int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            key = _storage_key(t)
            if key not in self.exclude and not isinstance(t, nn.Parameter):
                self.seen[key] = key[1]
        return t

    @contextlib.contextmanager
    def watch(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self

    @property
    def nbytes(self) -> int:
        return sum(self.seen.values())


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _param_keys(module: nn.Module) -> set[tuple[int, int]]:
    return parameter_keys(module.parameters())


def saved_bytes(module: nn.Module, x: torch.Tensor, precision: str = "fp32") -> int:
    """Bytes autograd saves for backward in one forward of `module` on `x` (parameters excluded)."""
    saved = SavedTensors(_param_keys(module))
    with saved.watch(), _autocast(precision):
        out = module(x)
    del out
    return saved.nbytes


@dataclass(frozen=True)
class BlockProfile:
    params: int  # parameter elements
    saved_per_sample: float  # bytes autograd saves for backward, per sample
    output_per_sample: float  # bytes of the block's output, per sample (a stage boundary's message)
    shapes: tuple[tuple[int, ...], ...] = ()  # its parameter tensors' shapes
    batch_per_sample: float = 0.0  # of saved_per_sample: bytes of the batch itself (input, targets) it saves


def profile_model(model: str, dataset: str, precision: str = "fp32", batch: int = REFERENCE_BATCH,
                  recompute: str = "none", loss: bool = False, prepare: Callable[[nn.Sequential], None] | None = None,
                  ) -> list[BlockProfile]:
    """Per block of a project model: parameters and saved bytes per sample, measured at `batch`.
    A storage saved by two blocks (one's output, the next one's input) counts in the first.
    `prepare` changes the model in place before recomputation is applied (the TP cut: profile_tp);
    `recompute`: what the blocks keep under it (what the graph holds between forward and backward, as
    savedpeak sees it); `loss`: the last block also counts what the loss saves (its log-softmax)."""
    tokens = model == "transformer"
    spec = data_spec(dataset, tokens)
    net = build_model(model, spec, seed=0)
    if prepare is not None:
        prepare(net)
    apply_recompute(net, recompute)
    x = torch.zeros(batch, *spec.shape, dtype=torch.long) if tokens else torch.randn(batch, *spec.shape)
    saved = SavedTensors(_param_keys(net))
    out: list[BlockProfile] = []
    batch_keys = {_storage_key(x)}  # the batch's storages: the input, then the targets

    def of_batch() -> int:
        return sum(saved.seen.get(k, 0) for k in batch_keys)

    with saved.watch(), _autocast(precision):
        for i, block in enumerate(net):
            before, batch_before = saved.nbytes, of_batch()
            x = block(x)
            if loss and i == len(net) - 1:
                target = torch.zeros(x.shape[:-1], dtype=torch.long)
                batch_keys.add(_storage_key(target))
                loss_fn(x, target)
            here = local(x)
            out.append(BlockProfile(sum(local(p).numel() for p in block.parameters()),
                                    (saved.nbytes - before) / batch, here.numel() * here.element_size() / batch,
                                    tuple(tuple(local(p).shape) for p in block.parameters()),
                                    (of_batch() - batch_before) / batch))
    return out


def profile_tp(model: str, dataset: str, tp: int, recompute: str = "none", sp: bool = False,
               batch: int = REFERENCE_BATCH) -> list[BlockProfile]:
    """profile_model of rank 0 of a model cut over `tp` ranks (trainers/common/tensor_parallel.py), in this
    process: torch's fake process group runs the DTensor ops without communicating (the collectives do
    nothing), so shapes, local shards and saved tensors are a real rank's. Parameters: the local shards."""
    if tp == 1:
        return profile_model(model, dataset, batch=batch, recompute=recompute, loss=True)
    if dist.is_initialized():
        raise RuntimeError("profile_tp needs a process without a process group (it makes a fake one)")
    from torch.testing._internal.distributed.fake_pg import FakeStore  # torch's own, for tests and planning

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=tp)
    try:
        mesh = init_device_mesh("cpu", (tp,))
        return profile_model(model, dataset, batch=batch, recompute=recompute, loss=True,
                             prepare=lambda net: parallelize(net, mesh, model, sp))
    finally:
        dist.destroy_process_group()


def planned_and_saved(model: str, batches: tuple[int, ...],
                      dataset: str = "synthetic") -> list[tuple[int, float, int]]:
    """(batch, planned, measured) activation bytes: the per-block profile scaled to each batch, against
    what autograd saves in one forward of the whole model at that batch (the plan's check)."""
    tokens = model == "transformer"
    spec = data_spec(dataset, tokens)
    per_sample = sum(b.saved_per_sample for b in profile_model(model, dataset))
    net = build_model(model, spec, seed=0)
    out = []
    for batch in batches:
        x = torch.zeros(batch, *spec.shape, dtype=torch.long) if tokens else torch.randn(batch, *spec.shape)
        out.append((batch, per_sample * batch, saved_bytes(net, x)))
    return out
