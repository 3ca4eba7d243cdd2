"""Warm start on the simulate backend (simulate/warmstart.py): a warm run and a cold run of the same
config give the same losses bit for bit, with the same threads and allocator state, and say which
start they had (and a warm rank on more than one core, that it owns its memory); a failing rank
ends a warm run quickly with its error logged and no process left; Ctrl-C to bin/sweep ends the
sweep, its ranks and its warm-start server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from contract import envnames, rundir
from contract.config import ExperimentConfig, validate
from simulate import warmstart
from simulate.launcher import run_experiment
from tests.helpers import ROOT, records, step_losses

pytestmark = pytest.mark.integration


def run(run_dir, strategy: str, nodes: int, warm: bool, **kw) -> dict:
    cfg = ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=1, warmup=0, **kw)
    validate(cfg)
    return run_experiment(cfg, str(run_dir), time_limit_s=300, warm=warm)


def ranks_meta(run_dir) -> list[dict]:
    with open(os.path.join(str(run_dir), "config.json")) as f:
        return json.load(f)["meta"]["ranks"]


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`, read from /proc."""
    found = []
    for p in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(p))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def launched_here() -> set[int]:
    """This process's children other than its warm-start server: ranks not yet reaped, or orphans."""
    server = warmstart._server.proc.pid if warmstart._server is not None else None
    return {p for p in children(os.getpid()) if p != server} | (set(children(server)) if server else set())


@pytest.mark.parametrize("strategy,nodes", [("ddp", 2), ("single", 1)])
def test_warm_and_cold_give_the_same_losses_threads_and_allocator_state(tmp_path, strategy, nodes):
    warm = run(tmp_path / "warm", strategy, nodes, True, steps=6, seed=3)
    cold = run(tmp_path / "cold", strategy, nodes, False, steps=6, seed=3)
    assert warm["state"] == cold["state"] == "COMPLETED", (warm, cold)
    assert (warm["warm_start"], cold["warm_start"]) == (True, False)
    losses = step_losses(str(tmp_path / "warm"), nodes)
    assert len(losses) == 6 and losses == step_losses(str(tmp_path / "cold"), nodes)  # bit for bit
    w, c = ranks_meta(tmp_path / "warm"), ranks_meta(tmp_path / "cold")
    assert [m["warm"] for m in w] == [True] * nodes and [m["warm"] for m in c] == [False] * nodes
    for key in ("threads", "interop_threads", "affinity", "allocator"):
        assert [m[key] for m in w] == [m[key] for m in c], key
    assert "start: warm" in (tmp_path / "warm" / "node-node0.out").read_text()
    assert "start: cold" in (tmp_path / "cold" / "node-node0.out").read_text()
    # A warm rank given more than one core owns its memory before its first thread (own_memory).
    outs = "".join(p.read_text() for p in sorted((tmp_path / "warm").glob("node-*.out")))
    owned = warmstart.OWNED_RE.findall(outs)
    assert len(owned) == sum(len(m["affinity"]) > 1 for m in w), outs
    assert all(int(pages) > 1000 and rest == "" for pages, _, rest in owned), owned
    assert launched_here() == set()


@pytest.mark.parametrize("fault", ["raise@1:3", "kill@0:3"])
def test_a_failing_rank_ends_a_warm_run_quickly_and_leaves_no_process(tmp_path, fault):
    status = run(tmp_path, "ddp", 2, True, steps=200, global_batch=16, fault=fault)
    assert status["state"] == "FAILED" and status["warm_start"] is True, status
    bad = int(fault.split("@")[1].split(":")[0])
    for rank in range(2):  # the other rank blocks in step 3's all-reduce until torn down
        assert max(r["step"] for r in records(str(tmp_path), rank, "step")) <= 3, rank
    if fault.startswith("raise"):
        errors = records(str(tmp_path), bad, "error")
        assert errors and "injected fault" in errors[0]["message"], errors
        assert "injected fault" in (tmp_path / f"node-node{bad}.out").read_text()
    else:
        assert status["failed_ranks"][str(bad)] == -signal.SIGKILL, status
    assert launched_here() == set()


def test_ctrl_c_ends_the_sweep_its_ranks_and_its_server(tmp_path):
    args = ["--logs", str(tmp_path), "--backend", "simulate", "--sweep", "w", "--strategies", "ddp", "--nodes", "2",
            "--steps", "400", "--global-batch", "16", "--warmup", "0"]
    proc = subprocess.Popen([os.path.join(ROOT, "bin", "sweep"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != envnames.WARM})
    exp = ExperimentConfig(strategy="ddp", nodes=2, steps=400, global_batch=16, warmup=0).experiment_id()
    run_dir = tmp_path / "w" / exp
    end = time.time() + 180
    while not all((run_dir / f"rank-{r}.jsonl").exists() and '"step"' in (run_dir / f"rank-{r}.jsonl").read_text()
                  for r in range(2)):
        assert proc.poll() is None and time.time() < end, "no step record"
        time.sleep(0.1)
    spawned = children(proc.pid)  # the warm-start server and both ranks (forked by it, re-parented here)
    assert len(spawned) == 3, spawned
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert rundir.read_status(str(run_dir))["state"] == "CANCELLED"
    assert [p for p in spawned if alive(p)] == []
