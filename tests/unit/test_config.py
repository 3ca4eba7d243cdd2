"""Unit tests of the one place that validates experiments (no processes launched)."""

import pytest

from trainers.common import grid
from trainers.common.config import ConfigError, ExperimentConfig, check_name, validate
from trainers.common.data import GlobalBatches, split_sizes
from trainers.common.models import balance_by_params


def test_defaults_are_valid_and_ids_are_stable():
    cfg = ExperimentConfig(strategy="ddp", nodes=4)
    validate(cfg)
    assert cfg.experiment_id() == "ddp-n4-p1-b64-r0"
    assert ExperimentConfig(strategy="pipeline", nodes=2, chunks=8).experiment_id() == "pipeline-n2-p1-b64-c8-1f1b-r0"
    linked = ExperimentConfig(strategy="ddp", nodes=2, link="10gbe", latency_us=2.5, bandwidth_gbps=40)
    assert linked.experiment_id() == "ddp-n2-p1-b64-10gbe-lat2.5us-bw40g-r0"  # overrides keep runs apart


@pytest.mark.parametrize("kw, word", [
    ({"strategy": "nope"}, "nope"),
    ({"nodes": 0}, "nodes"),
    ({"steps": 0}, "steps"),
    ({"strategy": "ddp", "nodes": 3, "global_batch": 64}, "64"),
    ({"strategy": "pipeline", "nodes": 2, "chunks": 0}, "chunks"),
    ({"strategy": "pipeline", "nodes": 2, "global_batch": 30, "chunks": 4}, "30"),
    ({"strategy": "pipeline", "nodes": 2, "schedule": "zigzag"}, "zigzag"),
    ({"fault": "explode@0:1"}, "explode"),
    ({"strategy": "ddp", "nodes": 2, "fault": "raise@5:1"}, "raise@5:1"),
    ({"link": "carrier-pigeon"}, "carrier-pigeon"),
])
def test_bad_values_name_themselves(kw, word):
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(**kw))
    assert word in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "x;rm", "$(touch /tmp/x)", "a b", "", "-rf"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError):
        check_name("sweep name", name)


@pytest.mark.parametrize("text", ["0", "-1", "a", "1,,2", "", "1.5"])
def test_node_lists_are_strict(text):
    with pytest.raises(ConfigError):
        grid.parse_int_list("nodes", text)


def test_grid_skips_one_process_strategies_and_keeps_order():
    exps = grid.expand(ExperimentConfig(), ["single", "ddp", "ps"], [1, 2], [4], 1)
    skipped = {e.id for e in exps if e.skipped}
    assert skipped == {"single-n2-p1-b64-r0", "ps-n1-p1-b64-r0"}
    assert [e.id for e in exps if not e.skipped] == ["single-n1-p1-b64-r0", "ddp-n1-p1-b64-r0",
                                                     "ddp-n2-p1-b64-r0", "ps-n2-p1-b64-r0"]


def test_weak_scaling_grows_the_global_batch():
    exps = grid.expand(ExperimentConfig(global_batch=32), ["ddp"], [1, 2, 4], [4], 1, scaling="weak")
    assert [e.config.global_batch for e in exps] == [32, 64, 128]



def test_repeats_are_the_outer_loop():
    exps = grid.expand(ExperimentConfig(), ["ddp", "ring"], [1, 2], [4], 2)
    assert [e.id for e in exps] == ["ddp-n1-p1-b64-r0", "ddp-n2-p1-b64-r0", "ring-n1-p1-b64-r0", "ring-n2-p1-b64-r0",
                                    "ddp-n1-p1-b64-r1", "ddp-n2-p1-b64-r1", "ring-n1-p1-b64-r1", "ring-n2-p1-b64-r1"]


def test_ps_splits_uneven_batches_and_ddp_does_not():
    validate(ExperimentConfig(strategy="ps", nodes=4, global_batch=32))  # 3 workers: 11, 11, 10
    assert split_sizes(32, 3) == [11, 11, 10]
    with pytest.raises(ConfigError):
        validate(ExperimentConfig(strategy="ddp", nodes=3, global_batch=32))


def test_global_batches_shards_partition_the_batch():
    b = GlobalBatches(2048, 32, seed=0)
    whole = b.indices(5)
    parts = [b.shard(5, r, 3) for r in range(3)]
    assert sorted(sum((p.tolist() for p in parts), [])) == sorted(whole.tolist())
    assert b.indices(0).tolist() != GlobalBatches(2048, 32, seed=1).indices(0).tolist()
    assert b.epoch_of(64) == 1 and b.indices(64).tolist() != b.indices(0).tolist()


def test_balance_by_params_minimises_the_largest_stage():
    assert balance_by_params([10, 10, 10, 10], 2) == [2, 2]
    assert balance_by_params([100, 1, 1, 1, 1], 2) == [1, 4]
    with pytest.raises(ValueError):
        balance_by_params([1, 2], 3)


def test_batchnorm_note_only_when_the_batch_is_split():
    from torch import nn

    from trainers.common.trainer import Trainer

    t = Trainer(ctx=None)  # type: ignore[arg-type]  # the note needs no context
    t.note_batchnorm(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), 1, "rank")
    t.note_batchnorm(nn.Sequential(nn.Linear(3, 3)), 4, "rank")
    assert t.notes == []
    t.note_batchnorm(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), 4, "micro-batch")
    assert t.notes == ["model has BatchNorm: statistics are per micro-batch (4 of them), "
                       "so the maths differs from single"]
