"""Epochs (issue 12 item 3): per experiment, complete epochs, mean epoch time, epochs and time to the
target accuracy, in summary.csv and report.html, and the accuracy-vs-epoch plot. Every expected
figure is computed here from the rank files themselves."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict

import numpy as np
import pytest
from matplotlib import pyplot as plt

from analysis import cli
from analysis.load import load_sweep
from analysis.metrics import TARGET_FRACTION, analyse
from analysis.plots import plot_epochs
from analysis.report import write_report
from analysis.synthetic import write_experiment, write_sweep
from tests.helpers import synthetic_id

TARGET = 0.5


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """12 steps, 5 per epoch: epochs 0 and 1 complete, epoch 2 cut short after 2 steps."""
    logs = tmp_path_factory.mktemp("ep")
    path = write_sweep(str(logs), "ep", strategies=("single", "ddp"), nodes=(1, 2), steps=12, steps_per_epoch=5)
    a = analyse(load_sweep(path), TARGET)
    cli.write_exports(a, path)  # what `make plots TARGET_ACC=0.5` writes, the figures left out (test_analysis.py)
    write_report(a, [], [], os.path.join(path, "report.html"))
    return logs / "ep"


def _epochs(exp_dir) -> dict[int, dict]:
    """Per epoch, from the rank files: its slowest rank's epoch_s, the accuracy, the record time, the steps."""
    recs = []
    for name in os.listdir(exp_dir):
        if name.startswith("rank-"):
            recs += [json.loads(line) for line in open(os.path.join(exp_dir, name))]
    start = min(r["time"] for r in recs if r["event"] == "start")
    out: dict[int, dict] = defaultdict(lambda: {"epoch_s": 0.0, "acc": None, "time": 0.0, "steps": set()})
    for r in recs:
        e = out[r["epoch"]] if r["event"] in ("step", "epoch") else None
        if r["event"] == "step":
            e["steps"].add(r["step"])
        elif r["event"] == "epoch":
            e["epoch_s"] = max(e["epoch_s"], r["epoch_s"])
            e["time"] = max(e["time"], r["time"] - start)
            e["acc"] = r["val_acc"] if r["val_acc"] is not None else e["acc"]
    return dict(out)


def test_epoch_figures_in_summary_csv(sweep):
    rows = {r["experiment"]: r for r in csv.DictReader(open(sweep / "summary.csv"))}
    measured = [x for x, r in rows.items() if r["state"] == "COMPLETED"]
    assert len(measured) == 3  # single n1, ddp n1, ddp n2 (single n2 is skipped)
    for x in measured:
        ep = _epochs(sweep / x)
        assert [len(ep[e]["steps"]) for e in sorted(ep)] == [5, 5, 2]
        r = rows[x]
        assert int(r["epochs_done"]) == 2  # the cut-short epoch 2 is not a complete epoch
        assert float(r["mean_epoch_s"]) == pytest.approx(np.mean([ep[0]["epoch_s"], ep[1]["epoch_s"]]))
        hit = next(e for e in sorted(ep) if ep[e]["acc"] >= TARGET)
        assert int(float(r["epochs_to_target"])) == hit + 1  # epochs count from 1
        assert float(r["time_to_target_s"]) == pytest.approx(ep[hit]["time"])
    summary = json.load(open(sweep / "summary.json"))
    assert summary["target_acc"] == TARGET


def test_report_shows_epochs(sweep):
    html = (sweep / "report.html").read_text()
    for header in ("epoch (s)", "epochs to target", "time to target (s)"):
        assert f"<th>{header}</th>" in html, header
    rows = {r["experiment"]: r for r in csv.DictReader(open(sweep / "summary.csv"))}
    x = synthetic_id("ddp", 2, steps=12)
    cells = re.search(rf'<td class="text">{x}</td>(.*?)</tr>', html, re.S).group(1)
    assert f"<td>{float(rows[x]['mean_epoch_s']):.2f}</td>" in cells and \
        f"<td>{int(float(rows[x]['epochs_to_target']))}</td>" in cells, cells


def test_accuracy_vs_epoch_plot(sweep):
    a = analyse(load_sweep(str(sweep)), TARGET)
    fig = plot_epochs(a)
    ax_acc, ax_time = fig.axes
    x = synthetic_id("ddp", 2, steps=12)
    ep = _epochs(sweep / x)
    label = next(line for line in ax_acc.lines if line.get_label().startswith("ddp") and "n2" in line.get_label())
    assert list(label.get_xdata()) == [1, 2, 3]
    assert list(label.get_ydata()) == pytest.approx([ep[e]["acc"] for e in (0, 1, 2)])
    target = [line for line in ax_acc.lines if line.get_label().startswith("target")]
    assert target and target[0].get_ydata()[0] == TARGET
    times = next(line for line in ax_time.lines if line.get_label() == label.get_label())
    assert list(times.get_ydata()) == pytest.approx([ep[e]["epoch_s"] for e in (0, 1, 2)])
    assert ax_acc.get_xlabel() == "epoch" and ax_acc.get_ylabel() and ax_time.get_ylabel()
    plt.close(fig)


def test_default_target_and_a_target_never_reached(sweep):
    a = analyse(load_sweep(str(sweep)))
    best = max(e["acc"] for x in os.listdir(sweep) if (sweep / x / "rank-0.jsonl").exists()
               for e in _epochs(sweep / x).values())
    assert a.target_acc == pytest.approx(round(best * TARGET_FRACTION, 4))  # the documented default
    never = analyse(load_sweep(str(sweep)), 0.999)
    m = never.measured
    assert m["epochs_to_target"].isna().all() and m["time_to_target_s"].isna().all()


def test_only_epoch_cut_short_has_no_mean(tmp_path):
    """4 steps of an epoch of 46 (1500 digits / batch 32): no complete epoch, no mean epoch time."""
    run = tmp_path / "short" / "single-n1-p1-b32-r0"
    write_experiment(str(run), "single", 1, 1, 32, 4, 4, steps_per_epoch=10)
    a = analyse(load_sweep(str(tmp_path / "short")))
    row = a.summary.iloc[0]
    assert row["epochs_done"] == 0 and np.isnan(row["mean_epoch_s"])


def test_bad_target_exit_2_nothing_written(tmp_path, capsys):
    write_sweep(str(tmp_path), "t", strategies=("single",), nodes=(1,), steps=4)
    for bad in ("0", "1.5", "x"):
        assert cli.run(["plots", "--sweep", "t", "--logs", str(tmp_path), "--target-acc", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "target-acc" in err, err
    assert not (tmp_path / "t" / "summary.csv").exists()
