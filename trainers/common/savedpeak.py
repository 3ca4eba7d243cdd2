"""The peak of what autograd holds for backward during one training step, measured in a rank.

`trainers/common/activations.py` adds up what one forward saves; a rank running a pipeline
schedule, recomputation or gradient accumulation frees saved tensors while it saves others, so
what bounds its memory is the peak of the live ones. `SavedPeak` counts a storage as live from
the first time autograd saves a tensor on it until the last saved reference to it is released
(the graph frees it after backward, or drops it unused), and keeps the largest sum.

How: the pack hook returns a small holder instead of the tensor; autograd keeps the holder as
long as it keeps the saved tensor, so the holder's `__del__` is the release. Parameters (a
DTensor's local shard included, and FSDP2's unsharded copies, read from `params` when a new storage
is saved) are excluded: the planner counts them as parameter and buffer bytes.
Under non-reentrant checkpointing (`--recompute`) the hook sees what the checkpoint keeps, the
inputs of each recomputed region, but not the tensors the recomputation saves again during
backward (the checkpoint's own hooks hold those, one region at a time): the figure is what the
graph keeps between forward and backward, which is what recomputation is meant to shrink. A
slice saved for backward counts its whole storage, as the allocator does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

Key = tuple[int, int]  # (storage data pointer, storage bytes)


def storage_keys(t: torch.Tensor) -> list[Key]:
    """The storages a tensor holds: its own, or a wrapper subclass's inner tensors' (a DTensor's local
    shard); none for a tensor without real storage (fake, meta)."""
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()  # type: ignore[attr-defined]
        inner = (getattr(t, n) for n in names)
        return [k for i in inner if isinstance(i, torch.Tensor) for k in storage_keys(i)]
    if t.layout != torch.strided or t.device.type == "meta":
        return []
    try:
        s = t.untyped_storage()
        return [(s.data_ptr(), s.nbytes())]
    except (RuntimeError, NotImplementedError):
        return []


def storage_key(t: torch.Tensor) -> Key:
    """The storage of a plain tensor, or of the one tensor a wrapper holds (a DTensor's local shard)."""
    keys = storage_keys(t)
    return keys[0] if keys else (0, 0)


def parameter_keys(params: Iterable[torch.Tensor]) -> set[Key]:
    """Storage keys of parameters, a DTensor's local shard for a sharded one."""
    return {k for p in params for k in storage_keys(p)}


class _Held:
    """What autograd keeps in place of a saved tensor; its end is the tensor's release."""

    __slots__ = ("keys", "owner", "tensor")

    def __init__(self, tensor: torch.Tensor, keys: list[Key], owner: SavedPeak) -> None:
        self.tensor, self.keys, self.owner = tensor, keys, owner

    def __del__(self) -> None:
        for key in self.keys:
            self.owner.release(key)


class SavedPeak:
    """Peak bytes of live saved storages while `watch()` is active (and until they are released)."""

    def __init__(self, exclude: set[Key] | None = None,
                 params: Callable[[], Iterable[torch.Tensor]] | None = None) -> None:
        self.exclude = set(exclude or ())
        # The module's parameters as they are now: FSDP2 swaps in unsharded ones for forward (other storages)
        self.params = params
        self.refs: dict[Key, int] = {}
        self.live = 0
        self.peak = 0

    def release(self, key: Key) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live -= key[1]

    def _pack(self, t: torch.Tensor) -> _Held:
        keys = storage_keys(t)
        if self.params is not None and any(k not in self.exclude for k in keys):
            self.exclude |= parameter_keys(self.params())  # FSDP2 swaps unsharded parameters in for forward
        keys = [] if isinstance(t, torch.nn.Parameter) else [k for k in keys if k not in self.exclude]
        for key in keys:
            if key not in self.refs:
                self.live += key[1]
                self.peak = max(self.peak, self.live)
            self.refs[key] = self.refs.get(key, 0) + 1
        # detached: an output saved with its grad_fn would make a cycle the graph's release cannot break
        return _Held(t.detach(), keys, self)

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    @contextlib.contextmanager
    def watch(self) -> Iterator[SavedPeak]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self
