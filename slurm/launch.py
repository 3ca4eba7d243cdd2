"""Inside a Slurm allocation: the head node's address, the rendezvous port, the srun command line,
and the check of a job's trainer settings before any rank starts.

Used by bin/launch (sbatch jobs) and by the submitit task (the address only). Torch-free.

    python -m slurm.launch check STRATEGY [trainer flags...]   # exit 2 + one line on a bad value
"""

from __future__ import annotations

import os
import subprocess
import sys

from contract import envnames
from contract.config import STRATEGIES, parse_trainer_args
from contract.errors import ConfigError
from contract.paths import ROOT
from trainers.common import distenv

# Rendezvous variables of other launchers would override Slurm's (distenv reads them first).
FOREIGN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", envnames.NODE, envnames.ATTEMPT,
           envnames.EMULATE_LINK)
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
             envnames.THREADS: cpus, "OMP_NUM_THREADS": cpus, "PYTHONUNBUFFERED": "1"}
    # srun in Slurm >= 22.05 no longer inherits --cpus-per-task from the job: pass it on.
    argv = ["srun", "--kill-on-bad-exit=1", f"--nodes={nnodes}", f"--ntasks={ntasks}",
            f"--ntasks-per-node={max(ntasks // nnodes, 1)}", f"--cpus-per-task={cpus}",
            "sh", "-c", PER_NODE_OUTPUT, run_dir,
            os.path.join(ROOT, ".venv", "bin", "python"), "-u", "-m", f"trainers.{strategy}",
            *flags, "--run-dir", run_dir]
    return argv, extra


def check(strategy: str, flags: list[str]) -> str | None:
    """The problem with a job's trainer settings, as one line, or None. The sbatch script runs
    this once, before srun: the same parser and rules as every rank's (parse_trainer_args), so
    a bad value stops the job with one line naming it instead of one failure per rank."""
    if strategy not in STRATEGIES:
        return f"unknown strategy {strategy!r}: choose from {', '.join(STRATEGIES)}"
    try:
        parse_trainer_args(flags, strategy)
    except ConfigError as e:
        return str(e).replace("\n", " ")
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "check":
        print("usage: python -m slurm.launch check STRATEGY [trainer flags...]", file=sys.stderr)
        return 2
    flags = argv[2:]
    problem = check(argv[1], flags[1:] if flags[:1] == ["--"] else flags)
    if problem is None:
        return 0
    print(f"torchswitch: error: {problem}; nothing was started", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
