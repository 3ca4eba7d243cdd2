"""A sweep's step records as its rank files' own columns, grouped by experiment: what the
metrics of a large sweep read instead of the one-row-per-rank-step frame (`SweepData.steps`).

Why: at 1024 ranks x 2000 steps that frame is 230 MB, and a pandas groupby over it copies most
of it again. Fresh memory is what a first `make plots` paid for most on the development machine
(a virtual machine where a page the process has not touched before costs tens of microseconds,
up to 8 ms a MiB: docs/benchmarks.md#analysis_load). The rank files' columns are views of their
cache entries, already in the page cache; reducing them rank by rank (analysis/gridmetrics.py)
allocates one row of steps at a time.

`Grid` is one experiment whose ranks all logged the same steps: ascending, no step twice (one
`start` record per file), none without a number. `StepFiles.grids` gives every experiment's
Grid, or None when any experiment is not one (a rank that stopped early or logged a step the
others did not; a file with two starts): the metrics then take the frame. The frame is built
from the same columns (`StepFiles.frame`), so both paths see the same numbers in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analysis.logread import FLOAT_STEP_FIELDS, RankFile


@dataclass
class Grid:
    """One experiment's rank files, in rank order, that share their step numbers (`step`)."""

    experiment: str
    ranks: np.ndarray  # int64, ascending
    files: list[RankFile]
    step: np.ndarray  # int64, ascending: every file's step column
    busy: tuple | None = field(default=None, repr=False)  # the heat map's image, once made (gridmetrics.busy_grid)

    def column(self, name: str) -> list[np.ndarray]:
        """Field `name` of each rank file (`warmup`: bool), in rank order."""
        return [rf.warmup if name == "warmup" else rf.steps[name] for rf in self.files]

    def timed(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """Field `name` over the timed steps (warm-up left out) of every rank, rank after rank: the
        order of the frame's rows. `out`: a buffer to fill (reused across fields: one allocation)."""
        parts = [col[~rf.warmup] for col, rf in zip(self.column(name), self.files, strict=True)]
        n = sum(len(p) for p in parts)
        if out is None or len(out) < n:
            return np.concatenate(parts) if parts else np.empty(0)
        return np.concatenate(parts, out=out[:n]) if parts else out[:0]

    def timed_rows(self) -> int:
        return int(sum(len(rf.warmup) - np.count_nonzero(rf.warmup) for rf in self.files))


@dataclass
class StepFiles:
    """The rank files' parsed columns: (experiment index into `ids`, rank, RankFile) in the
    order of the frame's rows (experiments in `ids` order, ranks ascending)."""

    ids: list[str]
    parts: list[tuple[int, int, RankFile]]

    def grids(self) -> dict[str, Grid] | None:
        """Every experiment with step records as a Grid (in `ids` order), or None when one is not."""
        return self._grids

    @cached_property
    def _grids(self) -> dict[str, Grid] | None:
        return _regular_grids(self.ids, self.parts)

    def frame(self) -> pd.DataFrame:
        """One row per rank-step: each file's columns concatenated once; rows without a step
        number dropped by one mask over the arrays, not by copying a DataFrame."""
        parts = self.parts
        n = [len(rf.warmup) for _, _, rf in parts]

        def joined(get, dtype) -> np.ndarray:
            return np.concatenate([get(rf) for _, _, rf in parts]) if parts else np.array([], dtype=dtype)

        data: dict[str, object] = {
            "experiment": np.repeat([k for k, _, _ in parts], n).astype(np.int64),
            "rank": np.repeat([r for _, r, _ in parts], n).astype(np.int64),
            **{f: joined(lambda rf, f=f: rf.steps[f], float) for f in FLOAT_STEP_FIELDS},
            "warmup": joined(lambda rf: rf.warmup, bool), "attempt": joined(lambda rf: rf.attempt, np.int64)}
        has_step = ~np.isnan(data["step"])
        if not has_step.all():
            data = {k: v[has_step] for k, v in data.items()}
        data["step"] = data["step"].astype(np.int64)
        data["experiment"] = pd.Categorical.from_codes(data["experiment"], categories=self.ids)
        df = pd.DataFrame(data, copy=False)  # one block per column: stacking them would copy every column again
        if any(len(rf.starts) > 1 for _, _, rf in parts):  # one attempt that logged two starts: odd, keep the later
            df = df.drop_duplicates(["experiment", "rank", "step"], keep="last").reset_index(drop=True)
        return df


def _regular_grids(ids: list[str], parts: list[tuple[int, int, RankFile]]) -> dict[str, Grid] | None:
    by_exp: dict[int, list[tuple[int, RankFile]]] = {}
    for k, rank, rf in parts:
        by_exp.setdefault(k, []).append((rank, rf))
    grids = {}
    for k, files in by_exp.items():
        if not all(len(rf.warmup) for _, rf in files):
            return None  # a rank without step records: the frame has rows of the others only
        step = files[0][1].steps["step"]
        if (len(files[0][1].starts) > 1 or np.isnan(step).any() or (np.diff(step) <= 0).any()
                or step.max() >= 2**53):
            return None
        for _, rf in files[1:]:
            if len(rf.starts) > 1 or not np.array_equal(rf.steps["step"], step):
                return None
        ranks = np.array([r for r, _ in files], dtype=np.int64)
        if (np.diff(ranks) <= 0).any():
            return None
        grids[ids[k]] = Grid(ids[k], ranks, [rf for _, rf in files], step.astype(np.int64))
    return grids
