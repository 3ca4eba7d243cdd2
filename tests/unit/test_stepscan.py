"""The columnar scan of rank files (analysis/stepscan.py) gives the record-by-record path's RankFile."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from analysis import stepscan
from analysis.logread import _SCANNED_NUMBERS, RankFile, parse_rank_bytes, parse_records


def _step(i: int, attempt: int | None = 1, **extra) -> dict:
    rec = {"event": "step", "rank": 3, "node": "node0", "time": 1.8e9 + i * 0.51234567891, "step": i, "epoch": i // 5,
           "samples": 8, "step_s": 0.1 + i / 7, "compute_s": 0.05 + i / 13, "comm_s": 0.01 * i, "comm_bytes": 4096 * i,
           "loss": 2.5 / (i + 1), "mem_bytes": 10**9 + i, "cpu_s": 0.04, "warmup": i < 2}
    if attempt is not None:
        rec["attempt"] = attempt
    rec.update(extra)
    return rec


def _start(attempt: int | None = 1, **extra) -> dict:
    rec = {"event": "start", "rank": 3, "node": "node0", "time": 1.8e9, "world_size": 4, "start_step": 0}
    if attempt is not None:
        rec["attempt"] = attempt
    return {**rec, **extra}


def _end(attempt: int | None = 1) -> dict:
    rec = {"event": "end", "rank": 3, "node": "node0", "time": 1.9e9, "status": "COMPLETED", "peak_mem_bytes": 7}
    return rec if attempt is None else {**rec, "attempt": attempt}


def _epoch(e: int, attempt: int | None = 1) -> dict:
    rec = {"event": "epoch", "rank": 3, "time": 1.85e9 + e, "epoch": e, "epoch_s": 2.5, "val_acc": 0.5 + e / 100}
    return rec if attempt is None else {**rec, "attempt": attempt}


def _file(records: list, dumps=orjson.dumps) -> bytes:
    return b"".join((r if isinstance(r, bytes) else dumps(r)) + b"\n" for r in records)


def _spaced(rec: dict) -> bytes:  # the stdlib's separators (analysis/synthetic.py writes these)
    return json.dumps(rec).encode()


def _usual(n: int = 12, attempt: int | None = 1, **extra) -> list:
    recs = [_start(attempt)]
    for i in range(n):
        recs.append(_step(i, attempt, **extra))
        if i % 5 == 4:
            recs.append(_epoch(i // 5, attempt))
    return [*recs, _end(attempt)]


def assert_same(a: RankFile, b: RankFile) -> None:
    assert set(a.steps) == set(b.steps)
    for k in a.steps:
        assert a.steps[k].dtype == b.steps[k].dtype, k
        assert np.array_equal(a.steps[k], b.steps[k], equal_nan=True), k
    for k in ("warmup", "attempt"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and np.array_equal(x, y), k
    for k in ("epochs", "starts", "ends", "errors", "problems", "earlier_attempts", "earlier_records"):
        assert getattr(a, k) == getattr(b, k), k


SCANNED = {
    "orjson writer": _file(_usual()),
    "stdlib separators": _file(_usual(), dumps=_spaced),
    "no attempt field (older writers)": _file(_usual(attempt=None)),
    "asyncps staleness on every step": _file(_usual(staleness=2)),
    "nulls and bools in step fields": _file(_usual(compute_s=None, comm_s=None, loss=True)),
    "no cpu_s, an extra field": _file([_start(), *(dict(_step(i), lr=0.1) for i in range(6)), _end()]),
    "crlf line ends": _file(_usual()).replace(b"\n", b"\r\n"),
    "an error record": _file([*_usual(4)[:-1], {"event": "error", "rank": 3, "message": "x, y: z}"}]),
    "big and tiny numbers": _file([_start(), _step(0, loss=1e-300, mem_bytes=2**62 + 1), _step(1, loss=-0.0), _end()]),
}
for _f in ("no cpu_s, an extra field",):
    SCANNED[_f] = SCANNED[_f].replace(b',"cpu_s":0.04', b"")

RECORD_BY_RECORD = {
    "truncated last line": _file(_usual())[:-30],
    "truncated line ending in a newline": _file(_usual()[:5]) + orjson.dumps(_step(9))[:40] + b"\n" + _file([_end()]),
    "garbage line": _file([*_usual()[:4], b"%%% not json", *_usual()[4:]]),
    "a number that is not JSON": _file([_start(), _step(0),
                                        orjson.dumps(_step(1)).replace(b'"samples":8', b'"samples":08'), _end()]),
    "a string where a number belongs": _file([_start(), _step(0), _step(1, loss="1.5"), _end()]),
    "NaN (the stdlib's, not JSON)": _file([_start(), _step(0), _spaced(_step(1, loss=float("nan"))), _end()]),
    "a value holding a comma": _file([_start(), _step(0), _step(1, node="a,b"), _end()]),
    "a value holding a colon key": _file([_start(), _step(0), _step(1, node='x","y":"z'), _end()]),
    "an unclosed string": _file([_start(), _step(0), orjson.dumps(_step(1)).replace(b'"node0"', b'"node0'), _end()]),
    "one step line without staleness (asyncps)": _file([_start(), _step(0, staleness=1), _step(1), _end()]),
    "blank line": _file(_usual()[:3]) + b"\n" + _file(_usual()[3:]),
    "several attempts": _file([*_usual(6, attempt=1)[:-1], *_usual(9, attempt=2)]),
    "several starts, no attempt field": _file([*_usual(6, attempt=None)[:-1], *_usual(9, attempt=None)]),
    "resumed from a checkpoint": _file([*_usual(6, attempt=1)[:-1], _start(2, start_step=4),
                                        *(_step(i, 2) for i in range(4, 9)), _end(2)]),
    "attempt in some records only": _file([_start(1), _step(0, None), _step(1, 2), _end(None)]),
    "no step records": _file([_start(), _end()]),
    "empty file": b"",
    "not ending in a newline": _file(_usual())[:-1],
}


@pytest.mark.parametrize("name", sorted(SCANNED))
def test_scanned_files_give_the_record_by_record_result(name: str) -> None:
    raw = SCANNED[name]
    assert stepscan.scan(raw, _SCANNED_NUMBERS) is not None, "this file should take the columnar path"
    assert_same(parse_rank_bytes(raw), parse_records(raw))


@pytest.mark.parametrize("name", sorted(RECORD_BY_RECORD))
def test_other_files_fall_back_to_records(name: str) -> None:
    raw = RECORD_BY_RECORD[name]
    got = stepscan.scan(raw, _SCANNED_NUMBERS)
    if got is not None:  # scanned, but logread must still hand it to the record path (attempts)
        assert name.startswith(("several", "resumed", "attempt in")), "this file should not be scanned"
    assert_same(parse_rank_bytes(raw), parse_records(raw))


def test_mixed_files_keep_every_good_record_and_count_the_problems() -> None:
    """Several attempts, asyncps staleness, a garbage line and a truncated last line in one file."""
    recs = [*_usual(6, attempt=1, staleness=0)[:-1], b"garbage, {", *_usual(8, attempt=2, staleness=1)]
    raw = _file(recs)[:-20]  # the end record cut short
    rf = parse_rank_bytes(raw)
    assert_same(rf, parse_records(raw))
    assert rf.steps["step"].tolist() == list(range(8)) and (rf.steps["staleness"] == 1).all()
    assert [k for k, _, _ in rf.problems] == ["garbage line", "truncated line"]
    assert rf.earlier_attempts == 1 and set(rf.attempt.tolist()) == {2}
