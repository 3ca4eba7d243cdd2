"""GPU partitioning for simulated nodes: which GPU a rank uses and what share of its memory.

The simulate backend runs NODES x PROCS ranks on one machine. With G GPUs, rank r gets GPU
r x G // world (contiguous blocks, so the ranks of one simulated node share a GPU where they
can, and simulated nodes spread over the GPUs). The launcher narrows each rank's
CUDA_VISIBLE_DEVICES to that one GPU and sets TS_RANKS_PER_GPU; every rank then caps its
caching allocator with `torch.cuda.set_per_process_memory_fraction`: MEMORY_FRACTION, or
HEADROOM / ranks-per-GPU by default (the rest is left for CUDA contexts and fragmentation).
Two ranks on one GPU cannot use NCCL, so runtime.py picks gloo then and says so in config.json.

Torch is imported inside functions only: bin/sweep and the launcher use the planning part.
"""

from __future__ import annotations

import os
import re
from typing import Any

from contract import envnames
from contract.errors import ConfigError

HEADROOM = 0.9  # share of a GPU's memory the ranks on it get together by default
AUTO = -1.0  # memory_fraction value meaning "even split"


def assign_gpus(world: int, gpus: int) -> list[int]:
    """GPU index of each rank (contiguous blocks of ranks per GPU)."""
    return [r * gpus // world for r in range(world)] if gpus > 0 else []


def sharing(world: int, gpus: int) -> int:
    """The most ranks any one GPU carries."""
    assign = assign_gpus(world, max(gpus, 1))
    return max(assign.count(g) for g in set(assign))


def fraction_for(requested: float, ranks_on_gpu: int) -> float:
    return HEADROOM / ranks_on_gpu if requested == AUTO else requested


def check_fraction(requested: float, ranks_on_gpu: int) -> None:
    """Fractions of the ranks sharing a GPU must not add up to more than the GPU."""
    if requested != AUTO and requested * ranks_on_gpu > 1 + 1e-9:
        raise ConfigError(f"invalid memory_fraction {requested!r}: {ranks_on_gpu} ranks share a GPU and "
                          f"{ranks_on_gpu} x {requested} = {ranks_on_gpu * requested:.3g} > 1")


def check_layout(memory_fraction: float, world: int, gpus: int) -> None:
    """Sweep-time check for the simulate backend (no GPU here: checked as if on one GPU)."""
    check_fraction(memory_fraction, sharing(world, max(gpus, 1)))


def ranks_on_my_gpu(local_world_size: int, device_count: int) -> int:
    """How many ranks share this rank's GPU: the launcher says so; otherwise local ranks per GPU."""
    if os.environ.get(envnames.RANKS_PER_GPU):
        return int(os.environ[envnames.RANKS_PER_GPU])
    return max(1, -(-local_world_size // max(device_count, 1)))


def apply_memory_fraction(requested: float, device: Any, ranks_on_gpu: int) -> tuple[float | None, str]:
    """Cap this process's share of `device`; returns (fraction, a note for config.json).
    A rank alone on its GPU (a real cluster) is capped only when a fraction was asked for."""
    import torch

    check_fraction(requested, ranks_on_gpu)
    if requested == AUTO and ranks_on_gpu == 1:
        return None, f"whole GPU {torch.cuda.get_device_name(device)} (one rank on it, no memory cap)"
    fraction = fraction_for(requested, ranks_on_gpu)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    total = torch.cuda.get_device_properties(device).total_memory
    return fraction, (f"memory fraction {fraction:.3f} of {torch.cuda.get_device_name(device)} "
                      f"({fraction * total / 2**30:.2f} GiB; {ranks_on_gpu} rank(s) on this GPU)")


_REQUEST = re.compile(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def requested_bytes(message: str) -> int | None:
    m = _REQUEST.search(message)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def oom_fields(error: BaseException, device: Any, fraction: float | None) -> dict[str, Any]:
    """What an out-of-memory `error` record carries: the fraction, requested and available bytes.

    available = fraction x total - reserved (what the capped allocator could still hand out).
    Empty when `error` is not a CUDA out-of-memory error.
    """
    import torch

    if not isinstance(error, torch.OutOfMemoryError) or getattr(device, "type", "") != "cuda":
        return {}
    try:
        total = torch.cuda.get_device_properties(device).total_memory
        reserved = torch.cuda.memory_reserved(device)
    except Exception:  # noqa: BLE001 - a broken CUDA context must not hide the original error
        return {}
    limit = int((fraction if fraction is not None else 1.0) * total)
    requested = requested_bytes(str(error))
    fields = {"memory_fraction": fraction, "limit_bytes": limit, "requested_bytes": requested,
              "available_bytes": max(limit - reserved, 0), "reserved_bytes": reserved, "total_bytes": total}
    req = f"{requested / 2**20:.1f} MiB" if requested is not None else "an unknown amount"
    fields["message"] = (f"OutOfMemoryError: rank out of its GPU memory fraction {fraction}: requested {req}, "
                         f"available {fields['available_bytes'] / 2**20:.1f} MiB of its "
                         f"{limit / 2**20:.1f} MiB limit ({total / 2**30:.1f} GiB GPU)")
    return fields
