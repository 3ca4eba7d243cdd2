"""The strategy registry (contract/registry.py) is the one list of strategies.

- README.md and docs/strategies.md each contain registry.markdown_table() verbatim, as one block.
- The projection's traffic model is the registry's (pattern/messages = comm_bytes/comm_messages).
- Every strategy that a module lists, a trainer file, a committed sbatch script is a registry name.
- No module outside the registry spells out a tuple/list/set of several strategy names (AST scan;
  tests/ and bench/ excluded: tests parametrize over chosen strategies, benchmarks pick theirs).
"""

from __future__ import annotations

import ast
import importlib
import os

import pytest

from contract import registry
from tests.helpers import ROOT

DOCS = ("README.md", os.path.join("docs", "strategies.md"))


@pytest.mark.parametrize("doc", DOCS)
def test_docs_carry_the_registry_table(doc):
    """The doc contains the table exactly once, character for character, as `python -m
    contract.registry` prints it (header, separator, one row per strategy in registry order)."""
    path = os.path.join(ROOT, doc)
    assert os.path.exists(path), f"{doc} is missing"
    with open(path) as f:
        text = f.read()
    table = registry.markdown_table()
    assert text.count(table) == 1, f"{doc} must contain `python -m contract.registry`'s table once"


@pytest.mark.parametrize("strategy", registry.names(projected=True))
def test_projection_traffic_is_the_registrys(strategy):
    from analysis.projection.model import messages, pattern

    s = registry.get(strategy)
    for world in (1, 2, 3, 4, 8, 64, 1024):
        assert pattern(strategy, world) == s.comm_bytes(world, 1.0)
        for chunks in (1, 4, 8):
            assert messages(strategy, world, chunks) == s.comm_messages(world, chunks)
    assert pattern(strategy, 1) == 0 and messages(strategy, 1, 4) == 0


def test_projection_covers_the_projected_strategies():
    from analysis.projection.model import PIPELINE, PROJECTED

    assert PROJECTED == registry.names(projected=True) and set(PIPELINE) <= set(PROJECTED)
    assert all(registry.get(s).kind == "staged" for s in PIPELINE)


# Modules whose constants may list strategies (imported, so computed lists count as well as literal ones).
MODULES = ("contract.config", "sweeper.grid", "contract.registry", "analysis.projection.model",
           "analysis.projection.fit", "analysis.projection.points", "simulate.launcher", "simulate.backend",
           "analysis.load", "analysis.frames", "analysis.logread", "analysis.metrics", "analysis.plots",
           "analysis.synthetic", "analysis.compare", "slurm.render", "slurm.track", "slurm.backend")


def _strategy_collections(value) -> list[set[str]]:
    """String collections in a module constant (dict keys and values included, one level deep)."""
    out = []
    if isinstance(value, dict):
        out.append({k for k in value if isinstance(k, str)})
        for v in value.values():
            out += _strategy_collections(v) if not isinstance(v, dict) else []
    elif isinstance(value, tuple | list | set | frozenset):
        out.append({v for v in value if isinstance(v, str)})
    return out


@pytest.mark.parametrize("module", MODULES)
def test_every_listed_strategy_is_a_registry_name(module):
    """A constant that holds two or more strategy names is a strategy list: every member must be one."""
    mod = importlib.import_module(module)
    names = set(registry.NAMES)
    for attr, value in vars(mod).items():
        if attr.startswith("__"):
            continue
        for items in _strategy_collections(value):
            if len(items & names) >= 2:
                assert items <= names, f"{module}.{attr} lists {sorted(items - names)}, not registry strategies"


def test_trainers_and_sbatch_scripts_are_the_registry():
    trainers = {f[:-3] for f in os.listdir(os.path.join(ROOT, "trainers")) if f.endswith(".py") and f != "__init__.py"}
    scripts = {f[:-7] for f in os.listdir(os.path.join(ROOT, "slurm")) if f.endswith(".sbatch")}
    assert trainers == set(registry.NAMES) and scripts == set(registry.NAMES)


# ---- no strategy lists outside the registry -----------------------------------------------------

EXCLUDED_DIRS = {"tests", "bench", ".venv", ".git", "logs", "data", ".cluster", "__pycache__", "node_modules"}
BIN_SCRIPTS = ("sweep", "launch", "cluster", "menu")
# Known exceptions, each with its reason (remove the entry once the module asks the registry).
KNOWN = {
    "analysis/synthetic.py": "write_sweep's default strategies: fixture data for tests and benchmarks",
    "analysis/plan.py": "MIX_FIELDS: a mix row's degrees dp, tp, pp (field names that match strategy names)",
}


def python_sources() -> list[str]:
    """Repository-relative paths of every Python source: *.py outside EXCLUDED_DIRS, and bin's scripts."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
        out += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in sorted(filenames) if f.endswith(".py")]
    out += [os.path.join("bin", b) for b in BIN_SCRIPTS if os.path.exists(os.path.join(ROOT, "bin", b))]
    return out


def literal_strategy_lists(source: str, path: str = "<source>") -> list[tuple[int, list[str]]]:
    """(line, names) of every literal tuple/list/set holding two or more registry names."""
    tree = ast.parse(source, path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in registry.NAMES]
            if len(names) >= 2:
                found.append((node.lineno, names))
    return found


def test_no_strategy_lists_outside_the_registry():
    sources = python_sources()
    assert "contract/registry.py" in sources and "bin/sweep" in sources
    bad = {}
    for path in sources:
        if path == os.path.join("trainers", "common", "registry.py") or path in KNOWN:
            continue
        with open(os.path.join(ROOT, path)) as f:
            found = literal_strategy_lists(f.read(), path)
        if found:
            bad[path] = found
    assert not bad, f"strategy lists outside contract/registry.py (ask registry.names(...)): {bad}"


def test_the_scan_finds_a_list():
    source = 'X = ("ddp", "ring")\nY = ["mlp", "cnn"]\nZ = {"gpipe", "1f1b"}\ndef f(s=["ps", "zero", "x"]): pass\n'
    assert literal_strategy_lists(source) == [(1, ["ddp", "ring"]), (4, ["ps", "zero"])]
