"""The columnar cache of parsed rank files: `logs/<sweep>/.cache/<experiment>/rank-<R>.arrow`.

One Arrow IPC file (Feather v2, uncompressed) per rank file: the parsed columns as typed arrays,
plus a JSON document in the schema metadata (what the reader needs besides the columns, the
reader's schema tag and the source file's signature). Arrow IPC rather than Parquet: an
uncompressed IPC file is read with no decoding (0.05 ms a rank file of 2000 steps against 0.5 ms
for Parquet, and written in half the time), which is what a second `make plots` pays for.

An entry is used only when all of these hold, else it is rebuilt (never trusted):
- it opens and its metadata parses (a corrupted or truncated file does not);
- its schema tag equals the reader's (`analysis/rankfiles.py` derives it from the reader's source);
- the rank file has the size and mtime (ns) it had when the entry was written;
- "racy" entries, written within RACY_NS of the rank file's mtime (a file rewritten within one
  tick of a coarse filesystem clock keeps its mtime), also match the CRC-32 of the rank file's
  bytes; once the file is older than that, the entry is written again without the flag.

The cache is an accelerator: a read-only or full disk only means no entry is written.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.ipc as ipc

CACHE_DIR = ".cache"  # under the sweep directory; a dot name, so it is never taken for an experiment
SUFFIX = ".arrow"
META_KEY = b"torchswitch"
RACY_NS = 2_000_000_000  # coarser than any local filesystem's timestamps (FAT's 2 s included)


def entry_path(run_dir: str, file_name: str) -> str:
    """Where the entry of `<run_dir>/<file_name>` lives: `<sweep>/.cache/<experiment>/<name>.arrow`."""
    run_dir = os.path.normpath(run_dir)
    stem = os.path.splitext(file_name)[0]
    return os.path.join(os.path.dirname(run_dir), CACHE_DIR, os.path.basename(run_dir), stem + SUFFIX)


@dataclass
class Entry:
    columns: dict[str, np.ndarray]
    doc: dict[str, Any]  # the reader's own fields (JSON-able)


def _signature(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load(path: str, source: str, st: os.stat_result, schema: str, just_written: bool = False) -> Entry | None:
    """The entry at `path` for the rank file `source` (whose stat is `st`), or None when it is
    missing, unreadable, of another schema, or the rank file changed since it was written.
    `just_written`: this process had it written from `st`'s state of the file a moment ago, so
    a racy entry's CRC is not checked (nor the entry rewritten) this time."""
    try:
        table = ipc.open_file(_mapped(path)).read_all()
        meta = orjson.loads(table.schema.metadata[META_KEY])
        if meta["schema"] != schema or meta["source"] != _signature(st):
            return None
        racy = meta["crc32"] is not None and not just_written
        if racy:
            with open(source, "rb") as f:
                raw = f.read()
            if crc32(raw) != meta["crc32"]:
                return None
        columns = {name: table.column(name).to_numpy() for name in table.column_names}
        entry = Entry(columns, meta["doc"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):  # corrupted or foreign: rebuild
        return None
    if racy and time.time_ns() - st.st_mtime_ns >= RACY_NS:  # verified, and its mtime is now trustworthy
        save(path, st, raw, schema, entry)
    return entry


def _mapped(path: str) -> pa.Buffer | pa.MemoryMappedFile:
    """The entry's bytes, mapped rather than read where the system allows: its columns are then
    views of the page cache (a third of the page faults of a copy, what a first `make plots` of
    a large sweep mostly pays for). The writer only ever replaces an entry (a rename), never
    truncates one in place, so a mapping stays valid."""
    try:
        return pa.memory_map(path, "r")
    except OSError as e:  # out of mappings (vm.max_map_count) or a filesystem without mmap: read it
        if isinstance(e, FileNotFoundError):
            raise
        with open(path, "rb") as f:
            return pa.py_buffer(f.read())


def save(path: str, st: os.stat_result, raw: bytes, schema: str, entry: Entry) -> bool:
    """Write the entry atomically (a temporary name, then rename). `st` is the rank file's stat
    taken *before* it was read (`raw`), so a file that grew meanwhile is re-read next time.
    False when it could not be written (read-only logs, a full disk, a value JSON cannot hold)."""
    now = time.time_ns()
    racy = now - st.st_mtime_ns < RACY_NS  # the file may still change without its mtime showing it
    meta = {"schema": schema, "source": _signature(st), "crc32": crc32(raw) if racy else None,
            "doc": entry.doc}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        table = pa.table({k: _arrow(v) for k, v in entry.columns.items()})
        table = table.replace_schema_metadata({META_KEY: orjson.dumps(meta)})
        sink = pa.BufferOutputStream()  # one write() of the whole file: a third faster than streaming it
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(sink.getvalue())
        os.replace(tmp, path)
        return True
    except (OSError, TypeError, ValueError, pa.ArrowException):
        try:
            os.remove(tmp)
        except OSError:
            pass
        return False


def _arrow(v: np.ndarray) -> pa.Array:
    """`pa.array(v)` for the entry's columns (bool, int64, float64) without its first call's
    import of pandas (a quarter of a second in each parse worker that `prefetch` forked before
    the main process imported it): the column's bytes as the array's buffer."""
    v = np.ascontiguousarray(v)
    if v.dtype == bool:
        return pa.Array.from_buffers(pa.bool_(), len(v), [None, pa.py_buffer(np.packbits(v, bitorder="little"))])
    if v.dtype.kind in "iuf" and v.dtype.isnative:
        return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v), [None, pa.py_buffer(v)])
    return pa.array(v)


def crc32(raw: bytes) -> int:
    return zlib.crc32(raw)

