"""Process set-up and the shared training loop.

A trainer file builds a `Trainer` (see `trainer.py`) and calls `main(build, strategy)`.
Everything else is here: config parsing (exit 2 on bad input), distributed init, the
device, data, warm-up flags, timing, JSONL records, checkpoints, fault injection,
validation, and turning any error into an `error` record plus a quick non-zero exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

import torch
import torch.distributed as dist

from contract import envnames, registry, rundir
from contract.config import ExperimentConfig, fp16_on_cpu, parse_trainer_args, validate
from contract.errors import ConfigError
from trainers.common import allocator, checkpoint, distenv, gpu
from trainers.common.context import Context
from trainers.common.data import GlobalBatches, load
from trainers.common.logwriter import RankLog, current_attempt
from trainers.common.trainer import Trainer

# A collective that waits longer than this on a dead peer fails instead of hanging.
COLLECTIVE_TIMEOUT_S = float(os.environ.get(envnames.COLLECTIVE_TIMEOUT, "120"))


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _pick_device(cfg: ExperimentConfig, env: distenv.DistEnv) -> torch.device:
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("invalid device 'cuda': CUDA is not available on this node")
    index = env.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _ranks_share_a_gpu(env: distenv.DistEnv, device: torch.device) -> bool:
    return device.type == "cuda" and gpu.ranks_on_my_gpu(env.local_world_size, torch.cuda.device_count()) > 1


def _init_process_group(env: distenv.DistEnv, device: torch.device, strategy: str) -> str:
    if registry.get(strategy).max_world == 1:
        return "none"  # strategies that run in one process; every other one gets a group, even of size 1
    # NCCL refuses two ranks on one device (the simulate backend's GPU partitioning): use gloo there.
    backend = "nccl" if device.type == "cuda" and not _ranks_share_a_gpu(env, device) else "gloo"
    _await_store(env, COLLECTIVE_TIMEOUT_S)
    dist.init_process_group(backend, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                            rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return backend


def _await_store(env: distenv.DistEnv, timeout_s: float) -> None:
    """On ranks other than 0: wait until rank 0's rendezvous store listens, trying every 10 ms.

    torch's TCPStore client backs off for up to seconds between its own tries, so a rank that
    finished importing before rank 0 lost 0.1-1.5 s here (measured on 2 cores). Past timeout_s
    it fails, as init_process_group would have after the same time, naming what it waited for."""
    if env.rank == 0:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((env.master_addr, env.master_port), timeout=1.0).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"rank 0's rendezvous store at {env.master_addr}:{env.master_port} did not "
                                   f"answer within {timeout_s:g} s ({e})") from e
            time.sleep(0.01)


def _attempt() -> int:
    return current_attempt()  # one rule for the records' attempt and this (logwriter.py)


def _write_runtime_meta(ctx: Context, backend: str, heap: allocator.AllocatorState | None) -> None:
    """Rank 0 adds what only a running rank knows to config.json (the backend wrote the rest)."""
    hosts = [None] * ctx.world_size
    me = {"node": ctx.env.node, "host": os.uname().nodename,
          "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
          "threads": torch.get_num_threads(), "affinity": sorted(os.sched_getaffinity(0)),
          "allocator": heap.describe() if heap is not None else None}
    if dist.is_initialized():
        dist.all_gather_object(hosts, me)
    else:
        hosts = [me]
    if ctx.rank != 0:
        return
    rundir.update_config(ctx.run_dir, {
        "torch": torch.__version__, "python": sys.version.split()[0], "dist_backend": backend, "ranks": hosts,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "notes": ctx.notes, "env_source": ctx.env.source},
        cfg=ctx.cfg, keep_config=True)


def _run_dir(cfg: ExperimentConfig) -> str:
    return cfg.run_dir or os.environ.get("RUN_DIR") or os.path.join("logs", "adhoc", cfg.experiment_id())


def _log_for_errors(ctx: Context | None, cfg: ExperimentConfig) -> RankLog | None:
    """The rank's log, also when set-up itself failed (e.g. the rendezvous port was taken)."""
    if ctx is not None:
        return ctx.log
    try:
        env = distenv.from_environ()
        return RankLog(_run_dir(cfg), env.rank, env.node)
    except Exception:  # noqa: BLE001 - no log to be had: stderr (the node's output) still has it
        return None


def _layout_given(argv: list[str]) -> bool:
    """True when the command line sets --nodes or --procs-per-node (abbreviated or with '=', as
    the trainer's own parser reads them)."""
    p = argparse.ArgumentParser(add_help=False)
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in ("nodes", "procs_per_node"):
            p.add_argument(f.metadata["flag"], dest=f.name, default=None)
    given, _ = p.parse_known_args(argv)
    return given.nodes is not None or given.procs_per_node is not None


def _launcher_layout(cfg: ExperimentConfig, env: distenv.DistEnv, argv: list[str]) -> ExperimentConfig:
    """The config with the launcher's layout where the command line gives none (torchrun sets
    WORLD_SIZE and LOCAL_WORLD_SIZE, srun SLURM_NTASKS and SLURM_NTASKS_PER_NODE), validated
    again; where it gives one, the two must agree."""
    if env.world_size == cfg.world_size:
        return cfg
    if _layout_given(argv):
        raise ConfigError(f"invalid layout: the launcher started {env.world_size} ranks but the command line "
                          f"asks for {cfg.nodes} nodes x {cfg.procs_per_node} procs = {cfg.world_size} (leave "
                          "--nodes and --procs-per-node out to take the launcher's)")
    per_node = env.local_world_size
    if per_node < 1 or env.world_size % per_node:
        raise ConfigError(f"invalid layout: the launcher started {env.world_size} ranks, {per_node} per node: "
                          "give --nodes and --procs-per-node")
    adopted = dataclasses.replace(cfg, nodes=env.world_size // per_node, procs_per_node=per_node)
    validate(adopted)
    return adopted


def setup(cfg: ExperimentConfig, argv: list[str] | None = None,
          heap: allocator.AllocatorState | None = None) -> Context:
    """The rank's context. `argv`: the trainer's command line (whether it gives a layout);
    `heap`: the allocator state `main` set, for config.json."""
    env = distenv.from_environ()
    cfg = _launcher_layout(cfg, env, sys.argv[1:] if argv is None else argv)
    run_dir = _run_dir(cfg)
    device = _pick_device(cfg, env)
    if cfg.precision == "fp16" and device.type == "cpu":  # device auto found no GPU (validation: cpu)
        raise ConfigError(fp16_on_cpu("auto (no GPU on this node)"))
    if envnames.THREADS in os.environ:
        torch.set_num_threads(int(os.environ[envnames.THREADS]))
    log = RankLog(run_dir, env.rank, env.node)
    torch.manual_seed(cfg.seed)
    data = load(cfg.dataset, cfg.seed, cfg.data_dir, tokens=cfg.model == "transformer", data_size=cfg.data_size)
    ctx = Context(cfg, env, device, data, GlobalBatches(len(data.y_train), cfg.global_batch, cfg.seed),
                  log, run_dir, _attempt())
    if device.type == "cuda" and _ranks_share_a_gpu(env, device):
        ctx.notes.append("ranks share a GPU: collectives use gloo (NCCL refuses two ranks on one device)")
    if device.type == "cuda":
        sharing = gpu.ranks_on_my_gpu(env.local_world_size, torch.cuda.device_count())
        ctx.memory_fraction, note = gpu.apply_memory_fraction(cfg.memory_fraction, device, sharing)
        ctx.notes.append(note)
    backend = _init_process_group(env, device, cfg.strategy)
    _write_runtime_meta(ctx, backend, heap)
    return ctx


class _Preempted(Exception):
    pass


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
    for step in range(start_step, total):
        epoch = batches.epoch_of(step)
        x, y = _fetch(ctx, batches.shard(step, trainer.dp_rank, trainer.dp_size))
        if fault is not None:
            _inject_fault(ctx, fault, step)
        ctx.sync_device()
        t0, cpu0 = time.perf_counter(), time.process_time()
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
                      mem_bytes=peak_memory_bytes(ctx.device), cpu_s=cpu_s, warmup=warm)
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
            raise _Preempted(f"checkpointed at step {step} after the time-limit warning")
        if due:
            checkpoint.save(ctx, trainer, step)
    return {"steps": total - start_step, "timed_s": timed_s, "timed_samples": timed_samples}


def _leave_completed(ctx: Context) -> NoReturn:
    """End a rank whose run completed (its `end` record is written): a barrier, destroy the
    process group, then os._exit(0), so that nothing of torch's C++ side runs during
    interpreter finalization.

    Why: the process group's C++ threads (gloo's pt_gloo_runloop workers, which also run the
    Python callbacks chained on collective futures, e.g. DDP's comm hook) hold tensors and
    callables owned by Python and release them after the waiting thread has been woken.
    Releasing one takes the GIL; a thread that asks for the GIL once finalization has begun is
    ended by CPython with pthread_exit, whose unwinding through a noexcept C++ destructor calls
    std::terminate ("terminate called without an active exception", SIGABRT). The process group
    also outlives destroy_process_group (its pt_gloo_runloop and gloo_tcp_loop threads still run
    after it), so its destructor and thread joins ran in finalization. srun --kill-on-bad-exit
    then ended the step: a finished run reported FAILED.

    Order: a barrier, so every rank is past its last collective (a peer that left early would
    fail it); destroy the process group; flush (rank logs write every record at once);
    os._exit(0): the idle gloo threads end with the process, no destructor and no finalizer
    runs, so nothing needs collecting first (a gc.collect() here cost 0.15-0.3 s a rank).
    A failure after the `end` record changes nothing the run measured: it is reported on
    stderr and the exit stays 0 (a peer that died fails the step through srun anyway)."""
    try:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - the run is complete and logged; say so, still exit 0
        print(f"[rank {ctx.rank} {ctx.env.node}] warning: process-group teardown after a completed run: "
              f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(build: Callable[[Context], Trainer], strategy: str, argv: list[str] | None = None) -> int:
    """Run one rank. Returns only for bad input (2); every started run ends the process itself
    (os._exit: 0 completed, 3 preempted, 2 or 1 failed), never through interpreter finalization."""
    heap = allocator.apply()  # first: nothing this rank allocates may depend on what ran before
    try:
        cfg = parse_trainer_args(argv, strategy)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ctx: Context | None = None
    try:
        ctx = setup(cfg, argv, heap=heap)
        trainer = build(ctx)
        for note in trainer.notes:
            ctx.say(f"note: {note}")
        totals = train(ctx, trainer)
        pb, gb, ob = trainer.state_bytes()
        if cfg.save_params:
            params = trainer.full_parameters()
            if ctx.rank == 0 and params is not None:
                torch.save(params, os.path.join(ctx.run_dir, "params.pt"))
        ctx.log.write("end", status="COMPLETED", param_bytes=pb, grad_bytes=gb, optim_bytes=ob,
                      peak_mem_bytes=peak_memory_bytes(ctx.device), **totals)
        _leave_completed(ctx)
    except _Preempted as e:
        assert ctx is not None
        ctx.say(str(e))
        ctx.log.write("end", status="PREEMPTED", message=str(e))
        sys.stdout.flush()
        if dist.is_initialized():  # srun --kill-on-bad-exit kills the step at the first exit 3:
            dist.barrier()  # leave together, once rank 0 has marked the checkpoint COMPLETE
        os._exit(checkpoint.PREEMPT_EXIT)
    except ConfigError as e:  # a runtime discovery that the input is impossible (e.g. no GPU)
        print(f"error: {e}", file=sys.stderr)
        if (log := _log_for_errors(ctx, cfg)) is not None:
            log.write("error", message=str(e), traceback="")
        sys.stderr.flush()
        os._exit(2)
    except BaseException as e:  # noqa: BLE001 - every failure must reach the log, then exit fast
        message = f"{type(e).__name__}: {e}"
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        # A rank past its GPU memory fraction says which fraction, and what it asked for and had.
        oom = gpu.oom_fields(e, ctx.device, ctx.memory_fraction) if ctx is not None else {}
        message = oom.pop("message", message)
        if (log := _log_for_errors(ctx, cfg)) is not None:
            log.write("error", message=message, traceback=tb, **oom)
            log.write("end", status="FAILED", message=message)
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit: skip destroy_process_group and atexit, which can block on a dead peer.
        os._exit(e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1)
