"""The per-rank heat map: each rank's busy time per timed step, one panel per experiment (the
largest first, six at most); a straggler is a bright row.

Its image comes from the rank files' columns (analysis/gridmetrics.py `busy_grid`), read in the
process that forks the drawing workers (`prepare`): a forked worker would fault in every page of
the mapped cache entries again. At 1024 ranks x 2000 steps the drawing itself was 1 s of system
time, fresh memory for colouring every cell before shrinking the image: it now shrinks first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.gridmetrics import busy_grid
from analysis.plotstyle import PlotSpec, first_repeats

if TYPE_CHECKING:
    from analysis.metrics import Analysis

MAX_PANELS = 6


def shown(a: Analysis) -> pd.DataFrame:
    """The experiments the heat map shows: first repeats with more than one rank, largest first."""
    first, _ = first_repeats(a)
    multi = first[first["world_size"] > 1].sort_values(["world_size", "strategy"], ascending=[False, True])
    return multi.head(MAX_PANELS)


def prepare(a: Analysis) -> None:
    """Make the shown experiments' images here, before the drawing workers fork."""
    for exp in shown(a)["experiment"]:
        busy_grid(a.data, exp)  # kept by the experiment's Grid for the drawing worker


def plot_heatmap(a: Analysis) -> Figure | str:
    multi = shown(a)
    if multi.empty:
        return "no experiment with more than one rank"
    n = len(multi)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1, 2.8 * rows + 1), squeeze=False,
                             layout="constrained")
    fig.suptitle(f"Per-rank busy time per step (stragglers stand out) — {a.data.name}", fontsize=13,
                 fontweight="bold")
    for ax, (_, row) in zip(axes.flat, multi.iterrows(), strict=False):
        got = busy_grid(a.data, row["experiment"])  # the rank files' columns, not the steps frame
        if got is None:
            ax.set_visible(False)
            continue
        grid, (r0, r1), (s0, s1), any_compute = got
        # nearest-neighbour from the data, coloured after: the same pixels as colouring all 2M cells
        # first (matplotlib's choice when it shrinks an image), without their 64 MB of RGBA
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", interpolation_stage="data",
                       extent=(s0 - 0.5, s1 + 0.5, r1 + 0.5, r0 - 0.5))
        what = "compute" if any_compute else "step"
        ax.set_title(f"{row['experiment']} ({what})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("rank")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, label=f"{what} time (ms)")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig


def heatmap_spec() -> PlotSpec:
    return PlotSpec("heatmap", "Per-rank heat map", "Each rank's busy time (compute where measured, else the whole "
                    "step) per timed step; a straggler is a bright row.", plot_heatmap, prepare)
