"""Inside a Slurm allocation: the head node's address, the rendezvous port, the srun command line.

Used by bin/launch (sbatch jobs) and by the submitit task (the address only). Torch-free.
"""

from __future__ import annotations

import os
import subprocess

from trainers.common import distenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Rendezvous variables of other launchers would override Slurm's (distenv reads them first).
FOREIGN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TS_NODE", "TS_ATTEMPT", "TS_EMULATE_LINK")
# Per task: append everything to this node's file, then become the trainer (no extra process).
PER_NODE_OUTPUT = 'exec >>"$0/node-${SLURMD_NODENAME:-$(hostname -s)}.out" 2>&1; exec "$@"'


def head_address(nodelist: str) -> str:
    """The address rank 0's node listens on: its NodeAddr (node names need not resolve), resolved."""
    head = distenv.slurm_head_node(nodelist)
    try:
        out = subprocess.run(["scontrol", "show", "node", head, "-o"], capture_output=True, text=True,
                             timeout=30).stdout
        addr = next((w.split("=", 1)[1] for w in out.split() if w.startswith("NodeAddr=")), head)
    except (OSError, subprocess.SubprocessError):
        addr = head
    return distenv.resolve(addr)


def command(run_dir: str, strategy: str, flags: list[str], env: dict[str, str]) -> tuple[list[str], dict]:
    nnodes, ntasks = int(env["SLURM_NNODES"]), int(env["SLURM_NTASKS"])
    cpus = env.get("SLURM_CPUS_PER_TASK", "1")
    extra = {"MASTER_ADDR": head_address(env["SLURM_JOB_NODELIST"]),
             "MASTER_PORT": str(distenv.port_for_job(env["SLURM_JOB_ID"])),
             "TS_THREADS": cpus, "OMP_NUM_THREADS": cpus, "PYTHONUNBUFFERED": "1",
             "PYTHONPATH": ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")}
    # srun in Slurm >= 22.05 no longer inherits --cpus-per-task from the job: pass it on.
    argv = ["srun", "--kill-on-bad-exit=1", f"--nodes={nnodes}", f"--ntasks={ntasks}",
            f"--ntasks-per-node={max(ntasks // nnodes, 1)}", f"--cpus-per-task={cpus}",
            "sh", "-c", PER_NODE_OUTPUT, run_dir,
            os.path.join(ROOT, ".venv", "bin", "python"), "-u", "-m", f"trainers.{strategy}",
            *flags, "--run-dir", run_dir]
    return argv, extra
