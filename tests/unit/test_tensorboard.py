"""`make tensorboard` (issue 12 item 4): event files read back with tensorboard's own reader and
compared with the rank logs, record by record; hparams = the identity in config.json; a rebuild
duplicates nothing. The one test module that imports tensorboard (a slow import)."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2

from analysis import cli
from analysis.synthetic import write_sweep

MIB = 2**20
STEP_TAGS = {"loss/train", "time/step_s", "time/compute_s", "time/comm_s", "throughput/samples_per_s",
             "memory/peak_mib"}
EPOCH_TAGS = {"val/acc", "val/loss", "epoch/time_s"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    logs = tmp_path_factory.mktemp("tb")
    write_sweep(str(logs), "tb", strategies=("single", "ddp", "pipeline"), nodes=(1, 2), steps=12,
                steps_per_epoch=5, chunks=(2,))
    assert cli.run(["tensorboard", "--sweep", "tb", "--logs", str(logs)]) == 0
    return logs / "tb"


def _rank_records(exp_dir) -> list[dict]:
    out = []
    for name in sorted(os.listdir(exp_dir)):
        if name.startswith("rank-"):
            out += [json.loads(line) for line in open(os.path.join(exp_dir, name))]
    return out


def _expected(exp_dir) -> tuple[dict, dict, dict]:
    """From the rank files alone: per step and tag (value, wall time); per epoch tag (step, value)."""
    recs = _rank_records(exp_dir)
    batch = json.load(open(os.path.join(exp_dir, "config.json")))["config"]["global_batch"]
    steps = defaultdict(list)
    for r in recs:
        if r["event"] == "step":
            steps[r["step"]].append(r)
    per_step = {}
    for s, rs in steps.items():
        with_loss = [r for r in rs if r["loss"] is not None]
        step_s = max(r["step_s"] for r in rs)
        v = {"loss/train": sum(r["loss"] * r["samples"] for r in with_loss) / sum(r["samples"] for r in with_loss),
             "time/step_s": step_s, "throughput/samples_per_s": batch / step_s,
             "memory/peak_mib": max(r["mem_bytes"] for r in rs) / MIB}
        if rs[0]["compute_s"] is not None:
            v["time/compute_s"] = np.mean([r["compute_s"] for r in rs])
            v["time/comm_s"] = np.mean([r["comm_s"] for r in rs])
        per_step[s] = (v, max(r["time"] for r in rs))
    epochs = defaultdict(list)
    for r in recs:
        if r["event"] == "epoch":
            epochs[r["epoch"]].append(r)
    per_epoch = {}
    for e, rs in epochs.items():
        last = max(r["step"] for r in recs if r["event"] == "step" and r["epoch"] == e)
        accs = [r["val_acc"] for r in rs if r["val_acc"] is not None]
        per_epoch[e] = (last, {"val/acc": float(np.median(accs)), "epoch/time_s": max(r["epoch_s"] for r in rs)})
    identity = json.load(open(os.path.join(exp_dir, "config.json")))["identity"]
    return per_step, per_epoch, {"data_size": 0, **identity}


def _read(run_dir) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _hparams(acc: ea.EventAccumulator) -> dict:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def test_event_files_equal_the_logs(sweep):
    tb = sweep / "tensorboard"
    measured = sorted(d for d in os.listdir(sweep) if os.path.exists(sweep / d / "rank-0.jsonl"))
    skipped = [d for d in os.listdir(sweep) if (sweep / d).is_dir() and d not in measured and d != "tensorboard"]
    assert skipped, "the fixture has a skipped experiment (single on 2 nodes)"
    assert sorted(d for d in os.listdir(tb) if (tb / d).is_dir()) == measured  # one run per measured experiment
    for exp in measured:
        per_step, per_epoch, identity = _expected(sweep / exp)
        acc = _read(tb / exp)
        tags = set(acc.Tags()["scalars"])
        assert EPOCH_TAGS <= tags and {"loss/train", "time/step_s", "throughput/samples_per_s"} <= tags, tags
        pipelined = exp.startswith("pipeline")
        assert ({"time/compute_s", "time/comm_s"} <= tags) != pipelined, exp  # null timers: no tag, no zeros
        for tag in STEP_TAGS & tags:
            events = acc.Scalars(tag)
            assert [e.step for e in events] == sorted(per_step), (exp, tag)
            for e in events:
                want, wall = per_step[e.step]
                assert e.value == pytest.approx(want[tag], rel=1e-6), (exp, tag, e.step)
                assert e.wall_time == pytest.approx(wall), (exp, tag, e.step)
        for tag in ("val/acc", "epoch/time_s"):
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            want = [(last, v[tag]) for _, (last, v) in sorted(per_epoch.items())]
            assert [s for s, _ in got] == [s for s, _ in want] and \
                [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), (exp, tag)
        assert _hparams(acc) == identity, exp


def test_rebuild_duplicates_nothing(sweep, capsys):
    tb = sweep / "tensorboard"
    before = {d: _read(tb / d) for d in os.listdir(tb) if (tb / d).is_dir()}
    counts = {d: {t: len(a.Scalars(t)) for t in a.Tags()["scalars"]} for d, a in before.items()}
    assert cli.run(["tensorboard", "--sweep", "tb", "--logs", str(sweep.parent)]) == 0
    out = capsys.readouterr().out
    assert f"{len(before)} TensorBoard run(s)" in out and f"tensorboard --logdir {tb}" in out, out
    for d, want in counts.items():
        assert len([f for f in os.listdir(tb / d) if f.startswith("events.out.tfevents")]) == 1, d
        acc = _read(tb / d)
        assert {t: len(acc.Scalars(t)) for t in acc.Tags()["scalars"]} == want, d
    assert not [f for f in os.listdir(sweep) if f.startswith("tensorboard.")], "a temporary folder was left"
    root = _read(tb)  # the sweep-wide hparams config: every setting and the summary metrics
    assert "_hparams_/experiment" in root.PluginTagToContent("hparams")


def test_bad_input_one_line_exit_2(sweep, capsys):
    for argv in (["--sweep", "no-such-sweep"], ["--sweep", "tb", "--target-acc", "2"], ["--sweep", "../x"]):
        assert cli.run(["tensorboard", *argv, "--logs", str(sweep.parent)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_hparams_without_a_stored_identity(tmp_path):
    """A config.json without `identity` (hand-edited, older): the identity its `config` gives."""
    path = write_sweep(str(tmp_path), "old", strategies=("ddp",), nodes=(2,), steps=6)
    exp = next(d for d in os.listdir(path) if d.startswith("ddp"))
    cfg = os.path.join(path, exp, "config.json")
    doc = json.load(open(cfg))
    del doc["identity"]
    json.dump(doc, open(cfg, "w"))
    assert cli.run(["tensorboard", "--sweep", "old", "--logs", str(tmp_path)]) == 0
    got = _hparams(_read(os.path.join(path, "tensorboard", exp)))
    assert got["strategy"] == "ddp" and got["nodes"] == 2 and got["data_size"] == 0 and got["lr"] == 0.05, got
