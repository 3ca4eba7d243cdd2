"""On a real Slurm cluster on loopback (tests/slurm/conftest.py): sbatch, sweeps (sbatch and submitit),
requeue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from contract import rundir
from slurm import cluster, track
from tests.helpers import ROOT, exp_id, records, sweep
from tests.slurm.conftest import SHAPE, STATE_DIR
from trainers.common import allocator

pytestmark = pytest.mark.timeout(900)  # a job waits up to 240 s to end; the requeue test runs three 120-step jobs


def sbatch(env: dict, *args: str, **overrides: str) -> tuple[str, float]:
    t0 = time.time()
    out = subprocess.run(["sbatch", "--parsable", *args], env={**env, **overrides}, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0], t0


def job_state(job_id: str) -> track.JobState:
    return track.slurm_states([job_id]).get(job_id, track.JobState("UNKNOWN"))


def wait_final(job_id: str, timeout_s: float = 240) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = job_state(job_id)
        if state.state in track.FINAL_MAP:
            return state.state
        track.release_requeued(job_id, state)  # what bin/sweep's wait loop does for a requeued job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not final after {timeout_s} s: {job_state(job_id)}")


def step_records(run_dir: str) -> int:
    try:
        return sum(1 for r in records(run_dir, 0, "step"))
    except (OSError, ValueError):
        return 0


def final_loss(run_dir: str, world: int) -> float:
    """Sample-weighted loss of the last step, from the records of the last attempt that ran it."""
    last: dict[int, dict] = {}
    for rank in range(world):
        for r in records(run_dir, rank, "step"):
            if r["step"] == max(x["step"] for x in records(run_dir, rank, "step")):
                last[rank] = r
    return sum(r["loss"] * r["samples"] for r in last.values()) / sum(r["samples"] for r in last.values())


def test_sbatch_ddp_on_two_nodes(slurm_env):
    job, t0 = sbatch(slurm_env, "-N", "2", "slurm/ddp.sbatch", STEPS="6")
    run_dir = os.path.join(ROOT, "logs", "sbatch", f"ddp-j{job}")
    assert wait_final(job) == "COMPLETED"
    status = rundir.read_status(run_dir)
    assert status["state"] == "COMPLETED" and status["attempts"] == 1 and status["job_id"] == job
    nodes = {records(run_dir, r)[0]["node"] for r in (0, 1)}
    assert len(nodes) == 2 and all(n.startswith("cn") for n in nodes)
    assert sorted(f for f in os.listdir(run_dir) if f.startswith("node-")) == sorted(f"node-{n}.out" for n in nodes)
    assert [r["step"] for r in records(run_dir, 0, "step")] == list(range(6))
    ranks = rundir.read_json(os.path.join(run_dir, "config.json"))["meta"]["ranks"]  # srun's ranks chose it too
    assert [r["allocator"]["mmap_threshold"] for r in ranks] == [allocator.MMAP_THRESHOLD] * 2
    first = records(run_dir, 0, "step")[0]["time"]
    print(f"\nsbatch -> first logged step: {first - t0:.1f} s")


def test_sbatch_mix_pp2_tp2_on_two_nodes(slurm_env):
    """`TP=2 PP=2 sbatch -N 2 slurm/mix.sbatch`: a TP group inside each node, the pipeline across them
    (the test cluster's nodes have 2 CPUs: 2 ranks per node, so dp is 1)."""
    job, _ = sbatch(slurm_env, "-N", "2", "--ntasks-per-node=2", "slurm/mix.sbatch", TP="2", PP="2", STEPS="4",
                    MODEL="transformer")
    run_dir = os.path.join(ROOT, "logs", "sbatch", f"mix-j{job}")
    assert wait_final(job) == "COMPLETED", open(os.path.join(ROOT, "logs", "sbatch", f"ts-mix-j{job}.out")).read()
    assert rundir.read_status(run_dir)["state"] == "COMPLETED"
    nodes = [records(run_dir, r)[0]["node"] for r in range(4)]
    assert nodes[0] == nodes[1] != nodes[2] == nodes[3], nodes  # tp pairs share a node; stages do not
    steps = [records(run_dir, r, "step") for r in range(4)]
    assert all(len(s) == 4 for s in steps)
    assert all(r["loss"] is None for s in steps[:2] for r in s) and all(r["loss"] is not None for r in steps[3])


def test_dry_run_checks_with_test_only(slurm_env, tmp_path):
    ok = sweep("--backend", "slurm", "--dry-run", "--nodes", "2,4", "--strategies", "ddp", "--logs", str(tmp_path),
               "--sweep", "dry", env=slurm_env)
    assert ok.returncode == 0 and ok.stdout.count("  checked ") == 2, ok.stdout + ok.stderr
    assert os.path.exists(tmp_path / "dry" / exp_id("ddp", 4) / "job.sbatch")
    bad = sweep("--backend", "slurm", "--dry-run", "--partition", "nosuch", "--logs", str(tmp_path), env=slurm_env)
    assert bad.returncode == 2 and "nosuch" in bad.stderr.lower(), bad.stdout + bad.stderr


@pytest.mark.parametrize("backend", ["slurm", "submitit"])
def test_sweep_nodes_1_2_4(slurm_env, tmp_path, backend):
    res = sweep("--backend", backend, "--nodes", "1,2,4", "--strategies", "ddp,ring", "--steps", "6",
                "--logs", str(tmp_path), "--sweep", "s", env=slurm_env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    path = tmp_path / "s"
    for strategy in ("ddp", "ring"):
        for n in (1, 2, 4):
            run_dir = path / exp_id(strategy, n, steps=6)
            assert rundir.status_of(str(run_dir)) == "COMPLETED"
            outs = [f for f in os.listdir(run_dir) if f.startswith("node-")]
            ranks_nodes = {records(str(run_dir), r)[0]["node"] for r in range(n)}
            assert len(outs) == n and len(ranks_nodes) == n, (run_dir, outs, ranks_nodes)
    status = subprocess.run([os.path.join(ROOT, "bin", "_py"), "-m", "slurm.track", "status", "--sweep", "s",
                             "--logs", str(tmp_path)], capture_output=True, text=True, env=slurm_env, timeout=60)
    assert status.returncode == 0 and "6 completed" in status.stdout, status.stdout + status.stderr
    if backend == "slurm" and os.path.isdir(os.path.join(ROOT, "analysis")):
        plots = subprocess.run([os.path.join(ROOT, "bin", "_py"), "-m", "analysis.cli", "plots", "--sweep", "s",
                                "--logs", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert plots.returncode == 0, plots.stdout + plots.stderr
        assert os.path.exists(path / "summary.csv")


def test_requeue_resumes_without_losing_steps(slurm_env, tmp_path):
    steps = 120
    common = {"STEPS": str(steps), "SEED": "7"}
    dirs = {k: str(tmp_path / k) for k in ("plain", "requeued", "warned")}
    plain, _ = sbatch(slurm_env, "-N", "2", "slurm/ddp.sbatch", RUN_DIR=dirs["plain"], **common)
    requeued, _ = sbatch(slurm_env, "-N", "2", "slurm/ddp.sbatch", RUN_DIR=dirs["requeued"], CHECKPOINT_EVERY="10",
                         **common)
    warned, _ = sbatch(slurm_env, "-N", "2", "slurm/ddp.sbatch", RUN_DIR=dirs["warned"], **common)
    pending = {requeued: ["scontrol", "requeue", requeued],  # from outside, as an admin or preemption would
               warned: ["scancel", "--signal=USR1", warned]}  # the --signal time-limit warning, early
    deadline = time.time() + 180
    while pending and time.time() < deadline:
        for job, argv in list(pending.items()):
            run_dir = dirs["requeued" if job == requeued else "warned"]
            if step_records(run_dir) >= 25:
                assert subprocess.run(argv, env=slurm_env, timeout=30).returncode == 0
                del pending[job]
        time.sleep(0.1)
    assert not pending, "the jobs finished before they could be interrupted"
    for job in (plain, requeued, warned):
        assert wait_final(job) == "COMPLETED"
    reference = final_loss(dirs["plain"], 2)
    for kind in ("requeued", "warned"):
        run_dir = dirs[kind]
        status = rundir.read_status(run_dir)
        assert status["state"] == "COMPLETED" and status["attempts"] == 2, status
        assert [h["state"] for h in status["history"]] == ["PREEMPTED", "COMPLETED"]
        for rank in (0, 1):
            recs = records(run_dir, rank)
            assert {r["step"] for r in recs if r["event"] == "step"} == set(range(steps)), f"{kind}: lost a step"
            raw = [json.loads(line) for line in open(os.path.join(run_dir, f"rank-{rank}.jsonl"))]
            assert [r["attempt"] for r in raw if r["event"] == "start"] == [1, 2]  # the file keeps both attempts
        outs = "".join(open(os.path.join(run_dir, f)).read() for f in os.listdir(run_dir) if f.startswith("node-"))
        assert f"step 1/{steps}" in outs and f"step {steps}/{steps}" in outs and "resumed from checkpoint" in outs
        assert final_loss(run_dir, 2) == pytest.approx(reference, rel=1e-6), kind
    warned_out = open(os.path.join(ROOT, "logs", "sbatch", f"ts-ddp-j{warned}.out")).read()
    assert "attempt 1" in warned_out and "requeueing" in warned_out and "attempt 2" in warned_out


def test_cluster_is_idempotent(slurm_env):
    c = cluster.Cluster(STATE_DIR)
    before = c.running()
    c.up(SHAPE, quiet=True)  # already up with this shape: nothing restarts
    assert c.is_up() and c.running() == before and all(before.values()), (before, c.running())
    assert shutil.which("sinfo")
    out = subprocess.run(["sinfo", "-h", "-o", "%P %D"], env=slurm_env, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["batch*", "4"]
