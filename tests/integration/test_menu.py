"""bin/menu through a pseudo-terminal (stdlib pty), as a user at a keyboard: a tiny sweep file
chosen, run and plotted; a grid of one's own asked for, a bad answer asked again, dry-run only."""

from __future__ import annotations

import json
import os
import pty
import select
import time

import pytest

from contract import rundir
from tests.helpers import ROOT, exp_id

pytestmark = pytest.mark.timeout(240)


class Terminal:
    """bin/menu on the child side of a pty; `expect` reads until a text shows, `send` types a line."""

    def __init__(self, *argv: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the menu, its stdin a terminal
            try:
                os.execv(os.path.join(ROOT, "bin", "menu"), ["bin/menu", *argv])
            finally:
                os._exit(127)
        self.seen = ""

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child side closed
            return False
        self.seen += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def expect(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.time() + timeout
        while text not in self.seen:
            if not self._read(deadline):
                raise AssertionError(f"{text!r} did not show in {timeout} s; the terminal shows:\n{self.seen}")
        before, _, self.seen = self.seen.partition(text)
        return before + text

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def exit_status(self, timeout: float = 60.0) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._read(min(deadline, time.time() + 0.5))
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"bin/menu did not exit; the terminal shows:\n{self.seen}")


def test_menu_runs_a_sweep_file_then_plots_and_says_where_the_report_is(tmp_path):
    sweeps, logs = tmp_path / "sweeps", tmp_path / "logs"
    sweeps.mkdir()
    (sweeps / "tiny.yaml").write_text("# the smallest sweep: single on one node for 3 steps\n"
                                      "strategies: single\nnodes: 1\nsteps: 3\nbatch: 16\nbackend: simulate\n")
    term = Terminal("--sweeps", str(sweeps), "--logs", str(logs))
    menu = term.expect("which one? [2]: ")
    assert "1) " in menu and "tiny.yaml: the smallest sweep" in menu and "2) my own grid" in menu
    term.send("1")
    term.expect("sweep name (folder under logs/) [tiny-")
    term.send("menu-t")
    shown = term.expect("dry run) first? y/n [y]: ")
    assert f"bin/sweep --config {sweeps / 'tiny.yaml'} --sweep menu-t --logs {logs}" in shown
    term.send("n")
    term.expect("run it now? y/n [y]: ")
    term.send("")
    out = term.expect("report: ", timeout=180)
    assert "1/1 completed" in out and "analysis.cli plots --sweep menu-t" in out
    assert term.exit_status() == 0, term.seen
    assert str(logs / "menu-t" / "report.html") in term.seen
    path = logs / "menu-t"
    assert (path / "report.html").is_file() and (path / "summary.csv").is_file()
    grid = json.loads((path / "sweep.json").read_text())["grid"]
    assert grid["config"] == str(sweeps / "tiny.yaml") and grid["axes"]["steps"] == [3]
    run_id = exp_id("single", steps=3, global_batch=16)
    assert rundir.read_status(str(path / run_id))["state"] == "COMPLETED"


def test_menu_asks_again_after_a_bad_answer_and_dry_runs_a_grid_of_ones_own(tmp_path):
    logs = tmp_path / "logs"
    term = Terminal("--sweeps", str(tmp_path / "none"), "--logs", str(logs))
    term.expect("which one? [1]: ")
    term.send("1")
    for question, answer in (("strategies", "single"), ("node counts", "0"), ("node counts", "1"),
                             ("ranks per node", ""), ("model", ""), ("data set", ""), ("steps", "3"),
                             ("backend", "simulate"), ("sweep name", "own")):
        before = term.expect(f"{question}")
        if question == "node counts" and answer == "1":
            assert "invalid nodes '0'" in before
        term.expect("]: ")
        term.send(answer)
    term.expect("dry run) first? y/n [y]: ")
    term.send("y")
    out = term.expect("run it now? y/n [y]: ")
    assert f"would run {exp_id('single', steps=3)}" in out
    term.send("n")
    assert term.exit_status() == 0
    assert not logs.exists()
