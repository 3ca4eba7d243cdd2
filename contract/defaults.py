"""Defaults of the commands that look past the measured cluster (plan, project, advise), once.

The trainers' and the sweep's defaults are the config's fields (contract/config.py); these are
the figures of the cluster the planner, the projection and the advice assume. The Makefile
leaves its NODES_MAX and GPU_MEM empty so these apply (tests/unit/test_make_variables.py).
"""

from __future__ import annotations

from contract.tables import GPUS

MAX_NODES = 1024  # the projection and the advice: 1..MAX_NODES nodes
GPU = "a100"  # the GPU preset (contract.tables.GPUS) the layout search assumes
GPU_MEM = f"{GPUS[GPU][0] // 2**30}GiB"  # memory of one GPU: the planner and the advice (the preset's)
PROJECTED_LINK = "10gbe"  # the interconnect of the projected cluster (contract.tables.LINKS)
