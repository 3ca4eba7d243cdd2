"""Loading: one or more sweep directories -> tidy pandas DataFrames and a problems table.

Never raises on bad logs: a truncated last line (a rank killed mid-write), a line of garbage,
a missing rank file, a missing config.json/status.json or a FAILED experiment each become a
row of `problems`, and every good record is kept. Only a bad sweep *name* is an error
(`AnalysisError`, exit 2 in the commands).

The one reader of run directories for analysis (the commands, analysis/projection.py, bench/):
`load_sweep` for a sweep, `load_run` for one experiment directory. Every attempt of a run (a
restart after a failure, an interrupt, a requeue) appends to the same rank files; only the
last attempt's records are kept (by each record's `attempt`, else split at `start` records),
and the experiment row counts the rest (`earlier_attempts`, `earlier_records`).

Speed matters (1024 ranks x 2000 steps, `make bench BENCH=analysis_load`): lines go through
orjson (else pandas' C ujson), records become columns per file, not one DataFrame row object at
a time, and each rank file's columns are cached (analysis/cache.py) until the file changes.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from analysis import AnalysisError, cache
from contract.config import ExperimentConfig
from contract.rundir import FAILED_STATES, STATUS
from contract.tables import SCALINGS

try:  # orjson (requirements.txt) parses our logs ~4x faster than the stdlib ...
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - an environment without it
    try:  # ... pandas' bundled C ujson ~2x
        from pandas.io.json import ujson_loads as _fast_loads
    except ImportError:
        _fast_loads = json.loads

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # same rule as contract.config.check_name
ID_RE = re.compile(r"^(?P<strategy>[a-z]+)-n(?P<nodes>\d+)-p(?P<procs>\d+)-b(?P<batch>\d+)(?:-c(?P<chunks>\d+))?"
                   r".*-r(?P<repeat>\d+)$")
STEP_FIELDS = ("step", "epoch", "samples", "step_s", "compute_s", "comm_s", "comm_bytes", "loss", "mem_bytes",
               "time", "warmup")
OPTIONAL_STEP_FIELDS = ("cpu_s",)  # step fields older logs lack (NaN there)
EPOCH_FIELDS = ("epoch", "epoch_s", "val_loss", "val_acc", "time")
RANK_FIELDS = ("attempt", "world_size", "dp_size", "total_steps", "start_time", "param_bytes", "grad_bytes",
               "optim_bytes", "end_status", "end_param_bytes", "end_grad_bytes", "end_optim_bytes",
               "peak_mem_bytes", "end_time", "error")
PROBLEM_COLUMNS = ("sweep", "experiment", "rank", "kind", "detail", "file", "line")
BAD_STATES = FAILED_STATES
DEFAULT_CHUNKS = ExperimentConfig.chunks  # what a config.json without the field ran with
POOL_MIN_FILES = 32  # rank files to parse per worker process, at least, before a pool pays for its start
ALL_STEP_FIELDS = (*STEP_FIELDS, *OPTIONAL_STEP_FIELDS)
FLOAT_STEP_FIELDS = tuple(f for f in ALL_STEP_FIELDS if f != "warmup")  # RankFile.steps (warmup is its own)
_get_steps, _get_all_steps = itemgetter(*STEP_FIELDS), itemgetter(*ALL_STEP_FIELDS)


def _source_tag() -> str:
    """Names the reader that writes cache entries: any change to this file or to cache.py (its
    fields, its attempt rules, the entry layout) makes every cached entry stale."""
    crc = 0
    for source in (__file__, cache.__file__):
        with open(source, "rb") as f:
            crc = zlib.crc32(f.read(), crc)
    return f"rankfile:{crc:08x}"


CACHE_SCHEMA = _source_tag()


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
        return recs, [r["event"] for r in recs]  # a non-object or an object without "event" raises
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
    workers = min(_cpus(), len(todo) // POOL_MIN_FILES)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_parse_and_save, todo, chunksize=max(len(todo) // (8 * workers), 1)))
    else:
        results = list(map(_parse_and_save, todo))
    out.update(zip((path for path, _, _ in todo), results, strict=True))
    return out


def _cpus() -> int:
    """CPUs a pool of forked workers can use here (1 where fork is not available)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cached(path: str, st: os.stat_result) -> RankFile | None:
    entry = cache.load(cache.entry_path(os.path.dirname(path), os.path.basename(path)), path, st, CACHE_SCHEMA)
    try:
        return _from_entry(entry) if entry is not None else None
    except (KeyError, TypeError, ValueError):  # an entry of the right tag but the wrong shape: rebuild it
        return None


def _parse_and_save(item: tuple[str, os.stat_result, bool]) -> RankFile | OSError:
    """Parse one rank file and write its cache entry (in a pool worker or here)."""
    path, st, use_cache = item
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return e
    rf = parse_rank_bytes(raw)
    if use_cache:
        cache.save(cache.entry_path(os.path.dirname(path), os.path.basename(path)), st, raw, CACHE_SCHEMA,
                   _to_entry(rf))
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
    steps = [r for r, e in zip(recs, events, strict=True) if e == "step"]
    others = [r for r, e in zip(recs, events, strict=True) if e != "step"]
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
    """The step records as one float column per field (null -> NaN): the records as tuples in one
    C-level pass where every record has every field with a number; else field by field."""
    for getter, names in ((_get_all_steps, ALL_STEP_FIELDS), (_get_steps, STEP_FIELDS)):
        try:
            table = np.array(list(map(getter, steps)), dtype=float).reshape(len(steps), len(names))
            break
        except (KeyError, TypeError, ValueError):  # a field left out (older writers: cpu_s) or of an odd type
            continue
    else:
        table, names = np.empty((len(steps), 0)), ()
    columns = dict(zip(names, np.ascontiguousarray(table.T), strict=True))
    for k in ALL_STEP_FIELDS:  # the slower path: NaN where a record has no number
        if k not in columns:
            columns[k] = _column([_number(r.get(k)) for r in steps])
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


# ---- sweeps -----------------------------------------------------------------------------

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


def list_sweeps(logs: str) -> list[str]:
    """Sweep names under `logs`, oldest first (by the mtime of their sweep.json)."""
    found = []
    for name in os.listdir(logs) if os.path.isdir(logs) else []:
        meta = os.path.join(logs, name, "sweep.json")
        if os.path.isfile(meta):
            found.append((os.path.getmtime(meta), name))
    return [n for _, n in sorted(found)]


@dataclass
class SweepData:
    name: str
    path: str
    meta: dict  # sweep.json
    experiments: pd.DataFrame  # one row per experiment (skipped ones too)
    steps: pd.DataFrame  # one row per rank-step
    epochs: pd.DataFrame  # one row per rank-epoch
    ranks: pd.DataFrame  # one row per rank: start/end records
    problems: pd.DataFrame
    configs: dict[str, dict] = field(default_factory=dict)  # experiment -> config.json


def _experiment_ids(path: str, meta: dict) -> list[str]:
    ids = [e["id"] for e in meta.get("experiments", []) if isinstance(e, dict) and isinstance(e.get("id"), str)]
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if name in ids or name.startswith(".") or not os.path.isdir(sub):  # .cache/ is not an experiment
            continue
        if os.path.exists(os.path.join(sub, "config.json")) or any(
                f.startswith("rank-") and f.endswith(".jsonl") for f in os.listdir(sub)):
            ids.append(name)
    return ids


def _config_from_id(exp_id: str, listed: dict) -> dict:
    """Best effort when config.json is gone: the sweep.json entry, else what the id says."""
    if listed:
        return {k: v for k, v in listed.items() if k not in ("id", "skipped")}
    m = ID_RE.match(exp_id)
    if not m:
        return {}
    cfg: dict[str, Any] = {"strategy": m["strategy"], "nodes": int(m["nodes"]), "procs_per_node": int(m["procs"]),
                           "global_batch": int(m["batch"]), "repeat": int(m["repeat"])}
    if m["chunks"]:
        cfg["chunks"] = int(m["chunks"])
    return cfg


def _derived(cfg: dict) -> tuple[int, int]:
    """(pipeline stages, data-parallel size), from the one place that defines them when it parses."""
    try:
        from contract.config import ExperimentConfig  # torch-free

        c = ExperimentConfig.from_dict(cfg)
        return c.pipeline_stages, c.dp_size
    except Exception:  # noqa: BLE001 - an odd config must not stop the analysis
        return 1, int(cfg.get("nodes", 1)) * int(cfg.get("procs_per_node", 1))


def completed(path: str) -> list[str]:
    """The experiments whose status.json says COMPLETED: read before load_sweep by the commands
    that refuse a sweep with none, so that refusing writes nothing (not even the cache)."""
    meta, _ = read_json(os.path.join(path, "sweep.json"))
    return [exp for exp in _experiment_ids(path, meta if isinstance(meta, dict) else {})
            if (read_json(os.path.join(path, exp, STATUS))[0] or {}).get("state") == "COMPLETED"]


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


@dataclass
class _Head:
    """What sweep.json, config.json and status.json say of one experiment, before its rank files."""

    exp: str
    dir: str
    doc: dict  # config.json
    cfg: dict
    status: dict
    state: str
    skipped_reason: str | None
    problems: list[tuple[str, str, str]]  # (kind, detail, file)
    nodes: int
    procs: int
    stages: int
    dp: int
    cpu_plan: dict

    @property
    def world(self) -> int:
        return self.nodes * self.procs

    @property
    def reads_ranks(self) -> bool:
        return self.state != "SKIPPED" and os.path.isdir(self.dir)

    def rank_path(self, rank: int) -> str:
        return os.path.join(self.dir, f"rank-{rank}.jsonl")


def _experiment_head(path: str, exp: str, listed: dict[str, dict]) -> _Head:
    d = os.path.join(path, exp)
    doc, cerr = read_json(os.path.join(d, "config.json"))
    status, serr = read_json(os.path.join(d, STATUS))
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    if not cfg:
        cfg = _config_from_id(exp, listed.get(exp, {}))
    exp_meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    skipped_reason = (listed.get(exp) or {}).get("skipped") or exp_meta.get("skipped")
    state = status.get("state") or ("SKIPPED" if skipped_reason else "UNKNOWN")
    problems = []
    if not os.path.isdir(d):
        if state != "SKIPPED":
            problems.append(("missing experiment directory", f"{exp} is in sweep.json but has no directory", exp))
        state = "SKIPPED" if skipped_reason else "MISSING"
    elif state != "SKIPPED":
        if cerr:
            problems.append((f"config.json {cerr}", "layout taken from sweep.json / the experiment id",
                             f"{exp}/config.json"))
        if serr:
            problems.append((f"{STATUS} {serr}", "the experiment's final state is unknown", f"{exp}/{STATUS}"))
    nodes, procs = int(cfg.get("nodes", 1)), int(cfg.get("procs_per_node", 1))
    stages, dp = _derived(cfg) if cfg else (1, nodes * procs)
    cpu_plan = exp_meta.get("cpu_plan") or status.get("cpu_plan") or {}
    return _Head(exp, d, doc, cfg, status, state, skipped_reason, problems, nodes, procs, stages, dp, cpu_plan)


def _load_sweep(path: str, only: list[str] | None = None, use_cache: bool = True) -> SweepData:
    """`only`: these experiment directories (load_run), without the sweep's sweep.json problem."""
    name = os.path.basename(os.path.normpath(path))
    problems: list[dict] = []

    def problem(exp: str, kind: str, detail: str, file: str = "", rank: int | None = None, line: int = 0) -> None:
        problems.append({"sweep": name, "experiment": exp, "rank": rank, "kind": kind, "detail": detail,
                         "file": file, "line": line})

    meta, err = read_json(os.path.join(path, "sweep.json"))
    if err and only is None:
        problem("", f"sweep.json {err}", "the grid and meta of the sweep are unknown", "sweep.json")
    listed = {e["id"]: e for e in meta.get("experiments", []) if isinstance(e, dict) and "id" in e}
    scaling = str((meta.get("grid") or {}).get("scaling") or SCALINGS[0])
    exp_rows, rank_rows, epoch_rows = [], [], []
    step_parts: list[tuple[int, int, RankFile]] = []
    configs: dict[str, dict] = {}
    ids = _experiment_ids(path, meta) if only is None else list(only)
    heads = [_experiment_head(path, exp, listed) for exp in ids]
    files = read_rank_files([h.rank_path(r) for h in heads if h.reads_ranks for r in range(h.world)], use_cache)
    for k, h in enumerate(heads):
        exp, cfg, status, state, world = h.exp, h.cfg, h.status, h.state, h.world
        configs[exp] = h.doc
        for kind, detail, file in h.problems:
            problem(exp, kind, detail, file)
        first_error = None
        found = earlier_attempts = earlier_records = 0
        if h.reads_ranks:
            for rank in range(world):
                fname = f"rank-{rank}.jsonl"
                rf = files[h.rank_path(rank)]
                if isinstance(rf, FileNotFoundError):
                    problem(exp, "missing rank file", f"{fname} of {world} ranks is missing", f"{exp}/{fname}", rank)
                    continue
                found += 1
                if isinstance(rf, OSError):
                    problem(exp, "unreadable rank file", str(rf), f"{exp}/{fname}", rank)
                    continue
                for kind, detail, line in rf.problems:
                    problem(exp, kind, detail, f"{exp}/{fname}", rank, line)
                step_parts.append((k, rank, rf))
                earlier_attempts = max(earlier_attempts, rf.earlier_attempts)
                earlier_records += rf.earlier_records
                start = rf.starts[-1] if rf.starts else {}
                end = rf.ends[-1] if rf.ends else {}
                error = rf.errors[0] if rf.errors else {}
                if error and (first_error is None or error.get("time", 0) < first_error[0]):
                    first_error = (error.get("time", 0), f"rank {rank}: {error.get('message')}")
                rank_rows.append({
                    "experiment": exp, "rank": rank, "node": start.get("node") or end.get("node"),
                    "attempt": start.get("attempt"), "world_size": start.get("world_size"),
                    "dp_size": start.get("dp_size"), "total_steps": start.get("total_steps"),
                    "start_time": min((s.get("time", np.nan) for s in rf.starts), default=np.nan),
                    "param_bytes": start.get("param_bytes"), "grad_bytes": start.get("grad_bytes"),
                    "optim_bytes": start.get("optim_bytes"), "end_status": end.get("status"),
                    "end_param_bytes": end.get("param_bytes"), "end_grad_bytes": end.get("grad_bytes"),
                    "end_optim_bytes": end.get("optim_bytes"), "peak_mem_bytes": end.get("peak_mem_bytes"),
                    "end_time": end.get("time"), "error": error.get("message")})
                for e in rf.epochs:
                    epoch_rows.append({"experiment": exp, "rank": rank,
                                       **{f: e.get(f) for f in EPOCH_FIELDS}})
        if state in BAD_STATES:
            detail = first_error[1] if first_error else (status.get("reason") or status.get("failed_ranks") or
                                                         "no error record")
            problem(exp, state, str(detail), f"{exp}/{STATUS}")
        exp_rows.append({
            "sweep": name, "experiment": exp, "strategy": cfg.get("strategy", exp.split("-")[0]),
            "nodes": h.nodes, "procs_per_node": h.procs, "world_size": world, "stages": h.stages, "dp_size": h.dp,
            "global_batch": int(cfg.get("global_batch", 0) or 0), "chunks": int(cfg.get("chunks") or DEFAULT_CHUNKS),
            "schedule": cfg.get("schedule", ""), "model": cfg.get("model", ""), "dataset": cfg.get("dataset", ""),
            "precision": cfg.get("precision", "fp32"), "link": cfg.get("link", "loopback"),
            "repeat": int(cfg.get("repeat", 0) or 0), "steps_configured": cfg.get("steps"),
            "scaling": scaling, "state": state, "reason": h.skipped_reason if state == "SKIPPED" else None,
            "error": first_error[1] if first_error else None, "attempts": status.get("attempts"),
            "wall_s": status.get("wall_s"), "ranks_found": found,
            "earlier_attempts": earlier_attempts, "earlier_records": earlier_records,
            "oversubscribed": bool(h.cpu_plan.get("oversubscribed", False)),
            "threads_per_rank": h.cpu_plan.get("threads_per_rank"), "machine_cores": h.cpu_plan.get("machine_cores")})
    experiments = pd.DataFrame(exp_rows, columns=list(exp_rows[0]) if exp_rows else ["experiment"])
    return SweepData(name, path, meta, experiments, _steps_frame(ids, step_parts),
                     pd.DataFrame(epoch_rows, columns=["experiment", "rank", *EPOCH_FIELDS]),
                     pd.DataFrame(rank_rows, columns=["experiment", "rank", "node", *RANK_FIELDS]),
                     pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS)), configs)


def _steps_frame(ids: list[str], parts: list[tuple[int, int, RankFile]]) -> pd.DataFrame:
    """Concatenate the per-file columns once (each file's last attempt only); rows without a
    step number are dropped by one mask over the arrays, not by copying a DataFrame."""
    n = [len(rf.warmup) for _, _, rf in parts]

    def joined(get, dtype) -> np.ndarray:
        return np.concatenate([get(rf) for _, _, rf in parts]) if parts else np.array([], dtype=dtype)

    data: dict[str, Any] = {
        "experiment": np.repeat([k for k, _, _ in parts], n).astype(np.int64),
        "rank": np.repeat([r for _, r, _ in parts], n).astype(np.int64),
        **{f: joined(lambda rf, f=f: rf.steps[f], float) for f in FLOAT_STEP_FIELDS},
        "warmup": joined(lambda rf: rf.warmup, bool), "attempt": joined(lambda rf: rf.attempt, np.int64)}
    has_step = ~np.isnan(data["step"])
    if not has_step.all():
        data = {k: v[has_step] for k, v in data.items()}
    data["step"] = data["step"].astype(np.int64)
    data["experiment"] = pd.Categorical.from_codes(data["experiment"], categories=ids)
    df = pd.DataFrame(data)
    if any(len(rf.starts) > 1 for _, _, rf in parts):  # one attempt that logged two starts: odd, keep the later
        df = df.drop_duplicates(["experiment", "rank", "step"], keep="last").reset_index(drop=True)
    return df
