"""Shell safety of the rendered sbatch scripts and of bin/sweep, and bin/launch's command line. No Slurm needed.

The shell-safety tests run the rendered scripts for real with bash, against a fake repository
whose bin/launch records its argv, so "inert" means: the hostile text arrives as one literal
argument and nothing it names is executed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from contract import envnames
from contract.config import ExperimentConfig
from slurm import render
from tests.helpers import ROOT
from trainers.common.distenv import port_for_job


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
    assert f"MASTER_PORT={port_for_job(4242)}" in out and f"{envnames.THREADS}=3" in out
    assert "srun --kill-on-bad-exit=1 --nodes=2 --ntasks=4 --ntasks-per-node=2 --cpus-per-task=3" in out
    assert "-m trainers.ring --steps 5 --run-dir '/tmp/r x'" in out and "node-${SLURMD_NODENAME" in out
    bad = subprocess.run([os.path.join(ROOT, "bin", "launch"), "--run-dir", "/tmp/r", "ddp"],
                         env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "inside a Slurm allocation" in bad.stderr
