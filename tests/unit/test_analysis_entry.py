"""One entry module for the analysis commands: analysis.cli; the libraries never import it."""

from __future__ import annotations

import ast
import os

import pytest

from analysis import cli
from analysis.synthetic import write_sweep
from contract.paths import ROOT

ANALYSIS = os.path.join(ROOT, "analysis")


@pytest.mark.parametrize("module", ["plots", "report", "compare", "load", "metrics"])
def test_libraries_do_not_import_cli_nor_run_as_main(module):
    with open(os.path.join(ANALYSIS, f"{module}.py")) as f:
        tree = ast.parse(f.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" if n.module else a.name
                 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(i == "analysis.cli" or i.startswith("analysis.cli.") for i in imported)
    mains = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "__main__" in ast.dump(n.test)]
    assert not mains, f"analysis/{module}.py has an `if __name__ == '__main__'` entry point"


def test_subcommands(tmp_path, capsys):
    assert cli.run([]) == 2 and cli.run(["plot"]) == 2
    assert "give a command" in capsys.readouterr().err
    write_sweep(str(tmp_path), "s", strategies=("single",), nodes=(1,), steps=4)
    assert cli.run(["report", "--sweep", "s", "--logs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "plots:" not in out and (tmp_path / "s" / "report.html").is_file()
    assert cli.run(["compare", "s", "s", "--logs", str(tmp_path)]) == 0
    assert cli.run(["report", "--sweep", "nope", "--logs", str(tmp_path)]) == 2
