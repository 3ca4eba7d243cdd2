"""simulate/: CPU cores and GPU memory split between simulated nodes; bad layouts refused."""

from __future__ import annotations

import json
import os

import pytest

from simulate.launcher import plan_cpus, plan_gpus
from tests.helpers import records, run_local, sweep
from trainers.common import gpu
from trainers.common.config import ConfigError


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
    assert gpu.requested_bytes("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 ...") == int(2.5 * 2**30)


def test_cpu_plan_oversubscribed():
    plan = plan_cpus(4, [0, 1])
    assert plan.oversubscribed and plan.cores == [[0], [1], [0], [1]] and plan.threads == 1
    assert not plan_cpus(2, [0, 1]).oversubscribed


@pytest.mark.parametrize("args, words", [
    (["--memory-fraction", "0"], "invalid memory_fraction 0.0"),
    (["--memory-fraction", "-0.5"], "invalid memory_fraction -0.5"),
    (["--memory-fraction", "1.5"], "invalid memory_fraction 1.5"),
    (["--memory-fraction", "0.6", "--nodes", "2"], "2 ranks share a GPU"),
    (["--link", "token-ring"], "unknown link 'token-ring'"),
    (["--latency-us", "-3"], "invalid latency_us -3.0"),
    (["--bandwidth-gbps", "-2"], "invalid bandwidth_gbps -2.0"),
])
def test_bad_input_exits_2(args, words, tmp_path):
    out = sweep("--backend", "simulate", "--dry-run", "--logs", str(tmp_path), *args)
    assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.integration
def test_two_nodes_on_two_cores_one_core_each(tmp_path):
    """Affinity read back from /proc/<pid>/status by the launcher, and by each rank itself."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        pytest.skip("needs 2 cores")
    os.sched_setaffinity(0, mine[:2])  # the launcher splits the cores it may use: two of them
    try:
        status = run_local(tmp_path, "ddp", nodes=2, procs=1, steps=3, device="cpu")
    finally:
        os.sched_setaffinity(0, mine)
    assert status["state"] == "COMPLETED"
    observed = status["cpu_plan"]["affinity_observed"]
    assert observed == [str(mine[0]), str(mine[1])], observed  # one core each, disjoint
    with open(tmp_path / "config.json") as f:
        meta = json.load(f)["meta"]
    assert [r["affinity"] for r in meta["ranks"]] == [[mine[0]], [mine[1]]]
    assert [r["threads"] for r in meta["ranks"]] == [1, 1] and meta["cpu_plan"]["oversubscribed"] is False
    assert "[launcher node1] ranks [1] on cores" in (tmp_path / "node-node1.out").read_text()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


gpu_only = pytest.mark.skipif(not _cuda(), reason="CUDA is not available on this machine")


@pytest.mark.gpu
@pytest.mark.integration
@gpu_only
def test_gpu_shared_by_two_nodes(tmp_path):
    """Two simulated nodes on the GPU(s): each rank capped, gloo where they share one."""
    import torch

    status = run_local(tmp_path, "ddp", nodes=2, procs=1, steps=3, device="cuda")
    assert status["state"] == "COMPLETED", status
    with open(tmp_path / "config.json") as f:
        meta = json.load(f)["meta"]
    if torch.cuda.device_count() == 1:
        assert meta["dist_backend"] == "gloo" and any("share a GPU" in n for n in meta["notes"])
        assert any("memory fraction 0.450" in n for n in meta["notes"]), meta["notes"]
    else:
        assert len(set(meta["gpu_plan"]["gpu_per_rank"])) == 2  # spread over GPUs


@pytest.mark.gpu
@pytest.mark.integration
@gpu_only
def test_rank_past_its_fraction_fails_cleanly(tmp_path):
    """A fraction far too small for resnet50 on 256 samples: out of memory, FAILED, with the figures."""
    status = run_local(tmp_path, "ddp", nodes=2, procs=1, steps=3, device="cuda", model="resnet50",
                       dataset="synthetic", global_batch=256, memory_fraction=0.002)
    assert status["state"] == "FAILED"
    errors = [r for rank in (0, 1) for r in records(tmp_path, rank, "error")]
    oom = [e for e in errors if e.get("requested_bytes")]
    assert oom, errors
    e = oom[0]
    assert e["memory_fraction"] == pytest.approx(0.002) and e["available_bytes"] < e["requested_bytes"]
    assert "out of its GPU memory fraction 0.002" in e["message"]
