"""MODEL=module:function (contract/usermodel.py): a bad reference is refused in one line,
at validation where it can be told without torch (the module, the function), at build
(models.build_blocks) for what the function returns. Runs: tests/integration/test_user_model.py."""

from __future__ import annotations

import sys
import textwrap

import pytest

from contract.config import ExperimentConfig, layout, validate
from contract.errors import ConfigError
from trainers.common.data import data_spec
from trainers.common.models import build_model

# A module of bad builders, written per test into a folder on sys.path (as PYTHONPATH would be).
BAD = """
raise RuntimeError("imported at validation")  # validation reads the source, never runs it

from torch import nn


def empty(spec):
    return []


def nothing(spec):
    return None


def numbers(spec):
    return [nn.Linear(2, 2), 3]


def explodes(spec):
    raise ValueError("no\\nsuch\\nshape")


def good(spec):
    return [nn.Flatten(), nn.Linear(spec.in_features, spec.num_classes)]


not_a_function = 42
"""


@pytest.fixture
def bad_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "ts_bad_models.py").write_text(BAD)
    (tmp_path / "ts_good_models.py").write_text(BAD.replace("raise RuntimeError", "# raise RuntimeError"))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ts_bad_models"
    for name in ("ts_bad_models", "ts_good_models"):
        sys.modules.pop(name, None)


def refusal(model: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(model=model, **kw))
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("model, words", [
    ("nope", ["unknown model 'nope'", "mlp", "module:function"]),
    ("examples.my_model", ["unknown model", "module:function"]),
    ("examples.my_model:build:x", ["unknown model"]),
    ("examples/my_model.py:build", ["unknown model"]),
    ("examples.no_such_module:build", ["no module 'examples.no_such_module'"]),
    ("no_such_package.models:build", ["cannot import 'no_such_package.models'"]),
    ("examples.my_model:no_such_function", ["module 'examples.my_model' defines no 'no_such_function'"]),
])
def test_bad_references_are_refused_at_validation(model: str, words: list[str]) -> None:
    message = refusal(model)
    assert all(w in message for w in words), message


def test_validation_reads_the_source_without_importing_it(bad_module: str) -> None:
    validate(ExperimentConfig(model=f"{bad_module}:empty"))  # the module raises if imported
    assert bad_module not in sys.modules
    assert "defines no 'missing'" in refusal(f"{bad_module}:missing")


def test_the_example_passes_every_strategy_kind() -> None:
    for strategy, nodes in (("single", 1), ("ddp", 2), ("zero", 2), ("fsdp", 2), ("pipeline", 2), ("gpipe", 1)):
        validate(ExperimentConfig(model="examples.my_model:build", strategy=strategy, nodes=nodes))
    # Its block count is known only once built: the layout rules leave the stage count to the trainer.
    assert layout(ExperimentConfig(model="examples.my_model:build", strategy="pipeline", nodes=8)).blocks > 8
    assert layout(ExperimentConfig(model="mlp", strategy="pipeline", nodes=8)).blocks == 6


@pytest.mark.parametrize("function, words", [
    ("empty", ["returned list []", "non-empty list of nn.Module"]),
    ("nothing", ["returned NoneType", "non-empty list"]),
    ("numbers", ["block 1 is a int, not an nn.Module"]),
    ("explodes", ["calling it failed: ValueError: no such shape"]),
    ("not_a_function", ["'not_a_function' is a int, not a function"]),
])
def test_bad_builders_are_refused_at_build(bad_module: str, function: str, words: list[str]) -> None:
    ref = f"ts_good_models:{function}"
    validate(ExperimentConfig(model=ref))  # exists: fine for validation
    with pytest.raises(ConfigError) as e:
        build_model(ref, data_spec("digits"), seed=0)
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_module_that_fails_to_import_is_one_line_at_build(bad_module: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_model(f"{bad_module}:good", data_spec("digits"), seed=0)
    assert "importing 'ts_bad_models' failed: RuntimeError: imported at validation" in str(e.value)


def test_user_model_weights_come_from_the_seed() -> None:
    a, b, c = (build_model("examples.my_model:build", data_spec("synthetic"), seed) for seed in (3, 3, 4))
    assert len(a) == 5
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert any((p != q).any() for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_the_trainer_flag_takes_any_reference() -> None:
    from contract.config import parse_trainer_args

    cfg = parse_trainer_args(["--model", "examples.my_model:build"], "single")
    assert cfg.model == "examples.my_model:build"
    assert "examples.my_model.build" in cfg.experiment_id()
    with pytest.raises(ConfigError, match="no module 'examples.nope'"):
        parse_trainer_args(["--model", "examples.nope:build"], "single")


def test_module_getattr_falls_back_to_an_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "ts_lazy_models.py").write_text(textwrap.dedent("""
        def __getattr__(name):
            if name == "build":
                return lambda spec: []
            raise AttributeError(name)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        validate(ExperimentConfig(model="ts_lazy_models:build"))
        assert "defines no 'other'" in refusal("ts_lazy_models:other")
    finally:
        sys.modules.pop("ts_lazy_models", None)
