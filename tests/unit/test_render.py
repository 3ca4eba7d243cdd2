"""sbatch rendering (golden text, committed scripts, refused directives), status.json bookkeeping,
the cluster's missing-package message. In process, no Slurm needed. The scripts run for real with
bash (shell safety) and bin/launch's command line are in tests/integration/test_render_shell.py.
"""

from __future__ import annotations

import os

import pytest

from contract import envnames
from contract.config import STRATEGIES, ExperimentConfig
from contract.errors import ConfigError
from slurm import cluster, render, track
from tests.helpers import ROOT

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
    if os.environ.get(envnames.UPDATE_GOLDEN) == "1":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            f.write(body)
    with open(GOLDEN) as f:
        assert body == f.read(), (f"sbatch text changed: check it, then {envnames.UPDATE_GOLDEN}=1 "
                                  "pytest tests/unit/test_render.py")
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
