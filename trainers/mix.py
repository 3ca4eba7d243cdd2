"""mix: pipeline x data x tensor parallelism in one run (`--pp`, `--shard`, `--tp`; dp = world / (tp pp)).

The ranks form a DeviceMesh of shape (pp, dp, tp), tp innermost: rank = (s * dp + d) * tp + t, so a
TP group is tp consecutive ranks, inside one node (a wider tp is refused), and the dp groups and the
pipeline cross nodes where they must.

- pp: the model's blocks are cut into `pp` stages as `pipeline` cuts them (`--balance`), and each step's
  replica batch flows through them in micro-batches (`--chunks`) under `--schedule gpipe|1f1b`
  (torch.distributed.pipelining: this is `PipelineTrainer`, over the mesh's pp group). TP rank t of
  stage s sends to TP rank t of stage s+1.
- tp: inside each stage the blocks are cut as `tp` cuts them (trainers/common/tensor_parallel.py): the
  whole model is cut over the mesh's tp dimension before the stages are split off, so the stage
  boundaries are what a rank sends (a colwise output of the mlp carries 1/tp of the hidden units).
  Sequence parallelism (`--sequence-parallel on`, as tp) works across stage boundaries: between blocks
  the residual stream is a plain tensor of this rank's T/tp positions, so a boundary carries 1/tp.
- dp: the replicas of a stage (same stage, same TP rank) each read their slice of the global batch.
  `--shard none`: their gradients are averaged in one all-reduce after the schedule; `optim` (ZeRO-1):
  averaged the same way, then each rank steps only the parameters it owns and broadcasts them
  (trainers/common/dataparallel.py: ZeroRedundancyOptimizer cannot broadcast DTensor parameters);
  `full` (FSDP2): every block and the stage are `fully_shard`-ed over the mesh's dp dimension,
  unsharded once per step (`reshard_after_forward=False`, torchtitan's choice under a pipeline) and
  their gradients reduce-scattered once, after the last micro-batch.

Maths: the schedule sums the micro-batch gradients and divides by their count, dp averages the
replicas' and TP computes single's products (up to rounding): a step is single's step on the
global batch. Communication happens inside the schedule and the layers (`comm_s` null); `comm_bytes`
is the registry's formula (Strategy.step_traffic, docs/strategies.md#mix) from what this rank's
stage carries: TP collectives, pipeline boundaries, dp traffic.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from contract import registry
from trainers.common.context import Context
from trainers.common.dataparallel import PartitionedOptimizer, allreduce_mean
from trainers.common.runtime import main
from trainers.common.tensor_parallel import collectives, parallelize
from trainers.common.trainer import StepResult, make_optimizer, tensor_bytes
from trainers.pipeline import PipelineTrainer

MESH_DIMS = tuple("pp dp tp".split())  # the mesh's dimensions, outermost first (not strategy names)


class MixTrainer(PipelineTrainer):
    def __init__(self, ctx: Context) -> None:
        cfg = ctx.cfg
        tp, pp = cfg.tp, cfg.pp
        dp = ctx.world_size // (tp * pp)
        self.mesh = init_device_mesh(ctx.device.type, (pp, dp, tp), mesh_dim_names=MESH_DIMS)
        _, dp_rank, self.tp_rank = self.mesh.get_coordinate()
        self.shard = cfg.shard if dp > 1 else "none"  # one replica: nothing to shard over
        # PipelineTrainer builds the model, calls `prepare` (the TP cut), keeps this rank's stage and
        # sets up the schedule over the pp group.
        super().__init__(ctx, self.mesh["pp"].mesh.tolist(), self.mesh["pp"].get_group(),
                         dp_rank=dp_rank, dp_size=dp)
        self.dp_group = self.mesh["dp"].get_group()
        self.payloads = self.measure_payloads()
        self.shard_data_parallel()
        traffic, settings = registry.get("mix").step_traffic, cfg.to_dict()
        self.step_bytes, messages = traffic(settings, dp, self.payloads)
        alone_bytes, alone_messages = traffic(settings, 1, self.payloads)  # the same step without dp
        self.dp_bytes, self.dp_messages = self.step_bytes - alone_bytes, messages - alone_messages
        # A dp peer on another simulated node, if any: then the dp traffic crosses the emulated link.
        dp_ranks = self.mesh["dp"].mesh.tolist()
        self.remote_peer = next((r for r in dp_ranks if self.meter.crosses_nodes(r)), None)
        if ctx.rank == 0:
            self.notes.append(f"mesh pp {pp} x dp {dp} x tp {tp}, shard {self.shard}, "
                              f"sequence parallel {cfg.sequence_parallel if tp > 1 else 'off (tp 1)'}")

    # ---- building ------------------------------------------------------------------------
    def prepare(self, full: nn.Sequential) -> nn.Sequential:
        """The whole model cut over the tp dimension (every rank, before its stage is split off)."""
        if self.ctx.cfg.tp > 1:
            parallelize(full, self.mesh["tp"], self.ctx.cfg.model, self.ctx.cfg.sequence_parallel == "on")
        return full

    def measure_payloads(self) -> registry.Payloads:
        """What this rank's stage carries per step, for the registry's traffic formula."""
        cfg = self.ctx.cfg
        seq = self.ctx.data.spec.shape[0] if cfg.model == "transformer" else 1
        count, per_sample = collectives(self.module, self.first_block, cfg.model, seq)
        replica_batch = cfg.global_batch // self.dp_size
        fwd, bwd = self.activation_bytes(replica_batch)
        return registry.Payloads(tp=per_sample * replica_batch * registry.FP32, collectives=count,
                                 boundary=fwd + bwd, sends=int(not self.is_last) + int(not self.is_first),
                                 stage=tensor_bytes(self.module.parameters()), units=1 + self.sharded_blocks())

    def sharded_blocks(self) -> int:
        return sum(1 for b in self.module if any(p.requires_grad for p in b.parameters()))

    def shard_data_parallel(self) -> None:
        """`optim`: ZeRO-1 over the dp group; `full`: FSDP2 over the dp mesh dimension (in place: the
        pipeline stage keeps the same module object, and its schedule drives FSDP's reduce-scatter)."""
        if self.shard == "full":
            for block in self.module:
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block, mesh=self.mesh["dp"], reshard_after_forward=False)
            fully_shard(self.module, mesh=self.mesh["dp"], reshard_after_forward=False)
            self.params = [p for p in self.module.parameters() if p.requires_grad]  # now dp-sharded
            self.optimizer = make_optimizer(self.params, self.ctx.cfg)
        elif self.shard == "optim":
            self.optimizer = PartitionedOptimizer(  # type: ignore[assignment]
                self.params, lambda mine: make_optimizer(mine, self.ctx.cfg), self.dp_group)

    # ---- a step --------------------------------------------------------------------------
    def reduce_gradients(self) -> tuple[float, int]:
        """After the schedule: average the replicas' gradients (FSDP2 has reduce-scattered them already)."""
        if self.dp_size > 1 and self.shard != "full" and self.params:
            allreduce_mean([p.grad for p in self.params], self.dp_group, self.dp_size)
        if self.remote_peer is not None and self.dp_bytes:
            self.meter.emulate(int(self.dp_bytes), messages=int(self.dp_messages), peer=self.remote_peer)
        return 0.0, 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        out = super().train_step(x, y)
        return StepResult(out.loss, out.samples, None, int(self.step_bytes))

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        result = super().evaluate(x, y)
        if self.shard == "full":  # kept unsharded after forward: shard again, as a training step leaves it
            for m in self.module.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()
        return result

    # ---- state -----------------------------------------------------------------------------
    @property
    def reports_state(self) -> bool:
        return self.dp_rank == 0 and self.tp_rank == 0


if __name__ == "__main__":
    sys.exit(main(lambda ctx: MixTrainer(ctx), "mix"))
