"""Views per swept setting (issue 12 item 2, the analysis side): throughput vs batch and vs data size,
layouts at equal world size, precision. Each is drawn only where its axis varies with every other
identity setting equal, shows exactly the medians of those configurations, and is otherwise listed
as not drawn with the reason. Synthetic sweeps in the real on-disk format, with the settings
analysis.synthetic does not vary (data_size, precision, lr) set in config.json as a sweep would."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from matplotlib import pyplot as plt

from analysis.axisplots import BATCH, DATA_SIZE, LAYOUT, PRECISION, VIEW_PLOTS, comparisons
from analysis.load import load_sweep
from analysis.metrics import analyse
from analysis.plots import make_plots
from analysis.report import write_report
from analysis.synthetic import write_experiment, write_sweep
from contract.tables import TRAIN_SAMPLES

VIEWS = {s.name: s for s in VIEW_PLOTS}


def add_experiment(sweep_dir, strategy: str, nodes: int, procs: int, batch: int, slow: float = 1.0,
                   repeat: int = 0, steps: int = 8, **settings) -> str:
    """One synthetic experiment with identity settings of its own (as config.json holds them)."""
    name = "-".join([strategy, f"n{nodes}", f"p{procs}", f"b{batch}", *(f"{k}{v}" for k, v in settings.items()),
                     f"r{repeat}"])
    path = os.path.join(sweep_dir, name)
    write_experiment(path, strategy, nodes, procs, batch, 4, steps, repeat=repeat, slow=slow, steps_per_epoch=4)
    with open(os.path.join(path, "config.json")) as f:
        doc = json.load(f)
    doc["config"].update(settings)
    doc["identity"].update(settings)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(doc, f)
    return name


def write_listing(sweep_dir, names: list[str]) -> None:
    with open(os.path.join(sweep_dir, "sweep.json"), "w") as f:
        json.dump({"sweep": os.path.basename(sweep_dir), "backend": "simulate",
                   "experiments": [{"id": n, "skipped": None} for n in names]}, f)


@pytest.fixture(scope="module")
def axes(tmp_path_factory):
    """ddp on 2 ranks as 1x2 and 2x1; at 2x1 also batch 64, bf16, data sizes 320 and 640, lr 0.1; single."""
    d = tmp_path_factory.mktemp("views") / "axes"
    names = [add_experiment(d, "ddp", 1, 2, 32, slow=0.8), add_experiment(d, "ddp", 2, 1, 32),
             add_experiment(d, "ddp", 2, 1, 64), add_experiment(d, "ddp", 2, 1, 32, slow=0.6, precision="bf16"),
             add_experiment(d, "ddp", 2, 1, 32, slow=1.3, data_size=320),
             add_experiment(d, "ddp", 2, 1, 32, slow=1.6, data_size=640),
             add_experiment(d, "ddp", 2, 1, 32, lr=0.1), add_experiment(d, "single", 1, 1, 32)]
    write_listing(d, names)
    return d, analyse(load_sweep(str(d)))


BASE = {"strategy": "ddp", "nodes": 2, "procs_per_node": 1, "global_batch": 32, "precision": "fp32", "data_size": 0,
        "lr": 0.05}  # the configuration every other one differs from in one setting


def _row(a, **settings):
    g = a.groups
    match = {**BASE, **settings}
    hit = g[np.logical_and.reduce([g[k] == v for k, v in match.items()])]
    assert len(hit) == 1, (match, len(hit))
    return hit.iloc[0]


def test_nothing_pooled_across_settings(axes):
    _, a = axes
    assert len(a.groups) == 8 and (a.groups["repeats"] == 1).all()  # 8 experiments, 8 configurations
    assert {"data_size", "lr", "optimizer"} <= set(a.config_key) and "repeat" not in a.config_key
    s = a.summary.set_index("experiment")
    assert s.loc["ddp-n2-p1-b32-data_size320-r0", "data_size"] == 320
    assert s.loc["ddp-n2-p1-b32-r0", "data_size"] == 0  # not in the identity: the default, the whole set


def test_each_view_compares_one_setting_alone(axes):
    _, a = axes
    expected = {BATCH: [("global_batch", 32), ("global_batch", 64)],
                PRECISION: [("precision", "fp32"), ("precision", "bf16")],
                DATA_SIZE: [("data_size", 0), ("data_size", 320), ("data_size", 640)],
                LAYOUT: [("procs_per_node", 2), ("procs_per_node", 1)]}
    for axis, members in expected.items():
        d, why = comparisons(a, axis)
        assert why is None and d["series"].nunique() == 1, (axis.label, why)
        got = sorted(d[members[0][0]].tolist())
        assert got == sorted(v for _, v in members), (axis.label, got)
        others = [k for k in a.config_key if k not in axis.columns and k != "world_size"]
        if axis is LAYOUT:
            others = [k for k in others if k not in ("nodes", "procs_per_node")]
        assert (d[others].nunique(dropna=False) == 1).all(), axis.label  # everything else equal


def _bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_views_draw_the_medians(axes):
    _, a = axes
    fig = VIEWS["batch"].make(a)
    line = fig.axes[0].lines[0]
    want = [_row(a, global_batch=b)["samples_per_s"] for b in (32, 64)]
    assert list(line.get_xdata()) == [32, 64] and list(line.get_ydata()) == pytest.approx(want)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["ddp 2x1"]  # the layout all share
    assert fig.axes[1].get_ylabel() == "epochs to the target accuracy"
    plt.close(fig)

    fig = VIEWS["data_size"].make(a)
    line = fig.axes[0].lines[0]
    whole = TRAIN_SAMPLES["digits"]  # data_size 0: the whole training set
    assert list(line.get_xdata()) == [320, 640, whole]
    want = [_row(a, data_size=n)["samples_per_s"]
            for n in (320, 640, 0)]
    assert list(line.get_ydata()) == pytest.approx(want)
    epoch_line = fig.axes[1].lines[0]
    assert list(epoch_line.get_ydata()) == pytest.approx(
        [_row(a, data_size=n)["mean_epoch_s"]
         for n in (320, 640, 0)])
    plt.close(fig)

    fig = VIEWS["layouts"].make(a)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["1 x 2", "2 x 1"], labels
    want = [_row(a, nodes=n, procs_per_node=p)["samples_per_s"] for n, p in ((1, 2), (2, 1))]
    assert _bar_heights(fig.axes[0]) == pytest.approx(want)
    plt.close(fig)

    fig = VIEWS["precision"].make(a)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["fp32", "bf16"]  # the choices' order
    want = [_row(a, precision=p)["samples_per_s"] for p in ("fp32", "bf16")]
    assert _bar_heights(fig.axes[0]) == pytest.approx(want)
    assert want[1] > want[0]  # the bf16 experiment was written 0.6x as slow
    assert [ax.get_ylabel() for ax in fig.axes] == ["global throughput (samples/s)", "peak memory per rank (MiB)",
                                                   "final training loss"]
    plt.close(fig)


def test_views_not_drawn_say_why(tmp_path):
    """A sweep over nodes only: no view applies; the report lists each with its reason."""
    path = write_sweep(str(tmp_path), "nodes", strategies=("ddp",), nodes=(1, 2), steps=6)
    a = analyse(load_sweep(path))
    reasons = {"batch": "batch does not vary in this sweep", "data_size": "data size does not vary in this sweep",
               "precision": "precision does not vary in this sweep",
               "layouts": "no world size was measured in two layouts (nodes x procs per node) with every other "
                          "setting equal",
               "wall_time": "every experiment does the maths of single (the loss and accuracy plots compare them)"}
    assert {name: VIEWS[name].make(a) for name in reasons} == reasons
    written, not_drawn = make_plots(a, os.path.join(path, "plots"), only=VIEW_PLOTS)
    assert not written and dict((s.name, why) for s, why in not_drawn) == reasons
    html = open(write_report(a, written, not_drawn, os.path.join(path, "report.html"))).read()
    for name, why in reasons.items():
        assert f"<b>{VIEWS[name].title}</b> ({why})" in html


def test_an_axis_that_varies_only_with_another_is_not_drawn(tmp_path):
    """Batch 32 at 1 node and 64 at 2 (weak scaling's pattern): batch varies, never alone."""
    d = tmp_path / "weak"
    write_listing(d, [add_experiment(d, "ddp", 1, 1, 32), add_experiment(d, "ddp", 2, 1, 64)])
    a = analyse(load_sweep(str(d)))
    assert VIEWS["batch"].make(a) == ("batch varies in this sweep, but never with every other setting equal among "
                                      "the measured experiments")


def test_older_sweep_without_data_size(tmp_path):
    """config.json of a sweep older than DATA_SIZE: read as 0, the whole training set."""
    path = write_sweep(str(tmp_path), "old", strategies=("ddp",), nodes=(1, 2), steps=6)
    for name in os.listdir(path):
        cfg = os.path.join(path, name, "config.json")
        if os.path.exists(cfg):
            doc = json.load(open(cfg))
            doc["config"].pop("data_size", None)
            doc["identity"].pop("data_size", None)
            json.dump(doc, open(cfg, "w"))
    a = analyse(load_sweep(path))
    assert a.summary["data_size"].tolist() == [0, 0] and "data_size" in a.config_key
    assert VIEWS["data_size"].make(a) == "data size does not vary in this sweep"
