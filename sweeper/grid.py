"""Sweep grids: lists of settings -> validated experiments with stable ids. Torch-free.

Any identity setting can be an axis (`AXES`): a grid is the product of its axes, with the
repeats as the outer loop. A grid value that no experiment can ever run (a strategy that runs
in one process, at several nodes) becomes a *skipped* experiment with its reason; any other
bad value is a `ConfigError` (exit 2) before anything is written or submitted.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contract.config import NOT_IDENTITY, ExperimentConfig, layout, validate
from contract.errors import ConfigError
from contract.registry import NAMES as STRATEGIES
from contract.tables import SCALINGS

FIELD_TYPES = {f.name: type(f.default) for f in dataclasses.fields(ExperimentConfig)}
# Settings a sweep can vary: every identity setting but the repeat (its own, outer loop) and the
# balance (its one value is a comma list already). Loops nest in this order, strategy outermost.
AXES = tuple(name for name in FIELD_TYPES if name not in (*NOT_IDENTITY, "repeat", "balance"))
TYPE_WORDS = {int: "integers", float: "numbers", str: "words"}


def parse_values(name: str, raw: Any) -> list:
    """An axis's values: a comma list (the command line) or a YAML value or list -> typed values,
    duplicates dropped, order kept. `strategy` also takes `all`."""
    if name not in FIELD_TYPES or name not in AXES:
        raise ConfigError(f"invalid axis {name!r}: choose from {', '.join(AXES)}")
    kind = FIELD_TYPES[name]
    items = [x.strip() for x in raw.split(",")] if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
    if name == "strategy" and items == ["all"]:
        return list(STRATEGIES)
    values = [parse_value(name, kind, item, raw) for item in items]
    if not values:
        raise ConfigError(f"invalid {name} {raw!r}: an empty list")
    for value in values if name == "strategy" else []:  # the rest is validate()'s; a strategy's traits come first
        if value not in STRATEGIES:
            raise ConfigError(f"unknown strategy {value!r}: choose from {', '.join(STRATEGIES)} or all")
    return list(dict.fromkeys(values))


def parse_value(name: str, kind: type, item: Any, raw: Any = None) -> Any:
    """One value of type `kind` (int, float, str) from a flag's text or a YAML value; `raw`: the
    whole value it came from, for the message. A number stands for a word where a word goes."""
    raw = item if raw is None else raw
    bad = ConfigError(f"invalid {name} {raw!r}: expected {TYPE_WORDS[kind]}"
                      + (", a comma list of them is a sweep axis" if isinstance(raw, str) else ""))
    if isinstance(item, (bool, list, dict)) or item is None or item == "":
        raise bad
    if isinstance(item, str) and kind is not str:
        try:
            return kind(item)
        except ValueError:
            raise bad from None
    if kind is int and not isinstance(item, int):
        raise bad
    return kind(item)


def parse_int_list(name: str, text: str, minimum: int = 1) -> list[int]:
    values = [parse_value(name, int, item.strip(), text) for item in str(text).split(",")]
    for value in values:
        if value < minimum:
            raise ConfigError(f"invalid {name} {text!r}: {value} is below {minimum}")
    return list(dict.fromkeys(values))


def parse_strategies(text: str) -> list[str]:
    return parse_values("strategy", text)


def parse_layouts(raw: Any) -> list[tuple[int, int]]:
    """'1x4,4x1' (or a YAML list of such words) -> [(nodes, procs), ...]."""
    items = [x.strip() for x in raw.split(",")] if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        nodes, _, procs = str(item).partition("x")
        if not (isinstance(item, str) and nodes.isdigit() and procs.isdigit() and int(nodes) and int(procs)):
            raise ConfigError(f"invalid layouts {raw!r}: expected NODESxPROCS words, e.g. 1x4,4x1")
        out.append((int(nodes), int(procs)))
    return list(dict.fromkeys(out))


def gpu_count() -> int:
    """GPUs on this machine without importing torch (nvidia-smi), 0 when none answers."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def skip_reason(cfg: ExperimentConfig, gpus: int | None) -> str | None:
    """Why this grid point cannot run at all (not a user error: a property of the strategy)."""
    return cfg.strategy_record.refusal(layout(cfg, gpus))


@dataclass
class Experiment:
    id: str
    config: ExperimentConfig
    skipped: str | None = None

    def describe(self) -> dict:
        return {"id": self.id, "skipped": self.skipped, **{k: getattr(self.config, k) for k in (
            "strategy", "nodes", "procs_per_node", "global_batch", "chunks", "schedule", "repeat")}}


Axes = Mapping[str | tuple[str, ...], Sequence[Any]]


def expand(base: ExperimentConfig, axes: Axes, repeats: int = 1, scaling: str = SCALINGS[0],
           gpus: int | None = None) -> list[Experiment]:
    """The product of `axes` x repeats. An axis is a field name with its values, or a tuple of
    names with one tuple of values each (("nodes", "procs_per_node"): [(1, 4), (4, 1)]: layouts
    side by side rather than every product). Axes nest in `AXES` order, strategy outermost.

    A value a strategy ignores (chunks for ddp) stays at `base`'s, so it never splits one
    experiment in two: such points are listed once. Under weak scaling the global batch grows
    with the node count: x (nodes / the smallest node count of the grid).

    Repeats are the outer loop: the whole grid runs once, then again. A slow spell of the
    machine (other jobs, thermal limits) then lands on one repeat of every point instead of
    on every repeat of one point, which the median over repeats can no longer filter out."""
    if scaling not in SCALINGS:
        raise ConfigError(f"invalid scaling {scaling!r}: choose {' or '.join(SCALINGS)}")
    if repeats < 1:
        raise ConfigError(f"invalid repeats {repeats!r}: must be >= 1")
    names = [(k,) if isinstance(k, str) else tuple(k) for k in axes]
    for group in names:
        for name in group:
            if name not in AXES:
                raise ConfigError(f"invalid axis {name!r}: choose from {', '.join(AXES)}")
    flat = [n for group in names for n in group]
    if len(flat) != len(set(flat)):
        raise ConfigError(f"invalid grid: a setting is on two axes ({', '.join(flat)})")
    values = [[v if isinstance(k, tuple) else (v,) for v in axes[k]] for k in axes]
    if any(not v for v in values):
        raise ConfigError("invalid grid: an axis without values")
    order = sorted(range(len(names)), key=lambda i: AXES.index(names[i][0]))
    names, values = [names[i] for i in order], [values[i] for i in order]
    smallest = min([vs[g.index("nodes")] for g, group_values in zip(names, values, strict=True) if "nodes" in g
                    for vs in group_values] or [base.nodes])
    experiments: list[Experiment] = []
    seen: set[str] = set()
    for r in range(repeats):
        for point in itertools.product(*values):
            setting = {n: v for group, vs in zip(names, point, strict=True) for n, v in zip(group, vs, strict=True)}
            cfg = dataclasses.replace(base, **setting, repeat=r)
            parse_values("strategy", cfg.strategy)  # known, before its traits are asked
            if scaling == "weak":
                if cfg.nodes % smallest:
                    raise ConfigError(f"invalid nodes {cfg.nodes}: weak scaling needs multiples of the smallest "
                                      f"({smallest})")
                cfg = dataclasses.replace(cfg, global_batch=cfg.global_batch * (cfg.nodes // smallest))
            ignored = {n: getattr(base, n) for n in setting if not cfg.applies(n)}
            cfg = dataclasses.replace(cfg, **ignored)
            exp_id = cfg.experiment_id()
            if exp_id in seen:
                continue
            seen.add(exp_id)
            validate(cfg, check_layout=False)  # bad values are the user's: exit 2, not a skip
            reason = skip_reason(cfg, gpus if cfg.strategy_record.min_gpus else None)
            if reason is None:
                validate(cfg)
                cfg = cfg.normalised()  # one spelling of each experiment (a pipeline's micro-batch: its chunks)
            experiments.append(Experiment(exp_id, cfg, reason))
    return experiments
