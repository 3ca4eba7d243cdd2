"""Structured per-rank log: `rank-<R>.jsonl`, one JSON object a line, flushed per record.

Opened in append mode: a restarted run adds to what is there and never truncates it.
Every record carries `event`, `rank`, `node` and `time` (Unix seconds); see docs/logs.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RankLog:
    def __init__(self, run_dir: str, rank: int, node: str) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, f"rank-{rank}.jsonl")
        self.rank, self.node = rank, node
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the rank

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "rank": self.rank, "node": self.node, "time": time.time()}
        record.update({k: _clean(v) for k, v in fields.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a rank that dies loses no completed step
