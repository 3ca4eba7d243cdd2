"""The answer (analysis/advise.py, bin/advise): ranking, ties, reasons, memory, projection rows, outputs,
bad input. On synthetic sweeps (analysis/synthetic.py) and in process: nothing is launched."""

from __future__ import annotations

import json
import os

import pytest

from analysis import advise, ranking, synthetic
from analysis.load import load_sweep
from analysis.metrics import analyse
from analysis.plan import ModelShape, params_shape
from analysis.projection.sweep import for_advice
from analysis.report import write_report

STRATEGIES = ("ddp", "ring", "ps", "pipeline")


def _sweep(logs: str, name: str, repeats: int = 3, nodes: tuple[int, ...] = (1, 2, 4),
           slow: dict[str, float] | None = None, strategies: tuple[str, ...] = STRATEGIES) -> str:
    """A synthetic sweep; `slow` scales one strategy's compute and communication (a known loser)."""
    path = synthetic.write_sweep(logs, name, strategies=strategies, nodes=nodes, repeats=repeats)
    for strategy, factor in (slow or {}).items():
        for exp in os.listdir(path):
            if exp.startswith(strategy + "-") and os.path.isfile(os.path.join(path, exp, "config.json")):
                with open(os.path.join(path, exp, "config.json")) as f:
                    cfg = json.load(f)["config"]
                synthetic.write_experiment(os.path.join(path, exp), strategy, cfg["nodes"], cfg["procs_per_node"],
                                           cfg["global_batch"], cfg["chunks"], cfg["steps"], repeat=cfg["repeat"],
                                           slow=factor)
    return path


def _advise(sweep_dir: str, capsys, *extra: str, projector=for_advice, profiler=None) -> tuple[int, dict, str]:
    logs, name = os.path.split(sweep_dir)
    code = advise.main(["--logs", logs, "--sweep", name, "--no-plot", *extra], profiler, projector)
    out = capsys.readouterr()
    path = os.path.join(sweep_dir, "advice.json")
    doc = json.load(open(path)) if code == 0 else {}
    return code, doc, out.out + out.err


def test_a_known_loser_ranks_last_and_says_why(tmp_path, capsys):
    """ps made twice as slow: at every node count where it runs it is last, with a reason."""
    path = _sweep(str(tmp_path), "s", slow={"ps": 2.0})
    code, doc, out = _advise(path, capsys, "--max-nodes", "16")
    assert code == 0
    measured = [r for r in doc["rows"] if r["source"] == "measured"]
    assert [r["nodes"] for r in measured] == [1, 2, 4]
    for r in measured[1:]:
        thr = r["throughput"]
        assert min(thr, key=thr.get) == "ps"
        assert "-bound" in r["why"]["ps"] and "x the best's time per sample" in r["why"]["ps"]
        assert r["best"] != "ps"
    assert "ps needs at least 2 ranks" in measured[0]["why"]["ps"]  # cannot run at 1 node x 1 rank
    assert "ps: " in out and "written:" in out


def test_identical_configurations_tie(tmp_path, capsys):
    """ddp and ring are the same maths and, in the synthetic cost model, the same cost: with three
    repeats their ranges overlap and the row says tie; with one repeat the margin is unconfirmed."""
    path = _sweep(str(tmp_path), "tie", strategies=("ddp", "ring"), nodes=(2, 4))
    code, doc, _ = _advise(path, capsys, "--max-nodes", "4")
    assert code == 0
    for r in doc["rows"]:
        assert {r["best"], r["runner_up"]} == {"ddp", "ring"}
        assert r["confirmed"] and r["tie"], r
        assert r["why"][r["runner_up"]].startswith("tie with the best")
    one = _sweep(str(tmp_path), "once", strategies=("ddp", "ring"), nodes=(2, 4), repeats=1)
    _, doc, out = _advise(one, capsys, "--max-nodes", "4")
    assert all(not r["confirmed"] and not r["tie"] for r in doc["rows"]) and "unconfirmed" in out


def test_a_clear_winner_is_not_a_tie(tmp_path, capsys):
    path = _sweep(str(tmp_path), "clear", strategies=("ddp", "ring"), nodes=(2, 4), slow={"ring": 1.5})
    _, doc, _ = _advise(path, capsys, "--max-nodes", "4")
    for r in doc["rows"]:
        assert r["best"] == "ddp" and r["confirmed"] and not r["tie"] and r["margin"] > 0.3


def test_rows_json_fields_and_projected_rows(tmp_path, capsys):
    path = _sweep(str(tmp_path), "proj")
    code, doc, out = _advise(path, capsys, "--max-nodes", "64", "--link", "ib-hdr")
    assert code == 0 and doc["link"] == "ib-hdr"
    assert [(r["nodes"], r["source"]) for r in doc["rows"]] == [
        (1, "measured"), (2, "measured"), (4, "measured"), (8, "projected"), (16, "projected"), (32, "projected"),
        (64, "projected")]
    for r in doc["rows"]:
        assert {"nodes", "source", "best", "runner_up", "margin", "tie", "why"} <= set(r)
        ranked = set(r["throughput"])
        assert ranked | set(r["why"]) == set(STRATEGIES)  # every strategy: ranked, or a reason
        assert set(r["why"]) == set(STRATEGIES) - {r["best"]}
    # a pipeline of more stages than the mlp's 6 blocks cannot run: the registry's reason
    assert "the model has 6 blocks" in doc["rows"][3]["why"]["pipeline"]
    # 3 node counts: the projection was checked at 4 nodes, and the row says how far off it was
    assert set(doc["rows"][2]["projection_error"]) == {"ddp", "ring", "ps", "pipeline"}
    assert "projection checked: fitted without 4 nodes" in out


def test_two_node_counts_cannot_check_the_projection(tmp_path, capsys):
    path = _sweep(str(tmp_path), "two", nodes=(1, 2), repeats=1)
    code, doc, out = _advise(path, capsys, "--max-nodes", "8")
    assert code == 0 and "projection not checked" in doc["check"] and "needs three" in out
    assert not any("projection_error" in r for r in doc["rows"])
    assert all(not r["confirmed"] for r in doc["rows"] if r["source"] == "projected")


def test_memory_excludes_what_does_not_fit(tmp_path, capsys):
    """A model whose replicas cannot fit 1 GiB: ddp, ring and ps lose for memory; the planner's figure is given."""
    path = _sweep(str(tmp_path), "mem", strategies=("ddp", "ring"), nodes=(2, 4), repeats=1)
    huge = params_shape(200_000_000)  # 4 B params + 4 B grads + 4 B momentum: 2.2 GiB per replica
    code, doc, _ = _advise(path, capsys, "--gpu-mem", "1GiB", "--max-nodes", "4",
                           profiler=lambda model, dataset, precision: huge)
    assert code == 0
    for r in doc["rows"]:
        assert r["best"] is None and set(r["why"]) == {"ddp", "ring"}
        assert all(w.startswith("does not fit in memory: 2.") and "1.00 GiB available" in w for w in r["why"].values())
    small = ModelShape("tiny", params_shape(1000).blocks)
    code, doc, _ = _advise(path, capsys, "--gpu-mem", "1GiB", "--max-nodes", "4",
                           profiler=lambda model, dataset, precision: small)
    assert all(r["best"] in ("ddp", "ring") for r in doc["rows"])


def test_why_names_the_part_that_costs_most():
    best = ranking.Candidate("ddp", 100.0, 100.0, 100.0, True, {"compute": 0.006, "comm": 0.004, "bubble": 0.0})
    comm = ranking.Candidate("ps", 50.0, 50.0, 50.0, True, {"compute": 0.008, "comm": 0.012, "bubble": 0.0})
    bubble = ranking.Candidate("pipeline", 80.0, 80.0, 80.0, True, {"compute": 0.006, "comm": 0.001, "bubble": 0.006})
    assert ranking.why_loses(comm, best) == "communication-bound: communication is 60% of its step; " \
                                          "2.00x the best's time per sample"
    assert ranking.why_loses(bubble, best).startswith("bubble-bound: the pipeline bubble is 46% of its step")
    slow = ranking.Candidate("ring", 40.0, 40.0, 40.0, True, {"compute": 0.02, "comm": 0.005, "bubble": 0.0})
    assert ranking.why_loses(slow, best).startswith("compute-bound: compute is 80% of its step")


def test_oversubscribed_measurements_are_flagged(tmp_path, capsys):
    path = synthetic.write_sweep(str(tmp_path), "over", strategies=("ddp", "ring"), nodes=(1, 4), oversubscribed=True)
    _, doc, out = _advise(path, capsys, "--max-nodes", "4")
    assert all(r["oversubscribed"] for r in doc["rows"]) and "(oversubscribed)" in out


def _report(path: str) -> str:
    """report.html without the other plots (make plots draws them; not this test's subject)."""
    out = write_report(analyse(load_sweep(path)), [], [], os.path.join(path, "report.html"))
    return open(out).read()


def test_report_opens_with_the_answer(tmp_path, capsys):
    path = _sweep(str(tmp_path), "rep", repeats=1, nodes=(1, 2))
    html = _report(path)
    assert html.index('id="answer"') < html.index('id="meta"') < html.index('id="summary"')
    assert 'id="plot-advice"' in html and "measured rows only" in html
    _advise(path, capsys, "--max-nodes", "8")
    html = _report(path)
    assert "projected" in html[html.index('id="answer"'):html.index('id="meta"')]


@pytest.mark.parametrize("args,needle", [
    (["--link", "40gbe"], "unknown link '40gbe'"),
    (["--gpu-mem", "80"], "invalid memory size '80'"),
    (["--gpu-mem", "lots"], "invalid memory size 'lots'"),
    (["--max-nodes", "0"], "invalid max-nodes '0'"),
    (["--max-nodes", "many"], "invalid max-nodes 'many'"),
    (["--target-acc", "2"], "invalid target accuracy '2'"),
    (["--sweep", "nope"], "unknown sweep 'nope'"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, needle):
    path = _sweep(str(tmp_path), "bad", repeats=1, nodes=(1, 2))
    before = sorted(os.listdir(path))
    code = advise.main(["--logs", str(tmp_path), "--sweep", "bad", *args], None, for_advice)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert sorted(os.listdir(path)) == before


def test_a_sweep_with_no_completed_run_is_refused(tmp_path, capsys):
    path = synthetic.write_sweep(str(tmp_path), "dead", strategies=("ddp",), nodes=(2,), state="FAILED")
    before = sorted(os.listdir(path))
    code = advise.main(["--logs", str(tmp_path), "--sweep", "dead"], None, for_advice)
    err = capsys.readouterr().err
    assert code == 1 and "no COMPLETED experiment" in err and err.count("\n") == 1
    assert sorted(os.listdir(path)) == before
