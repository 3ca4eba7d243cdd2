"""Synthetic sweeps in the exact on-disk format of a real one (docs/logs.md), for tests and benchmarks.

The numbers follow a toy cost model (compute shrinks with data-parallel ranks, communication
grows with them, pipelines pay a bubble) so that plots have shapes to show; they are never
presented as measurements. Real sweeps come from `make sweep`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import zlib
from typing import Any

import numpy as np
import orjson

from analysis import layouts
from contract import registry, rundir
from contract.config import ExperimentConfig

_FIELDS = {f.name for f in dataclasses.fields(ExperimentConfig)}
RECOMPUTE_COST = {"none": 1.0, "selective": 1.05, "full": 4 / 3}  # toy: full recompute repeats the forward


def _config(strategy: str, nodes: int, procs: int, batch: int, chunks: int, steps: int, repeat: int = 0,
            warmup: int = 2, seed: int = 0, settings: dict[str, Any] | None = None) -> ExperimentConfig:
    known = {k: v for k, v in (settings or {}).items() if k in _FIELDS}
    return ExperimentConfig(strategy=strategy, nodes=nodes, procs_per_node=procs, model="mlp", dataset="digits",
                            steps=steps, global_batch=batch, chunks=chunks, repeat=repeat, warmup=warmup,
                            seed=seed, **known)


def _beyond(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Layout settings (tp, pp, shard, recompute, micro_batch) this checkout's config has no field for:
    written into config.json and its identity as given, and into the experiment id."""
    return {k: v for k, v in (settings or {}).items() if k not in _FIELDS}


def experiment_id(config: ExperimentConfig, settings: dict[str, Any] | None = None) -> str:
    """The config's id, with the settings it has no field for before the repeat index."""
    head, _, repeat = config.experiment_id().rpartition("-")
    extra = [f"{k.replace('_', '')}{v}" for k, v in _beyond(settings).items()]
    return "-".join([head, *extra, repeat])


def _dump(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def _stable_seed(*key: object) -> int:
    """The same random numbers in every process (hash() of a str differs per interpreter)."""
    return zlib.crc32(repr(key).encode())


def jsonl_lines(fields: dict[str, Any], n: int) -> list[bytes]:
    """`n` JSON lines with the keys of `fields` in order: a value that is a list or an array is a
    column (one value a line; NaN and None -> null), anything else the same on every line.
    orjson formats each column in one call; a %-template joins them: ~50x faster than json.dumps
    per record, which matters at a thousand ranks x 2000 steps."""
    parts, columns = [], []
    for key, value in fields.items():
        if isinstance(value, list | np.ndarray):
            parts.append(f"{json.dumps(key)}: ".encode() + b"%b")
            values = value.tolist() if isinstance(value, np.ndarray) else value
            column = orjson.dumps(values)[1:-1].split(b",") if n else []
            assert len(column) == n, f"column {key}: {len(column)} values for {n} lines"
            columns.append(column)
        else:
            parts.append(json.dumps({key: value})[1:-1].replace("%", "%%").encode())
    template = b"{" + b", ".join(parts) + b"}\n"
    return list(map(template.__mod__, zip(*columns, strict=True))) if columns else [template] * n


def write_experiment(run_dir: str, strategy: str, nodes: int, procs: int, batch: int, chunks: int, steps: int,
                     repeat: int = 0, warmup: int = 2, steps_per_epoch: int = 10, slow: float = 1.0,
                     straggler: int | None = None, seed: int = 0, oversubscribed: bool = False,
                     state: str = "COMPLETED", attempt_field: bool = False,
                     settings: dict[str, Any] | None = None) -> None:
    """One experiment directory: config.json, status.json, rank-R.jsonl for every rank.
    `attempt_field`: every record carries `attempt` (newer writers), not only the start record.
    `settings`: the strategy's own (localsgd's sync_every: it sends every H-th step only; asyncps's
    staleness: its workers' records carry `staleness`, 0..S) and its layout's (analysis/layouts.py: a
    mix's tp and pp cut each rank's compute, dp = world / (tp x pp); recompute costs compute)."""
    beyond = sorted(_beyond(settings).items())  # a layout of its own, noise of its own (none: as before)
    rng = np.random.default_rng(_stable_seed(strategy, nodes, procs, chunks, repeat, seed, *beyond))
    world = nodes * procs
    config = _config(strategy, nodes, procs, batch, chunks, steps, repeat, warmup, seed, settings)
    layout = {**config.to_dict(), **(settings or {})}
    tp, stages = layouts.degrees(strategy, world, layout, config.pipeline_stages)
    dp = layouts.dp_at(strategy, nodes, procs, layout) if layouts.lays_out_degrees(strategy) else config.dp_size
    os.makedirs(run_dir, exist_ok=True)
    cfg = {**config.to_dict(), **_beyond(settings), "run_dir": run_dir}
    plan = {"cores_per_rank": [[r % 2] for r in range(world)], "threads_per_rank": 1,
            "oversubscribed": oversubscribed, "machine_cores": 2}
    meta = {"backend": "simulate", "sweep": os.path.basename(os.path.dirname(run_dir)),
            "experiment": os.path.basename(run_dir), "git_commit": "0" * 40, "cpu_plan": plan,
            "torch": "2.x (synthetic)", "python": "3.11", "dist_backend": "gloo" if world > 1 else "none",
            "ranks": [{"node": f"node{r // procs}", "host": "synthetic", "device": "cpu"} for r in range(world)]}
    _dump(os.path.join(run_dir, "config.json"), {"config": cfg, "identity": {**config.identity(), **_beyond(settings)},
                                                 "meta": meta})
    rundir.write_status(run_dir, state, fresh=True, exit_code=0 if state == "COMPLETED" else 1, attempts=1,
                        wall_s=1.0 + steps * 0.01, cpu_plan=plan)
    param_bytes = 4_000_000 // (stages * tp)
    compute = 0.02 * slow * batch / 32 / dp / stages / tp * RECOMPUTE_COST[str(layouts.value(layout, "recompute"))]
    comm = 0.0 if world == 1 else 0.002 * slow * (world - 1) ** 0.8
    # A pipeline times no compute apart (null timers); a layout with degrees only where its pp cuts the model.
    degrees = layouts.lays_out_degrees(strategy)
    pipelined = config.strategy_record.micro_batches and (stages > 1 or not degrees)
    bubble = (stages - 1) / (chunks + stages - 1) if pipelined else 0.0
    t0 = 1_800_000_000.0 + repeat * 1000
    step = np.arange(steps)
    ends_epoch = ((step + 1) % steps_per_epoch == 0) | (step == steps - 1)
    epoch_steps = step[ends_epoch]
    syncs = (step + 1) % config.sync_every == 0  # the steps that communicate (all but localsgd's in between)
    nulls = [None] * steps
    attempt = {"attempt": 1} if attempt_field else {}
    for rank in range(world):
        node = f"node{rank // procs}"
        last_stage = not pipelined or rank % stages == stages - 1
        c = compute * (1.6 if rank == straggler else 1.0) * rng.uniform(0.95, 1.05, steps)
        # (a layout with degrees all-reduces over its data-parallel replicas, its pipeline or not)
        step_s = (c / (1 - bubble) + comm * syncs * degrees if pipelined else c + comm * syncs) \
            * rng.uniform(0.98, 1.02, steps)
        t = t0 + np.cumsum(step_s)
        loss = 2.3 * 0.97 ** step * rng.uniform(0.99, 1.01, steps) if last_stage else None
        head = {"rank": rank, "node": node}
        lagged = {"staleness": rng.integers(0, config.staleness + 1, steps)} \
            if strategy == "asyncps" and rank > 0 else {}  # asyncps workers only
        lines = jsonl_lines({"event": "step", **head, "time": t, "step": step, "epoch": step // steps_per_epoch,
                             "samples": batch // dp, "step_s": step_s,
                             "compute_s": nulls if pipelined else c, "comm_s": nulls if pipelined else comm * syncs,
                             "comm_bytes": 0 if world == 1 else 2 * param_bytes * syncs,
                             "loss": nulls if loss is None else loss, "mem_bytes": 200_000_000 + param_bytes * 3 + step,
                             "cpu_s": c * 0.9, "warmup": step < warmup, **attempt, **lagged}, steps)
        acc = np.minimum(0.98, 0.1 + 0.9 * (1 - 0.9 ** (epoch_steps + 1))) if last_stage else None
        epochs = jsonl_lines({"event": "epoch", **head, "time": t[ends_epoch] + 0.01,
                              "epoch": epoch_steps // steps_per_epoch, "epoch_s": steps_per_epoch * step_s[ends_epoch],
                              "val_loss": [None] * len(epoch_steps) if loss is None else loss[ends_epoch],
                              "val_acc": [None] * len(epoch_steps) if acc is None else acc, **attempt},
                             len(epoch_steps))
        for i, s in reversed(list(enumerate(epoch_steps.tolist()))):  # each epoch record after its last step
            lines.insert(s + 1, epochs[i])
        start = {"event": "start", **head, "time": t0, "world_size": world, "strategy": strategy, "device": "cpu",
                 "attempt": 1, "param_bytes": param_bytes, "grad_bytes": 0, "optim_bytes": 0, "start_step": 0,
                 "total_steps": steps, "dp_rank": rank % dp, "dp_size": dp}
        end = {"event": "end", **head, "time": float(t[-1]) + 0.02 if steps else t0, "status": state,
               "param_bytes": param_bytes, "grad_bytes": param_bytes, "optim_bytes": 0,
               "peak_mem_bytes": 200_000_000 + param_bytes * 3 + steps, "steps": steps, **attempt}
        with open(os.path.join(run_dir, f"rank-{rank}.jsonl"), "wb") as f:
            f.write(b"".join([(json.dumps(start) + "\n").encode(), *lines, (json.dumps(end) + "\n").encode()]))


# One strategy of each shape the plots need: the one-process baseline, replicas, a scheduled pipeline.
DEFAULT_STRATEGIES = (registry.names(max_world=1)[0], registry.names(kind="replicas")[0],
                      registry.names(scheduled=True)[0])


def write_sweep(logs: str, name: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES,
                nodes: tuple[int, ...] = (1, 2, 4), procs: int = 1, batch: int = 32, chunks: tuple[int, ...] = (4,),
                steps: int = 20, repeats: int = 1, settings: dict[str, tuple[dict[str, Any], ...]] | None = None,
                **kw) -> str:
    """A whole sweep directory (sweep.json + experiments); returns its path. Skips like bin/sweep.
    `settings`: per strategy, the combinations of its own settings to run (default: its defaults)."""
    path = os.path.join(logs, name)
    os.makedirs(path, exist_ok=True)
    listed = []
    for s in strategies:
        for n in nodes:
            for c, own, r in itertools.product(chunks if registry.get(s).micro_batches else (4,),
                                               (settings or {}).get(s, ({},)), range(repeats)):
                config = _config(s, n, procs, batch, c, steps, r, kw.get("warmup", 2), kw.get("seed", 0), own)
                exp = experiment_id(config, own)
                skipped = config.strategy_record.refusal(registry.Layout(n, procs))
                listed.append({"id": exp, "skipped": skipped, "strategy": s, "nodes": n, "procs_per_node": procs,
                               "global_batch": batch, "chunks": c, "schedule": "1f1b", "repeat": r})
                d = os.path.join(path, exp)
                if skipped:
                    rundir.write_status(d, "SKIPPED", fresh=True, reason=skipped, attempts=0)
                else:
                    write_experiment(d, s, n, procs, batch, c, steps, repeat=r, settings=own, **kw)
    _dump(os.path.join(path, "sweep.json"), {
        "sweep": name, "backend": "simulate", "created": "2026-01-01T00:00:00", "git_commit": "0" * 40,
        "host": "synthetic", "grid": {"nodes": ",".join(map(str, nodes)), "strategies": ",".join(strategies),
                                      "scaling": "strong", "steps": steps, "global_batch": batch, "model": "mlp",
                                      "dataset": "digits"},
        "experiments": listed})
    return path
