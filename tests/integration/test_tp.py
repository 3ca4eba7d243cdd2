"""tp at 2 ranks follows single step by step (seed 0, global batch 64, 10 steps), for mlp and
transformer, with sequence parallelism on and off: loss within 1e-4 relative at every step, final
parameters (gathered under single's names) within 1e-4."""

from __future__ import annotations

import pytest

from tests.helpers import assert_params_close, final_params, records, step_losses
from tests.integration.test_equivalence_all import STEPS, runner

pytestmark = pytest.mark.integration

CASES: dict[str, tuple[str, int, int, dict]] = {
    "single-mlp": ("single", 1, 1, {"model": "mlp"}),
    "single-transformer": ("single", 1, 1, {"model": "transformer"}),
    "tp-mlp-sp-on": ("tp", 1, 2, {"model": "mlp", "sequence_parallel": "on"}),
    "tp-mlp-sp-off": ("tp", 1, 2, {"model": "mlp", "sequence_parallel": "off"}),
    "tp-transformer-sp-on": ("tp", 1, 2, {"model": "transformer", "sequence_parallel": "on"}),
    "tp-transformer-sp-off": ("tp", 1, 2, {"model": "transformer", "sequence_parallel": "off"}),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return runner(tmp_path_factory, CASES)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("tp")])
def test_tp_follows_single(run, name: str) -> None:
    base = f"single-{CASES[name][3]['model']}"
    ref, got = step_losses(run(base), 1), step_losses(run(name), 2)
    assert len(got) == len(ref) == STEPS
    for step, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert abs(a - b) <= 1e-4 * abs(b), f"{name} step {step}: loss {a} vs single {b}"
    print(f"{name}: max loss difference {max(abs(a - b) for a, b in zip(got, ref, strict=True)):.3g}")
    assert_params_close(final_params(run(name)), final_params(run(base)), rtol=1e-4, atol=1e-6)
    # every rank computes the whole batch, with the same loss; rank 0 counts the samples
    r0, r1 = records(run(name), 0, "step"), records(run(name), 1, "step")
    assert [r["samples"] for r in r0] == [64] * STEPS and [r["samples"] for r in r1] == [0] * STEPS
    assert all(abs(a["loss"] - b["loss"]) < 1e-6 for a, b in zip(r0, r1, strict=True))
    assert all(r["comm_bytes"] > 0 and r["comm_s"] is None for r in r0)
