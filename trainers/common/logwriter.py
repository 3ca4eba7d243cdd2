"""Structured per-rank log: `rank-<R>.jsonl`, one JSON object a line, written (one `write`) per record.

Opened in append mode: a restarted run adds to what is there and never truncates it.
Every record carries `event`, `rank`, `node`, `time` (Unix seconds) and `attempt`; see docs/logs.md.

`attempt` numbers the runs of one experiment directory (1, 2, ...): a Slurm requeue, and a
re-run of the sweep after a failure or an interrupt, each start a new one, so one rank file
never holds two runs' steps under one attempt number. Readers keep the records of the
highest attempt in a rank file (older files without the field: attempt 1). The number comes
from contract/rundir.py `current_attempt`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import orjson

from contract.rundir import current_attempt  # the one attempt rule


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode(record: dict[str, Any]) -> bytes:
    """One JSON line. orjson (about 1 us a step record; the stdlib takes 15-30) writes NaN and
    inf as null itself; what it refuses (a numpy float, an int beyond 64 bits) goes through the stdlib."""
    try:
        return orjson.dumps(record) + b"\n"
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return (json.dumps({k: _clean(v) for k, v in record.items()}) + "\n").encode()


class RankLog:
    def __init__(self, run_dir: str, rank: int, node: str, attempt: int | None = None) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, f"rank-{rank}.jsonl")
        self.rank, self.node = rank, node
        self.attempt = current_attempt() if attempt is None else attempt
        # O_APPEND: every write lands at the end, also when two attempts' processes overlap.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "rank": self.rank, "node": self.node, "time": time.time(), "attempt": self.attempt}
        record.update(fields)
        line = encode(record)
        # One unbuffered write per record: once it returns the line is the kernel's, so a rank
        # that dies (even by SIGKILL) loses no completed step. A short write (a full disk) retries.
        while line:
            line = line[os.write(self._fd, line):]
