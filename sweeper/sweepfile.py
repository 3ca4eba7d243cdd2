"""Sweep files: bin/sweep's settings in YAML (`bin/sweep --config FILE`, `make sweep CONFIG=FILE`).
Torch-free; the one module that reads YAML.

A file maps keys to values. A key is a make variable in lower case (`nodes`, `strategies`,
`batch`, `data_size`, `procs`, `time`, ...), or for a setting without a make variable its
bin/sweep flag without the dashes (`lr`, `warmup`, `stages`). A list is a sweep axis. Settings
given on bin/sweep's command line override the file's, and the file's override the defaults.
A bad file is one `ConfigError` line naming the file and the line: a YAML error, an unknown key
(with the nearest valid one), a key given twice, a wrong type or value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from contract.errors import ConfigError
from contract.paths import SWEEP_FILES

# bin/sweep destinations whose key (the make variable) is spelt otherwise.
KEY_NAMES = {"strategy": "strategies", "global_batch": "batch", "procs_per_node": "procs", "time_limit": "time"}
# Where a setting came from; a later source overrides an earlier one.
SOURCES = ("default", "file", "command line")


def key(dest: str) -> str:
    """The sweep-file key (= lower-case make variable) of a bin/sweep flag destination."""
    return KEY_NAMES.get(dest, dest)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without its surprises for these settings: integers are plain decimals, so
    `time: 1:30:00` stays the text it looks like (not 5400, base 60) and `010` is ten."""


_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in rules if tag != _INT]
                                   for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def read(path: str, converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """The file's settings by key, each through its converter (`converters`: every valid key).
    Raises ConfigError, one line: '<path> line N: ...'."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read sweep file {path}: {e.strerror}") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: YAML error: {problem}") from None
    if root is None:
        raise ConfigError(f"{path}: no settings (expected 'key: value' lines)")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path} line {_line(root)}: expected 'key: value' lines, not a "
                          f"{'list' if isinstance(root, yaml.SequenceNode) else 'single value'}")
    loader = _Loader("")
    out: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        name, line = key_node.value, _line(key_node)
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{path} line {line}: a key must be a word")
        if name in lines:
            raise ConfigError(f"{path} line {line}: key {name!r} given twice (first on line {lines[name]})")
        lines[name] = line
        if name not in converters:
            nearest = difflib.get_close_matches(name, list(converters), n=1, cutoff=0.0)
            raise ConfigError(f"{path} line {line}: unknown key {name!r}"
                              + (f"; did you mean {nearest[0]!r}?" if nearest else ""))
        if isinstance(value_node, yaml.MappingNode):
            raise ConfigError(f"{path} line {_line(value_node)}: {name}: expected a value or a list, not a mapping")
        value = loader.construct_object(value_node, deep=True)
        try:
            out[name] = converters[name](value)
        except ConfigError as e:
            raise ConfigError(f"{path} line {_line(value_node)}: {e}") from None
    return out


def resolve(given: Mapping[str, Any], config: str | None, converters: Mapping[str, Callable[[Any], Any]],
            defaults: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings by destination, and where each came from (`SOURCES`): the defaults, then the
    sweep file `config`'s, then `given` (the command line's, by destination)."""
    values: dict[str, Any] = dict(defaults)
    sources = dict.fromkeys(defaults, SOURCES[0])
    if config:
        by_key = {key(d): d for d in converters}
        for k, v in read(config, {key(d): conv for d, conv in converters.items()}).items():
            values[by_key[k]], sources[by_key[k]] = v, SOURCES[1]
    for dest, raw in given.items():
        values[dest], sources[dest] = converters[dest](raw), SOURCES[2]
    return values, sources


def available(folder: str = SWEEP_FILES) -> list[tuple[str, str]]:
    """The sweep files of `folder`: (path, what it answers: its first comment line)."""
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith((".yaml", ".yml")):
            path = os.path.join(folder, name)
            with open(path) as f:
                first = next((ln.lstrip("#").strip() for ln in f if ln.startswith("#")), "")
            out.append((path, first))
    return out
