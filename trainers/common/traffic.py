"""Communication accounting and interconnect emulation, shared by every strategy.

`CommMeter` sums the seconds and bytes a rank spends communicating in one step.
`Link` delays traffic between *simulated* nodes by latency + bytes / bandwidth, so one
machine can stand in for a cluster with a slower interconnect. Traffic inside a simulated
node, and traffic under a real launcher (Slurm), is never delayed.

One rule for every strategy: the emulated wire time is *added* to what the transfer really took
on this machine, never overlapped with it (no max of the two). A transfer that crosses
simulated nodes first runs for real over loopback, then sleeps latency x messages + bytes /
bandwidth. The loopback time stands for the copies, reductions and protocol work a real network
also needs; the sleep for the wire. So a step's `comm_s` on LINK=10gbe exceeds the same run's
on LINK=loopback by the wire time (tests/unit/test_link.py checks the slept seconds; `make
bench BENCH=projection` the growth). Where a strategy cannot time its communication apart from
compute (fsdp, pipeline and hybrid's pipeline part: `comm_s` null), the wire time is slept
right after the step's collectives or schedule, and shows in `step_s`.

Where each strategy adds it: ddp, zero - per gradient bucket, after its all-reduce completes
(inside the bucket's span); ring - per ring step, after its send and receive; ps - at the
server after every worker's push arrived, at a remote worker after the pull arrived; mp
(stages.P2P) - at the receiver after each recv; pipeline - after the schedule, per
cross-node neighbour; hybrid - after the schedule (as pipeline) and after the replicas'
all-reduce; fsdp - after the step.

API for a strategy (time the transfer yourself and include the delay in it):

    meter.emulate(nbytes, messages, peer=peer)   # after a transfer: sleep out the wire time
    with meter.transfer(nbytes, messages, peer=peer):   # or: time + emulate + count, in one
        dist.send(tensor, peer)

`peer=None` means a collective over all ranks: delayed whenever there are several nodes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contract import envnames
from contract.tables import wire_units

if TYPE_CHECKING:
    from trainers.common.context import Context


def ring_allreduce_bytes(nbytes: int, world: int) -> int:
    """Bytes each rank sends in a ring all-reduce: reduce-scatter + all-gather, 2(N-1)/N x size."""
    return 0 if world <= 1 else 2 * (world - 1) * nbytes // world


@dataclass(frozen=True)
class Link:
    latency_s: float
    bandwidth_bytes_s: float  # 0: infinite (not emulated)

    @classmethod
    def from_context(cls, ctx: Context) -> Link | None:
        """The emulated link, or None when nothing is to be emulated."""
        cfg = ctx.cfg
        if os.environ.get(envnames.EMULATE_LINK) != "1" or cfg.nodes < 2:
            return None
        latency_s, bandwidth = wire_units(cfg.link_latency_us, cfg.link_bandwidth_gbps)
        if latency_s <= 0 and bandwidth <= 0:
            return None
        return cls(latency_s, bandwidth)

    def delay_s(self, nbytes: int, messages: int = 1) -> float:
        transfer = nbytes / self.bandwidth_bytes_s if self.bandwidth_bytes_s > 0 else 0.0
        return messages * self.latency_s + transfer

    def wait(self, nbytes: int, messages: int = 1) -> float:
        """Sleep for the emulated wire time, on top of the transfer's real loopback time (see the
        module docstring). Returns the seconds slept."""
        remaining = self.delay_s(nbytes, messages)
        if remaining <= 0:
            return 0.0
        # time.sleep can return early on a signal; sleep until the deadline really passed.
        end = time.perf_counter() + remaining
        while (left := end - time.perf_counter()) > 0:
            time.sleep(left)
        return remaining


def node_of(rank: int, procs_per_node: int) -> int:
    return rank // procs_per_node


class CommMeter:
    """Seconds and bytes of communication within one step, plus link emulation."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.link = Link.from_context(ctx)
        self.seconds = 0.0
        self.bytes = 0
        self.emulated_s = 0.0  # seconds slept for the emulated link (all steps; for tests and notes)
        self.spans: list[tuple[float, float]] = []

    def add(self, seconds: float, nbytes: int) -> None:
        self.seconds += seconds
        self.bytes += nbytes

    def add_span(self, start: float, end: float, nbytes: int) -> None:
        """A transfer that may overlap others of the step (DDP's buckets queue behind each
        other): `take` counts the time at least one was in flight (the union of the spans),
        not the sum of their durations."""
        self.spans.append((start, end))
        self.bytes += nbytes

    def crosses_nodes(self, peer: int) -> bool:
        ppn = self.ctx.cfg.procs_per_node
        return node_of(peer, ppn) != node_of(self.ctx.rank, ppn)

    def emulate(self, nbytes: int, messages: int = 1, peer: int | None = None) -> None:
        """After a real transfer, delay traffic that crosses simulated nodes (a collective over
        all ranks does when there are several nodes; a point-to-point message only when `peer`
        is elsewhere) by latency x messages + nbytes / bandwidth: added, not overlapped (module
        docstring). Does not count bytes or seconds: the caller's own timing includes the
        sleep (or use `transfer`)."""
        if self.link is None or (peer is not None and not self.crosses_nodes(peer)):
            return
        self.emulated_s += self.link.wait(nbytes, messages)

    @contextlib.contextmanager
    def transfer(self, nbytes: int, messages: int = 1, peer: int | None = None) -> Iterator[None]:
        """Time the block (a send, a collective), add the emulated wire time, count `nbytes` as sent."""
        start = time.perf_counter()
        yield
        self.emulate(nbytes, messages, peer=peer)
        self.add(time.perf_counter() - start, nbytes)

    def take(self) -> tuple[float, int]:
        covered, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            covered += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        out = (self.seconds + covered, self.bytes)
        self.seconds, self.bytes, self.spans = 0.0, 0, []
        return out
