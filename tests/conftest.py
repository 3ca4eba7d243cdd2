"""Test layout, one directory per kind (markers follow the directory, so `-m` filters work):

    tests/unit/         in-process only: no subprocess, no simulate launcher, no bin/sweep run
    tests/integration/  launch processes (simulate backend, bin/sweep, bash, chromium)  -> integration
    tests/slurm/        need the loopback Slurm cluster (bin/cluster)                   -> slurm

`make test-fast` runs tests/unit; `make test` runs everything.
"""

import os

import pytest

from contract.paths import ROOT

KIND_MARKERS = {"integration": pytest.mark.integration, "slurm": pytest.mark.slurm}


def pytest_collection_modifyitems(config, items):
    tests_dir = os.path.join(ROOT, "tests")
    for item in items:
        rel = os.path.relpath(str(item.path), tests_dir).split(os.sep)
        marker = KIND_MARKERS.get(rel[0]) if len(rel) > 1 else None
        if marker is not None:
            item.add_marker(marker)
