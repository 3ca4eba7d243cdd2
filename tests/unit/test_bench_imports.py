"""Every benchmark `make bench` lists imports and has a main (a bench is run rarely: a broken import
would otherwise be found by the person who needs its figure)."""

from __future__ import annotations

import importlib
import os
import re

import pytest

from tests.helpers import ROOT


def _listed() -> list[str]:
    text = open(os.path.join(ROOT, "Makefile")).read()
    m = re.search(r"\$\(filter all,\$\(BENCH\)\),([a-z_ ]+),", text)
    assert m, "the bench target's list of benchmarks"
    return m.group(1).split()


def test_the_list_is_every_bench_module():
    files = {f[:-3] for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith(".py") and f != "__init__.py"}
    # runs.py: what the benchmarks share; planlayouts.py: bench.plan's tp / mix rows
    assert set(_listed()) == files - {"runs", "planlayouts"}


@pytest.mark.parametrize("name", _listed())
def test_bench_imports(name: str):
    assert callable(importlib.import_module(f"bench.{name}").main)
