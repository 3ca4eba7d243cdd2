"""Plots: every scaling question as one figure, saved as PNG (and SVG when asked: `--svg`, `SVG=1`).

Each `plot_*` function takes an `Analysis` and returns a matplotlib Figure, or a string saying
why the plot does not apply to this sweep (no pipeline strategy -> no chunks plot). Tests
inspect the Figure objects (titles, axis labels, legends); `make_plots` draws and saves them,
in a pool of forked worker processes where there is more than one CPU (drawing is most of a
`make plots` of a large sweep once the logs are cached).

    python -m analysis.plots [--sweep NAME] [--logs DIR]   # `make plots`: summary, plots, report
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.axisplots import VIEW_PLOTS  # noqa: E402
from analysis.heatmap import heatmap_spec  # noqa: E402
from analysis.metrics import Analysis  # noqa: E402
from analysis.plotstyle import (  # noqa: E402
    DASHES,
    MARKERS,
    MAX_LEGEND,
    PIPELINED,
    PlotSpec,
    colour,
    first_repeats,
    series_label,
)
from analysis.plotstyle import figure as _figure  # noqa: E402
from analysis.plotstyle import legend as _legend  # noqa: E402
from analysis.plotstyle import varying as _varying  # noqa: E402
from analysis.rankfiles import cpus  # noqa: E402
from contract.registry import NAMES as STRATEGIES  # noqa: E402

MIB = 2**20
OVERSUB = "oversubscribed: more ranks than cores"


def _node_ticks(ax, nodes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(nodes)))
    ax.set_xticklabels([str(n) for n in sorted(set(nodes))])
    ax.minorticks_off()


def _series(groups: pd.DataFrame, key: list[str]):
    """(label, style, rows) per scaling series; series of one strategy share its colour, not its marker."""
    weak = not groups.empty and groups["scaling"].iloc[0] == "weak"  # the batch grows with the nodes
    keys = [k for k in key if k != "nodes" and not (weak and k == "global_batch")]
    varying = _varying(groups, keys)
    seen: dict[str, int] = {}
    for _, part in groups.groupby(keys, dropna=False, sort=False):
        part = part.sort_values("nodes")
        strategy = part["strategy"].iloc[0]
        i = seen[strategy] = seen.get(strategy, -1) + 1
        style = {"color": colour(strategy), "marker": MARKERS[i % len(MARKERS)], "ls": DASHES[i % len(DASHES)]}
        yield series_label(part.iloc[0], varying), style, part


def plot_throughput(a: Analysis) -> Figure | str:
    g = a.groups
    if g.empty:
        return "no experiment has timed steps"
    fig, (ax,) = _figure(f"Throughput vs nodes ({g['scaling'].iloc[0]} scaling) — {a.data.name}")
    for label, style, part in _series(g, a.config_key):
        c = style["color"]
        err = np.array([part["samples_per_s"] - part["samples_per_s_min"],
                        part["samples_per_s_max"] - part["samples_per_s"]], dtype=float)
        ax.errorbar(part["nodes"], part["samples_per_s"], yerr=err, capsize=3, label=label, **style)
        base = part.iloc[0]
        if len(part) > 1:
            ax.plot(part["nodes"], base["samples_per_s"] * part["nodes"] / base["nodes"], color=c, ls=":", lw=1.2)
        over = part[part["oversubscribed"]]
        ax.scatter(over["nodes"], over["samples_per_s"], s=140, facecolors="none", edgecolors="red", zorder=5)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", ls=":", label="ideal (linear from the smallest node count)"))
    if g["oversubscribed"].any():
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="red", ms=11, label=OVERSUB))
    ax.legend(handles=handles[:MAX_LEGEND + 2], fontsize=8)
    ax.set_xlabel("nodes")
    ax.set_ylabel("global throughput (samples/s)")
    _node_ticks(ax, list(g["nodes"]))
    ax.grid(alpha=0.3)
    return fig


def plot_efficiency(a: Analysis) -> Figure | str:
    g = a.groups
    if g.empty:
        return "no experiment has timed steps"
    fig, (ax,) = _figure(f"Scaling efficiency vs nodes ({g['scaling'].iloc[0]} scaling) — {a.data.name}")
    for label, style, part in _series(g, a.config_key):
        ax.plot(part["nodes"], part["efficiency"], label=label, **style)
        over = part[part["oversubscribed"]]
        ax.scatter(over["nodes"], over["efficiency"], s=140, facecolors="none", edgecolors="red", zorder=5)
    ax.axhline(1.0, color="grey", ls=":", label="ideal (efficiency 1)")
    if g["oversubscribed"].any():
        ax.plot([], [], marker="o", ls="", mfc="none", mec="red", ms=11, label=OVERSUB)
    ax.set_xlabel("nodes")
    ax.set_ylabel("efficiency (speed-up / node ratio)" if g["scaling"].iloc[0] != "weak"
                  else "efficiency (per-rank throughput ratio)")
    ax.set_ylim(0, max(1.15, float(np.nanmax(g["efficiency"])) * 1.1))
    _node_ticks(ax, list(g["nodes"]))
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def _by_config(a: Analysis, cols: list[str]) -> pd.DataFrame:
    """Medians over repeats of per-experiment columns, one row per configuration, in a stable order."""
    m = a.measured
    if m.empty:
        return m
    out = m.groupby(a.config_key, dropna=False)[cols].median().reset_index()
    out["order"] = out["strategy"].map(lambda s: STRATEGIES.index(s) if s in STRATEGIES else 99)
    out = out.sort_values(["order", "nodes", "chunks"]).reset_index(drop=True)
    varying = _varying(out, [k for k in a.config_key if k != "nodes"])
    out["label"] = [f"{series_label(r, varying)}\n{r['nodes']} node{'s' if r['nodes'] > 1 else ''}"
                    for _, r in out.iterrows()]
    return out


def plot_breakdown(a: Analysis) -> Figure | str:
    d = _by_config(a, ["compute_s", "comm_s", "bubble_s", "other_s", "median_step_s"])
    if d.empty:
        return "no experiment has timed steps"
    fig, (ax,) = _figure(f"Where a step's time goes (median step) — {a.data.name}",
                         width=max(7.5, 0.7 * len(d) + 3))
    x = np.arange(len(d))
    bottom = np.zeros(len(d))
    parts = (("compute_s", "compute", "#4C72B0"), ("comm_s", "communication", "#DD8452"),
             ("bubble_s", "pipeline bubble (model)", "#C44E52"), ("other_s", "other (waiting, sync, data)", "#BBBBBB"))
    for col, label, c in parts:
        v = d[col].fillna(0).to_numpy() * 1000
        if col == "other_s":  # steps whose timers are null are all "other"
            v = v + np.where(d[["compute_s", "comm_s", "bubble_s"]].isna().all(axis=1), d["median_step_s"] * 1000, 0)
        ax.bar(x, v, bottom=bottom, color=c, label=label, edgecolor="white", lw=0.5)
        bottom += v
    if np.nanmax(bottom) > 0:
        ax.set_ylim(0, float(np.nanmax(bottom)) * 1.08)  # head-room: the tallest bar must not touch the frame
    ax.set_xticks(x)
    ax.set_xticklabels(d["label"], fontsize=8, rotation=0 if len(d) < 8 else 45, ha="center" if len(d) < 8 else "right")
    ax.set_xlabel("strategy and node count")
    ax.set_ylabel("time per step (ms)")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    return fig


def plot_memory(a: Analysis) -> Figure | str:
    d = _by_config(a, ["peak_mem_bytes_per_rank"])
    if d.empty or d["peak_mem_bytes_per_rank"].isna().all():
        return "no memory figures in the logs"
    r = a.per_rank.merge(a.summary[["experiment", *a.config_key]], on="experiment")
    state = r.groupby(a.config_key, dropna=False)[["param_bytes", "grad_bytes", "optim_bytes"]].max().reset_index()
    d = d.merge(state, on=a.config_key, how="left")
    fig, (ax1, ax2) = _figure(f"Memory per rank — {a.data.name}", ncols=2, width=max(7.5, 0.5 * len(d) + 3))
    x = np.arange(len(d))
    ax1.bar(x, d["peak_mem_bytes_per_rank"] / MIB, color=[colour(s) for s in d["strategy"]])
    ax1.set_title("peak memory of the largest rank", fontsize=10)
    ax1.set_ylabel("peak memory per rank (MiB)")
    bottom = np.zeros(len(d))
    for col, label, c in (("param_bytes", "parameters", "#4C72B0"), ("grad_bytes", "gradients", "#55A868"),
                          ("optim_bytes", "optimizer state", "#8172B2")):
        v = d[col].fillna(0).to_numpy() / MIB
        ax2.bar(x, v, bottom=bottom, color=c, label=label)
        bottom += v
    ax2.set_title("model state held by the largest rank", fontsize=10)
    ax2.set_ylabel("bytes per rank (MiB)")
    _legend(ax2)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(d["label"], fontsize=7, rotation=45, ha="right")
        ax.set_xlabel("strategy and node count")
        ax.grid(axis="y", alpha=0.3)
    return fig


def _curve_label(row: pd.Series, varying: set[str]) -> str:
    return f"{series_label(row, varying)} n{row['nodes']}"


def _curves(a: Analysis, table: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[pd.DataFrame, dict]]]:
    """`table`'s rows of the first repeat of each configuration, and per experiment its rows and line
    style: the strategy's colour, a dash pattern per node count, a label."""
    first, varying = first_repeats(a)
    table = table[table["experiment"].isin(first["experiment"])]
    styles = dict(zip(sorted(first["nodes"].unique()), ["-", "--", "-.", ":"] * 4, strict=False))
    lines = []
    for _, row in first.iterrows():
        d = table[table["experiment"] == row["experiment"]]
        if not d.empty:
            lines.append((d, {"color": colour(row["strategy"]), "ls": styles[row["nodes"]],
                              "label": _curve_label(row, varying)}))
    return table, lines


def plot_loss(a: Analysis) -> Figure | str:
    ps = a.per_step.assign(experiment=a.per_step["experiment"].astype(str))
    ps, lines = _curves(a, ps[ps["loss"].notna()])
    if ps.empty:
        return "no step reported a loss"
    fig, (ax1, ax2) = _figure(f"Training loss (first repeat of each configuration) — {a.data.name}", ncols=2)
    for d, kw in lines:
        ax1.plot(d["step"], d["loss"], lw=1.3, **kw)
        ax2.plot(d["t_since_start"], d["loss"], lw=1.3, **kw)
    ax1.set_xlabel("optimizer step")
    ax2.set_xlabel("wall-clock time since start (s)")
    for ax in (ax1, ax2):
        ax.set_ylabel("training loss (mean over the global batch)")
        ax.grid(alpha=0.3)
    ax1.set_title("vs step", fontsize=10)
    ax2.set_title("vs time", fontsize=10)
    _legend(ax2)
    return fig


def _target_line(a: Analysis, ax) -> None:
    if a.target_acc is not None:
        ax.axhline(a.target_acc, color="grey", ls=":", label=f"target {a.target_acc:.3f}")


def plot_accuracy(a: Analysis) -> Figure | str:
    c, lines = _curves(a, a.curves[a.curves["val_acc"].notna()])
    if c.empty:
        return "no epoch record has a validation accuracy"
    fig, (ax1, ax2) = _figure(f"Validation accuracy (first repeat of each configuration) — {a.data.name}", ncols=2)
    for d, kw in lines:
        ax1.plot(d["step"] + 1, d["val_acc"], marker="o", ms=3, **kw)
        ax2.plot(d["t_since_start"], d["val_acc"], marker="o", ms=3, **kw)
    ax1.set_xlabel("optimizer steps done")
    ax2.set_xlabel("wall-clock time since start (s)")
    for ax in (ax1, ax2):
        ax.set_ylabel("validation accuracy (fraction)")
        _target_line(a, ax)
        ax.grid(alpha=0.3)
    ax1.set_title("vs step", fontsize=10)
    ax2.set_title("vs time", fontsize=10)
    _legend(ax2)
    return fig


def plot_epochs(a: Analysis) -> Figure | str:
    c, lines = _curves(a, a.curves)
    if c.empty or c["val_acc"].isna().all():
        return "no epoch record has a validation accuracy"
    fig, (ax1, ax2) = _figure(f"Accuracy and time per epoch (first repeat of each configuration) — {a.data.name}",
                              ncols=2)
    for d, kw in lines:
        acc = d[d["val_acc"].notna()]
        ax1.plot(acc["epoch"] + 1, acc["val_acc"], marker="o", ms=3, **kw)
        ax2.plot(d["epoch"] + 1, d["epoch_s"], marker="o", ms=3, **kw)
    _target_line(a, ax1)
    ax1.set_ylabel("validation accuracy (fraction)")
    ax2.set_ylabel("epoch time, slowest rank (s)")
    last = int(c["epoch"].max()) + 1
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, last + 0.5)
        if last <= 12:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax1.set_title("validation accuracy at the end of each epoch", fontsize=10)
    ax2.set_title("training time of each epoch (the last may be cut short)", fontsize=10)
    _legend(ax1)
    return fig


def plot_time_to_accuracy(a: Analysis) -> Figure | str:
    if a.target_acc is None:
        return "no epoch record has a validation accuracy"
    d = _by_config(a, ["time_to_target_s", "epochs_to_target"])
    if d.empty:
        return "no experiment has timed steps"
    fig, (ax,) = _figure(f"Time to {a.target_acc:.3f} validation accuracy — {a.data.name}",
                         height=max(3.0, 0.45 * len(d) + 1.5))
    y = np.arange(len(d))
    t = d["time_to_target_s"].to_numpy()
    ax.barh(y, np.nan_to_num(t), color=[colour(s) for s in d["strategy"]])
    for i, (v, ep) in enumerate(zip(t, d["epochs_to_target"], strict=True)):
        text = "not reached" if not np.isfinite(v) else f"{v:.2f} s, epoch {int(ep)}"
        ax.text(np.nan_to_num(v), i, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([s.replace("\n", " ") for s in d["label"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall-clock time since start (s), median over repeats")
    ax.set_ylabel("strategy and node count")
    ax.set_xlim(0, max(1e-3, float(np.nanmax(t)) * 1.35) if np.isfinite(t).any() else 1)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_chunks(a: Analysis) -> Figure | str:
    g = a.groups[a.groups["strategy"].isin(PIPELINED)]
    if g.empty or g["chunks"].nunique() < 2:
        return f"needs a pipeline strategy ({', '.join(PIPELINED)}) swept over at least two CHUNKS values"
    fig, (ax,) = _figure(f"Pipeline step time vs micro-batches — {a.data.name}")
    varying = _varying(g, [k for k in a.config_key if k not in ("chunks",)])
    stages = a.summary.groupby(a.config_key, dropna=False)["stages"].first()
    keys = [k for k in a.config_key if k != "chunks"]
    for n, (_, part) in enumerate(g.groupby(keys, dropna=False)):
        part = part.sort_values("chunks")
        row = part.iloc[-1]
        c = colour(row["strategy"])
        ms = part["median_step_s"] * 1000
        ax.plot(part["chunks"], ms, marker=MARKERS[n % len(MARKERS)], color=c, ls=DASHES[n % len(DASHES)],
                label=f"{series_label(row, varying)} n{row['nodes']}")
        k = int(stages.get(tuple(row[a.config_key]), 1))
        if k > 1:  # GPipe bubble model through the point with the most chunks: t(M) ∝ (M + K - 1) / M
            m = part["chunks"].to_numpy(dtype=float)
            ax.plot(m, ms.iloc[-1] * (m + k - 1) / m / ((m[-1] + k - 1) / m[-1]), color=c, ls=":", lw=1)
    ax.plot([], [], color="grey", ls=":", label="bubble model (M+K-1)/M")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(g["chunks"].unique()))
    ax.set_xticklabels([str(x) for x in sorted(g["chunks"].unique())])
    ax.minorticks_off()
    ax.set_xlabel("micro-batches per step (chunks)")
    ax.set_ylabel("median step time (ms)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


PLOTS = [
    PlotSpec("throughput", "Throughput vs nodes", "Global samples/s (global batch / median step time); dotted: "
             "linear scaling from the smallest node count; bars: min-max over repeats.", plot_throughput),
    PlotSpec("efficiency", "Efficiency vs nodes", "Speed-up divided by the node ratio (strong scaling), or the "
             "per-rank throughput ratio (weak scaling); 1 is ideal.", plot_efficiency),
    PlotSpec("breakdown", "Step time breakdown", "The median step split with the ranks' own compute and "
             "communication timers; a pipeline without timers gets the (K-1)/(M+K-1) bubble model.", plot_breakdown),
    PlotSpec("memory", "Memory per rank", "Left: peak memory of the largest rank (RSS on CPU, allocator peak on "
             "GPU). Right: parameters, gradients and optimizer state that rank holds.", plot_memory),
    PlotSpec("loss", "Loss curves", "Training loss per step (sample-weighted mean over ranks), against the step "
             "and against wall-clock time; strategies that follow the same trajectory draw one line over "
             "another.", plot_loss),
    PlotSpec("accuracy", "Accuracy curves", "Validation accuracy at the end of each epoch, against steps and "
             "wall-clock time.", plot_accuracy),
    PlotSpec("epochs", "Accuracy vs epoch", "Validation accuracy at the end of each epoch (dotted: the target) and "
             "each epoch's training time (its slowest rank's); summary.csv has mean_epoch_s, epochs_to_target "
             "and time_to_target_s.", plot_epochs),
    PlotSpec("time_to_accuracy", "Time to accuracy", "Wall-clock time until the validation accuracy first "
             "reaches the target.", plot_time_to_accuracy),
    PlotSpec("chunks", "Step time vs chunks", "Pipeline strategies: median step time against micro-batches; dotted: "
             "the bubble model through the largest chunk count.", plot_chunks),
    heatmap_spec(),
    *VIEW_PLOTS,
]


@dataclass
class PlotFile:
    spec: PlotSpec
    png: str
    svg: str | None  # None unless SVG was asked for


# The figures that take longest to draw at 1024 ranks, first: a pool that starts them early ends evenly.
SLOW_FIRST = ("heatmap", "epochs", "accuracy", "loss", "memory")
_JOB: tuple[Analysis, list[PlotSpec], str, bool] | None = None  # what forked workers draw from


def _draw(i: int) -> tuple[str, str | None] | str:
    """Draw and save plot `i` of the job: its (png, svg or None) paths, or why it does not apply."""
    a, specs, out_dir, svg = _JOB  # set by make_plots before the pool forks
    fig = specs[i].make(a)
    if isinstance(fig, str):
        return fig
    png, svg_path = (os.path.join(out_dir, f"{specs[i].name}.{ext}") for ext in ("png", "svg"))
    fig.savefig(png, dpi=110)
    if svg:
        fig.savefig(svg_path)
    plt.close(fig)
    return png, svg_path if svg else None


def make_plots(a: Analysis, out_dir: str, only: list[PlotSpec] | None = None, svg: bool = False,
               workers: int | None = None, meanwhile: Callable[[], object] | None = None
               ) -> tuple[list[PlotFile], list[tuple[PlotSpec, str]]]:
    """Save every applicable plot (of `only`, default all) as PNG, and SVG when `svg`; return
    (written, [(not applicable, why)]) in PLOTS' order. `workers`: processes that draw (default:
    one per CPU, forked; 1: here). `meanwhile`: run here while they draw (the report's figure).
    An SVG from an earlier `--svg` run goes when SVG is not asked: plots/ never mixes two runs."""
    global _JOB
    os.makedirs(out_dir, exist_ok=True)
    specs = list(PLOTS if only is None else only)
    n = min(cpus() if workers is None else workers, len(specs))
    order = sorted(range(len(specs)), key=lambda i: (SLOW_FIRST + (specs[i].name,)).index(specs[i].name))
    for spec in specs:
        if spec.prepare is not None:  # what every worker would read again, read once here
            spec.prepare(a)
    _JOB = (a, specs, out_dir, svg)
    try:
        if n > 1:
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
                futures = {i: pool.submit(_draw, i) for i in order}  # the workers fork here, before `meanwhile`
                if meanwhile is not None:
                    meanwhile()
                done = {i: f.result() for i, f in futures.items()}
        else:
            done = {i: _draw(i) for i in order}
            if meanwhile is not None:
                meanwhile()
    finally:
        _JOB = None
    written = [PlotFile(spec, *done[i]) for i, spec in enumerate(specs) if not isinstance(done[i], str)]
    for p in written if not svg else []:
        if os.path.exists(stale := os.path.splitext(p.png)[0] + ".svg"):
            os.remove(stale)
    return written, [(spec, done[i]) for i, spec in enumerate(specs) if isinstance(done[i], str)]
