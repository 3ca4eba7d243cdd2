"""Sweep files (sweeper/sweepfile.py, bin/sweep --config): every file of sweeps/ dry-runs,
bad files get one line and exit 2 with nothing written, the command line overrides the file,
the resolved grid reaches sweep.json and every setting config.json. In process: bin/sweep's
main() (sweeper/cli.py) is called, never launched. The Makefile's variables: test_make_variables.py."""

from __future__ import annotations

import json
import os
import re

import pytest

import simulate.backend
from sweeper import cli, grid, sweepfile
from sweeper.backends import Backend
from tests.helpers import ROOT

GPU_ONLY = {"gpu-shared.yaml"}
FILES = sweepfile.available()


def _sweep(capsys, logs, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["--logs", str(logs), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_sweeps_folder_has_one_file_per_question_each_saying_what_it_answers():
    assert len(FILES) >= 5 and GPU_ONLY <= {os.path.basename(p) for p, _ in FILES}
    readme, docs = (open(os.path.join(ROOT, p)).read() for p in ("README.md", "docs/sweeps.md"))
    for path, answers in FILES:
        name = f"sweeps/{os.path.basename(path)}"
        assert len(answers) > 20, f"{name}: its first line says what it answers"
        assert name in readme and name in docs, f"{name} is not listed in README.md and docs/sweeps.md"


@pytest.mark.parametrize("path", [p for p, _ in FILES], ids=os.path.basename)
@pytest.mark.parametrize("gpus", [0, 1])
def test_every_sweep_file_dry_runs_and_writes_nothing(path, gpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(grid, "gpu_count", lambda: gpus)
    logs = tmp_path / "logs"
    rc, out, err = _sweep(capsys, logs, "--config", path, "--dry-run", "--backend", "simulate")
    assert not logs.exists()
    if gpus == 0 and os.path.basename(path) in GPU_ONLY:
        assert rc == 2 and err.count("\n") == 1 and "no GPU" in err, err
        return
    assert rc == 0, err
    runs = out.count("would run")
    assert 1 <= runs <= 20, f"{path}: {runs} experiments is more than a few minutes here"


@pytest.mark.parametrize("text, words", [
    ("nodes: [1, 2\n", ["line 2", "YAML error"]),
    ("strategies: ddp\nbacth: 32\n", ["line 2", "unknown key 'bacth'", "did you mean 'batch'"]),
    ("strategies: ddp\nprecission: bf16\n", ["unknown key 'precission'", "'precision'"]),
    ("batch: big\n", ["line 1", "invalid global_batch 'big'"]),
    ("repeats: [1, 2]\n", ["invalid repeats", "not a list"]),
    ("batch: 32\nsteps: 5\nbatch: 64\n", ["line 3", "'batch' given twice (first on line 1)"]),
    ("- ddp\n- ring\n", ["expected 'key: value' lines, not a list"]),
    ("# nothing\n", ["no settings"]),
    ("model: {name: mlp}\n", ["not a mapping"]),
    ("precision: [fp32, fp8]\n", ["unknown precision 'fp8'"]),
    ("dry_run: maybe\n", ["invalid dry_run 'maybe'"]),
    ("layouts: [1x4, 4x1]\nnodes: 2\n", ["layouts or nodes and procs, not both"]),
    ("data_size: 4096\n", ["invalid data_size 4096"]),
])
def test_a_bad_file_is_one_line_exit_2_and_nothing_written(text, words, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    logs = tmp_path / "logs"
    rc, out, err = _sweep(capsys, logs, "--config", str(path), "--backend", "simulate")
    assert rc == 2 and out == "" and not logs.exists()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def test_a_missing_file_is_one_line(tmp_path, capsys):
    rc, _, err = _sweep(capsys, tmp_path / "logs", "--config", str(tmp_path / "nope.yaml"))
    assert rc == 2 and "cannot read sweep file" in err and err.count("\n") == 1


def test_the_command_line_overrides_the_file_and_the_file_the_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("strategies: [ddp, ring]\nbatch: [32, 64]\nsteps: 5\nlayouts: [1x2, 2x1]\ntime: 1:30:00\n")
    settings, base, axes = cli.resolve(["--config", str(path), "--global-batch", "16"])
    assert axes["strategy"] == ["ddp", "ring"] and axes["global_batch"] == [16] and axes["steps"] == [5]
    assert axes[("nodes", "procs_per_node")] == [(1, 2), (2, 1)] and "nodes" not in axes
    assert settings["time_limit"] == "1:30:00" and settings["repeats"] == 1  # not 5400: no base-60 YAML
    assert re.fullmatch(r"mine-\d{8}-\d{6}", settings["sweep"])
    _, _, axes = cli.resolve(["--config", str(path), "--nodes", "4"])  # flags beat the file's layouts
    assert axes["nodes"] == [4] and ("nodes", "procs_per_node") not in axes
    _, _, axes = cli.resolve([])
    assert axes == {"strategy": ["ddp"], "nodes": [1, 2]}


class _Recorder(Backend):
    """Writes each experiment's config.json as a backend does, runs nothing, says COMPLETED."""
    name = "simulate"

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def submit(self, book, todo):
        for exp in todo:
            book.prepare(exp)
            book.mark(exp.id, state="COMPLETED")

    def wait(self, book, todo):
        return {e.id: "COMPLETED" for e in todo}


def test_sweep_json_holds_the_resolved_grid_and_config_json_every_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(simulate.backend, "SimulateBackend", _Recorder)
    path = tmp_path / "grid.yaml"
    path.write_text("strategies: ddp\nlayouts: 1x1\ndata_size: [256, 512]\nbatch: 32\nsteps: 3\nsweep: g\n")
    rc, out, err = _sweep(capsys, tmp_path / "logs", "--config", str(path), "--backend", "simulate",
                          "--precision", "fp32,bf16")
    assert rc == 0, err
    doc = json.loads((tmp_path / "logs" / "g" / "sweep.json").read_text())
    assert doc["grid"]["axes"] == {"strategy": ["ddp"], "layouts": ["1x1"], "data_size": [256, 512], "steps": [3],
                                   "global_batch": [32], "precision": ["fp32", "bf16"]}
    assert doc["grid"]["config"] == str(path) and len(doc["experiments"]) == 4
    for e in doc["experiments"]:
        cfg = json.loads((tmp_path / "logs" / "g" / e["id"] / "config.json").read_text())
        assert cfg["config"]["data_size"] in (256, 512) and cfg["identity"] == e["identity"]
        assert set(cfg["config"]) == set(cli.FIELDS)
