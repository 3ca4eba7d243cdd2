"""`make advise` judges strategies whose maths differs from single's (localsgd off H 1, DiLoCo, asyncps
with staleness) by the time to the target accuracy, never by throughput alone (analysis/advise.py's
ranking functions), and keeps a strategy's own settings apart (localsgd H=4 vs H=16)."""

from __future__ import annotations

import json
import os

import pandas as pd

from analysis import advice_output, advise, ranking, synthetic
from analysis.advise import Candidate
from analysis.axisplots import plot_wall_time
from analysis.load import load_sweep
from analysis.metrics import analyse, same_maths


def cand(strategy: str, throughput: float, ttt: float | None, epochs: float | None, same: bool = True,
         label: str = "", repeats: tuple[float, float] | None = None) -> Candidate:
    return Candidate(strategy, throughput, throughput, throughput, repeats is not None,
                     {"compute": 1 / throughput, "comm": 0.0, "bubble": 0.0}, time_to_target_s=ttt, same_maths=same,
                     epochs_to_target=epochs, target_range=repeats or ((ttt, ttt) if ttt is not None else None),
                     label=label)


def test_a_faster_step_that_needs_more_epochs_loses_on_time_to_target():
    ddp = cand("ddp", 100.0, ttt=10.0, epochs=2)
    lsgd = cand("localsgd", 180.0, ttt=13.0, epochs=4, same=False, label="localsgd[sync_every=16]")
    row = ranking.rank_row(2, "measured", {c.key: c for c in (ddp, lsgd)}, {}, target=0.95)
    assert row["ranked_by"] == "time_to_target"
    assert row["best"] == "ddp" and row["runner_up"] == "localsgd[sync_every=16]"
    assert row["throughput"]["localsgd[sync_every=16]"] > row["throughput"]["ddp"]  # higher, and still loses
    assert row["margin"] == 13.0 / 10.0 - 1
    assert row["why"]["localsgd[sync_every=16]"] == "steps 1.8x faster, reaches 0.95 after 2.0x the epochs: " \
                                                    "1.3x slower to target"
    assert row["best_why"] == ("against localsgd[sync_every=16]: steps 1.8x slower, reaches 0.95 after 0.5x the "
                               "epochs: 1.3x faster to target")


def test_a_loose_strategy_that_reaches_the_target_first_wins():
    ddp = cand("ddp", 100.0, ttt=14.0, epochs=2)
    lsgd = cand("localsgd", 180.0, ttt=10.0, epochs=2.8, same=False, label="localsgd[sync_every=4]")
    row = ranking.rank_row(2, "measured", {c.key: c for c in (ddp, lsgd)}, {}, target=0.95)
    assert row["best"] == "localsgd[sync_every=4]"
    assert row["best_why"] == ("against ddp: steps 1.8x faster, reaches 0.95 after 1.4x the epochs: "
                               "1.4x faster to target")
    assert row["why"]["ddp"].endswith("1.4x slower to target")


def test_no_run_at_the_target_cannot_be_judged():
    ddp = cand("ddp", 100.0, None, None)
    aps = cand("asyncps", 150.0, None, None, same=False, label="asyncps[staleness=2]")
    row = ranking.rank_row(4, "measured", {c.key: c for c in (ddp, aps)}, {"ps": "cannot run at this layout: x"}, 0.9)
    assert row["best"] is None and row["runner_up"] is None
    assert row["why"] == {"ddp": "cannot judge: no run reached the target",
                          "asyncps[staleness=2]": "cannot judge: no run reached the target",
                          "ps": "cannot run at this layout: x"}
    assert "cannot judge: no run reached the target" in advice_output.table([row], "")


def test_one_that_misses_the_target_ranks_after_those_that_reach_it():
    ddp = cand("ddp", 100.0, ttt=10.0, epochs=2)
    aps = cand("asyncps", 300.0, ttt=None, epochs=None, same=False, label="asyncps[staleness=4]")
    row = ranking.rank_row(2, "measured", {c.key: c for c in (ddp, aps)}, {}, target=0.95)
    assert row["best"] == "ddp" and row["runner_up"] is None
    assert row["why"]["asyncps[staleness=4]"] == "steps 3.0x faster, but does not reach 0.95 (every repeat must)"


def test_overlapping_repeats_to_target_tie():
    ddp = cand("ddp", 100.0, ttt=10.0, epochs=2, repeats=(9.0, 12.0))
    lsgd = cand("localsgd", 150.0, ttt=11.0, epochs=3, same=False, label="localsgd[sync_every=4]", repeats=(10.5, 11.5))
    row = ranking.rank_row(2, "measured", {c.key: c for c in (ddp, lsgd)}, {}, target=0.9)
    assert row["best"] == "ddp" and row["confirmed"] and row["tie"]
    assert row["why"]["localsgd[sync_every=4]"].startswith("tie with the best")


def test_same_maths_rows_still_rank_by_throughput():
    ddp, ring = cand("ddp", 100.0, ttt=12.0, epochs=2), cand("ring", 90.0, ttt=10.0, epochs=2)
    row = ranking.rank_row(2, "measured", {"ddp": ddp, "ring": ring}, {}, target=0.9)
    assert row["ranked_by"] == "throughput" and row["best"] == "ddp" and row["best_time_to_target"] == "ring"


def test_a_strategys_own_settings_make_candidates_of_their_own():
    def group(strategy: str, **settings) -> pd.DataFrame:
        row = {"strategy": strategy, "global_batch": 32, "compute_s": 0.01, "comm_s": 0.0, "other_s": 0.0,
               "bubble_s": 0.0, "median_step_s": 0.01, "samples_per_s": 3200.0, "oversubscribed": False,
               "time_to_target_s": 5.0, "epochs_to_target": 2.0, "optimizer": "sgd", "sync_every": float("nan"),
               "outer": float("nan"), "outer_lr": float("nan"), "staleness": float("nan"), **settings}
        return pd.DataFrame([row])

    c = advise._candidate(group("localsgd", sync_every=4.0, outer="nesterov", outer_lr=0.7, sync_optim="keep"))
    assert c.key == "localsgd[sync_every=4,outer=nesterov,outer_lr=0.7]" and not c.same_maths
    plain = advise._candidate(group("localsgd", sync_every=1.0, outer="sgd", outer_lr=1.0, sync_optim="keep"))
    assert plain.key == "localsgd" and plain.same_maths
    assert advise._candidate(group("ddp")).key == "ddp"
    stale = advise._candidate(group("asyncps", staleness=2.0))
    assert stale.key == "asyncps[staleness=2]" and not stale.same_maths and stale.epochs_to_target == 2.0


def _loose_sweep(logs: str) -> str:
    """A synthetic sweep of ddp and localsgd at 2 nodes; localsgd's config.json then says H = 4."""
    path = synthetic.write_sweep(logs, "loose", strategies=("ddp", "localsgd"), nodes=(2,), steps=30, repeats=2)
    for exp in os.listdir(path):
        cfg_path = os.path.join(path, exp, "config.json")
        if exp.startswith("localsgd-") and os.path.isfile(cfg_path):
            doc = json.load(open(cfg_path))
            doc["config"]["sync_every"] = doc["identity"]["sync_every"] = 4
            json.dump(doc, open(cfg_path, "w"))
    return path


def test_a_sweep_with_localsgd_is_judged_by_accuracy_and_drawn_against_wall_time(tmp_path):
    a = analyse(load_sweep(_loose_sweep(str(tmp_path))))
    assert sorted(a.summary.apply(same_maths, axis=1)) == [False, False, True, True]
    row = ranking.answer(advise.measured(a), {2: "measured"})[0]
    assert row["ranked_by"] == "time_to_target" and set(row["throughput"]) == {"ddp", "localsgd[sync_every=4]"}
    other = ({"ddp", "localsgd[sync_every=4]"} - {row["best"]}).pop()
    # the synthetic sweep gives both the same accuracy curve and step time: a tie on time to target
    assert row["confirmed"] and row["tie"] and row["why"] == {
        other: "tie with the best: the margin is within the spread between repeats"}
    fig = plot_wall_time(a)
    assert not isinstance(fig, str)
    loss_ax, acc_ax = fig.axes[:2]
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "wall-clock time since start (s)"
    assert len(acc_ax.get_lines()) == 3  # ddp, localsgd and the target
    # a colour per configuration, a dash per node count; a strategy's own settings label its lines only
    assert acc_ax.get_lines()[0].get_color() != acc_ax.get_lines()[1].get_color()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ddp", "localsgd H4", "2 node(s)",
                                                                  f"target {a.target_acc:.3f}"]


def test_step_speed_is_per_epoch_where_measured():
    """localsgd's median step leaves out its averaging steps; the mean epoch time counts them."""
    ddp = cand("ddp", 100.0, ttt=10.0, epochs=2)
    lsgd = cand("localsgd", 400.0, ttt=5.0, epochs=2, same=False, label="localsgd[sync_every=16]")
    ddp.epoch_s, lsgd.epoch_s = 4.0, 2.0  # 4x by the median step, 2x over whole epochs
    assert ranking.against(lsgd, ddp, 0.9) == "steps 2.0x faster, reaches 0.90 after 1.00x the epochs: " \
                                             "2.0x faster to target"
