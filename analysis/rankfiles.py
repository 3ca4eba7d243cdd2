"""Reading many rank files: through the columnar cache (analysis/cache.py) and, when there are
many, a pool of forked worker processes. Each rank file's parsed columns are cached until the
file changes; the parsing itself is analysis/logread.py's.
"""

from __future__ import annotations

import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from analysis import cache, logread
from analysis.logread import FLOAT_STEP_FIELDS, RankFile, parse_rank_bytes

POOL_MIN_FILES = 32  # rank files to parse per worker process, at least, before a pool pays for its start


def _source_tag() -> str:
    """Names the reader that writes cache entries: any change to the parser (logread.py), to
    this file or to cache.py (their fields, their attempt rules, the entry layout) makes every
    cached entry stale."""
    crc = 0
    for source in (logread.__file__, __file__, cache.__file__):
        with open(source, "rb") as f:
            crc = zlib.crc32(f.read(), crc)
    return f"rankfile:{crc:08x}"


CACHE_SCHEMA = _source_tag()


def read_rank_files(paths: list[str], use_cache: bool = True) -> dict[str, RankFile | OSError]:
    """Every rank file of `paths` (its OSError where it cannot be read: FileNotFoundError when it
    is missing). Through the columnar cache (analysis/cache.py): a file's entry when the file has
    not changed since it was written; the other files are parsed, by a pool of worker processes
    when there are many and more than one CPU, and their entries written."""
    out: dict[str, RankFile | OSError] = {}
    todo: list[tuple[str, os.stat_result, bool]] = []
    for path in paths:
        try:
            st = os.stat(path)  # before reading: a file that grows meanwhile no longer matches its entry
        except OSError as e:
            out[path] = e
            continue
        rf = _cached(path, st) if use_cache else None
        if rf is None:
            todo.append((path, st, use_cache))
        else:
            out[path] = rf
    workers = min(cpus(), len(todo) // POOL_MIN_FILES)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            chunk = max(len(todo) // (8 * workers), 1)
            for (path, st, _), got in zip(todo, pool.map(_parse_in_worker, todo, chunksize=chunk), strict=True):
                # SAVED: the worker wrote the file's entry; reading it back costs a tenth of receiving
                # the columns through the pool's pipe (and unpickling them)
                rf = _cached(path, st, just_written=True) if got is SAVED else got
                out[path] = rf if rf is not None else _parse_and_save((path, st, False))
    else:
        out.update(zip((path for path, _, _ in todo), map(_parse_and_save, todo), strict=True))
    return out


def cpus() -> int:
    """CPUs a pool of forked workers can use here (1 where fork is not available): the rank
    files' parsers and the plots' drawers."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cached(path: str, st: os.stat_result, just_written: bool = False) -> RankFile | None:
    entry = cache.load(cache.entry_path(os.path.dirname(path), os.path.basename(path)), path, st, CACHE_SCHEMA,
                       just_written)
    try:
        return _from_entry(entry) if entry is not None else None
    except (KeyError, TypeError, ValueError):  # an entry of the right tag but the wrong shape: rebuild it
        return None


SAVED = None  # what a pool worker returns for a file whose cache entry it wrote


def _parse_in_worker(item: tuple[str, os.stat_result, bool]) -> RankFile | OSError | None:
    """In a pool worker: SAVED when the file's entry was written, else what it parsed."""
    return _parse_and_save(item, in_worker=True)


def _parse_and_save(item: tuple[str, os.stat_result, bool], in_worker: bool = False) -> RankFile | OSError | None:
    """Parse one rank file and write its cache entry (in a pool worker or here)."""
    path, st, use_cache = item
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return e
    rf = parse_rank_bytes(raw)
    if use_cache and cache.save(cache.entry_path(os.path.dirname(path), os.path.basename(path)), st, raw,
                                CACHE_SCHEMA, _to_entry(rf)) and in_worker:
        return SAVED
    return rf


def _to_entry(rf: RankFile) -> cache.Entry:
    return cache.Entry({**rf.steps, "warmup": rf.warmup, "attempt": rf.attempt},
                       {"epochs": rf.epochs, "starts": rf.starts, "ends": rf.ends, "errors": rf.errors,
                        "problems": rf.problems, "earlier_attempts": rf.earlier_attempts,
                        "earlier_records": rf.earlier_records})


def _from_entry(entry: cache.Entry) -> RankFile:
    c, d = entry.columns, entry.doc
    steps = {k: c[k].astype(float, copy=False) for k in FLOAT_STEP_FIELDS}
    warmup, attempt = c["warmup"].astype(bool, copy=False), c["attempt"].astype(np.int64, copy=False)
    if len({len(v) for v in (*steps.values(), warmup, attempt)}) > 1:
        raise ValueError("columns of different lengths")
    return RankFile(steps, warmup, attempt, list(d["epochs"]), list(d["starts"]), list(d["ends"]), list(d["errors"]),
                    [(str(k), str(detail), int(line)) for k, detail, line in d["problems"]],
                    int(d["earlier_attempts"]), int(d["earlier_records"]))
