"""The memory plan of a tensor-parallel layout (`tp`, `mix`) of a project model: one row per layout.

A rank of such a layout holds its pipeline stage after the TP cut. The caller gives two profiles
of the model (analysis.plan.ModelShape): `whole`, the uncut model (the trainers balance the stages
by its parameter counts), and `cut`, the same blocks as TP rank 0 holds them (local parameter
shapes; saved bytes per sample under the layout's recomputation: trainers/common/activations.py
measures them, profile_tp). From them, per stage s of pp:
- state: the registry's `state_bytes` on the stage's local shapes (`local=True`): sharded tensors
  cut by tp, replicated ones whole, then split over dp as `shard` says (ZeRO-1's greedy whole
  tensors, FSDP2's dim-0 shares);
- activations: the stage's saved bytes per sample x the micro-batch x the micro-batches it keeps in
  flight (1F1B: min(pp - s, M), GPipe: M; without a pipeline one micro-batch at a time: gradient
  accumulation frees each one's graph in its backward). The model input the first block saves (the mlp's
  image, the transformer's token ids) and the targets the loss saves are slices of the replica's batch in
  every micro-batch, and a saved slice keeps its whole storage: the first and last stages count them whole.
Each figure is the largest over the stages (the busiest rank's, as the bench compares it with the
largest rank's `end` record). Torch-free.
"""

from __future__ import annotations

from typing import Any

from contract import registry
from contract.balance import balance_by_params

Layout = dict[str, Any]  # tp, pp, shard, schedule, micro_batch (0: the whole share), chunks


def settings_of(record: registry.Strategy, world: int, settings: Layout) -> Layout:
    """The layout's degrees, a missing one read as the strategy's own (tp: the world is the TP group)."""
    s = {"tp": world if record.kind == "tensor" else 1, "pp": 1, "shard": "none", "schedule": "1f1b",
         "micro_batch": 0, "chunks": 4, **settings}
    if record.kind == "tensor":
        s.update(tp=world, pp=1, shard="none")
    return s


def micro_batches(record: registry.Strategy, replica: int, s: Layout) -> tuple[int, float]:
    """(M, samples per micro-batch): --micro-batch B cuts the share into replica / B (pipelines: their chunks)."""
    if s["micro_batch"]:
        m = max(replica // s["micro_batch"], 1)
    else:
        m = s["chunks"] if record.micro_batches else 1
    return m, replica / m


def in_flight(stage: int, pp: int, m: int, schedule: str) -> int:
    """Micro-batches whose activations stage `stage` of `pp` keeps at once (the registry's samples_in_flight,
    per stage: 1F1B's warm-up holds pp - stage of them, GPipe all)."""
    if pp == 1:
        return 1
    return m if schedule == "gpipe" else min(pp - stage, m)


def stages(whole: list[int], pp: int) -> list[range]:
    """The block indices of each stage: balanced by the uncut model's parameters, as the trainers cut."""
    out, start = [], 0
    for size in balance_by_params(whole, pp):
        out.append(range(start, start + size))
        start += size
    return out


def plan_layout(record: registry.Strategy, whole: list[int], cut: list[Any], world: int, global_batch: int,
                optimizer: str, settings: Layout) -> dict[str, Any]:
    """Planned bytes of the busiest rank: param, grad, optim, activation (each the largest over stages).
    `whole`: the uncut blocks' parameter counts; `cut`: analysis.plan.Block of TP rank 0 (local shapes)."""
    s = settings_of(record, world, settings)
    tp, pp = int(s["tp"]), int(s["pp"])
    dp = max(world // (tp * pp), 1)
    replica = global_batch // dp
    m, micro = micro_batches(record, replica, s)
    rows = []
    for i, blocks in enumerate(stages(whole, pp)):
        mine = [cut[b] for b in blocks]
        shapes = [sh for b in mine for sh in b.shapes]
        held = record.state_bytes(sum(b.params for b in mine), world, optimizer, shapes=shapes, settings=s,
                                  local=True)
        # the input and targets a micro-batch saves are slices of the replica's batch: their whole storage is kept
        of_batch = sum(b.batch_per_sample for b in mine)
        act = in_flight(i, pp, m, s["schedule"]) * micro * (sum(b.saved_per_sample for b in mine) - of_batch)
        act += replica * of_batch
        rows.append((held, act))
    return {"dp": dp, "tp": tp, "pp": pp, "shard": s["shard"] if dp > 1 else "none", "micro_batches": m,
            "param_bytes": max(h.param_bytes for h, _ in rows), "grad_bytes": max(h.grad_bytes for h, _ in rows),
            "optim_bytes": max(h.optim_bytes for h, _ in rows), "activation_bytes": int(max(a for _, a in rows))}
