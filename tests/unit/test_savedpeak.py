"""SavedPeak: the peak of the storages autograd keeps for backward, parameters left out."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainers.common.savedpeak import SavedPeak, parameter_keys

WIDTH, BATCH, BLOCKS = 128, 32, 4
ACT = BATCH * WIDTH * 4  # bytes of one (BATCH, WIDTH) fp32 activation


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()) for _ in range(BLOCKS)])


def peak(model: nn.Sequential, x: torch.Tensor, recompute: bool = False, pieces: int = 1) -> SavedPeak:
    sp = SavedPeak(parameter_keys(model.parameters()))
    with sp.watch():
        for part in x.chunk(pieces):
            h = part.clone()  # its own storage: a slice would count the whole batch's
            for block in model:
                h = checkpoint(block, h, use_reentrant=False) if recompute else block(h)
            h.sum().backward()
    return sp


def test_counts_each_storage_once_and_releases_after_backward() -> None:
    sp = peak(net(), torch.randn(BATCH, WIDTH))
    # the input and each ReLU output (the next Linear's input: one storage, saved twice)
    assert sp.peak == (BLOCKS + 1) * ACT
    assert sp.live == 0 and not sp.refs


def test_parameters_are_not_activations() -> None:
    model = net()
    sp = SavedPeak()  # nothing excluded: the weights Linear saves count too
    with sp.watch():
        model(torch.randn(BATCH, WIDTH)).sum().backward()
    # Linear saves its weight for the gradient of its input; the first one's input needs none
    weights = (BLOCKS - 1) * WIDTH * WIDTH * 4
    assert sp.peak == (BLOCKS + 1) * ACT + weights


def test_recompute_keeps_only_block_inputs() -> None:
    assert peak(net(), torch.randn(BATCH, WIDTH), recompute=True).peak == BLOCKS * ACT


def test_accumulation_peak_is_one_micro_batch() -> None:
    assert peak(net(), torch.randn(BATCH, WIDTH), pieces=4).peak == (BLOCKS + 1) * ACT // 4


def test_a_graph_dropped_unused_is_released() -> None:
    model, sp = net(), SavedPeak()
    with sp.watch():
        out = model(torch.randn(BATCH, WIDTH))
    assert sp.live > 0
    del out
    assert sp.live == 0


def test_parameters_swapped_in_after_the_start_are_left_out() -> None:
    """FSDP2 replaces a module's sharded parameters by unsharded ones (other storages) for forward."""
    model = net()
    sp = SavedPeak(parameter_keys(model.parameters()), model.parameters)
    kept = list(model.parameters())  # alive, so no new storage reuses a stale key's address
    for block in model:  # new storages, as an all-gather makes
        block[0].weight = nn.Parameter(block[0].weight.detach().clone())
    x = torch.randn(BATCH, WIDTH)
    with sp.watch():
        model(x).sum()
    # without the parameters: each block's input and its ReLU output (the next block's input), each once
    assert sp.peak == (1 + BLOCKS) * ACT
    stale = SavedPeak(parameter_keys(model.parameters()))
    kept += list(model.parameters())
    for block in model:
        block[0].weight = nn.Parameter(block[0].weight.detach().clone())
    with stale.watch():
        model(x).sum()
    assert stale.peak > sp.peak  # a fixed set misses the new storages (what the refresh is for)


def test_a_dtensor_is_keyed_by_its_local_shard() -> None:
    """tp, mix: autograd saves DTensors; their key is the local shard's storage (torch's fake process group)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        w = distribute_tensor(torch.randn(WIDTH, WIDTH, requires_grad=True), mesh, [Replicate()])
        x = distribute_tensor(torch.randn(BATCH, WIDTH), mesh, [Replicate()])
        sp = SavedPeak(parameter_keys([w]))
        with sp.watch():
            (x @ w).relu().sum()
        # x (for w's gradient) and the relu's output; w (WIDTH x WIDTH) is excluded by its local shard's key
        assert sp.peak == 2 * ACT
    finally:
        dist.destroy_process_group()
