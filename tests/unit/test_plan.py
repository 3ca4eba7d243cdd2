"""The memory planner (analysis/plan.py): formulas, measured activations, bad input. In-process."""

from __future__ import annotations

import json

import pytest
import torch

from analysis import plan
from contract import registry
from trainers.common.activations import planned_and_saved

SEVEN_B = ["--layers", "32", "--hidden", "4096", "--heads", "32", "--seq", "2048", "--vocab", "32000",
           "--optimizer", "adam", "--precision", "fp32", "--global-batch", "8", "--nodes", "1,2,3,4,5,6,7,8",
           "--gpu-mem", "80GiB", "--json"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = plan.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_7b_transformer_ddp_never_fits_and_fsdp_fits_from_the_formula(capsys) -> None:
    code, out, _ = run(SEVEN_B, capsys)
    assert code == 0
    doc = json.loads(out)
    p = doc["params"]
    assert 6.5e9 < p < 7e9  # 12 L h^2 + embeddings and head
    rows = {(r["strategy"], r["nodes"]): r for r in doc["rows"]}
    gpu = 80 * 2**30
    for n in range(1, 9):
        ddp = rows[("ddp", n)]
        assert ddp["param_bytes"] + ddp["grad_bytes"] + ddp["optim_bytes"] == 16 * p  # Adam fp32: 4 + 4 + 8
        assert ddp["fits"] is False
    fsdp_fits = [n for n in range(1, 9) if rows[("fsdp", n)]["fits"]]
    assert fsdp_fits, "FSDP must fit somewhere on 8 nodes"
    first = fsdp_fits[0]
    assert fsdp_fits == list(range(first, 9))  # more nodes never stop it fitting
    r = rows[("fsdp", first)]
    # The formula by hand: 16 P / N model state, Korthikanti activations of b = 8 / N samples (x2 at fp32).
    s, h, a, layers, vocab, b = 2048, 4096, 32, 32, 32000, 8 // first
    per_layer = s * h * (34 + 5 * a * s / h)  # bytes at 16 bits, one sample
    act = b * (layers * per_layer * 2 + 4 * s * h + 4 * s * h + 4 * s * vocab)
    state = r["param_bytes"] + r["grad_bytes"] + r["optim_bytes"]
    assert state == pytest.approx(16 * p / first, rel=1e-3)
    assert r["activation_bytes"] == pytest.approx(act, rel=1e-6)
    assert r["total_bytes"] <= gpu < rows[("fsdp", first - 1)]["total_bytes"] if first > 1 else True


@pytest.mark.parametrize("model", ["mlp", "cnn", "transformer"])
def test_planned_activations_within_10_percent_of_saved_tensors(model: str) -> None:
    for _batch, planned, measured in planned_and_saved(model, (4, 32)):
        assert measured > 0
        assert planned == pytest.approx(measured, rel=0.10)

def test_sharded_shares_follow_the_trainers() -> None:
    shapes = [(256, 3072), (256,), (256, 256), (256,), (10, 256), (10,)]
    n = sum(torch.Size(s).numel() for s in shapes)
    zero = registry.get("zero").state_bytes(n, 2, "adam", shapes=shapes)
    assert zero.optim_bytes == 8 * (256 * 3072)  # the largest tensor alone on one rank
    fsdp = registry.get("fsdp").state_bytes(n, 4, "sgd", shapes=shapes)
    assert fsdp.param_bytes == 4 * sum(-(-s[0] // 4) * torch.Size(s[1:]).numel() for s in shapes)
    ps_worker = registry.get("ps").state_bytes(n, 3, "adam", rank=1)
    assert ps_worker.optim_bytes == 0 and ps_worker.param_bytes == 4 * n


@pytest.mark.parametrize("text,expected", [("80GiB", 80 * 2**30), ("40GB", 40 * 10**9), ("1.5 TiB", int(1.5 * 2**40)),
                                           ("512mib", 512 * 2**20)])
def test_memory_sizes(text: str, expected: int) -> None:
    assert plan.parse_size(text) == expected


@pytest.mark.parametrize("argv,word", [
    (["--model", "vgg"], "unknown model 'vgg'"),
    (["--params", "1e6", "--gpu-mem", "80"], "invalid memory size '80'"),
    (["--params", "1e6", "--gpu-mem", "lots"], "invalid memory size 'lots'"),
    (["--params", "1e6", "--nodes", "0,2"], "invalid nodes '0'"),
    (["--params", "1e6", "--nodes", "two"], "invalid nodes 'two'"),
    (["--params", "-5"], "invalid params '-5'"),
    (["--params", "1e6", "--global-batch", "x"], "invalid global batch 'x'"),
    ([], "give the model one way"),
    (["--layers", "2", "--hidden", "64"], "needs all of"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], word: str, capsys) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and word in err, err


def test_refusals_come_from_the_registry(capsys) -> None:
    code, out, _ = run(["--params", "1000", "--nodes", "1,2", "--json"], capsys)
    rows = {(r["strategy"], r["nodes"]): r for r in json.loads(out)["rows"]}
    assert rows[("single", 2)]["fits"] is None
    assert rows[("single", 2)]["reason"] == registry.get("single").refusal(registry.Layout(2, 1))
    assert rows[("ps", 2)]["activation_bytes"] is None  # --params: activations unknown

