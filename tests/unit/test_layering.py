"""Import layering, read from the sources (AST; nothing is imported). Every import statement
counts, lazy ones inside functions too. The rules:

1. trainers/ never imports analysis, simulate, slurm, bench, bin or tests: the trainers run on
   the cluster's nodes and depend on nothing above them.
2. analysis/ takes from trainers/ only the torch-free modules contract.config, registry,
   grid, rundir and balance (and usermodel, cifarfiles, which validation uses), and never imports
   torch, simulate, slurm, bench or tests: it reads log files anywhere, without torch.
3. Those torch-free modules import no torch and, inside trainers/, only each other.
4. Nothing imports bench except bench itself and tests; nothing imports tests except tests.
"""

from __future__ import annotations

import ast
import os

import pytest

from tests.helpers import ROOT
from tests.unit.test_registry import python_sources

TORCH_FREE = ("contract.config", "contract.registry", "sweeper.grid",
              "contract.rundir", "contract.balance", "contract.usermodel",
              "contract.cifarfiles")
SOURCES = python_sources() + [os.path.relpath(os.path.join(d, f), ROOT)
                              for top in ("tests", "bench") for d, _, fs in os.walk(os.path.join(ROOT, top))
                              for f in fs if f.endswith(".py")]


def imports(path: str, source: str | None = None) -> set[str]:
    """Every module `path` imports, absolute names; `from a.b import c` counts as a.b, and as a.b.c
    where that is a module of this repository (`from trainers.common import registry`)."""
    if source is None:
        with open(os.path.join(ROOT, path)) as f:
            source = f.read()
    tree = ast.parse(source, path)
    package = os.path.dirname(path).replace(os.sep, ".")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _existing_module(f"{base}.{a.name}")}
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def _under(path: str, top: str) -> bool:
    return path.split(os.sep)[0] == top


def _existing_module(name: str) -> bool:
    """True when `name` is a module of this repository (a.b -> a/b.py or a/b/__init__.py)."""
    base = os.path.join(ROOT, *name.split("."))
    return os.path.exists(base + ".py") or os.path.exists(os.path.join(base, "__init__.py"))


def _violations(rule) -> dict[str, list[str]]:
    bad = {}
    for path in SOURCES:
        found = sorted(m for m in imports(path) if rule(path, m))
        if found:
            bad[path] = found
    return bad


def test_sources_are_found():
    assert {"trainers/ddp.py", "analysis/plots.py", "bin/sweep", "tests/helpers.py"} <= set(SOURCES)
    assert "contract.registry" in imports("analysis/metrics.py")


def test_trainers_import_nothing_above_them():
    banned = {"analysis", "simulate", "slurm", "bench", "bin", "tests"}
    assert not _violations(lambda p, m: _under(p, "trainers") and _top(m) in banned)


def test_analysis_takes_only_torch_free_modules_from_trainers():
    def rule(path: str, m: str) -> bool:
        if not _under(path, "analysis"):
            return False
        if _top(m) in {"torch", "simulate", "slurm", "bench", "tests"}:
            return True
        return _top(m) == "trainers" and m not in TORCH_FREE and m not in ("trainers", "trainers.common")
    assert not _violations(rule)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules(module):
    path = os.path.join(*module.split(".")) + ".py"
    found = imports(path)
    assert not {m for m in found if _top(m) == "torch"}, f"{module} imports torch"
    inside = {m for m in found if _top(m) == "trainers" and _existing_module(m) and m != "trainers.common"}
    assert inside <= set(TORCH_FREE), f"{module} imports {sorted(inside - set(TORCH_FREE))}"


def test_bench_and_tests_are_leaves():
    bad = _violations(lambda p, m: (_top(m) == "bench" and not (_under(p, "bench") or _under(p, "tests")))
                      or (_top(m) == "tests" and not _under(p, "tests")))
    assert not bad


def test_the_scan_sees_lazy_and_submodule_imports():
    src = "def f():\n    import simulate.launcher\nfrom analysis import load, AnalysisError\nfrom . import x\n"
    assert imports(os.path.join("trainers", "common", "fake.py"), src) == {
        "simulate.launcher", "analysis", "analysis.load", "trainers.common"}


def test_only_the_trainers_and_tests_import_runtime():
    """trainers.common.runtime is every trainer's entry (`main`) and the rank's exit; the set-up
    (setup.py) and the loop (loop.py) are imported from their own modules, never through it."""
    def rule(path: str, m: str) -> bool:
        return m == "trainers.common.runtime" and not (_under(path, "tests") or os.path.dirname(path) == "trainers")
    assert not _violations(rule)


def _module_path(name: str) -> str:
    base = os.path.join(*name.split("."))
    return base + ".py" if os.path.exists(os.path.join(ROOT, base + ".py")) else os.path.join(base, "__init__.py")


def test_context_imports_nothing_that_imports_it_back():
    """trainers/common/context.py holds Context so that the set-up, the loop, the trainers and
    the checkpoints can all name it: nothing it imports, however indirectly, may import it."""
    seen, todo = set(), [m for m in imports(_module_path("trainers.common.context")) if _existing_module(m)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [n for n in imports(_module_path(m)) if _existing_module(n)]
    assert "trainers.common.context" not in seen
    assert "trainers.common.runtime" not in seen
