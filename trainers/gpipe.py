"""gpipe: GPipe through `torchgpipe`, in one process over this node's devices.

`torchgpipe.GPipe` cuts the block list into stages (one device each), splits the batch into
`--chunks` micro-batches and runs them through the stages in GPipe's fill-drain order, one
worker thread per device; `--checkpoint always|except_last|never` recomputes activations
in backward to save memory (so `--recompute` is refused here: registry `no_recompute`);
`--micro-batch B` sets the chunks to batch / B. The output is the concatenation of the
micro-batches' outputs, so the loss (mean over the whole batch) and its gradient are exactly
`single`'s.

On CPU every stage sits on the same device ('cpu' x K), and torchgpipe keeps one worker
thread per distinct device: the stages then run one after another and GPipe cannot be
faster than `single` there. It runs on CPU for correctness; speed needs one GPU per stage.
Stages are balanced by parameter count (default), `--balance 3,3`, or `--balance time`
(torchgpipe's `balance_by_time`, profiled on one micro-batch).
"""

from __future__ import annotations

import sys
import threading

import torch
from torchgpipe import GPipe

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.stages import resolve_balance
from trainers.common.trainer import ReplicaTrainer, autocast, evaluate_model


def _autocast_in_workers(ctx: Context, blocks: torch.nn.Sequential) -> None:
    """torchgpipe runs the blocks in worker threads, and autocast is per thread: the trainer's
    `with autocast` does not reach them. Enter it around each block's forward, in its thread."""
    if ctx.cfg.precision == "fp32":
        return
    entered = threading.local()

    def enter(_block: torch.nn.Module, _args: object) -> None:
        entered.__dict__.setdefault("stack", []).append(autocast(ctx))
        entered.stack[-1].__enter__()

    def leave(_block: torch.nn.Module, _args: object, _out: object) -> None:
        entered.stack.pop().__exit__(None, None, None)

    for block in blocks:
        block.register_forward_pre_hook(enter)
        block.register_forward_hook(leave)


class GPipeTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        stages = ctx.cfg.pipeline_stages
        balance = resolve_balance(ctx, self.module, stages)
        if ctx.device.type == "cuda":
            devices = [torch.device("cuda", i % torch.cuda.device_count()) for i in range(stages)]
        else:
            devices = [torch.device("cpu")] * stages
            self.notes.append("gpipe on CPU: torchgpipe runs all CPU stages on one worker thread, so it "
                              "cannot be faster than single here (correctness only)")
        # GPipe moves each block to its stage's device; self.module keeps the same parameters,
        # so state_dict/full_parameters keep single's names.
        self.model = GPipe(self.module, balance=balance, devices=devices, chunks=ctx.cfg.micro_batches,
                           checkpoint=ctx.cfg.gpipe_checkpoint)
        _autocast_in_workers(ctx, self.module)
        self.devices = devices
        self.note_batchnorm(self.module, ctx.cfg.micro_batches, "micro-batch")
        self.notes.append(f"{stages} stages on {[str(d) for d in devices]}, blocks per stage {balance} "
                          f"(balance: {ctx.cfg.balance or 'params'}), {ctx.cfg.micro_batches} micro-batches, "
                          f"checkpoint {ctx.cfg.gpipe_checkpoint}")

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(self.devices[0]), y.to(self.devices[-1])  # input to the first stage, loss on the last
        return super().forward_backward(x, y)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        if self.ctx.device.type == "cpu":
            return evaluate_model(self.module, x, y, self.ctx)
        return evaluate_model(self.model, x.to(self.devices[0]), y.to(self.devices[-1]), self.ctx)


if __name__ == "__main__":
    sys.exit(main(lambda ctx: GPipeTrainer(ctx), "gpipe"))
