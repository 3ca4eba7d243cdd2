"""Interconnect emulation in a real ddp run on 2 simulated nodes: what is logged, whatever the link.

Deterministic checks only. How much comm_s grows on a slower link is a measurement on a shared
machine, not a pass/fail fact: `make bench BENCH=projection` prints it (the exact slept seconds
are checked in process in tests/unit/test_link.py).
"""

from __future__ import annotations

from contract.tables import LINKS
from tests.helpers import records, run_local


def _steps(run, world: int) -> list[dict]:
    return [r for rank in range(world) for r in records(run, rank, "step") if not r["warmup"]]


def test_ddp_on_an_emulated_link_logs_the_same_bytes(tmp_path):
    lat, _ = LINKS["10gbe"]
    sent = {}
    for link in ("loopback", "10gbe"):
        run = tmp_path / link
        assert run_local(run, "ddp", nodes=2, procs=1, steps=6, link=link)["state"] == "COMPLETED"
        steps = _steps(run, 2)
        assert len(steps) == 2 * (6 - 2)
        sent[link] = sorted({r["comm_bytes"] for r in steps})
        if link == "10gbe":
            # Every bucket sleeps at least 2 (W-1) latencies inside its timed span: a lower bound
            # that other load on the machine can only make easier to meet.
            assert all(r["comm_s"] >= 2 * lat * 1e-6 for r in steps), [r["comm_s"] for r in steps]
    assert sent["loopback"] == sent["10gbe"] and min(sent["loopback"]) > 0
