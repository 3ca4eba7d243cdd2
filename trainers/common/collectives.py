"""Collectives written here with torch.distributed point-to-point (isend/irecv).

- `ring_allreduce`: the bandwidth-optimal ring. The flat tensor is cut into N chunks (N =
  ranks in the ring, sizes as even as possible, so any length works, even 1). Reduce-scatter:
  in N-1 steps each rank sends one chunk to its successor and adds the chunk it receives
  from its predecessor; afterwards rank p holds the complete sum of chunk (p+1) mod N.
  All-gather: N-1 more steps pass the complete chunks around. Each rank sends
  2(N-1)/N x size bytes. The steps stream: chunks travel as segments of at most
  SEGMENT_BYTES, and a segment received (and added to) is sent on at once while the next
  ones are still on the wire. Receives are posted IN_FLIGHT segments ahead and sends are
  non-blocking, so no rank blocks in a send while its successor blocks in one too. Why
  segments: a gloo message larger than the socket buffer is written by gloo's one I/O thread,
  which also reads, with a wait for the receiver to drain the socket at every buffer-full;
  a segment whose receive is already posted is written at once by the sending thread.
- `ps_push` / `ps_pull`: a parameter server. Push: every worker sends its tensor to the
  server, which adds them in rank order (deterministic). Pull: the server sends its tensor
  to every worker. `ps_allreduce` = push + pull, the same result as `dist.all_reduce`.
- `Buckets`: tensors (gradients, parameters) packed into a few flat buffers, so a step
  sends a few large messages instead of one per tensor.

Sums are in place; every function returns the bytes this rank sent. A `CommMeter` passed
in delays messages that cross simulated nodes (link emulation: the wire time is added after
the real transfer, trainers/common/comm.py); pass None for no delay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from trainers.common.comm import node_of
from trainers.common.data import split_sizes

if TYPE_CHECKING:
    from trainers.common.comm import CommMeter

BUCKET_BYTES = 25 * 1024 * 1024  # as DDP's default bucket_cap_mb
SEGMENT_BYTES = 1024 * 1024  # a ring message: well under a socket buffer (gloo's own ring uses 1 MiB)
IN_FLIGHT = 8  # ring segments whose receive is posted ahead of the one being reduced


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


def _segments(view: torch.Tensor, segment_numel: int) -> list[torch.Tensor]:
    """`view` cut into consecutive pieces of at most `segment_numel` elements (none if empty)."""
    return list(view.split(segment_numel)) if view.numel() else []


def ring_allreduce(tensor: torch.Tensor, ranks: Sequence[int] | None = None,
                   meter: CommMeter | None = None, segment_bytes: int = SEGMENT_BYTES) -> int:
    """Sum a contiguous tensor in place over `ranks` (global ranks in ring order; default all).
    Only the ranks in `ranks` call it; the others may run their own rings meanwhile.

    Returns the bytes this rank sent. With a meter, each ring step whose send or receive
    crosses simulated nodes is followed by the emulated wire time of its larger message,
    added to the step's real loopback time (comm.py's one rule).
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
    seg = max(1, segment_bytes // flat.element_size())
    chunks = [_segments(c, seg) for c in flat.split(sizes)]
    window = min(IN_FLIGHT, max(1, sum(len(c) for c in chunks)))
    scratch = [_scratch(i, flat, min(seg, max(sizes))) for i in range(window)]
    # The step is paced by the slower of its two messages: delay it if either crosses nodes.
    crossing_peer = None
    if meter is not None:
        crossing_peer = succ if _crosses(meter, dist.get_rank(), succ) else pred
    # Steps t < n-1 reduce-scatter, the others all-gather. What a rank receives in step t is what
    # it sends in step t+1 (with its own part added, while reducing): chunk pos-t-1, then pos-t
    # (mod n) in the gather. So the ring streams: each received segment is added and sent on at
    # once, while the next ones are on the wire. Receives are posted `window` segments ahead
    # (gloo writes a message only once its receive is posted: this bounds the bytes in flight).
    steps = 2 * (n - 1)
    recv_of = [(pos - t - 1) % n if t < n - 1 else (pos - t + n - 1) % n for t in range(steps)]
    order = [(t, j) for t in range(steps) for j in range(len(chunks[recv_of[t]]))]
    # What this rank sends, in order: its own chunk, then each received segment but the last
    # step's, forwarded (the successor receives exactly this sequence). A send is posted once its
    # data is complete and it is at most `window` ahead of this rank's receives, so it mostly
    # finds its receive posted on the other side and gloo writes it at once.
    outbox: list[tuple[tuple[int, int], torch.Tensor]] = [((0, j), p) for j, p in enumerate(chunks[pos])]
    place = {key: i for i, (key, _) in enumerate(outbox)}
    sends: dict[tuple[int, int], dist.Work] = {}  # posted and not yet waited for (a wait counts once)
    posted, sent = 0, 0

    def post_sends(upto: int) -> None:
        nonlocal posted, sent
        while posted < min(upto, len(outbox)):
            key, piece = outbox[posted]
            sends[key] = dist.isend(piece, succ)
            posted, sent = posted + 1, sent + _nbytes(piece)

    def post_recv(k: int) -> dist.Work:
        t, j = order[k]
        piece = chunks[recv_of[t]][j]
        if t < n - 1:
            return dist.irecv(scratch[k % window][:piece.numel()], pred)
        # The gather overwrites the segment reduce-scatter step t-(n-1) sent: that send must be done.
        sent_by = (t - (n - 1), j)
        post_sends(place[sent_by] + 1)
        sends.pop(sent_by).wait()
        return dist.irecv(piece, pred)

    def emulate(t: int) -> None:  # the step's larger message, after its real transfer
        if meter is not None:
            c = recv_of[t]
            meter.emulate(max(sizes[c], sizes[(c + 1) % n]) * flat.element_size(), 1, peer=crossing_peer)

    recvs = {k: post_recv(k) for k in range(min(window, len(order)))}
    post_sends(window)
    for k, (t, j) in enumerate(order):
        piece = chunks[recv_of[t]][j]
        recvs.pop(k).wait()
        if t < n - 1:
            piece.add_(scratch[k % window][:piece.numel()])
        if t < steps - 1:
            place[(t + 1, j)] = len(outbox)
            outbox.append(((t + 1, j), piece))
        if k + window < len(order):
            recvs[k + window] = post_recv(k + window)
        post_sends(k + 1 + window)
        if j == len(chunks[recv_of[t]]) - 1:
            emulate(t)
    post_sends(len(outbox))
    for w in sends.values():
        w.wait()
    for t in range(steps):  # a step that received nothing (a tensor shorter than the ring) but sent
        if not chunks[recv_of[t]] and chunks[(recv_of[t] + 1) % n]:
            emulate(t)
    return sent


def _workers(server: int) -> list[int]:
    return [r for r in range(dist.get_world_size()) if r != server]


def ps_push(tensor: torch.Tensor, server: int = 0, meter: CommMeter | None = None) -> int:
    """Workers send `tensor` to the server; the server adds them all (rank order) to its own.

    Returns bytes sent (a worker's tensor; 0 on the server). Emulation models the server's
    link as the bottleneck: once the real messages are in, the server waits a further
    latency + (bytes from other nodes) / bandwidth.
    """
    me = dist.get_rank()
    workers = _workers(server)
    if me != server:
        dist.isend(tensor, server).wait()
        return _nbytes(tensor)
    buffers = [_scratch(i, tensor, tensor.numel()).view_as(tensor) for i in range(len(workers))]
    works = [dist.irecv(buf, w) for buf, w in zip(buffers, workers, strict=True)]
    for w, buf in zip(works, buffers, strict=True):
        w.wait()
        tensor.add_(buf)
    if meter is not None:
        # The wait above includes the workers' compute, not just transfer: emulate the whole transfer after it.
        remote = sum(1 for w in workers if _crosses(meter, server, w))
        if remote:
            meter.emulate(remote * _nbytes(tensor), 1)
    return 0


def ps_pull(tensor: torch.Tensor, server: int = 0, meter: CommMeter | None = None) -> int:
    """The server sends `tensor` to every worker, which receive it into their `tensor`.

    Returns bytes sent (workers x size on the server; 0 on a worker). Emulation: a worker on
    another node waits, after the real message, until the server's link would have carried
    every remote worker's copy.
    """
    me = dist.get_rank()
    workers = _workers(server)
    if me == server:
        for w in [dist.isend(tensor, w) for w in workers]:
            w.wait()
        return len(workers) * _nbytes(tensor)
    dist.irecv(tensor, server).wait()
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
