"""Link emulation, one rule: the wire time is added to the real transfer time, never overlapped."""

from __future__ import annotations

import inspect
import time
import types

from contract import envnames
from contract.config import ExperimentConfig
from trainers.common.traffic import CommMeter, Link


def test_wire_time_is_added_after_a_slow_real_transfer(monkeypatch):
    monkeypatch.setenv(envnames.EMULATE_LINK, "1")
    cfg = ExperimentConfig(strategy="ring", nodes=2, procs_per_node=1, link="10gbe", latency_us=20_000.0)
    m = CommMeter(types.SimpleNamespace(cfg=cfg, rank=0))
    wire = m.link.delay_s(1000, 1)
    assert wire >= 0.02
    with m.transfer(1000, 1, peer=1):
        time.sleep(wire)  # the real transfer alone already took as long as the wire
    seconds, nbytes = m.take()
    assert nbytes == 1000 and seconds >= 2 * wire  # a max of the two would give ~1 x wire
    assert m.emulated_s == wire


def test_no_overlap_parameter_left():
    """`already_s` let a caller take the max of real and wire time; the one rule has no use for it."""
    assert "already_s" not in inspect.signature(Link.wait).parameters
    assert "already_s" not in inspect.signature(CommMeter.emulate).parameters
