"""The allocator state is chosen in every rank (trainers/common/allocator.py), whatever started it."""

from __future__ import annotations

import ctypes
import json
import os
import re

import pytest
import torch

from contract import registry
from contract.config import ExperimentConfig
from contract.errors import ConfigError
from tests.helpers import ROOT
from trainers.common import allocator, distenv, runtime, setup
from trainers.common.context import Context


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mmapped_by_malloc(nbytes: int) -> bool:
    """Whether glibc serves a block of nbytes with its own mmap (mallinfo2's hblkhd grows)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(nbytes)
    grew = libc.mallinfo2().hblkhd > before
    libc.free(block)
    return grew


needs_glibc = pytest.mark.skipif(allocator._libc() is None, reason="mallopt is glibc's")


@needs_glibc
def test_apply_serves_large_blocks_from_the_heap():
    state = allocator.apply()
    assert state.allocator.startswith("glibc") and state.note == ""
    assert (state.mmap_threshold, state.trim_threshold) == (allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD)
    # 8 MiB: a cnn activation at batch 64; glibc's default (128 KiB, dynamic) would mmap it afresh
    assert not _mmapped_by_malloc(8 << 20)
    assert _mmapped_by_malloc(allocator.MMAP_THRESHOLD + (1 << 20))


def test_main_applies_it_before_anything_else(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "apply", lambda: calls.append("allocator") or allocator.AllocatorState("x", 1, 2))

    def parse(argv, strategy):
        calls.append("parse")
        raise ConfigError("bad")

    monkeypatch.setattr(runtime, "parse_trainer_args", parse)
    assert runtime.main(lambda ctx: None, "single", ["--steps", "x"]) == 2
    assert calls == ["allocator", "parse"]


@pytest.mark.parametrize("strategy", registry.NAMES)
def test_every_strategy_starts_through_runtime_main(strategy):
    """Every launcher (simulate, srun, submitit, torchrun, a shell) runs `python -m trainers.<s>`,
    whose entry point is runtime.main: so every rank of every strategy applies the state."""
    with open(os.path.join(ROOT, "trainers", f"{strategy}.py")) as f:
        source = f.read()
    assert re.search(r"^from trainers\.common\.runtime import .*\bmain\b", source, re.M)
    assert re.search(r'^if __name__ == "__main__":\n    sys\.exit\(main\(', source, re.M)


def test_config_json_records_each_ranks_state(tmp_path):
    cfg = ExperimentConfig(run_dir=str(tmp_path))
    env = distenv.DistEnv(0, 1, 0, 1, "node0", "127.0.0.1", 0, "single")
    ctx = Context(cfg, env, torch.device("cpu"), None, None, None, str(tmp_path), 1)
    state = allocator.AllocatorState("glibc 2.36", allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD)
    setup._write_runtime_meta(ctx, "none", state)
    with open(tmp_path / "config.json") as f:
        ranks = json.load(f)["meta"]["ranks"]
    assert ranks[0]["allocator"] == state.describe()

