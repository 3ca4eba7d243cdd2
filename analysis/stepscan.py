"""The columnar fast path of a rank file: its step records to columns without a dict per record.

Every step line a writer emits has the same keys in the same order with the same spacing; only
the values differ. So the first step line, parsed by orjson, gives a template (the bytes between
the values: `{"event":"step","rank":` ... `}`), numpy checks every other line that starts like it
against the template byte for byte, and blanks those bytes with spaces: what is left of the file
is the values, comma-separated, which orjson reads in one call as one flat list (numbers, no
dicts, no keys). Each field is then every K-th element of that list.

Returns None, and the caller reads the file line by line (analysis/logread.py), whenever anything
is not the usual case: a line that is not valid JSON, a step line unlike the template, a value
of an odd type where a number belongs, a blank line, a file not ending in a newline, several
attempts. Why the values are then the line-by-line path's exactly: a value cannot contain the
`,` or `}` that ends it, so a bad value can only merge with its neighbours in orjson's list
(never split), and the list's length would show it; what surrounds the values is the template's
bytes, which orjson parsed as the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.lib.stride_tricks import sliding_window_view

_COMMA, _CLOSE, _SPACE, _NL = (ord(c) for c in ",} \n")
# First bytes a step field's value may start with: a number, true, false, null (a string, an
# object or an array is left to the line-by-line path: it treats them differently)
_NUMBER_START = np.zeros(256, dtype=bool)
_NUMBER_START[np.frombuffer(b"-0123456789tfn", np.uint8)] = True
_TEMPLATE_SEARCH = 64  # lines searched for the first step record
_W = 8  # bytes compared (and blanked) at a time: one unaligned uint64


@dataclass
class Scan:
    """A rank file's records in the usual case: the step fields as lists, the others as dicts."""

    fields: dict[str, list]  # step field -> its values, one per step record, in file order
    steps: int  # step records
    others: list[dict]  # the other records (start, epoch, end, error), in file order


@dataclass
class _Template:
    keys: list[str]  # the keys after "event", in order
    gaps: list[bytes]  # before each of those keys' values: `{"event":"step","rank":`, `"node":`, ...
    tail: bytes  # after the closing brace (a `\r`, usually nothing)
    # the gaps as 8-byte words: gap index, offset from the gap's start, the word, the word blanked
    # (a gap of 7 bytes is read with the `,` before it, which stays); short gaps and the tail
    # (rare) byte by byte
    words: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    bytewise: list[int]


def _words(gaps: list[bytes]) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], list[int]]:
    index, offset, word, blank, bytewise = [], [], [], [], []
    for j, gap in enumerate(gaps):
        if len(gap) >= _W:
            for o in sorted({*range(0, len(gap) - _W + 1, _W), len(gap) - _W}):
                index.append(j), offset.append(o), word.append(gap[o:o + _W]), blank.append(b" " * _W)
        elif len(gap) == _W - 1 and j:  # after the previous value's comma
            index.append(j), offset.append(-1), word.append(b"," + gap), blank.append(b"," + b" " * (_W - 1))
        else:
            bytewise.append(j)
    as_words = [np.frombuffer(b"".join(w), "<u8") if w else np.zeros(0, "<u8") for w in (word, blank)]
    return (np.array(index, dtype=np.intp), np.array(offset, dtype=np.intp), *as_words), bytewise


def _as_words(buf: np.ndarray, offset: int, size: int) -> np.ndarray:
    """The uint64 that starts at each byte of `buf[offset:offset + size]` (a view: writes go through)."""
    return np.ndarray((max(size - _W + 1, 0),), dtype="<u8", buffer=buf, offset=offset, strides=(1,))


def scan(raw: bytes, numeric: frozenset[str]) -> Scan | None:
    """The records of a rank file's bytes, or None when the line-by-line path must read it.
    `numeric`: the step fields whose values must be numbers, true, false or null."""
    if not raw.endswith(b"\n"):
        return None
    b = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(b == _NL)  # each line's newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    tpl = _template(raw, starts, ends)
    if tpl is None:
        return None
    # a step line: one that starts with the first gap (`{"event":"step","rank":`)
    index, offset, word, blank = tpl.words
    first_gap = index == 0
    words = _as_words(b, 0, len(b))
    probe = np.minimum(starts[:, None] + offset[first_gap], len(words) - 1)
    is_step = (ends - starts >= len(tpl.gaps[0])) & (words[probe] == word[first_gap]).all(axis=1)
    others = _other_records(raw, starts[~is_step], ends[~is_step])
    if others is None:
        return None
    # the step lines alone (the others blanked), as the stream orjson will read: `[` ... `null]`
    buf = np.empty(len(b) + 6, np.uint8)
    buf[0], buf[-5:] = ord("["), np.frombuffer(b"null]", np.uint8)
    body = buf[1:-5]
    body[:] = b
    for s, e in zip(starts[~is_step].tolist(), ends[~is_step].tolist(), strict=True):
        body[s:e] = _SPACE
    s_starts, s_ends = starts[is_step], ends[is_step]
    n, k = len(s_starts), len(tpl.keys)
    # every step line holds as many `,` and `}` as the template: the one after "event"'s value and
    # one after each other value (a value holding one makes some line hold more, and shows)
    stops = np.flatnonzero((body == _COMMA) | (body == _CLOSE))
    if len(stops) != n * (k + 1):
        return None
    stops = stops.reshape(n, k + 1)
    if (stops[:, 0] < s_starts).any() or (stops[:, -1] >= s_ends).any():
        return None
    # the bytes between the values are the template's: value j's gap starts right after value
    # j-1's stop (the first gap at the line's start), and the line ends after the last's `}`
    lens = np.array([len(g) for g in tpl.gaps])
    numeric_at = [j for j, key in enumerate(tpl.keys) if key in numeric]
    begins = np.concatenate((s_starts[:, None], stops[:, 1:-1] + 1), axis=1)
    first = begins + lens  # each value's first byte
    if ((first >= stops[:, 1:]).any() or (body[stops[:, 1:-1]] != _COMMA).any()
            or (body[stops[:, -1]] != _CLOSE).any() or (stops[:, -1] + 1 + len(tpl.tail) != s_ends).any()
            or not _NUMBER_START[body[first[:, numeric_at]]].all()):
        return None
    words = _as_words(buf, 1, len(b))
    at = begins[:, index] + offset
    if (words[at] != word).any():
        return None
    words[at] = blank
    for j in tpl.bytewise:
        if not _blank_bytewise(body, begins[:, j], tpl.gaps[j]):
            return None
    if tpl.tail and not _blank_bytewise(body, stops[:, -1] + 1, tpl.tail):
        return None
    body[stops[:, -1]] = _COMMA  # what is left: the values, each followed by its `,`
    try:
        values = orjson.loads(memoryview(buf))
    except orjson.JSONDecodeError:
        return None
    if len(values) != n * k + 1:  # a value that merged with the next (an open string or bracket)
        return None
    return Scan({key: values[j:n * k:k] for j, key in enumerate(tpl.keys)}, n, others)


def _blank_bytewise(body: np.ndarray, at: np.ndarray, gap: bytes) -> bool:
    """Compare the bytes at each of `at` with `gap`, then blank them; False where one differs."""
    rows = sliding_window_view(body, len(gap), writeable=True)
    if (rows[at] != np.frombuffer(gap, np.uint8)).any():
        return False
    rows[at] = _SPACE
    return True


def _template(raw: bytes, starts: np.ndarray, ends: np.ndarray) -> _Template | None:
    """The first step line's template: its keys and the bytes around its values, checked
    against what orjson makes of the line (None: no step line near the top, or an odd one)."""
    for s, e in zip(starts[:_TEMPLATE_SEARCH].tolist(), ends[:_TEMPLATE_SEARCH].tolist(), strict=True):
        line = raw[s:e]
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if type(rec) is not dict or rec.get("event") != "step":
            continue
        keys = list(rec)
        if not keys or keys[0] != "event" or len(keys) < 2:
            return None
        return _split(line, rec, keys)
    return None


def _split(line: bytes, rec: dict[str, Any], keys: list[str]) -> _Template | None:
    """Cut a step line at its values: the template, if the cuts give back orjson's record and
    the line's only `,` and `}` are those that end its values."""
    b = np.frombuffer(line, np.uint8)
    colons = (np.flatnonzero((b[:-1] == ord('"')) & (b[1:] == ord(":"))) + 1).tolist()
    stops = np.flatnonzero((b == _COMMA) | (b == _CLOSE)).tolist()
    if len(colons) != len(keys) or len(stops) != len(keys) or line[stops[-1]:stops[-1] + 1] != b"}":
        return None
    if any(not c < s for c, s in zip(colons, stops, strict=True)) or any(
            not s < c for s, c in zip(stops, colons[1:], strict=False)):
        return None
    first = [c + 1 + (line[c + 1:c + 2] == b" ") for c in colons]
    gaps = [line[:first[1]], *(line[stops[j - 1] + 1:first[j]] for j in range(2, len(keys)))]
    try:
        values = orjson.loads(b"[" + b",".join(line[f:s] for f, s in zip(first, stops, strict=True)) + b"]")
    except orjson.JSONDecodeError:
        return None
    if values != list(rec.values()) or values[0] != "step":
        return None
    return _Template(keys[1:], gaps, line[stops[-1] + 1:], *_words(gaps))


def _other_records(raw: bytes, starts: np.ndarray, ends: np.ndarray) -> list[dict] | None:
    """The lines that are not step lines, each a record of a string event other than "step"."""
    out = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        try:
            rec = orjson.loads(raw[s:e])
        except orjson.JSONDecodeError:
            return None
        if type(rec) is not dict or type(rec.get("event")) is not str or rec["event"] == "step":
            return None
        out.append(rec)
    return out
