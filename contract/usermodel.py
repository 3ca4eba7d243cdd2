"""Your own model: `--model module:function` (MODEL=module:function).

The module is importable from the repository or from PYTHONPATH; the function takes the data
set's `DataSpec` (`shape`, `num_classes`, `in_features`, `kind`) and returns a non-empty list of
`nn.Module` blocks, each taking one tensor and returning one (the stages cut between them).

Checked in two places, so that validation stays torch-free:
- `check` (config.validate: bin/sweep, every trainer, the sbatch scripts): the reference's form,
  that the module exists (`importlib.util.find_spec`, which imports only its parent packages)
  and that it defines the function at top level (read from its source; the module itself is
  imported only where it has no readable source, or defines names dynamically).
- `load` (models.build_blocks, when a trainer builds the model, before its first step): the
  import itself and the call; models.py checks what the function returned.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Callable
from typing import Any

from contract.errors import ConfigError
from contract.tables import MODELS

REFERENCE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


def is_reference(model: str) -> bool:
    """True for a module:function model (built-in names have no colon)."""
    return ":" in model


def _split(ref: str) -> tuple[str, str]:
    m = REFERENCE.match(ref)
    if m is None:
        raise ConfigError(f"unknown model {ref!r}: choose from {', '.join(MODELS)}, or give your own as "
                          "module:function (e.g. examples.my_model:build)")
    return m.group(1), m.group(2)


def _top_level_names(source: str, path: str) -> set[str] | None:
    """Names bound at a module's top level; None when they cannot be read from the source
    (a star import or a module __getattr__ can define any name)."""
    names: set[str] = set()
    for node in ast.parse(source, path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" for a in node.names):
                return None
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return None if "__getattr__" in names else names


def _defines(module: str, function: str) -> bool:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    origin = spec.origin or ""
    if origin.endswith(".py"):
        try:
            with open(origin, encoding="utf-8") as f:
                names = _top_level_names(f.read(), origin)
        except (OSError, SyntaxError, ValueError):
            names = None  # let the import below say what is wrong
        if names is not None:
            return function in names
    return hasattr(importlib.import_module(module), function)  # no readable source: import it


def check(model: str) -> None:
    """A built-in model name, or a module:function whose module exists and defines the function.
    Raises ConfigError (one line). Imports nothing but the module's parent packages, unless the
    module's source cannot tell (then the module)."""
    if model in MODELS:
        return
    module, function = _split(model)
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as e:  # a parent package is missing or fails to import
        raise ConfigError(f"invalid model {model!r}: cannot import {module!r}: {_one_line(e)}") from None
    if not found:
        raise ConfigError(f"invalid model {model!r}: no module {module!r} on the path (the repository "
                          "or PYTHONPATH)")
    try:
        defined = _defines(module, function)
    except Exception as e:  # noqa: BLE001 - importing user code can raise anything: one line
        raise ConfigError(f"invalid model {model!r}: importing {module!r} failed: {_one_line(e)}") from None
    if not defined:
        raise ConfigError(f"invalid model {model!r}: module {module!r} defines no {function!r}")


def load(model: str) -> Callable[[Any], Any]:
    """The function of a module:function reference, imported (ConfigError, one line, if not)."""
    check(model)
    module, function = _split(model)
    try:
        fn = getattr(importlib.import_module(module), function)
    except Exception as e:  # noqa: BLE001 - importing user code can raise anything: one line
        raise ConfigError(f"invalid model {model!r}: importing {module!r} failed: {_one_line(e)}") from None
    if not callable(fn):
        raise ConfigError(f"invalid model {model!r}: {function!r} is a {type(fn).__name__}, not a function")
    return fn


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"
