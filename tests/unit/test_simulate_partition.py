"""simulate/: how CPU cores and GPU memory are split between simulated nodes (the plans, in process).
Launches and bin/sweep's refusals: tests/integration/test_simulate_partition.py."""

from __future__ import annotations

import pytest

from contract import gpushare as gpu
from contract.errors import ConfigError
from simulate.launcher import plan_cpus, plan_gpus
from trainers.common import gpumemory


def test_gpu_plan_spreads_nodes(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    plan = plan_gpus(4, "auto")
    assert plan.per_rank == ["3", "3", "5", "5"] and plan.ranks_per_gpu == {"3": 2, "5": 2}
    assert plan_gpus(4, "cpu") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert plan_gpus(4, "auto") is None
    assert gpu.sharing(3, 2) == 2 and gpu.sharing(2, 4) == 1
    assert gpu.fraction_for(gpu.AUTO, 2) == pytest.approx(0.45)
    gpu.check_fraction(0.5, 2)
    with pytest.raises(ConfigError, match="2 ranks share a GPU"):
        gpu.check_fraction(0.6, 2)
    assert gpumemory.requested_bytes("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 ...") == int(2.5 * 2**30)


def test_cpu_plan_oversubscribed():
    plan = plan_cpus(4, [0, 1])
    assert plan.oversubscribed and plan.cores == [[0], [1], [0], [1]] and plan.threads == 1
    assert not plan_cpus(2, [0, 1]).oversubscribed
