"""What every figure shares: strategy colours, series labels, the figure frame, legends, PlotSpec.

analysis/plots.py (the scaling plots) and analysis/axisplots.py (one figure per swept setting) both
draw with these, so a strategy has one colour and a setting one label format everywhere.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from contract import registry  # noqa: E402
from contract.config import OWN_SETTINGS  # noqa: E402
from contract.registry import NAMES as STRATEGIES  # noqa: E402
from contract.registry import names  # noqa: E402

if TYPE_CHECKING:
    from analysis.metrics import Analysis

PIPELINED = names(micro_batches=True)
_COLOURS = plt.get_cmap("tab20").colors
MAX_LEGEND = 14  # beyond this many lines a legend hides the data
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", "-.", (0, (5, 1, 1, 1)))
# How a setting shows in a label when it varies; any other setting shows as "name value".
LABEL_FORMATS = (("nodes", "n{}"), ("procs_per_node", "p{}"), ("global_batch", "b{}"), ("chunks", "c{}"),
                 ("schedule", "{}"), ("precision", "{}"), ("link", "{}"), ("model", "{}"), ("dataset", "{}"),
                 ("optimizer", "{}"), ("stages_setting", "k{}"), ("sweep", "{}"), ("sync_every", "H{}"),
                 ("outer", "{}"), ("outer_lr", "outer lr {}"), ("staleness", "S{}"))


def colour(strategy: str) -> tuple:
    i = STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES) + zlib.crc32(strategy.encode()) % 8
    return _COLOURS[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]


def setting_text(key: str, value) -> str:
    """One setting's value as a label shows it: b64, p4, bf16, 'all samples' (data_size 0)."""
    if key == "data_size":
        return f"{value} samples" if value else "all samples"
    fmt = dict(LABEL_FORMATS).get(key)
    return fmt.format(value) if fmt else f"{key} {value}"


def series_label(row: pd.Series, varying: set[str]) -> str:
    """The strategy plus whatever else varies in this sweep (procs, chunks, schedule, precision...)."""
    parts = [str(row["strategy"])]
    known = [k for k, _ in LABEL_FORMATS]
    for key in [*known, *sorted(varying - set(known))]:
        if key in varying and key != "strategy" and (key not in ("chunks", "schedule") or
                                                     row["strategy"] in PIPELINED) and \
                (key not in OWN_SETTINGS or key in registry.get(str(row["strategy"])).settings):
            parts.append(setting_text(key, row[key]))
    return " ".join(parts)


def varying(df: pd.DataFrame, keys: list[str]) -> set[str]:
    """The keys that take more than one value in `df`."""
    return {k for k in keys if k in df and df[k].nunique(dropna=False) > 1}


def first_repeats(a: Analysis) -> tuple[pd.DataFrame, set[str]]:
    """The measured experiments of each configuration's first repeat (what the figures show), and
    the configuration keys but the node count that vary among them."""
    m = a.measured
    first = m[m["repeat"] == m.groupby(a.config_key, dropna=False)["repeat"].transform("min")]
    return first, varying(first, [k for k in a.config_key if k != "nodes"])


def figure(title: str, ncols: int = 1, width: float = 7.5, height: float = 4.5) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * (1 if ncols == 1 else 0.75 * ncols), height),
                             squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig, list(axes[0])


def legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:MAX_LEGEND], labels[:MAX_LEGEND], fontsize=8, **kw)


@dataclass
class PlotSpec:
    name: str
    title: str
    caption: str
    make: Callable[[Analysis], Figure | str]
    # run before the drawing workers fork: what they would each read again from the rank files'
    # mapped pages (a fault per page in every forked process) is read once, here
    prepare: Callable[[Analysis], object] | None = None
