"""Analysis on a real sweep (bin/sweep, then `python -m analysis.cli plots` as `make plots` runs it), and
the report of a synthetic sweep rendered in headless chromium. The in-process analysis tests are in
tests/unit/test_analysis.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from analysis.axisplots import VIEW_PLOTS
from analysis.cli import generate
from analysis.load import load_sweep
from analysis.metrics import analyse
from analysis.plots import PLOTS
from tests.figures import check_figure, colours, write_plot_sweep
from tests.helpers import ROOT, exp_id, sweep

pytestmark = pytest.mark.timeout(600)  # the real sweep and analysis.plots run in the first test's setup

CORE_PLOTS = {"throughput", "efficiency", "loss"}  # issue 2's first cut
REAL = {"steps": 6, "global_batch": 32}  # the real sweep's settings


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real sweep made by bin/sweep, then `python -m analysis.cli plots --svg` on it as `make plots SVG=1`
    runs it."""
    logs = tmp_path_factory.mktemp("logs")
    done = sweep("--nodes", "1,2", "--strategies", "single,ddp", "--steps", "6", "--global-batch", "32",
                 "--sweep", "real", "--logs", str(logs))
    assert done.returncode == 0, done.stdout + done.stderr
    cli = subprocess.run([sys.executable, "-m", "analysis.cli", "plots", "--logs", str(logs), "--svg"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    return logs / "real", cli.stdout


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    logs = tmp_path_factory.mktemp("syn")
    write_plot_sweep(str(logs))
    return logs


def test_real_sweep_plots_summary_and_report(real):
    path, out = real
    assert "report:" in out and "summary:" in out and str(path / "plots") in out, out
    summary = json.loads((path / "summary.json").read_text())
    states = {e["experiment"]: e["state"] for e in summary["experiments"]}
    single1, single2, ddp1, ddp2 = (exp_id(s, n, **REAL) for s, n in (("single", 1), ("single", 2), ("ddp", 1),
                                                                       ("ddp", 2)))
    assert states == {single1: "COMPLETED", single2: "SKIPPED", ddp1: "COMPLETED", ddp2: "COMPLETED"}, states
    assert summary["problems"] == [] and [s["experiment"] for s in summary["skipped"]] == [single2]
    csv = (path / "summary.csv").read_text().splitlines()
    assert len(csv) == 5 and "samples_per_s" in csv[0] and "efficiency" in csv[0]
    a = analyse(load_sweep(str(path)))
    ddp = a.summary.set_index("experiment").loc[ddp2]
    # Recompute the headline figure by hand from the raw logs: global batch / median over timed steps of the
    # slowest rank's step time.
    per_step: dict[int, float] = {}
    for rank in (0, 1):
        for line in (path / ddp2 / f"rank-{rank}.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["event"] == "step" and not r["warmup"]:
                per_step[r["step"]] = max(per_step.get(r["step"], 0.0), r["step_s"])
    assert len(per_step) == 4
    assert ddp["samples_per_s"] == pytest.approx(32 / np.median(list(per_step.values())), rel=1e-9)
    base = a.summary.set_index("experiment").loc[ddp1, "samples_per_s"]
    assert ddp["speedup"] == pytest.approx(ddp["samples_per_s"] / base)
    assert ddp["efficiency"] == pytest.approx(ddp["speedup"] / 2)
    written = {p.stem for p in (path / "plots").glob("*.png")}
    assert CORE_PLOTS | {"breakdown", "memory", "accuracy", "heatmap"} <= written, written
    html = (path / "report.html").read_text()
    for name in written:
        assert f"plots/{name}.png" in html and f"plots/{name}.svg" in html, name
        assert (path / "plots" / f"{name}.svg").stat().st_size > 1000
        assert colours(str(path / "plots" / f"{name}.png")) > 1, f"{name}.png is blank"
    for spec in PLOTS:
        fig = spec.make(a)
        if spec.name in written:
            check_figure(fig, spec.name)
        else:
            assert isinstance(fig, str) and spec.name in {"chunks", *(v.name for v in VIEW_PLOTS)}, (spec.name, fig)


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
    assert int(m.group(1)) == len(PLOTS) - len(VIEW_PLOTS) + 1 and m.group(2) == "0", m.group(0)  # no view; + answer
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
