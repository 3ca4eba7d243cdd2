"""End to end through bin/sweep on the simulate backend: grid -> ranks -> logs -> plots."""

import json
import os
import subprocess
import time

import pytest

from contract import rundir
from contract.config import ExperimentConfig
from sweeper import grid
from tests.helpers import ROOT, exp_id, records, sweep

pytestmark = pytest.mark.timeout(600)  # the module's sweep (8 experiments) runs in the first test's setup

COMMON = {"event", "rank", "node", "time"}
SCHEMA = {
    "start": {"world_size", "strategy", "device", "attempt", "param_bytes", "grad_bytes", "optim_bytes"},
    "step": {"step", "epoch", "samples", "step_s", "compute_s", "comm_s", "comm_bytes", "loss", "mem_bytes"},
    "epoch": {"epoch", "epoch_s", "val_loss", "val_acc"},
    "end": {"status"},
    "error": {"message", "traceback"},
}


@pytest.mark.parametrize("args", [
    ["--nodes", "0"], ["--nodes", "-1"], ["--nodes", "a"], ["--nodes", "1,,2"], ["--strategies", "ddp,warp"],
    ["--nodes", "2", "--global-batch", "33"], ["--steps", "0"], ["--sweep", "a/b"], ["--sweep", "../up"],
    ["--sweep", "x;touch /tmp/pwned"], ["--sweep", "$(id)"], ["--backend", "cloud"], ["--link", "wifi"],
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, tmp_path):
    logs = tmp_path / "logs"
    proc = sweep("--logs", str(logs), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    bad = args[-1].split(",")[-1] if args[0] == "--strategies" else args[-1]
    assert bad in lines[0] or repr(bad) in lines[0]
    assert not logs.exists() and proc.stdout == ""


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    t0 = time.time()
    proc = sweep("--logs", str(logs), "--sweep", "e2e", "--nodes", "1,2", "--strategies", "single,ddp,ps,ring",
                 "--steps", "6", "--global-batch", "32")
    return logs / "e2e", proc, time.time() - t0


def test_sweep_completes_with_schema_conforming_logs(finished_sweep):
    path, proc, _ = finished_sweep
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep_doc = json.loads((path / "sweep.json").read_text())
    runnable = [e for e in sweep_doc["experiments"] if not e["skipped"]]
    want = [("single", 1), ("ddp", 1), ("ddp", 2), ("ps", 2), ("ring", 1), ("ring", 2)]
    assert {e["id"] for e in runnable} == {exp_id(s, n, steps=6, global_batch=32) for s, n in want}
    for exp in runnable:
        run_dir = path / exp["id"]
        assert rundir.read_status(str(run_dir))["state"] == "COMPLETED"
        cfg = json.loads((run_dir / "config.json").read_text())
        assert cfg["config"]["strategy"] == exp["strategy"] and cfg["meta"]["torch"]
        world = exp["nodes"]
        for node in range(exp["nodes"]):
            assert (run_dir / f"node-node{node}.out").stat().st_size > 0
        for rank in range(world):
            # The on-disk format itself (docs/logs.md): raw lines, not analysis.load's columns.
            recs = [json.loads(x) for x in (run_dir / f"rank-{rank}.jsonl").read_text().splitlines()]
            events = [r["event"] for r in recs]
            assert events[0] == "start" and events[-1] == "end" and events.count("step") == 6
            for r in recs:
                assert COMMON <= r.keys() and SCHEMA[r["event"]] <= r.keys(), r
                assert r["rank"] == rank and r["node"] == f"node{rank}"


def test_rerun_skips_completed_experiments(finished_sweep):
    path, _, first_wall = finished_sweep
    proc = sweep("--logs", str(path.parent), "--sweep", "e2e", "--nodes", "1,2", "--strategies", "single,ddp,ps,ring",
                 "--steps", "6", "--global-batch", "32")
    assert proc.returncode == 0 and proc.stdout.count("already COMPLETED") == 6, proc.stdout


def test_plots_from_the_sweep(finished_sweep):
    path, _, _ = finished_sweep
    proc = subprocess.run([os.path.join(ROOT, "bin", "_py"), "-m", "analysis.cli", "plots", "--sweep", "e2e",
                           "--logs", str(path.parent)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (path / "summary.csv").stat().st_size > 0
    pngs = list((path / "plots").glob("*.png"))
    names = " ".join(p.name for p in pngs)
    assert len(pngs) >= 3 and "throughput" in names and "efficiency" in names and "loss" in names, names


@pytest.mark.parametrize("fault", ["raise@1:3", "kill@0:3"])
def test_faults_end_quickly_and_keep_every_completed_step(fault, tmp_path):
    """A fault ends the experiment FAILED, not at its time limit (a hang would meet the sweep's
    timeout and pytest-timeout instead); no rank runs past the faulty step."""
    proc = sweep("--logs", str(tmp_path), "--sweep", "fault", "--nodes", "2,3", "--strategies", "ddp",
                 "--steps", "30", "--global-batch", "24", "--fault", fault, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for n in (2, 3):  # the sweep went on to the next experiment after the first failed
        exp = exp_id("ddp", n, steps=30, global_batch=24, fault=fault)
        run_dir = tmp_path / "fault" / exp
        status = rundir.read_status(str(run_dir))
        assert status["state"] == "FAILED", status
        for rank in range(n):
            steps = [r["step"] for r in records(run_dir, rank, "step")]
            assert steps[:3] == [0, 1, 2], (rank, steps)  # steps before the fault are all there
            assert max(steps) <= 3, (rank, steps)  # the others block in step 3's all-reduce until torn down
            assert 3 not in steps or rank != int(fault.split("@")[1].split(":")[0])
        if fault.startswith("raise"):
            errors = records(run_dir, 1, "error")
            assert errors and "injected fault" in errors[0]["message"] and "Traceback" in errors[0]["traceback"]
        assert f"FAILED {exp}" in proc.stdout


def test_grid_points_no_run_could_satisfy_are_skipped_not_fatal(tmp_path):
    """A grid point that cannot run (8 pipeline stages for a 6-block model, `single` at 2 nodes)
    is skipped with its reason; a sweep where every point is skipped is bad input."""
    out = sweep("--dry-run", "--backend", "simulate", "--strategies", "mp,single", "--nodes", "2,8",
                "--logs", str(tmp_path))
    assert out.returncode == 0, out.stderr
    reason = grid.skip_reason(ExperimentConfig(strategy="mp", nodes=8), None)
    assert reason and "8 stages" in reason and "6 blocks" in reason
    assert f"skipped {exp_id('mp', 8)}: {reason}" in out.stdout
    assert f"would run {exp_id('mp', 2)}" in out.stdout and f"skipped {exp_id('single', 2)}" in out.stdout
    out = sweep("--dry-run", "--backend", "simulate", "--strategies", "mp", "--nodes", "8", "--logs", str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nothing to run" in out.stderr


def test_a_rank_that_fails_in_setup_still_logs_its_error(tmp_path):
    """A rank whose rendezvous fails (port taken) ends at once with an `error` record."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = dict(os.environ, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(taken.getsockname()[1]))
        proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-m", "trainers.ddp", "--nodes", "2",
                               "--steps", "2", "--device", "cpu", "--run-dir", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = records(str(tmp_path), 0, "error")
    assert len(errors) == 1 and "address already in use" in errors[0]["message"].lower(), errors
