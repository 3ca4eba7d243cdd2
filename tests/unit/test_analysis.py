"""Analysis (issue 6 + the analysis part of issue 2): loading, metrics, plots, report, compare.

In-process only, on synthetic sweeps in the real on-disk format, written in milliseconds (the real
sweep and the headless-browser check are in tests/integration/test_analysis_real.py). Experiment
ids come from tests.helpers.synthetic_id, the id analysis.synthetic gives a config.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from matplotlib import pyplot as plt
from PIL import Image

from analysis import AnalysisError, cli, compare
from analysis.axisplots import VIEW_PLOTS
from analysis.cli import generate
from analysis.load import find_sweep, load_sweep
from analysis.metrics import analyse
from analysis.plots import PLOTS
from analysis.synthetic import write_experiment, write_sweep
from contract import rundir
from tests.figures import check_figure, colours, write_plot_sweep
from tests.helpers import synthetic_id

DDP4, DDP8 = synthetic_id("ddp", 4), synthetic_id("ddp", 8)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    logs = tmp_path_factory.mktemp("syn")
    write_plot_sweep(str(logs))
    write_experiment(str(logs / "syn" / DDP8), "ddp", 8, 1, 32, 4, 20, oversubscribed=True)
    return logs


def test_every_plot_on_a_synthetic_sweep(synthetic):
    out = generate(str(synthetic / "syn"))
    drawn = [s for s in PLOTS if s not in VIEW_PLOTS]  # the fixture sweeps nodes and chunks: no view per setting
    assert [p.spec.name for p in out.plots] == [s.name for s in drawn]
    assert [s.name for s, _ in out.not_applicable] == [s.name for s in VIEW_PLOTS]
    for spec, written in zip(drawn, out.plots, strict=True):
        fig = spec.make(out.analysis)
        check_figure(fig, spec.name)
        plt.close(fig)
        assert colours(written.png) > 10, spec.name  # the file generate() wrote is not blank
    thr = out.analysis.groups.set_index(["strategy", "nodes", "chunks"])
    assert thr.loc[("ddp", 8, 4), "oversubscribed"]
    html = open(out.report_html).read()
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) == len(drawn) + 1  # and the answer section's plot (analysis/advise.py)
    for src in imgs:  # embedded only: nothing can break; and every one decodes to a real image
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    s = out.analysis.summary.set_index("experiment")
    assert s.loc[DDP4, "slowest_rank"] == 1 and s.loc[DDP4, "skew"] > 0.3
    pipe = synthetic_id("pipeline", 4, chunks=2)
    assert s.loc[pipe, "bubble_s"] == pytest.approx(s.loc[pipe, "median_step_s"] * 3 / 5)
    assert out.analysis.groups["repeats"].max() == 2


B1, B2, B4 = (synthetic_id("ddp", n, steps=12) for n in (1, 2, 4))  # the broken sweep
BS = synthetic_id("single", 1, steps=12)


def _defective(logs) -> str:
    path = write_sweep(str(logs), "broken", strategies=("single", "ddp"), nodes=(1, 2, 4), steps=12)
    r1 = os.path.join(path, B2, "rank-1.jsonl")
    with open(r1) as f:
        text = f.read()
    with open(r1, "w") as f:  # the rank died while writing its last record
        f.write(text + '{"event": "step", "rank": 1, "node": "node1", "time": 18000')
    r0 = os.path.join(path, B4, "rank-2.jsonl")
    lines = open(r0).read().splitlines(keepends=True)
    lines.insert(5, "\x00\x01 this is not json ]]\n")
    open(r0, "w").writelines(lines)
    os.remove(os.path.join(path, B4, "rank-3.jsonl"))
    failed = os.path.join(path, B1)
    rundir.write_status(failed, "FAILED", fresh=True, exit_code=1, attempts=1)
    with open(os.path.join(failed, "rank-0.jsonl"), "a") as f:
        f.write(json.dumps({"event": "error", "rank": 0, "node": "node0", "time": 1.0,
                            "message": "RuntimeError: injected fault raise@0:7", "traceback": "..."}) + "\n")
    return path


def test_broken_logs_are_reported_not_fatal(tmp_path, capsys):
    path = _defective(tmp_path)
    assert cli.main(["--sweep", "broken", "--logs", str(tmp_path)], "analysis.report", focus="report") == 0
    out = capsys.readouterr().out
    assert "report:" in out and f"problem: {B4}: missing rank file" in out, out
    doc = json.load(open(os.path.join(path, "summary.json")))
    kinds = {(p["experiment"], p["kind"], p["rank"]) for p in doc["problems"]}
    assert kinds == {(B2, "truncated line", 1), (B4, "garbage line", 2),
                     (B4, "missing rank file", 3), (B1, "FAILED", None)}, kinds
    failed = [p for p in doc["problems"] if p["kind"] == "FAILED"][0]
    assert "injected fault raise@0:7" in failed["detail"]
    # Every good record is kept: all 12 steps of every rank present, the garbage and cut lines only dropped.
    a = analyse(load_sweep(path))
    counts = a.data.steps.groupby(["experiment", "rank"], observed=True).size()
    assert counts.loc[(B2, 1)] == 12 and counts.loc[(B4, 2)] == 12
    assert len(counts) == 1 + 1 + 2 + 3  # single, failed ddp-n1 (its steps still count), ddp-n2, ddp-n4 minus one
    s = a.summary.set_index("experiment")
    for exp in (BS, B2, B4):
        assert s.loc[exp, "samples_per_s"] > 0 and s.loc[exp, "timed_steps"] == 10, exp
    html = open(os.path.join(path, "report.html")).read()
    for kind in ("truncated line", "garbage line", "missing rank file", "FAILED"):
        assert kind in html


def test_loader_restart_and_odd_records(tmp_path):
    d = tmp_path / "s" / "ddp-n1-p1-b8-r0"
    write_experiment(str(d), "ddp", 1, 1, 8, 4, 6)
    recs = [json.loads(x) for x in (d / "rank-0.jsonl").read_text().splitlines()]
    # Attempt 2 resumed from a checkpoint at step 3: steps 0..2 stay attempt 1's, 3..5 are attempt 2's.
    restart = [dict(recs[0], attempt=2, time=5.0, start_step=3)] + [dict(r, step_s=1.0) for r in recs[4:7]]
    missing = dict(recs[1], step=99)
    del missing["comm_s"]  # a writer that left a field out takes the slow path, not a crash
    lines = [json.dumps(r) for r in recs[:-1] + restart] + [json.dumps(missing), "", "[1, 2]"]
    (d / "rank-0.jsonl").write_text("\n".join(lines) + "\n")
    data = load_sweep(str(tmp_path / "s"))
    st = data.steps.set_index("step")
    assert sorted(st.index) == [0, 1, 2, 3, 4, 5, 99]
    assert (st.loc[[3, 4, 5], "attempt"] == 2).all() and (st.loc[[3, 4, 5], "step_s"] == 1.0).all()
    assert (st.loc[[0, 1, 2], "attempt"] == 1).all() and np.isnan(st.loc[99, "comm_s"])
    assert list(data.problems["kind"]) == ["sweep.json missing", "garbage line"]


def test_loader_restart_from_scratch_keeps_only_the_last_attempt(tmp_path):
    d = tmp_path / "s" / "ddp-n1-p1-b8-r0"
    write_experiment(str(d), "ddp", 1, 1, 8, 4, 6)
    recs = [json.loads(x) for x in (d / "rank-0.jsonl").read_text().splitlines()]
    again = [dict(recs[0], attempt=2)] + [dict(r, step_s=1.0) for r in recs[1:3] if r["event"] == "step"]
    (d / "rank-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:5] + again))
    st = load_sweep(str(tmp_path / "s")).steps
    assert sorted(st["step"]) == [0, 1] and (st["attempt"] == 2).all()


def test_find_sweep_errors_and_latest(tmp_path):
    for name in ("old", "new"):
        write_sweep(str(tmp_path), name, strategies=("single",), nodes=(1,), steps=4)
    os.utime(tmp_path / "old" / "sweep.json", (1, 1))
    assert find_sweep(str(tmp_path)).endswith("new")
    for bad in ("nope", "../etc", "a b"):
        with pytest.raises(AnalysisError):
            find_sweep(str(tmp_path), bad)
    with pytest.raises(AnalysisError):
        find_sweep(str(tmp_path / "empty"))


def test_compare_flags_a_throughput_drop_and_passes_identical(tmp_path, capsys):
    write_sweep(str(tmp_path), "a", strategies=("single", "ddp"), nodes=(1, 2), steps=10)
    shutil.copytree(tmp_path / "a", tmp_path / "same")
    shutil.copytree(tmp_path / "a", tmp_path / "slow")
    target = tmp_path / "slow" / synthetic_id("ddp", 2, steps=10)
    for f in target.glob("rank-*.jsonl"):  # every step 25% longer = throughput 20% lower
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        f.write_text("".join(json.dumps({**r, "step_s": r["step_s"] * 1.25} if r["event"] == "step" else r) + "\n"
                             for r in recs))
    logs = ["--logs", str(tmp_path)]
    assert compare.main(["a", "same", *logs]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    assert compare.main(["a", "slow", *logs]) == 1
    out = capsys.readouterr().out
    row = [x for x in out.splitlines() if x.startswith(synthetic_id("ddp", 2, steps=10)) and "samples_per_s" in x]
    assert row and "REGRESSED" in row[0] and "-20.0%" in row[0], out
    assert synthetic_id("single", 1, steps=10) not in out  # unchanged experiments are not listed
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"default": 0.3}))
    assert compare.main(["a", "slow", "--tolerances", str(loose), *logs]) == 0
    capsys.readouterr()
    for argv in (["a", "missing", *logs], ["a", "../x", *logs], ["a", "same", "--tolerances", "/nonexistent", *logs]):
        assert compare.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {"speed": 0.1}}))
    assert compare.main(["a", "same", "--tolerances", str(bad), *logs]) == 2
    assert "unknown metric 'speed'" in capsys.readouterr().err
