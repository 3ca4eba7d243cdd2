"""Where the CIFAR-10 files go, whether they are there, and how many training samples they hold.

Torch-free: config.validate refuses DATASET=cifar10 without its files, and checks the global
batch against the real training-set size, before anything is launched. The files are
CIFAR-10's python version, as torchvision downloads it (`make data`):
`<data dir>/cifar-10-batches-py/data_batch_1..5` and `test_batch`, each a pickled dict whose
`labels` is a list of ints (one per image) and whose `data` is an N x 3072 uint8 array.
"""

from __future__ import annotations

import os
import pickle
import pickletools
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from contract.errors import ConfigError

FOLDER = "cifar-10-batches-py"
TEST_FILE = "test_batch"
TRAIN_PREFIX = "data_batch_"
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "FRAME"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
_STRING_OPS = {"SHORT_BINSTRING", "BINSTRING", "STRING", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
               "UNICODE", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}


def folder(data_dir: str) -> str:
    return os.path.join(data_dir, FOLDER)


def train_files(data_dir: str) -> list[str]:
    """Paths of the training batches present, in order ([] when there are none)."""
    d = folder(data_dir)
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.startswith(TRAIN_PREFIX)]


def missing(data_dir: str) -> str | None:
    """One line saying what is missing and how to get it; None when the files are there."""
    d = folder(data_dir)
    absent = [what for what, ok in (("data_batch_*", train_files(data_dir)),
                                    (TEST_FILE, os.path.isfile(os.path.join(d, TEST_FILE)))) if not ok]
    if not absent:
        return None
    return (f"dataset cifar10: {' and '.join(absent)} not found in {d} (the files go in "
            f"--data-dir/{FOLDER}): run `make data` (downloads them with torchvision; needs internet), "
            f"or unpack CIFAR-10's python version (cifar-10-python.tar.gz) into {data_dir}")


def train_samples(data_dir: str) -> int:
    """Training samples in the files (ConfigError, one line, when they are missing or unreadable)."""
    problem = missing(data_dir)
    if problem:
        raise ConfigError(problem)
    total = 0
    for path in train_files(data_dir):
        st = os.stat(path)
        try:
            total += _labels_in(path, st.st_size, st.st_mtime_ns)
        except Exception as e:  # noqa: BLE001 - a corrupt file: one line naming it
            raise ConfigError(f"dataset cifar10: cannot read {path}: {type(e).__name__}: {e}") from None
    return total


@lru_cache(maxsize=64)
def _labels_in(path: str, _size: int, _mtime_ns: int) -> int:
    """Labels in one batch file, from its pickle opcodes up to the end of the `labels` list: the
    real files store `labels` before `data`, so the 30 MB of pixels are not read. Loads the whole
    file where the labels are not a plain list of ints."""
    with open(path, "rb") as f:
        count = _count_label_list(pickletools.genops(f))
    if count is not None:
        return count
    with open(path, "rb") as f:
        return len(pickle.load(f, encoding="bytes")[b"labels"])


def _count_label_list(ops: Iterator[tuple[Any, Any, Any]]) -> int | None:
    """Items of the list stored under the key `labels`; None unless it is a flat list of ints."""
    state, count = "key", 0  # key: looking for it; open: the list should start; items: in it
    for op, arg, _pos in ops:
        name = op.name
        if name in _MEMO_OPS:
            continue
        if state == "key":
            if name in _STRING_OPS and arg in ("labels", b"labels"):
                state = "open"
            elif name == "STOP":
                return None
        elif state == "open":
            if name != "EMPTY_LIST":
                return None
            state = "items"
        elif name in _INT_OPS:
            count += 1
        elif name not in ("MARK", "APPEND", "APPENDS"):  # the list has ended, or holds something else
            return count if name in _STRING_OPS or name in ("SETITEM", "SETITEMS", "STOP") else None
    return None
