"""The mixture planner (analysis/mixplan.py) and the layout search (analysis/layout_search.py), through
bin/plan's main: formulas worked by hand, Narayanan et al. 2021's published layouts, refusals."""

from __future__ import annotations

import json
import time

import pytest

from analysis import layout_search, plan
from analysis.mixplan import Mix, Transformer

GIB = 2**30
# Narayanan et al. 2021, Table 1 (A100 80 GB, seq 2048, vocab 51200, full recomputation):
# (layers, hidden, heads, nodes of 8 GPUs, global batch, published tp, pp)
PUBLISHED = {"18.4B": (40, 6144, 48, 32, 1024, 8, 1), "145.6B": (80, 12288, 96, 192, 2304, 8, 8),
             "1008B": (128, 25600, 160, 384, 3072, 8, 64)}


def shape(layers: int, hidden: int, heads: int, seq: int = 2048, vocab: int = 51200) -> list[str]:
    return ["--layers", str(layers), "--hidden", str(hidden), "--heads", str(heads), "--seq", str(seq),
            "--vocab", str(vocab)]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = plan.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def rows_of(argv: list[str], capsys) -> list[dict]:
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)["rows"]


def published_argv(name: str) -> list[str]:
    layers, hidden, heads, nodes, batch, _, _ = PUBLISHED[name]
    return [*shape(layers, hidden, heads), "--nodes", str(nodes), "--procs-per-node", "8", "--global-batch",
            str(batch), "--precision", "bf16", "--gpu", "a100"]


def test_145b_mix_row_equals_the_formulas_by_hand(capsys) -> None:
    """TP 8, PP 8, full recompute, no SP: the first stage's bytes, worked from the paper's formulas."""
    rows = rows_of([*published_argv("145.6B"), "--tp", "8", "--pp", "8", "--recompute", "full",
                    "--sequence-parallel", "off"], capsys)
    r = next(r for r in rows if r["strategy"] == "mix")
    s, b, h, a, V, t, p, L = 2048, 1, 12288, 96, 51200, 8, 8, 80
    assert (r["tp"], r["pp"], r["dp"], r["micro_batch"], r["shard"], r["recompute"]) == (8, 8, 24, 1, "none", "full")
    first = (L // p) * (12 * h * h + 13 * h) // t + (V // t) * h + s * h  # layers / tp, word emb / tp, positions
    last = (L // p) * (12 * h * h + 13 * h) // t + 2 * h + (V // t) * h  # layers, final norm, output layer copy
    n = max(first, last)
    assert (r["param_bytes"], r["grad_bytes"], r["optim_bytes"]) == (2 * n, 2 * n, 12 * n)  # bf16: 2 + 2 + 4 + 8
    # First stage, 1F1B: pp = 8 micro-batches in flight, each layer keeping its input 2sbh; the embedding output;
    # plus one layer recomputed in full: sbh(10 + 24/t + 5as/(ht)).
    first_act = 8 * ((L // p) * 2 * s * b * h + 2 * s * b * h) + s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    last_act = 1 * ((L // p) * 2 * s * b * h + 4 * s * b * h + 4 * s * b * V / t) + \
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert r["activation_bytes"] == int(max(first_act, last_act))
    assert r["buffer_bytes"] == 2 * 2 * s * b * h // t  # a boundary's send and receive, scatter-gathered
    assert r["total_bytes"] == 2 * n + 2 * n + 12 * n + r["activation_bytes"] + r["buffer_bytes"]
    assert r["fits"] and 35 * GIB < r["total_bytes"] < 45 * GIB


@pytest.mark.parametrize("extra,per_layer", [
    # no TP: sbh(34 + 5as/h); TP: sbh(10 + 24/t + 5as/(ht)); TP + SP: sbh(34/t + 5as/(ht)); selective drops 5as/(ht)
    (["--tp", "1", "--recompute", "none"], lambda s, b, h, a, t: s * b * h * (34 + 5 * a * s / h)),
    (["--tp", "4", "--recompute", "none", "--sequence-parallel", "off"],
     lambda s, b, h, a, t: s * b * h * (10 + 24 / t + 5 * a * s / (h * t))),
    (["--tp", "4", "--recompute", "none", "--sequence-parallel", "on"],
     lambda s, b, h, a, t: s * b * h * (34 / t + 5 * a * s / (h * t))),
    (["--tp", "4", "--recompute", "selective", "--sequence-parallel", "on"], lambda s, b, h, a, t: s * b * h * 34 / t),
    (["--tp", "4", "--recompute", "selective", "--sequence-parallel", "off"],
     lambda s, b, h, a, t: s * b * h * (10 + 24 / t)),
])
def test_activation_formulas_of_korthikanti(extra: list[str], per_layer, capsys) -> None:
    """One stage (pp 1): one micro-batch in flight; L layers + the embedding output + the last stage's
    norm/projection inputs and fp32 logits. fp32 precision doubles the 16-bit figures (logits stay 4 bytes)."""
    s, b, h, a, V, L = 512, 2, 1024, 16, 1000, 6
    t = int(extra[1])
    split = t if "on" in extra else 1
    for precision, scale in (("bf16", 1), ("fp32", 2)):
        rows = rows_of([*shape(L, h, a, s, V), "--nodes", "1", "--procs-per-node", "4", "--global-batch", "16",
                        "--micro-batch", str(b), "--precision", precision, *extra], capsys)
        r = next(r for r in rows if r["strategy"] == "mix")
        want = scale * (L * per_layer(s, b, h, a, t) + 2 * s * b * h / split + 4 * s * b * h / split) \
            + 4 * s * b * -(-V // t)
        assert r["activation_bytes"] == pytest.approx(want, abs=2)


def test_sharding_divides_by_dp_and_fp32_has_no_master(capsys) -> None:
    base = [*shape(8, 1024, 16, 512, 1000), "--nodes", "2", "--procs-per-node", "4", "--global-batch", "32",
            "--tp", "2", "--pp", "2"]
    m = Transformer(8, 1024, 16, 512, 1000)
    n = max(layout_search.stage_params(m, Mix(2, 2, 2), i) for i in (0, 1))
    for precision, (pb, gb, ob) in (("bf16", (2, 2, 12)), ("fp32", (4, 4, 8))):
        got = {}
        for shard in ("none", "optim", "full"):
            r = next(r for r in rows_of([*base, "--precision", precision, "--shard", shard], capsys)
                     if r["strategy"] == "mix")
            got[shard] = (r["param_bytes"], r["grad_bytes"], r["optim_bytes"])
        assert got["none"] == (pb * n, gb * n, ob * n)
        assert got["optim"] == (pb * n, gb * n, ob * -(-n // 2))
        assert got["full"] == (pb * -(-n // 2), gb * -(-n // 2), ob * -(-n // 2))


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_layouts_fit_and_plain_replicas_do_not(name: str, capsys) -> None:
    _, _, _, nodes, _, tp, pp = PUBLISHED[name]
    rows = rows_of([*published_argv(name), "--tp", str(tp), "--pp", str(pp), "--recompute", "full",
                    "--sequence-parallel", "off", "--shard", "none"], capsys)
    by = {r["strategy"]: r for r in rows}
    assert by["mix"]["fits"] is True and by["mix"]["dp"] == nodes * 8 // (tp * pp)
    assert by["ddp"]["fits"] is False  # a whole replica per GPU
    # A whole replica per GPU (tp 1, pp 1), with one sample per GPU and full recompute, does not fit either
    # (the global batch made divisible by the GPUs: 2304 is not, at 1536).
    plain = rows_of([*published_argv(name), "--global-batch", str(nodes * 8), "--tp", "1", "--pp", "1",
                     "--recompute", "full"], capsys)
    assert next(r for r in plain if r["strategy"] == "mix")["fits"] is False


@pytest.mark.parametrize("name", PUBLISHED)
def test_search_ranks_the_published_layout_and_is_fast(name: str, capsys) -> None:
    _, _, _, nodes, _, tp, pp = PUBLISHED[name]
    start = time.perf_counter()
    rows = rows_of([*published_argv(name), "--search", "--top", "100000"], capsys)
    assert time.perf_counter() - start < 3.0
    assert rows and all(r["fits"] and r["total_bytes"] <= 80 * GIB for r in rows)
    steps = [r["step_s"] for r in rows]
    assert steps == sorted(steps) and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    published = layout_search.rank_of(rows, tp=tp, pp=pp, shard="none", recompute="full")
    assert published is not None
    # Full recomputation runs a fourth forward: the best layout without it is about 1/4 faster.
    assert rows[0]["recompute"] != "full" and rows[0]["step_s"] < 0.85 * published["step_s"]
    # In 2021's toolbox (no SP, full recompute, no sharded optimizer) it is within 5% of the best.
    old = rows_of([*published_argv(name), "--search", "--sequence-parallel", "off", "--recompute", "full",
                   "--shard", "none", "--top", "100000"], capsys)
    assert all(not r["sequence_parallel"] and r["recompute"] == "full" for r in old)
    mine = layout_search.rank_of(old, tp=tp, pp=pp)
    assert mine["rank"] <= 6 and mine["step_s"] <= 1.05 * old[0]["step_s"]


def test_step_time_by_hand() -> None:
    """tp 2, pp 2, dp 2 on 2 nodes of 4 GPUs, no recompute, shard none, bf16."""
    m = Transformer(4, 1024, 8, 256, 1000)
    r = layout_search.Run(m, 16, "bf16", "adam", "1f1b", 80 * GIB, "a100", 0.5, "nvlink", "ib-hdr")
    x = Mix(2, 2, 2, "none", "none", 2, True)
    got = layout_search.step_time(r, x, 4)
    s, b, h, V, mb = 256, 2, 1024, 1000, 4  # m = 16 / (2 x 2)
    rate = 312e12 * 0.5
    layer = 24 * b * s * h * h + 4 * b * s * s * h
    comp = max(2 * 3 * layer, 2 * 3 * layer + 3 * 2 * b * s * h * V) / 2 / rate
    intra, inter = (1e-6, 2400e9 / 8), (1.5e-6, 200e9 / 8)
    tp = 2 * 4 * 2 * (0.5 * s * b * h * 2 / intra[1] + intra[0])  # 2 layers x 4 all-reduces, ring over 2
    p2p = 2 * (inter[0] + s * b * h * 2 / 2 / inter[1])  # the pipeline spans the two nodes
    n = max(layout_search.stage_params(m, x, i) for i in (0, 1))
    dp = 2 * (0.5 * 2 * n / intra[1] + intra[0])  # tp x dp = 4 GPUs: one node
    assert got["compute_s"] == pytest.approx(mb * comp)
    assert got["tp_comm_s"] == pytest.approx(mb * tp)
    assert got["p2p_s"] == pytest.approx(mb * p2p)
    assert got["bubble_s"] == pytest.approx(1 * (comp + tp + p2p))
    assert got["dp_comm_s"] == pytest.approx(dp)
    assert got["step_s"] == pytest.approx(mb * (comp + tp + p2p) + (comp + tp + p2p) + dp)
    assert got["tokens_per_s"] == pytest.approx(16 * s / got["step_s"])


def test_70b_fits_with_a_mixture_where_every_strategy_fails(capsys) -> None:
    argv = [*shape(80, 8192, 64, 4096, 128256), "--nodes", "8,16,64", "--procs-per-node", "8", "--global-batch",
            "512", "--precision", "bf16", "--gpu", "h100"]
    rows = rows_of([*argv, "--tp", "8", "--pp", "4", "--recompute", "selective"], capsys)
    assert not any(r["fits"] for r in rows if r["strategy"] != "mix")
    mix = [r for r in rows if r["strategy"] == "mix"]
    assert [r["nodes"] for r in mix] == [8, 16, 64] and all(r["fits"] for r in mix)
    assert all(r["step_s"] > 0 and r["tokens_per_s"] > 0 for r in mix)
    assert all(set(plan.MIX_FIELDS) <= set(r) for r in rows)
    assert all(r["step_s"] is None for r in rows if r["strategy"] != "mix")
    top = rows_of([*argv, "--nodes", "64", "--search", "--top", "5"], capsys)
    assert len(top) == 5 and all(r["fits"] and r["world_size"] == 512 for r in top)
    code, out, _ = run([*argv, "--nodes", "64", "--search", "--top", "5"], capsys)
    assert code == 0 and "h100 80 GiB at 989 TFLOP/s" in out and "nvlink4" in out and "ib-ndr" in out


def test_gpu_preset_sets_memory_unless_given(capsys) -> None:
    argv = [*shape(4, 512, 8, 128, 100), "--nodes", "1", "--procs-per-node", "2"]
    code, out, _ = run([*argv, "--gpu", "h200", "--json"], capsys)
    assert json.loads(out)["gpu_mem_bytes"] == 141 * GIB
    code, out, _ = run([*argv, "--gpu", "h200", "--gpu-mem", "100GiB", "--json"], capsys)
    assert json.loads(out)["gpu_mem_bytes"] == 100 * GIB


@pytest.mark.parametrize("extra,word", [
    (["--tp", "3"], "tp 3 does not divide"),  # 12 heads, hidden 768 are divisible by 3; a node of 8 is not
    (["--tp", "16"], "tp 16 is beyond the 8 GPUs of a node"),
    (["--tp", "8", "--heads", "4", "--hidden", "768"], "does not divide the 4 heads"),
    (["--pp", "7"], "pp 7 is more stages than the 6 layers"),
    (["--tp", "4", "--pp", "6"], "tp x pp = 24 does not divide the 16 GPUs"),
    (["--micro-batch", "3"], "global batch 64 is not divisible by dp x micro-batch = 16 x 3"),
    (["--shard", "zero3"], "unknown shard 'zero3'"),
    (["--recompute", "some"], "unknown recompute 'some'"),
    (["--sequence-parallel", "yes"], "unknown sequence-parallel 'yes'"),
    (["--gpu", "v100"], "unknown gpu 'v100'"),
    (["--inter-link", "loopback"], "unknown link 'loopback'"),
    (["--mfu", "1.5"], "invalid mfu '1.5'"),
])
def test_refused_layouts_are_one_line_and_exit_2(extra: list[str], word: str, capsys) -> None:
    argv = [*shape(6, 768, 12, 128, 1000), "--nodes", "2", "--procs-per-node", "8", "--global-batch", "64", *extra]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and word in err, err


def test_mix_flags_need_the_transformer_shape(capsys) -> None:
    code, out, err = run(["--params", "7e9", "--tp", "2"], capsys)
    assert code == 2 and out == "" and "need the transformer shape" in err


def test_the_default_mix_row_says_why_it_cannot_run_without_refusing_the_rest(capsys) -> None:
    rows = rows_of([*shape(4, 512, 8, 128, 100), "--nodes", "1,3", "--global-batch", "8"], capsys)
    mix = {r["nodes"]: r for r in rows if r["strategy"] == "mix"}
    assert mix[1]["total_bytes"] is not None and mix[3]["fits"] is None and "not divisible" in mix[3]["reason"]
