"""asyncps: an asynchronous parameter server with bounded staleness, written here with
torch.distributed point-to-point (gloo).

Rank 0 is the server, ranks 1..W-1 the workers; worker k reads slice k-1 of each global batch,
as in `ps`. The server's parameters have a version: the optimizer steps taken. Step t's update
is made of every worker's gradient for global batch t. A worker never waits for the others:

1. it runs forward and backward on its slice of batch t with the parameters it holds (version
   v), and pushes the gradient, multiplied by its sample count, with a header naming t;
2. the server takes pushes in the order they arrive (from any worker), adds each into step t's
   sum at once, and when step t's sum holds every worker's gradient, divides it by the global
   batch and takes the optimizer step: version t + 1;
3. the worker's pull is answered with the server's current parameters as soon as their version
   is at least t + 1 - S (`--staleness S`): with S = 0 it waits for step t's update, which is
   `ps` (the same maths; summed in arrival order, so equal within rounding); with S > 0 it goes
   on with parameters up to S versions old, and a worker over the bound waits.

Each worker's step record carries `staleness` = t - v, the versions its parameters lagged
behind the update its gradient went into (at most S). With S > 0 which version a worker gets
depends on timing: runs are not bit-reproducible. Only the server holds optimizer state,
validates, and holds the current model; its step records have `loss` null, `samples` 0, and
`comm_s` the time it waited for and received pushes and sent pulls. Between simulated nodes the
server's link carries the traffic: it sleeps each remote push's wire time once the push is in,
and each remote pull's before sending it (trainers/common/traffic.py). A failing rank ends the job
as in every strategy: the launcher stops its peers (their receives would otherwise wait).
"""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

from trainers.common.collectives import Buckets, ps_pull
from trainers.common.context import Context
from trainers.common.runtime import main
from trainers.common.traffic import CommMeter
from trainers.common.trainer import ReplicaTrainer, StepResult, flat_grads, tensor_bytes

SERVER = 0
PUSH, GRADS, PULL = 1, 2, 3  # message tags: a push's header, its gradient buckets, a pull's reply


class AsyncPSTrainer(ReplicaTrainer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, dp_rank=max(ctx.rank - 1, 0), dp_size=ctx.world_size - 1)
        self.is_server = ctx.rank == SERVER
        self.workers = ctx.world_size - 1
        self.staleness = ctx.cfg.staleness
        self.meter = CommMeter(ctx)
        # The server receives from whichever worker pushes first: an any-source receive, which gloo has
        # and NCCL has not. So asyncps talks through a gloo group of its own, on CPU tensors, whatever
        # the backend of the world's group (on CPU the same kind; one code path).
        self.group = dist.new_group(backend="gloo")
        self.device = torch.device("cpu")
        self.grad_buckets = Buckets(self.params, self.device)  # worker: its push; server: the one receiving
        self.param_buckets = Buckets(self.params, self.device)
        self.header = torch.zeros(1, dtype=torch.int64)  # push: the step; pull: the parameters' version
        self.version = 0  # server: optimizer steps taken; worker: the version of the parameters it holds
        self.step = 0  # worker: the global batch it works on next
        self.sums: dict[int, list[torch.Tensor]] = {}  # server: step -> its gradient sum so far
        self.spare: list[list[torch.Tensor]] = []  # server: sums of steps taken, reused (at most S + 1 exist)
        self.counts: dict[int, int] = {}  # server: step -> gradients in that sum
        self.waiting: list[tuple[int, int]] = []  # server: (worker, version its pull needs)
        self.synced = False

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        comm_s, sent = 0.0, 0
        if not self.synced:  # every worker starts from the server's parameters and version
            start = time.perf_counter()
            sent += self._sync()
            comm_s = time.perf_counter() - start
        result = self._serve() if self.is_server else self._work(x, y)
        result.comm_s = (result.comm_s or 0.0) + comm_s
        result.comm_bytes += sent
        return result

    def _sync(self) -> int:
        if self.is_server:
            self.header.fill_(self.version)
            self.param_buckets.pack(self.params)
        sent = ps_pull(self.header, SERVER, group=self.group)
        sent += sum(ps_pull(b, SERVER, self.meter, self.group) for b in self.param_buckets.buffers)
        if not self.is_server:
            self.param_buckets.unpack(self.params)
            self.version = self.step = int(self.header)
        self.synced = True
        return sent

    # ---- worker --------------------------------------------------------------------------------
    def _work(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        staleness = self.step - self.version
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.forward_backward(x, y)  # no fp16 here (registry): the scaler is off
        self.ctx.sync_device()
        start = time.perf_counter()
        self.header.fill_(self.step)
        # Mean over the slice x its size = sum over the slice; the server divides by the global batch.
        buffers = self.grad_buckets.pack(list(flat_grads(self.params)), scale=float(len(y)))
        works = [dist.isend(self.header, SERVER, self.group, tag=PUSH)]
        works += [dist.isend(b, SERVER, self.group, tag=GRADS) for b in buffers]
        for w in works:
            w.wait()
        sent = tensor_bytes([self.header, *buffers])
        works = [dist.irecv(self.header, SERVER, self.group, tag=PULL)]
        works += [dist.irecv(b, SERVER, self.group, tag=PULL) for b in self.param_buckets.buffers]
        for w in works:
            w.wait()  # the server answers once its version is recent enough (and slept the wire time)
        self.param_buckets.unpack(self.params)
        self.version = int(self.header)
        self.step += 1
        return StepResult(loss, len(y), time.perf_counter() - start, sent, staleness=staleness)

    # ---- server --------------------------------------------------------------------------------
    def _serve(self) -> StepResult:
        """Take pushes as they come until this step's update is made: one call per server version."""
        start, sent = time.perf_counter(), 0
        target = self.version + 1
        while self.version < target:
            if self.counts.get(self.version, 0) < self.workers:
                self._receive()
            if self.counts.get(self.version, 0) == self.workers:
                self._update(self.version)  # before answering: the push that completes a sum gets its update
            sent += self._answer()
        return StepResult(None, 0, time.perf_counter() - start, sent)

    def _receive(self) -> None:
        """One push from whichever worker sends first, added into its step's sum at once; its pull waits
        in `waiting` until the parameters are recent enough for it."""
        worker = dist.recv(self.header, group=self.group, tag=PUSH)  # any source
        step = int(self.header)
        for b in self.grad_buckets.buffers:
            dist.recv(b, worker, self.group, tag=GRADS)
        self.meter.emulate(tensor_bytes(self.grad_buckets.buffers), 1, peer=worker)
        if step not in self.sums:
            fresh = self.spare.pop() if self.spare else [torch.empty_like(b) for b in self.grad_buckets.buffers]
            self.sums[step] = [total.zero_() for total in fresh]
        for total, b in zip(self.sums[step], self.grad_buckets.buffers, strict=True):
            total.add_(b)
        self.counts[step] = self.counts.get(step, 0) + 1
        self.waiting.append((worker, step + 1 - self.staleness))

    def _update(self, step: int) -> None:
        """Step `step`'s complete sum, divided by the global batch, is single's gradient: one optimizer step."""
        grads = list(flat_grads(self.params))
        sums = self.sums.pop(step)
        for buf, total in zip(self.grad_buckets.buffers, sums, strict=True):
            buf.copy_(total)
        self.spare.append(sums)
        del self.counts[step]
        self.grad_buckets.unpack(grads, scale=1.0 / self.ctx.cfg.global_batch)
        self.optimizer.step()
        self.version += 1
        self.param_buckets.pack(self.params)

    def _answer(self) -> int:
        """Send the current parameters to every waiting worker whose bound they meet."""
        ready = [w for w, need in self.waiting if need <= self.version]
        self.waiting = [(w, need) for w, need in self.waiting if need > self.version]
        sent = 0
        self.header.fill_(self.version)
        for worker in ready:
            self.meter.emulate(tensor_bytes(self.param_buckets.buffers), 1, peer=worker)  # the server's link
            works = [dist.isend(self.header, worker, self.group, tag=PULL)]
            works += [dist.isend(b, worker, self.group, tag=PULL) for b in self.param_buckets.buffers]
            for w in works:
                w.wait()
            sent += tensor_bytes([self.header, *self.param_buckets.buffers])
        return sent

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        return super().evaluate(x, y) if self.is_server else None  # the server holds the current model

    def state_dict(self) -> dict:
        return {**super().state_dict(), "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.version = state.get("version", 0)


if __name__ == "__main__":
    sys.exit(main(AsyncPSTrainer, "asyncps"))
