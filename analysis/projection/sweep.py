"""A sweep's projection: its points fitted and projected to 1..max_nodes nodes on a link."""

from __future__ import annotations

import os
from dataclasses import dataclass

from analysis.advise import Projected
from analysis.load import completed
from analysis.logread import read_json
from analysis.projection.fit import checked, fit_all
from analysis.projection.model import Fit, dp_size, link_of, node_counts, project
from analysis.projection.points import Point, load_points
from contract import registry
from contract.defaults import MAX_NODES, PROJECTED_LINK
from contract.errors import ConfigError
from contract.tables import SCALINGS


@dataclass
class Projection:
    """A sweep's projection to a cluster: one row per (strategy, node count), and the held-out check."""
    rows: list[dict]
    fits: dict[str, Fit]
    points: list[Point]
    link: str
    latency_s: float
    bandwidth: float
    scaling: str
    checks: list[tuple[str, int, float, float]]  # (series, held-out nodes, measured, predicted)
    check_note: str  # why there is no check ("" when there is one)


def project_sweep(sweep_dir: str, link: str = PROJECTED_LINK, max_nodes: int = MAX_NODES, latency_us: float = -1.0,
                  bandwidth_gbps: float = -1.0, procs_per_node: int = 0, scaling: str = "") -> Projection:
    """Fit the sweep's COMPLETED runs and project every fitted strategy to 1..max_nodes nodes.
    Raises ConfigError (bad input: one line, exit 2) before anything is written."""
    latency_s, bandwidth = link_of(link, latency_us, bandwidth_gbps)
    if max_nodes < 1:
        raise ConfigError(f"invalid max-nodes {max_nodes}: must be >= 1")
    if scaling not in ("", *SCALINGS):  # before reading: a bad flag leaves even the cache unwritten
        raise ConfigError(f"invalid scaling {scaling!r}: choose {' or '.join(SCALINGS)}")
    points = load_points(sweep_dir) if completed(sweep_dir) else []
    if not points:
        raise ConfigError(f"no COMPLETED experiment in {sweep_dir}: nothing to fit")
    fits = fit_all(points)
    if not fits:
        raise ConfigError(f"nothing to project in {sweep_dir}: no COMPLETED experiment of a projected strategy "
                          f"({', '.join(registry.names(projected=True))})")
    grid = read_json(os.path.join(sweep_dir, "sweep.json"))[0].get("grid") or {}
    scaling = scaling or grid.get("scaling", SCALINGS[0])
    rows = []
    for _, f in sorted(fits.items()):  # one fit per series: a strategy at its own settings
        ref = min(f.points, key=lambda q: q.nodes)
        procs = procs_per_node or ref.procs
        batch = ref.global_batch if scaling == "strong" else ref.samples * dp_size(f.strategy, procs, f.settings)
        for n in node_counts(max_nodes):
            rows.append({**project(f, n, procs, ref.cores, batch, scaling, latency_s, bandwidth),
                         "link": link, "scaling": scaling, "c0_s": f.c0, "s_per_sample": f.s,
                         "kappa_s_per_byte": f.kappa, "param_bytes": f.param_bytes})
    checks, note = checked(points)
    return Projection(rows, fits, points, link, latency_s, bandwidth, scaling, checks, note)


def for_advice(sweep_dir: str, link: str, max_nodes: int) -> Projected:
    """The projection as analysis.advise takes it (bin/advise passes this function in)."""
    proj = project_sweep(sweep_dir, link, max_nodes)
    errors = {s: (pred - measured) / measured for s, _, measured, pred in proj.checks if measured > 0}
    held_out_nodes = max((n for _, n, _, _ in proj.checks), default=None)
    procs = min(proj.points, key=lambda q: q.nodes).procs
    return Projected(proj.rows, errors, held_out_nodes, proj.check_note, procs,
                     {series: f.settings for series, f in proj.fits.items()})
