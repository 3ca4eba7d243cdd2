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


def storage_key(t: torch.Tensor) -> Key:
    """A tensor subclass wrapping another (tp, mix: a DTensor, its local shard; an AsyncCollectiveTensor, its
    result: autograd saves them above the dispatcher) is keyed by the storage of the tensor it wraps."""
    while is_traceable_wrapper_subclass(t):
        inner, _ = t.__tensor_flatten__()
        t = getattr(t, inner[0])
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def parameter_keys(params: Iterable[torch.Tensor]) -> set[Key]:
    """Storage keys of parameters, a DTensor's local shard for a sharded one."""
    keys = set()
    for p in params:
        local = p.to_local() if hasattr(p, "to_local") else p
        keys.add(storage_key(local))
    return keys


class _Held:
    """What autograd keeps in place of a saved tensor; its end is the tensor's release."""

    __slots__ = ("key", "owner", "tensor")

    def __init__(self, tensor: torch.Tensor, key: Key | None, owner: SavedPeak) -> None:
        self.tensor, self.key, self.owner = tensor, key, owner

    def __del__(self) -> None:
        if self.key is not None:
            self.owner.release(self.key)


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
        key = None
        if t.layout == torch.strided and t.device.type != "meta":
            key = storage_key(t)
            if key not in self.exclude and self.params is not None:
                self.exclude |= parameter_keys(self.params())
            if key in self.exclude or isinstance(t, torch.nn.Parameter):
                key = None
            else:
                if key not in self.refs:
                    self.live += key[1]
                    self.peak = max(self.peak, self.live)
                self.refs[key] = self.refs.get(key, 0) + 1
        # detached: an output saved with its grad_fn would make a cycle the graph's release cannot break
        return _Held(t.detach(), key, self)

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    @contextlib.contextmanager
    def watch(self) -> Iterator[SavedPeak]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self
