"""mix's registry record and settings: refusals (one line each), dp = world / (tp pp), its settings in
its identity and experiment id only, what a rank holds and sends (formulas worked by hand)."""

from __future__ import annotations

import pytest

from contract import registry
from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError

MIX = registry.get("mix")


def cfg(**kw: object) -> ExperimentConfig:
    return ExperimentConfig(**{"strategy": "mix", "model": "transformer", **kw})


def test_dp_is_what_tp_and_pp_leave() -> None:
    assert MIX.kind in registry.KINDS and MIX.same_maths()
    c = cfg(nodes=2, procs_per_node=4, tp=2, pp=2)
    validate(c)
    assert (c.dp_size, c.pipeline_stages) == (2, 2)
    assert cfg(procs_per_node=4).dp_size == 4 and cfg(procs_per_node=4, tp=4).dp_size == 1
    assert (MIX.sbatch_nodes, MIX.sbatch_procs) == (2, 4)  # TP=2 PP=2 sbatch -N 2: pp2 x dp2 x tp2


@pytest.mark.parametrize("kw, why", [
    ({"procs_per_node": 4, "tp": 2, "pp": 3}, "tp x pp .2 x 3. to divide the world size 4"),
    ({"nodes": 2, "procs_per_node": 2, "tp": 4}, "inside a node: tp 4 > 2 ranks per node"),
    ({"procs_per_node": 3, "tp": 3}, "tp 3 to divide the heads and widths of transformer"),
    ({"procs_per_node": 7, "pp": 7}, "7 stages here; the model has 6 blocks"),
    ({"procs_per_node": 4, "tp": 2, "global_batch": 36}, "not divisible by chunks x data-parallel ranks .4 x 2."),
    ({"procs_per_node": 2, "tp": 2, "model": "cnn"}, "cuts only the models mlp, transformer, not cnn"),
    ({"procs_per_node": 2, "shard": "half"}, "unknown shard 'half'"),
    ({"procs_per_node": 2, "tp": 0}, "invalid tp 0"),
    ({"procs_per_node": 2, "precision": "fp16", "device": "cuda"}, "fp16 for mix"),
])
def test_refusals_are_one_line(kw: dict, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        validate(cfg(**kw))
    assert "\n" not in str(e.value)


def test_its_settings_are_in_its_identity_and_id_only() -> None:
    c = cfg(nodes=2, procs_per_node=4, tp=2, pp=2, shard="optim")
    assert {"tp", "pp", "shard", "sequence_parallel", "chunks", "schedule", "balance"} <= set(c.identity())
    assert c.experiment_id() == "mix-n2-p4-b64-c4-1f1b-transformer-tp2-pp2-shardoptim-r0"
    assert cfg(procs_per_node=4, shard="full").experiment_id() != cfg(procs_per_node=4).experiment_id()
    for strategy in ("ddp", "tp", "pipeline"):
        ident = ExperimentConfig(strategy=strategy, procs_per_node=2, tp=2, pp=2, shard="full").identity()
        assert not {"tp", "pp", "shard"} & set(ident), strategy


@pytest.mark.parametrize("shard, want", [
    ("none", (500, 500, 500)),  # n/tp each: 1000 elements over tp 2
    ("optim", (500, 500, 250)),  # the optimizer state also over dp 2
    ("full", (250, 250, 250)),  # all three over dp 2
])
def test_a_rank_holds_its_stage_cut_by_tp_then_dp(shard: str, want: tuple[int, int, int]) -> None:
    held = MIX.state_bytes(1000, 8, "sgd", settings={"tp": 2, "pp": 2, "shard": shard})  # dp 2
    assert (held.param_bytes, held.grad_bytes, held.optim_bytes) == tuple(4 * w for w in want)
    adam = MIX.state_bytes(1000, 8, "adam", settings={"tp": 2, "pp": 2, "shard": shard})
    assert adam.optim_bytes == 2 * held.optim_bytes


PAYLOADS = registry.Payloads(tp=1000.0, collectives=8, boundary=300.0, sends=2, stage=4000.0, units=3)


@pytest.mark.parametrize("shard, dp_bytes, dp_messages", [
    ("none", 2 * 3 / 4 * 4000, 2 * 3), ("optim", 3 * 3 / 4 * 4000, 3 * 3), ("full", 2 * 3 / 4 * 4000, 2 * 3 * 3)])
def test_a_step_sends_tp_collectives_boundaries_and_dp_traffic(shard: str, dp_bytes: float, dp_messages: int) -> None:
    settings = {"tp": 2, "chunks": 4, "shard": shard}
    tp_and_pipe = 2 * 1 / 2 * 1000 + 300  # ring all-reduce over tp 2, plus the boundaries
    assert MIX.step_traffic(settings, 4, PAYLOADS) == (tp_and_pipe + dp_bytes, (2 * 8 + 2) * 4 + dp_messages)
    assert MIX.step_traffic(settings, 1, PAYLOADS) == (tp_and_pipe, (2 * 8 + 2) * 4)
    alone = MIX.step_traffic({"tp": 1, "chunks": 4, "shard": shard}, 1, PAYLOADS)
    assert alone == (300, 2 * 4)  # tp 1: only the pipeline


def test_a_shard_mode_over_one_replica_is_the_same_experiment_as_none() -> None:
    from contract.config import ExperimentConfig

    one = ExperimentConfig(strategy="mix", nodes=2, procs_per_node=2, tp=2, pp=2, model="transformer", shard="full")
    assert one.identity() == ExperimentConfig(**{**one.to_dict(), "shard": "none"}).identity()
    assert "shard" not in one.experiment_id()
    two = ExperimentConfig(**{**one.to_dict(), "nodes": 4})  # dp 2: the shard mode is the experiment's
    assert two.identity()["shard"] == "full" and "shardfull" in two.experiment_id()
