"""A rank's side of GPU sharing: how many ranks share its GPU, the cap on its caching allocator,
and what an out-of-memory error record carries. The plan itself is contract/gpushare.py.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from contract import envnames
from contract.gpushare import AUTO, check_fraction, fraction_for


def ranks_on_my_gpu(local_world_size: int, device_count: int) -> int:
    """How many ranks share this rank's GPU: the launcher says so; otherwise local ranks per GPU."""
    if os.environ.get(envnames.RANKS_PER_GPU):
        return int(os.environ[envnames.RANKS_PER_GPU])
    return max(1, -(-local_world_size // max(device_count, 1)))


def apply_memory_fraction(requested: float, device: Any, ranks_on_gpu: int) -> tuple[float | None, str]:
    """Cap this process's share of `device`; returns (fraction, a note for config.json).
    A rank alone on its GPU (a real cluster) is capped only when a fraction was asked for."""
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
