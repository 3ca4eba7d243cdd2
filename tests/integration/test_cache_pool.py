"""analysis.rankfiles parses many rank files in a pool of worker processes (forked): the same result
as parsing them here, broken lines included, and every entry of the columnar cache written."""

from __future__ import annotations

import glob
import os

import pandas as pd

from analysis import cache, rankfiles
from analysis.load import load_sweep
from analysis.synthetic import write_sweep
from tests.helpers import synthetic_id


def test_a_pool_of_workers_loads_what_one_process_does(tmp_path, monkeypatch):
    path = write_sweep(str(tmp_path), "s", strategies=("ddp",), nodes=(2,), procs=4, steps=30)
    broken = os.path.join(path, synthetic_id("ddp", 2, 4, steps=30), "rank-5.jsonl")
    with open(broken, "a") as f:
        f.write('{"event": "step", "rank": 5, "node": "node1", "ti')
    serial = load_sweep(path, use_cache=False)
    monkeypatch.setattr(rankfiles, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(rankfiles, "cpus", lambda: 2)  # a pool even where this machine has one CPU
    pooled = load_sweep(path)
    assert len(glob.glob(os.path.join(path, cache.CACHE_DIR, "*", "*" + cache.SUFFIX))) == 8
    for name in ("experiments", "steps", "epochs", "ranks", "problems"):
        pd.testing.assert_frame_equal(getattr(serial, name), getattr(pooled, name), obj=name)
    assert list(pooled.problems["kind"]) == ["truncated line"] and len(pooled.steps) == 8 * 30
