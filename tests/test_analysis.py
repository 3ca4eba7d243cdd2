"""Analysis (issue 6 + the analysis part of issue 2): loading, metrics, plots, report, compare.

One real sweep (single + ddp at 1 and 2 nodes, 6 steps) is run once for the module; the rest uses
synthetic sweeps in the same on-disk format, written in milliseconds.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from analysis import AnalysisError, cli, compare
from analysis.cli import generate
from analysis.load import find_sweep, load_sweep
from analysis.metrics import analyse
from analysis.plots import PLOTS
from analysis.synthetic import write_experiment, write_sweep
from tests.helpers import ROOT, sweep

CORE_PLOTS = {"throughput", "efficiency", "loss"}  # issue 2's first cut


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real sweep made by bin/sweep, then `python -m analysis.plots` on it as `make plots` runs it."""
    logs = tmp_path_factory.mktemp("logs")
    done = sweep("--nodes", "1,2", "--strategies", "single,ddp", "--steps", "6", "--global-batch", "32",
                 "--sweep", "real", "--logs", str(logs))
    assert done.returncode == 0, done.stdout + done.stderr
    cli = subprocess.run([sys.executable, "-m", "analysis.plots", "--logs", str(logs)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    return logs / "real", cli.stdout


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic sweep that exercises every plot: pipeline chunks, repeats, a straggler, oversubscription."""
    logs = tmp_path_factory.mktemp("syn")
    write_sweep(str(logs), "syn", strategies=("single", "ddp", "pipeline"), nodes=(1, 2, 4), chunks=(2, 4, 8),
                repeats=2, straggler=1)
    write_experiment(str(logs / "syn" / "ddp-n8-p1-b32-r0"), "ddp", 8, 1, 32, 4, 20, oversubscribed=True)
    return logs


def _colours(png: str) -> int:
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def _check_figure(fig: Figure, name: str) -> None:
    assert fig._suptitle is not None and fig._suptitle.get_text(), f"{name}: no title"
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes, name
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axis has no label"
        assert ax.has_data(), f"{name}: empty axes"
    if name not in ("heatmap", "time_to_accuracy"):  # one colour-coded bar/cell per entry: no legend needed
        assert any(ax.get_legend() is not None for ax in axes) or name == "memory", f"{name}: no legend"


def test_real_sweep_plots_summary_and_report(real):
    path, out = real
    assert "report:" in out and "summary:" in out and str(path / "plots") in out, out
    summary = json.loads((path / "summary.json").read_text())
    states = {e["experiment"]: e["state"] for e in summary["experiments"]}
    assert states == {"single-n1-p1-b32-r0": "COMPLETED", "single-n2-p1-b32-r0": "SKIPPED",
                      "ddp-n1-p1-b32-r0": "COMPLETED", "ddp-n2-p1-b32-r0": "COMPLETED"}, states
    assert summary["problems"] == [] and [s["experiment"] for s in summary["skipped"]] == ["single-n2-p1-b32-r0"]
    csv = (path / "summary.csv").read_text().splitlines()
    assert len(csv) == 5 and "samples_per_s" in csv[0] and "efficiency" in csv[0]
    a = analyse(load_sweep(str(path)))
    ddp = a.summary.set_index("experiment").loc["ddp-n2-p1-b32-r0"]
    # Recompute the headline figure by hand from the raw logs: global batch / median over timed steps of the
    # slowest rank's step time.
    per_step: dict[int, float] = {}
    for rank in (0, 1):
        for line in (path / "ddp-n2-p1-b32-r0" / f"rank-{rank}.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["event"] == "step" and not r["warmup"]:
                per_step[r["step"]] = max(per_step.get(r["step"], 0.0), r["step_s"])
    assert len(per_step) == 4
    assert ddp["samples_per_s"] == pytest.approx(32 / np.median(list(per_step.values())), rel=1e-9)
    base = a.summary.set_index("experiment").loc["ddp-n1-p1-b32-r0", "samples_per_s"]
    assert ddp["speedup"] == pytest.approx(ddp["samples_per_s"] / base)
    assert ddp["efficiency"] == pytest.approx(ddp["speedup"] / 2)
    written = {p.stem for p in (path / "plots").glob("*.png")}
    assert CORE_PLOTS | {"breakdown", "memory", "accuracy", "heatmap"} <= written, written
    html = (path / "report.html").read_text()
    for name in written:
        assert f"plots/{name}.png" in html and f"plots/{name}.svg" in html, name
        assert (path / "plots" / f"{name}.svg").stat().st_size > 1000
        assert _colours(str(path / "plots" / f"{name}.png")) > 1, f"{name}.png is blank"
    for spec in PLOTS:
        fig = spec.make(a)
        if spec.name in written:
            _check_figure(fig, spec.name)
        else:
            assert isinstance(fig, str) and spec.name == "chunks", (spec.name, fig)


def test_every_plot_on_a_synthetic_sweep(synthetic, tmp_path):
    out = generate(str(synthetic / "syn"))
    assert [p.spec.name for p in out.plots] == [s.name for s in PLOTS] and not out.not_applicable
    for spec in PLOTS:
        fig = spec.make(out.analysis)
        _check_figure(fig, spec.name)
        png = tmp_path / f"{spec.name}.png"
        fig.savefig(png, dpi=40)
        assert _colours(str(png)) > 10, spec.name
    thr = out.analysis.groups.set_index(["strategy", "nodes", "chunks"])
    assert thr.loc[("ddp", 8, 4), "oversubscribed"]
    html = open(out.report_html).read()
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) == len(PLOTS)
    for src in imgs:  # embedded only: nothing can break; and every one decodes to a real image
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    s = out.analysis.summary.set_index("experiment")
    assert s.loc["ddp-n4-p1-b32-r0", "slowest_rank"] == 1 and s.loc["ddp-n4-p1-b32-r0", "skew"] > 0.3
    assert s.loc["pipeline-n4-p1-b32-c2-1f1b-r0", "bubble_s"] == pytest.approx(
        s.loc["pipeline-n4-p1-b32-c2-1f1b-r0", "median_step_s"] * 3 / 5)
    assert out.analysis.groups["repeats"].max() == 2


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.environ.get("CI") == "true":
        pytest.fail("chromium is missing (CI=true: .ci/run must install Debian's chromium)")
    if not found:
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def test_report_renders_in_headless_chromium(synthetic, tmp_path):
    browser = _chromium()
    html = synthetic / "syn" / "report.html"
    if not html.exists():
        generate(str(synthetic / "syn"))
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--virtual-time-budget=5000"]
    url = html.as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-images="(\d+)" data-broken-images="(\d+)"', dom)
    assert m, "the page's load handler did not run: " + dom[:300]
    assert int(m.group(1)) == len(PLOTS) and m.group(2) == "0", m.group(0)
    for width, height in ((1280, 2400), (390, 1800)):  # laptop, phone
        shot = tmp_path / f"shot-{width}.png"
        subprocess.run([*base, f"--screenshot={shot}", f"--window-size={width},{height}", url],
                       capture_output=True, timeout=120)
        assert shot.exists(), f"no screenshot at width {width}"
        with Image.open(shot) as im:
            rgb = im.convert("RGB")
            colours = rgb.getcolors(maxcolors=1 << 22) or []
            assert rgb.size == (width, height)
            assert len(colours) > 50, f"screenshot at width {width} is blank ({len(colours)} colours)"
            white = max(n for n, c in colours if c == (255, 255, 255)) if any(
                c == (255, 255, 255) for _, c in colours) else 0
            assert white < 0.95 * width * height, f"screenshot at width {width} is almost all white"


def _defective(logs) -> str:
    path = write_sweep(str(logs), "broken", strategies=("single", "ddp"), nodes=(1, 2, 4), steps=12)
    r1 = os.path.join(path, "ddp-n2-p1-b32-r0", "rank-1.jsonl")
    with open(r1) as f:
        text = f.read()
    with open(r1, "w") as f:  # the rank died while writing its last record
        f.write(text + '{"event": "step", "rank": 1, "node": "node1", "time": 18000')
    r0 = os.path.join(path, "ddp-n4-p1-b32-r0", "rank-2.jsonl")
    lines = open(r0).read().splitlines(keepends=True)
    lines.insert(5, "\x00\x01 this is not json ]]\n")
    open(r0, "w").writelines(lines)
    os.remove(os.path.join(path, "ddp-n4-p1-b32-r0", "rank-3.jsonl"))
    failed = os.path.join(path, "ddp-n1-p1-b32-r0")
    with open(os.path.join(failed, "status.json"), "w") as f:
        json.dump({"state": "FAILED", "exit_code": 1, "attempts": 1}, f)
    with open(os.path.join(failed, "rank-0.jsonl"), "a") as f:
        f.write(json.dumps({"event": "error", "rank": 0, "node": "node0", "time": 1.0,
                            "message": "RuntimeError: injected fault raise@0:7", "traceback": "..."}) + "\n")
    return path


def test_broken_logs_are_reported_not_fatal(tmp_path, capsys):
    path = _defective(tmp_path)
    assert cli.main(["--sweep", "broken", "--logs", str(tmp_path)], "analysis.report", focus="report") == 0
    out = capsys.readouterr().out
    assert "report:" in out and "problem: ddp-n4-p1-b32-r0: missing rank file" in out, out
    doc = json.load(open(os.path.join(path, "summary.json")))
    kinds = {(p["experiment"], p["kind"], p["rank"]) for p in doc["problems"]}
    assert kinds == {("ddp-n2-p1-b32-r0", "truncated line", 1), ("ddp-n4-p1-b32-r0", "garbage line", 2),
                     ("ddp-n4-p1-b32-r0", "missing rank file", 3), ("ddp-n1-p1-b32-r0", "FAILED", None)}, kinds
    failed = [p for p in doc["problems"] if p["kind"] == "FAILED"][0]
    assert "injected fault raise@0:7" in failed["detail"]
    # Every good record is kept: all 12 steps of every rank present, the garbage and cut lines only dropped.
    a = analyse(load_sweep(path))
    counts = a.data.steps.groupby(["experiment", "rank"], observed=True).size()
    assert counts.loc[("ddp-n2-p1-b32-r0", 1)] == 12 and counts.loc[("ddp-n4-p1-b32-r0", 2)] == 12
    assert len(counts) == 1 + 1 + 2 + 3  # single, failed ddp-n1 (its steps still count), ddp-n2, ddp-n4 minus one
    s = a.summary.set_index("experiment")
    for exp in ("single-n1-p1-b32-r0", "ddp-n2-p1-b32-r0", "ddp-n4-p1-b32-r0"):
        assert s.loc[exp, "samples_per_s"] > 0 and s.loc[exp, "timed_steps"] == 10, exp
    html = open(os.path.join(path, "report.html")).read()
    for kind in ("truncated line", "garbage line", "missing rank file", "FAILED"):
        assert kind in html


def test_loader_restart_and_odd_records(tmp_path):
    d = tmp_path / "s" / "ddp-n1-p1-b8-r0"
    write_experiment(str(d), "ddp", 1, 1, 8, 4, 6)
    recs = [json.loads(x) for x in (d / "rank-0.jsonl").read_text().splitlines()]
    restart = [dict(recs[0], attempt=2, time=5.0)] + [dict(r, step_s=1.0) for r in recs[4:7]]  # steps 3..5 again
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
    target = tmp_path / "slow" / "ddp-n2-p1-b32-r0"
    for f in target.glob("rank-*.jsonl"):  # every step 25% longer = throughput 20% lower
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        f.write_text("".join(json.dumps({**r, "step_s": r["step_s"] * 1.25} if r["event"] == "step" else r) + "\n"
                             for r in recs))
    logs = ["--logs", str(tmp_path)]
    assert compare.main(["a", "same", *logs]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    assert compare.main(["a", "slow", *logs]) == 1
    out = capsys.readouterr().out
    row = [x for x in out.splitlines() if x.startswith("ddp-n2-p1-b32-r0") and "samples_per_s" in x]
    assert row and "REGRESSED" in row[0] and "-20.0%" in row[0], out
    assert "single-n1-p1-b32-r0" not in out  # unchanged experiments are not listed
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
