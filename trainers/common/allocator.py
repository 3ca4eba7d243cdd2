"""The CPU allocator state every rank trains with: chosen here, never inherited.

glibc's malloc serves a block of at least M_MMAP_THRESHOLD bytes with a fresh mmap and unmaps it
on free, so every such block page-faults anew each time it is allocated. The threshold starts at
128 KiB and rises only when the process happens to free a larger mmapped block (glibc's dynamic
rule): a rank whose set-up freed a large block reuses heap memory for its activations, one whose
set-up did not pays page faults on every step (a bare `cnn` loop: 50-65 ms a step instead of 36).
What a rank did before training must not decide its step time, so `apply` fixes the state:

- M_MMAP_THRESHOLD = 1 GiB: every block below it comes from the heap and is reused after a free.
  Setting it also switches glibc's dynamic rule off.
- M_TRIM_THRESHOLD = 2 GiB - 1 (mallopt's largest value): freed memory at the top of the heap
  stays mapped, so the next step does not fault it in again. The peak resident set, which the
  logs report, is unchanged by this; only memory freed after the peak is kept.

`runtime.main` calls `apply` first thing in every rank of every strategy, whatever started it
(the simulate launcher, srun, submitit, torchrun, a shell). A variable such as
MALLOC_MMAP_THRESHOLD_ in the environment is overridden. Torch-free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import asdict, dataclass

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int


@dataclass(frozen=True)
class AllocatorState:
    allocator: str  # "glibc", or what was found instead
    mmap_threshold: int | None  # bytes; None where it could not be set
    trim_threshold: int | None
    note: str = ""

    def describe(self) -> dict:
        return asdict(self)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def apply() -> AllocatorState:
    """Set the allocator state described above for this process; say what was set."""
    libc = _libc()
    if libc is None:
        return AllocatorState("not glibc", None, None, "mallopt unavailable: the C library's defaults apply")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    name = f"glibc {libc.gnu_get_libc_version().decode()}"
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    failed = [p for p, ok in (("M_MMAP_THRESHOLD", mmap_ok), ("M_TRIM_THRESHOLD", trim_ok)) if not ok]
    return AllocatorState(name, MMAP_THRESHOLD if mmap_ok else None, TRIM_THRESHOLD if trim_ok else None,
                          f"mallopt refused {', '.join(failed)}" if failed else "")
