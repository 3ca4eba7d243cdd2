"""Where this rank sits: rank, world size, node name, rendezvous address.

Read from the environment in this order: torchrun/simulate variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), then Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_NODELIST),
else a lone process. Torch-free so the launchers can use it too.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

from contract import envnames

# Rendezvous ports derived from the Slurm job id fall in [PORT_BASE, PORT_BASE + PORT_SPAN):
# below Linux's ephemeral range (32768-60999 by default), from which the gloo connections of
# other jobs on the same host take their local ports: a port in there can be taken at random.
PORT_BASE = 20000
PORT_SPAN = 12000


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: str
    master_addr: str
    master_port: int
    source: str  # "env", "slurm" or "single"


def node_name(env: dict[str, str] | None = None) -> str:
    """The node's name in logs: simulated node, else Slurm node, never just the host name
    (several Slurm nodes can share one host)."""
    env = os.environ if env is None else env
    return env.get(envnames.NODE) or env.get("SLURMD_NODENAME") or socket.gethostname()


def port_for_job(job_id: str | int) -> int:
    """Two jobs on one node must not pick the same port: derive it from the job id."""
    return PORT_BASE + int(job_id) % PORT_SPAN


def slurm_head_node(nodelist: str) -> str:
    """First host of a Slurm node list ('n[1-4]' -> 'n1'), via scontrol when present."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # Fallback parser for the common 'prefix[a-b,c]' and 'a,b' forms.
    first = nodelist.split(",")[0]
    if "[" in first:
        prefix, rest = first.split("[", 1)
        return prefix + rest.rstrip("]").split("-")[0].split(",")[0]
    return first


def resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def from_environ(env: dict[str, str] | None = None) -> DistEnv:
    env = dict(os.environ) if env is None else env
    node = node_name(env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       int(env.get("LOCAL_WORLD_SIZE", 1)), node, env.get("MASTER_ADDR", "127.0.0.1"),
                       int(env.get("MASTER_PORT", 29500)), "env")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        addr = env.get("MASTER_ADDR") or resolve(slurm_head_node(env.get("SLURM_JOB_NODELIST", "localhost")))
        port = int(env.get("MASTER_PORT") or port_for_job(env.get("SLURM_JOB_ID", "0")))
        local_world = int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1)
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       local_world, node, addr, port, "slurm")
    return DistEnv(0, 1, 0, 1, node, "127.0.0.1", 29500, "single")
