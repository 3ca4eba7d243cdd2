"""Layouts in the answer (analysis/layouts.py, analysis/advise.py): every distinct layout of tp and the
mixture (dp, tp, pp, shard, recompute, micro-batch, schedule) is a candidate of its own, under a label
made of the registry's settings, and the winner's layout is named in advice.json, the terminal table
and report.html. On synthetic sweeps, in process.

`mix` is not in this checkout's registry (another branch writes it): MIX below stands in for its record
(monkeypatched into contract.registry.REGISTRY), with the settings the mixture takes: tp, pp, shard,
sequence_parallel. Its degrees are config fields this checkout lacks too: analysis/synthetic.py writes
them into config.json as given, as a run of the merged tree would.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from analysis import advise, layouts, synthetic
from analysis.load import load_sweep
from analysis.metrics import analyse
from analysis.projection.sweep import for_advice
from analysis.report import write_report
from contract import registry

MIX = registry.Strategy(
    "mix", "staged", "stand-in for the mixture: pp x dp x tp in one run", "any", micro_batches=True, scheduled=True,
    projected=True, traffic=lambda w: 2 * (w - 1) / w, messages=lambda w, m: 2 * (w - 1), stage_replicas=True,
    default_stages=lambda nodes, procs: 1, settings=("tp", "pp", "shard", "sequence_parallel"))
LAYOUTS = ({"tp": 2, "pp": 2}, {"tp": 2, "shard": "full"}, {})  # pp 1, shard none, tp 1: the defaults


@pytest.fixture
def mix(monkeypatch):
    """The stand-in `mix` record in the registry for one test (and `tp` projected, as the merged tree may)."""
    monkeypatch.setitem(registry.REGISTRY, "mix", MIX)
    monkeypatch.setitem(registry.REGISTRY, "tp", dataclasses.replace(registry.get("tp"), projected=True))
    return MIX


def test_labels_show_only_what_is_off_its_default(mix):
    assert layouts.label("mix", {"tp": 2, "pp": 2, "shard": "full"}, dp=2) == "mix[dp=2,tp=2,pp=2,shard=full]"
    assert layouts.label("mix", {"tp": 2, "pp": 2}) == "mix[tp=2,pp=2]"  # a projection series: no dp
    assert layouts.label("mix", {"tp": 1, "pp": 1}, dp=8) == ""  # all data-parallel: the node count says dp
    assert layouts.label("mix", {"shard": "optim"}, dp=8) == "mix[shard=optim]"
    assert layouts.label("mix", {"schedule": "gpipe", "tp": 4.0}, dp=1) == "mix[dp=1,tp=4,schedule=gpipe]"
    # recompute and micro-batch for any strategy; a schedule only where the strategy takes one
    assert layouts.label("ddp", {"recompute": "selective", "micro_batch": 8.0}) == \
        "ddp[recompute=selective,micro_batch=8]"
    assert layouts.label("ddp", {"schedule": "gpipe"}) == ""
    assert layouts.label("pipeline", {"schedule": "gpipe"}) == "pipeline[schedule=gpipe]"
    assert layouts.label("tp", {"sequence_parallel": "off"}, dp=1) == "tp[sequence_parallel=off]"
    # an older config without the fields (or a NaN cell of the summary) reads as the defaults
    assert layouts.label("ddp", {"recompute": float("nan")}) == "" and layouts.value({}, "micro_batch") == 0


def test_layout_of_each_kind(mix):
    assert layouts.layout("tp", {}, 4, 1) == {"dp": 1, "tp": 4, "pp": 1, "shard": "none", "recompute": "none",
                                              "micro_batch": 0, "schedule": None}
    assert layouts.layout("mix", {"tp": 2, "pp": 2, "shard": "full", "recompute": "full", "micro_batch": 2}, 16, 4) \
        == {"dp": 4, "tp": 2, "pp": 2, "shard": "full", "recompute": "full", "micro_batch": 2, "schedule": "1f1b"}
    assert layouts.layout("fsdp", {}, 4, 4)["shard"] == "full" and layouts.layout("zero", {}, 4, 4)["shard"] == "optim"
    assert layouts.layout("pipeline", {}, 4, 1, stages=4)["pp"] == 4
    assert layouts.dp_at("mix", 4, 4, {"tp": 2, "pp": 2}) == 4 and layouts.dp_at("ps", 4, 1, {}) == 3
    assert layouts.describe(layouts.layout("mix", {"tp": 2, "pp": 2}, 8, 2)) == \
        "dp 2 x tp 2 x pp 2, shard none, recompute none, micro-batch whole share, schedule 1f1b"


SLOW = {1: 0.25, 0: 2.0}  # tp 2 x shard full 4x as fast, tp 2 x pp 2 twice as slow (the toy pipeline sends nothing)


def _sweep(logs: str, nodes: tuple[int, ...] = (1, 2, 4)) -> str:
    """ddp (plain and with selective recompute), tp and three mix layouts on 4 ranks per node; the mix
    layout tp 2 x shard full made the clear winner (SLOW)."""
    path = synthetic.write_sweep(logs, "layouts", strategies=("ddp", "tp", "mix"), nodes=nodes, procs=4,
                                 settings={"ddp": ({}, {"recompute": "selective"}), "mix": LAYOUTS}, steps=12)
    for exp in os.listdir(path):
        cfg_path = os.path.join(path, exp, "config.json")
        if exp.startswith("mix-") and os.path.isfile(cfg_path):
            cfg = json.load(open(cfg_path))["config"]
            i = next(i for i, lay in enumerate(LAYOUTS) if all(cfg.get(k) == v for k, v in lay.items()))
            if i in SLOW:
                synthetic.write_experiment(os.path.join(path, exp), "mix", cfg["nodes"], 4, cfg["global_batch"],
                                           cfg["chunks"], cfg["steps"], settings=LAYOUTS[i], slow=SLOW[i])
    return path


def test_each_layout_is_a_candidate_and_the_winner_is_named(mix, tmp_path, capsys):
    path = _sweep(str(tmp_path))
    logs, name = os.path.split(path)
    assert advise.main(["--logs", logs, "--sweep", name, "--no-plot", "--max-nodes", "16"], None, for_advice) == 0
    out = capsys.readouterr().out
    rows = {r["nodes"]: r for r in json.load(open(os.path.join(path, "advice.json")))["rows"]}
    two = rows[2]  # 8 ranks: tp 2 x pp 2 leaves dp 2, tp 2 alone dp 4
    assert set(two["throughput"]) == {"ddp", "ddp[recompute=selective]", "tp", "mix", "mix[dp=2,tp=2,pp=2]",
                                      "mix[dp=4,tp=2,shard=full]"}
    assert two["best"] == "mix[dp=4,tp=2,shard=full]" and two["source"] == "measured"
    assert two["layout"]["mix[dp=4,tp=2,shard=full]"] == {"dp": 4, "tp": 2, "pp": 1, "shard": "full",
                                                         "recompute": "none", "micro_batch": 0, "schedule": "1f1b"}
    assert two["layout"]["tp"]["tp"] == 8 and two["layout"]["tp"]["dp"] == 1
    assert two["layout"]["ddp[recompute=selective]"]["recompute"] == "selective"
    # ddp's config.json has no recompute or micro_batch field here (as an older run): their defaults
    assert (two["layout"]["ddp"]["recompute"], two["layout"]["ddp"]["micro_batch"]) == ("none", 0)
    assert "-bound" in two["why"]["ddp[recompute=selective]"] and "-bound" in two["why"]["mix[dp=2,tp=2,pp=2]"]
    assert rows[1]["best"] == "mix[dp=2,tp=2,shard=full]" and rows[4]["best"] == "mix[dp=8,tp=2,shard=full]"
    # projected like the others: the series at its dp there (16 nodes x 4 ranks / tp 2)
    assert rows[16]["source"] == "projected" and rows[16]["best"] == "mix[dp=32,tp=2,shard=full]"
    assert rows[16]["layout"]["mix[dp=16,tp=2,pp=2]"]["dp"] == 16
    assert "best layout: dp 4 x tp 2 x pp 1, shard full, recompute none, micro-batch whole share, schedule 1f1b" \
        in out
    html = write_report(analyse(load_sweep(path)), [], [], os.path.join(path, "report.html"))
    answer = open(html).read()
    answer = answer[answer.index('id="answer"'):answer.index('id="meta"')]
    assert "mix[dp=4,tp=2,shard=full]" in answer and "dp 4 x tp 2 x pp 1, shard full, recompute none" in answer


def test_report_without_advice_json_names_the_layout_too(mix, tmp_path):
    path = _sweep(str(tmp_path), nodes=(1, 2))
    html = open(write_report(analyse(load_sweep(path)), [], [], os.path.join(path, "report.html"))).read()
    assert "measured rows only" in html and "dp 4 x tp 2 x pp 1, shard full" in html


def test_memory_is_checked_per_layout_at_its_own_settings(mix, tmp_path):
    """A mix layout of tp 1 may not fit where tp 2 does: the check gets each candidate's settings."""
    a = analyse(load_sweep(_sweep(str(tmp_path), nodes=(2,))))
    seen = []

    def memory(strategy: str, nodes: int, batch: int, settings: dict | None) -> str | None:
        seen.append((strategy, layouts.value(settings or {}, "tp"), layouts.value(settings or {}, "recompute")))
        return "does not fit in memory: test" if strategy == "mix" and layouts.value(settings, "tp") == 1 else None

    inputs = advise.measured(a, memory)
    assert inputs.refused[2] == {"mix": "does not fit in memory: test"}
    assert {"mix[dp=2,tp=2,pp=2]", "mix[dp=4,tp=2,shard=full]", "ddp[recompute=selective]"} <= set(inputs.candidates[2])
    assert ("mix", 2, "none") in seen and ("ddp", 1, "selective") in seen
