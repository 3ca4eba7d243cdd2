"""Models as lists of blocks, so every strategy can cut them into pipeline stages.

`build_model` returns an `nn.Sequential` of blocks; its weights depend only on the seed,
so every strategy (and every rank of one) starts from the same parameters as `single`.
`mlp`, `cnn` and `transformer` have no BatchNorm and no dropout: their maths is the same
under every strategy. The ResNets keep torchvision's BatchNorm (see docs/strategies.md).
A `module:function` model is the user's own list of blocks (usermodel.py resolves it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from contract import usermodel
from contract.balance import balance_by_params  # noqa: F401 - where the tests import it from
from contract.errors import ConfigError
from trainers.common.data import DataSpec


def _mlp(spec: DataSpec, hidden: int = 256, depth: int = 6) -> list[nn.Module]:
    blocks: list[nn.Module] = [nn.Sequential(nn.Flatten(), nn.Linear(spec.in_features, hidden), nn.ReLU())]
    blocks += [nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(depth - 2)]
    blocks.append(nn.Linear(hidden, spec.num_classes))
    return blocks


def _cnn(spec: DataSpec) -> list[nn.Module]:
    c = spec.shape[0]

    def conv(i: int, o: int, pool: bool) -> nn.Module:
        layers: list[nn.Module] = [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)

    return [conv(c, 32, False), conv(32, 32, True), conv(32, 64, False), conv(64, 64, True),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128), nn.ReLU()),
            nn.Linear(128, spec.num_classes)]


def _resnet(spec: DataSpec, depth: int) -> list[nn.Module]:
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(num_classes=spec.num_classes)
    # CIFAR-sized stem: 3x3 stride-1 convolution, no max-pool (32x32 inputs keep their detail).
    net.conv1 = nn.Conv2d(spec.shape[0], 64, 3, 1, 1, bias=False)
    blocks: list[nn.Module] = [nn.Sequential(net.conv1, net.bn1, net.relu)]
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        blocks += list(layer.children())
    blocks.append(nn.Sequential(net.avgpool, nn.Flatten(), net.fc))
    return blocks


class Embed(nn.Module):
    def __init__(self, vocab: int, seq_len: int, dim: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq_len, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tok(x) + self.pos[: x.shape[1]]


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention + MLP (no dropout: deterministic across strategies)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), -math.inf, device=x.device), diagonal=1)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _transformer(spec: DataSpec, dim: int = 128, heads: int = 4, depth: int = 4) -> list[nn.Module]:
    vocab, seq_len = spec.num_classes, spec.shape[0]
    return [Embed(vocab, seq_len, dim), *[DecoderBlock(dim, heads) for _ in range(depth)],
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, vocab))]


def _user_blocks(ref: str, spec: DataSpec) -> list[nn.Module]:
    """Call a module:function model (usermodel.py) and check what it returned: ConfigError, one line."""
    fn = usermodel.load(ref)
    try:
        blocks = fn(spec)
    except Exception as e:  # noqa: BLE001 - the user's code can raise anything: one line, exit 2
        raise ConfigError(f"invalid model {ref!r}: calling it failed: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from None
    if isinstance(blocks, nn.Sequential):
        blocks = list(blocks)
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ConfigError(f"invalid model {ref!r}: returned {type(blocks).__name__} {blocks!r:.60}; "
                          "want a non-empty list of nn.Module blocks")
    bad = [i for i, b in enumerate(blocks) if not isinstance(b, nn.Module)]
    if bad:
        raise ConfigError(f"invalid model {ref!r}: block {bad[0]} is a {type(blocks[bad[0]]).__name__}, "
                          "not an nn.Module")
    return list(blocks)


def build_blocks(name: str, spec: DataSpec) -> list[nn.Module]:
    if usermodel.is_reference(name):
        return _user_blocks(name, spec)
    if name == "mlp":
        return _mlp(spec)
    if name == "cnn":
        return _cnn(spec)
    if name in ("resnet18", "resnet50"):
        return _resnet(spec, int(name[6:]))
    if name == "transformer":
        return _transformer(spec)
    raise ValueError(f"unknown model {name!r}")


def build_model(name: str, spec: DataSpec, seed: int) -> nn.Sequential:
    """The full model, initialised from `seed` alone (same on every rank and strategy)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(*build_blocks(name, spec))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def param_counts(blocks: nn.Sequential) -> list[int]:
    return [sum(p.numel() for p in b.parameters()) for b in blocks]


def split_stages(model: nn.Sequential, balance: list[int]) -> list[nn.Sequential]:
    """Cut the block list into consecutive stages of `balance[i]` blocks."""
    if sum(balance) != len(model):
        raise ValueError(f"balance {balance} covers {sum(balance)} blocks, model has {len(model)}")
    stages, start = [], 0
    for size in balance:
        stages.append(nn.Sequential(*list(model)[start:start + size]))
        start += size
    return stages
