"""The projection reads runs through analysis.load: the last attempt of each rank file only."""

from __future__ import annotations

import json

from analysis.projection.points import load_point, load_points
from analysis.synthetic import write_sweep


def test_points_ignore_earlier_attempts(tmp_path):
    path = write_sweep(str(tmp_path), "s", strategies=("single", "ddp"), nodes=(1, 2), steps=10)
    before = load_points(path)
    assert {p.strategy for p in before} == {"single", "ddp"} and all(p.busy for p in before)
    run = next(p for p in before if p.strategy == "ddp" and p.nodes == 2).experiment
    for f in (tmp_path / "s" / run).glob("rank-*.jsonl"):
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        failed = [{**r, "attempt": 0} if r["event"] == "start" else {**r, "step_s": 99.0}
                  for r in recs if r["event"] in ("start", "step")]  # a slow attempt that died
        for r in recs:
            if r["event"] == "start":
                r["attempt"] = 2
        f.write_text("".join(json.dumps(r) + "\n" for r in failed + recs))
    assert load_points(path) == before
    assert load_point(str(tmp_path / "s" / run)) == next(p for p in before if p.experiment == run)
