"""The sweep's books without launching a process: identity on re-run, sweep.json as a union,
the one config.json writer, attempts on records, the resume command, the interrupt hook."""

import argparse
import json
import os
import signal

import pytest

from contract import envnames, rundir
from contract.config import ExperimentConfig
from contract.rundir import current_attempt
from sweeper import backends, sweepdir
from sweeper.grid import Experiment
from trainers.common.logwriter import RankLog


def exp(**kw) -> Experiment:
    cfg = ExperimentConfig(strategy="ddp", **kw)
    return Experiment(cfg.experiment_id(), cfg)


def ran(path, e: Experiment, state="COMPLETED", identity=True) -> str:
    run_dir = sweepdir.prepare_experiment(str(path), e, "simulate", "x")
    if not identity:  # a run from before config.json had "identity"
        doc = json.loads(open(os.path.join(run_dir, "config.json")).read())
        doc.pop("identity")
        rundir.write_json(os.path.join(run_dir, "config.json"), doc)
    rundir.write_status(run_dir, state, fresh=True, attempts=1)
    return run_dir


@pytest.mark.parametrize("identity", [True, False])
def test_a_run_with_other_settings_under_the_same_id_is_refused_in_one_line(tmp_path, identity):
    old = exp(model="mlp")
    ran(tmp_path, old, identity=identity)
    new = Experiment(old.id, ExperimentConfig(strategy="ddp", model="cnn"))  # same id, other settings
    line = sweepdir.identity_conflict(str(tmp_path), "x", [new])
    assert line is not None and "\n" not in line
    assert line.startswith(f"sweep x already holds {old.id} run with other settings (model: 'mlp' -> 'cnn')")
    assert line.endswith(f"remove {tmp_path / old.id}")


def test_same_settings_or_no_run_is_no_conflict(tmp_path):
    e = exp(model="cnn", steps=7)
    ran(tmp_path, e)
    assert sweepdir.identity_conflict(str(tmp_path), "x", [e]) is None
    # a directory where nothing ran (prepared, PENDING, no rank file) holds no run to protect
    other = exp(lr=0.2)
    sweepdir.prepare_experiment(str(tmp_path), other, "simulate", "x")
    rundir.write_status(str(tmp_path / other.id), "PENDING", fresh=True, attempts=0)
    changed = Experiment(other.id, ExperimentConfig(strategy="ddp", lr=0.2, seed=3))
    assert sweepdir.identity_conflict(str(tmp_path), "x", [changed]) is None
    (tmp_path / other.id / "rank-0.jsonl").write_text("{}\n")  # ...but once a rank wrote, it is a run
    assert "seed: 0 -> 3" in sweepdir.identity_conflict(str(tmp_path), "x", [changed])


def test_settings_outside_the_identity_are_no_conflict(tmp_path):
    e = exp()
    ran(tmp_path, e)
    again = Experiment(e.id, ExperimentConfig(strategy="ddp", checkpoint_every=5, data_dir="elsewhere"))
    assert sweepdir.identity_conflict(str(tmp_path), "x", [again]) is None


def test_config_json_has_one_writer_that_keeps_config_identity_and_merges_meta(tmp_path):
    e = exp(model="cnn")
    run_dir = sweepdir.prepare_experiment(str(tmp_path), e, "simulate", "x", {"cpu_plan": {"a": 1}})
    rundir.update_config(run_dir, {"torch": "2.x"}, ExperimentConfig(strategy="ddp"), keep_config=True)
    doc = json.loads(open(os.path.join(run_dir, "config.json")).read())
    assert doc["identity"] == e.config.identity() and doc["config"]["model"] == "cnn"
    assert doc["config"]["run_dir"] == run_dir
    assert doc["meta"]["cpu_plan"] == {"a": 1} and doc["meta"]["torch"] == "2.x" and doc["meta"]["sweep"] == "x"


def grid(**kw) -> dict:
    return {"strategies": "ddp", "nodes": "1", "scaling": "strong", "model": "mlp", **kw}


def test_sweep_json_is_the_union_of_invocations_and_lists_only_present_runs(tmp_path):
    path = str(tmp_path)
    first = [exp(), exp(nodes=2)]
    sweepdir.write_sweep(path, "x", "simulate", grid(nodes="1,2"), first)
    second = [exp(model="cnn")]
    sweepdir.write_sweep(path, "x", "simulate", grid(model="cnn"), second)
    doc = json.loads((tmp_path / "sweep.json").read_text())
    ids = [e["id"] for e in doc["experiments"]]
    assert ids == [first[0].id, first[1].id, second[0].id]
    assert all(e["identity"] == x.config.identity() for e, x in zip(doc["experiments"], first + second, strict=True))
    assert [i["experiments"] for i in doc["invocations"]] == [[first[0].id, first[1].id], [second[0].id]]
    # the top-level grid has only what every invocation agrees on: never a value some runs lack
    assert doc["grid"] == {"strategies": "ddp", "scaling": "strong"}
    # a removed run leaves sweep.json; an invocation with no run left goes too
    for e in first:
        os.rename(tmp_path / e.id, tmp_path / f"gone-{e.id}")
    sweepdir.write_sweep(path, "x", "simulate", grid(model="cnn"), second)
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert [e["id"] for e in doc["experiments"]] == [second[0].id]
    assert len(doc["invocations"]) == 2 and doc["grid"] == grid(model="cnn")


def test_sweep_json_from_before_invocations_is_taken_over(tmp_path):
    old = exp()
    os.makedirs(tmp_path / old.id)
    rundir.write_json(str(tmp_path / "sweep.json"), {"sweep": "x", "grid": grid(), "created": "then",
                                                     "experiments": [old.describe()]})
    new = exp(model="cnn")
    sweepdir.write_sweep(str(tmp_path), "x", "simulate", grid(model="cnn"), [new])
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert [e["id"] for e in doc["experiments"]] == [old.id, new.id] and doc["created"] == "then"
    assert "model" not in doc["grid"] and len(doc["invocations"]) == 2


def test_every_record_carries_the_attempt(tmp_path, monkeypatch):
    assert current_attempt({envnames.ATTEMPT: "4", envnames.ATTEMPT_BASE: "9"}) == 4
    assert current_attempt({envnames.ATTEMPT_BASE: "2", "SLURM_RESTART_COUNT": "1"}) == 4
    assert current_attempt({}) == 1
    monkeypatch.setenv(envnames.ATTEMPT, "3")
    log = RankLog(str(tmp_path), 0, "node0")
    log.write("step", step=0)
    assert json.loads((tmp_path / "rank-0.jsonl").read_text())["attempt"] == 3


def test_the_resume_command_names_the_sweep():
    args = argparse.Namespace(dry_run=False)
    book = backends.SweepLedger("/l/20240101-000000", "20240101-000000", "simulate", [], args, ["--nodes", "1,2"])
    assert book.resume_command() == "bin/sweep --nodes 1,2 --sweep 20240101-000000"
    book.argv = ["--sweep", "s", "--model", "it's"]
    assert book.resume_command() == "bin/sweep --sweep s --model 'it'\"'\"'s'"


def test_an_interrupt_raises_once_then_cleanup_is_left_alone():
    with pytest.raises(backends.Interrupted) as info, backends.interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert info.value.signum == signal.SIGTERM and str(info.value) == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
