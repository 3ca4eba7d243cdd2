"""The planner's rows for the loosely coupled strategies (localsgd, asyncps) and their flags. In-process."""

from __future__ import annotations

import json

import pytest

from analysis import plan
from contract import registry
from contract.config import ExperimentConfig

N = 1_000_000  # --params: one block, activations unknown; state and buffers only


def rows(argv: list[str], capsys) -> dict[tuple[str, int], dict]:
    assert plan.main(["--params", str(N), "--nodes", "1,2,4", "--json", *argv]) == 0
    return {(r["strategy"], r["nodes"]): r for r in json.loads(capsys.readouterr().out)["rows"]}


@pytest.mark.parametrize("optimizer, states", [("sgd", 1), ("adam", 2)])
def test_plain_localsgd_holds_what_ddp_holds(optimizer: str, states: int, capsys) -> None:
    r = rows(["--optimizer", optimizer, "--sync-every", "4"], capsys)
    for n in (2, 4):
        loc, ddp = r[("localsgd", n)], r[("ddp", n)]
        assert (loc["param_bytes"], loc["grad_bytes"], loc["optim_bytes"]) == (4 * N, 4 * N, 4 * states * N)
        assert loc["total_bytes"] == ddp["total_bytes"]


@pytest.mark.parametrize("outer, outer_lr, extra", [("nesterov", "0.7", 3), ("sgd", "0.5", 2), ("sgd", "1", 0)])
def test_diloco_outer_state_shows_in_the_localsgd_row(outer: str, outer_lr: str, extra: int, capsys) -> None:
    """DiLoCo (trainers/common/averaging.py): the last sync's copy of the parameters and its
    pseudo-gradient (an SGD over the copy), + Nesterov's momentum buffer; plain averaging nothing."""
    r = rows(["--optimizer", "adam", "--outer", outer, "--outer-lr", outer_lr], capsys)
    loc, ddp = r[("localsgd", 2)], r[("ddp", 2)]
    assert loc["optim_bytes"] == 4 * (2 + extra) * N  # Adam's two moments + the outer state
    assert loc["total_bytes"] - ddp["total_bytes"] == 4 * extra * N
    assert r[("ddp", 2)]["optim_bytes"] == 8 * N  # the flags are localsgd's: nothing else moves


def test_asyncps_server_holds_the_optimizer_and_workers_none(capsys) -> None:
    r = rows(["--optimizer", "adam", "--staleness", "2"], capsys)
    for n in (2, 4):
        a, ps = r[("asyncps", n)], r[("ps", n)]
        # The row is the largest over the roles: the server's Adam state (8 B/param); a worker's is 0.
        assert a["optim_bytes"] == 8 * N
        assert a["param_bytes"] == a["grad_bytes"] == 4 * N
        assert a["buffer_bytes"] == 2 * 4 * N  # gradient and parameter buckets
        assert a["total_bytes"] == ps["total_bytes"] == 4 * N + 4 * N + 8 * N + 8 * N
    assert r[("asyncps", 1)]["reason"] and r[("asyncps", 1)]["total_bytes"] is None  # min_world 2
    worker = registry.get("asyncps").state_bytes(N, 4, "adam", rank=1, settings={"staleness": 2})
    assert worker.optim_bytes == 0


def test_setting_flags_default_to_the_config_defaults() -> None:
    args = plan.build_parser().parse_args(["--params", "1"])
    d = ExperimentConfig()
    assert plan.parse_settings(args) == {k: getattr(d, k) for k in plan.SETTING_FLAGS}
    assert set(plan.SETTING_FLAGS) == {"sync_every", "outer", "outer_lr", "sync_optim", "staleness"}


@pytest.mark.parametrize("argv, word", [(["--sync-every", "0"], "sync-every"), (["--outer", "adamw"], "outer"),
                                        (["--outer-lr", "-1"], "outer-lr"), (["--outer-lr", "nan"], "outer-lr"),
                                        (["--sync-optim", "sum"], "sync-optim"), (["--staleness", "-1"], "staleness")])
def test_bad_settings_are_one_line_and_exit_2(argv: list[str], word: str, capsys) -> None:
    assert plan.main(["--params", "1000", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err
