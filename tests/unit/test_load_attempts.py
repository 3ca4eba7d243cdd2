"""analysis.load keeps the last attempt of a rank file only, and counts the earlier ones.

Hand-written rank files: no process is launched.
"""

from __future__ import annotations

import json
import os

from analysis.load import load_run, load_sweep
from analysis.logread import parse_rank_file
from analysis.metrics import analyse
from analysis.synthetic import write_experiment


def _step(step: int, step_s: float, **kw) -> dict:
    return {"event": "step", "rank": 0, "node": "node0", "time": 100.0 + step, "step": step, "epoch": 0,
            "samples": 8, "step_s": step_s, "compute_s": step_s / 2, "comm_s": step_s / 2, "comm_bytes": 10,
            "loss": 1.0, "mem_bytes": 1, "warmup": False, **kw}


def _start(attempt: int | None, t: float, **kw) -> dict:
    rec = {"event": "start", "rank": 0, "node": "node0", "time": t, "world_size": 1, "param_bytes": 4,
           "grad_bytes": 4, "optim_bytes": 4, "start_step": 0, "total_steps": 3, **kw}
    if attempt is not None:
        rec["attempt"] = attempt
    return rec


def _write(path, recs: list[dict], tail: str = "") -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    return str(path)


# Attempt 1 ran steps 0..2, then failed (error record); attempt 2 re-ran from step 0 and completed.
TWO_ATTEMPTS = [
    _start(1, 1.0), _step(0, 9.0), _step(1, 9.0), _step(2, 9.0),
    {"event": "error", "rank": 0, "time": 5.0, "message": "killed"},
    _start(2, 10.0), _step(0, 1.0), _step(1, 1.0),
    {"event": "epoch", "rank": 0, "time": 13.0, "epoch": 0, "epoch_s": 2.0, "val_loss": 1.0, "val_acc": 0.5},
    {"event": "end", "rank": 0, "time": 14.0, "status": "COMPLETED", "param_bytes": 4, "grad_bytes": 4,
     "optim_bytes": 4},
]


def test_last_attempt_split_at_start_records(tmp_path):
    rf = parse_rank_file(_write(tmp_path / "rank-0.jsonl", TWO_ATTEMPTS))
    assert list(rf.steps["step"]) == [0, 1] and list(rf.steps["step_s"]) == [1.0, 1.0]
    assert list(rf.attempt) == [2, 2]
    assert [s["attempt"] for s in rf.starts] == [2] and rf.errors == [] and len(rf.ends) == 1
    assert rf.earlier_attempts == 1 and rf.earlier_records == 5


def test_last_attempt_by_per_record_field(tmp_path):
    """Every record carries `attempt` (newer writers): it wins over the start records' order,
    also when the first attempt's start line was lost and a line was cut short."""
    recs = [dict(r, attempt=1) for r in TWO_ATTEMPTS[1:5]] + [dict(r, attempt=2) for r in TWO_ATTEMPTS[5:]]
    rf = parse_rank_file(_write(tmp_path / "rank-0.jsonl", recs, tail='{"event": "step", "step": 3'))
    assert list(rf.steps["step"]) == [0, 1] and set(rf.steps["step_s"]) == {1.0}
    assert rf.earlier_attempts == 1 and rf.earlier_records == 4
    assert [k for k, _, _ in rf.problems] == ["truncated line"]


def test_start_without_attempt_field_counts_by_order(tmp_path):
    recs = [_start(None, 1.0), _step(0, 9.0), _start(None, 2.0), _step(0, 1.0)]
    rf = parse_rank_file(_write(tmp_path / "rank-0.jsonl", recs))
    assert list(rf.steps["step_s"]) == [1.0] and list(rf.attempt) == [2] and rf.earlier_attempts == 1


def test_one_attempt_is_untouched(tmp_path):
    rf = parse_rank_file(_write(tmp_path / "rank-0.jsonl", TWO_ATTEMPTS[5:]))
    assert list(rf.steps["step"]) == [0, 1] and rf.earlier_attempts == 0 and rf.earlier_records == 0


def test_experiment_row_counts_earlier_attempts(tmp_path):
    run = tmp_path / "s" / "single-n1-p1-b8-r0"
    write_experiment(str(run), "single", 1, 1, 8, 1, 3)
    _write(run / "rank-0.jsonl", TWO_ATTEMPTS)
    for data in (load_sweep(str(tmp_path / "s")), load_run(str(run))):
        row = data.experiments.set_index("experiment").loc[run.name]
        assert row["earlier_attempts"] == 1 and row["earlier_records"] == 5 and row["error"] is None
        assert list(data.steps["step_s"]) == [1.0, 1.0]
        assert list(data.ranks["attempt"]) == [2] and list(data.ranks["start_time"]) == [10.0]
    assert "sweep.json missing" not in set(load_run(str(run)).problems["kind"])
    assert analyse(load_sweep(str(tmp_path / "s"))).summary["earlier_attempts"].tolist() == [1]
    assert os.path.isfile(run / "config.json")
