"""`make compare`: an experiment COMPLETED in A and missing (or not COMPLETED) in B is a regression."""

from __future__ import annotations

import json
import shutil

from analysis import compare
from analysis.synthetic import write_sweep
from contract import rundir


def _sweeps(tmp_path) -> str:
    write_sweep(str(tmp_path), "a", strategies=("single", "ddp"), nodes=(1, 2), steps=8)
    exp = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name.startswith("ddp-n2"))[0]
    for name in ("same", "gone", "unlisted", "failed"):
        shutil.copytree(tmp_path / "a", tmp_path / name)
    shutil.rmtree(tmp_path / "gone" / exp)  # still listed in sweep.json: state MISSING
    shutil.rmtree(tmp_path / "unlisted" / exp)  # not even listed: absent from B's summary
    meta = json.loads((tmp_path / "unlisted" / "sweep.json").read_text())
    meta["experiments"] = [e for e in meta["experiments"] if e.get("id") != exp]
    (tmp_path / "unlisted" / "sweep.json").write_text(json.dumps(meta))
    rundir.write_status(str(tmp_path / "failed" / exp), "FAILED")
    return exp


def test_completed_in_a_missing_or_failed_in_b_exits_1(tmp_path, capsys):
    exp = _sweeps(tmp_path)
    logs = ["--logs", str(tmp_path)]
    assert compare.main(["a", "same", *logs]) == 0
    capsys.readouterr()
    for b, shown in (("gone", "MISSING"), ("unlisted", "missing"), ("failed", "FAILED")):
        assert compare.main(["a", b, *logs]) == 1, b
        out = capsys.readouterr().out
        row = [x for x in out.splitlines() if x.startswith(exp) and " state " in x]
        assert row and "REGRESSED" in row[0] and shown in row[0], out


def test_missing_in_a_is_not_a_regression(tmp_path, capsys):
    _sweeps(tmp_path)
    assert compare.main(["unlisted", "a", "--logs", str(tmp_path)]) == 0
    assert "only in B" in capsys.readouterr().out
