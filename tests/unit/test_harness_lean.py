"""The loop's lean parts: the log line encoder, unbuffered records, the rendezvous wait."""

from __future__ import annotations

import json
import math
import socket
import time

import numpy as np
import pytest

from trainers.common import distenv, setup
from trainers.common.logwriter import RankLog, encode


def test_encode_writes_non_finite_floats_as_null_and_falls_back_for_what_orjson_refuses():
    line = encode({"a": math.nan, "b": -math.inf, "c": 0.1 + 0.2, "d": None, "e": True, "f": 2 ** 40})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"a": None, "b": None, "c": 0.1 + 0.2, "d": None, "e": True, "f": 2 ** 40}
    odd = encode({"g": np.float64(math.inf), "h": np.float64(1.5), "i": 2 ** 70})  # stdlib path
    assert json.loads(odd) == {"g": None, "h": 1.5, "i": 2 ** 70}


def test_each_record_is_in_the_file_when_write_returns_and_appends(tmp_path):
    (tmp_path / "rank-0.jsonl").write_text('{"event": "start", "attempt": 1}\n')
    log = RankLog(str(tmp_path), 0, "node0", attempt=2)
    log.write("step", step=0, loss=math.nan)
    lines = (tmp_path / "rank-0.jsonl").read_text().splitlines()  # no close, no flush: already there
    assert len(lines) == 2 and json.loads(lines[0])["attempt"] == 1
    rec = json.loads(lines[1])
    assert (rec["event"], rec["rank"], rec["node"], rec["attempt"], rec["step"], rec["loss"]) == \
        ("step", 0, "node0", 2, 0, None)


def test_waiting_for_the_store_returns_once_it_listens_and_fails_at_the_timeout():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        t0 = time.monotonic()
        setup._await_store(distenv.DistEnv(1, 2, 1, 2, "node0", "127.0.0.1", port, "env"), 5.0)
        assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()  # nothing listens now: it fails after the timeout, naming the address
    with pytest.raises(RuntimeError, match=f"store at 127.0.0.1:{port} did not answer within 0.2 s"):
        setup._await_store(distenv.DistEnv(1, 2, 1, 2, "node0", "127.0.0.1", port, "env"), 0.2)
    assert 0.2 <= time.monotonic() - t0 < 2.0
    setup._await_store(distenv.DistEnv(0, 2, 0, 2, "node0", "127.0.0.1", port, "env"), 0.2)  # rank 0: no wait
