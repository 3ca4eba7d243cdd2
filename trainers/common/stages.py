"""What the staged strategies (mp, gpipe, pipeline, hybrid) share.

- `resolve_balance`: how many consecutive blocks each stage gets: an explicit `--balance`,
  by parameter count (default), or by measured time (`--balance time`, torchgpipe's
  `balance_by_time`; measured on rank 0 and broadcast so every rank cuts the same way).
- `boundary_shapes`: the shape and dtype of every block's output (one dry run), so a stage
  knows what it will receive without a shape message on the wire.
- `P2P`: timed point-to-point send/recv of activations and gradients, counting bytes and
  delaying traffic between simulated nodes through `CommMeter`.
- `StageTrainer`: one rank holding one stage (a slice of the model's blocks) with its own
  optimizer; checkpoints, memory figures, evaluation through the stages, and the gathering
  of every stage's parameters to rank 0 under `single`'s names.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from contract.balance import balance_by_params
from contract.errors import ConfigError
from trainers.common.models import build_model, param_counts, split_stages
from trainers.common.recompute import apply_recompute
from trainers.common.tensor_parallel import full_state
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ModuleState, Trainer, autocast, loss_fn, make_optimizer

if TYPE_CHECKING:
    from trainers.common.context import Context

EVAL_TAG = 7  # evaluation traffic never matches a training message (torch.distributed.pipelining uses 0)


def sample_input(ctx: Context, batch: int) -> torch.Tensor:
    spec = ctx.data.spec
    if spec.kind == "tokens":
        return torch.zeros(batch, *spec.shape, dtype=torch.long, device=ctx.device)
    return torch.zeros(batch, *spec.shape, device=ctx.device)


def resolve_balance(ctx: Context, model: nn.Sequential, stages: int) -> list[int]:
    """Blocks per stage. Raises ConfigError for a layout the model cannot take."""
    cfg, n = ctx.cfg, len(model)
    if stages > n:
        raise ConfigError(f"invalid stages {stages}: more stages than the {n} blocks of model {cfg.model}")
    if cfg.balance in ("", "params"):
        return balance_by_params(param_counts(model), stages)
    if cfg.balance == "time":
        return _balance_by_time(ctx, model, stages)
    balance = cfg.balance_list()
    if len(balance) != stages or sum(balance) != n or min(balance) < 1:
        raise ConfigError(f"invalid balance {cfg.balance!r}: need {stages} positive block counts "
                          f"summing to the {n} blocks of model {cfg.model}")
    return balance


def _balance_by_time(ctx: Context, model: nn.Sequential, stages: int) -> list[int]:
    from torchgpipe.balance import balance_by_time

    balance: list[Any] = [None]
    if ctx.rank == 0:
        # Profiles forward+backward of every block on a (small) copy of one micro-batch.
        sample = sample_input(ctx, max(ctx.cfg.replica_batch // ctx.cfg.micro_batches, 1))
        if ctx.data.spec.kind == "image":
            sample.normal_()
        # On a copy: profiling runs training steps that would move BatchNorm statistics.
        balance[0] = list(balance_by_time(stages, copy.deepcopy(model), sample, timeout=1.0, device=ctx.device))
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(balance, src=0)
    return balance[0]


@dataclass(frozen=True)
class Boundary:
    shape: tuple[int, ...]  # without the batch dimension
    dtype: torch.dtype


@torch.no_grad()
def boundary_shapes(ctx: Context, model: nn.Sequential) -> list[Boundary]:
    """Output shape/dtype of each block (same autocast as training), from a 2-sample dry run."""
    was_training = model.training
    model.eval()  # a dry run must not touch BatchNorm statistics
    out: list[Boundary] = []
    h = sample_input(ctx, 2)
    with autocast(ctx):
        for block in model:
            h = block(h)
            out.append(Boundary(tuple(h.shape[1:]), h.dtype))
    model.train(was_training)
    return out


class P2P:
    """Blocking point-to-point transfers of one tensor, timed and counted in `meter`."""

    def __init__(self, ctx: Context, meter: CommMeter) -> None:
        self.ctx, self.meter = ctx, meter

    def send(self, t: torch.Tensor, peer: int, tag: int = 0) -> None:
        t0 = time.perf_counter()
        t = t.detach().contiguous()
        dist.send(t, peer, tag=tag)
        self.meter.add(time.perf_counter() - t0, t.numel() * t.element_size())

    def recv(self, shape: tuple[int, ...], dtype: torch.dtype, peer: int, tag: int = 0) -> torch.Tensor:
        t0 = time.perf_counter()
        t = torch.empty(shape, dtype=dtype, device=self.ctx.device)
        dist.recv(t, peer, tag=tag)
        # The receiver waits out the emulated wire time of a message that crossed simulated nodes.
        self.meter.emulate(t.numel() * t.element_size(), peer=peer)
        self.meter.add(time.perf_counter() - t0, 0)
        return t


class StageTrainer(ModuleState, Trainer):
    """One rank, one stage. `stage_ranks[i]` is the global rank running stage i of this rank's
    pipeline (for hybrid, the ranks of this rank's replica)."""

    def __init__(self, ctx: Context, stage_ranks: list[int], dp_rank: int = 0, dp_size: int = 1) -> None:
        super().__init__(ctx)
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.stage_ranks = stage_ranks
        self.index, self.count = stage_ranks.index(ctx.rank), len(stage_ranks)
        full = build_model(ctx.cfg.model, ctx.data.spec, ctx.cfg.seed).to(ctx.device)
        self.micro_batches = ctx.cfg.micro_batches  # pipelines' chunks; mp: 1, or its accumulation steps
        self.note_batchnorm(full, dp_size * self.micro_batches, "micro-batch")
        self.balance = resolve_balance(ctx, full, self.count)
        self.first_block = sum(self.balance[:self.index])
        full = self.prepare(full)
        # after the TP cut, which rebuilds blocks; selective refuses a model without attention
        apply_recompute(full, ctx.cfg.recompute)
        self.boundaries = boundary_shapes(ctx, full)
        self.module = split_stages(full, self.balance)[self.index]
        del full
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, ctx.cfg)
        self.meter = CommMeter(ctx)
        self.p2p = P2P(ctx, self.meter)
        if ctx.rank == 0:
            self.notes.append(f"{self.count} stages, blocks per stage {self.balance} "
                              f"(balance: {ctx.cfg.balance or 'params'})")
        if ctx.cfg.precision == "fp16":
            self.notes.append("fp16 on a staged model runs without loss scaling (use bf16 to be safe)")

    def prepare(self, full: nn.Sequential) -> nn.Sequential:
        """The whole model as the stages will run it, before the cut (mix: cut over the tp ranks, so the
        boundaries are what a rank sends); the blocks are the model's own by default."""
        return full

    # ---- layout --------------------------------------------------------------
    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1

    @property
    def prev_rank(self) -> int:
        return self.stage_ranks[self.index - 1]

    @property
    def next_rank(self) -> int:
        return self.stage_ranks[self.index + 1]

    def in_boundary(self) -> Boundary:
        return self.boundaries[self.first_block - 1]

    def out_boundary(self) -> Boundary:
        return self.boundaries[self.first_block + len(self.module) - 1]

    def activation_bytes(self, batch: int) -> tuple[int, int]:
        """Bytes of one batch's activation sent forward and of its gradient sent backward."""
        def size(b: Boundary) -> int:
            return batch * int(torch.tensor(b.shape).prod()) * torch.empty(0, dtype=b.dtype).element_size()
        fwd = 0 if self.is_last else size(self.out_boundary())
        bwd = 0 if self.is_first else size(self.in_boundary())
        return fwd, bwd

    # ---- forward through the stages (evaluation) -----------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> tuple[float, float] | None:
        was_training = self.module.training
        self.module.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch].to(self.ctx.device), y[i:i + batch].to(self.ctx.device)
            if self.is_first:
                h = xb
            else:
                b = self.in_boundary()
                h = self.p2p.recv((len(yb), *b.shape), b.dtype, self.prev_rank, tag=EVAL_TAG)
            with autocast(self.ctx):
                out = self.module(h)
            if not self.is_last:
                self.p2p.send(out, self.next_rank, tag=EVAL_TAG)
                continue
            loss_sum += float(loss_fn(out, yb)) * yb.numel()
            correct += int((out.argmax(-1) == yb).sum())
            count += yb.numel()
        self.meter.take()  # evaluation traffic is not part of any training step's figures
        self.module.train(was_training)
        return (loss_sum / count, correct / count) if self.is_last else None

    # ---- state -----------------------------------------------------------------
    def global_state(self) -> dict[str, torch.Tensor]:
        """This stage's state_dict under the whole model's names ('<block>.<rest>', as in single),
        sharded tensors gathered whole (collective over the ranks holding this stage)."""
        out = {}
        for key, value in full_state(self.module).items():
            local, rest = key.split(".", 1)
            out[f"{self.first_block + int(local)}.{rest}"] = value
        return out

    @property
    def reports_state(self) -> bool:
        """Whether this rank's copy of its stage is the one rank 0 gathers (replicas hold the same values)."""
        return self.dp_rank == 0

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        mine = self.global_state()
        mine = mine if self.reports_state else {}
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return mine
        parts: list[Any] = [None] * dist.get_world_size() if self.ctx.rank == 0 else []
        dist.gather_object(mine, parts if self.ctx.rank == 0 else None, dst=0)
        if self.ctx.rank != 0:
            return None
        merged: dict[str, torch.Tensor] = {}
        for part in parts:
            merged.update(part)
        return merged
