"""The training loop every strategy shares: timed steps and their records, epochs and validation,
checkpoints (periodic, and on Slurm's time-limit warning), fault injection, SIGTERM as an exit."""

from __future__ import annotations

import os
import resource
import signal
import time

import torch
import torch.distributed as dist

from trainers.common import checkpoint
from trainers.common.context import Context
from trainers.common.savedpeak import SavedPeak, parameter_keys
from trainers.common.trainer import Trainer


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class Preempted(Exception):
    """Checkpointed after the time-limit warning: the rank ends with checkpoint.PREEMPT_EXIT."""


def _install_signal_handlers(flags: dict[str, bool]) -> None:
    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    def on_warning(signum: int, _frame: object) -> None:
        flags["preempt"] = True  # Slurm's --signal warning: checkpoint at the next step boundary

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_warning)


def _any_rank(ctx: Context, flag: bool) -> bool:
    """True when any rank has the flag set (all ranks must agree to checkpoint together)."""
    if ctx.world_size == 1:
        return flag
    device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _inject_fault(ctx: Context, spec: tuple[str, int, int], step: int) -> None:
    kind, rank, at = spec
    if rank == ctx.rank and step == at:
        ctx.say(f"injecting fault {ctx.cfg.fault}")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault {ctx.cfg.fault}: rank {rank} raises at step {step}")


def _fetch(ctx: Context, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the step's batch. index_select: 3x faster than x[idx] on CPU (which
    takes torch's general indexing path); .to() only where there is somewhere to move it."""
    x, y = ctx.data.x_train.index_select(0, idx), ctx.data.y_train.index_select(0, idx)
    if ctx.device.type == "cpu":
        return x, y
    return x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)


def _evaluate(ctx: Context, trainer: Trainer, epoch: int, epoch_start: float) -> None:
    result = trainer.evaluate(ctx.data.x_val, ctx.data.y_val)
    val_loss, val_acc = result if result is not None else (None, None)
    ctx.log.write("epoch", epoch=epoch, epoch_s=time.perf_counter() - epoch_start,
                  val_loss=val_loss, val_acc=val_acc)
    if val_loss is not None:
        ctx.say(f"epoch {epoch}: val_loss {val_loss:.4f} val_acc {val_acc:.3f}")


def train(ctx: Context, trainer: Trainer) -> dict[str, float]:
    cfg, batches = ctx.cfg, ctx.batches
    total = cfg.steps or cfg.epochs * batches.steps_per_epoch
    flags = {"preempt": False}
    _install_signal_handlers(flags)
    start_step = checkpoint.resume(ctx, trainer)
    if start_step:
        ctx.say(f"resumed from checkpoint: continuing at step {start_step}")
    pb, gb, ob = trainer.state_bytes()
    ctx.log.write("start", world_size=ctx.world_size, strategy=cfg.strategy, device=str(ctx.device),
                  attempt=ctx.attempt, param_bytes=pb, grad_bytes=gb, optim_bytes=ob, start_step=start_step,
                  total_steps=total, dp_rank=trainer.dp_rank, dp_size=trainer.dp_size)
    report_every = max(1, total // 10)
    # Fixed for the run, so asked once: the loop's own work is part of every step's gap.
    fault = cfg.fault_spec() if ctx.attempt == 1 else None  # faults fire on the first attempt only
    watch_signal = checkpoint.watch_signal()
    epoch_start = time.perf_counter()
    timed_s, timed_samples = 0.0, 0
    module = getattr(trainer, "module", None)
    saved = SavedPeak(parameter_keys(module.parameters()) if module is not None else set(),
                      module.parameters if module is not None else None)  # FSDP2 gathers others in forward
    for step in range(start_step, total):
        epoch = batches.epoch_of(step)
        x, y = _fetch(ctx, batches.shard(step, trainer.dp_rank, trainer.dp_size))
        if fault is not None:
            _inject_fault(ctx, fault, step)
        ctx.sync_device()
        t0, cpu0 = time.perf_counter(), time.process_time()
        if step == start_step:  # the first step also measures what autograd keeps (its hooks: a warm-up cost)
            with saved.watch():
                out = trainer.train_step(x, y)
        else:
            out = trainer.train_step(x, y)
        ctx.sync_device()
        step_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0  # CPU time of the whole process (all threads) in the step
        compute_s = out.compute_s
        if compute_s is None and out.comm_s is not None:
            compute_s = max(step_s - out.comm_s, 0.0)
        warm = step - start_step < cfg.warmup
        ctx.log.write("step", step=step, epoch=epoch, samples=out.samples, step_s=step_s,
                      compute_s=compute_s, comm_s=out.comm_s, comm_bytes=out.comm_bytes, loss=out.loss,
                      mem_bytes=peak_memory_bytes(ctx.device), cpu_s=cpu_s, warmup=warm,
                      **({"staleness": out.staleness} if out.staleness is not None else {}))
        if not warm:
            timed_s, timed_samples = timed_s + step_s, timed_samples + out.samples
        if step % report_every == 0 or step == total - 1:
            loss = f"{out.loss:.4f}" if out.loss is not None else "-"
            ctx.say(f"step {step + 1}/{total} loss {loss} step {step_s * 1000:.1f} ms")
        last_of_epoch = (step + 1) % batches.steps_per_epoch == 0 or step == total - 1
        if last_of_epoch:
            _evaluate(ctx, trainer, epoch, epoch_start)
            epoch_start = time.perf_counter()
        due = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step < total - 1
        if watch_signal and _any_rank(ctx, flags["preempt"]):
            checkpoint.save(ctx, trainer, step)
            raise Preempted(f"checkpointed at step {step} after the time-limit warning")
        if due:
            checkpoint.save(ctx, trainer, step)
    return {"steps": total - start_step, "timed_s": timed_s, "timed_samples": timed_samples,
            "saved_peak_bytes": saved.peak}
