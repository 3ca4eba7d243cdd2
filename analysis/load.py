"""Loading: one or more sweep directories -> tidy pandas DataFrames and a problems table.

Never raises on bad logs: a truncated last line (a rank killed mid-write), a line of garbage,
a missing rank file, a missing config.json/status.json or a FAILED experiment each become a
row of `problems`, and every good record is kept. Only a bad sweep *name* is an error
(`AnalysisError`, exit 2 in the commands).

The one entry to run directories for analysis (the commands, analysis/projection/, bench/):
`find_sweep` names a sweep, `load_sweep` reads it, `load_run` one experiment directory,
`completed` its COMPLETED experiments without reading any rank file. The work is done by
analysis/logread.py (one rank file, its last attempt), analysis/rankfiles.py (many, through the
columnar cache analysis/cache.py and a pool of workers) and analysis/frames.py (the DataFrames).
"""

from __future__ import annotations

import gc
import os
import re
from typing import TYPE_CHECKING

from analysis import AnalysisError, rankfiles
from analysis.logread import read_json
from contract.rundir import STATUS, experiment_ids, list_sweeps

if TYPE_CHECKING:  # frames imports pandas: loaded when a sweep is, so that `prefetch` comes before it
    from analysis.frames import SweepData

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # same rule as contract.config.check_name


def check_sweep_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name:
        raise AnalysisError(f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def find_sweep(logs: str, name: str | None = None) -> str:
    """The directory of sweep `name` under `logs`, or of the latest sweep (newest sweep.json)."""
    if name:
        path = os.path.join(logs, check_sweep_name(name))
        if not os.path.isdir(path):
            known = ", ".join(list_sweeps(logs)[-5:]) or "none"
            raise AnalysisError(f"unknown sweep {name!r}: no directory {path} (recent sweeps: {known})")
        return path
    sweeps = list_sweeps(logs)
    if not sweeps:
        raise AnalysisError(f"no sweep found under {logs}: run `make sweep` first")
    return os.path.join(logs, sweeps[-1])


def completed(path: str) -> list[str]:
    """The experiments whose status.json says COMPLETED: read before load_sweep by the commands
    that refuse a sweep with none, so that refusing writes nothing (not even the cache)."""
    meta, _ = read_json(os.path.join(path, "sweep.json"))
    return [exp for exp in experiment_ids(path, meta if isinstance(meta, dict) else {})
            if (read_json(os.path.join(path, exp, STATUS))[0] or {}).get("state") == "COMPLETED"]


def prefetch(path: str) -> int:
    """Start parsing the sweep's rank files that have no cache entry, in the background
    (analysis/rankfiles.py: `prefetch`); `load_sweep` takes the results. The commands call it
    first, before they import pandas and matplotlib. Returns the files handed out."""
    meta, _ = read_json(os.path.join(path, "sweep.json"))
    paths = []
    for exp in experiment_ids(path, meta if isinstance(meta, dict) else {}):
        try:
            names = os.listdir(os.path.join(path, exp))
        except OSError:
            continue
        paths += sorted(os.path.join(path, exp, f) for f in names if f.startswith("rank-") and f.endswith(".jsonl"))
    return rankfiles.prefetch(paths)


def load_sweep(path: str, use_cache: bool = True) -> SweepData:
    """`use_cache`: read and write the columnar cache under `<path>/.cache/` (analysis/cache.py)."""
    gc_on = gc.isenabled()
    gc.disable()  # half a million short-lived dicts trigger collections that find nothing to free
    try:
        return _load_sweep(path, use_cache=use_cache)
    finally:
        if gc_on:
            gc.enable()


def load_run(run_dir: str, use_cache: bool = True) -> SweepData:
    """One experiment directory (config.json, status.json, rank-*.jsonl), as a sweep of one
    experiment: what a tool that ran a single experiment reads (bench/, the projection).
    The enclosing directory's sweep.json, if any, is not needed."""
    run_dir = os.path.normpath(run_dir)
    gc_on = gc.isenabled()
    gc.disable()
    try:
        return _load_sweep(os.path.dirname(run_dir), [os.path.basename(run_dir)], use_cache)
    finally:
        if gc_on:
            gc.enable()


def _load_sweep(path: str, only: list[str] | None = None, use_cache: bool = True) -> SweepData:
    """`only`: these experiment directories (load_run), without the sweep's sweep.json problem."""
    from analysis import frames

    meta, err = read_json(os.path.join(path, "sweep.json"))
    ids = experiment_ids(path, meta) if only is None else list(only)
    return frames.build(path, meta, ids, err if only is None else None, use_cache)
