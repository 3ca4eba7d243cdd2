"""What every figure the analysis draws must have, and the synthetic sweep that draws them all
(shared by tests/unit/test_analysis.py and tests/integration/test_analysis_real.py)."""

from __future__ import annotations

from matplotlib.figure import Figure
from PIL import Image

from analysis.synthetic import write_sweep


def write_plot_sweep(logs: str) -> None:
    """A synthetic sweep `syn` under logs that exercises every plot: pipeline chunks, repeats, a straggler."""
    write_sweep(logs, "syn", strategies=("single", "ddp", "pipeline"), nodes=(1, 2, 4), chunks=(2, 4, 8),
                repeats=2, straggler=1)


def colours(png: str) -> int:
    """Distinct colours in a PNG: a blank figure has one or two."""
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def check_figure(fig: Figure, name: str) -> None:
    """A title, labelled non-empty axes, and a legend where entries share a colour code."""
    assert fig._suptitle is not None and fig._suptitle.get_text(), f"{name}: no title"
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes, name
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axis has no label"
        assert ax.has_data(), f"{name}: empty axes"
    if name not in ("heatmap", "time_to_accuracy"):  # one colour-coded bar/cell per entry: no legend needed
        assert any(ax.get_legend() is not None for ax in axes) or name == "memory", f"{name}: no legend"
