"""status.json has one writer (contract/rundir.py write_status), one list of states and one attempt
rule (rundir.current_attempt), which the sbatch template asks for rather than restating."""

from __future__ import annotations

import ast
import os

import pytest

from contract import envnames, rundir
from slurm import launch, render, track
from tests.helpers import ROOT
from tests.unit.test_envnames import _strings_outside_docstrings
from tests.unit.test_registry import python_sources

RUNDIR = os.path.join("contract", "rundir.py")


def test_write_status_merges_drops_and_refuses_unknown_states(tmp_path):
    run = str(tmp_path / "run")
    assert rundir.write_status(run, "PENDING", attempts=0, reason="queued") == {
        "attempts": 0, "reason": "queued", "state": "PENDING"}
    doc = rundir.write_status(run, "RUNNING", drop=("reason",), attempts=1)
    assert doc == {"attempts": 1, "state": "RUNNING"} and rundir.read_status(run) == doc
    assert rundir.write_status(run, job_id="7")["state"] == "RUNNING"  # no state: the one there stays
    assert rundir.write_status(run, "SKIPPED", fresh=True, reason="r") == {"reason": "r", "state": "SKIPPED"}
    with pytest.raises(ValueError, match="unknown status.json state 'DONE'"):
        rundir.write_status(run, "DONE")
    assert rundir.status_of(run) == "SKIPPED" and rundir.read_status(str(tmp_path / "none")) == {}


def test_the_lists_of_states():
    assert rundir.STATES[:2] == ("PENDING", "RUNNING") and set(rundir.FINAL_STATES) < set(rundir.STATES)
    assert set(rundir.FAILED_STATES) == set(rundir.FINAL_STATES) - {"COMPLETED", "SKIPPED"}
    assert set(track.FINAL_MAP.values()) <= set(rundir.FINAL_STATES)  # Slurm's final states map onto ours
    with pytest.raises(SystemExit):
        track.main(["mark", "/nonexistent", "DONE"])


def _sources() -> list[str]:
    bench = [os.path.join("bench", f) for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith(".py")]
    return [p for p in python_sources() + bench if p != RUNDIR]


def test_no_module_but_rundir_names_the_file():
    """Writers and readers go through rundir (write_status, read_status, STATUS): no other module
    spells the file's name in code (docstrings may)."""
    bad = {}
    for rel in _sources():
        with open(os.path.join(ROOT, rel)) as f:
            tree = ast.parse(f.read(), rel)
        found = [n.lineno for n in _strings_outside_docstrings(tree) if "status.json" in n.value]
        if found:
            bad[rel] = found
    assert not bad, bad


def state_lists(source: str, path: str = "<source>") -> list[int]:
    """Lines of every literal tuple, list or set holding three or more states: a copy of rundir's lists."""
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len([w for w in words if w in rundir.STATES]) >= 3:
                out.append(node.lineno)
    return out


def test_no_module_but_rundir_lists_states():
    bad = {}
    for rel in _sources():
        with open(os.path.join(ROOT, rel)) as f:
            found = state_lists(f.read(), rel)
        if found:
            bad[rel] = found
    assert not bad, f"ask contract.rundir (STATES, FINAL_STATES, FAILED_STATES): {bad}"
    assert state_lists('x = 1\nBAD = ("FAILED", "TIMEOUT", "CANCELLED")\nok = ("RUNNING", "CONFIGURING")\n') == [2]


@pytest.mark.parametrize("env,attempt", [({}, 1), ({"SLURM_RESTART_COUNT": "2"}, 3),
                                         ({envnames.ATTEMPT_BASE: "2", "SLURM_RESTART_COUNT": "1"}, 4),
                                         ({envnames.ATTEMPT: "5", envnames.ATTEMPT_BASE: "9"}, 5)])
def test_the_job_script_asks_for_the_attempt(env, attempt, monkeypatch, capsys):
    for name in (envnames.ATTEMPT, envnames.ATTEMPT_BASE, "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert rundir.current_attempt(env) == attempt
    # The job script's number is its ranks': they run without TS_ATTEMPT (slurm/launch.py FOREIGN).
    in_job = rundir.current_attempt({k: v for k, v in env.items() if k not in launch.FOREIGN})
    assert track.main(["attempt"]) == 0 and capsys.readouterr().out == f"{in_job}\n"
    with open(os.path.join(render.TEMPLATES, render.TEMPLATE)) as f:
        template = f.read()
    assert 'ATTEMPT="$("$PY" -m slurm.track attempt)"' in template
    assert "RESTART_COUNT:-0} + 1" not in template and envnames.ATTEMPT_BASE not in template


def test_mark_counts_attempts_after_the_earlier_ones(tmp_path):
    env = {envnames.ATTEMPT_BASE: "2", "SLURM_JOB_ID": "9"}
    doc = track.mark(str(tmp_path), "RUNNING", env=env)
    assert doc["attempts"] == 3 and doc["history"][-1]["attempt"] == 3 and doc["state"] == "RUNNING"
    doc = track.mark(str(tmp_path), "FAILED", exit_code=1, attempt=3, reason="boom", env=env)
    assert doc["history"][-1]["state"] == "FAILED" and doc["reason"] == "boom" and "wall_s" in doc
