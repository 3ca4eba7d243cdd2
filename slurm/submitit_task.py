"""What one submitit task runs: one trainer rank, rendezvous from TorchDistributedEnvironment.

Pickled by reference, so it must stay importable as `slurm.submitit_task.run_rank`. Each task
(one per rank: srun on Slurm, a local process under LocalExecutor) exports the torch.distributed
variables, runs the trainer as a child process with its output appended to the node's file, and
the task of rank 0 records the outcome in status.json (slurm.track.mark). Torch-free (the trainer imports torch).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from contract import envnames
from contract.paths import ROOT


@dataclass(frozen=True)
class RankSpec:
    run_dir: str
    strategy: str
    argv: tuple[str, ...]  # trainer flags (without --run-dir)
    procs_per_node: int
    threads: int = 1


def _resolvable(host: str) -> bool:
    try:
        socket.gethostbyname(host)
        return True
    except OSError:
        return False


def run_rank(spec: RankSpec) -> int:
    from submitit.helpers import TorchDistributedEnvironment

    from slurm import track
    from trainers.common.distenv import port_for_job

    # submitit draws the port from 20000-60000, which overlaps the ephemeral ports other jobs'
    # connections use on a shared host: take ours, derived from the job id as the sbatch path does.
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or ""
    os.environ.setdefault("MASTER_PORT", str(port_for_job(job_id if job_id.isdigit() else os.getppid())))
    env_d = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    env = dict(os.environ)
    on_slurm = env.get("SUBMITIT_EXECUTOR") == "slurm"
    if on_slurm:
        node = env.get("SLURMD_NODENAME") or socket.gethostname()
        if not _resolvable(env_d.master_addr):  # Slurm node names need not be host names (loopback cluster)
            from slurm.launch import head_address

            env["MASTER_ADDR"] = head_address(env["SLURM_JOB_NODELIST"])
    else:  # LocalExecutor: every task on this machine; name the simulated nodes as simulate/ does
        node = f"node{env_d.rank // spec.procs_per_node}"
        env[envnames.NODE] = node
    env.update({"PYTHONUNBUFFERED": "1", envnames.THREADS: str(spec.threads),
                "OMP_NUM_THREADS": str(spec.threads)})
    for var in (envnames.ATTEMPT, envnames.EMULATE_LINK):
        env.pop(var, None)
    if env_d.rank == 0:
        track.mark(spec.run_dir, "RUNNING", env=env)
    argv = [sys.executable, "-u", "-m", f"trainers.{spec.strategy}", *spec.argv, "--run-dir", spec.run_dir]
    with open(os.path.join(spec.run_dir, f"node-{node}.out"), "a") as out:
        code = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if env_d.rank == 0:
        track.mark(spec.run_dir, "COMPLETED" if code == 0 else "FAILED", exit_code=code, env=env)
    if code != 0:
        raise RuntimeError(f"rank {env_d.rank} of {spec.strategy}: trainer exited with status {code} "
                           f"(see {spec.run_dir}/node-{node}.out)")
    return code
