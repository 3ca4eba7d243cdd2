"""A sweep without results still gets its report (docs/analysis.md, "Sweeps without results").

Every state a sweep can be in (empty, only sweep.json, all SKIPPED, all FAILED, all CANCELLED, a
mixture, one COMPLETED alone or among failures) against every command that reads results
(plots, report, tensorboard, compare as A and as B, advise, project), in process: the exit
status, one line and no traceback, report.html with each problem's state, reason and logs, and
nothing written where nothing may be.
"""

from __future__ import annotations

import html
import json
import os
import re

import pytest
from matplotlib.figure import Figure

from analysis import advise, cli, sweepstate, synthetic
from analysis.projection import cli as pj
from analysis.projection.sweep import for_advice
from contract import rundir

SINGLE_SKIP = "single runs in one process; it is measured at 1 node x 1 proc only"
STEPS = 4


def _ids(path: str) -> dict[str, str]:
    """Experiment ids of a synthetic sweep by a short name: 'ddp-n2' -> 'ddp-n2-p1-b32-...'."""
    meta = rundir.read_json(os.path.join(path, "sweep.json"))
    return {"-".join(e["id"].split("-")[:2]): e["id"] for e in meta["experiments"]}


def _end(path: str, short: str, state: str, errors: tuple[str, ...] = (), **status) -> None:
    """Give one experiment another final state; `errors`: error records, the first one the root cause."""
    d = os.path.join(path, _ids(path)[short])
    rundir.write_status(d, state, fresh=True, attempts=1, **status)
    for i, message in enumerate(errors):
        with open(os.path.join(d, "rank-0.jsonl"), "a") as f:
            f.write(json.dumps({"event": "error", "rank": 0, "time": 1_900_000_000.0 + i, "message": message,
                                "traceback": ""}) + "\n")


def _sweep(logs: str, name: str, strategies: tuple[str, ...], nodes: tuple[int, ...], **kw) -> str:
    return synthetic.write_sweep(logs, name, strategies=strategies, nodes=nodes, steps=STEPS, **kw)


def _interrupted(logs: str) -> str:
    """Only sweep.json: a sweep stopped before the first experiment's directory was made."""
    path = _sweep(logs, "interrupted", ("ddp",), (1, 2))
    for exp in _ids(path).values():
        for f in os.listdir(os.path.join(path, exp)):
            os.remove(os.path.join(path, exp, f))
        os.rmdir(os.path.join(path, exp))
    return path


def _pending(logs: str) -> str:
    """Stopped after bin/sweep prepared its experiments (config.json, a PENDING status.json), before any ran."""
    path = _sweep(logs, "pending", ("ddp",), (1, 2))
    for short, exp in _ids(path).items():
        for f in os.listdir(os.path.join(path, exp)):
            if f.startswith("rank-"):
                os.remove(os.path.join(path, exp, f))
        _end(path, short, "PENDING")
    return path


def _failed(logs: str) -> str:
    path = _sweep(logs, "failed", ("ddp",), (1, 2), state="FAILED")
    _end(path, "ddp-n1", "FAILED", ("RuntimeError: injected fault at step 2", "peer fallout: connection reset"))
    _end(path, "ddp-n2", "FAILED", failed_ranks={"1": -9})
    return path


def _cancelled(logs: str) -> str:
    path = _sweep(logs, "cancelled", ("ddp",), (1, 2), state="CANCELLED")
    for short in ("ddp-n1", "ddp-n2"):
        _end(path, short, "CANCELLED", reason="interrupted: bin/sweep stopped")
    return path


def _mixed(logs: str) -> str:
    path = _sweep(logs, "mixed", ("single", "ddp"), (1, 2))
    _end(path, "single-n1", "CANCELLED", reason="cancelled before it ran")
    _end(path, "ddp-n1", "FAILED", ("ValueError: loss is NaN",))
    _end(path, "ddp-n2", "TIMEOUT", reason="time limit")
    return path


def _one_among_failures(logs: str) -> str:
    path = _sweep(logs, "one_mixed", ("single", "ddp"), (1, 2))
    _end(path, "single-n1", "FAILED", ("OSError: no space left on device",))
    _end(path, "ddp-n2", "CANCELLED", reason="interrupted: bin/sweep stopped")
    return path


# name -> (builder, counts by state, {short id: (state, reason)} of the experiments without a result)
NO_RESULTS = {
    "empty": (lambda logs: os.makedirs(os.path.join(logs, "empty")), {}, {}),
    "interrupted": (_interrupted, {"MISSING": 2}, {"ddp-n1": ("MISSING", "never started"),
                                                   "ddp-n2": ("MISSING", "never started")}),
    "pending": (_pending, {"PENDING": 2}, {"ddp-n1": ("PENDING", "no error record"),
                                           "ddp-n2": ("PENDING", "no error record")}),
    "skipped": (lambda logs: _sweep(logs, "skipped", ("single",), (2, 4)), {"SKIPPED": 2},
                {"single-n2": ("SKIPPED", SINGLE_SKIP), "single-n4": ("SKIPPED", SINGLE_SKIP)}),
    "failed": (_failed, {"FAILED": 2}, {"ddp-n1": ("FAILED", "rank 0: RuntimeError: injected fault at step 2"),
                                        "ddp-n2": ("FAILED", "exit codes rank 1: -9")}),
    "cancelled": (_cancelled, {"CANCELLED": 2}, {"ddp-n1": ("CANCELLED", "interrupted: bin/sweep stopped"),
                                                 "ddp-n2": ("CANCELLED", "interrupted: bin/sweep stopped")}),
    "mixed": (_mixed, {"FAILED": 1, "TIMEOUT": 1, "CANCELLED": 1, "SKIPPED": 1},
              {"single-n1": ("CANCELLED", "cancelled before it ran"), "single-n2": ("SKIPPED", SINGLE_SKIP),
               "ddp-n1": ("FAILED", "rank 0: ValueError: loss is NaN"), "ddp-n2": ("TIMEOUT", "time limit")}),
}
RESULTS = {
    "one": (lambda logs: _sweep(logs, "one", ("ddp",), (2,)), {"COMPLETED": 1}),
    "one_mixed": (_one_among_failures, {"COMPLETED": 1, "FAILED": 1, "CANCELLED": 1, "SKIPPED": 1}),
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("logs"))
    for build, *_ in (*NO_RESULTS.values(), *RESULTS.values()):
        build(out)
    return out


def _files(path: str) -> dict[str, tuple[int, int]]:
    """Every file under `path` (the cache included), with its size and modification time."""
    out = {}
    for d, _, names in os.walk(path):
        for n in names:
            st = os.stat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), path)] = (st.st_size, st.st_mtime_ns)
    return out


def _run(command: str, logs: str, sweep: str, other: str = "one", plot: bool = False) -> int:
    """`make <command>` in process; compare_a / compare_b put `sweep` on that side, `other` on the other;
    `plot`: advise and project draw their figure."""
    where = ["--logs", logs, *([] if plot else ["--no-plot"])]
    calls = {
        "plots": lambda: cli.run(["plots", "--sweep", sweep, *where[:2]]),
        "report": lambda: cli.run(["report", "--sweep", sweep, *where[:2]]),
        "tensorboard": lambda: cli.run(["tensorboard", "--sweep", sweep, *where[:2]]),
        "compare_a": lambda: cli.run(["compare", sweep, other, *where[:2]]),
        "compare_b": lambda: cli.run(["compare", other, sweep, *where[:2]]),
        "advise": lambda: advise.main(["--sweep", sweep, *where], None, for_advice),
        "project": lambda: pj.main(["--sweep", sweep, *where]),
    }
    return calls[command]()


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, (out, err)
    return err.strip()


@pytest.mark.parametrize("name", [*NO_RESULTS, *RESULTS])
def test_state_counts(logs, name):
    state = sweepstate.read(os.path.join(logs, name))
    counts = (NO_RESULTS.get(name) or RESULTS[name])[1]
    assert state.counts == counts and state.has_results == (name in RESULTS)
    assert state.tally() == (", ".join(f"{n} {s}" for s, n in counts.items()) or "no experiment")


@pytest.mark.parametrize("command", ["plots", "report"])
@pytest.mark.parametrize("name", list(NO_RESULTS))
def test_plots_and_report_write_the_problems(logs, capsys, name, command):
    path = os.path.join(logs, name)
    before = _files(path)
    assert _run(command, logs, name) == 1
    line = _one_line(capsys)
    assert line == (f"{command}: sweep {name} has no COMPLETED experiment ({sweepstate.read(path).tally()}); "
                    f"report with the problems: {cli._show(os.path.join(path, 'report.html'))}")
    written = {f for f, st in _files(path).items() if before.get(f) != st}
    assert written == {"report.html"}  # no summary, no plots/, no cache
    with open(os.path.join(path, "report.html")) as f:
        page = f.read()
    rows = [html.unescape(re.sub(r"<[^>]+>", " ", r)) for r in re.findall(r"<tr class=\"(?:bad|skipped)\">.*?</tr>",
                                                                          page, re.S)]
    expected = NO_RESULTS[name][2]
    assert len(rows) == len(expected) and "No experiment COMPLETED" in page and 'id="summary"' not in page
    ids = _ids(path) if expected else {}
    for short, (state, reason) in expected.items():
        row = next(r for r in rows if ids[short] in r)
        assert reason in row
        if state != "SKIPPED":  # a skipped experiment is listed with its reason, not as a problem
            assert state in row and os.path.join(path, ids[short]) in row
    assert "peer fallout" not in page  # the first error record only: the root cause


@pytest.mark.parametrize("command", ["tensorboard", "compare_a", "compare_b", "advise", "project"])
@pytest.mark.parametrize("name", list(NO_RESULTS))
def test_other_commands_refuse(logs, capsys, name, command):
    before = {s: _files(os.path.join(logs, s)) for s in (name, "one")}
    assert _run(command, logs, name) == sweepstate.NO_RESULTS == 1
    tally = sweepstate.read(os.path.join(logs, name)).tally()
    assert _one_line(capsys) == f"{command.split('_')[0]}: sweep {name} has no COMPLETED experiment ({tally})"
    assert {s: _files(os.path.join(logs, s)) for s in before} == before


def test_compare_of_two_sweeps_without_results_names_the_first(logs, capsys):
    assert cli.run(["compare", "failed", "skipped", "--logs", logs]) == 1
    assert _one_line(capsys) == "compare: sweep failed has no COMPLETED experiment (2 FAILED)"


def _draw_once(monkeypatch) -> None:
    """Every figure drawn for real once, as a small PNG; its SVG is not rendered (most of the time of a test)."""
    save = Figure.savefig

    def savefig(self, path, **kw) -> None:
        if str(path).endswith(".svg"):
            open(path, "w").close()
        else:
            save(self, path, **{**kw, "dpi": 20})

    monkeypatch.setattr(Figure, "savefig", savefig)


@pytest.mark.parametrize("name", list(RESULTS))
def test_one_completed_plots_and_report(logs, capsys, monkeypatch, name):
    path = os.path.join(logs, name)
    _draw_once(monkeypatch)
    assert _run("plots", logs, name) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "1 completed" in out
    for f in ("summary.csv", "summary.json", "report.html", "plots/throughput.png", "plots/memory.png"):
        assert os.path.isfile(os.path.join(path, f)), f
    # report runs the same pipeline: its figures were drawn just now, so saving them again is skipped
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: open(path, "wb").close())
    assert _run("report", logs, name) == 0
    out, _ = capsys.readouterr()
    assert "report:" in out and "plots:" not in out
    with open(os.path.join(path, "report.html")) as f:
        page = f.read()
    assert 'id="summary"' in page and "No experiment COMPLETED" not in page
    if name == "one_mixed":
        assert "OSError: no space left on device" in page and "interrupted: bin/sweep stopped" in page


@pytest.mark.parametrize("name", list(RESULTS))
@pytest.mark.parametrize("command,code", [("tensorboard", 0), ("compare_a", 0), ("compare_b", 0), ("advise", 0),
                                          ("project", 0)])
def test_one_completed_other_commands(logs, capsys, monkeypatch, name, command, code):
    _draw_once(monkeypatch)
    assert _run(command, logs, name, other=name, plot=True) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "no COMPLETED experiment" not in out + err and not err, err


def test_project_checks_its_flags_before_the_sweep_state(logs, capsys):
    """Bad input is exit 2 even on a sweep without results; a good command line gets the one line, exit 1."""
    assert pj.main(["--sweep", "failed", "--logs", logs, "--link", "nope", "--no-plot"]) == 2
    capsys.readouterr()
    assert pj.main(["--sweep=failed", "--logs", logs, "--link", "10gbe", "--no-plot"]) == 1
    assert _one_line(capsys) == "project: sweep failed has no COMPLETED experiment (2 FAILED)"


def test_one_completed_without_a_timed_step(tmp_path, capsys, monkeypatch):
    synthetic.write_sweep(str(tmp_path), "warm", strategies=("ddp",), nodes=(2,), steps=2)  # both steps warm-up
    _draw_once(monkeypatch)
    assert cli.run(["plots", "--sweep", "warm", "--logs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "not drawn: throughput (no experiment has timed steps)" in out and "Traceback" not in out + err
    assert (tmp_path / "warm" / "summary.csv").is_file() and (tmp_path / "warm" / "report.html").is_file()
