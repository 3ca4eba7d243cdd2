"""A small CIFAR-10 file set in the real format (cifar-10-batches-py/, pickled dicts with bytes
keys, `labels` before `data`), for tests of the real loading code."""

from __future__ import annotations

import os
import pickle

import numpy as np


def write(data_dir: str, train: tuple[int, ...] = (160, 160), test: int = 64, seed: int = 0) -> str:
    """Training batches of the given sizes and a test batch, of learnable images (a template per
    class plus noise). Returns the data dir."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 3072))
    folder = os.path.join(data_dir, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for i, n in enumerate((*train, test)):
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-60, 61, size=(n, 3072))
        data = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        name = f"data_batch_{i + 1}" if i < len(train) else "test_batch"
        batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in labels], b"data": data,
                 b"filenames": [f"img_{name}_{j}.png".encode() for j in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=4)
    return data_dir
