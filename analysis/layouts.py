"""A run's layout as the answer names it, and the label a candidate goes by. Torch-free.

A layout: its data-, tensor- and pipeline-parallel degrees (dp, tp, pp), what it shards over the
data-parallel ranks (none | optim | full), what it recomputes in backward (none | selective | full),
its micro-batch (0: the rank's whole share) and, for a scheduled strategy, its pipeline schedule.
The label: the strategy with the parts that are off their defaults, e.g. `mix[dp=2,tp=2,pp=2,shard=full]`,
`ddp[recompute=selective]`, `pipeline[schedule=gpipe]`, `localsgd[sync_every=4]`; "" when none is.

Everything is asked of the registry (a strategy's own `settings`, its kind, what it shards, whether
it is scheduled) and of the config's fields; no strategy is named here. A strategy whose own settings
include a parallel degree (DEGREES) lays its ranks out as tp x pp x dp: dp = world / (tp x pp), and
its label shows dp with them. Any other strategy's degrees are its kind's (tensor: tp = world, dp 1;
staged: pp = its stages) and dp the registry's; they are not in its label (the node count says them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from contract import registry
from contract.config import ExperimentConfig

DEGREES = frozenset({"tp", "pp"})  # settings that are a parallel degree of the layout
# Settings every strategy takes: not in any one strategy's `settings`, in every label where set.
COMMON = ("recompute", "micro_batch")
# What a config.json without the field ran at (an older run), where contract/config.py has no such field.
ABSENT = {"tp": 1, "pp": 1, "shard": "none", "recompute": "none", "micro_batch": 0}
_FIELDS = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}


def default(name: str) -> Any:
    """A setting's default: the config's, else what a run without the field ran at (None if unknown)."""
    return _FIELDS.get(name, ABSENT.get(name))


def value(settings: Mapping[str, Any], name: str) -> Any:
    """`name` in `settings` (a config's fields, a summary row), its default where missing or empty."""
    v = settings.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return default(name)
    return int(v) if isinstance(v, float) and v.is_integer() else v


def columns(names: list[str]) -> list[str]:
    """Of a summary's column names, those that hold a layout setting (any strategy's own, or COMMON)."""
    own = {k for record in registry.REGISTRY.values() for k in record.settings}
    return [c for c in names if c in own or c in COMMON]


def lays_out_degrees(strategy: str) -> bool:
    """Whether the strategy takes its degrees as settings (tp x pp x dp)."""
    return bool(DEGREES & set(registry.get(strategy).settings))


def degrees(strategy: str, world: int, settings: Mapping[str, Any], stages: int = 1) -> tuple[int, int]:
    """(tp, pp) of a run on `world` ranks; `stages`: what a staged strategy runs (the experiments table's)."""
    record = registry.get(strategy)
    tp = int(value(settings, "tp")) if "tp" in record.settings else (world if record.kind == "tensor" else 1)
    pp = int(value(settings, "pp")) if "pp" in record.settings else max(int(stages), 1)
    return tp, pp


def dp_at(strategy: str, nodes: int, procs: int, settings: Mapping[str, Any]) -> int:
    """Data-parallel ranks of the strategy at these settings on nodes x procs ranks (at any node count:
    the projection's)."""
    record = registry.get(strategy)
    if lays_out_degrees(strategy):
        tp, pp = degrees(strategy, nodes * procs, settings)
        return max(nodes * procs // (tp * pp), 1)
    return record.dp_size(nodes, procs, record.stages(nodes, procs))


def tp_at(strategy: str, world: int, settings: Mapping[str, Any]) -> int:
    """Ranks one layer is cut over: a rank computes 1/tp of its data-parallel slice's work."""
    return degrees(strategy, world, settings)[0]


def layout(strategy: str, settings: Mapping[str, Any], world: int, dp: int, stages: int = 1) -> dict:
    """The layout of a run: dp, tp, pp, shard, recompute, micro_batch, schedule (None: not scheduled)."""
    record = registry.get(strategy)
    tp, pp = degrees(strategy, world, settings, stages)
    if "shard" in record.settings:
        shard = str(value(settings, "shard"))
    else:  # what the strategy itself shards over its data-parallel ranks
        shard = "full" if "params" in record.shards else "optim" if "optim" in record.shards else "none"
    return {"dp": int(dp), "tp": tp, "pp": pp, "shard": shard, "recompute": str(value(settings, "recompute")),
            "micro_batch": int(value(settings, "micro_batch")),
            "schedule": str(value(settings, "schedule")) if record.scheduled else None}


def label(strategy: str, settings: Mapping[str, Any], dp: int | None = None) -> str:
    """The strategy with its own settings, the COMMON ones and its schedule where off their defaults;
    dp first where a degree is shown (a projection's series, fitted over node counts, passes no dp)."""
    record = registry.get(strategy)
    names = [*record.settings, *COMMON, *(["schedule"] if record.scheduled else [])]
    parts = {k: value(settings, k) for k in names if value(settings, k) != default(k)}
    if dp is not None and DEGREES & set(parts):
        parts = {"dp": dp, **parts}
    return f"{strategy}[{','.join(f'{k}={v}' for k, v in parts.items())}]" if parts else ""


def describe(lay: Mapping[str, Any]) -> str:
    """A layout in words: `dp 2 x tp 2 x pp 2, shard full, recompute none, micro-batch whole share, 1f1b`."""
    micro = lay.get("micro_batch") or 0
    words = [f"dp {lay['dp']} x tp {lay['tp']} x pp {lay['pp']}", f"shard {lay['shard']}",
             f"recompute {lay['recompute']}", f"micro-batch {micro if micro else 'whole share'}"]
    if lay.get("schedule"):
        words.append(f"schedule {lay['schedule']}")
    return ", ".join(words)
