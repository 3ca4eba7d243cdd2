"""Data sets and the global-batch order every strategy shares.

All data sets are small enough to sit in memory as tensors. `GlobalBatches` fixes, from the
seed alone, which samples form step s's global batch; a data-parallel rank takes its slice
of that batch, so `single` and every data-parallel layout see exactly the same samples.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from contract import cifarfiles
from contract.tables import TRAIN_SAMPLES


@dataclass(frozen=True)
class DataSpec:
    shape: tuple[int, ...]  # one sample's shape (image C,H,W or token sequence length)
    num_classes: int  # classes, or vocabulary size for token data
    kind: str  # "image" or "tokens"

    @property
    def in_features(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Dataset:
    name: str
    spec: DataSpec
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


SYNTH_TRAIN, SYNTH_VAL = TRAIN_SAMPLES["synthetic"], 512
TOKEN_VOCAB, TOKEN_LEN = 64, 32


def _synthetic_images(seed: int, n: int, shape: tuple[int, ...], classes: int, g: torch.Generator):
    templates = torch.randn(classes, *shape, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, classes, (n,), generator=g)
    x = templates[y] * 0.5 + torch.randn(n, *shape, generator=g)
    return x, y


def _synthetic_tokens(seed: int, n: int, g: torch.Generator):
    """Sequences from a fixed random Markov chain (learnable next-token prediction)."""
    rule = torch.Generator().manual_seed(seed)
    logits = torch.randn(TOKEN_VOCAB, TOKEN_VOCAB, generator=rule) * 3
    probs = torch.softmax(logits, dim=1)
    seq = torch.empty(n, TOKEN_LEN + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(0, TOKEN_VOCAB, (n,), generator=g)
    for t in range(TOKEN_LEN):
        seq[:, t + 1] = torch.multinomial(probs[seq[:, t]], 1, generator=g).squeeze(1)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def synthetic(seed: int, tokens: bool) -> Dataset:
    # Data depend on the seed only through fixed offsets: same data for every strategy.
    gen_train = torch.Generator().manual_seed(10_000 + seed)
    gen_val = torch.Generator().manual_seed(20_000 + seed)
    if tokens:
        spec = DataSpec((TOKEN_LEN,), TOKEN_VOCAB, "tokens")
        xt, yt = _synthetic_tokens(seed, SYNTH_TRAIN, gen_train)
        xv, yv = _synthetic_tokens(seed, SYNTH_VAL, gen_val)
    else:
        spec = DataSpec((3, 32, 32), 10, "image")
        xt, yt = _synthetic_images(seed, SYNTH_TRAIN, spec.shape, 10, gen_train)
        xv, yv = _synthetic_images(seed, SYNTH_VAL, spec.shape, 10, gen_val)
    return Dataset("synthetic", spec, xt, yt, xv, yv)


def digits() -> Dataset:
    """scikit-learn's 1797 real 8x8 handwritten digits, used as 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))  # fixed split
    x, y = x[order], y[order]
    n_val = len(y) - TRAIN_SAMPLES["digits"]  # 297 of sklearn's 1797
    return Dataset("digits", DataSpec((1, 8, 8), 10, "image"), x[n_val:], y[n_val:], x[:n_val], y[:n_val])


CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def _cifar_batches(paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for path in paths:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
    return (x - CIFAR_MEAN) / CIFAR_STD, torch.from_numpy(np.concatenate(ys))


def cifar10(data_dir: str) -> Dataset:
    """CIFAR-10 in its python format (`cifar-10-batches-py/`, as torchvision downloads it; where and
    how many: cifarfiles.py). Reads every `data_batch_*` present, so a small set works for tests."""
    problem = cifarfiles.missing(data_dir)  # validation refuses this first; files can go in between
    if problem:
        raise FileNotFoundError(problem)
    xt, yt = _cifar_batches(cifarfiles.train_files(data_dir))
    xv, yv = _cifar_batches([os.path.join(cifarfiles.folder(data_dir), cifarfiles.TEST_FILE)])
    return Dataset("cifar10", DataSpec((3, 32, 32), 10, "image"), xt, yt, xv, yv)


def data_spec(name: str, tokens: bool = False) -> DataSpec:
    """A data set's sample shape and classes, without loading it."""
    if tokens:
        return DataSpec((TOKEN_LEN,), TOKEN_VOCAB, "tokens")
    return DataSpec((1, 8, 8) if name == "digits" else (3, 32, 32), 10, "image")


def _load_whole(name: str, seed: int, data_dir: str, tokens: bool) -> Dataset:
    if name == "synthetic":
        return synthetic(seed, tokens)
    if name == "digits":
        return digits()
    if name == "cifar10":
        return cifar10(data_dir)
    raise ValueError(f"unknown dataset {name!r}")


def first_samples(ds: Dataset, n: int) -> Dataset:
    """The first `n` training samples (the same ones on every rank and strategy, and each size's
    samples a prefix of the next larger size's); the validation set stays whole."""
    if not 0 < n <= len(ds.y_train):
        raise ValueError(f"invalid data_size {n}: dataset {ds.name} has {len(ds.y_train)} training samples")
    return dataclasses.replace(ds, x_train=ds.x_train[:n], y_train=ds.y_train[:n])


def load(name: str, seed: int, data_dir: str, tokens: bool = False, data_size: int = 0) -> Dataset:
    """Data set `name`; with `data_size` > 0 only its first `data_size` training samples."""
    ds = _load_whole(name, seed, data_dir, tokens)
    return first_samples(ds, data_size) if data_size else ds


def split_sizes(total: int, parts: int) -> list[int]:
    """Sizes of `parts` contiguous slices of `total` samples, as even as possible."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class GlobalBatches:
    """Step -> indices of that step's global batch; a new permutation every epoch."""

    def __init__(self, n_samples: int, global_batch: int, seed: int) -> None:
        if global_batch > n_samples:
            raise ValueError(f"global batch {global_batch} is larger than the data set ({n_samples} samples)")
        self.n, self.batch, self.seed = n_samples, global_batch, seed
        self.steps_per_epoch = n_samples // global_batch
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch = self.epoch_of(step)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        start = (step % self.steps_per_epoch) * self.batch
        return self._perm[start:start + self.batch]

    def shard(self, step: int, part: int, parts: int) -> torch.Tensor:
        """This data-parallel rank's contiguous slice of step's global batch."""
        sizes = split_sizes(self.batch, parts)
        start = sum(sizes[:part])
        return self.indices(step)[start:start + sizes[part]]
