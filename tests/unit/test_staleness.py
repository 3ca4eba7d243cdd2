"""asyncps's `staleness` in the analysis: the step records' field in the steps frame, the summary's
`staleness_mean`, and the report's note that runs with S > 0 are not bit-reproducible."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from analysis.load import load_sweep
from analysis.logread import parse_rank_bytes
from analysis.metrics import analyse
from analysis.report import not_reproducible, write_report
from analysis.synthetic import write_sweep
from contract import registry

SETTINGS = {"asyncps": ({"staleness": 0}, {"staleness": 2})}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    return write_sweep(str(tmp_path_factory.mktemp("logs")), "stale", strategies=("ddp", "asyncps"), nodes=(1, 2),
                       procs=2, steps=12, settings=SETTINGS)


def _records(run_dir: str, rank: int) -> list[dict]:
    with open(os.path.join(run_dir, f"rank-{rank}.jsonl")) as f:
        return [json.loads(line) for line in f if '"event": "step"' in line]


def test_rank_file_staleness_column_nan_where_a_record_lacks_it() -> None:
    base = {"event": "step", "rank": 1, "node": "n", "epoch": 0, "samples": 8, "step_s": 0.1, "compute_s": 0.05,
            "comm_s": 0.01, "comm_bytes": 10, "loss": 1.0, "mem_bytes": 1, "time": 1.0, "warmup": False, "cpu_s": 0.1}
    lines = [{**base, "step": 0, "staleness": 2}, {**base, "step": 1, "staleness": 0}, {**base, "step": 2}]
    rf = parse_rank_bytes("".join(json.dumps(r) + "\n" for r in lines).encode())
    assert rf.steps["staleness"][:2].tolist() == [2.0, 0.0] and math.isnan(rf.steps["staleness"][2])
    assert rf.steps["cpu_s"].tolist() == [0.1] * 3  # the other optional field kept on the slower path
    plain = parse_rank_bytes("".join(json.dumps({**base, "step": i}) + "\n" for i in range(3)).encode())
    assert np.isnan(plain.steps["staleness"]).all() and plain.steps["cpu_s"].tolist() == [0.1] * 3


def test_steps_frame_and_summary_mean_staleness(sweep: str) -> None:
    data = load_sweep(sweep)
    a = analyse(data)
    s = a.summary.set_index("experiment")
    by_exp = {e: cfg["config"] for e, cfg in data.configs.items()}
    seen = 0
    for exp, cfg in by_exp.items():
        run_dir = os.path.join(sweep, exp)
        if cfg["strategy"] != "asyncps":
            assert math.isnan(s.loc[exp, "staleness_mean"])
            assert data.steps[data.steps["experiment"] == exp]["staleness"].isna().all()
            continue
        world = cfg["nodes"] * cfg["procs_per_node"]
        # by hand: every worker's timed (non-warm-up) step records; the server (rank 0) has none
        lags = [r["staleness"] for rank in range(1, world) for r in _records(run_dir, rank) if not r["warmup"]]
        assert all("staleness" not in r for r in _records(run_dir, 0))
        assert s.loc[exp, "staleness_mean"] == pytest.approx(np.mean(lags), rel=1e-12)
        assert max(lags) <= cfg["staleness"]
        if cfg["staleness"] == 0:
            assert s.loc[exp, "staleness_mean"] == 0.0
        else:
            assert 0 < s.loc[exp, "staleness_mean"] < cfg["staleness"]
        seen += 1
    assert seen == 4  # asyncps at S 0 and 2, on 1 and 2 nodes of 2 ranks


def test_report_says_runs_with_staleness_are_not_bit_reproducible(sweep: str, tmp_path) -> None:
    assert not registry.get("asyncps").reproducible({"staleness": 2})
    assert registry.get("asyncps").reproducible({"staleness": 0}) and registry.get("localsgd").reproducible({})
    a = analyse(load_sweep(sweep))
    assert not_reproducible(a.summary) == ["asyncps[staleness=2]"]
    html = open(write_report(a, [], [], os.path.join(sweep, "report.html"))).read()
    assert 'id="not-reproducible"' in html and "asyncps[staleness=2]" in html
    assert html.index('id="not-reproducible"') < html.index("<table", html.index('id="summary"'))  # by the summary
    rest = a.summary[~((a.summary["strategy"] == "asyncps") & (a.summary["staleness"] > 0))]
    assert not_reproducible(rest) == []
    a.summary = rest
    assert 'id="not-reproducible"' not in open(write_report(a, [], [], str(tmp_path / "report.html"))).read()
