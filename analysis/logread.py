"""Reading one rank file (`rank-<R>.jsonl`): its records, its attempts, its step columns.

Never raises on bad lines: a truncated last line (a rank killed mid-write) or a line of garbage
becomes a problem of the `RankFile` and every good record is kept. Every attempt of a run (a
restart after a failure, an interrupt, a requeue) appends to the same rank file; only the last
attempt's records are kept (by each record's `attempt`, else split at `start` records), and the
file counts the rest (`earlier_attempts`, `earlier_records`).

Speed matters (`make bench BENCH=analysis_load`): lines go through orjson (else pandas' C
ujson), and records become columns per file, not one DataFrame row object at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import eq, itemgetter, ne
from typing import Any

import numpy as np

try:  # orjson (requirements.txt) parses our logs ~4x faster than the stdlib ...
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - an environment without it
    try:  # ... pandas' bundled C ujson ~2x
        from pandas.io.json import ujson_loads as _fast_loads
    except ImportError:
        _fast_loads = json.loads

STEP_FIELDS = ("step", "epoch", "samples", "step_s", "compute_s", "comm_s", "comm_bytes", "loss", "mem_bytes",
               "time", "warmup")
# Step fields some records lack (NaN there): cpu_s older logs; staleness every rank but asyncps's workers.
OPTIONAL_STEP_FIELDS = ("cpu_s", "staleness")
ALL_STEP_FIELDS = (*STEP_FIELDS, *OPTIONAL_STEP_FIELDS)
FLOAT_STEP_FIELDS = tuple(f for f in ALL_STEP_FIELDS if f != "warmup")  # RankFile.steps (warmup is its own)
# The fast path's field sets, most first: every optional field, then one fewer each time (a ddp rank has
# cpu_s but no staleness), then the required ones alone.
_GETTERS = tuple((itemgetter(*names), names) for names in
                 (STEP_FIELDS + OPTIONAL_STEP_FIELDS[:k] for k in range(len(OPTIONAL_STEP_FIELDS), -1, -1)))


_EVENT = itemgetter("event")


@dataclass
class RankFile:
    """What one rank-R.jsonl holds, as columns (steps) and small record lists."""

    steps: dict[str, np.ndarray]
    warmup: np.ndarray
    attempt: np.ndarray
    epochs: list[dict]
    starts: list[dict]
    ends: list[dict]
    errors: list[dict]
    problems: list[tuple[str, str, int]]  # (kind, detail, line number)
    earlier_attempts: int = 0  # attempts before the last one found in the file (their records dropped)
    earlier_records: int = 0  # records of those attempts

def _parse(line: str) -> Any:
    try:
        return _fast_loads(line)
    except ValueError:
        try:
            return json.loads(line)  # the stdlib also accepts NaN/Infinity
        except ValueError:
            return None


def _column(values: list | tuple) -> np.ndarray:
    return np.array(values, dtype=float)  # None -> NaN


def _number(v: Any) -> float | None:
    return v if isinstance(v, int | float) else None


def _whole_file(raw: bytes) -> tuple[list[dict], list[str]] | None:
    """Fast path, one C call: the file's lines as one JSON array. None when any line is bad
    (garbage, cut short, blank, not an object with an "event"): then it goes line by line.
    A blank line makes the array invalid (`,,`), so it needs no search of its own."""
    if not raw:
        return [], []
    if not raw.endswith(b"\n"):
        return None
    try:
        recs = _fast_loads(b"".join((b"[", memoryview(raw.replace(b"\n", b","))[:-1], b"]")))
        if len(recs) != np.count_nonzero(np.frombuffer(raw, np.uint8) == ord("\n")):
            return None  # a garbage line such as `1, 2` adds elements
        events = list(map(_EVENT, recs))  # a non-object or an object without "event" raises
        return (recs, events) if set(map(type, events)) <= {str} else None  # else the lines say which is odd
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _records(lines: list[str], cut_last: bool) -> tuple[list[dict], list[str], list[tuple[str, str, int]]]:
    """(records, their events, problems), line by line.
    `cut_last`: the file does not end in a newline, so its last line was cut short."""
    recs, events, problems = [], [], []
    for no, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        rec = _parse(line)
        event = rec.get("event") if type(rec) is dict else None
        if isinstance(event, str):
            recs.append(rec)
            events.append(event)
            continue
        cut = (cut_last and no == len(lines)) or line.startswith('{"event"')  # the rank died writing it
        problems.append(("truncated line" if cut else "garbage line", f"line {no}: {line[:80]!r}", no))
    return recs, events, problems


def _attempts(recs: list[dict], events: list[str]) -> np.ndarray | None:
    """Each record's attempt, or None when the file holds one attempt only (the usual case,
    found without a Python-level pass over the records). A record's own `attempt` field wins;
    a record without one belongs to the latest `start` before it (that start's `attempt`, else
    the starts' ordinal); records before the first start, to the attempt before it (at least 1)."""
    own = list(map(dict.get, recs, repeat("attempt")))  # one C-level pass; None where a record has none
    with_field = len(own) - own.count(None)
    if events.count("start") <= 1 and with_field <= 1:  # older writers: the one start record says it
        return None
    if with_field == len(own):  # newer writers: every record has an integer `attempt`
        try:
            att = np.fromiter(own, dtype=np.int64, count=len(own))
            return None if not len(att) or att.min() == att.max() else att
        except (TypeError, ValueError):
            pass
    ev = np.array(events)
    is_start = ev == "start"
    starts = [r for r, s in zip(recs, is_start, strict=True) if s]
    start_att = [_int(s.get("attempt")) or i + 1 for i, s in enumerate(starts)]
    first = max((start_att[0] - 1) if starts else 1, 1)
    inherited = np.array([first, *start_att], dtype=np.int64)[np.cumsum(is_start)]
    own_or_none = [_int(a) for a in own]
    if any(a is not None for a in own_or_none):
        inherited = np.array([a if a is not None else i for a, i in zip(own_or_none, inherited.tolist(), strict=True)],
                             dtype=np.int64)
    return None if inherited.min() == inherited.max() else inherited


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _before_resume(recs: list[dict], events: list[str], att: np.ndarray, resumed_at: int, last: int) -> np.ndarray:
    """Earlier attempts' step records below the step the last attempt resumed at (and their
    epoch records), the latest attempt's record of each: what the checkpoint carried over."""
    keep = np.zeros(len(recs), dtype=bool)
    newest: dict[tuple[str, int], int] = {}
    last_epochs = {r.get("epoch") for r, e, a in zip(recs, events, att, strict=True) if e == "epoch" and a == last}
    for i, (r, e, a) in enumerate(zip(recs, events, att, strict=True)):
        if a == last:
            continue
        if e == "step" and isinstance(r.get("step"), int) and r["step"] < resumed_at:
            key = ("step", r["step"])
        elif e == "epoch" and r.get("epoch") not in last_epochs:
            key = ("epoch", r.get("epoch"))
        else:
            continue
        if key not in newest or att[newest[key]] <= a:
            newest[key] = i
    keep[list(newest.values())] = True
    return keep


def parse_rank_file(path: str) -> RankFile:
    """One rank file, parsed (no cache), its last attempt only: see `parse_rank_bytes`."""
    with open(path, "rb") as f:
        return parse_rank_bytes(f.read())

def parse_rank_bytes(raw: bytes) -> RankFile:
    """A rank file's bytes, its last attempt only: every attempt (a restart after a failure, an
    interrupt, a requeue) appends to the file; the records of the earlier ones are counted
    (`earlier_attempts`, `earlier_records`) and dropped, except where the last attempt resumed
    from a checkpoint at step S: the steps below S come from the attempts that measured them."""
    fast = _whole_file(raw)
    if fast is not None:
        (recs, events), problems = fast, []
    else:
        lines = raw.decode("utf-8", errors="replace").split("\n")
        cut_last = bool(lines) and lines[-1] != ""
        if not cut_last and lines:
            lines.pop()  # the empty string after the final newline
        recs, events, problems = _records(lines, cut_last)
    att = _attempts(recs, events) if recs else None
    earlier, dropped = 0, 0
    if att is not None:
        last = int(att.max())
        keep = att == last
        resumed_at = next((r.get("start_step") or 0 for r, e, a in zip(recs, events, att, strict=True)
                           if e == "start" and a == last), 0)
        if resumed_at:  # resumed from a checkpoint: the steps before it were measured by earlier attempts
            keep = keep | _before_resume(recs, events, att, resumed_at, last)
        earlier, dropped = len(set(att[att != last].tolist())), int((~keep).sum())
        if dropped:
            recs = [r for r, k in zip(recs, keep, strict=True) if k]
            events = [e for e, k in zip(events, keep, strict=True) if k]
            att = att[keep]
    steps = list(compress(recs, map(eq, events, repeat("step"))))  # C-level passes: a third of a listcomp's time
    others = list(compress(recs, map(ne, events, repeat("step"))))
    by_event: dict[str, list[dict]] = {"start": [], "epoch": [], "end": [], "error": []}
    for r in others:
        by_event.setdefault(r["event"], []).append(r)
    columns = _step_columns(steps)
    warmup = columns.pop("warmup") > 0  # true -> 1.0; false, null -> 0.0, NaN
    starts = by_event["start"]
    last_att = (int(att.max()) if att is not None else
                (_int(starts[-1].get("attempt")) or 1) if starts else 1)
    attempt = (att[np.array([e == "step" for e in events], dtype=bool)].astype(np.int64) if att is not None
               else np.full(len(steps), last_att, dtype=np.int64))
    return RankFile(columns, warmup, attempt, by_event["epoch"], starts, by_event["end"], by_event["error"],
                    problems, earlier, dropped)


def _step_columns(steps: list[dict]) -> dict[str, np.ndarray]:
    """The step records as one float column per field (null -> NaN): the records' values in one
    C-level pass where every record has every field with a number; else field by field."""
    for getter, names in _GETTERS:
        try:
            flat = chain.from_iterable(map(getter, steps))  # np.fromiter: no list of tuples in between
            table = np.fromiter(flat, dtype=float, count=len(steps) * len(names)).reshape(len(steps), len(names))
            break
        except (KeyError, TypeError, ValueError):  # a field left out (older writers: cpu_s) or of an odd type
            continue
    else:
        table, names = np.empty((len(steps), 0)), ()
    columns = dict(zip(names, np.ascontiguousarray(table.T), strict=True))
    for k in ALL_STEP_FIELDS:  # the slower path: NaN where a record has no number
        if k not in columns:
            values = list(map(dict.get, steps, repeat(k)))  # one C-level pass; None where a record lacks it
            columns[k] = (np.full(len(steps), np.nan) if values.count(None) == len(values)  # a field no step has
                          else _column([_number(v) for v in values]))
    return columns


def read_json(path: str) -> tuple[dict, str | None]:
    """(document, problem): a missing or unreadable JSON file is a problem, not a crash."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}, "missing"
    except (OSError, ValueError) as e:
        return {}, f"unreadable ({type(e).__name__})"
    return (doc, None) if isinstance(doc, dict) else ({}, "not a JSON object")
