"""One typed experiment config, validated in one place.

Torch-free on purpose: `bin/sweep` imports it to validate a whole grid in milliseconds,
before anything is submitted. Every flag of every trainer comes from `FIELDS` below, so
the trainers, the sweep and the Slurm templates cannot disagree on names or defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from contract import cifarfiles, registry, usermodel
from contract.errors import OneLineParser, require
from contract.registry import NAMES as STRATEGIES
from contract.tables import (
    ATTENTION_MODELS,
    BALANCE_KEYWORDS,
    DATASETS,
    DEVICES,
    GPIPE_CHECKPOINTS,
    LINKS,
    MODEL_BLOCKS,
    MODELS,
    OPTIMIZERS,
    OUTER_OPTIMIZERS,
    PRECISIONS,
    RECOMPUTE,
    SCHEDULES,
    SEQUENCE_PARALLEL,
    SHARDS,
    SYNC_OPTIM,
    TRAIN_SAMPLES,
    link_figures,
)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
FAULT_RE = re.compile(r"^(raise|kill)@(\d+):(\d+)$")


# fp16's loss scaling exists for GPU kernels; a run without a GPU is refused (device auto: by the trainer).
def fp16_on_cpu(device: str = "cpu") -> str:
    """The refusal of fp16 without a GPU; `device`: how the device was chosen."""
    return f"invalid precision fp16 on device {device}: fp16 (with loss scaling) is for GPUs; on CPU use bf16"


def setting(default: Any, flag: str, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, **kw})


@dataclass
class ExperimentConfig:
    strategy: str = setting("single", "--strategy", "parallelism strategy", choices=STRATEGIES)
    nodes: int = setting(1, "--nodes", "number of nodes")
    procs_per_node: int = setting(1, "--procs-per-node", "ranks per node")
    model: str = setting("mlp", "--model", f"model: {', '.join(MODELS)}, or your own as module:function (usermodel.py)")
    dataset: str = setting("synthetic", "--dataset", "data set", choices=DATASETS)
    data_size: int = setting(0, "--data-size", "training samples used: the first N of the training set (0: all)")
    data_dir: str = setting("data", "--data-dir", "where real data sets live (cifar10)")
    steps: int = setting(20, "--steps", "optimizer steps (0: use --epochs)")
    epochs: int = setting(0, "--epochs", "epochs, used when --steps is 0")
    global_batch: int = setting(64, "--global-batch", "samples per optimizer step over all data-parallel ranks")
    chunks: int = setting(4, "--chunks", "micro-batches per step (pipeline strategies)")
    micro_batch: int = setting(0, "--micro-batch", "samples a rank computes at once: gradients accumulate over its "
                               "share (pipelines: sets the chunks); 0: the whole share (pipelines: --chunks)")
    schedule: str = setting("1f1b", "--schedule", "pipeline schedule", choices=SCHEDULES)
    stages: int = setting(0, "--stages", "pipeline stages (0: automatic)")
    balance: str = setting("", "--balance", "blocks per stage, e.g. 3,3, or params / time (empty: by parameter count)")
    gpipe_checkpoint: str = setting("never", "--checkpoint", "torchgpipe activation checkpointing",
                               choices=GPIPE_CHECKPOINTS)
    recompute: str = setting("none", "--recompute", "activation recomputation per block: full, or selective (the "
                             "attention core only)", choices=RECOMPUTE)
    precision: str = setting("fp32", "--precision", "autocast precision", choices=PRECISIONS)
    optimizer: str = setting("sgd", "--optimizer", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(0.05, "--lr", "learning rate")
    sync_every: int = setting(1, "--sync-every", "localsgd: local steps between two averages of the replicas (H)")
    outer: str = setting("sgd", "--outer", "localsgd: outer optimizer on the averaged change (nesterov: DiLoCo)",
                      choices=OUTER_OPTIMIZERS)
    outer_lr: float = setting(1.0, "--outer-lr", "localsgd: outer learning rate (sgd at 1: plain averaging)")
    sync_optim: str = setting("keep", "--sync-optim", "localsgd: optimizer state kept per replica or averaged too",
                           choices=SYNC_OPTIM)
    staleness: int = setting(0, "--staleness", "asyncps: server versions a worker's parameters may lag (0: ps)")
    sequence_parallel: str = setting("on", "--sequence-parallel", "tp: LayerNorms on a slice of the sequence",
                                     choices=SEQUENCE_PARALLEL)
    tp: int = setting(1, "--tp", "mix: tensor-parallel ranks inside each stage (a TP group stays in a node)")
    pp: int = setting(1, "--pp", "mix: pipeline stages (dp = world / (tp x pp))")
    shard: str = setting("none", "--shard", "mix: over dp, replicas (none), ZeRO-1 (optim) or FSDP2 (full)",
                         choices=SHARDS)
    seed: int = setting(0, "--seed", "seed: same seed, same weights and data order on every strategy")
    repeat: int = setting(0, "--repeat", "repetition index (part of the experiment id)")
    warmup: int = setting(2, "--warmup", "steps flagged as warm-up and left out of timing summaries")
    device: str = setting("auto", "--device", "device kind", choices=DEVICES)
    link: str = setting("loopback", "--link", "interconnect emulated between simulated nodes",
                   choices=tuple(LINKS))
    latency_us: float = setting(-1.0, "--latency-us", "emulated link latency in microseconds (-1: the link preset's)")
    bandwidth_gbps: float = setting(-1.0, "--bandwidth-gbps", "emulated link bandwidth in Gbit/s (-1: preset's)")
    memory_fraction: float = setting(-1.0, "--memory-fraction",
                                "GPU memory fraction per rank, in (0, 1] (-1: even split with head-room)")
    checkpoint_every: int = setting(0, "--checkpoint-every", "steps between checkpoints (0: off)")
    fault: str = setting("", "--fault", "inject a fault: raise@R:S or kill@R:S")
    save_params: bool = setting(False, "--save-params", "write the final parameters to params.pt (rank 0)")
    run_dir: str = setting("", "--run-dir", "directory for this experiment's logs")

    # ---- derived values -------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def strategy_record(self) -> registry.Strategy:
        return registry.get(self.strategy)

    @property
    def pipeline_stages(self) -> int:
        """Stages of a staged strategy (1 for the others)."""
        record = self.strategy_record
        return record.stages(self.nodes, self.procs_per_node, getattr(self, record.stage_setting))

    @property
    def dp_size(self) -> int:
        """Ranks that each read a different slice of the global batch."""
        return self.strategy_record.dp_size(self.nodes, self.procs_per_node, self.pipeline_stages, self.tp)

    @property
    def replica_batch(self) -> int:
        """Samples of one data-parallel rank's share of the global batch."""
        return self.global_batch // max(self.dp_size, 1)

    @property
    def micro_batches(self) -> int:
        """Micro-batches a rank cuts its share into each step: a pipeline's chunks (--micro-batch, where
        given, sets them), the others' gradient-accumulation steps (1 without --micro-batch)."""
        if self.micro_batch > 0:
            return max(self.replica_batch // self.micro_batch, 1)
        return self.chunks if self.strategy_record.micro_batches else 1

    def normalised(self) -> ExperimentConfig:
        """The same experiment in its one spelling: a pipeline's --micro-batch folded into its chunks, a
        micro-batch of the whole share written 0, a mixture's shard mode over one replica written none
        (there is nothing to shard: the trainer runs it as none). A config that does not divide is left as it is."""
        if self.strategy_record.kind == "mixture" and self.shard != "none" and self.dp_size == 1:
            return dataclasses.replace(self, shard="none").normalised()
        b, share = self.micro_batch, self.replica_batch
        if b <= 0 or share % b or self.global_batch % max(self.dp_size, 1):
            return self
        if self.strategy_record.micro_batches:
            return dataclasses.replace(self, chunks=share // b, micro_batch=0)
        return dataclasses.replace(self, micro_batch=0) if b == share else self

    @property
    def dataset_samples(self) -> int:
        """Training samples of the whole data set: for cifar10 what its files hold where they are
        (a partial file set is another experiment), else the table's figure."""
        if self.dataset == "cifar10":
            if not cifarfiles.missing(self.data_dir):
                return cifarfiles.train_samples(self.data_dir)
        return TRAIN_SAMPLES[self.dataset]

    @property
    def train_samples(self) -> int:
        """Training samples this run uses: `data_size`, or the whole training set."""
        return self.data_size or self.dataset_samples

    @property
    def link_latency_us(self) -> float:
        return link_figures(self.link, self.latency_us, self.bandwidth_gbps)[0]

    @property
    def link_bandwidth_gbps(self) -> float:
        return link_figures(self.link, self.latency_us, self.bandwidth_gbps)[1]

    def fault_spec(self) -> tuple[str, int, int] | None:
        m = FAULT_RE.match(self.fault)
        return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None

    def balance_list(self) -> list[int]:
        """Explicit blocks per stage; [] for automatic balance (empty, params, time)."""
        if not self.balance or self.balance in BALANCE_KEYWORDS:
            return []
        items = self.balance.split(",")
        require(all(b.strip().isdigit() for b in items), f"invalid balance {self.balance!r}: use a comma "
                 f"list of block counts, e.g. 3,3, or one of {', '.join(BALANCE_KEYWORDS)}")
        return [int(b) for b in items]

    def applies(self, name: str) -> bool:
        """Whether setting `name` can change this experiment (chunks cannot for ddp); a sweep keeps
        the base's value of a setting that does not apply, so it never splits one experiment in two."""
        record = self.strategy_record
        if name in NOT_IDENTITY:
            return False
        if name == "chunks":
            return record.micro_batches
        if name == "schedule":
            return record.scheduled
        if name in ("stages", "balance", "gpipe_checkpoint"):
            return record.kind == "staged" or (name == "balance" and record.kind == "mixture")  # mix: --pp
        if name == "recompute":
            return not record.no_recompute
        return name not in OWN_SETTINGS or name in record.settings

    def identity(self) -> dict[str, Any]:
        """Every setting that changes this experiment's results, and nothing else: two runs with
        the same identity are the same experiment. Settings a strategy ignores are left out
        (chunks for ddp), so they never split one experiment in two; two spellings of one
        experiment are written one way (`normalised`: a pipeline's micro-batch is its chunks)."""
        c = self.normalised()
        out = {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if c.applies(f.name)}
        if c.strategy_record.micro_batches:
            del out["micro_batch"]  # its chunks say it
        whole = self.dataset_samples
        if out["data_size"] in (0, whole):  # the whole training set, named or not, is one experiment; and
            out["data_size"] = 0 if whole == TRAIN_SAMPLES[self.dataset] else whole  # a partial cifar10 set, another
        return out

    def experiment_id(self) -> str:
        """Readable and complete: the layout, then every identity setting that is not at its
        default (so ids of experiments that differ in anything that matters differ), then the
        repeat index."""
        ident = self.identity()
        parts = [self.strategy, f"n{self.nodes}", f"p{self.procs_per_node}", f"b{self.global_batch}"]
        if "chunks" in ident:
            parts.append(f"c{ident['chunks']}")
        if "schedule" in ident:
            parts.append(self.schedule)
        defaults = ExperimentConfig()
        for name, value in ident.items():
            if name in ID_FIXED or value == getattr(defaults, name):
                continue
            parts.append(_id_token(name, value))
        parts.append(f"r{self.repeat}")
        return "-".join(parts)

    # ---- (de)serialisation ---------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_argv(self) -> list[str]:
        """Flags that reproduce this config on a trainer's command line."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "strategy" or (f.name == "run_dir" and not value):
                continue  # the trainer file is the strategy; an empty run dir means the default
            if f.type == "bool" or isinstance(value, bool):
                if value:
                    argv.append(f.metadata["flag"])
            else:
                argv += [f.metadata["flag"], str(value)]
        return argv


# Settings that change nothing a run measures: where files go, when to checkpoint.
NOT_IDENTITY = ("run_dir", "save_params", "checkpoint_every", "data_dir")
# Settings only some strategies take (registry: Strategy.settings); left out of the others' identity.
OWN_SETTINGS = frozenset(name for s in registry.REGISTRY.values() for name in s.settings)
# Always in the id, in its first part.
ID_FIXED = ("strategy", "nodes", "procs_per_node", "global_batch", "chunks", "schedule", "repeat")
# Short prefixes for numbers in ids; a word value (cnn, adam, 10gbe) stands for itself.
ID_PREFIX = {"data_size": "d", "steps": "s", "epochs": "e", "lr": "lr", "seed": "seed", "warmup": "w", "stages": "k",
             "balance": "bal", "latency_us": "lat", "bandwidth_gbps": "bw", "memory_fraction": "mf",
             "gpipe_checkpoint": "ckpt", "fault": "fault", "sync_every": "h",
             "outer_lr": "olr", "sync_optim": "optim", "staleness": "stale", "sequence_parallel": "sp",
             "micro_batch": "mb", "recompute": "rc", "tp": "tp", "pp": "pp", "shard": "shard"}


def _id_token(name: str, value: Any) -> str:
    text = str(value)
    if isinstance(value, float):  # shortest text that reads back as the same float: no two values share one
        text = text.removesuffix(".0").replace("e-", "em").replace("e+", "e")
    text = re.sub(r"[^A-Za-z0-9._]+", ".", text).strip(".")  # keeps module_names: module:function stays one-to-one
    return f"{ID_PREFIX[name]}{text}" if name in ID_PREFIX else text


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'name: old -> new' for every identity setting that differs. A setting missing on one side
    reads as its default: a run made before the setting existed ran at its default."""
    defaults = ExperimentConfig().to_dict()
    a, b = ({k: d.get(k, defaults.get(k)) for k in set(old) | set(new)} for d in (old, new))
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a) if a[k] != b[k]]


def check_name(kind: str, value: str) -> str:
    """A name that reaches paths and shells: letters, digits, '.', '_', '-'; no '..'."""
    require(bool(SAFE_NAME.match(value)) and ".." not in value,
             f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' only (no '/', '..' or spaces)")
    return value


def validate(c: ExperimentConfig, check_layout: bool = True) -> None:
    """Every rule about a single experiment, in one place. Raises ConfigError. `check_layout`
    False leaves out the layout rules (a grid first asks whether the strategy can run there)."""
    for name, choices in (("strategy", STRATEGIES), ("dataset", DATASETS),
                          ("schedule", SCHEDULES), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                          ("device", DEVICES), ("link", tuple(LINKS)),
                          ("gpipe_checkpoint", GPIPE_CHECKPOINTS), ("outer", OUTER_OPTIMIZERS),
                          ("sync_optim", SYNC_OPTIM), ("sequence_parallel", SEQUENCE_PARALLEL),
                          ("recompute", RECOMPUTE), ("shard", SHARDS)):
        value = getattr(c, name)
        require(value in choices, f"unknown {name} {value!r}: choose from {', '.join(choices)}")
    usermodel.check(c.model)  # a built-in name, or module:function (its function's blocks: at build)
    for name in ("nodes", "procs_per_node", "global_batch", "chunks", "sync_every", "tp", "pp"):
        require(getattr(c, name) >= 1, f"invalid {name} {getattr(c, name)!r}: must be >= 1")
    for name in ("data_size", "steps", "epochs", "warmup", "checkpoint_every", "seed", "repeat", "stages",
                 "staleness", "micro_batch"):
        require(getattr(c, name) >= 0, f"invalid {name} {getattr(c, name)!r}: must be >= 0")
    require(c.steps > 0 or c.epochs > 0, "invalid steps 0: give --steps >= 1 or --epochs >= 1")
    require(c.lr > 0, f"invalid lr {c.lr!r}: must be > 0")
    require(c.outer_lr > 0, f"invalid outer_lr {c.outer_lr!r}: must be > 0")
    require(c.precision != "fp16" or c.device != "cpu", fp16_on_cpu())
    require(c.precision != "fp16" or not c.strategy_record.no_fp16,
             f"invalid precision fp16 for {c.strategy}: {c.strategy_record.no_fp16}; use bf16")
    require(0 < c.memory_fraction <= 1 or c.memory_fraction == -1.0,
             f"invalid memory_fraction {c.memory_fraction!r}: must be in (0, 1] (leave it out for an even split)")
    require(c.latency_us >= 0 or c.latency_us == -1.0, f"invalid latency_us {c.latency_us!r}: must be >= 0")
    require(c.bandwidth_gbps > 0 or c.bandwidth_gbps == -1.0,
             f"invalid bandwidth_gbps {c.bandwidth_gbps!r}: must be > 0 Gbit/s (leave it out for the link "
             "preset's; LINK=loopback emulates nothing)")
    # cifar10: refused without its files, else their count (TRAIN_SAMPLES has the full set's)
    samples = cifarfiles.train_samples(c.data_dir) if c.dataset == "cifar10" else TRAIN_SAMPLES[c.dataset]
    require(c.data_size <= samples, f"invalid data_size {c.data_size}: larger than the {samples} training "
             f"samples of dataset {c.dataset} (0: all of them)")
    require(c.global_batch <= (c.data_size or samples), f"invalid global_batch {c.global_batch}: larger than the "
             + (f"data_size {c.data_size} (one step takes a whole global batch)" if c.data_size
                else f"{samples} training samples of dataset {c.dataset}"))
    if c.fault:
        spec = c.fault_spec()
        require(spec is not None, f"invalid fault {c.fault!r}: use raise@RANK:STEP or kill@RANK:STEP")
        assert spec is not None
        require(spec[1] < c.world_size, f"invalid fault {c.fault!r}: rank {spec[1]} >= world size {c.world_size}")
    if c.recompute != "none":
        require(not c.strategy_record.no_recompute, f"invalid recompute {c.recompute} for {c.strategy}: "
                 f"{c.strategy_record.no_recompute}")
    if c.recompute == "selective" and not usermodel.is_reference(c.model):  # a module:function model: once built
        require(c.model in ATTENTION_MODELS, f"invalid recompute selective for model {c.model}: it recomputes "
                 f"the attention core only, and {c.model} has no attention; use --recompute full")
    if c.model == "transformer":
        require(c.dataset == "synthetic", f"invalid dataset {c.dataset!r} for transformer: it needs "
                 "token data (dataset synthetic)")
    if check_layout:
        _validate_layout(c)


def layout(c: ExperimentConfig, gpus: int | None = None) -> registry.Layout:
    # A module:function model's blocks are counted once built (stages.resolve_balance checks them there).
    blocks = {"blocks": MODEL_BLOCKS[c.model]} if c.model in MODEL_BLOCKS else {}
    return registry.Layout(c.nodes, c.procs_per_node, c.pipeline_stages, gpus=gpus, model=c.model, tp=c.tp, **blocks)


def _validate_layout(c: ExperimentConfig) -> None:
    record = c.strategy_record
    refusal = record.refusal(layout(c))
    require(refusal is None, f"invalid layout for {c.strategy}: {refusal}")
    if record.computing_ranks == "workers":
        require(c.global_batch >= c.dp_size, f"invalid global_batch {c.global_batch}: {c.strategy} needs at "
                 f"least one sample per worker ({c.dp_size})")
    elif c.dp_size > 1:
        require(c.global_batch % c.dp_size == 0, f"invalid global_batch {c.global_batch}: not divisible by "
                 f"the {c.dp_size} data-parallel ranks of {c.strategy}")
    if record.kind in ("staged", "mixture"):
        k, w = c.pipeline_stages, c.world_size
        if record.stage_replicas:
            require(w % k == 0, f"invalid stages {k} for {c.strategy}: must divide the world size {w}")
        elif record.max_world is None:  # one stage per rank
            require(k == w, f"invalid stages {k} for {c.strategy}: one stage per rank, world size is {w}")
        bal = c.balance_list() if c.balance else []
        if bal:
            require(len(bal) == k and all(b >= 1 for b in bal),
                     f"invalid balance {c.balance!r}: need {k} positive block counts")
            blocks = MODEL_BLOCKS.get(c.model, sum(bal))  # a module:function model's: checked once built
            require(sum(bal) == blocks, f"invalid balance {c.balance!r}: covers {sum(bal)} blocks, "
                     f"model {c.model} has {blocks}")
    if c.micro_batch:
        _validate_micro_batch(c)
    elif record.micro_batches:
        per_replica = c.global_batch // c.dp_size
        require(per_replica % c.chunks == 0, f"invalid global_batch {c.global_batch}: not divisible by "
                 f"chunks x data-parallel ranks ({c.chunks} x {c.dp_size})")


def _validate_micro_batch(c: ExperimentConfig) -> None:
    """--micro-batch B cuts each rank's share into micro-batches of B: B must divide it; a pipeline's
    --chunks, where not at its default, must say the same count."""
    b, share, dp = c.micro_batch, c.replica_batch, c.dp_size
    require(c.global_batch % dp == 0 and share % b == 0, f"invalid micro_batch {b}: must divide the rank's share "
             f"of the global batch ({c.global_batch} / {dp} data-parallel ranks = {c.global_batch / dp:g} samples)")
    default = next(f.default for f in dataclasses.fields(c) if f.name == "chunks")
    require(not c.strategy_record.micro_batches or c.chunks in (default, share // b),
             f"invalid chunks {c.chunks} with micro_batch {b}: {share} samples per rank in micro-batches of {b} "
             f"are {share // b} chunks; give one of --chunks, --micro-batch")


# ---- command line ---------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per config field (the trainers' command line)."""
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in skip:
            continue
        flag, help_ = f.metadata["flag"], f.metadata["help"]
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=type(f.default), default=f.default,
                                help=f"{help_} (default: {f.default!r})")


def parse_trainer_args(argv: list[str] | None, strategy: str) -> ExperimentConfig:
    parser = OneLineParser(prog=f"trainers.{strategy}", description=f"torchswitch trainer: {strategy}")
    add_arguments(parser)
    ns = parser.parse_args(argv)
    ns.strategy = strategy
    cfg = ExperimentConfig(**vars(ns))
    validate(cfg)
    return cfg

