"""Any setting as a sweep axis (sweeper/grid.py): parsing comma lists and YAML lists,
the product over any axes, layouts side by side, ids that stay unique and complete, and the
data_size setting (config validation, identity, the first-N subset in trainers/common/data.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import torch

from contract.config import ExperimentConfig, identity_diff, validate
from contract.errors import ConfigError
from contract.tables import TRAIN_SAMPLES
from sweeper import grid
from trainers.common.data import first_samples, load

# Two values of every axis (a test fails when an axis is added without values here: its ids
# must be shown unique too).
VALUES = {
    "strategy": ["ddp", "pipeline", "hybrid", "zero", "ps", "localsgd", "asyncps"], "nodes": [1, 2],
    "procs_per_node": [1, 2],
    "model": ["mlp", "cnn"], "dataset": ["synthetic", "digits"], "data_size": [0, 512, 1500], "steps": [5, 20],
    "epochs": [0, 1], "global_batch": [64, 128], "chunks": [2, 4], "schedule": ["gpipe", "1f1b"], "stages": [0, 2],
    "gpipe_checkpoint": ["never", "always"], "precision": ["fp32", "bf16"], "optimizer": ["sgd", "adam"],
    "lr": [0.05, 1e-06, 1e06], "seed": [0, 1], "warmup": [2, 0], "device": ["auto", "cpu"],
    "link": ["loopback", "10gbe"], "latency_us": [-1.0, 2.5], "bandwidth_gbps": [-1.0, 40.0],
    "memory_fraction": [-1.0, 0.25], "fault": ["", "raise@0:1"], "sync_every": [1, 4], "outer": ["sgd", "nesterov"],
    "outer_lr": [1.0, 0.7], "sync_optim": ["keep", "average"], "staleness": [0, 2],
    "sequence_parallel": ["on", "off"], "micro_batch": [0, 16, 8, 64], "recompute": ["none", "full"],
    "tp": [1, 2], "pp": [1, 2], "shard": ["none", "full"],
}


def _valid(cfg: ExperimentConfig) -> bool:
    try:
        validate(cfg)
    except ConfigError:
        return False
    return True


def test_every_axis_has_test_values():
    assert set(VALUES) == set(grid.AXES)


@pytest.mark.parametrize("name, raw, want", [
    ("global_batch", "32,128", [32, 128]), ("global_batch", [32, "128", 32], [32, 128]), ("global_batch", 64, [64]),
    ("procs_per_node", " 1, 4 ", [1, 4]), ("precision", "fp32,bf16", ["fp32", "bf16"]),
    ("model", ["mlp", "cnn"], ["mlp", "cnn"]), ("lr", "0.1,1e-3", [0.1, 0.001]), ("lr", [1, 0.5], [1.0, 0.5]),
    ("data_size", "512,0", [512, 0]), ("strategy", "all", list(grid.STRATEGIES)), ("link", "10gbe", ["10gbe"]),
])
def test_axis_values_parse_from_comma_lists_and_yaml_lists(name, raw, want):
    assert grid.parse_values(name, raw) == want


@pytest.mark.parametrize("name, raw", [
    ("global_batch", "32,,64"), ("global_batch", "1.5"), ("global_batch", True), ("global_batch", [[1, 2]]),
    ("global_batch", [None]), ("precision", ""), ("precision", [["fp32"]]), ("lr", "fast"), ("strategy", "ddp,warp"),
    ("run_dir", "a,b"), ("balance", "3,3"), ("repeat", "1,2"), ("global_batch", []),
])
def test_bad_axis_values_are_one_line_errors(name, raw):
    with pytest.raises(ConfigError) as e:
        grid.parse_values(name, raw)
    assert "\n" not in str(e.value) and name.split("_")[0] in str(e.value) or "warp" in str(e.value)


def test_layouts_pair_nodes_with_procs():
    assert grid.parse_layouts("1x4, 4x1") == [(1, 4), (4, 1)] == grid.parse_layouts(["1x4", "4x1"])
    for bad in ("1x", "4", "0x2", "1x4,", [14]):
        with pytest.raises(ConfigError):
            grid.parse_layouts(bad)
    exps = grid.expand(ExperimentConfig(strategy="ddp"), {("nodes", "procs_per_node"): [(1, 4), (4, 1)],
                                                           "precision": ["fp32", "bf16"]})
    assert [(e.config.nodes, e.config.procs_per_node, e.config.precision) for e in exps] == [
        (1, 4, "fp32"), (1, 4, "bf16"), (4, 1, "fp32"), (4, 1, "bf16")]


def test_any_axis_multiplies_the_grid_in_field_order_with_repeats_outermost():
    exps = grid.expand(ExperimentConfig(steps=5), {"precision": ["fp32", "bf16"], "strategy": ["ddp", "ring"],
                                                   "global_batch": [32, 64], "optimizer": ["sgd", "adam"]}, repeats=2)
    points = [(e.config.repeat, e.config.strategy, e.config.global_batch, e.config.precision, e.config.optimizer)
              for e in exps]
    assert points == [(r, s, b, p, o) for r in (0, 1) for s in ("ddp", "ring") for b in (32, 64)
                      for p in ("fp32", "bf16") for o in ("sgd", "adam")]


def test_a_setting_a_strategy_ignores_never_splits_its_experiment():
    exps = grid.expand(ExperimentConfig(nodes=2), {"strategy": ["ddp", "pipeline"], "chunks": [2, 4, 8],
                                                   "schedule": ["gpipe", "1f1b"]})
    ddp = [e for e in exps if e.config.strategy == "ddp"]
    assert len(ddp) == 1 and ddp[0].config.chunks == ExperimentConfig().chunks
    assert len([e for e in exps if e.config.strategy == "pipeline"]) == 6


def test_weak_scaling_grows_every_batch_of_the_batch_axis():
    exps = grid.expand(ExperimentConfig(strategy="ddp"), {"nodes": [2, 4], "global_batch": [32, 64]}, scaling="weak")
    assert [(e.config.nodes, e.config.global_batch) for e in exps] == [(2, 32), (2, 64), (4, 64), (4, 128)]
    with pytest.raises(ConfigError, match="multiples"):
        grid.expand(ExperimentConfig(strategy="ddp"), {"nodes": [2, 3]}, scaling="weak")


def test_bad_grid_values_are_errors_not_skips():
    with pytest.raises(ConfigError, match="invalid nodes 0"):
        grid.expand(ExperimentConfig(), {"strategy": ["single", "ddp"], "nodes": [0, 1]})
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        grid.expand(ExperimentConfig(), {"strategy": ["ddp"], "precision": ["fp32", "fp8"]})


def _record(seen: dict[str, str], cfg: ExperimentConfig) -> None:
    ident = json.dumps(cfg.identity(), sort_keys=True)
    exp_id = cfg.experiment_id()
    assert seen.setdefault(exp_id, ident) == ident, f"{exp_id} names two identities"


def test_ids_are_unique_and_complete_over_every_axis():
    """A grid over every axis (in groups: the whole product is 10^7 points), then random points
    across all of them: an id never names two identities, and distinct identities get distinct ids."""
    seen: dict[str, str] = {}
    names = list(VALUES)
    for group in (names[i:i + 8] for i in range(0, len(names), 8)):
        axes = {"strategy": VALUES["strategy"], **{n: VALUES[n] for n in group}}
        for values in itertools.product(*axes.values()):
            cfg = dataclasses.replace(ExperimentConfig(), **dict(zip(axes, values, strict=True)))
            if _valid(cfg):
                _record(seen, cfg)
    rng = random.Random(0)
    for _ in range(4000):
        cfg = ExperimentConfig(**{n: rng.choice(v) for n, v in VALUES.items()}, repeat=rng.choice([0, 1]))
        if _valid(cfg):
            _record(seen, cfg)
    assert len(seen) > 2000
    assert len(set(seen.values())) == len(seen)  # and no identity under two ids


def test_each_identity_setting_shows_in_the_id():
    for strategy in ("ddp", "pipeline"):
        base = ExperimentConfig(strategy=strategy, nodes=2)
        for name, values in VALUES.items():
            other = dataclasses.replace(base, **{name: values[1]})
            if name in base.identity() and _valid(other) and other.identity() != base.identity():
                assert other.experiment_id() != base.experiment_id(), name


def test_floats_in_ids_are_exact():
    for a, b in ((1e-06, 1e06), (0.1234567, 0.1234568)):
        assert ExperimentConfig(lr=a).experiment_id() != ExperimentConfig(lr=b).experiment_id()
    assert ExperimentConfig(bandwidth_gbps=40.0, link="10gbe", strategy="ddp", nodes=2).experiment_id() == \
        "ddp-n2-p1-b64-10gbe-bw40-r0"


def test_data_size_is_validated_and_part_of_the_identity():
    cfg = ExperimentConfig(data_size=512)
    validate(cfg)
    assert cfg.train_samples == 512 and cfg.identity()["data_size"] == 512 and "-d512-" in cfg.experiment_id()
    whole = ExperimentConfig(data_size=TRAIN_SAMPLES["synthetic"])
    assert whole.identity() == ExperimentConfig().identity()
    assert whole.experiment_id() == ExperimentConfig().experiment_id()
    for kw, word in (({"data_size": -1}, "invalid data_size -1"), ({"data_size": 4096}, "invalid data_size 4096"),
                     ({"data_size": 32, "global_batch": 64}, "larger than the data_size 32"),
                     ({"dataset": "digits", "data_size": 2000}, "1500 training samples of dataset digits")):
        with pytest.raises(ConfigError) as e:
            validate(ExperimentConfig(**kw))
        assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_run_from_before_a_setting_existed_reads_as_its_default():
    ident = ExperimentConfig().identity()
    old = {k: v for k, v in ident.items() if k != "data_size"}
    assert identity_diff(old, ident) == []
    assert identity_diff(old, ExperimentConfig(data_size=512).identity()) == ["data_size: 0 -> 512"]


def test_data_size_takes_the_first_training_samples_and_keeps_validation_whole():
    whole = load("synthetic", 0, "data")
    part = load("synthetic", 0, "data", data_size=256)
    assert len(part.y_train) == 256 and torch.equal(part.x_train, whole.x_train[:256])
    assert torch.equal(part.x_val, whole.x_val) and torch.equal(part.y_val, whole.y_val)
    assert torch.equal(load("synthetic", 0, "data", data_size=256).x_train, part.x_train)  # deterministic
    with pytest.raises(ValueError, match="data_size 4096"):
        first_samples(whole, 4096)
