"""single: the baseline. One process, one device, the whole global batch every step.

Every other strategy is checked against this one: same seed, same global batch, same loss.
"""

from __future__ import annotations

import sys

from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.trainer import ReplicaTrainer


def build(ctx: Context) -> ReplicaTrainer:
    return ReplicaTrainer(ctx)  # no gradient reduction: one replica sees the whole batch


if __name__ == "__main__":
    sys.exit(main(build, "single"))
