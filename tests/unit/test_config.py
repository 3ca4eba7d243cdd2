"""Unit tests of the one place that validates experiments (no processes launched): experiment ids
and identity, refusals (one line each), grids, batches. bin/sweep's exit 2 on the same input:
tests/integration/test_simulate_partition.py and tests/integration/test_sweep.py."""

import dataclasses

import pytest

from contract import registry
from contract.config import NOT_IDENTITY, ExperimentConfig, check_name, validate
from contract.errors import ConfigError
from contract.tables import TRAIN_SAMPLES
from sweeper import grid
from trainers.common.data import GlobalBatches, split_sizes
from trainers.common.models import balance_by_params


def test_defaults_are_valid_and_ids_are_stable():
    """The id format itself (docs/logs.md): the layout, then every identity setting off its default."""
    cfg = ExperimentConfig(strategy="ddp", nodes=4)
    validate(cfg)
    assert cfg.experiment_id() == "ddp-n4-p1-b64-r0"
    assert ExperimentConfig(strategy="pipeline", nodes=2, chunks=8).experiment_id() == "pipeline-n2-p1-b64-c8-1f1b-r0"
    assert ExperimentConfig(strategy="ddp", nodes=2, steps=6, global_batch=32).experiment_id() == "ddp-n2-p1-b32-s6-r0"
    assert ExperimentConfig(strategy="ddp", dataset="digits").experiment_id() == "ddp-n1-p1-b64-digits-r0"
    linked = ExperimentConfig(strategy="ddp", nodes=2, link="10gbe", latency_us=2.5, bandwidth_gbps=40)
    assert linked.experiment_id() == "ddp-n2-p1-b64-10gbe-lat2.5-bw40-r0"  # overrides keep runs apart


# One value off the default for every setting that changes results (and so the id).
CHANGES = {"model": "cnn", "dataset": "digits", "steps": 6, "epochs": 2, "lr": 0.01, "seed": 3, "optimizer": "adam",
           "precision": "bf16", "warmup": 1, "link": "10gbe", "latency_us": 3.0, "bandwidth_gbps": 40.0,
           "memory_fraction": 0.25, "fault": "raise@1:3", "device": "cpu", "global_batch": 32, "nodes": 4,
           "procs_per_node": 2, "repeat": 1}


@pytest.mark.parametrize("name, value", sorted(CHANGES.items()))
def test_every_identity_setting_changes_the_id(name, value):
    base = ExperimentConfig(strategy="ddp", nodes=2)
    changed = dataclasses.replace(base, **{name: value})
    assert name in changed.identity() and changed.identity()[name] != base.identity()[name]
    assert changed.experiment_id() != base.experiment_id(), name


def test_identity_lists_what_changes_results_and_nothing_else():
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    ddp = ExperimentConfig(strategy="ddp", nodes=2).identity()
    assert set(ddp) == fields - set(NOT_IDENTITY) - {"chunks", "schedule", "stages", "balance", "gpipe_checkpoint",
                                                     "sync_every", "outer", "outer_lr", "sync_optim", "staleness",
                                                     "sequence_parallel", "tp", "pp", "shard"}
    assert set(CHANGES) | {"strategy"} <= set(ddp)
    others = {"run_dir": "/elsewhere", "save_params": True, "checkpoint_every": 5, "data_dir": "/data2"}
    assert set(others) == set(NOT_IDENTITY)
    for name, value in others.items():  # where files go, when to checkpoint: the same experiment
        other = dataclasses.replace(ExperimentConfig(strategy="ddp"), **{name: value})
        assert other.experiment_id() == ExperimentConfig(strategy="ddp").experiment_id(), name


def test_chunks_split_pipelines_not_ddp():
    for strategy in registry.NAMES:
        a = ExperimentConfig(strategy=strategy, nodes=2, chunks=4)
        b = dataclasses.replace(a, chunks=8)
        assert (a.experiment_id() != b.experiment_id()) == registry.get(strategy).micro_batches, strategy
    ddp = ExperimentConfig(strategy="ddp")
    assert dataclasses.replace(ddp, chunks=8).experiment_id() == ddp.experiment_id()
    assert dataclasses.replace(ddp, schedule="gpipe").experiment_id() == ddp.experiment_id()
    pipe = ExperimentConfig(strategy="pipeline", nodes=2)
    assert dataclasses.replace(pipe, chunks=8).experiment_id() != pipe.experiment_id()
    assert dataclasses.replace(pipe, schedule="gpipe").experiment_id() != pipe.experiment_id()


def test_grid_ids_are_unique():
    exps = grid.expand(ExperimentConfig(global_batch=64, steps=6),
                       {"strategy": list(registry.NAMES), "nodes": [1, 2, 4], "chunks": [2, 4, 8]}, 2)
    ids = [e.id for e in exps]
    assert len(ids) == len(set(ids)) and len(ids) > 3 * len(registry.NAMES)
    assert all(e.id == e.config.experiment_id() for e in exps)


@pytest.mark.parametrize("kw, word", [
    ({"global_batch": 5000, "dataset": "digits"}, "invalid global_batch 5000"),
    ({"global_batch": TRAIN_SAMPLES["synthetic"] + 1}, f"invalid global_batch {TRAIN_SAMPLES['synthetic'] + 1}"),
    ({"bandwidth_gbps": 0.0}, "invalid bandwidth_gbps 0.0"),
    ({"bandwidth_gbps": 0.0, "link": "10gbe", "nodes": 2, "strategy": "ddp"}, "invalid bandwidth_gbps 0.0"),
])
def test_refused_in_one_line(kw, word):
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(**kw))
    assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_largest_global_batch_of_each_data_set_is_valid():
    for dataset, samples in TRAIN_SAMPLES.items():
        if dataset != "cifar10":  # its files' count, when they are there: tests/unit/test_cifarfiles.py
            validate(ExperimentConfig(dataset=dataset, global_batch=samples))


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
    exps = grid.expand(ExperimentConfig(), {"strategy": ["single", "ddp", "ps"], "nodes": [1, 2]})
    skipped = {e.id for e in exps if e.skipped}
    assert skipped == {"single-n2-p1-b64-r0", "ps-n1-p1-b64-r0"}
    assert [e.id for e in exps if not e.skipped] == ["single-n1-p1-b64-r0", "ddp-n1-p1-b64-r0",
                                                     "ddp-n2-p1-b64-r0", "ps-n2-p1-b64-r0"]


def test_weak_scaling_grows_the_global_batch():
    exps = grid.expand(ExperimentConfig(global_batch=32), {"strategy": ["ddp"], "nodes": [1, 2, 4]}, scaling="weak")
    assert [e.config.global_batch for e in exps] == [32, 64, 128]



def test_repeats_are_the_outer_loop():
    exps = grid.expand(ExperimentConfig(), {"strategy": ["ddp", "ring"], "nodes": [1, 2]}, 2)
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
