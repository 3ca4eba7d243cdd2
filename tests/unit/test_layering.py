"""The layout and its import rules (docs/architecture.md), read from the sources (AST; nothing is
imported). Every import statement counts: lazy ones inside functions and those under
TYPE_CHECKING too. The rules:

1. contract/ (the torch-free contract) imports nothing of the project but contract/, and no
   torch, numpy or pandas: every side reads it, bin/sweep validates a grid with it in milliseconds.
2. trainers/ (what a rank runs) imports only contract/ and trainers/.
3. sweeper/ (sweep orchestration) imports contract/ and sweeper/, no torch; only its command
   line, sweeper/cli.py, reaches the backends in simulate/ and slurm/.
4. simulate/ and slurm/ (the backends) import contract/, sweeper/ and the host-side helpers of
   trainers/common/ (GPU partitioning, the rendezvous port), and nothing of analysis/.
5. analysis/ imports only contract/ and analysis/, and no torch: it reads logs anywhere.
6. Nothing imports bench/ except bench/ and tests/; nothing imports tests/ except tests/.
7. No import cycle among the project's modules.
8. Every module path docs/architecture.md names exists, and every package of the project is in
   its folder table.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

from tests.helpers import ROOT
from tests.unit.test_registry import python_sources

SOURCES = python_sources() + [os.path.relpath(os.path.join(d, f), ROOT)
                              for top in ("tests", "bench") for d, _, fs in os.walk(os.path.join(ROOT, top))
                              for f in fs if f.endswith(".py")]
PROJECT = ("contract", "sweeper", "trainers", "simulate", "slurm", "analysis", "bench", "tests", "examples")
HEAVY = ("torch", "numpy", "pandas")
ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")


def imports(path: str, source: str | None = None) -> set[str]:
    """Every module `path` imports, absolute names; `from a.b import c` counts as a.b, and as a.b.c
    where that is a module of this repository (`from contract import registry`)."""
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


def _module_name(path: str) -> str:
    return path if _under(path, "bin") else path.removesuffix(".py").replace(os.sep, ".").removesuffix(".__init__")


def _violations(rule) -> dict[str, list[str]]:
    bad = {}
    for path in SOURCES:
        found = sorted(m for m in imports(path) if rule(path, m))
        if found:
            bad[path] = found
    return bad


def _project(m: str) -> bool:
    return _top(m) in PROJECT


def test_sources_are_found():
    assert {"trainers/ddp.py", "analysis/plots.py", "bin/sweep", "tests/helpers.py", "contract/config.py"} <= set(
        SOURCES)
    assert "contract.registry" in imports("analysis/metrics.py")


def test_contract_imports_only_itself_and_nothing_heavy():
    assert not _violations(lambda p, m: _under(p, "contract") and (
        (_project(m) and _top(m) != "contract") or _top(m) in HEAVY))


def test_trainers_import_only_the_contract_and_themselves():
    assert not _violations(lambda p, m: _under(p, "trainers") and _project(m) and _top(m) not in (
        "contract", "trainers"))


def test_sweeper_is_torch_free_and_only_its_cli_reaches_the_backends():
    def rule(path: str, m: str) -> bool:
        if not _under(path, "sweeper"):
            return False
        allowed = {"contract", "sweeper"} | ({"simulate", "slurm"} if path == os.path.join("sweeper", "cli.py")
                                             else set())
        return (_project(m) and _top(m) not in allowed) or _top(m) in HEAVY
    assert not _violations(rule)


def test_backends_take_only_host_side_helpers():
    host_helpers = {"trainers.common", "trainers.common.distenv"}

    def rule(path: str, m: str) -> bool:
        if not (_under(path, "simulate") or _under(path, "slurm")) or not _project(m):
            return False
        if _top(m) in ("contract", "sweeper", path.split(os.sep)[0]):
            return False
        return m not in host_helpers
    assert not _violations(rule)


def test_analysis_imports_only_the_contract_and_no_torch():
    assert not _violations(lambda p, m: _under(p, "analysis") and (
        (_project(m) and _top(m) not in ("contract", "analysis")) or _top(m) == "torch"))


def test_bench_and_tests_are_leaves():
    bad = _violations(lambda p, m: (_top(m) == "bench" and not (_under(p, "bench") or _under(p, "tests")))
                      or (_top(m) == "tests" and not _under(p, "tests")))
    assert not bad


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (package __init__s included)."""
    names = {_module_name(p): p for p in SOURCES}
    return {name: {m for m in imports(path) if m in names and m != name} for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_through_a_lazy_or_type_checking_import():
    a = imports("a.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\n")
    b = imports("b.py", "def f():\n    import c\n")
    assert cycles({"a": a, "b": b, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_scan_sees_lazy_and_submodule_imports():
    src = "def f():\n    import simulate.launcher\nfrom analysis import load, AnalysisError\nfrom . import x\n"
    assert imports(os.path.join("trainers", "common", "fake.py"), src) == {
        "simulate.launcher", "analysis", "analysis.load", "trainers.common"}


def _doc() -> str:
    with open(ARCHITECTURE) as f:
        return f.read()


def named_paths(text: str) -> set[str]:
    """Repository paths the doc names in backticks: `contract/config.py`, `analysis/projection/`."""
    found = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split(":")[0]
        if "/" in token and _top(token.replace("/", ".")) in (*PROJECT, "bin", "docs", "logs", "sweeps"):
            found.add(token.rstrip("/"))
    return found


def test_architecture_doc_names_only_paths_that_exist():
    paths = named_paths(_doc())
    assert len(paths) >= 20, "docs/architecture.md should name the modules it describes"
    missing = sorted(p for p in paths if "<" not in p and not os.path.exists(os.path.join(ROOT, p)))
    assert not missing


@pytest.mark.parametrize("package", [p for p in PROJECT if p not in ("tests", "examples")])
def test_architecture_doc_lists_every_package_and_module(package):
    doc = _doc()
    assert f"`{package}/`" in doc
    folder = os.path.join(ROOT, package)
    modules = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")
    if package in ("contract", "sweeper", "simulate", "slurm", "analysis"):
        unnamed = [m for m in modules if f"{package}/{m}" not in doc and f"`{m}`" not in doc]
        assert not unnamed, f"docs/architecture.md does not name {unnamed}"


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


MAX_MODULE_LINES = 450  # one job per module: a module past this is doing several


def test_no_module_of_the_project_is_over_the_limit():
    def lines(path: str) -> int:
        with open(os.path.join(ROOT, path)) as f:
            return sum(1 for _ in f)
    code = [p for p in SOURCES if _top(p.replace(os.sep, ".")) not in ("tests",)]
    assert len(code) > 80
    assert not {p: n for p in code if (n := lines(p)) > MAX_MODULE_LINES}
