"""Views per swept setting: throughput vs batch, vs data size, layouts at equal world size, precision.

A view compares configurations that differ in its axis alone: every other identity setting
(`Analysis.config_key`: strategy, nodes, model, lr, ...) is held equal, so nothing is averaged
or drawn across different settings. Each point is a configuration's median over repeats.
A view is drawn where its axis varies with everything else equal; otherwise its `make`
returns the reason ("batch does not vary in this sweep"), which the report lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.metrics import Analysis, same_maths, train_samples
from analysis.plotstyle import DASHES, MARKERS, PlotSpec, colour, figure, legend, series_label, setting_text, varying
from contract.config import ExperimentConfig

MIB = 2**20
CHOICES = {f.name: list(f.metadata["choices"]) for f in dataclasses.fields(ExperimentConfig) if "choices" in f.metadata}


@dataclass(frozen=True)
class Axis:
    columns: tuple[str, ...]  # the configuration columns that make the axis
    label: str  # the setting as users name it, in titles and reasons
    within: tuple[str, ...] = ()  # columns held equal as well (layouts: the world size)
    unmatched: str = ""  # why nothing is drawn when the axis varies, but never alone (default below)


BATCH = Axis(("global_batch",), "batch")
DATA_SIZE = Axis(("data_size",), "data size")
LAYOUT = Axis(("nodes", "procs_per_node"), "layout", within=("world_size",),
              unmatched="no world size was measured in two layouts (nodes x procs per node) with every other "
                        "setting equal")
PRECISION = Axis(("precision",), "precision")


def comparisons(a: Analysis, axis: Axis) -> tuple[pd.DataFrame, str | None]:
    """Configurations (rows of `a.groups`) in sets that differ in `axis` alone, each set numbered
    in `series`; only sets with two values or more of the axis are kept. With none: (empty, why)."""
    g = a.groups
    ran = a.summary[a.summary["state"] != "SKIPPED"] if not a.summary.empty else a.summary
    values = ran[list(axis.columns)].drop_duplicates() if all(c in ran for c in axis.columns) else ran.iloc[:0]
    if len(values) < 2:
        return g.iloc[:0], f"{axis.label} does not vary in this sweep"
    keys = [k for k in a.config_key if k not in axis.columns] + list(axis.within)
    sets = []
    for _, part in g.groupby(keys, dropna=False, sort=False):
        if len(part[list(axis.columns)].drop_duplicates()) > 1:
            sets.append(part.assign(series=len(sets)))
    if not sets:
        return g.iloc[:0], axis.unmatched or (f"{axis.label} varies in this sweep, but never with every other "
                                              "setting equal among the measured experiments")
    return pd.concat(sets, ignore_index=True), None


def _labels(d: pd.DataFrame, a: Analysis, axis: Axis) -> dict[int, str]:
    """Per set: the strategy and whatever else varies between the sets (never the axis itself)."""
    keys = [k for k in a.config_key if k not in axis.columns]
    vary = varying(d, keys)
    out = {}
    for n, part in d.groupby("series", sort=False):
        row = part.iloc[0]
        text = series_label(row, vary)
        out[n] = f"{text}, {row['world_size']} ranks" if axis.within else \
            f"{text} {row['nodes']}x{row['procs_per_node']}"
    return out


def _log_if_wide(ax, values: np.ndarray) -> None:
    values = np.unique(values[np.isfinite(values)])
    if len(values) and values.min() > 0 and values.max() / values.min() >= 4:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v:g}" for v in values])


def _lines(a: Analysis, axis: Axis, x_of, x_label: str, second: tuple[str, str, float] | None) -> Figure | str:
    """Throughput (min-max over repeats) against a numeric axis, one line per set; `second`:
    (column, y label, scale) of a second panel, drawn when any set has that figure."""
    d, why = comparisons(a, axis)
    if why:
        return why
    d = d.assign(x=x_of(d))
    labels = _labels(d, a, axis)
    with_second = second is not None and d[second[0]].notna().any()
    fig, axes = figure(f"Throughput vs {axis.label} — {a.data.name}", ncols=2 if with_second else 1)
    seen: dict[str, int] = {}
    for n, part in d.groupby("series", sort=False):
        part = part.sort_values("x")
        strategy = part["strategy"].iloc[0]
        i = seen[strategy] = seen.get(strategy, -1) + 1
        style = {"color": colour(strategy), "marker": MARKERS[i % len(MARKERS)], "ls": DASHES[i % len(DASHES)],
                 "label": labels[n]}
        err = np.array([part["samples_per_s"] - part["samples_per_s_min"],
                        part["samples_per_s_max"] - part["samples_per_s"]], dtype=float)
        axes[0].errorbar(part["x"], part["samples_per_s"], yerr=err, capsize=3, **style)
        if with_second:
            axes[1].plot(part["x"], part[second[0]] * second[2], **style)
    axes[0].set_ylabel("global throughput (samples/s)")
    if with_second:
        axes[1].set_ylabel(second[1])
    for ax in axes:
        ax.set_xlabel(x_label)
        _log_if_wide(ax, d["x"].to_numpy(dtype=float))
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def _bars(a: Analysis, axis: Axis, panels: list[tuple[str, str, float]], title: str) -> Figure | str:
    """Grouped bars: one group per set, one bar per value of the axis, one panel per
    (column, y label, scale); a panel whose column no set has is left out."""
    d, why = comparisons(a, axis)
    if why:
        return why
    panels = [p for p in panels if d[p[0]].notna().any()]
    d = d.assign(value=[" x ".join(str(r[c]) for c in axis.columns) if axis.within else
                        setting_text(axis.columns[0], r[axis.columns[0]]) for _, r in d.iterrows()])
    values = list(dict.fromkeys(d.sort_values(list(axis.columns), key=_choice_order)["value"]))
    labels = _labels(d, a, axis)
    sets = list(dict.fromkeys(d["series"]))
    fig, axes = figure(f"{title} — {a.data.name}", ncols=len(panels), width=max(7.5, 1.2 * len(sets) + 3))
    width = 0.8 / len(values)
    palette = [f"C{i}" for i in range(10)]
    for ax, (col, y_label, scale) in zip(axes, panels, strict=True):
        for j, value in enumerate(values):
            rows = d[d["value"] == value].set_index("series").reindex(sets)
            x = np.arange(len(sets)) + (j - (len(values) - 1) / 2) * width
            ax.bar(x, rows[col].to_numpy(dtype=float) * scale, width=width, color=palette[j % 10], label=value)
        ax.set_xticks(np.arange(len(sets)))
        ax.set_xticklabels([labels[n] for n in sets], fontsize=8, rotation=0 if len(sets) < 4 else 30,
                           ha="center" if len(sets) < 4 else "right")
        ax.set_ylabel(y_label)
        ax.set_xlabel("configuration (everything else equal)")
        ax.grid(axis="y", alpha=0.3)
    legend(axes[0], title=axis.label)
    return fig


def _choice_order(column: pd.Series) -> pd.Series:
    """A setting with choices sorts in their order (fp32, bf16, fp16), any other by value."""
    choices = CHOICES.get(str(column.name))
    return column.map(lambda v: choices.index(v) if v in choices else len(choices)) if choices else column


def plot_batch(a: Analysis) -> Figure | str:
    return _lines(a, BATCH, lambda d: d["global_batch"], "global batch (samples per step)",
                  ("epochs_to_target", "epochs to the target accuracy", 1.0))


def plot_data_size(a: Analysis) -> Figure | str:
    return _lines(a, DATA_SIZE, lambda d: d.apply(train_samples, axis=1), "training samples used (data size)",
                  ("mean_epoch_s", "mean epoch time (s)", 1.0))


def plot_layouts(a: Analysis) -> Figure | str:
    return _bars(a, LAYOUT, [("samples_per_s", "global throughput (samples/s)", 1.0),
                             ("comm_s", "communication per step (ms)", 1000.0)], "Layouts at equal world size")


def plot_precision(a: Analysis) -> Figure | str:
    return _bars(a, PRECISION, [("samples_per_s", "global throughput (samples/s)", 1.0),
                                ("peak_mem_bytes_per_rank", "peak memory per rank (MiB)", 1 / MIB),
                                ("final_loss", "final training loss", 1.0)], "Precision")


def plot_wall_time(a: Analysis) -> Figure | str:
    """Loss and validation accuracy against wall time, every configuration on one figure: where the
    maths differs (localsgd, asyncps), faster steps are worth what they buy in accuracy per second.
    A colour per configuration, a dash pattern per node count; the loss is a 5-step running mean."""
    m = a.measured
    if m.empty or a.curves["val_acc"].dropna().empty:
        return "no epoch record has a validation accuracy"
    if all(m.apply(same_maths, axis=1)):
        return "every experiment does the maths of single (the loss and accuracy plots compare them)"
    first = m[m["repeat"] == m.groupby(a.config_key, dropna=False)["repeat"].transform("min")]
    shown = varying(first, [k for k in a.config_key if k != "nodes"])
    labels = list(dict.fromkeys(series_label(row, shown) for _, row in first.iterrows()))
    colours = dict(zip(labels, [plt.get_cmap("tab20")(i % 20) for i in range(len(labels))], strict=True))
    nodes = sorted(first["nodes"].unique())
    dashes = dict(zip(nodes, [DASHES[i % len(DASHES)] for i in range(len(nodes))], strict=True))
    steps = a.per_step.assign(experiment=a.per_step["experiment"].astype(str))
    fig, (loss_ax, acc_ax) = figure(f"Loss and validation accuracy against wall time — {a.data.name}", ncols=2,
                                    width=8.5)
    for _, row in first.iterrows():
        kw = {"color": colours[series_label(row, shown)], "ls": dashes[row["nodes"]]}
        loss = steps[(steps["experiment"] == row["experiment"]) & steps["loss"].notna()]
        loss_ax.plot(loss["t_since_start"], loss["loss"].rolling(5, min_periods=1).mean(), lw=1.0, **kw)
        acc = a.curves[(a.curves["experiment"] == row["experiment"]) & a.curves["val_acc"].notna()]
        acc_ax.plot(acc["t_since_start"], acc["val_acc"], marker="o", ms=3, **kw)
    if a.target_acc is not None:
        acc_ax.axhline(a.target_acc, color="grey", ls=":")
    loss_ax.set_ylabel("training loss (5-step running mean)")
    acc_ax.set_ylabel("validation accuracy (fraction)")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("wall-clock time since start (s)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[label], label=label) for label in labels]
    handles += [Line2D([], [], color="black", ls=dashes[n], label=f"{n} node(s)") for n in nodes]
    if a.target_acc is not None:
        handles.append(Line2D([], [], color="grey", ls=":", label=f"target {a.target_acc:.3f}"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=7)
    return fig


VIEW_PLOTS = [
    PlotSpec("batch", "Throughput vs batch", "Global samples/s against the global batch, every other setting "
             "equal (bars: min-max over repeats); right: epochs to the target accuracy.", plot_batch),
    PlotSpec("data_size", "Throughput vs data size", "Global samples/s against the training samples used "
             "(DATA_SIZE; 0 = the whole set), every other setting equal; right: mean time of a complete epoch.",
             plot_data_size),
    PlotSpec("layouts", "Layouts at equal world size", "The same number of ranks as nodes x ranks per node "
             "(1x4, 2x2, 4x1), every other setting equal: throughput and communication time per step "
             "(where the strategy times it).", plot_layouts),
    PlotSpec("precision", "Precision", "fp32 against bf16/fp16 autocast, every other setting equal: "
             "throughput, peak memory per rank and the final training loss.", plot_precision),
    PlotSpec("wall_time", "Loss and accuracy against wall time", "Every strategy's training loss and validation "
             "accuracy against wall-clock time (first repeat of each configuration; dotted: the target), drawn "
             "where a strategy's maths differs from single's (localsgd, asyncps): what its faster steps buy.",
             plot_wall_time),
]
