"""What a strategy hands to the shared loop, and the replicated-model base most strategies use.

A strategy file subclasses `Trainer` (or `ReplicaTrainer`, when every rank holds the whole
model) and implements `train_step`. The loop in `loop.py` does the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.common.models import build_model, has_batchnorm
from trainers.common.recompute import apply_recompute

if TYPE_CHECKING:
    from trainers.common.context import Context


@dataclass
class StepResult:
    loss: float | None  # mean loss over this rank's samples; None where this rank computes none
    samples: int  # samples this rank processed this step
    comm_s: float | None = None  # None where communication cannot be separated from compute
    comm_bytes: int = 0  # bytes this rank sent
    compute_s: float | None = None  # None: the loop derives step_s - comm_s when comm_s is known
    staleness: int | None = None  # server versions this step's parameters lagged (asyncps workers; else None)


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class labels (B, C)/(B,) and for token data (B, T, V)/(B, T)."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]).float(), target.reshape(-1))


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)


def optimizer_class(cfg: Any) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class and its keyword arguments (for wrappers such as ZeRO)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam, {"lr": cfg.lr}
    return torch.optim.SGD, {"lr": cfg.lr, "momentum": 0.9}


def autocast(ctx: Context) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ctx.cfg.precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(ctx.device.type, dtype=dtype)


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes this rank holds of `tensors`: of a sharded one (a DTensor: tp, fsdp, mix), its local shard."""
    local = (t.to_local() if hasattr(t, "to_local") else t for t in tensors if t is not None)
    return sum(t.numel() * t.element_size() for t in local)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return tensor_bytes(v for state in optimizer.state.values() for v in state.values()
                        if isinstance(v, torch.Tensor) and v.dim() > 0)


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: Context,
                   batch: int = 256) -> tuple[float, float]:
    """Mean loss and accuracy of a whole model on (x, y), in batches."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch].to(ctx.device), y[i:i + batch].to(ctx.device)
        with autocast(ctx):
            out = model(xb)
        n = yb.numel()
        loss_sum += float(loss_fn(out, yb)) * n
        correct += int((out.argmax(-1) == yb).sum())
        count += n
    model.train(was_training)
    return loss_sum / count, correct / count


def flat_grads(params: list[nn.Parameter]) -> Iterator[torch.Tensor]:
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        yield p.grad


class Trainer:
    """The interface between a strategy and the loop. Defaults suit a rank holding nothing."""

    dp_rank: int = 0  # which slice of the global batch this rank reads
    dp_size: int = 1  # into how many slices the global batch is cut

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.notes: list[str] = []

    def note_batchnorm(self, module: nn.Module, pieces: int, what: str) -> None:
        """Say so when BatchNorm sees `pieces` parts of the global batch apart: its statistics
        (and so the maths) then differ from single's, which normalises over the whole batch."""
        if pieces > 1 and has_batchnorm(module):
            self.notes.append(f"model has BatchNorm: statistics are per {what} ({pieces} of them), "
                              "so the maths differs from single")

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        """Validation loss and accuracy on ranks that compute outputs; None elsewhere."""
        return None

    def state_bytes(self) -> tuple[int, int, int]:
        """Bytes of parameters, gradients and optimizer state this rank holds now."""
        return 0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        """This rank's share of the training state, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        """The whole model's parameters (names as in `single`) on rank 0; called on every rank."""
        return None


class ModuleState:
    """State of a rank that holds `module` (its parameters `params`) and `optimizer` over them:
    its bytes, and its checkpoint (the replicas' whole model; a stage's own blocks)."""

    module: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer

    def state_bytes(self) -> tuple[int, int, int]:
        return (tensor_bytes(self.module.parameters()), tensor_bytes(p.grad for p in self.params),
                optimizer_state_bytes(self.optimizer))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class ReplicaTrainer(ModuleState, Trainer):
    """Every rank holds the whole model and an optimizer over it (single, ddp, ring, ps, zero).

    Subclasses implement `reduce_gradients` (and may wrap `self.model`). The maths of a step
    is that of `single` on the global batch: each rank's loss is the mean over its slice, and
    the reduction averages gradients weighted by slice size.

    With `--micro-batch B` a rank's slice runs as slice / B micro-steps whose gradients add up
    (each loss scaled by its share of the slice) before the one reduction and optimizer step;
    `no_sync` keeps a wrapper's reduction (DDP, FSDP) out of all but the last micro-step.
    Blocks are wrapped for `--recompute` here (trainers/common/recompute.py), before any
    subclass shards or cuts them.
    """

    def __init__(self, ctx: Context, dp_rank: int = 0, dp_size: int = 1) -> None:
        super().__init__(ctx)
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.module = build_model(ctx.cfg.model, ctx.data.spec, ctx.cfg.seed).to(ctx.device)
        apply_recompute(self.module, ctx.cfg.recompute)
        self.model: nn.Module = self.module  # may be wrapped (DDP) by a subclass
        # gpipe's GPipe pipelines the micro-batches itself; everyone else accumulates over them here.
        self.micro_steps = 1 if ctx.cfg.strategy_record.micro_batches else ctx.cfg.micro_batches
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, ctx.cfg)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.cfg.precision == "fp16")
        self.note_batchnorm(self.module, dp_size, "rank")

    def reduce_gradients(self, samples: int) -> tuple[float | None, int]:
        """Average gradients over data-parallel ranks. Returns (comm seconds, bytes sent)."""
        return 0.0, 0

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Around a micro-step whose gradients must not be reduced yet (a wrapper that reduces in backward)."""
        return contextlib.nullcontext()

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss backward starts from (fp16: multiplied by the loss scale)."""
        return self.scaler.scale(loss)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Gradients of the mean loss over (x, y) into .grad, in `micro_steps` pieces; the mean loss."""
        if self.micro_steps == 1:
            with autocast(self.ctx):
                loss = loss_fn(self.model(x), y)
            self.scale_loss(loss).backward()
            return float(loss.detach())
        total = torch.zeros((), device=self.ctx.device)
        pieces = list(zip(x.chunk(self.micro_steps), y.chunk(self.micro_steps), strict=True))
        for i, (xb, yb) in enumerate(pieces):
            weight = len(yb) / len(y)  # equal pieces: the mean of the piece means is the slice's mean
            with self.no_sync() if i < len(pieces) - 1 else contextlib.nullcontext():
                with autocast(self.ctx):
                    loss = loss_fn(self.model(xb), yb) * weight
                self.scale_loss(loss).backward()
            total += loss.detach().float()
        return float(total)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.forward_backward(x, y)
        comm_s, comm_bytes = self.reduce_gradients(len(y))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepResult(loss, len(y), comm_s, comm_bytes)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        return evaluate_model(self.module, x, y, self.ctx)

    def full_parameters(self) -> dict[str, torch.Tensor] | None:
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
