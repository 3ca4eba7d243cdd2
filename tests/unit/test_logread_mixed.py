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


def test_a_record_whose_event_is_not_a_string_is_no_step() -> None:
    """The whole-file path splits steps from other records by comparing each event with "step":
    an odd event value (a number, null) must not be taken for one."""
    odd = [orjson.dumps({**_step(9, 1, 1), "event": value}) for value in (5, None, ["step"])]
    raw = b"\n".join([*_attempt(1, 3)[:-1], *odd, _attempt(1, 3)[-1]]) + b"\n"
    rf = parse_rank_bytes(raw)
    assert rf.steps["step"].tolist() == [0, 1, 2] and len(rf.ends) == 1 and len(rf.starts) == 1
