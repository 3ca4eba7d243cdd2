"""localsgd's and asyncps's settings (contract/config.py) and registry records (contract/registry.py):
validation with one line each, identity only where the strategy takes them, the same-maths trait,
and the traffic per step."""

from __future__ import annotations

import dataclasses

import pytest

from contract import registry
from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError
from sweeper import grid

OWN = {"localsgd": {"sync_every": 4, "outer": "nesterov", "outer_lr": 0.7, "sync_optim": "average"},
       "asyncps": {"staleness": 2}}


@pytest.mark.parametrize("setting, value, words", [
    ("sync_every", 0, "invalid sync_every 0: must be >= 1"),
    ("outer", "adam", "unknown outer 'adam': choose from sgd, nesterov"),
    ("outer_lr", 0.0, "invalid outer_lr 0.0: must be > 0"),
    ("sync_optim", "sum", "unknown sync_optim 'sum': choose from keep, average"),
    ("staleness", -1, "invalid staleness -1: must be >= 0"),
])
def test_bad_settings_are_one_line_errors(setting, value, words):
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(strategy="localsgd", nodes=2, **{setting: value}))
    assert str(e.value) == words


def test_asyncps_needs_two_ranks_and_refuses_fp16():
    with pytest.raises(ConfigError, match="asyncps needs at least 2 ranks"):
        validate(ExperimentConfig(strategy="asyncps"))
    assert grid.skip_reason(ExperimentConfig(strategy="asyncps"), None) is not None  # a sweep skips it
    with pytest.raises(ConfigError, match="invalid precision fp16 for asyncps: .*use bf16"):
        validate(ExperimentConfig(strategy="asyncps", nodes=2, precision="fp16", device="cuda"))


@pytest.mark.parametrize("strategy", registry.NAMES)
def test_own_settings_are_in_their_strategys_identity_only(strategy):
    base = ExperimentConfig(strategy=strategy, nodes=2)
    for owner, settings in OWN.items():
        changed = dataclasses.replace(base, **settings)
        if strategy == owner:
            assert set(settings) <= set(base.identity())
            assert changed.experiment_id() != base.experiment_id()
        else:
            assert not set(settings) & set(base.identity())
            assert changed.experiment_id() == base.experiment_id()  # never splits another strategy's experiment


def test_ids_name_the_settings():
    cfg = ExperimentConfig(strategy="localsgd", nodes=2, **OWN["localsgd"])
    assert cfg.experiment_id() == "localsgd-n2-p1-b64-h4-nesterov-olr0.7-optimaverage-r0"
    assert ExperimentConfig(strategy="asyncps", nodes=2, staleness=2).experiment_id() == "asyncps-n2-p1-b64-stale2-r0"


def test_a_sweep_over_sync_every_splits_localsgd_and_lists_ddp_once():
    exps = grid.expand(ExperimentConfig(nodes=2), {"strategy": ["ddp", "localsgd"], "sync_every": [1, 4, 16]})
    assert [(e.config.strategy, e.config.sync_every) for e in exps] == [
        ("ddp", 1), ("localsgd", 1), ("localsgd", 4), ("localsgd", 16)]


@pytest.mark.parametrize("strategy, settings, same", [
    ("ddp", {}, True), ("single", {"sync_every": 8}, True),
    ("localsgd", {}, True), ("localsgd", {"sync_every": 4}, False),
    ("localsgd", {"outer": "nesterov", "outer_lr": 0.7}, False), ("localsgd", {"outer_lr": 0.5}, False),
    ("localsgd", {"optimizer": "adam"}, False),  # Adam's update is not linear in the gradient
    ("asyncps", {}, True), ("asyncps", {"staleness": 0}, True), ("asyncps", {"staleness": 1}, False),
])
def test_same_maths_is_a_function_of_the_settings(strategy, settings, same):
    assert registry.get(strategy).same_maths(settings) is same
    cfg = ExperimentConfig(strategy=strategy, **settings)
    assert registry.get(strategy).same_maths(cfg.to_dict()) is same  # a config's fields, as config.json holds them


def test_traffic_per_step():
    p = 1000.0
    ddp, lsgd, ps, aps = (registry.get(n) for n in ("ddp", "localsgd", "ps", "asyncps"))
    assert lsgd.comm_bytes(4, p, {"sync_every": 1}) == ddp.comm_bytes(4, p) == 1500.0
    assert lsgd.comm_bytes(4, p, {"sync_every": 4}) == ddp.comm_bytes(4, p) / 4
    # the optimizer state averaged too: SGD's momentum (x2), Adam's two moments (x3)
    assert lsgd.comm_bytes(4, p, {"sync_every": 4, "sync_optim": "average"}) == 2 * ddp.comm_bytes(4, p) / 4
    assert lsgd.comm_bytes(4, p, {"sync_every": 1, "sync_optim": "average", "optimizer": "adam"}) == 4500.0
    assert aps.comm_bytes(4, p, {"staleness": 3}) == ps.comm_bytes(4, p) == 3000.0


def test_what_each_rank_holds():
    n = 1000
    lsgd = registry.get("localsgd").state_bytes(n, 4, "sgd")
    assert (lsgd.param_bytes, lsgd.grad_bytes, lsgd.optim_bytes) == (4 * n, 4 * n, 4 * n)
    # DiLoCo: the last sync's copy, its pseudo-gradient and (nesterov) the outer momentum, as optimizer state
    diloco = registry.get("localsgd").state_bytes(n, 4, "sgd", settings={"outer": "nesterov", "outer_lr": 0.7})
    assert diloco.optim_bytes == 4 * n + 3 * 4 * n
    lsgd_outer = registry.get("localsgd").state_bytes(n, 4, "sgd", settings={"outer_lr": 0.5})
    assert lsgd_outer.optim_bytes == 4 * n + 2 * 4 * n
    assert registry.get("localsgd").state_bytes(n, 4, "sgd", settings={"sync_every": 8}).optim_bytes == 4 * n
    server, worker = (registry.get("asyncps").state_bytes(n, 4, "adam", rank=r) for r in (0, 1))
    assert server.optim_bytes == 8 * n and worker.optim_bytes == 0  # only the server steps an optimizer
    assert registry.get("asyncps").dp_size(1, 4) == 3
