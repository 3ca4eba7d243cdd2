"""simulate/: CPU cores and GPU memory split between simulated nodes, in real launches; bad input refused
by bin/sweep (exit 2, one line). The plans alone: tests/unit/test_simulate_partition.py."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import records, run_local, sweep


@pytest.mark.parametrize("args, words", [
    (["--memory-fraction", "0"], "invalid memory_fraction 0.0"),
    (["--memory-fraction", "-0.5"], "invalid memory_fraction -0.5"),
    (["--memory-fraction", "1.5"], "invalid memory_fraction 1.5"),
    (["--memory-fraction", "0.6", "--nodes", "2"], "2 ranks share a GPU"),
    (["--link", "token-ring"], "unknown link 'token-ring'"),
    (["--latency-us", "-3"], "invalid latency_us -3.0"),
    (["--bandwidth-gbps", "-2"], "invalid bandwidth_gbps -2.0"),
    (["--bandwidth-gbps", "0"], "invalid bandwidth_gbps 0.0"),
    (["--global-batch", "5000", "--dataset", "digits"], "invalid global_batch 5000"),
])
def test_bad_input_exits_2(args, words, tmp_path):
    out = sweep("--backend", "simulate", "--dry-run", "--logs", str(tmp_path), *args)
    assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not os.listdir(tmp_path)


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
