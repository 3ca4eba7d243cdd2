"""A completed rank leaves through os._exit(0), never through interpreter finalization.

Why (trainers/common/runtime.py, _leave_completed): gloo's worker threads release Python-owned
tensors and callbacks after the waiting thread has moved on; one that asks for the GIL after
finalization has begun is ended with pthread_exit, which aborts inside a noexcept C++ destructor
("terminate called without an active exception"). Under srun that turned finished runs into
FAILED steps (143), at random. Skipping finalization removes the race; this test pins that down
deterministically: an atexit handler (run by finalization, not by os._exit) must not run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from contract import envnames
from tests.helpers import ROOT, records

# Runs the trainer as `python -m trainers.ddp` would, with an atexit marker registered first.
PROBE = ("import atexit, runpy, sys; atexit.register(lambda: print('FINALIZED', flush=True)); "
         "sys.argv = ['trainers.ddp'] + sys.argv[1:]; runpy.run_module('trainers.ddp', run_name='__main__')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_completed_ranks_skip_finalization(tmp_path):
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               envnames.NODE: f"n{rank}", envnames.CHECKPOINT_ON_SIGNAL: "1", envnames.THREADS: "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", PROBE, "--nodes", "2", "--steps", "3",
                                       "--run-dir", str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, out
        assert "FINALIZED" not in out, f"rank {rank} ran interpreter finalization after a completed run"
        assert "terminate called" not in out and "warning: process-group teardown" not in out, out
        assert [r["status"] for r in records(str(tmp_path), rank, "end")] == ["COMPLETED"]
