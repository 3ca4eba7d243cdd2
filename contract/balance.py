"""Cutting a model's blocks into pipeline stages by parameter count. Torch-free: the trainers
and the memory planner split the same way."""

from __future__ import annotations


def balance_by_params(counts: list[int], stages: int) -> list[int]:
    """Split consecutive blocks into `stages` groups with parameter sums as even as possible
    (every stage gets at least one block). Minimises the largest stage; O(stages * blocks^2)."""
    n = len(counts)
    if stages > n:
        raise ValueError(f"more stages ({stages}) than blocks ({n})")
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: minimal max-stage cost splitting the first i blocks into k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n - (stages - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    sizes, i = [], n
    for k in range(stages, 0, -1):
        j = cut[k][i]
        sizes.append(i - j)
        i = j
    return sizes[::-1]
