"""`tensorboard --logdir logs/<sweep>/tensorboard` shows what `analysis.cli tensorboard` wrote (issue 12
item 4): the TensorBoard server lists one run per experiment, its scalars, and the hparams of every
run. The event files' contents are checked against the logs in tests/unit/test_tensorboard.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from analysis.synthetic import write_sweep
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(180)
TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")


def _get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _until(check, deadline: float):
    """Wait for the server to have loaded the files (it reads them in the background)."""
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_tensorboard_serves_the_runs(tmp_path):
    path = write_sweep(str(tmp_path), "serve", strategies=("single", "ddp"), nodes=(1, 2), steps=6)
    made = subprocess.run([sys.executable, "-m", "analysis.cli", "tensorboard", "--sweep", "serve", "--logs",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    logdir = os.path.join(path, "tensorboard")
    assert f"tensorboard --logdir {logdir}" in made.stdout, made.stdout
    runs = sorted(d for d in os.listdir(path) if os.path.exists(os.path.join(path, d, "rank-0.jsonl")))
    server = subprocess.Popen([TENSORBOARD, "--logdir", logdir, "--port", "0", "--host", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        url, seen = None, ""
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            seen += line
            m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = m.group(1) if m else None
        assert url, "tensorboard did not start: " + seen
        listed = _until(lambda: set(runs) <= set(_get(f"{url}/data/runs")), deadline)
        assert listed, _get(f"{url}/data/runs")
        tags = _get(f"{url}/data/plugin/scalars/tags")
        for run in runs:
            assert {"loss/train", "time/step_s", "throughput/samples_per_s", "val/acc"} <= set(tags[run]), run
        groups = _get(f"{url}/data/plugin/hparams/session_groups",
                      {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [],
                       "startIndex": 0, "sliceSize": 100})
        assert sorted(g["name"] for g in groups["sessionGroups"]) == runs
        for g in groups["sessionGroups"]:
            assert g["hparams"]["strategy"] == g["name"].split("-")[0] and "data_size" in g["hparams"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
