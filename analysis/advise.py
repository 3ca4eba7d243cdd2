"""The answer: per node count, which strategy to use, by how much, and why each other one loses.

    bin/advise [--sweep NAME] [--link 10gbe] [--max-nodes 1024] [--gpu-mem 80GiB]   # `make advise`

Rows: one per node count measured in the sweep (`source: measured`), one per larger node count
projected up to --max-nodes on --link (`source: projected`, analysis/projection/). In a row:

- best: the highest throughput (samples/s, median over repeats) among the strategies that can run
  at that layout and fit in --gpu-mem (analysis/plan.py); runner_up and margin = best / runner-up - 1.
- tie: the margin is within the spread between repeats (their min..max ranges overlap); with one
  repeat the margin is unconfirmed (`confirmed: false`). A projected margin is a tie when it is
  within the projection's held-out error of the two, unconfirmed where there was no check.
- best_time_to_target: the first to reach the target validation accuracy (measured rows only).
- ranked_by: `throughput`, or `time_to_target` where a candidate's maths differs from single's
  (the registry's same_maths: localsgd off H 1, DiLoCo, asyncps with staleness): a faster step
  that needs more epochs is no win by itself, so such a row ranks by the median time to the target
  validation accuracy, and each why compares steps, epochs and time to target ("steps 1.8x faster,
  reaches 0.95 after 1.4x the epochs: 1.3x faster to target"); with no run at the target the row
  has no best ("cannot judge: no run reached the target"). A strategy's configurations that differ
  in its own settings (localsgd's H, outer step) are candidates of their own, e.g.
  `localsgd[sync_every=4]`; so is every layout (analysis/layouts.py: dp, tp, pp, shard, recompute,
  micro-batch, schedule), e.g. `mix[dp=2,tp=2,pp=2,shard=full]`, and `layout` names each one's.
- why, for every other strategy: cannot run at this layout (the registry's reason), does not fit in
  memory (the planner's bytes per rank), else which part of its step costs it most against the
  best, per sample: communication-bound (its communication share of the step), bubble-bound, or
  compute-bound.

Writes logs/<sweep>/advice.json and plots/advice.png (the winner over node counts, with the
margin), which the first section of report.html shows. Torch-free: bin/advise passes in the
measured model profile (memory check) and the projection (analysis/projection/), as bin/plan does.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from analysis import AnalysisError, layouts
from analysis.advice_output import plot, table, write
from analysis.load import completed, find_sweep, load_sweep
from analysis.metrics import Analysis, analyse, same_maths, settings_of
from analysis.plan import GIB, ModelShape, Options, add_gpu_mem, parse_size, plan_one, positive_int
from analysis.ranking import Candidate, Inputs, answer
from analysis.sweepstate import refuse
from contract import defaults, registry
from contract.errors import ConfigError, OneLineParser
from contract.paths import LOGS
from contract.tables import LINKS, MODEL_BLOCKS

# (strategy, nodes, global batch, its own settings or None: the sweep's) -> why it cannot, or None
MemoryCheck = Callable[[str, int, int, dict | None], str | None]


def _median(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.median()) if len(v) else 0.0


def measured(a: Analysis, memory: MemoryCheck | None = None) -> Inputs:
    """Candidates and refusals at every node count of the sweep (analysis.metrics' tables)."""
    out = Inputs(target_acc=a.target_acc)
    s = a.summary
    if s.empty:
        return out
    ok = s[(s["state"] == "COMPLETED") & s["samples_per_s"].notna()]
    strategies = list(dict.fromkeys(s["strategy"]))
    # A layout is a configuration of its own, whether or not the config's identity already says so (older runs).
    key = [*a.config_key, *(c for c in layouts.columns(list(s.columns)) if c not in a.config_key)]
    logged = _logged_dp(a)
    for nodes in sorted({int(n) for n in s["nodes"]}):
        here: dict[str, Candidate] = {}
        refused = {}
        own: dict[str, tuple[int, dict]] = {}  # per candidate: its global batch and layout settings (memory)
        for (_, g) in ok[ok["nodes"] == nodes].groupby(key, dropna=False):
            c = _candidate(g, logged.get(str(g["experiment"].iloc[0])) if "experiment" in g else None)
            if c.key not in here or _better(c, here[c.key]):  # its best configuration
                here[c.key] = c
                first = settings_of(g.iloc[0])
                own[c.key] = (int(first["global_batch"]), {k: first[k] for k in layouts.columns(list(first))})
        for strategy in strategies:
            mine = [k for k, c in here.items() if c.strategy == strategy]
            if not mine:
                refused[strategy] = _not_here(s, strategy, nodes)
            for k in mine if memory is not None else []:  # each layout at its own settings
                if why := memory(strategy, nodes, *own[k]):
                    refused[k] = why
                    del here[k]
        out.candidates[nodes], out.refused[nodes] = here, refused
    return out


def _better(c: Candidate, other: Candidate) -> bool:
    """Of two configurations under one key: the faster to target where maths differs, else the faster step."""
    if not (c.same_maths and other.same_maths) and (c.time_to_target_s or other.time_to_target_s):
        return other.time_to_target_s is None or (c.time_to_target_s is not None
                                                    and c.time_to_target_s < other.time_to_target_s)
    return c.throughput > other.throughput


def _logged_dp(a: Analysis) -> dict[str, int]:
    """Per experiment, the data-parallel ranks its trainer logged (the start records' dp_size)."""
    r = a.data.ranks
    if r.empty or "dp_size" not in r:
        return {}
    return {str(k): int(v) for k, v in r.dropna(subset=["dp_size"]).groupby("experiment")["dp_size"].max().items()}


def _candidate(g: pd.DataFrame, dp: int | None = None) -> Candidate:
    """One configuration's repeats -> a Candidate. Per sample: compute, communication (with the
    step's remainder, which is waiting: null comm timers leave all of it there), bubble. `dp`: the
    data-parallel ranks its trainer logged (else the experiments table's)."""
    batch = float(g["global_batch"].iloc[0])
    parts = {"compute": _median(g["compute_s"]), "comm": _median(g["comm_s"]) + _median(g["other_s"]),
             "bubble": _median(g["bubble_s"])}
    if not any(parts.values()):
        parts["compute"] = _median(g["median_step_s"])
    thr = g["samples_per_s"]
    ttt = g["time_to_target_s"].dropna()
    all_reached = len(ttt) == len(g)
    strategy = str(g["strategy"].iloc[0])
    settings = settings_of(g.iloc[0])
    epochs = g["epochs_to_target"].dropna() if "epochs_to_target" in g else pd.Series(dtype=float)
    first = g.iloc[0]
    world = int(first.get("world_size", 1) or 1)
    dp = dp or int(first.get("dp_size", world) or world)
    return Candidate(strategy, float(thr.median()), float(thr.min()), float(thr.max()),
                     len(thr) >= 2, {k: v / batch for k, v in parts.items()}, bool(g["oversubscribed"].any()),
                     float(ttt.median()) if all_reached else None,
                     same_maths=same_maths(g.iloc[0]),
                     epochs_to_target=float(epochs.median()) if all_reached and len(epochs) else None,
                     target_range=(float(ttt.min()), float(ttt.max())) if all_reached else None,
                     label=layouts.label(strategy, settings, dp),
                     epoch_s=_median(g["mean_epoch_s"]) or None if "mean_epoch_s" in g else None,
                     layout=layouts.layout(strategy, settings, world, dp, int(first.get("stages", 1) or 1)))


def _not_here(s: pd.DataFrame, strategy: str, nodes: int) -> str:
    """Why a strategy of the sweep has no COMPLETED run at this node count."""
    rows = s[(s["strategy"] == strategy) & (s["nodes"] == nodes)]
    if rows.empty:
        return "not measured at this node count"
    skipped = rows[rows["state"] == "SKIPPED"]
    if not skipped.empty:
        return f"cannot run at this layout: {skipped['reason'].iloc[0]}"
    r = rows.iloc[0]
    detail = r.get("error") if isinstance(r.get("error"), str) and r.get("error") else r.get("reason")
    return f"no COMPLETED run ({r['state']}{': ' + str(detail) if isinstance(detail, str) and detail else ''})"


# ---- projected candidates ------------------------------------------------------------------

@dataclass
class Projected:
    """The projection as the answer needs it (bin/advise builds it with analysis.projection)."""
    rows: list[dict]  # projection.csv rows: strategy, nodes, world_size, global_batch, throughput, step_s,
    #                   compute_s, bubble_s, local_comm_s, link_s, note
    errors: dict[str, float]  # held-out relative error per checked strategy
    checked_nodes: int | None  # the node count the check predicted
    note: str  # why there is no check ("" when there is one)
    procs: int = 1
    settings: dict[str, dict] = field(default_factory=dict)  # per series: the strategy's own settings


Projector = Callable[[str, str, int], Projected]  # (sweep dir, link, max nodes) -> Projected


def projected(p: Projected, nodes: list[int], strategies: list[str], model: str,
              memory: MemoryCheck | None = None) -> Inputs:
    out = Inputs()
    blocks = MODEL_BLOCKS.get(model, 10**9)
    for n in nodes:
        here, refused = {}, {}
        for r in (r for r in p.rows if r["nodes"] == n):
            series = r.get("series") or r["strategy"]  # the strategy at its own settings: localsgd[sync_every=4]
            own = p.settings.get(series)
            dp = layouts.dp_at(r["strategy"], n, p.procs, own or {})
            # its name at this node count: with its dp where the layout has degrees (mix[dp=8,tp=2,pp=2])
            key = (layouts.label(r["strategy"], own, dp) or r["strategy"]) if own is not None else series
            record = registry.get(r["strategy"])
            lay = layouts.layout(r["strategy"], own or {}, n * p.procs, dp, record.stages(n, p.procs))
            err = p.errors.get(series)
            spread = abs(err) if err is not None else 0.0
            batch = float(r["global_batch"])
            thr = float(r["throughput"])
            per = {"compute": (r["compute_s"] - r["bubble_s"]) / batch, "bubble": r["bubble_s"] / batch,
                   "comm": (r["local_comm_s"] + r["link_s"]) / batch}
            here[key] = Candidate(r["strategy"], thr, thr * (1 - spread), thr * (1 + spread), err is not None,
                                  per, oversubscribed=False, label=key if key != r["strategy"] else "", layout=lay)
            if r.get("note"):
                refused[key] = f"cannot run at this layout: {r['note']}"
            elif memory is not None and (why := memory(r["strategy"], n, int(batch), own)):
                refused[key] = why
        for strategy in strategies:
            record = registry.get(strategy)
            why = record.refusal(registry.Layout(n, p.procs, record.stages(n, p.procs), blocks))
            if why:
                keys = [k for k, c in here.items() if c.strategy == strategy] or [strategy]
                refused.update(dict.fromkeys(keys, f"cannot run at this layout: {why}"))
            elif not any(c.strategy == strategy for c in here.values()):
                refused[strategy] = "not projected: the projection covers " + ", ".join(registry.names(projected=True))
        for key in refused:
            here.pop(key, None)
        out.candidates[n], out.refused[n] = here, refused
    return out


# ---- memory --------------------------------------------------------------------------------

def memory_check(shape: ModelShape, cfg: dict, gpu_mem: int) -> MemoryCheck:
    """A MemoryCheck from the planner, for the sweep's model and settings (`cfg`: a config.json's config)."""
    def check(strategy: str, nodes: int, global_batch: int, settings: dict | None = None) -> str | None:
        o = Options([nodes], int(cfg.get("procs_per_node", 1)), global_batch, int(cfg.get("chunks", 4)),
                    str(cfg.get("schedule", "1f1b")), str(cfg.get("optimizer", "sgd")),
                    str(cfg.get("precision", "fp32")), gpu_mem, str(cfg.get("gpipe_checkpoint", "never")),
                    settings={**cfg, **(settings or {})})  # DiLoCo's outer state: the series' own
        row = plan_one(registry.get(strategy), shape, nodes, o)
        if row["total_bytes"] is None:
            return f"cannot run at this layout: {row['reason']}"
        if not row["fits"]:
            return (f"does not fit in memory: {row['total_bytes'] / GIB:.2f} GiB per rank planned, "
                    f"{gpu_mem / GIB:.2f} GiB available")
        return None
    return check


# ---- outputs -------------------------------------------------------------------------------

def report_section(a: Analysis, sweep_dir: str, svg: bool = True) -> dict:
    """The report's first section: advice.json's rows when `make advise` wrote one, else the
    measured rows alone (no projection, no memory check: those need bin/advise); and the plot
    (`svg`: as SVG too)."""
    path = os.path.join(sweep_dir, "advice.json")
    if os.path.isfile(path):
        with open(path) as f:
            doc = json.load(f)
        rows, check = doc.get("rows", []), doc.get("check", "")
    else:
        inputs = measured(a)
        rows = answer(inputs, {n: "measured" for n in inputs.candidates})
        check = "measured rows only: `make advise` adds the projected rows and the memory check"
    png = plot(rows, os.path.join(sweep_dir, "plots", "advice.png"), svg) if any(r["best"] for r in rows) else None
    for r in rows:  # the winner's layout in words (an advice.json of an older advise has none)
        lay = (r.get("layout") or {}).get(r["best"])
        r["best_layout"] = layouts.describe(lay) if lay else None
    return {"rows": rows, "check": check, "png": png}


# ---- command line --------------------------------------------------------------------------

ModelProfiler = Callable[[str, str, str], ModelShape]


def build(sweep_dir: str, link: str, max_nodes: int, gpu_mem: int, target_acc: float | None = None,
          profiler: ModelProfiler | None = None, projector: Projector | None = None) -> dict:
    """The whole answer as advice.json's document. Raises ConfigError on a sweep with nothing to advise on."""
    if not completed(sweep_dir):
        raise ConfigError(f"no COMPLETED experiment in {sweep_dir}: nothing to advise on")
    a = analyse(load_sweep(sweep_dir), target_acc)
    s = a.summary
    done = s[s["state"] == "COMPLETED"]  # not empty: its state comes from the status.json read above
    cfg = (a.data.configs.get(str(done["experiment"].iloc[0])) or {}).get("config") or {}
    memory = memory_check(profiler(cfg["model"], cfg.get("dataset", "synthetic"), cfg.get("precision", "fp32")),
                          cfg, gpu_mem) if profiler is not None and cfg.get("model") else None
    inputs = measured(a, memory)
    sources = {n: "measured" for n in inputs.candidates}
    errors: dict[int, dict[str, float]] = {}
    check = ""
    if projector is not None:
        p = projector(sweep_dir, link, max_nodes)
        more = sorted({int(r["nodes"]) for r in p.rows} - set(sources))
        more = [n for n in more if n > max(sources)]
        proj = projected(p, more, list(dict.fromkeys(s["strategy"])), cfg.get("model", ""), memory)
        inputs.candidates.update(proj.candidates)
        inputs.refused.update(proj.refused)
        sources.update({n: "projected" for n in more})
        if p.checked_nodes is not None:
            errors[p.checked_nodes] = p.errors
            check = (f"projection checked: fitted without {p.checked_nodes} nodes, it was off there by "
                     + ", ".join(f"{k} {v:+.1%}" for k, v in sorted(p.errors.items())))
        else:
            check = p.note
    rows = answer(inputs, sources)
    for r in rows:
        if r["nodes"] in errors and r["source"] == "measured":
            r["projection_error"] = errors[r["nodes"]]
    return {"sweep": a.data.name, "link": link, "gpu_mem_bytes": gpu_mem, "target_acc": a.target_acc,
            "check": check, "rows": rows}


def parser() -> OneLineParser:
    p = OneLineParser(prog="bin/advise", description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default="", help="sweep name under --logs (default: the latest)")
    p.add_argument("--logs", default=LOGS)
    p.add_argument("--link", default=defaults.PROJECTED_LINK,
                   help=f"link of the projected cluster: {', '.join(LINKS)} (default: {defaults.PROJECTED_LINK})")
    p.add_argument("--max-nodes", default=str(defaults.MAX_NODES),
                   help=f"project up to this many nodes (default: {defaults.MAX_NODES})")
    add_gpu_mem(p)
    p.add_argument("--target-acc", default="", help="validation accuracy for time to target (default: 0.9 x best)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: list[str], profiler: ModelProfiler | None = None, projector: Projector | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.link not in LINKS:
            raise ConfigError(f"unknown link {args.link!r}: choose from {', '.join(LINKS)}")
        max_nodes = positive_int("max-nodes", args.max_nodes)
        gpu_mem = parse_size(args.gpu_mem)
        target = None
        if args.target_acc:
            try:
                target = float(args.target_acc)
            except ValueError:
                target = math.nan
            if not 0 < target <= 1:
                raise ConfigError(f"invalid target accuracy {args.target_acc!r}: must be in (0, 1]")
        try:
            sweep_dir = find_sweep(args.logs, args.sweep or None)
        except AnalysisError as e:
            raise ConfigError(str(e)) from None
        if (code := refuse("advise", sweep_dir)) is not None:
            return code
        doc = build(sweep_dir, args.link, max_nodes, gpu_mem, target, profiler, projector)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"advice for sweep {doc['sweep']} (projected on {args.link}, GPU memory {gpu_mem / GIB:.1f} GiB):")
    print(table(doc["rows"], doc["check"]))
    print(f"  written: {write(sweep_dir, doc)}")
    if not args.no_plot:
        print(f"  plot:    {plot(doc['rows'], os.path.join(sweep_dir, 'plots', 'advice.png'))}")
    return 0
