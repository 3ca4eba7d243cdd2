"""The columnar cache of parsed rank files (analysis/cache.py, through analysis/rankfiles.py).

In process, on small synthetic sweeps: a cached load equals a parsed one (broken lines included),
an entry is rebuilt when its log changes, when it comes from another schema and when it is
corrupted, and the analysis never takes `.cache/` for an experiment.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import orjson
import pandas as pd
import pyarrow.ipc as ipc
import pytest

from analysis import cache, rankfiles
from analysis.load import load_run, load_sweep
from analysis.synthetic import write_sweep
from tests.helpers import synthetic_id

DDP2 = synthetic_id("ddp", 2, steps=12)


@pytest.fixture
def sweep(tmp_path) -> str:
    """Three experiments, one rank file with a cut last line and one with a garbage line."""
    path = write_sweep(str(tmp_path), "s", strategies=("single", "ddp"), nodes=(1, 2), steps=12,
                       steps_per_epoch=4)
    with open(os.path.join(path, DDP2, "rank-1.jsonl"), "a") as f:
        f.write('{"event": "step", "rank": 1, "node": "node1", "time": 18')
    r0 = os.path.join(path, DDP2, "rank-0.jsonl")
    lines = open(r0).read().splitlines(keepends=True)
    lines.insert(3, "not json at all\n")
    open(r0, "w").writelines(lines)
    return path


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    """Counts the rank files parsed (not taken from the cache)."""
    calls: list[int] = []
    real = rankfiles.parse_rank_bytes

    def counting(raw: bytes):
        calls.append(len(raw))
        return real(raw)

    monkeypatch.setattr(rankfiles, "parse_rank_bytes", counting)
    return calls


def _frames(data) -> dict[str, pd.DataFrame]:
    return {"experiments": data.experiments, "steps": data.steps, "epochs": data.epochs, "ranks": data.ranks,
            "problems": data.problems}


def _assert_same(a, b) -> None:
    for name, frame in _frames(a).items():
        pd.testing.assert_frame_equal(frame, _frames(b)[name], obj=name)


def _entries(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, cache.CACHE_DIR, "*", "*" + cache.SUFFIX)))


def test_a_cached_load_equals_a_parsed_one(sweep, parses):
    parsed = load_sweep(sweep, use_cache=False)
    assert len(parses) == 4 and not os.path.exists(os.path.join(sweep, cache.CACHE_DIR))
    first = load_sweep(sweep)  # parses every rank file again and writes its entry
    assert len(parses) == 8 and len(_entries(sweep)) == 4
    again = load_sweep(sweep)  # from the entries only
    assert len(parses) == 8
    for data in (first, again):
        _assert_same(parsed, data)
    kinds = set(zip(again.problems["experiment"], again.problems["kind"], again.problems["rank"], strict=True))
    assert kinds == {(DDP2, "truncated line", 1), (DDP2, "garbage line", 0)}  # broken lines still reported
    assert ".cache" not in set(again.experiments["experiment"])
    _assert_same(load_run(os.path.join(sweep, DDP2), use_cache=False), load_run(os.path.join(sweep, DDP2)))


def _age(path: str, seconds: float = 3600) -> None:
    """Rank files last written an hour ago: their entries are not racy, size and mtime decide."""
    for f in glob.glob(os.path.join(path, "*", "rank-*.jsonl")):
        t = os.stat(f).st_mtime_ns - int(seconds * 1e9)
        os.utime(f, ns=(t, t))


def _crcs(path: str) -> list:
    return [orjson.loads(ipc.open_file(e).schema.metadata[cache.META_KEY])["crc32"] for e in _entries(path)]


def test_a_changed_log_is_parsed_again_the_others_not(sweep, parses):
    _age(sweep)
    load_sweep(sweep)
    assert _crcs(sweep) == [None] * 4
    parses.clear()
    f = os.path.join(sweep, DDP2, "rank-1.jsonl")
    text = open(f).read()
    step = {"event": "step", "rank": 1, "node": "node1", "time": 1.9e9, "step": 12, "epoch": 3, "samples": 16,
            "step_s": 7.0, "compute_s": 6.0, "comm_s": 1.0, "comm_bytes": 0, "loss": 1.0, "mem_bytes": 1,
            "cpu_s": 1.0, "warmup": False}
    with open(f, "w") as out:  # the cut line gone, one more step instead
        out.write(text[: text.rfind("\n") + 1] + json.dumps(step) + "\n")
    data = load_sweep(sweep)
    assert parses == [os.path.getsize(f)]
    rank1 = data.steps[(data.steps["experiment"] == DDP2) & (data.steps["rank"] == 1)]
    assert rank1["step"].max() == 12 and rank1["step_s"].max() == 7.0
    assert "truncated line" not in set(data.problems["kind"])


def test_a_rewrite_of_the_same_size_and_mtime_is_caught_by_content(sweep, parses):
    """Within the racy window (a file written within a timestamp tick of its entry) size and mtime
    cannot tell; the CRC-32 of the file's bytes does. The mtime is set ahead, so the entry is racy
    however slowly this test runs."""
    f = os.path.join(sweep, DDP2, "rank-0.jsonl")
    ahead = os.stat(f).st_mtime_ns + 60 * 10**9
    os.utime(f, ns=(ahead, ahead))
    load_sweep(sweep)
    parses.clear()
    st = os.stat(f)
    text = open(f).read()
    assert '"step_s": 0.' in text
    with open(f, "w") as out:
        out.write(text.replace('"step_s": 0.', '"step_s": 9.', 1))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(f).st_size, os.stat(f).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    data = load_sweep(sweep)
    assert len(parses) == 1 and data.steps["step_s"].max() > 9


def test_a_racy_entry_is_written_again_once_its_log_is_old_enough(sweep, parses, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", 3600 * 10**9)
    load_sweep(sweep)
    assert None not in _crcs(sweep)
    monkeypatch.setattr(cache, "RACY_NS", 1)  # as if an hour had gone by
    load_sweep(sweep)  # each entry checked by content, then written again without its CRC
    assert _crcs(sweep) == [None] * 4 and len(parses) == 4
    load_sweep(sweep)
    assert len(parses) == 4


def test_an_entry_of_another_schema_is_rebuilt(sweep, parses, monkeypatch):
    load_sweep(sweep)
    parses.clear()
    monkeypatch.setattr(rankfiles, "CACHE_SCHEMA", "rankfile:older")
    load_sweep(sweep)
    assert len(parses) == 4  # every entry rebuilt, under the new tag
    parses.clear()
    load_sweep(sweep)
    assert parses == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong shape"])
def test_a_corrupted_entry_is_rebuilt_not_trusted(sweep, parses, damage):
    parsed = load_sweep(sweep, use_cache=False)
    load_sweep(sweep)
    parses.clear()
    entry = cache.entry_path(os.path.join(sweep, DDP2), "rank-1.jsonl")
    raw = open(entry, "rb").read()
    if damage == "wrong shape":  # a valid file of the right tag whose columns are not a rank file's
        log = os.path.join(sweep, DDP2, "rank-1.jsonl")
        cache.save(entry, os.stat(log), open(log, "rb").read(), rankfiles.CACHE_SCHEMA,
                   cache.Entry({"step": np.arange(3.0)}, {}))
    else:
        with open(entry, "wb") as f:
            f.write({"truncate": raw[: len(raw) // 2], "garbage": b"\x00garbage" * 100, "empty": b""}[damage])
    _assert_same(parsed, load_sweep(sweep))
    assert len(parses) == 1
    parses.clear()
    load_sweep(sweep)
    assert parses == []  # rebuilt whole


def test_logs_where_no_entry_can_be_written_still_load(sweep, parses):
    with open(os.path.join(sweep, cache.CACHE_DIR), "w") as f:  # a file where the directory would go
        f.write("in the way")
    parsed = load_sweep(sweep, use_cache=False)
    for _ in range(2):
        _assert_same(parsed, load_sweep(sweep))
    assert len(parses) == 3 * 4


def test_prefetched_files_load_as_parsed_ones_and_a_file_changed_since_is_parsed_again(sweep, parses, monkeypatch):
    """`prefetch` (a `make plots` starts it before importing pandas): its workers parse and write
    the entries; `load_sweep` takes them, except for a file that changed after it was handed out."""
    from analysis.load import prefetch

    parsed = load_sweep(sweep, use_cache=False)
    parses.clear()
    monkeypatch.setattr(rankfiles, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(rankfiles, "cpus", lambda: 2)
    assert prefetch(sweep) == 4
    assert prefetch(sweep) == 0  # handed out already
    changed = os.path.join(sweep, DDP2, "rank-0.jsonl")
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as if rewritten after it was handed out
    data = load_sweep(sweep)
    assert parses == [st.st_size]  # the changed file alone, here; the three others by the workers
    assert not rankfiles._PREFETCH.pending and rankfiles._PREFETCH.pool is None
    assert len(_entries(sweep)) == 4
    _assert_same(parsed, data)
    assert prefetch(sweep) == 0  # every file has its entry now
