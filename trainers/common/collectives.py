"""Collectives written here with torch.distributed point-to-point (isend/irecv).

- `ring_allreduce`: the bandwidth-optimal ring. The flat tensor is cut into N chunks (N =
  ranks in the ring, sizes as even as possible, so any length works, even 1). Reduce-scatter:
  in N-1 steps each rank sends one chunk to its successor and adds the chunk it receives
  from its predecessor; afterwards rank p holds the complete sum of chunk (p+1) mod N.
  All-gather: N-1 more steps pass the complete chunks around. Each rank sends
  2(N-1)/N x size bytes. Every step posts its send and its receive non-blocking (as pieces
  of at most PIECE_BYTES) and then waits for all, so no rank can block in a send while its
  successor blocks in one too.
- `ps_push` / `ps_pull`: a parameter server. Push: every worker sends its tensor to the
  server, which adds them in rank order (deterministic). Pull: the server sends its tensor
  to every worker. Both take a process group (default: the world's; its ranks are global).
  `ps_allreduce` = push + pull, the same result as `dist.all_reduce`.
- `Buckets`: tensors (gradients, parameters) packed into a few flat buffers, so a step
  sends a few large messages instead of one per tensor.

Sums are in place; every function returns the bytes this rank sent. A `CommMeter` passed
in delays messages that cross simulated nodes (link emulation: the wire time is added after
the real transfer, trainers/common/traffic.py); pass None for no delay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from trainers.common.data import split_sizes
from trainers.common.traffic import node_of

if TYPE_CHECKING:
    from trainers.common.traffic import CommMeter

BUCKET_BYTES = 25 * 1024 * 1024  # as DDP's default bucket_cap_mb
# A ring step's message goes as pieces of at most this, all posted at once: gloo writes a message
# larger than the socket buffer from its one I/O thread, which also reads, with a wait at every
# buffer-full (docs/benchmarks.md: 2 MiB pieces measured as fast or faster than whole chunks).
PIECE_BYTES = 2 * 1024 * 1024


def comm_device(device: torch.device) -> torch.device:
    """Where tensors must sit to be sent: gloo's send/recv takes CPU tensors only, NCCL's CUDA ones."""
    if device.type == "cuda" and dist.is_initialized() and dist.get_backend() == "nccl":
        return device
    return torch.device("cpu")


def _crosses(meter: CommMeter, a: int, b: int) -> bool:
    ppn = meter.ctx.cfg.procs_per_node
    return node_of(a, ppn) != node_of(b, ppn)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


_SCRATCH: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _scratch(slot: int, like: torch.Tensor, numel: int) -> torch.Tensor:
    """A reusable receive buffer (allocating, and first-touching, 64 MB per call would be timed too)."""
    key = (slot, like.dtype, like.device)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < numel:
        buf = _SCRATCH[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buf[:numel]


def ring_allreduce(tensor: torch.Tensor, ranks: Sequence[int] | None = None,
                   meter: CommMeter | None = None, piece_bytes: int = PIECE_BYTES) -> int:
    """Sum a contiguous tensor in place over `ranks` (global ranks in ring order; default all).
    Only the ranks in `ranks` call it; the others may run their own rings meanwhile.

    Returns the bytes this rank sent. With a meter, each ring step whose send or receive
    crosses simulated nodes is followed by the emulated wire time of its larger message,
    added to the step's real loopback time (traffic.py's one rule).
    """
    if not tensor.is_contiguous():
        raise ValueError("ring_allreduce needs a contiguous tensor (it works on a flat view)")
    ring = list(range(dist.get_world_size())) if ranks is None else list(ranks)
    n = len(ring)
    if n <= 1 or tensor.numel() == 0:
        return 0
    if dist.get_rank() not in ring:
        raise ValueError(f"rank {dist.get_rank()} called ring_allreduce on a ring it is not part of: {ring}")
    pos = ring.index(dist.get_rank())
    succ, pred = ring[(pos + 1) % n], ring[(pos - 1) % n]
    flat = tensor.view(-1)
    sizes = split_sizes(flat.numel(), n)
    offsets = [sum(sizes[:i]) for i in range(n)]
    chunks = [flat[o:o + s] for o, s in zip(offsets, sizes, strict=True)]
    scratch = _scratch(0, flat, max(sizes))
    piece = max(1, piece_bytes // flat.element_size())
    # The step is paced by the slower of its two messages: delay it if either crosses nodes.
    crossing_peer = None
    if meter is not None:
        crossing_peer = succ if _crosses(meter, dist.get_rank(), succ) else pred
    sent = 0
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            if phase == "reduce-scatter":
                send_i, recv_i = (pos - step) % n, (pos - step - 1) % n
                target = scratch[:sizes[recv_i]]
            else:
                send_i, recv_i = (pos + 1 - step) % n, (pos - step) % n
                target = chunks[recv_i]
            works = []
            # Chunks are empty when the tensor is shorter than the ring; both ends know it, so both skip.
            if sizes[send_i]:
                works += [dist.isend(part, succ) for part in chunks[send_i].split(piece)]
                sent += _nbytes(chunks[send_i])
            if sizes[recv_i]:
                works += [dist.irecv(part, pred) for part in target.split(piece)]
            for w in works:
                w.wait()
            if phase == "reduce-scatter" and sizes[recv_i]:
                chunks[recv_i].add_(target)
            if meter is not None and works:
                step_bytes = max(_nbytes(chunks[send_i]), _nbytes(chunks[recv_i]))
                meter.emulate(step_bytes, 1, peer=crossing_peer)  # added after the real step
    return sent


def _workers(server: int) -> list[int]:
    return [r for r in range(dist.get_world_size()) if r != server]


def ps_push(tensor: torch.Tensor, server: int = 0, meter: CommMeter | None = None,
            group: dist.ProcessGroup | None = None) -> int:
    """Workers send `tensor` to the server; the server adds them all (rank order) to its own.

    Returns bytes sent (a worker's tensor; 0 on the server). Emulation models the server's
    link as the bottleneck: once the real messages are in, the server waits a further
    latency + (bytes from other nodes) / bandwidth.
    """
    me = dist.get_rank()
    workers = _workers(server)
    if me != server:
        dist.isend(tensor, server, group=group).wait()
        return _nbytes(tensor)
    buffers = [_scratch(i, tensor, tensor.numel()).view_as(tensor) for i in range(len(workers))]
    works = [dist.irecv(buf, w, group=group) for buf, w in zip(buffers, workers, strict=True)]
    for w, buf in zip(works, buffers, strict=True):
        w.wait()
        tensor.add_(buf)
    if meter is not None:
        # The wait above includes the workers' compute, not just transfer: emulate the whole transfer after it.
        remote = sum(1 for w in workers if _crosses(meter, server, w))
        if remote:
            meter.emulate(remote * _nbytes(tensor), 1)
    return 0


def ps_pull(tensor: torch.Tensor, server: int = 0, meter: CommMeter | None = None,
            group: dist.ProcessGroup | None = None) -> int:
    """The server sends `tensor` to every worker, which receive it into their `tensor`.

    Returns bytes sent (workers x size on the server; 0 on a worker). Emulation: a worker on
    another node waits, after the real message, until the server's link would have carried
    every remote worker's copy.
    """
    me = dist.get_rank()
    workers = _workers(server)
    if me == server:
        for w in [dist.isend(tensor, w, group=group) for w in workers]:
            w.wait()
        return len(workers) * _nbytes(tensor)
    dist.irecv(tensor, server, group=group).wait()
    if meter is not None and _crosses(meter, server, me):
        remote = sum(1 for w in workers if _crosses(meter, server, w))
        meter.emulate(remote * _nbytes(tensor), 1)  # from arrival: the wait included the server's step
    return 0


def ps_allreduce(tensor: torch.Tensor, server: int = 0, meter: CommMeter | None = None) -> int:
    """Sum over all ranks through a server (push, then pull): equals `dist.all_reduce(SUM)`."""
    if dist.get_world_size() <= 1:
        return 0
    return ps_push(tensor, server, meter) + ps_pull(tensor, server, meter)


class Buckets:
    """A fixed list of tensors packed into flat buffers of at most `cap_bytes` each (a single
    tensor larger than that gets a buffer of its own; a new dtype starts a new buffer).
    The buffers are allocated once."""

    def __init__(self, tensors: Sequence[torch.Tensor], device: torch.device,
                 cap_bytes: int = BUCKET_BYTES) -> None:
        self.groups: list[list[int]] = []
        size = cap_bytes
        for i, t in enumerate(tensors):
            if not self.groups or size + _nbytes(t) > cap_bytes or t.dtype != tensors[self.groups[-1][0]].dtype:
                self.groups.append([])
                size = 0
            self.groups[-1].append(i)
            size += _nbytes(t)
        self.buffers = [torch.empty(sum(tensors[i].numel() for i in g), dtype=tensors[g[0]].dtype, device=device)
                        for g in self.groups]

    def pack(self, tensors: Sequence[torch.Tensor], scale: float = 1.0) -> list[torch.Tensor]:
        """Copy `tensors` (times `scale`) into the buffers; returns the buffers."""
        for group, buf in zip(self.groups, self.buffers, strict=True):
            offset = 0
            for i in group:
                n = tensors[i].numel()
                buf[offset:offset + n].copy_(tensors[i].reshape(-1))
                offset += n
            if scale != 1.0:
                buf.mul_(scale)
        return self.buffers

    @torch.no_grad()
    def unpack(self, tensors: Sequence[torch.Tensor], scale: float = 1.0) -> None:
        """Copy the buffers (times `scale`) back into `tensors`."""
        for group, buf in zip(self.groups, self.buffers, strict=True):
            if scale != 1.0:
                buf.mul_(scale)
            offset = 0
            for i in group:
                t = tensors[i]
                t.copy_(buf[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
