"""Interconnect emulation, in process: which traffic a link delays, and by exactly how much.

No wall-clock comparisons: the seconds the meter slept (`emulated_s`, what Link.wait returned)
must equal latency x messages + bytes / bandwidth computed from the meter's own counters. How
much a real run's comm_s grows on a slower link is a measurement: `make bench BENCH=projection`.
"""

from __future__ import annotations

import types

import pytest

from contract import envnames
from contract.config import ExperimentConfig
from contract.tables import LINKS
from trainers.common.traffic import CommMeter, Link


def _meter(rank: int, nodes: int, procs: int, link: str, monkeypatch, emulate: bool = True, **kw) -> CommMeter:
    monkeypatch.setenv(envnames.EMULATE_LINK, "1" if emulate else "0")
    cfg = ExperimentConfig(strategy="ddp", nodes=nodes, procs_per_node=procs, link=link, **kw)
    return CommMeter(types.SimpleNamespace(cfg=cfg, rank=rank))


def test_link_only_between_simulated_nodes(monkeypatch):
    assert _meter(0, 1, 2, "10gbe", monkeypatch).link is None  # one node: nothing crosses
    assert _meter(0, 2, 1, "loopback", monkeypatch).link is None
    assert _meter(0, 2, 1, "10gbe", monkeypatch, emulate=False).link is None  # not the simulate backend
    m = _meter(0, 2, 2, "10gbe", monkeypatch)
    assert m.crosses_nodes(2) and not m.crosses_nodes(1)
    lat, gbps = LINKS["10gbe"]
    assert m.link == Link(lat * 1e-6, gbps * 1e9 / 8)
    assert m.link.delay_s(10**6, 4) == pytest.approx(4 * 25e-6 + 8e6 / 10e9)
    m.emulate(10**6, peer=1)  # same node: no delay
    assert m.emulated_s == 0
    with m.transfer(125_000, 2, peer=3):
        pass
    seconds, nbytes = m.take()
    assert nbytes == 125_000 and m.emulated_s == pytest.approx(2 * 25e-6 + 125_000 / (10e9 / 8))
    assert seconds >= m.emulated_s  # the step's comm time holds the sleep (a lower bound load cannot break)


@pytest.mark.parametrize("link, latency_us, bandwidth_gbps", [("10gbe", -1.0, -1.0), ("100gbe", -1.0, -1.0),
                                                              ("loopback", 40.0, -1.0), ("10gbe", 3.0, 80.0)])
def test_slept_seconds_follow_the_counters(monkeypatch, link, latency_us, bandwidth_gbps):
    """Several cross-node transfers and collectives: the slept seconds equal latency x messages +
    bytes / bandwidth over the meter's byte counter and the messages sent; same-node traffic adds none."""
    m = _meter(0, 2, 2, link, monkeypatch, latency_us=latency_us, bandwidth_gbps=bandwidth_gbps)
    cfg = m.ctx.cfg
    latency, bandwidth = cfg.link_latency_us * 1e-6, cfg.link_bandwidth_gbps * 1e9 / 8
    assert m.link is not None
    crossing_bytes = crossing_messages = 0
    total_bytes = 0
    for nbytes, messages, peer in ((10_000, 1, 2), (2_500, 3, None), (40_000, 2, 1), (1, 1, 3), (0, 4, None)):
        with m.transfer(nbytes, messages, peer=peer):
            pass
        total_bytes += nbytes
        if peer is None or m.crosses_nodes(peer):
            crossing_bytes += nbytes
            crossing_messages += messages
    _, counted = m.take()
    assert counted == total_bytes
    transfer = crossing_bytes / bandwidth if bandwidth > 0 else 0.0
    assert m.emulated_s == pytest.approx(latency * crossing_messages + transfer, rel=1e-12)


def test_overlapping_transfers_count_once(monkeypatch):
    m = _meter(0, 2, 1, "loopback", monkeypatch)
    m.add_span(0.0, 2.0, 10)
    m.add_span(1.0, 3.0, 10)  # queued behind the first: only 1 s more
    m.add_span(5.0, 6.0, 10)
    assert m.take() == (4.0, 30) and m.take() == (0.0, 0)
