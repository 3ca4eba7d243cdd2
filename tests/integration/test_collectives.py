"""The hand-written collectives (trainers/common/collectives.py) against gloo's all_reduce.

One launch per world size (2, 3, 4): forked processes on 127.0.0.1 check every length,
the bytes each rank reports, a ring over a subset of ranks, and link emulation (the slept
seconds where they are exact; elsewhere only lower bounds, which the sleeps guarantee however
loaded the machine is). Buckets: tests/unit/test_collectives.py.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contract import envnames
from simulate.launcher import free_port
from trainers.common.collectives import ps_allreduce, ring_allreduce
from trainers.common.traffic import CommMeter, ring_allreduce_bytes

LENGTHS = (1, 7, 1000003)
LATENCY_S = 0.01


def _fake_meter(rank: int, nodes: int, ppn: int) -> CommMeter:
    """A CommMeter emulating a link with LATENCY_S latency and unlimited bandwidth."""
    cfg = SimpleNamespace(nodes=nodes, procs_per_node=ppn, link_latency_us=LATENCY_S * 1e6, link_bandwidth_gbps=0.0)
    os.environ[envnames.EMULATE_LINK] = "1"
    return CommMeter(SimpleNamespace(cfg=cfg, rank=rank))  # type: ignore[arg-type]


def _check(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for length in LENGTHS:
            for dtype in (torch.float32, torch.float64) if length < 1000 else (torch.float32,):
                g = torch.Generator().manual_seed(1000 * length + rank)
                x = torch.randn(length, generator=g).to(dtype)
                want = x.clone()
                dist.all_reduce(want)
                ring, ps = x.clone(), x.clone()
                sent_ring = ring_allreduce(ring)
                sent_ps = ps_allreduce(ps)
                torch.testing.assert_close(ring, want, msg=lambda m, n=length: f"ring, length {n}: {m}")
                torch.testing.assert_close(ps, want, msg=lambda m, n=length: f"ps, length {n}: {m}")
                nbytes = length * x.element_size()
                if length >= world:  # every chunk non-empty: within a chunk's rounding of the formula
                    assert abs(sent_ring - ring_allreduce_bytes(nbytes, world)) <= 2 * x.element_size()
                assert sent_ps == (nbytes if rank else (world - 1) * nbytes)
        # Each ring step's message in several pieces (tiny ones), chunk lengths differing by one.
        for length in (2, 9, 33):
            x = torch.randn(length, generator=torch.Generator().manual_seed(length + 100 * rank))
            want = x.clone()
            dist.all_reduce(want)
            sent = ring_allreduce(x, piece_bytes=8)
            torch.testing.assert_close(x, want, msg=lambda m, n=length: f"ring in 8-byte pieces, length {n}: {m}")
            if length >= world:
                assert abs(sent - ring_allreduce_bytes(length * 4, world)) <= 2 * 4
        # A 2-D, non-flat-length tensor keeps its shape.
        m = torch.randn(3, 5, generator=torch.Generator().manual_seed(rank))
        want = m.clone()
        dist.all_reduce(want)
        ring_allreduce(m)
        torch.testing.assert_close(m, want)
        # A ring over a subset of ranks, in a scrambled order; the others stay out of it.
        subset = [world - 1, 0] if world == 2 else [2, 0, 1]
        x = torch.full((11,), float(rank + 1))
        if rank in subset:
            ring_allreduce(x, ranks=subset)
            assert torch.equal(x, torch.full((11,), float(sum(r + 1 for r in subset))))
        dist.barrier()
        # Link emulation over 2 simulated nodes (1 rank each at world 2, 2 each at world 4): every
        # rank's send or receive crosses nodes, so every ring step lasts at least the latency.
        if world in (2, 4):
            meter = _fake_meter(rank, nodes=2, ppn=world // 2)
            x = torch.ones(1000)
            dist.barrier()
            start = time.perf_counter()
            ring_allreduce(x, meter=meter)
            elapsed = time.perf_counter() - start
            assert torch.equal(x, torch.full((1000,), float(world)))
            assert elapsed >= 2 * (world - 1) * LATENCY_S * 0.95, elapsed
            # ps: the server waits one latency for the pushes; a worker on the other node then one more.
            x = torch.ones(1000)
            meter = _fake_meter(rank, nodes=2, ppn=world // 2)
            dist.barrier()
            start = time.perf_counter()
            ps_allreduce(x, meter=meter)
            elapsed = time.perf_counter() - start
            remote_worker = rank >= world // 2
            # unlimited bandwidth: exactly one latency slept on the server (push) and on a remote worker (pull)
            assert meter.emulated_s == pytest.approx(LATENCY_S if rank == 0 or remote_worker else 0.0), rank
            assert torch.equal(x, torch.full((1000,), float(world)))
            assert elapsed >= (2 if remote_worker else 1) * LATENCY_S * 0.95, (rank, elapsed)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_collectives_equal_gloo_allreduce(world: int) -> None:
    mp.start_processes(_check, args=(world, free_port()), nprocs=world, join=True, start_method="fork")
