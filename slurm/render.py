"""Render sbatch scripts from the Jinja templates in slurm/templates/.

Two uses of one skeleton (`job.sbatch.j2`):
- the committed `slurm/<strategy>.sbatch`: defaults only, node count and node list from Slurm's
  environment, trainer settings overridable through environment variables (`STEPS=50 sbatch ...`);
- a sweep experiment's `job.sbatch` in its run directory: the experiment's settings, fixed.

Every value that reaches a shell line passes the `q` filter (shlex.quote); values that reach
`#SBATCH` lines (which sbatch parses itself, without a shell) must be safe names or numbers.
Undefined template variables are errors (StrictUndefined), never empty strings.

    python -m slurm.render            # re-render slurm/<strategy>.sbatch for every strategy
    python -m slurm.render --check    # exit 1 when a committed script is out of date
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys

import jinja2

from contract import registry
from contract.config import STRATEGIES, ExperimentConfig, check_name
from contract.errors import ConfigError
from sweeper import sweepfile

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
TEMPLATE = "job.sbatch.j2"
DEFAULT_TIME_S = 30 * 60
MAX_REQUEUES = 3
# Config fields the script derives itself (layout from Slurm, run dir from the job id).
DERIVED = ("strategy", "nodes", "procs_per_node", "run_dir")

def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env


def slurm_time(seconds: int) -> str:
    """Seconds -> Slurm's D-HH:MM:SS (whole minutes are what Slurm schedules on anyway)."""
    if seconds <= 0:
        raise ConfigError(f"invalid time limit {seconds} s: must be > 0")
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


def warning_seconds(limit_s: int) -> int:
    """Lead time of the --signal warning: enough to write a checkpoint, at most 2 minutes."""
    return max(10, min(120, limit_s // 10))


def settings(cfg: ExperimentConfig) -> list[dict]:
    """One entry per trainer flag the script passes: env name (the Makefile's variable), flag, value."""
    out = []
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in DERIVED:
            continue
        value = getattr(cfg, f.name)
        flag_only = isinstance(value, bool)
        out.append({"env": sweepfile.key(f.name).upper(), "flag": f.metadata["flag"],
                    "value": int(value) if flag_only else value, "flag_only": flag_only})
    return out


def _directive_value(kind: str, value: str) -> str:
    return check_name(kind, value) if value else ""


def render(cfg: ExperimentConfig, *, committed: bool, run_dir: str = "", root: str = "", sweep: str = "",
           experiment: str = "", job_name: str = "", partition: str = "", account: str = "",
           time_s: int = DEFAULT_TIME_S, output: str = "", cpus: int = 1) -> str:
    """The sbatch text for `cfg`. Raises ConfigError on a value that cannot be rendered safely."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {cfg.strategy!r}: choose from {', '.join(STRATEGIES)}")
    record = registry.get(cfg.strategy)
    job_name = check_name("job name", job_name or f"ts-{cfg.strategy}")
    if output and any(c in output for c in "\n\r\"'\\ "):
        raise ConfigError(f"invalid output path {output!r}: no spaces, quotes or backslashes")
    for kind, path in (("run dir", run_dir), ("repository root", root)):
        if "\n" in path or "\r" in path:
            raise ConfigError(f"invalid {kind} {path!r}: no line breaks")
    if cpus < 1:
        raise ConfigError(f"invalid cpus per task {cpus}: must be >= 1")
    return environment().get_template(TEMPLATE).render(
        strategy=cfg.strategy, description=record.summary, committed=committed, template=TEMPLATE,
        sweep=sweep, experiment=experiment, job_name=job_name,
        nodes=record.sbatch_nodes if committed else cfg.nodes,
        procs=record.sbatch_procs if committed else cfg.procs_per_node,
        cpus=cpus, time=slurm_time(time_s), warn_s=warning_seconds(time_s),
        partition=_directive_value("partition", partition), account=_directive_value("account", account),
        extra_directives=record.sbatch_directives, output=output or f"logs/sbatch/{job_name}-j%j.out",
        root=root, run_dir=run_dir, max_requeues=MAX_REQUEUES, settings=settings(cfg))


def render_committed(strategy: str) -> str:
    record = registry.get(strategy)
    cfg = ExperimentConfig(strategy=strategy, nodes=record.sbatch_nodes, procs_per_node=record.sbatch_procs)
    return render(cfg, committed=True)


def committed_path(strategy: str) -> str:
    return os.path.join(HERE, f"{strategy}.sbatch")


def stale() -> list[str]:
    """Committed scripts that differ from what the templates render now."""
    bad = []
    for s in STRATEGIES:
        try:
            with open(committed_path(s)) as f:
                current = f.read()
        except OSError:
            current = None
        if current != render_committed(s):
            bad.append(committed_path(s))
    return bad


def write_committed() -> list[str]:
    paths = []
    for s in STRATEGIES:
        with open(committed_path(s), "w") as f:
            f.write(render_committed(s))
        os.chmod(committed_path(s), 0o755)
        paths.append(committed_path(s))
    return paths


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        bad = stale()
        for path in bad:
            print(f"out of date with slurm/templates: {os.path.relpath(path)} (run: python -m slurm.render)")
        return 1 if bad else 0
    if argv:
        print("usage: python -m slurm.render [--check]", file=sys.stderr)
        return 2
    for path in write_committed():
        print(f"rendered {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
