"""Buckets (trainers/common/collectives.py), in process. The collectives themselves run in
forked processes: tests/integration/test_collectives.py."""

from __future__ import annotations

import torch

from trainers.common.collectives import Buckets


def test_buckets_roundtrip_and_caps() -> None:
    tensors = [torch.randn(10, 10), torch.randn(300), torch.randn(5), torch.randn(2, 3).double()]
    buckets = Buckets(tensors, torch.device("cpu"), cap_bytes=1000)
    # 400 B fits; +1200 B does not -> own bucket; 20 B after it would overflow -> next; dtype change -> next.
    assert buckets.groups == [[0], [1], [2], [3]]
    assert Buckets(tensors[:1] + tensors[2:3], torch.device("cpu"), cap_bytes=1000).groups == [[0, 1]]
    flats = buckets.pack(tensors, scale=2.0)
    assert [f.dtype for f in flats][-1] == torch.float64
    out = [torch.zeros_like(t) for t in tensors]
    buckets.unpack(out, scale=0.5)
    for a, b in zip(tensors, out, strict=True):
        assert torch.equal(a, b)
