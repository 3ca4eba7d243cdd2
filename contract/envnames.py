"""The project's own environment variables: every `TS_*` name, once. Imports nothing.

Python code names them through these constants; the shell side (slurm/templates/*.j2, bin/*,
the Makefile) and docs/ spell them out, and tests/unit/test_envnames.py checks that every
`TS_*` name appearing there is one of these.
"""

from __future__ import annotations

# This run's attempt number, set by the simulate launcher per rank (it counts the attempts itself);
# read by contract.rundir.current_attempt. Cleared by the Slurm launch paths, which count otherwise.
ATTEMPT = "TS_ATTEMPT"
# The attempts an experiment had before this Slurm job (a re-run after a failure or a cancel), set by
# the Slurm backends at submission; contract.rundir.current_attempt adds Slurm's restart count + 1.
ATTEMPT_BASE = "TS_ATTEMPT_BASE"
# Torch threads per rank: set by the simulate launcher (its CPU plan), bin/launch and the submitit task
# (the job's CPUs per task); read by trainers/common/runtime.py.
THREADS = "TS_THREADS"
# The rank's node name: set by the simulate launcher and submitit's LocalExecutor task (simulated
# nodes node0, node1, ...); read by trainers/common/distenv.py before Slurm's node name.
NODE = "TS_NODE"
# "1": emulate the configured link between simulated nodes; set by the simulate launcher, read by
# trainers/common/traffic.py (on real nodes the wire is real).
EMULATE_LINK = "TS_EMULATE_LINK"
# Ranks sharing this rank's GPU: set by the simulate launcher, read by contract/gpushare.py (memory share).
RANKS_PER_GPU = "TS_RANKS_PER_GPU"
# "1": checkpoint on the time-limit warning signal and exit 3; set by the sbatch template, read by
# trainers/common/checkpoint.py.
CHECKPOINT_ON_SIGNAL = "TS_CHECKPOINT_ON_SIGNAL"
# Seconds before a collective times out (default 120): set by the user, read by trainers/common/runtime.py.
COLLECTIVE_TIMEOUT = "TS_COLLECTIVE_TIMEOUT"
# "1" when the simulate launcher put more ranks than cores on this machine; set by it for the rank's
# environment (config.json's CPU plan records the same), read by no module.
CPU_OVERSUBSCRIBED = "TS_CPU_OVERSUBSCRIBED"
# "0": the simulate launcher starts every rank in a fresh interpreter (cold) instead of forking it from
# its warm-start server; set by the user or the Makefile's WARM=0 (bin/sweep --cold does the same),
# read by simulate/warmstart.py.
WARM = "TS_WARM"
# "1" in a rank forked by the warm-start server: set by simulate/warmstart.py in the rank's environment,
# read by trainers/common/setup.py (config.json's per-rank `warm`).
WARM_RANK = "TS_WARM_RANK"
# The loopback cluster's state folder (default .cluster): set by the user, read by slurm/cluster.py.
CLUSTER_DIR = "TS_CLUSTER_DIR"
# When bench/startup.py spawned a probe (Unix seconds): set and read by bench/startup.py.
BENCH_SPAWNED = "TS_BENCH_SPAWNED"
# "1": rewrite tests/golden/ instead of comparing with it; set by the user, read by tests/unit/test_render.py.
UPDATE_GOLDEN = "TS_UPDATE_GOLDEN"

# Every name above: what the shell side and the docs may name.
ALL = (ATTEMPT, ATTEMPT_BASE, THREADS, NODE, EMULATE_LINK, RANKS_PER_GPU, CHECKPOINT_ON_SIGNAL, COLLECTIVE_TIMEOUT,
       CPU_OVERSUBSCRIBED, WARM, WARM_RANK, CLUSTER_DIR, BENCH_SPAWNED, UPDATE_GOLDEN)
