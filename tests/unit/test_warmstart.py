"""Warm start's pieces that need no launch: when it is on, what keys a server, the sweep's --cold."""

from __future__ import annotations

from contract import envnames
from simulate import warmstart
from simulate.backend import SimulateBackend
from sweeper import cli


def test_warm_unless_ts_warm_is_0():
    assert warmstart.enabled({}) and warmstart.enabled({envnames.WARM: "1"})
    assert not warmstart.enabled({envnames.WARM: "0"})


def test_the_server_key_leaves_out_what_the_launcher_sets_per_rank():
    base = {"PATH": "/bin", "TORCH_LOGS": "", envnames.COLLECTIVE_TIMEOUT: "30"}
    rank0 = {**base, "RANK": "0", "MASTER_PORT": "1234", "OMP_NUM_THREADS": "1", envnames.NODE: "node0"}
    rank1 = {**base, "RANK": "1", "MASTER_PORT": "999", "OMP_NUM_THREADS": "2", envnames.NODE: "node1"}
    assert warmstart.env_key(rank0) == warmstart.env_key(rank1) == warmstart.env_key(base)
    # What the interpreter or torch may read at import changes the key: a new server.
    assert warmstart.env_key({**base, "TORCH_LOGS": "dynamo"}) != warmstart.env_key(base)
    assert warmstart.env_key({**base, "MALLOC_ARENA_MAX": "2"}) != warmstart.env_key(base)


def test_the_launcher_sets_every_per_rank_name_the_key_leaves_out():
    import inspect

    from simulate import launcher

    source = inspect.getsource(launcher._spawn)
    for name in warmstart.PER_RANK - {envnames.WARM, envnames.WARM_RANK}:
        constant = next((k for k, v in vars(envnames).items() if v == name and k.isupper()), None)
        assert f'"{name}"' in source or (constant and f"envnames.{constant}" in source), name


def test_sweep_cold_flag(monkeypatch):
    monkeypatch.delenv(envnames.WARM, raising=False)
    assert cli.resolve([])[0]["warm"] is True
    assert cli.resolve(["--cold"])[0]["warm"] is False
    assert SimulateBackend(warm=True).warm and not SimulateBackend(warm=False).warm
    monkeypatch.setenv(envnames.WARM, "0")
    assert not SimulateBackend(warm=True).warm
