"""Run one experiment's NODES x PROCS ranks as local processes: simulated nodes.

Each rank gets its share of the CPU cores (affinity + thread count), a simulated node name
(`node0`, `node1`, ...), and torchrun-style rendezvous variables. With GPUs, each rank sees
one GPU (CUDA_VISIBLE_DEVICES) and is told how many ranks share it (TS_RANKS_PER_GPU); the
rank caps its memory share (contract/gpushare.py). The plans (CPU, GPU) and the affinity
each rank really got (read back from /proc/<pid>/status) go to status.json and config.json;
an oversubscribed layout is flagged in every node's output. Each simulated node's
output goes to `node-<name>.out`. A rank that fails takes the job down quickly: the others
get SIGTERM after a short grace period, then SIGKILL. The result lands in `status.json`.

Ranks run in their own sessions, so a terminal's Ctrl-C reaches only the launcher: on any
exception there (the sweep's SIGINT/SIGTERM) it stops every rank (SIGTERM, SIGKILL after
CANCEL_GRACE_S), writes status.json CANCELLED with this attempt's number, and re-raises.

Warm start (the default; `warm=False` or TS_WARM=0: cold): ranks on the CPU are forked by this
process's warm-start server (simulate/warmstart.py), which has imported torch and the trainers
once, instead of each starting a fresh interpreter; they are this process's children all the
same, in their own sessions, with the same environment, cores and output. Where the server
cannot serve (or the ranks use GPUs) the ranks start cold and the node's output says why.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from contract import envnames, rundir
from contract import gpushare as gpu
from contract.config import ExperimentConfig
from contract.paths import ROOT
from simulate import warmstart
from sweeper.grid import gpu_count

GRACE_S = 5.0  # after one rank fails, how long the others get to notice on their own
CANCEL_GRACE_S = 3.0  # on an interrupt of the sweep: SIGTERM, then SIGKILL after this long
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STEP_RE = re.compile(r"\] step (\d+)/(\d+)")
Proc = subprocess.Popen | warmstart.WarmProcess  # a rank: started cold, or forked by the warm-start server


@dataclass
class CpuPlan:
    cores: list[list[int]]  # per rank: the cores it may run on
    threads: int  # torch threads per rank
    oversubscribed: bool
    total_cores: int

    def describe(self) -> dict:
        return {"cores_per_rank": self.cores, "threads_per_rank": self.threads,
                "oversubscribed": self.oversubscribed, "machine_cores": self.total_cores}


def plan_cpus(world: int, available: list[int] | None = None) -> CpuPlan:
    """Split the cores this process may use into `world` even, disjoint sets; when there are
    fewer cores than ranks, ranks share cores round-robin and the plan says so."""
    cores = sorted(available if available is not None else os.sched_getaffinity(0))
    if world <= len(cores):
        per = len(cores) // world
        return CpuPlan([cores[r * per:(r + 1) * per] for r in range(world)], per, False, len(cores))
    return CpuPlan([[cores[r % len(cores)]] for r in range(world)], 1, True, len(cores))


@dataclass
class GpuPlan:
    visible: list[str]  # the GPU ids this launcher may use (CUDA_VISIBLE_DEVICES or all)
    per_rank: list[str]  # the GPU id each rank sees as its only device
    ranks_per_gpu: dict[str, int]

    def describe(self) -> dict:
        return {"gpus": self.visible, "gpu_per_rank": self.per_rank, "ranks_per_gpu": self.ranks_per_gpu}


def plan_gpus(world: int, cfg_device: str) -> GpuPlan | None:
    """Spread ranks over the GPUs here (contiguous blocks); None without GPUs or on --device cpu."""
    if cfg_device == "cpu":
        return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d for d in env.split(",") if d.strip()] if env is not None else [str(i) for i in range(gpu_count())]
    if not visible:
        return None
    per_rank = [visible[i] for i in gpu.assign_gpus(world, len(visible))]
    return GpuPlan(visible, per_rank, {d: per_rank.count(d) for d in visible if d in per_rank})


def observed_affinity(pid: int) -> str | None:
    """Cpus_allowed_list of a running process, as the kernel reports it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_names(nodes: int) -> list[str]:
    return [f"node{i}" for i in range(nodes)]


class _ExitWatch:
    """Wakes the watch loop the moment a rank exits, not at its next polling tick: each rank's
    pidfd turns readable when it ends. Where pidfds are missing (not Linux >= 5.3) it sleeps."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, int] = {}

    def add(self, proc: Proc) -> None:
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return
        self._fds[proc.pid] = fd
        self._poll.register(fd, select.POLLIN)

    def wait(self, procs: list[Proc], timeout_s: float) -> None:
        """Return when a still-watched rank exits, or after timeout_s."""
        for p in procs:
            if p.returncode is not None and p.pid in self._fds:  # exited: stays readable, stop watching
                fd = self._fds.pop(p.pid)
                self._poll.unregister(fd)
                os.close(fd)
        self._poll.poll(timeout_s * 1000)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass
class LaunchPlan:
    """One attempt of an experiment, fixed before its first rank starts: what every rank is started with."""

    cfg: ExperimentConfig
    run_dir: str
    time_limit_s: float  # 0: none
    progress: Callable[[int, int], None] | None  # rank 0's (step, total), as its output says them
    extra_env: dict | None
    cpus: CpuPlan
    gpus: GpuPlan | None
    attempt: int
    port: int  # rank 0's rendezvous port
    names: list[str]  # the simulated nodes
    outs: dict[str, TextIO]  # node name -> its node-<name>.out
    locks: dict[str, threading.Lock]  # node name -> the lock its ranks' output lines take
    argv: list[str]  # the trainer's command line
    started: float  # time.time() at the attempt's start
    warm: bool  # asked for a warm start (the ranks start cold where the server cannot serve)
    started_warm: bool = False  # set by _spawn: whether the ranks were forked by the warm-start server


@dataclass
class RankProcess:
    """A started rank: its process, the affinity the kernel reports for it, the thread copying its output."""

    proc: Proc
    affinity: str | None = None
    pump: threading.Thread | None = None


def _procs(ranks: list[RankProcess]) -> list[Proc]:
    return [r.proc for r in ranks]


def _pump(stream, out_file, lock: threading.Lock, rank: int, progress: Callable[[int, int], None] | None):
    for line in iter(stream.readline, ""):
        with lock:
            out_file.write(line if line.startswith("[rank") else f"[rank {rank}] {line}")
            out_file.flush()
        if progress is not None and rank == 0:
            m = STEP_RE.search(line)
            if m:
                progress(int(m.group(1)), int(m.group(2)))
    stream.close()


def run_experiment(cfg: ExperimentConfig, run_dir: str, time_limit_s: float = 0,
                   progress: Callable[[int, int], None] | None = None, extra_env: dict | None = None,
                   warm: bool | None = None) -> dict:
    """Run all ranks of `cfg` here; return (and write) the status dict. `warm`: fork the ranks from
    the warm-start server (default: unless TS_WARM=0)."""
    os.makedirs(run_dir, exist_ok=True)
    world, ppn = cfg.world_size, cfg.procs_per_node
    plan = plan_cpus(world)
    gplan = plan_gpus(world, cfg.device)
    previous = rundir.read_status(run_dir)
    attempt = int(previous.get("attempts", 0)) + 1
    port = free_port()
    names = node_names(cfg.nodes)
    outs = {n: open(os.path.join(run_dir, f"node-{n}.out"), "a", encoding="utf-8") for n in names}
    locks = {n: threading.Lock() for n in names}
    argv = [*cfg.to_argv(), "--run-dir", run_dir]
    meta = {"cpu_plan": plan.describe(), "gpu_plan": gplan.describe() if gplan else None, "backend": "simulate"}
    rundir.update_config(run_dir, meta, cfg, keep_config=True)  # before the ranks start; rank 0 adds its part
    for n in names:  # flag the layout where a reader of the node's output will see it
        ranks = [r for r in range(world) if names[r // ppn] == n]
        line = f"[launcher {n}] ranks {ranks} on cores {[plan.cores[r] for r in ranks]}, {plan.threads} thread(s) each"
        if gplan:
            line += f", GPU {[gplan.per_rank[r] for r in ranks]}"
        if plan.oversubscribed:
            line += f"; OVERSUBSCRIBED: {world} ranks on {plan.total_cores} cores (timings include CPU contention)"
        outs[n].write(line + "\n")
        outs[n].flush()
    started = time.time()
    launch = LaunchPlan(cfg=cfg, run_dir=run_dir, time_limit_s=time_limit_s, progress=progress, extra_env=extra_env,
                        cpus=plan, gpus=gplan, attempt=attempt, port=port, names=names, outs=outs, locks=locks,
                        argv=argv, started=started, warm=warmstart.enabled() if warm is None else warm)
    rank_procs: list[RankProcess] = []
    state, interrupt = None, None
    # This attempt is taken before any rank can write: an interrupt anywhere from here on leaves
    # status.json counting it, so a re-run never writes a second run under the same attempt number.
    rundir.write_status(run_dir, "RUNNING", fresh=True, attempts=attempt, started=started, backend="simulate")
    try:
        state = _spawn_and_watch(launch, rank_procs)
    except BaseException as e:  # noqa: BLE001 - Ctrl-C / SIGTERM of the sweep: stop every rank, record, re-raise
        interrupt, state = e, "CANCELLED"
        _stop(_procs(rank_procs), CANCEL_GRACE_S)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the ranks are gone: record before any interrupt
    try:
        status = _finish(launch, rank_procs, state, interrupt)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending Ctrl-C is raised here
    if interrupt is not None:
        raise interrupt
    return status


def _finish(launch: LaunchPlan, ranks: list[RankProcess], state: str | None,
            interrupt: BaseException | None) -> dict:
    """Wait for every started rank and its output, then write (and return) the attempt's status."""
    run_dir, plan, gplan, attempt, started = launch.run_dir, launch.cpus, launch.gpus, launch.attempt, launch.started
    procs = _procs(ranks)
    affinity = [r.affinity for r in ranks]
    for p in procs:
        p.wait()
    for r in ranks:
        if r.pump is not None:
            r.pump.join(timeout=5)
    for f in launch.outs.values():
        f.close()
    codes = [p.returncode for p in procs]
    if state is None:
        if all(c == 0 for c in codes):
            state = "COMPLETED"
        elif any(c == 3 for c in codes) and all(c in (0, 3) for c in codes):
            state = "PREEMPTED"
        else:
            state = "FAILED"
    failed = {str(r): c for r, c in enumerate(codes) if c != 0}
    status = {"exit_code": next((c for c in codes if c != 0), 0), "attempts": attempt,
              "failed_ranks": failed, "first_failed_rank": _first_failure(procs, codes),
              "started": started, "ended": time.time(), "wall_s": time.time() - started,
              "backend": "simulate", "warm_start": launch.started_warm,
              "cpu_plan": {**plan.describe(), "affinity_observed": affinity},
              "gpu_plan": gplan.describe() if gplan else None}
    if interrupt is not None:
        status["reason"] = str(interrupt) or type(interrupt).__name__
        status["first_failed_rank"] = None
    return rundir.write_status(run_dir, state, fresh=True, **status)


def _spawn_and_watch(launch: LaunchPlan, ranks: list[RankProcess]) -> str | None:
    """Start the ranks (appending to `ranks`) and watch them; a state or None."""
    exits = _ExitWatch()
    try:
        try:
            _spawn(launch, ranks, exits)
        except warmstart.WarmStartError as e:  # the server failed after some ranks started: end them
            _say(launch, f"warm start failed after {len(ranks)} rank(s) started: {e}")
            warmstart.shutdown()
            _stop(_procs(ranks), CANCEL_GRACE_S)
            return "FAILED"
        return _watch(_procs(ranks), launch.started, launch.time_limit_s, exits)
    finally:
        exits.close()


def _say(launch: LaunchPlan, message: str) -> None:
    """A launcher line in every simulated node's output."""
    for n in launch.names:
        with launch.locks[n]:
            launch.outs[n].write(f"[launcher {n}] {message}\n")
            launch.outs[n].flush()


def _warm_server(launch: LaunchPlan) -> warmstart.WarmServer | None:
    """The server that forks this experiment's ranks, or None: a cold start, the reason in the outputs."""
    if not launch.warm:
        return None
    if launch.gpus is not None:
        why = "ranks on GPUs start cold (warm start with CUDA is not verified)"
    else:
        try:
            server = warmstart.server({**os.environ, **(launch.extra_env or {})})
            server.wait_ready()
            return server
        except warmstart.WarmStartError as e:
            warmstart.shutdown()
            why = str(e)
    _say(launch, f"warm start unavailable: {why}; cold start")
    return None


def _spawn(launch: LaunchPlan, ranks: list[RankProcess], exits: _ExitWatch) -> None:
    """Start every rank, appending each to `ranks` as soon as it exists (so that it is always stopped)."""
    cfg, extra_env, plan, gplan, attempt, port = (launch.cfg, launch.extra_env, launch.cpus, launch.gpus,
                                                  launch.attempt, launch.port)
    world, ppn = cfg.world_size, cfg.procs_per_node
    server = _warm_server(launch)
    launch.started_warm = server is not None
    _say(launch, f"start: {'warm (forked by the warm-start server)' if server else 'cold'}")
    for rank in range(world):
        node = launch.names[rank // ppn]
        env = {**os.environ, **(extra_env or {}),
               "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % ppn),
               "LOCAL_WORLD_SIZE": str(ppn), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               envnames.NODE: node, envnames.ATTEMPT: str(attempt), envnames.EMULATE_LINK: "1",
               envnames.THREADS: str(plan.threads), "OMP_NUM_THREADS": str(plan.threads),
               "PYTHONUNBUFFERED": "1",
               envnames.CPU_OVERSUBSCRIBED: "1" if plan.oversubscribed else "0"}
        if gplan:
            env["CUDA_VISIBLE_DEVICES"] = gplan.per_rank[rank]
            env[envnames.RANKS_PER_GPU] = str(gplan.ranks_per_gpu[gplan.per_rank[rank]])
        env.pop(envnames.WARM_RANK, None)  # only the warm-start server sets it, in the rank it forks
        cores = plan.cores[rank]
        # An interrupt between fork and `ranks.append` would leave a rank nobody stops: hold it until then.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc: Proc
            if server is not None:
                try:
                    proc = server.start_rank(cfg.strategy, launch.argv, env, cores)
                except warmstart.WarmStartError as e:
                    if ranks:
                        raise
                    _say(launch, f"warm start unavailable: {e}; cold start")
                    warmstart.shutdown()
                    server, launch.started_warm = None, False
            if server is None:
                proc = subprocess.Popen([sys.executable, "-m", f"trainers.{cfg.strategy}", *launch.argv], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=lambda c=cores: _child_setup(c), start_new_session=True)
            rank_proc = RankProcess(proc)
            ranks.append(rank_proc)
            exits.add(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        rank_proc.affinity = observed_affinity(proc.pid)  # Popen returns after exec, a warm rank once set
        pump = threading.Thread(target=_pump, args=(proc.stdout, launch.outs[node], launch.locks[node], rank,
                                                    launch.progress), daemon=True)
        pump.start()
        rank_proc.pump = pump  # only a started thread: _finish joins it


def _watch(procs: list[Proc], started: float, time_limit_s: float, exits: _ExitWatch) -> str | None:
    """Wait for every rank; stop the rest GRACE_S after one fails, or all at the time limit."""
    state, failed_at, deadline = None, None, started + time_limit_s if time_limit_s else None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            break
        now = time.time()
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = now
        if failed_at is not None and now - failed_at > GRACE_S:
            _stop(procs)  # the peers of a failed rank would otherwise wait on it until a timeout
            break
        if deadline is not None and now > deadline:
            state = "TIMEOUT"
            _stop(procs)
            break
        exits.wait(procs, 0.05)
    return state


def _child_setup(cores: list[int]) -> None:
    os.sched_setaffinity(0, cores)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # the mask is inherited across exec


def _first_failure(procs: list[Proc], codes: list[int]) -> int | None:
    bad = [r for r, c in enumerate(codes) if c not in (0, -signal.SIGTERM, -signal.SIGKILL, 143)]
    return bad[0] if bad else next((r for r, c in enumerate(codes) if c != 0), None)


def _stop(procs: list[Proc], grace_s: float = GRACE_S) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0)):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        end = time.time() + wait_s
        while time.time() < end and any(p.poll() is None for p in procs):
            time.sleep(0.05)
