"""Mixed precision: every strategy that runs bf16 autocast follows `single` in bf16, and fp16
without a GPU is refused in one line. The cases are test_equivalence_all.py's (one per strategy)
plus ddp, ps, ring, zero and fsdp at 2 ranks, all with SGD; mlp on digits, 10 steps. dp needs 2
GPUs (not run without them).

bf16 keeps 8 bits of mantissa: a strategy that sums a step's gradients in other pieces or order
rounds them otherwise, so it follows single within a tolerance, not to fp32 rounding. Two bounds:
- LOSS_RTOL: the per-step loss, relative to bf16 single's (measured here: at most 2e-5).
- PARAMS_SHARE: the final parameters' distance to bf16 single's (relative L2 norm), as a share
  of bf16 single's own distance to fp32 single (the effect of bf16 itself, measured 8e-5). A
  strategy in bf16 lands nearer (measured: 0 for mp, 0.35 to 0.38 for the others); one that left
  bf16 off would sit at about 1 (gpipe did, before its worker threads entered autocast)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, final_params, records, step_losses
from tests.integration.test_equivalence_all import CASES, runner, world
from tests.integration.test_strategies_staged import _one_line_exit_2

BF16_CASES = {**{n: CASES[n] for n in ("single", "mp-2nodes", "gpipe-c4", "pipeline-1f1b-c4-2nodes", "hybrid-2x2-c2")},
              **{s: (s, 1, 2, {}) for s in ("ddp", "ring", "zero", "fsdp")}, "ps": ("ps", 1, 3, {})}
LOSS_RTOL = 1e-3
PARAMS_SHARE = 0.6


@pytest.fixture(scope="module")
def bf16(tmp_path_factory: pytest.TempPathFactory):
    return runner(tmp_path_factory, BF16_CASES, dataset="digits", precision="bf16")


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory):
    return runner(tmp_path_factory, BF16_CASES, dataset="digits")


def distance(a: dict, b: dict) -> float:
    """|a - b| / |b| over all parameters together."""
    diff = sum(float(((a[k].float() - b[k].float()) ** 2).sum()) for k in b)
    return (diff / sum(float((b[k].float() ** 2).sum()) for k in b)) ** 0.5


def test_bf16_changes_single(bf16, fp32) -> None:
    assert distance(final_params(bf16("single")), final_params(fp32("single"))) > 1e-5


@pytest.mark.parametrize("name", [n for n in BF16_CASES if n != "single"])
def test_follows_single_in_bf16(bf16, fp32, name: str) -> None:
    ref, got = step_losses(bf16("single"), 1), step_losses(bf16(name), world(name, BF16_CASES))
    assert len(got) == len(ref) == 10
    for step, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert abs(a - b) <= LOSS_RTOL * abs(b), f"{name} bf16 step {step}: loss {a} vs single {b}"
    single = final_params(bf16("single"))
    bf16_effect = distance(single, final_params(fp32("single")))
    share = distance(final_params(bf16(name)), single) / bf16_effect
    assert share <= PARAMS_SHARE, f"{name}: {share:.2f} of bf16's own effect away from bf16 single"


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_without_a_gpu_is_refused(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "trainers.single", "--precision", "fp16", "--steps", "1",
                           "--run-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    _one_line_exit_2(proc, "invalid precision fp16 on device auto (no GPU on this node)")
    assert records(str(tmp_path), 0, "step") == []


def test_stages_send_bf16_activations(bf16) -> None:
    # rank 0 sends 4 micro-batches of 16 x 256 activations a step: 2 bytes each (fp32: 4)
    assert records(bf16("pipeline-1f1b-c4-2nodes"), 0, "step")[0]["comm_bytes"] == 64 * 256 * 2
