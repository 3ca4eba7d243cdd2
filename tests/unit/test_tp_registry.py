"""tp's registry record: refusals (models, widths the world size must divide, fp16), dp_size 1, its setting."""

from __future__ import annotations

import pytest

from contract import registry
from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError

TP = registry.get("tp")


def test_tp_reads_the_whole_batch_and_its_setting_is_its_own() -> None:
    assert TP.dp_size(1, 4) == 1 and TP.kind in registry.KINDS and TP.same_maths()
    assert "sequence_parallel" not in ExperimentConfig(strategy="ddp").identity()
    assert ExperimentConfig(strategy="tp", procs_per_node=2, sequence_parallel="off").identity()[
        "sequence_parallel"] == "off"


@pytest.mark.parametrize("model, procs, why", [
    ("cnn", 2, "cuts only the models mlp, transformer"),
    ("transformer", 3, "divide the heads and widths"),
    ("mlp", 3, "divide the heads and widths"),
])
def test_tp_refusals_are_one_line(model: str, procs: int, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        validate(ExperimentConfig(strategy="tp", model=model, procs_per_node=procs))


def test_tp_refuses_fp16_and_takes_2_or_4_ranks() -> None:
    with pytest.raises(ConfigError, match="fp16 for tp"):
        validate(ExperimentConfig(strategy="tp", procs_per_node=2, precision="fp16", device="cuda"))
    for procs in (1, 2, 4):
        validate(ExperimentConfig(strategy="tp", model="transformer", procs_per_node=procs))


def test_tp_holds_a_world_share_and_sends_two_all_reduces_worth() -> None:
    held = TP.state_bytes(1000, 4, "sgd")
    assert (held.param_bytes, held.grad_bytes, held.optim_bytes) == (1000, 1000, 1000)
    assert TP.comm_bytes(2, 100.0) == 100.0 and TP.comm_bytes(1, 100.0) == 0.0
