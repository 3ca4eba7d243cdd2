"""The sbatch scripts check their trainer settings once, before srun (slurm/launch.py `check`).

Unit tests need nothing; the Slurm test runs a real job on the loopback cluster (bin/cluster),
with the same cluster shape and state folder as tests/slurm/test_slurm.py (`up` is idempotent).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from contract import rundir
from contract.config import ExperimentConfig
from slurm import launch, render, track
from tests.helpers import ROOT


def test_check_names_the_bad_value():
    assert launch.check("ddp", ["--nodes", "2", "--steps", "3"]) is None
    assert "lr" in launch.check("ddp", ["--lr", "-1"])
    assert "--lr" in launch.check("ddp", ["--lr", "abc"])
    assert "nosuch" in launch.check("nosuch", [])
    res = subprocess.run([sys.executable, "-m", "slurm.launch", "check", "ddp", "--", "--model", "bogus"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchswitch: error:") and "bogus" in lines[0], res.stderr


def test_check_is_torch_free():
    res = subprocess.run([sys.executable, "-c", "import sys, slurm.launch; sys.exit('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, "slurm.launch imports torch: the batch script's check would take seconds"


def _run_script(tmp_path, text: str, env: dict) -> subprocess.CompletedProcess:
    """Run a rendered script with bash against this repository (its real check), with a fake
    srun-less bin/launch: the script must stop before launching anything."""
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    full = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "91", "SLURM_NNODES": "2", "SLURM_NTASKS": "2",
            "SLURM_JOB_NODELIST": "x[1-2]", "TORCHSWITCH_ROOT": ROOT, "RUN_DIR": str(tmp_path / "run"), **env}
    return subprocess.run(["bash", str(script)], env=full, capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))


@pytest.mark.parametrize("committed", [True, False])
def test_script_stops_on_a_bad_value_before_launch(tmp_path, committed):
    if committed:
        with open(render.committed_path("ddp")) as f:
            text = f.read()
        env = {"LR": "-1"}
    else:
        cfg = ExperimentConfig(strategy="ddp", nodes=2, procs_per_node=1, lr=-1.0)
        text = render.render(cfg, committed=False, run_dir=str(tmp_path / "run"), root=ROOT)
        env = {}
    res = _run_script(tmp_path, text, env)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "invalid lr -1" in errors[0], res.stdout + res.stderr
    assert "torchswitch: job" not in res.stdout  # the launch line: never reached
    status = rundir.read_status(str(tmp_path / "run"))
    assert status["state"] == "FAILED" and status["exit_code"] == 2 and "lr" in status["reason"], status


# ---- on the loopback Slurm cluster ----------------------------------------------------------------

def _job_fields(env: dict, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], env=env, capture_output=True, text=True,
                         timeout=30)
    return dict(w.split("=", 1) for w in out.stdout.split() if "=" in w)


@pytest.mark.slurm
def test_bad_setting_fails_the_job_before_srun(slurm_env, tmp_path):
    run_dir, job_out = tmp_path / "bad-lr", tmp_path / "job.out"  # a fresh output file (job ids get reused)
    out = subprocess.run(["sbatch", "--parsable", "-N", "2", f"--output={job_out}", "slurm/ddp.sbatch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**slurm_env, "LR": "-1", "RUN_DIR": str(run_dir)})
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    deadline = time.time() + 120
    while (fields := _job_fields(slurm_env, job)).get("JobState") not in track.FINAL_MAP:
        assert time.time() < deadline, f"job {job} not final: {fields.get('JobState')}"
        time.sleep(0.5)
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "2:0", fields
    text = job_out.read_text()
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and "lr" in errors[0] and "-1" in errors[0], text
    # No step ran: srun writes nothing, no rank wrote a node file, the launch line never came.
    assert "srun" not in text and "torchswitch: job" not in text, text
    assert not [f for f in os.listdir(run_dir) if f.startswith(("node-", "rank-"))]
    status = rundir.read_status(str(run_dir))
    assert status["state"] == "FAILED" and status["exit_code"] == 2 and "lr" in status["reason"], status
