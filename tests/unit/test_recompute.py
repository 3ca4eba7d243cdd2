"""--recompute and --micro-batch: what recompute.py wraps and what backward reruns, and the config's
side (refusals in one line, one identity and one id per experiment however it is spelled, sweep axes)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError
from sweeper import grid
from trainers.common.models import DecoderBlock
from trainers.common.recompute import apply_recompute, recompute_mode
from trainers.common.tensor_parallel import TPBlock

LINEAR_OPS = ("aten.addmm.default", "aten.mm.default")
CORE_OP = "aten._scaled_dot_product_flash_attention_for_cpu.default"


class Ops(TorchDispatchMode):
    """The ops run under it, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _backward_ops(model: nn.Module, x: torch.Tensor) -> tuple[list[str], list[torch.Tensor]]:
    """The forward ops backward reruns (backward's own kernels are named *_backward or are mm), and the grads."""
    model(x).sum().backward()  # warm: the first call may dispatch differently
    model.zero_grad()
    out = model(x).sum()
    with Ops() as ops:
        out.backward()
    return ops.names, [p.grad.clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def blocks() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(DecoderBlock(32, 4), nn.Sequential(nn.Linear(32, 32), nn.ReLU()), DecoderBlock(32, 4))


@pytest.mark.parametrize("rebuild", [False, True], ids=["DecoderBlock", "TPBlock"])
def test_full_reruns_each_block_and_selective_only_the_attention_core(blocks, rebuild):
    x = torch.randn(2, 8, 32)
    ref = copy.deepcopy(blocks)
    if rebuild:  # tp's blocks: separate q, k, v, out projections, F.scaled_dot_product_attention
        ref = nn.Sequential(*(TPBlock(b) if isinstance(b, DecoderBlock) else b for b in ref))
    base_ops, base_grads = _backward_ops(ref, x)
    assert base_ops.count(CORE_OP) == 0 and "aten.addmm.default" not in base_ops
    runs = {}
    for mode in ("full", "selective"):
        model = copy.deepcopy(ref)
        assert apply_recompute(model, mode) == (3 if mode == "full" else 2)  # selective: the attention blocks
        assert dict(model.named_parameters()).keys() == dict(ref.named_parameters()).keys()  # single's names
        runs[mode] = _backward_ops(model, x)
        for got, want in zip(runs[mode][1], base_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    full, selective = runs["full"][0], runs["selective"][0]
    assert full.count(CORE_OP) == 2 and full.count("aten.addmm.default") >= 4  # projections and MLPs rerun
    assert selective.count(CORE_OP) == 2 and selective.count("aten.addmm.default") == 0  # the core only
    assert [recompute_mode(b) for b in model] == ["selective", "none", "selective"]


def test_recompute_is_idempotent_and_refuses_selective_without_attention(blocks):
    model = copy.deepcopy(blocks)
    apply_recompute(model, "full")
    cls = type(model[0])
    apply_recompute(model, "full")
    assert type(model[0]) is cls and cls.__mro__[1] is DecoderBlock
    assert apply_recompute(copy.deepcopy(blocks), "none") == 0
    with pytest.raises(ConfigError, match="has no attention") as e:
        apply_recompute(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "selective")
    assert "\n" not in str(e.value)


def _refusal(**kw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(**kw))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_refusals_are_one_line():
    assert "mlp has no attention" in _refusal(recompute="selective")
    assert "--checkpoint always|except_last|never" in _refusal(strategy="gpipe", recompute="full")
    assert "must divide the rank's share" in _refusal(strategy="ddp", nodes=2, micro_batch=24)
    assert "must divide the rank's share" in _refusal(micro_batch=128)  # larger than the share
    assert "must divide the rank's share" in _refusal(strategy="ps", nodes=4, micro_batch=7)  # 64 over 3 workers
    assert "give one of --chunks, --micro-batch" in _refusal(strategy="pipeline", nodes=2, chunks=2, micro_batch=8)
    assert "must be >= 0" in _refusal(micro_batch=-1)
    assert "unknown recompute" in _refusal(recompute="some")
    validate(ExperimentConfig(model="transformer", recompute="selective"))


def test_micro_batches_and_one_identity_per_experiment():
    ddp = ExperimentConfig(strategy="ddp", nodes=2)
    assert ddp.micro_batches == 1 and dataclasses.replace(ddp, micro_batch=8).micro_batches == 4
    whole = dataclasses.replace(ddp, micro_batch=32)  # the rank's whole share: the same experiment as 0
    assert whole.identity() == ddp.identity() and whole.experiment_id() == ddp.experiment_id()
    mb8 = dataclasses.replace(ddp, micro_batch=8, recompute="full")
    assert mb8.experiment_id() == "ddp-n2-p1-b64-mb8-rcfull-r0"
    pipe = ExperimentConfig(strategy="pipeline", nodes=2)
    by_size, by_count = dataclasses.replace(pipe, micro_batch=8), dataclasses.replace(pipe, chunks=8)
    validate(by_size)
    assert by_size.micro_batches == by_count.micro_batches == 8
    assert by_size.identity() == by_count.identity() and "micro_batch" not in by_size.identity()
    assert by_size.experiment_id() == by_count.experiment_id() == "pipeline-n2-p1-b64-c8-1f1b-r0"
    assert dataclasses.replace(pipe, micro_batch=16).experiment_id() == pipe.experiment_id()  # 64 / 16 = chunks 4
    assert by_size.normalised() == by_count and by_count.normalised() == by_count
    gpipe = ExperimentConfig(strategy="gpipe")
    assert "recompute" not in gpipe.identity() and "recompute" in ddp.identity()


def test_sweep_axes_keep_each_experiment_once():
    exps = grid.expand(ExperimentConfig(nodes=2), {"strategy": ["ddp", "pipeline", "gpipe"],
                                                   "micro_batch": [0, 8, 16], "recompute": ["none", "full"]})
    ids = [e.id for e in exps]
    assert len(ids) == len(set(ids))
    ddp = [e for e in exps if e.config.strategy == "ddp"]
    assert len(ddp) == 6 and {e.config.micro_batch for e in ddp} == {0, 8, 16}
    pipe = [e.config for e in exps if e.config.strategy == "pipeline"]  # 0 and 16 are both chunks 4
    assert sorted((c.chunks, c.micro_batch, c.recompute) for c in pipe) == [
        (4, 0, "full"), (4, 0, "none"), (8, 0, "full"), (8, 0, "none")]
    gpipe = [e for e in exps if e.config.strategy == "gpipe"]  # recompute is not gpipe's: listed once, at none
    assert [(e.config.recompute, e.skipped is not None) for e in gpipe] == [("none", True)] * 2
