"""A rank from start to exit: `main`, the entry every trainer calls.

A trainer file builds a `Trainer` (see `trainer.py`) and calls `main(build, strategy)`.
`main` parses the config (exit 2 on bad input), sets the rank up (`setup.py`: distributed init,
device, data, log), runs the shared loop (`loop.py`: timing, JSONL records, checkpoints, fault
injection, validation), and ends the process: the `end` record and a clean exit, or any error
turned into an `error` record plus a quick non-zero exit.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import torch
import torch.distributed as dist

from contract.config import parse_trainer_args
from contract.errors import ConfigError
from trainers.common import allocator, checkpoint, gpumemory
from trainers.common.context import Context
from trainers.common.loop import Preempted, peak_memory_bytes, train
from trainers.common.setup import log_for_errors, setup
from trainers.common.trainer import Trainer


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
    except Preempted as e:
        assert ctx is not None
        ctx.say(str(e))
        ctx.log.write("end", status="PREEMPTED", message=str(e))
        sys.stdout.flush()
        if dist.is_initialized():  # srun --kill-on-bad-exit kills the step at the first exit 3:
            dist.barrier()  # leave together, once rank 0 has marked the checkpoint COMPLETE
        os._exit(checkpoint.PREEMPT_EXIT)
    except ConfigError as e:  # a runtime discovery that the input is impossible (e.g. no GPU)
        print(f"error: {e}", file=sys.stderr)
        if (log := log_for_errors(ctx, cfg)) is not None:
            log.write("error", message=str(e), traceback="")
        sys.stderr.flush()
        os._exit(2)
    except BaseException as e:  # noqa: BLE001 - every failure must reach the log, then exit fast
        message = f"{type(e).__name__}: {e}"
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        # A rank past its GPU memory fraction says which fraction, and what it asked for and had.
        oom = gpumemory.oom_fields(e, ctx.device, ctx.memory_fraction) if ctx is not None else {}
        message = oom.pop("message", message)
        if (log := log_for_errors(ctx, cfg)) is not None:
            log.write("error", message=message, traceback=tb, **oom)
            log.write("end", status="FAILED", message=message)
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit: skip destroy_process_group and atexit, which can block on a dead peer.
        os._exit(e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1)
