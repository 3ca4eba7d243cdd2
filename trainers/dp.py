"""dp: `torch.nn.DataParallel`, one process driving every GPU of the node.

Each step, DataParallel replicates the model onto every GPU, scatters the batch, runs the
replicas in threads, gathers the outputs on the first GPU and sums the gradients back
there: the maths is `single`'s, the speed is limited by the one Python process and by
the copies through GPU 0 (why DDP replaced it). It needs at least 2 GPUs: otherwise
there is nothing to compare and the trainer exits 2 with one line.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from contract.errors import ConfigError
from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.trainer import ReplicaTrainer


class DataParallelTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < 2 or ctx.device.type != "cuda":
            raise ConfigError(f"dp (DataParallel) needs at least 2 GPUs on the node; found {gpus} "
                              f"(device {ctx.device})")
        super().__init__(ctx)
        self.model = nn.DataParallel(self.module, device_ids=list(range(gpus)))
        self.notes.append(f"DataParallel over {gpus} GPUs")
        self.note_batchnorm(self.module, gpus, "GPU replica")


if __name__ == "__main__":
    sys.exit(main(lambda ctx: DataParallelTrainer(ctx), "dp"))
