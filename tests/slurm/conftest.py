"""The loopback Slurm cluster every test in tests/slurm shares (bin/cluster's code, on its own ports).

The session's cluster deliberately differs from `bin/cluster up`'s defaults (node names cn1..cn4,
partition `batch`, other ports, its own state folder): the scripts must not depend on them.
Without Slurm installed these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os

import pytest

from slurm import cluster
from tests.helpers import ROOT

SHAPE = cluster.Shape(nodes=4, prefix="cn", partition="batch", port=17400)
STATE_DIR = os.path.join(ROOT, ".cluster", "pytest")


@pytest.fixture(scope="session")
def slurm_env():
    """Slurm's environment for the session's cluster: up once, down when the session ends."""
    missing = cluster.missing_binaries()
    if missing:
        message = cluster.MISSING.format(missing=", ".join(missing))
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    c = cluster.Cluster(STATE_DIR)
    c.up(SHAPE, quiet=True)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = c.conf
    yield c.env()
    if old is None:
        del os.environ["SLURM_CONF"]
    else:
        os.environ["SLURM_CONF"] = old
    c.down(quiet=True)
