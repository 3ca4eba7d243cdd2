"""GPU partitioning for simulated nodes: which GPU a rank uses and what share of its memory.

The simulate backend runs NODES x PROCS ranks on one machine. With G GPUs, rank r gets GPU
r x G // world (contiguous blocks, so the ranks of one simulated node share a GPU where they
can, and simulated nodes spread over the GPUs). The launcher narrows each rank's
CUDA_VISIBLE_DEVICES to that one GPU and sets TS_RANKS_PER_GPU; every rank then caps its
caching allocator with `torch.cuda.set_per_process_memory_fraction`: MEMORY_FRACTION, or
HEADROOM / ranks-per-GPU by default (the rest is left for CUDA contexts and fragmentation).
Two ranks on one GPU cannot use NCCL, so setup.py picks gloo then and says so in config.json.

The plan is torch-free (bin/sweep checks it, the launcher applies it); what a rank does with it,
the cap and the out-of-memory record, is trainers/common/gpumemory.py.
"""

from __future__ import annotations

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
