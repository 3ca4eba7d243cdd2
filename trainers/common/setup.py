"""A rank's set-up: its layout (the launcher's where the command line gives none), device,
threads, data, log, GPU memory share, process group (after rank 0's rendezvous store answers)
and what only a running rank knows, added to config.json. `setup` returns the rank's Context.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import socket
import sys
import time

import torch
import torch.distributed as dist

from contract import envnames, registry, rundir
from contract.config import ExperimentConfig, fp16_on_cpu, validate
from contract.errors import ConfigError
from trainers.common import allocator, distenv, gpumemory
from trainers.common.context import Context
from trainers.common.data import GlobalBatches, load
from trainers.common.logwriter import RankLog


def collective_timeout_s() -> float:
    """A collective that waits longer than this on a dead peer fails instead of hanging. Read when a
    rank starts, not at import: a warm-started rank imported this module in the server."""
    return float(os.environ.get(envnames.COLLECTIVE_TIMEOUT, "120"))


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
    return device.type == "cuda" and gpumemory.ranks_on_my_gpu(env.local_world_size, torch.cuda.device_count()) > 1


def _init_process_group(env: distenv.DistEnv, device: torch.device, strategy: str) -> str:
    if registry.get(strategy).max_world == 1:
        return "none"  # strategies that run in one process; every other one gets a group, even of size 1
    # NCCL refuses two ranks on one device (the simulate backend's GPU partitioning): use gloo there.
    backend = "nccl" if device.type == "cuda" and not _ranks_share_a_gpu(env, device) else "gloo"
    timeout_s = collective_timeout_s()
    _await_store(env, timeout_s)
    dist.init_process_group(backend, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                            rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
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


def _write_runtime_meta(ctx: Context, backend: str, heap: allocator.AllocatorState | None) -> None:
    """Rank 0 adds what only a running rank knows to config.json (the backend wrote the rest)."""
    hosts = [None] * ctx.world_size
    me = {"node": ctx.env.node, "host": os.uname().nodename,
          "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
          "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
          "affinity": sorted(os.sched_getaffinity(0)), "warm": os.environ.get(envnames.WARM_RANK) == "1",
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


def log_for_errors(ctx: Context | None, cfg: ExperimentConfig) -> RankLog | None:
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
    # one spelling once the layout is known (a pipeline's micro-batch: its chunks, over its replicas' shares)
    cfg = _launcher_layout(cfg, env, sys.argv[1:] if argv is None else argv).normalised()
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
                  log, run_dir, log.attempt)
    if device.type == "cuda" and _ranks_share_a_gpu(env, device):
        ctx.notes.append("ranks share a GPU: collectives use gloo (NCCL refuses two ranks on one device)")
    if device.type == "cuda":
        sharing = gpumemory.ranks_on_my_gpu(env.local_world_size, torch.cuda.device_count())
        ctx.memory_fraction, note = gpumemory.apply_memory_fraction(cfg.memory_fraction, device, sharing)
        ctx.notes.append(note)
    backend = _init_process_group(env, device, cfg.strategy)
    _write_runtime_meta(ctx, backend, heap)
    return ctx
