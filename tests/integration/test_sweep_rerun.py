"""bin/sweep run twice under one sweep name with other settings: the second run goes beside the
first (new ids), or, where an id would be reused for other settings, is refused before anything
is written; sweep.json lists exactly the runs present."""

import json
import os

import pytest

from contract import rundir
from tests.helpers import sweep

pytestmark = pytest.mark.integration

ARGS = ("--backend", "simulate", "--sweep", "x", "--strategies", "single", "--nodes", "1", "--steps", "3",
        "--global-batch", "16", "--warmup", "0")


def test_changed_model_runs_beside_and_sweep_json_lists_the_runs_present(tmp_path):
    first = sweep("--logs", str(tmp_path), *ARGS, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    second = sweep("--logs", str(tmp_path), *ARGS, "--model", "cnn", timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    path = tmp_path / "x"
    present = sorted(d for d in os.listdir(path) if (path / d / "config.json").exists())
    assert present == ["single-n1-p1-b16-cnn-s3-w0-r0", "single-n1-p1-b16-s3-w0-r0"], present
    doc = json.loads((path / "sweep.json").read_text())
    assert sorted(e["id"] for e in doc["experiments"]) == present
    for e in doc["experiments"]:
        run = json.loads((path / e["id"] / "config.json").read_text())
        assert run["identity"] == e["identity"]
        assert rundir.read_status(str(path / e["id"]))["state"] == "COMPLETED"
    assert {e["identity"]["model"] for e in doc["experiments"]} == {"mlp", "cnn"}
    assert "model" not in doc["grid"] and len(doc["invocations"]) == 2
    # the same command again: both are done, nothing runs
    third = sweep("--logs", str(tmp_path), *ARGS, "--model", "cnn", timeout=300)
    assert third.returncode == 0 and "already COMPLETED" in third.stdout, third.stdout + third.stderr

    # an id that would name a run made with other settings (a run from before ids covered the
    # model, say): exit 2, one line, nothing written
    mlp_id = next(e["id"] for e in doc["experiments"] if e["identity"]["model"] == "mlp")
    cfg_path = path / mlp_id / "config.json"
    run = json.loads(cfg_path.read_text())
    run["identity"]["model"] = run["config"]["model"] = "resnet18"
    cfg_path.write_text(json.dumps(run))
    before = {p: (path / p).stat().st_mtime_ns for p in ("sweep.json", f"{mlp_id}/status.json")}
    refused = sweep("--logs", str(tmp_path), *ARGS, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and refused.stdout == "", refused.stdout + refused.stderr
    assert lines[0] == (f"error: sweep x already holds {mlp_id} run with other settings "
                        f"(model: 'resnet18' -> 'mlp'); use another SWEEP name or remove {path / mlp_id}")
    assert before == {p: (path / p).stat().st_mtime_ns for p in before}
