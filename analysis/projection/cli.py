"""Scaling projection: fit a step-time model per strategy on a sweep's runs, predict 1..1024 nodes.

    python -m analysis.projection --sweep NAME [--logs DIR] [--link 10gbe] [--max-nodes 1024]

The command line: its flags, checked (bad input: one line on stderr, exit 2, nothing written),
then the sweep's projection (analysis/projection/sweep.py) and its outputs (output.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from analysis import AnalysisError
from analysis.load import find_sweep
from analysis.plan import positive_int
from analysis.projection.model import link_of
from analysis.projection.output import write_outputs
from analysis.projection.sweep import Projection, project_sweep
from analysis.sweepstate import refuse
from contract.config import check_name
from contract.defaults import MAX_NODES, PROJECTED_LINK
from contract.errors import ConfigError, OneLineParser
from contract.paths import LOGS
from contract.tables import LINKS


@dataclass(frozen=True)
class Flags:
    """The command line's projection settings, checked: what project_sweep takes."""
    link: str
    latency_us: float
    bandwidth_gbps: float
    max_nodes: int
    procs_per_node: int  # 0: the sweep's
    scaling: str  # "": the sweep's

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Flags:
        latency_us, bandwidth_gbps = number("latency-us", args.latency_us), number("bandwidth-gbps",
                                                                                   args.bandwidth_gbps)
        max_nodes = positive_int("max-nodes", args.max_nodes)
        procs = 0 if args.procs_per_node == "0" else positive_int("procs-per-node", args.procs_per_node)
        link_of(args.link, latency_us, bandwidth_gbps)  # refuses a bad link here, before the sweep is read
        return cls(args.link, latency_us, bandwidth_gbps, max_nodes, procs, args.scaling)

    def project(self, sweep_dir: str) -> Projection:
        return project_sweep(sweep_dir, self.link, self.max_nodes, self.latency_us, self.bandwidth_gbps,
                             self.procs_per_node, self.scaling)


def parser() -> OneLineParser:
    p = OneLineParser(prog="analysis.projection", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default="", help="sweep name under --logs (default: the latest)")
    p.add_argument("--logs", default=LOGS)
    p.add_argument("--link", default=PROJECTED_LINK, help=f"link to project on: {', '.join(LINKS)}")
    p.add_argument("--latency-us", default="-1", help="override the link's latency")
    p.add_argument("--bandwidth-gbps", default="-1", help="override the link's bandwidth")
    p.add_argument("--max-nodes", default=str(MAX_NODES), help=f"largest node count (default: {MAX_NODES})")
    p.add_argument("--procs-per-node", default="0", help="ranks per node (default: the sweep's)")
    p.add_argument("--scaling", default="", help="strong or weak (default: the sweep's)")
    p.add_argument("--no-plot", action="store_true")
    return p


def sweep_dir_of(args: argparse.Namespace) -> str:
    """The directory of --sweep under --logs (the latest without --sweep); ConfigError when there is none."""
    if args.sweep:
        check_name("sweep name", args.sweep)
    try:
        return find_sweep(args.logs, args.sweep or None)
    except AnalysisError as e:
        raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        flags = Flags.from_args(args)
        sweep_dir = sweep_dir_of(args)
        if (code := refuse("project", sweep_dir)) is not None:
            return code
        proj = flags.project(sweep_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_outputs(proj, sweep_dir, with_plot=not args.no_plot)
    return 0


def number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"invalid {name} {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"invalid {name} {text!r}: expected a finite number")
    return value
