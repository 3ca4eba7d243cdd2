"""sbatch rendering, shell safety, bin/launch's command line, status.json bookkeeping. No Slurm needed.

The shell-safety tests run the rendered scripts for real with bash, against a fake repository
whose bin/launch records its argv, so "inert" means: the hostile text arrives as one literal
argument and nothing it names is executed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slurm import cluster, render, track
from trainers.common.config import STRATEGIES, ConfigError, ExperimentConfig
from trainers.common.distenv import port_for_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "ddp-n2-experiment.sbatch")
SETTINGS_START, SETTINGS_END = "# ---- trainer settings", "mark() {"


def _golden_cfg() -> ExperimentConfig:
    return ExperimentConfig(strategy="ddp", nodes=2, procs_per_node=1, steps=8, global_batch=32, seed=3)


def _split_settings(text: str) -> tuple[str, str]:
    """(script without the settings block, the settings block): the block lists every config field,
    so it follows config.py; the rest is the template's and must not drift."""
    a, b = text.index(SETTINGS_START), text.index(SETTINGS_END)
    return text[:a] + "<settings>\n" + text[b:], text[a:b]


def test_golden_experiment_script():
    text = render.render(_golden_cfg(), committed=False, run_dir="/logs/s1/ddp-n2-p1-b32-r0", root="/repo",
                         sweep="s1", experiment="ddp-n2-p1-b32-r0", job_name="ts-ddp-n2-p1-b32-r0",
                         partition="gpu", account="proj-1", time_s=600, output="/logs/s1/ddp-n2-p1-b32-r0/job.out")
    body, block = _split_settings(text)
    if os.environ.get("TS_UPDATE_GOLDEN") == "1":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            f.write(body)
    with open(GOLDEN) as f:
        assert body == f.read(), "sbatch text changed: check it, then TS_UPDATE_GOLDEN=1 pytest tests/test_render.py"
    for line in ("#SBATCH --nodes=2", "#SBATCH --partition=gpu", "#SBATCH --account=proj-1", "#SBATCH --time=00:10:00",
                 "#SBATCH --signal=USR1@60", "#SBATCH --open-mode=append", "#SBATCH --requeue"):
        assert line in text
    # Every trainer flag once, with the experiment's value; settings are fixed for a sweep's job.
    for s in render.settings(_golden_cfg()):
        assert block.count(f"{s['flag']} ") + block.count(f"{s['flag']})") + block.count(f"{s['flag']}\n") <= 1
    assert "--steps 8" in block and "--global-batch 32" in block and "--seed 3" in block
    assert "${STEPS" not in block


def test_committed_scripts_up_to_date_and_portable():
    assert render.stale() == [], "run: python -m slurm.render"
    for s in STRATEGIES:
        with open(render.committed_path(s)) as f:
            text = f.read()
        assert os.access(render.committed_path(s), os.X_OK)
        # Nothing about one cluster or one checkout: node names, partitions, ports, paths.
        for word in ("tsn", "--partition", "--account", "127.0.0.1", "localhost", ROOT, "17200", "--nodelist"):
            assert word not in text, f"{s}.sbatch hard-codes {word!r}"
        assert 'NODES="$SLURM_NNODES"' in text and "SLURM_NTASKS" in text
        assert '[ -z "${STEPS:-}" ] || ARGS+=(--steps "$STEPS")' in text


@pytest.mark.parametrize("field,value", [("partition", "a;b"), ("account", "$(touch /tmp/x)"),
                                         ("job_name", "a b"), ("partition", "x\n#SBATCH --uid=0")])
def test_render_refuses_unsafe_directives(field, value):
    with pytest.raises(ConfigError):
        render.render(_golden_cfg(), committed=False, run_dir="/r", root="/repo", **{field: value})


def _fake_repo(tmp_path) -> str:
    """A repository whose bin/launch writes its argv to argv.json, and a fake scontrol on PATH."""
    root = tmp_path / "repo"
    (root / "bin").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    launch = root / "bin" / "launch"
    launch.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      "json.dump(sys.argv[1:], open(os.path.join(os.environ['ARGV_OUT']), 'w'))\n")
    (root / "bin" / "_py").write_text("#!/bin/sh\nexit 0\n")  # status marks: not under test here
    (root / ".venv" / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "scontrol").write_text("#!/bin/sh\nexit 0\n")
    for p in (launch, root / "bin" / "_py", root / ".venv" / "bin" / "python", tmp_path / "path" / "scontrol"):
        p.chmod(0o755)
    return str(root)


def _run_script(tmp_path, script: str, env: dict) -> list[str]:
    out = tmp_path / "argv.json"
    full = {"PATH": f"{tmp_path / 'path'}:/usr/bin:/bin", "ARGV_OUT": str(out), "SLURM_JOB_ID": "77",
            "SLURM_NNODES": "2", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "x[1-2]", **env}
    res = subprocess.run(["bash", script], env=full, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text())


def test_hostile_values_are_inert(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker});a b`touch {marker}`'\"\\"
    root = _fake_repo(tmp_path)
    # A sweep job: the value sits in the script itself.
    cfg = ExperimentConfig(strategy="ddp", nodes=2, procs_per_node=2, data_dir=hostile, balance="a;b")
    script = tmp_path / "job.sbatch"
    script.write_text(render.render(cfg, committed=False, run_dir=str(tmp_path / "run dir;x"), root=root))
    argv = _run_script(tmp_path, str(script), {})
    assert argv[argv.index("--data-dir") + 1] == hostile and argv[argv.index("--balance") + 1] == "a;b"
    assert argv[:argv.index("--")] == ["--run-dir", str(tmp_path / "run dir;x"), "ddp"]
    assert argv[argv.index("--nodes") + 1] == "2" and argv[argv.index("--procs-per-node") + 1] == "2"
    # A committed script: the values come from the submitting environment.
    argv = _run_script(tmp_path, render.committed_path("pipeline"),
                       {"TORCHSWITCH_ROOT": root, "STEPS": hostile, "DATA_DIR": "a;b", "SAVE_PARAMS": "1",
                        "RUN_DIR": str(tmp_path / "r")})
    assert argv[argv.index("--steps") + 1] == hostile and argv[argv.index("--data-dir") + 1] == "a;b"
    assert "--save-params" in argv and "--model" not in argv  # unset variables: the trainer's defaults
    assert not marker.exists(), "a hostile value was executed"


def test_sweep_refuses_shell_metacharacters(tmp_path):
    marker = tmp_path / "pwned"
    for flag, value in (("--partition", "a;b"), ("--account", f"$(touch {marker})"), ("--sweep", "a;b")):
        res = subprocess.run([os.path.join(ROOT, "bin", "sweep"), "--backend", "slurm", "--dry-run", "--logs",
                              str(tmp_path), flag, value], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stdout + res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and value in res.stderr
    assert not marker.exists() and os.listdir(tmp_path) == []


def test_launch_command_inside_an_allocation():
    env = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NTASKS": "4", "SLURM_CPUS_PER_TASK": "3",
           "SLURM_JOB_NODELIST": "localhost", "PATH": os.environ["PATH"], "RANK": "9"}
    res = subprocess.run([os.path.join(ROOT, "bin", "launch"), "--dry-run", "--run-dir", "/tmp/r x", "ring", "--",
                          "--steps", "5"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"MASTER_PORT={port_for_job(4242)}" in out and "TS_THREADS=3" in out
    assert "srun --kill-on-bad-exit=1 --nodes=2 --ntasks=4 --ntasks-per-node=2 --cpus-per-task=3" in out
    assert "-m trainers.ring --steps 5 --run-dir '/tmp/r x'" in out and "node-${SLURMD_NODENAME" in out
    bad = subprocess.run([os.path.join(ROOT, "bin", "launch"), "--run-dir", "/tmp/r", "ddp"],
                         env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "inside a Slurm allocation" in bad.stderr


def test_status_counts_attempts(tmp_path):
    run = str(tmp_path)
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n[1-2]"}
    track.mark(run, "RUNNING", env=env)
    track.mark(run, "PREEMPTED", exit_code=3, requeued=True, env=env)
    doc = track.mark(run, "RUNNING", env={**env, "SLURM_RESTART_COUNT": "1"})
    assert doc["attempts"] == 2 and track.combined_state(doc, None) == "UNKNOWN"
    doc = track.mark(run, "COMPLETED", exit_code=0, env={**env, "SLURM_RESTART_COUNT": "1"})
    assert doc["state"] == "COMPLETED" and doc["attempts"] == 2 and "ended" in doc
    assert [(h["attempt"], h["state"]) for h in doc["history"]] == [(1, "PREEMPTED"), (2, "COMPLETED")]
    # Sources: a final state the job wrote wins; else Slurm's; a requeued job is not final.
    assert track.combined_state(doc, track.JobState("RUNNING")) == "COMPLETED"
    requeued = {"state": "PREEMPTED", "requeued": True}
    assert track.combined_state(requeued, track.JobState("PENDING", "BeginTime")) == "REQUEUED"
    assert track.combined_state({"state": "RUNNING"}, track.JobState("CANCELLED")) == "CANCELLED"
    assert track.combined_state({"state": "PENDING"}, track.JobState("NODE_FAIL")) == "FAILED"


def test_cluster_names_missing_packages(monkeypatch, capsys):
    monkeypatch.setattr(cluster, "missing_binaries", lambda: ["slurmctld", "munged"])
    assert cluster.main(["up", "--dir", "/nonexistent/cluster"]) == cluster.EXIT_MISSING
    assert "apt-get install -y slurm-wlm munge" in capsys.readouterr().err
    assert cluster.main(["up", "--nodes", "0", "--dir", "/nonexistent/cluster"]) == 2
