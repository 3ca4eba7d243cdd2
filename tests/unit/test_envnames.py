"""contract/envnames.py is the one list of the project's TS_* environment variables: Python code
names them only through its constants, and every TS_ name the shell side (the sbatch templates,
bin/, the Makefile) or the docs spell out is one of them."""

from __future__ import annotations

import ast
import glob
import os
import re

from contract import envnames
from tests.helpers import ROOT
from tests.unit.test_registry import python_sources

TS_NAME = re.compile(r"\bTS_[A-Z][A-Z_]*[A-Z]\b")
SHELL_AND_DOCS = ("slurm/templates/*.j2", "bin/*", "Makefile", "docs/*.md", "README.md")


def _constants() -> dict[str, str]:
    return {k: v for k, v in vars(envnames).items() if k.isupper() and isinstance(v, str)}


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), errors="replace") as f:
        return f.read()


def test_one_constant_per_name_each_with_its_comment():
    consts = _constants()
    assert len(consts) >= 12 and set(consts.values()) == set(envnames.ALL) and len(envnames.ALL) == len(consts)
    for name, value in consts.items():
        assert TS_NAME.fullmatch(value) and value == f"TS_{name}", (name, value)
    lines = _read("contract/envnames.py").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+ = \"TS_", line):
            assert lines[i - 1].startswith("# "), f"{line}: say in a comment above what it means and who sets it"


def test_shell_templates_and_docs_name_only_known_variables():
    files = sorted({os.path.relpath(p, ROOT) for pattern in SHELL_AND_DOCS
                    for p in glob.glob(os.path.join(ROOT, pattern)) if os.path.isfile(p)})
    assert "slurm/templates/job.sbatch.j2" in files and "Makefile" in files and "bin/sweep" in files
    unknown = {(f, n) for f in files for n in TS_NAME.findall(_read(f)) if n not in envnames.ALL}
    assert not unknown, f"TS_ names missing from contract/envnames.py: {sorted(unknown)}"
    assert "TS_CHECKPOINT_ON_SIGNAL" in _read("slurm/templates/job.sbatch.j2")  # the scan reads what it should


def _strings_outside_docstrings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def bare_names(source: str, path: str = "<source>") -> list[tuple[int, str]]:
    """(line, text) of every string literal but a docstring that holds a TS_ name."""
    return [(n.lineno, n.value) for n in _strings_outside_docstrings(ast.parse(source, path))
            if TS_NAME.search(n.value)]


def test_python_names_the_variables_through_the_constants():
    bad, known = {}, set()
    sources = python_sources() + [os.path.relpath(os.path.join(d, f), ROOT) for top in ("tests", "bench")
                                  for d, _, fs in os.walk(os.path.join(ROOT, top)) for f in fs if f.endswith(".py")]
    assert "bench/startup.py" in sources and "trainers/common/runtime.py" in sources
    for rel in sources:
        if rel in (os.path.join("contract", "envnames.py"), os.path.relpath(__file__, ROOT)):
            continue
        source = _read(rel)
        known |= set(TS_NAME.findall(source))  # comments and docstrings may name them
        found = bare_names(source, rel)
        if found:
            bad[rel] = found
    assert not bad, f"use contract.envnames' constants: {bad}"
    assert known <= set(envnames.ALL), sorted(known - set(envnames.ALL))


def test_the_scan_sees_bare_names():
    src = '"""Docstring naming TS_NODE."""\nx = "TS_NODE"\ny = f"--export=ALL,TS_ATTEMPT_BASE={1}"\nz = NODE\n'
    assert [line for line, _ in bare_names(src)] == [2, 3]
