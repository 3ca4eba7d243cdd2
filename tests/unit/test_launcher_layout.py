"""A trainer's layout against its launcher's (setup._launcher_layout): the command line's when
given (and then they must agree), else the launcher's WORLD_SIZE / LOCAL_WORLD_SIZE. The
torchrun launch itself: tests/integration/test_torchrun.py."""

from __future__ import annotations

import pytest

from contract.config import ExperimentConfig
from contract.errors import ConfigError
from trainers.common.distenv import from_environ
from trainers.common.setup import _launcher_layout, _layout_given


def torchrun_env(world: int, local: int) -> dict[str, str]:
    return {"RANK": "0", "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(local)}


@pytest.mark.parametrize("argv, given", [
    ([], False), (["--steps", "3", "--run-dir", "x"], False), (["--nodes", "2"], True),
    (["--procs-per-node=2"], True), (["--procs-per", "2"], True), (["--run-dir", "--nodes-dir"], False),
])
def test_layout_given(argv: list[str], given: bool) -> None:
    assert _layout_given(argv) is given


@pytest.mark.parametrize("world, local, nodes, procs", [(2, 2, 1, 2), (4, 2, 2, 2), (3, 1, 3, 1)])
def test_the_launchers_layout_is_taken_where_none_is_given(world, local, nodes, procs) -> None:
    cfg = _launcher_layout(ExperimentConfig(strategy="ddp", global_batch=24), from_environ(torchrun_env(world, local)),
                           [])
    assert (cfg.nodes, cfg.procs_per_node) == (nodes, procs)


@pytest.mark.parametrize("cfg, argv, word", [
    (ExperimentConfig(strategy="ddp"), ["--nodes", "1"], "leave --nodes and --procs-per-node out"),
    (ExperimentConfig(strategy="single"), [], "invalid layout for single"),  # the adopted layout is validated
    (ExperimentConfig(strategy="ddp", global_batch=63), [], "not divisible by the 2 data-parallel ranks"),
])
def test_a_layout_the_launcher_contradicts_is_one_line(cfg, argv, word) -> None:
    with pytest.raises(ConfigError) as e:
        _launcher_layout(cfg, from_environ(torchrun_env(2, 2)), argv)
    assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_uneven_launcher_layout_asks_for_one() -> None:
    with pytest.raises(ConfigError, match="3 ranks, 2 per node: give --nodes and --procs-per-node"):
        _launcher_layout(ExperimentConfig(strategy="ddp", global_batch=60), from_environ(torchrun_env(3, 2)), [])
