"""One rank file that holds everything at once: several attempts, asyncps staleness, a garbage line
and a truncated last line. Every good record of the last attempt is kept, the problems counted."""

from __future__ import annotations

import orjson

from analysis.logread import parse_rank_bytes


def _step(i: int, attempt: int, staleness: int) -> dict:
    return {"event": "step", "rank": 3, "node": "node0", "time": 1.8e9 + i, "attempt": attempt, "step": i, "epoch": 0,
            "samples": 8, "step_s": 0.1 + i / 7, "compute_s": 0.05, "comm_s": 0.01, "comm_bytes": 4096,
            "loss": 2.5 / (i + 1), "mem_bytes": 10**9 + i, "cpu_s": 0.04, "warmup": i < 2, "staleness": staleness}


def _attempt(attempt: int, steps: int) -> list[bytes]:
    start = {"event": "start", "rank": 3, "node": "node0", "time": 1.8e9, "attempt": attempt, "start_step": 0}
    end = {"event": "end", "rank": 3, "node": "node0", "time": 1.9e9, "attempt": attempt, "status": "COMPLETED"}
    return [orjson.dumps(r) for r in (start, *(_step(i, attempt, attempt) for i in range(steps)), end)]


def test_a_mixed_file_keeps_the_last_attempts_good_records_and_counts_the_problems() -> None:
    lines = [*_attempt(1, 6)[:-1], b"garbage, {", *_attempt(2, 8)]
    raw = b"\n".join(lines) + b"\n"
    rf = parse_rank_bytes(raw[:-20])  # the end record cut short
    assert rf.steps["step"].tolist() == list(range(8))
    assert rf.steps["staleness"].tolist() == [2.0] * 8 and rf.attempt.tolist() == [2] * 8
    assert rf.warmup.tolist() == [True, True] + [False] * 6
    assert rf.steps["loss"].tolist() == [2.5 / (i + 1) for i in range(8)]
    assert [k for k, _, _ in rf.problems] == ["garbage line", "truncated line"]
    assert rf.earlier_attempts == 1 and rf.earlier_records == 7  # attempt 1: its start and 6 steps
    assert [s["attempt"] for s in rf.starts] == [2] and rf.ends == []
