"""The mixture's memory: bytes per GPU of a pp x dp x tp layout of a transformer given by its shape. Torch-free.

The model is Megatron's GPT: `layers` blocks of 12h^2 + 13h parameters, a word embedding (V x h, split
over the tensor-parallel ranks by vocabulary) and a learned position table (s x h, replicated), a final
layer norm, and an output layer tied to the word embedding (with pp > 1 the last stage keeps its own copy).

Per GPU, the busiest stage (the largest of the first and the last, which bound every middle one):
- state: the stage's parameters / tp, at mixed-precision bytes per parameter (bf16/fp16: 2 param + 2 grad
  + 4 fp32 master + optimizer 8 (Adam) or 4 (SGD momentum): 16 with Adam; fp32: 4 + 4 + 8, no master);
  shard `optim` divides the master and optimizer state by dp (ZeRO-1, Megatron's distributed
  optimizer), `full` divides all three (ZeRO-3 / FSDP).
- activations per layer and micro-batch (Korthikanti et al. 2022, bytes at 16 bits, x2 at fp32):
  no TP sbh(34 + 5as/h); TP sbh(10 + 24/t + 5as/(ht)); TP+SP sbh(34/t + 5as/(ht)); selective
  recompute drops the 5as/(ht) attention term; full recompute keeps the layer input 2sbh (/t with
  SP) plus, once, the full activations of the layer being recomputed. Times the micro-batches the
  stage keeps: 1F1B min(pp - stage, m), GPipe m, no pipeline 1 (gradient accumulation).
  First stage: + the embedding output 2sbh (/t with SP); last stage: + the final norm and output
  projection inputs 4sbh (/t with SP) and the fp32 logits 4sbV/t.
- buffers: a stage boundary's send and receive (2sbh/t each with TP: Megatron's scatter-gather);
  shard full: two layers' parameters gathered and one layer's gradients reduce-scattered.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.registry import OPTIMIZER_STATES

SHARDS = ("none", "optim", "full")
RECOMPUTES = ("none", "selective", "full")
# Bytes per element: (parameter, gradient, fp32 master copy) by precision.
STATE_BYTES = {"bf16": (2, 2, 4), "fp16": (2, 2, 4), "fp32": (4, 4, 0)}


@dataclass(frozen=True)
class Transformer:
    layers: int
    hidden: int
    heads: int
    seq: int
    vocab: int

    @property
    def layer_params(self) -> int:
        return 12 * self.hidden**2 + 13 * self.hidden  # attention 4h^2+4h, MLP 8h^2+5h, 2 layer norms

    @property
    def params(self) -> int:
        """Narayanan et al. 2021's count: 12lh^2 (1 + 13/(12h) + (V + s)/(12lh)), plus the final norm."""
        return self.layers * self.layer_params + (self.vocab + self.seq) * self.hidden + 2 * self.hidden

    def layer_flops(self, b: int) -> float:
        """Forward FLOPs of one layer for b samples: GEMMs 24bsh^2, attention scores and values 4bs^2h."""
        return 24 * b * self.seq * self.hidden**2 + 4 * b * self.seq**2 * self.hidden

    def logits_flops(self, b: int) -> float:
        return 2 * b * self.seq * self.hidden * self.vocab


@dataclass(frozen=True)
class Mix:
    tp: int
    pp: int
    dp: int
    shard: str = "none"
    recompute: str = "none"
    micro_batch: int = 1
    sp: bool = False  # sequence parallelism (only with tp > 1)
    schedule: str = "1f1b"

    def micro_batches(self, global_batch: int) -> int:
        return global_batch // (self.dp * self.micro_batch)

    def label(self) -> str:
        return (f"tp{self.tp} pp{self.pp} dp{self.dp} {self.shard}/{self.recompute} B{self.micro_batch}"
                + (" SP" if self.sp else ""))


def refusal(m: Transformer, tp: int, pp: int, world: int, procs: int, global_batch: int,
            micro_batch: int) -> str | None:
    """Why a layout cannot be built (one line), or None."""
    if tp > procs:
        return f"tp {tp} is beyond the {procs} GPUs of a node"
    if procs % tp:
        return f"tp {tp} does not divide the {procs} GPUs of a node (a tensor-parallel group would span nodes)"
    if m.heads % tp or m.hidden % tp:
        return f"tp {tp} does not divide the {m.heads} heads and the hidden size {m.hidden}"
    if pp > m.layers:
        return f"pp {pp} is more stages than the {m.layers} layers"
    if world % (tp * pp):
        return f"tp x pp = {tp * pp} does not divide the {world} GPUs"
    dp = world // (tp * pp)
    if global_batch % (dp * micro_batch):
        return (f"global batch {global_batch} is not divisible by dp x micro-batch = {dp} x {micro_batch}"
                f" at {world} GPUs")
    return None


def stage_layers(layers: int, pp: int, stage: int) -> int:
    """Layers of `stage` when `layers` do not divide evenly: the first stages take one more."""
    return layers // pp + (stage < layers % pp)


def stage_params(m: Transformer, x: Mix, stage: int) -> int:
    """Parameters one GPU of `stage` holds (before data-parallel sharding)."""
    t, h = x.tp, m.hidden
    n = stage_layers(m.layers, x.pp, stage) * m.layer_params // t
    if stage == 0:
        n += -(-m.vocab // t) * h + m.seq * h  # word embedding split by vocabulary, position table replicated
    if stage == x.pp - 1:
        n += 2 * h + (-(-m.vocab // t) * h if x.pp > 1 else 0)  # final norm; the output layer's own copy
    return n


def layer_activation(m: Transformer, b: int, x: Mix, recompute: str | None = None) -> float:
    """Bytes at 16 bits one layer keeps for backward, per micro-batch of b samples (Korthikanti et al. 2022)."""
    s, h, a, t = m.seq, m.hidden, m.heads, x.tp
    recompute = recompute or x.recompute
    if recompute == "full":
        return 2 * s * b * h / (t if x.sp else 1)
    attention = 0.0 if recompute == "selective" else 5 * a * s / (h * t)
    return s * b * h * ((34 / t if x.sp else 10 + 24 / t) + attention)


def in_flight(x: Mix, stage: int, micro: int) -> int:
    if x.pp == 1:
        return 1
    return micro if x.schedule == "gpipe" else min(x.pp - stage, micro)


def stage_memory(m: Transformer, x: Mix, stage: int, global_batch: int, precision: str, optimizer: str) -> dict:
    pb, gb, master = STATE_BYTES[precision]
    act = 1 if precision in ("bf16", "fp16") else 2  # the 16-bit formulas, x2 at fp32
    n = stage_params(m, x, stage)
    ob = master + 4 * OPTIMIZER_STATES[optimizer]
    p, g, o = n * pb, n * gb, n * ob
    if x.shard in ("optim", "full"):
        o = -(-n // x.dp) * ob
    if x.shard == "full":
        p, g = -(-n // x.dp) * pb, -(-n // x.dp) * gb
    b, s, h, t = x.micro_batch, m.seq, m.hidden, x.tp
    split = t if x.sp else 1
    per_mb = stage_layers(m.layers, x.pp, stage) * layer_activation(m, b, x)
    if stage == 0:
        per_mb += 2 * s * b * h / split
    if stage == x.pp - 1:
        per_mb += 4 * s * b * h / split + 4 * s * b * -(-m.vocab // t) / act  # logits are fp32 whatever act is
    activations = in_flight(x, stage, x.micro_batches(global_batch)) * per_mb
    if x.recompute == "full":  # the one layer being recomputed holds all its activations during its backward
        activations += layer_activation(m, b, x, "none")
    buffers = 2 * 2 * s * b * h / t * act if x.pp > 1 else 0.0
    if x.shard == "full":
        buffers += (m.layer_params // t) * (2 * pb + gb)
    return {"param_bytes": p, "grad_bytes": g, "optim_bytes": o, "activation_bytes": int(activations * act),
            "buffer_bytes": int(buffers)}


def memory(m: Transformer, x: Mix, global_batch: int, precision: str, optimizer: str) -> dict:
    """Each figure the largest over the stages; total: the largest stage's sum."""
    stages = [stage_memory(m, x, i, global_batch, precision, optimizer) for i in sorted({0, x.pp - 1})]
    out = {k: max(st[k] for st in stages) for k in stages[0]}
    out["total_bytes"] = max(sum(st.values()) for st in stages)
    return out
