"""The tables every side reads: models, data sets, choices, and the interconnect presets.

Each fact here once: the config validates against these, the trainers build from them, the
planner and the projection read them.
"""

from __future__ import annotations

MODELS = ("mlp", "cnn", "resnet18", "resnet50", "transformer")
# Blocks in each model's nn.Sequential (trainers/common/models.py; tests/unit/test_layouts.py
# checks the table), so "more stages than blocks" fails at validation, before anything starts.
MODEL_BLOCKS = {"mlp": 6, "cnn": 6, "resnet18": 10, "resnet50": 18, "transformer": 6}
# What tp cuts (trainers/common/models.py): the world size must divide each. mlp: hidden width;
# transformer: heads, dim, MLP width, sequence length (sequence parallelism).
TP_WIDTHS = {"mlp": (256,), "transformer": (4, 128, 512, 32)}
# --recompute: activation checkpointing per block (trainers/common/recompute.py); selective drops the attention
# core only, so it takes the models with attention (a module:function model: checked once built).
RECOMPUTE = ("none", "full", "selective")
ATTENTION_MODELS = ("transformer",)
SHARDS = ("none", "optim", "full")  # mix: what is split over the dp ranks (replicas, ZeRO-1, FSDP2)
SEQUENCE_PARALLEL = ("on", "off")  # tp: LayerNorms on a slice of the sequence (torchtitan's layouts)
BALANCE_KEYWORDS = ("params", "time")  # --balance by parameter count (default) / measured time
DATASETS = ("synthetic", "digits", "cifar10")
# Training samples of each data set (trainers/common/data.py builds them; a test checks the table),
# so a global batch larger than the data set fails at validation, not inside every rank.
TRAIN_SAMPLES = {"synthetic": 2048, "digits": 1500, "cifar10": 50000}
SCHEDULES = ("gpipe", "1f1b")
PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
GPIPE_CHECKPOINTS = ("always", "except_last", "never")
OUTER_OPTIMIZERS = ("sgd", "nesterov")  # localsgd's outer step on the averaged change (DiLoCo: nesterov)
SYNC_OPTIM = ("keep", "average")  # localsgd: each replica keeps its optimizer state, or it is averaged too
SCALINGS = ("strong", "weak")  # a sweep's global batch: fixed (the default, first), or growing with the nodes

# Interconnect presets: (one-way latency in microseconds, bandwidth in Gbit/s).
# Figures are typical vendor/measured numbers for a single link, not a promise.
LINKS: dict[str, tuple[float, float]] = {
    "loopback": (0.0, 0.0),  # 0 bandwidth = not emulated
    "10gbe": (25.0, 10.0),
    "100gbe": (5.0, 100.0),
    "ib-hdr": (1.5, 200.0),
    "nvlink": (1.0, 2400.0),  # NVLink 3 (A100): 300 GB/s each way per GPU
    "nvlink4": (1.0, 3600.0),  # NVLink 4 (H100/H200): 900 GB/s both ways = 450 GB/s each way per GPU
    "ib-ndr": (1.5, 400.0),  # InfiniBand NDR, one port
}
# GPU presets of the layout search (analysis/layout_search.py): (memory in bytes, dense bf16 peak in
# FLOP/s, intra-node link, inter-node link: one NIC of that link per GPU, as on DGX A100 / H100).
GPUS: dict[str, tuple[int, float, str, str]] = {
    "a100": (80 * 2**30, 312e12, "nvlink", "ib-hdr"),
    "h100": (80 * 2**30, 989e12, "nvlink4", "ib-ndr"),
    "h200": (141 * 2**30, 989e12, "nvlink4", "ib-ndr"),
}
UNSET = -1.0  # --latency-us / --bandwidth-gbps left out: the preset's figure


def link_figures(link: str, latency_us: float = UNSET, bandwidth_gbps: float = UNSET) -> tuple[float, float]:
    """(latency in us, bandwidth in Gbit/s) of `link`, each overridden where given (>= 0).
    The one conversion of a link preset and its overrides; bandwidth 0 means not emulated."""
    preset_lat, preset_bw = LINKS[link]
    return (latency_us if latency_us >= 0 else preset_lat, bandwidth_gbps if bandwidth_gbps >= 0 else preset_bw)


def wire_units(latency_us: float, bandwidth_gbps: float) -> tuple[float, float]:
    """Link figures in the units a wire model computes with: (latency in s, bandwidth in bytes/s;
    0 stays 0: not emulated). The emulation (trainers/common/traffic.py) and the projection take them."""
    return latency_us * 1e-6, bandwidth_gbps * 1e9 / 8


def link_wire(link: str, latency_us: float = UNSET, bandwidth_gbps: float = UNSET) -> tuple[float, float]:
    """`link_figures` in `wire_units`."""
    return wire_units(*link_figures(link, latency_us, bandwidth_gbps))
