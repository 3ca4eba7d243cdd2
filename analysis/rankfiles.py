"""Reading many rank files: through the columnar cache (analysis/cache.py) and, when there are
many, a pool of forked worker processes. Each rank file's parsed columns are cached until the
file changes; the parsing itself is analysis/logread.py's.

`prefetch` starts that pool early, before the caller imports pandas and matplotlib (what a
`make plots` spends its first second on): the workers parse while the main process imports, and
`read_rank_files` then takes their results.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import zlib
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from analysis import cache, logread
from analysis.logread import FLOAT_STEP_FIELDS, RankFile, parse_rank_bytes

POOL_MIN_FILES = 32  # rank files to parse per worker process, at least, before a pool pays for its start
CHUNKS_PER_WORKER = 16  # pieces of work per worker: the last ones end close together (1024 files: 32 a piece)
_Item = tuple[str, os.stat_result, bool]  # a rank file to parse: path, its stat before reading, write its entry


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


class _Prefetch:
    """The parse pool `prefetch` started: each path's stat and where its result will be."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.pending: dict[str, tuple[os.stat_result, Future, int]] = {}

    def take(self, path: str, st: os.stat_result) -> tuple[Future, int] | None:
        got = self.pending.pop(path, None)
        return got[1:] if got is not None and _signature(got[0]) == _signature(st) else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool, self.pending = None, {}


_PREFETCH = _Prefetch()


def prefetch(paths: list[str]) -> int:
    """Start parsing the rank files of `paths` that have no cache entry yet, in a pool of forked
    workers that write their entries, and return at once (the files handed to the pool). Only
    where the pool would start anyway (`read_rank_files`: many files, more than one CPU). The
    workers need numpy, orjson and pyarrow alone: call it before importing pandas or matplotlib."""
    todo: list[_Item] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # read_rank_files reports it
        if path not in _PREFETCH.pending and not os.path.exists(_entry(path)):  # an entry: checked there
            todo.append((path, st, True))
    workers = min(cpus(), len(todo) // POOL_MIN_FILES)
    if workers <= 1:
        return 0
    if _PREFETCH.pool is None:
        _PREFETCH.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    chunk = max(len(todo) // (CHUNKS_PER_WORKER * workers), 1)
    gc_on = gc.isenabled()
    gc.disable()  # the workers fork at the first submit and keep it off, as those forked in load_sweep do
    try:
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            future = _PREFETCH.pool.submit(_parse_chunk, part)
            for j, (path, st, _) in enumerate(part):
                _PREFETCH.pending[path] = (st, future, j)
    finally:
        if gc_on:
            gc.enable()
    return len(todo)


def read_rank_files(paths: list[str], use_cache: bool = True) -> dict[str, RankFile | OSError]:
    """Every rank file of `paths` (its OSError where it cannot be read: FileNotFoundError when it
    is missing). Through the columnar cache (analysis/cache.py): a file's entry when the file has
    not changed since it was written; the other files are parsed, by a pool of worker processes
    when there are many and more than one CPU, and their entries written (or taken from the
    pool `prefetch` started, for the files that have not changed since)."""
    out: dict[str, RankFile | OSError] = {}
    todo: list[_Item] = []
    started: list[tuple[str, os.stat_result, Future, int]] = []
    for path in paths:
        try:
            st = os.stat(path)  # before reading: a file that grows meanwhile no longer matches its entry
        except OSError as e:
            out[path] = e
            continue
        if use_cache and (got := _PREFETCH.take(path, st)) is not None:
            started.append((path, st, *got))
            continue
        rf = _cached(path, st) if use_cache else None
        if rf is None:
            todo.append((path, st, use_cache))
        else:
            out[path] = rf
    for path, st, future, j in started:  # in the order they were handed out: mapped as they come
        out[path] = _received(path, st, future.result()[j])
    _PREFETCH.close()
    workers = min(cpus(), len(todo) // POOL_MIN_FILES)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            chunk = max(len(todo) // (CHUNKS_PER_WORKER * workers), 1)
            for (path, st, _), got in zip(todo, pool.map(_parse_in_worker, todo, chunksize=chunk), strict=True):
                out[path] = _received(path, st, got)
    else:
        out.update(zip((path for path, _, _ in todo), map(_parse_and_save, todo), strict=True))
    return out


def _received(path: str, st: os.stat_result, got: RankFile | OSError | None) -> RankFile | OSError:
    """What a pool worker returned for a file. SAVED: it wrote the file's entry; reading it back
    costs a tenth of receiving the columns through the pool's pipe (and unpickling them)."""
    rf = _cached(path, st, just_written=True) if got is SAVED else got
    return rf if rf is not None else _parse_and_save((path, st, False))


def _signature(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


def _entry(path: str) -> str:
    return cache.entry_path(os.path.dirname(path), os.path.basename(path))


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
    entry = cache.load(_entry(path), path, st, CACHE_SCHEMA, just_written)
    try:
        return _from_entry(entry) if entry is not None else None
    except (KeyError, TypeError, ValueError):  # an entry of the right tag but the wrong shape: rebuild it
        return None


SAVED = None  # what a pool worker returns for a file whose cache entry it wrote


def _parse_in_worker(item: _Item) -> RankFile | OSError | None:
    """In a pool worker: SAVED when the file's entry was written, else what it parsed."""
    return _parse_and_save(item, in_worker=True)


def _parse_chunk(items: list[_Item]) -> list[RankFile | OSError | None]:
    return [_parse_and_save(item, in_worker=True) for item in items]


def _parse_and_save(item: _Item, in_worker: bool = False) -> RankFile | OSError | None:
    """Parse one rank file and write its cache entry (in a pool worker or here)."""
    path, st, use_cache = item
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return e
    rf = parse_rank_bytes(raw)
    if use_cache and cache.save(_entry(path), st, raw, CACHE_SCHEMA, _to_entry(rf)) and in_worker:
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
