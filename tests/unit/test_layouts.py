"""Layout rules of the staged/sharded strategies, in process: the block table, balance, bad and good
layouts. Their command lines (exit 2) and ZeRO's state bound: tests/integration/test_strategies_staged.py."""

from __future__ import annotations

import pytest
import torch

from contract.config import ExperimentConfig, parse_trainer_args, validate
from contract.errors import ConfigError
from contract.tables import MODEL_BLOCKS
from trainers.common.data import TOKEN_LEN, TOKEN_VOCAB, DataSpec, synthetic
from trainers.common.models import balance_by_params, build_model, param_counts


def test_block_table_matches_the_models() -> None:
    images, tokens = DataSpec((3, 32, 32), 10, "image"), DataSpec((TOKEN_LEN,), TOKEN_VOCAB, "tokens")
    for name, blocks in MODEL_BLOCKS.items():
        with torch.device("meta"):  # the structure only: no weights allocated or initialised
            model = build_model(name, tokens if name == "transformer" else images, 0)
        assert len(model) == blocks, name


def test_balance_by_params_evens_out_the_largest_stage() -> None:
    spec = synthetic(0, tokens=False).spec
    counts = param_counts(build_model("mlp", spec, 0))
    assert balance_by_params(counts, 2) == [1, 5]  # the 3072x256 input layer outweighs the rest
    assert balance_by_params([1, 1, 1, 1], 4) == [1, 1, 1, 1]


@pytest.mark.parametrize("kw, needle", [
    (dict(strategy="mp", nodes=7), "needs 7 stages here; the model has 6 blocks"),
    (dict(strategy="hybrid", nodes=1, procs_per_node=8, stages=8), "needs 8 stages here; the model has 6 blocks"),
    (dict(strategy="pipeline", procs_per_node=2, chunks=0), "invalid chunks 0"),
    (dict(strategy="pipeline", procs_per_node=2, chunks=3), "not divisible by chunks x data-parallel ranks"),
    (dict(strategy="hybrid", nodes=2, procs_per_node=2, chunks=32, global_batch=32),
     "not divisible by chunks x data-parallel ranks"),
    (dict(strategy="pipeline", procs_per_node=2, balance="4,4"), "covers 8 blocks"),
    (dict(strategy="pipeline", procs_per_node=2, balance="x"), "invalid balance 'x'"),
    (dict(strategy="pipeline", procs_per_node=2, schedule="zigzag"), "unknown schedule 'zigzag'"),
])
def test_bad_layouts_are_config_errors(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        validate(ExperimentConfig(**kw))
    assert "\n" not in str(e.value)


def test_good_layouts_pass() -> None:
    for kw in (dict(strategy="pipeline", procs_per_node=2, balance="time"),
               dict(strategy="hybrid", nodes=2, procs_per_node=2, chunks=2),
               dict(strategy="gpipe", stages=6, balance="1,1,1,1,1,1", chunks=8)):
        validate(ExperimentConfig(**kw))
    with pytest.raises(ConfigError, match="unknown schedule|invalid choice"):
        parse_trainer_args(["--schedule", "zigzag"], "pipeline")
