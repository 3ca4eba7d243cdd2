"""The heat map shrinks its image before colouring it (`interpolation_stage="data"`): with
nearest-neighbour sampling that must give the pixels of colouring every cell first (what
matplotlib does by itself when it shrinks an image more than threefold)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from analysis.heatmap import plt


def _pixels(grid: np.ndarray, **kw) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(3, 2))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", extent=(-0.5, 599.5, 255.5, -0.5),
                   **kw)
    fig.colorbar(im, ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return np.asarray(Image.open(buf))


def test_shrinking_first_draws_the_same_pixels():
    rng = np.random.default_rng(0)
    grid = rng.lognormal(0, 0.5, (256, 600))
    grid[37] *= 4  # a straggler
    grid[rng.random(grid.shape) < 0.02] = np.nan
    shrunk_first = _pixels(grid, interpolation_stage="data")
    assert np.array_equal(shrunk_first, _pixels(grid, interpolation_stage="rgba"))
    assert not np.array_equal(shrunk_first, _pixels(grid[::-1], interpolation_stage="data"))  # pixels do tell
