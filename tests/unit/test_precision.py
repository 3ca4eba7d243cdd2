"""fp16 without a GPU: refused at validation for --device cpu (one line); for --device auto on a
node without a GPU the trainer refuses it (tests/integration/test_bf16.py). The plan refuses a
module:function model in one line (it plans built-in models and --params)."""

from __future__ import annotations

import pytest

from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError


def test_fp16_on_cpu_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(precision="fp16", device="cpu"))
    assert "invalid precision fp16 on device cpu" in str(e.value) and "bf16" in str(e.value)
    validate(ExperimentConfig(precision="bf16", device="cpu"))
    validate(ExperimentConfig(precision="fp16", device="auto"))  # a GPU node runs it; the trainer decides


def test_the_plan_refuses_a_user_model_in_one_line(capsys) -> None:
    from analysis.plan import main

    assert main(["--model", "examples.my_model:build", "--nodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "module:function model is not planned" in err and "--params" in err
