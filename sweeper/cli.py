"""bin/sweep: run a grid of experiments on one backend (`make sweep` calls it). Torch-free.

The flag table derives from contract/config.py (every experiment field, its default and its
choices) plus the sweep's own settings below; tests/unit/test_make_variables.py keeps the
Makefile's sweep variables and `make help` equal to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from contract import config, rundir
from contract import gpushare as gpu
from contract.config import ExperimentConfig
from contract.errors import ConfigError
from contract.tables import MODELS, SCALINGS
from sweeper import backends, grid, sweepfile

DESCRIPTION = """Run a grid of experiments on one backend: the product of every setting given as a list.

    ./bin/sweep --nodes 1,2,4 --strategies ddp,ring --steps 50
    ./bin/sweep --strategies ddp,ps --global-batch 32,128 --data-size 512,2048
    ./bin/sweep --config sweeps/layouts.yaml --steps 5      # a sweep file; flags override it
    ./bin/sweep --strategies all --dry-run

Every setting of an experiment takes a comma list (a sweep axis), --balance excepted; --layouts
1x4,4x1 sets nodes and ranks per node side by side instead of their product. Sweep files
(YAML) take the same settings under the make variables' names: docs/sweeps.md.
Every value is validated before anything is written or submitted (exit 2, one line).
Experiments already COMPLETED under the same --sweep name are not run again; one whose
directory holds a run made with other settings stops the sweep (exit 2) before anything is written.
Ctrl-C / SIGTERM stop the running experiment (CANCELLED; the same command resumes it): exit 130 / 143.
Exit status: 0 when every experiment completed (or was skipped), 1 otherwise.
The driver is sweeper/cli.py, the bookkeeping sweeper/backends.py; the backends are simulate/ and slurm/.
"""

BACKENDS = ("auto", "simulate", "slurm", "submitit")
NOT_FLAGS = ("strategy", "repeat", "run_dir", "save_params")  # --strategies; --repeats; per experiment
FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
# Sweep settings that are no experiment's field: destination -> (flag, type, default, help).
SWEEP_SETTINGS = {
    "strategy": ("--strategies", list, ["ddp"], "comma list of strategies, or all"),
    "layouts": ("--layouts", list, None, "comma list of NODESxPROCS, e.g. 1x4,4x1 (instead of nodes x procs)"),
    "repeats": ("--repeats", int, 1, "repetitions of the whole grid"),
    "scaling": ("--scaling", str, SCALINGS[0], f"{'|'.join(SCALINGS)}: fixed global batch, or growing with the nodes"),
    "backend": ("--backend", str, BACKENDS[0], f"{'|'.join(BACKENDS)}; auto: slurm where Slurm answers, else simulate"),
    "sweep": ("--sweep", str, "", "sweep name = directory under logs/ (default: the file's name and a timestamp, "
              "or a timestamp)"),
    "dry_run": ("--dry-run", bool, False, "render and validate everything, run nothing"),
    "time_limit": ("--time-limit", str, "", "per-experiment limit, minutes or H:MM:SS"),
    "partition": ("--partition", str, "", "Slurm partition"),
    "account": ("--account", str, "", "Slurm account"),
    "no_wait": ("--no-wait", bool, False, "Slurm backends: submit and return"),
    "serial": ("--serial", bool, False, "Slurm backends: run the sweep's jobs one at a time (for timings where "
               "jobs share cores, as on the loopback cluster)"),
    "warm": ("--cold", bool, True, "simulate backend: start every rank in a fresh interpreter instead of forking "
             "it from the warm-start server (as WARM=0 does)"),
}
# The sweep's defaults where they differ from an experiment's (nodes: a grid, not one count).
DEFAULTS = {"nodes": [1, 2], **{d: s[2] for d, s in SWEEP_SETTINGS.items() if s[2] is not None}}


def choices_of(dest: str) -> tuple[str, ...]:
    """The values a setting takes, where they are a fixed list (the config's, the backends')."""
    fixed = {"backend": BACKENDS, "scaling": SCALINGS, "model": MODELS}  # model: or module:function
    if dest in fixed:
        return fixed[dest]
    return tuple(FIELDS[dest].metadata.get("choices", ())) if dest in FIELDS else ()


def default_of(dest: str) -> Any:
    """A setting's default: the sweep's own, else the config's."""
    return DEFAULTS[dest] if dest in DEFAULTS else FIELDS[dest].default


def default_text(dest: str) -> str:
    """The default as one would type it: a list as a comma list."""
    value = default_of(dest)
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _scalar(dest: str, kind: type):
    """A setting that takes one value (no axis)."""
    def convert(raw: object) -> object:
        if isinstance(raw, list):
            raise ConfigError(f"invalid {dest} {raw!r}: one value, not a list")
        if kind is bool:
            if not isinstance(raw, bool):
                raise ConfigError(f"invalid {dest} {raw!r}: expected true or false")
            return raw
        return grid.parse_value(dest, kind, raw)
    return convert


def converters() -> dict:
    """Destination -> how its value (a flag's text, a sweep file's YAML value) becomes the setting."""
    out = {d: _scalar(d, kind) for d, (_, kind, _, _) in SWEEP_SETTINGS.items() if kind is not list}
    out["strategy"] = lambda raw: grid.parse_values("strategy", raw)
    out["layouts"] = grid.parse_layouts
    for name, f in FIELDS.items():
        if name not in NOT_FLAGS:
            out[name] = (lambda raw, n=name: grid.parse_values(n, raw)) if name in grid.AXES else \
                _scalar(name, type(f.default))
    return out


def build_parser() -> argparse.ArgumentParser:
    """Every default is left out of the parsed namespace: what is in it was given (it overrides the file)."""
    p = config.OneLineParser(prog="bin/sweep", description=DESCRIPTION, argument_default=argparse.SUPPRESS,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="sweep file (YAML; keys: the make variables in lower case)")
    for dest, (flag, kind, _, help_) in SWEEP_SETTINGS.items():
        if kind is bool:  # a flag switches its setting from the default (--cold: warm false)
            p.add_argument(flag, dest=dest, action="store_false" if SWEEP_SETTINGS[dest][2] else "store_true",
                           help=help_)
        else:
            shown = default_text(dest) if dest in DEFAULTS else ""
            p.add_argument(flag, dest=dest, metavar=sweepfile.key(dest).upper(),
                           help=help_ + (f" (default: {shown})" if shown else ""))
    p.add_argument("--logs", help=argparse.SUPPRESS)
    for name, f in FIELDS.items():
        if name in NOT_FLAGS:
            continue
        shown = default_text(name) if isinstance(default_of(name), list) else repr(default_of(name))
        among = f"{'|'.join(choices_of(name))}; " if choices_of(name) and name != "model" else ""
        axis = "; a comma list is a sweep axis" if name in grid.AXES else ""
        p.add_argument(f.metadata["flag"], dest=name, metavar=sweepfile.key(name).upper(),
                       help=f"{f.metadata['help']} ({among}default: {shown}){axis}")
    return p


def resolve(argv: list[str]) -> tuple[dict, ExperimentConfig, dict]:
    """(the settings, the base config, the axes): defaults < sweep file < command line."""
    given = vars(build_parser().parse_args(argv))
    path, logs = given.pop("config", None), given.pop("logs", rundir.LOGS)
    settings, sources = sweepfile.resolve(given, path, converters(), DEFAULTS)
    if "layouts" in settings:  # layouts replace nodes x procs: the later source wins, one source gives one
        rank = {d: sweepfile.SOURCES.index(sources[d]) for d in ("layouts", "nodes", "procs_per_node") if d in sources}
        if any(rank[d] == rank["layouts"] for d in rank if d != "layouts"):
            raise ConfigError("invalid layouts: give layouts or nodes and procs, not both")
        if any(rank[d] > rank["layouts"] for d in rank if d != "layouts"):
            del settings["layouts"]
        else:
            settings.pop("nodes", None)
            settings.pop("procs_per_node", None)
    axes: dict = {name: settings[name] for name in grid.AXES if name in settings}
    if "layouts" in settings:
        axes[("nodes", "procs_per_node")] = settings["layouts"]
    base = ExperimentConfig(**{n: settings[n] for n in FIELDS if n in settings and n not in grid.AXES})
    if settings["backend"] not in BACKENDS:
        raise ConfigError(f"unknown backend {settings['backend']!r}: choose from {', '.join(BACKENDS)}")
    for name in ("partition", "account"):
        if settings[name]:
            config.check_name(name, settings[name])
    if settings["sweep"]:
        config.check_name("sweep name", settings["sweep"])
    else:
        stem = os.path.splitext(os.path.basename(path))[0] + "-" if path else ""
        settings["sweep"] = config.check_name("sweep name", stem + rundir.default_sweep_name())
    settings.update(config=path, logs=logs)
    return settings, base, axes


def main(argv: list[str]) -> int:
    """bin/sweep's whole run; the exit status (DESCRIPTION)."""
    try:
        settings, base, axes = resolve(argv)
        limit_s = backends.time_limit_seconds(settings["time_limit"])
        gpus = grid.gpu_count() if "dp" in axes["strategy"] else None
        experiments = grid.expand(base, axes, settings["repeats"], settings["scaling"], gpus)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if experiments and all(e.skipped for e in experiments):
        print(f"error: nothing to run: {experiments[0].id} is skipped ({experiments[0].skipped})"
              + (f" and so are the {len(experiments) - 1} others" if len(experiments) > 1 else ""), file=sys.stderr)
        return 2
    backend = settings["backend"]
    if backend == "auto":
        backend = "slurm" if backends.slurm_answers() else "simulate"
    name = settings["sweep"]
    path = os.path.join(settings["logs"], name)
    runnable = [e for e in experiments if e.skipped is None]
    if backend == "simulate":
        try:  # simulated nodes share this machine's GPUs: their fractions must fit (no GPU: as if one)
            check_gpus_here(runnable)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    # The resolved settings and, among them, the axes: sweep.json's "grid".
    if "layouts" in settings:
        settings["layouts"] = [f"{n}x{p}" for n, p in settings["layouts"]]
    axes_doc = {k if isinstance(k, str) else "layouts": settings["layouts"] if isinstance(k, tuple) else v
                for k, v in axes.items()}
    args = argparse.Namespace(**settings, axes=axes_doc)
    if backend == "simulate":
        from simulate.backend import SimulateBackend

        runner = SimulateBackend(limit_s, warm=settings["warm"])
    else:
        from slurm.backend import make_backend

        runner = make_backend(backend, args)
    return backends.run(runner, backends.SweepLedger(path, name, backend, experiments, args, argv))


def check_gpus_here(runnable: list) -> None:
    """The simulate backend runs here: a sweep that asks for CUDA needs a GPU on this machine, and
    the memory fractions of ranks sharing one must fit."""
    gpus = None
    for e in runnable:
        if e.config.device == "cuda" or e.config.memory_fraction != gpu.AUTO:
            gpus = grid.gpu_count() if gpus is None else gpus
        if e.config.device == "cuda" and gpus == 0:
            raise ConfigError(f"{e.id} asks for device cuda, and this machine has no GPU (nvidia-smi finds none): "
                              "run this sweep where there is one, or on Slurm")
        if e.config.memory_fraction != gpu.AUTO:
            gpu.check_layout(e.config.memory_fraction, e.config.world_size, gpus)

