"""The ranking of one row of the answer: candidates at one node count, the best, the runner-up,
the margin, whether it is confirmed, and why each other one loses (analysis/advise.py builds the
candidates from measured runs and the projection; docs/advise.md states the rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PARTS = ("compute", "comm", "bubble")
BOUND = {"compute": "compute-bound: compute is {share:.0%} of its step",
         "comm": "communication-bound: communication is {share:.0%} of its step",
         "bubble": "bubble-bound: the pipeline bubble is {share:.0%} of its step"}


@dataclass
class Candidate:
    """One strategy at one node count: its throughput and where its step goes."""
    strategy: str
    throughput: float  # samples/s: median over repeats (measured) or the projection's
    low: float  # the range the margin must beat: min..max over repeats, or +- the held-out error
    high: float
    confirmed: bool  # several repeats (measured) / a held-out check (projected)
    per_sample: dict[str, float]  # seconds per sample of each part of PARTS
    oversubscribed: bool = False
    time_to_target_s: float | None = None
    same_maths: bool = True  # registry: its step is single's on the global batch
    epochs_to_target: float | None = None
    target_range: tuple[float, float] | None = None  # min..max time to target over repeats
    label: str = ""  # the strategy and its own settings off their defaults; empty: the strategy
    epoch_s: float | None = None  # mean time of a complete epoch: every step counts (localsgd's averaging ones too)
    layout: dict = field(default_factory=dict)  # analysis/layouts.py: dp, tp, pp, shard, recompute, ...

    @property
    def key(self) -> str:
        return self.label or self.strategy

    @property
    def step_share(self) -> dict[str, float]:
        total = sum(self.per_sample.values())
        return {k: v / total if total > 0 else 0.0 for k, v in self.per_sample.items()}


@dataclass
class Inputs:
    """What the rows are made of, per node count: candidates and the strategies that cannot run there."""
    candidates: dict[int, dict[str, Candidate]] = field(default_factory=dict)
    refused: dict[int, dict[str, str]] = field(default_factory=dict)
    target_acc: float | None = None  # the validation accuracy time to target is measured at


# ---- ranking -------------------------------------------------------------------------------

def why_loses(loser: Candidate, best: Candidate) -> str:
    """The part of the loser's step, per sample, that exceeds the best's most."""
    excess = {k: loser.per_sample.get(k, 0.0) - best.per_sample.get(k, 0.0) for k in PARTS}
    part = max(PARTS, key=lambda k: excess[k])
    slower = best.throughput / loser.throughput if loser.throughput > 0 else math.inf
    return f"{BOUND[part].format(share=loser.step_share.get(part, 0.0))}; {slower:.2f}x the best's time per sample"


def _ratio(r: float) -> str:
    return f"{r:.1f}x" if abs(r - 1) >= 0.05 else f"{r:.2f}x"


def against(c: Candidate, ref: Candidate, target: float | None) -> str:
    """`c` against `ref` by steps (the mean over an epoch where measured), epochs and time to the
    target: "steps 1.8x faster, reaches 0.95 after 1.4x the epochs: 1.3x faster to target"."""
    # Per epoch where measured: the median step of localsgd leaves out its averaging steps, an epoch does not.
    if c.epoch_s and ref.epoch_s:
        speed = ref.epoch_s / c.epoch_s
    else:
        speed = c.throughput / ref.throughput if ref.throughput > 0 else math.inf
    steps = f"steps {_ratio(speed)} faster" if speed >= 1 else f"steps {_ratio(1 / speed)} slower"
    acc = f"{target:.2f}" if target is not None else "the target"
    if c.time_to_target_s is None:
        return f"{steps}, but does not reach {acc} (every repeat must)"
    epochs = (f" after {_ratio(c.epochs_to_target / ref.epochs_to_target)} the epochs"
              if c.epochs_to_target and ref.epochs_to_target else "")
    gain = ref.time_to_target_s / c.time_to_target_s if ref.time_to_target_s and c.time_to_target_s > 0 else 1.0
    to = f"{_ratio(gain)} faster to target" if gain >= 1 else f"{_ratio(1 / gain)} slower to target"
    return f"{steps}, reaches {acc}{epochs}: {to}"


def _rank_by_target(row: dict, order: list[Candidate], target: float | None) -> None:
    """Fill `row` for candidates whose maths differs: ranked by time to the target accuracy."""
    row["ranked_by"] = "time_to_target"
    reached = sorted((c for c in order if c.time_to_target_s is not None), key=lambda c: c.time_to_target_s)
    if not reached:
        row["why"] = {c.key: "cannot judge: no run reached the target" for c in order}
        return
    best = reached[0]
    row["best"] = row["best_time_to_target"] = best.key
    # What the best is judged against: the fastest to target doing single's maths (ddp, say), else the runner-up.
    exact = [c for c in reached if c.same_maths and c is not best]
    ref = exact[0] if exact and not best.same_maths else (reached[1] if len(reached) > 1 else None)
    row["best_why"] = f"against {ref.key}: {against(best, ref, target)}" if ref is not None else ""
    if len(reached) > 1:
        second = reached[1]
        row["runner_up"] = second.key
        row["margin"] = second.time_to_target_s / best.time_to_target_s - 1 if best.time_to_target_s > 0 else math.inf
        row["confirmed"] = best.confirmed and second.confirmed
        row["tie"] = bool(row["confirmed"] and best.target_range and second.target_range
                          and best.target_range[1] >= second.target_range[0])
    for c in order:
        if c is best:
            continue
        tied = row["tie"] and c.key == row["runner_up"]
        row["why"][c.key] = ("tie with the best: the margin is within the spread between repeats" if tied
                             else against(c, best, target))


def rank_row(nodes: int, source: str, candidates: dict[str, Candidate], refused: dict[str, str],
             target: float | None = None) -> dict:
    """One row of the answer (see the module docstring)."""
    order = sorted(candidates.values(), key=lambda c: -c.throughput)
    row: dict = {"nodes": nodes, "source": source, "best": None, "runner_up": None, "margin": None, "tie": False,
                 "confirmed": False, "best_time_to_target": None, "ranked_by": "throughput",
                 "throughput": {c.key: c.throughput for c in order},
                 "oversubscribed": any(c.oversubscribed for c in order), "why": {},
                 "layout": {c.key: c.layout for c in order if c.layout}}
    if not order:
        row["why"] = dict(refused)
        return row
    if not all(c.same_maths for c in order):
        _rank_by_target(row, order, target)
        row["why"].update(refused)
        return row
    best = order[0]
    row["best"] = best.key
    if len(order) > 1:
        second = order[1]
        row["runner_up"] = second.key
        row["margin"] = best.throughput / second.throughput - 1 if second.throughput > 0 else math.inf
        row["confirmed"] = best.confirmed and second.confirmed
        row["tie"] = row["confirmed"] and best.low <= second.high
    reached = [c for c in order if c.time_to_target_s is not None]
    if reached:
        row["best_time_to_target"] = min(reached, key=lambda c: c.time_to_target_s).key
    for c in order[1:]:
        tied = row["tie"] and c.key == row["runner_up"]
        row["why"][c.key] = ("tie with the best: the margin is within the spread between repeats"
                                  if tied and source == "measured" else
                                  "tie with the best: the margin is within the projection's held-out error"
                                  if tied else why_loses(c, best))
    row["why"].update(refused)
    return row


def answer(inputs: Inputs, sources: dict[int, str]) -> list[dict]:
    return [rank_row(n, sources[n], inputs.candidates.get(n, {}), inputs.refused.get(n, {}), inputs.target_acc)
            for n in sorted(sources)]


# ---- measured candidates -------------------------------------------------------------------
