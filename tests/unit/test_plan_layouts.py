"""The planner's tp / mix layouts (analysis/layoutplan.py through plan_one): state from the TP rank's local
shapes, activations per stage and micro-batch, and the TP-cut profile measured in-process with torch's fake
process group (trainers/common/activations.py profile_tp). No process is launched."""

from __future__ import annotations

import pytest

from analysis import layoutplan, plan
from contract import registry
from contract.errors import ConfigError
from trainers.common.activations import profile_model, profile_tp

MIX, TP = registry.get("mix"), registry.get("tp")


def cut_shape() -> plan.ModelShape:
    """Four blocks as TP rank 0 of tp 2 holds them: a replicated embedding, two cut blocks, a head;
    saved bytes per sample 10, 100, 100, 30 (the uncut parameter counts balance 2 stages as [0, 1] [2, 3])."""
    blocks = (plan.Block(64, 10.0, 4.0, ((8, 8),)), plan.Block(48, 100.0, 4.0, ((6, 8),)),
              plan.Block(48, 100.0, 4.0, ((6, 8),)), plan.Block(16, 30.0, 4.0, ((2, 8),)))
    return plan.ModelShape("toy", blocks, tp=2, whole=(64, 96, 96, 16))


def options(nodes: int, procs: int, **settings) -> plan.Options:
    return plan.Options([nodes], procs, 32, 4, settings.pop("schedule", "1f1b"), "adam", "fp32", 80 * plan.GIB,
                        settings=settings)


@pytest.mark.parametrize(("stage", "pp", "m", "schedule", "want"), [
    (0, 2, 4, "1f1b", 2), (1, 2, 4, "1f1b", 1), (0, 4, 2, "1f1b", 2), (0, 2, 4, "gpipe", 4), (0, 1, 4, "gpipe", 1)])
def test_in_flight_per_stage(stage: int, pp: int, m: int, schedule: str, want: int) -> None:
    assert layoutplan.in_flight(stage, pp, m, schedule) == want


def test_tp_state_is_the_sum_of_local_shapes_and_activations_one_batch() -> None:
    row = plan.plan_one(TP, cut_shape(), 1, options(1, 2))
    assert (row["tp"], row["pp"], row["dp"]) == (2, 1, 1)
    assert row["param_bytes"] == row["grad_bytes"] == 4 * (64 + 48 + 48 + 16)
    assert row["optim_bytes"] == 2 * row["param_bytes"]  # Adam: two fp32 states
    assert row["activation_bytes"] == 32 * (10 + 100 + 100 + 30)  # the whole global batch, no micro-batches


def test_mix_shard_modes_split_the_local_shapes_over_dp() -> None:
    local = 64 + 48 + 48 + 16  # 176 elements; dp 2
    none = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=1, shard="none"))
    optim = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=1, shard="optim"))
    full = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=1, shard="full"))
    assert none["dp"] == 2 and none["optim_bytes"] == 4 * 2 * local
    # ZeRO-1's greedy whole tensors, largest first to the emptier rank: 64 + 16 | 48 + 48 -> 96
    assert optim["param_bytes"] == 4 * local and optim["optim_bytes"] == 4 * 2 * 96
    # FSDP2 cuts every tensor along dim 0: rank 0 holds 4x8 + 3x8 + 3x8 + 1x8 = 88
    assert full["param_bytes"] == full["grad_bytes"] == 4 * 88 and full["optim_bytes"] == 4 * 2 * 88
    # one replica of 16 samples in 4 micro-batches of 4, one at a time
    assert none["activation_bytes"] == 4 * 240 and none["micro_batch"] == 4


def test_a_micro_batch_keeps_the_whole_replicas_batch() -> None:
    """The model input the first block saves (and the targets the loss saves) are slices of the replica's
    batch: their whole storage stays."""
    shape = cut_shape()
    first = plan.Block(64, 10.0, 4.0, ((8, 8),), batch_per_sample=6.0)
    shape = plan.ModelShape("toy", (first, *shape.blocks[1:]), tp=2, whole=shape.whole)
    row = plan.plan_one(MIX, shape, 1, options(1, 4, tp=2, pp=1, shard="none"))
    assert row["activation_bytes"] == 4 * (240 - 6) + 16 * 6  # one micro-batch of 4, the input of all 16


def test_mix_pipeline_keeps_each_stages_micro_batches_in_flight() -> None:
    onef = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=2, schedule="1f1b"))
    gpipe = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=2, schedule="gpipe"))
    # 32 samples, 4 micro-batches of 8; stage 0 (blocks 0, 1: 110 per sample) keeps 2 under 1F1B, stage 1 one
    assert onef["activation_bytes"] == max(2 * 8 * 110, 1 * 8 * 130)
    assert gpipe["activation_bytes"] == 4 * 8 * 130  # every micro-batch: the heavier stage 1
    assert onef["param_bytes"] == 4 * (64 + 48)  # stage 0's local shapes


def test_micro_batch_setting_sets_the_micro_batches() -> None:
    row = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=2, pp=2, micro_batch=2))
    assert row["micro_batch"] == 2
    assert row["activation_bytes"] == 2 * 2 * 110  # 16 micro-batches of 2, stage 0 keeps 2 under 1F1B


def test_a_mix_layout_the_registry_refuses_gives_its_reason() -> None:
    row = plan.plan_one(MIX, cut_shape(), 1, options(1, 4, tp=4, pp=2))
    assert row["param_bytes"] is None and "divide the world size" in row["reason"]


def test_a_profile_cut_for_another_tp_is_refused() -> None:
    with pytest.raises(ConfigError, match="cut for tp 2"):
        plan.plan_one(TP, cut_shape(), 1, options(1, 4))


def test_registry_local_shapes_change_nothing_without_local() -> None:
    shapes = [(8, 8), (6, 8)]
    assert TP.state_bytes(200, 2, "adam", shapes=shapes).param_bytes == 4 * 100  # n / W
    assert TP.state_bytes(200, 2, "adam", shapes=shapes, local=True).param_bytes == 4 * 112


def test_profile_tp_cuts_the_blocks_and_recomputation_keeps_the_inputs() -> None:
    whole = profile_model("transformer", "synthetic", batch=2)
    cut = profile_tp("transformer", "synthetic", 2, batch=2)
    assert cut[0].params == whole[0].params and cut[-1].params == whole[-1].params  # embedding, head replicated
    assert whole[1].params / 2 < cut[1].params < whole[1].params  # cut layers halved, norms and out bias whole
    assert cut[1].saved_per_sample < whole[1].saved_per_sample  # heads and MLP hidden halved
    assert cut[1].saved_per_sample > whole[1].saved_per_sample / 2  # the replicated norms' inputs are not
    sp = profile_tp("transformer", "synthetic", 2, "full", sp=True, batch=2)
    assert sp[2].saved_per_sample == 32 * 128 * 4 / 2  # full recomputation: only the input, this rank's half
