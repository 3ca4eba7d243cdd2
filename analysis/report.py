"""report.html: the sweep's grid and meta, the summary table, every plot, the problems table.

Self-contained (CSS inline, plots embedded as base64 PNG) so it can be mailed or opened from a
phone; links to the SVG/PNG files next to it are extras. A sweep without a COMPLETED experiment
gets `write_problems_report`: the meta, the grid and why each experiment has no result.

    python -m analysis.report [--sweep NAME] [--logs DIR]   # `make report`
"""

from __future__ import annotations

import base64
import datetime
import math
import os

import jinja2
import pandas as pd

from analysis import layouts
from analysis.advise import report_section
from analysis.metrics import Analysis, settings_of
from analysis.sweepstate import SKIPPED, SweepState
from contract import registry, rundir

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TABLE = [  # (column, header, format)
    ("experiment", "experiment", "{}"), ("state", "state", "{}"), ("world_size", "ranks", "{}"),
    ("samples_per_s", "samples/s", "{:,.0f}"), ("median_step_s", "step (ms)", "ms"),
    ("speedup", "speed-up", "{:.2f}x"), ("efficiency", "efficiency", "{:.0%}"),
    ("speedup_vs_single", "vs single", "{:.2f}x"), ("repeat_spread", "spread over repeats", "{:.1%}"),
    ("compute_s", "compute (ms)", "ms"), ("comm_s", "comm (ms)", "ms"), ("bubble_s", "bubble (ms)", "ms"),
    ("comm_bytes_per_step", "sent/step (MiB)", "mib"), ("peak_mem_bytes_per_rank", "peak mem/rank (MiB)", "mib"),
    ("skew", "skew", "{:.0%}"), ("final_loss", "final loss", "{:.4f}"), ("final_val_acc", "val acc", "{:.3f}"),
    ("mean_epoch_s", "epoch (s)", "{:.2f}"), ("epochs_to_target", "epochs to target", "{:.0f}"),
    ("time_to_target_s", "time to target (s)", "{:.2f}"),
]


def fmt(value, how: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if how == "ms":
        return f"{value * 1000:.2f}"
    if how == "mib":
        return f"{value / 2**20:,.1f}"
    try:
        return how.format(value)
    except (ValueError, TypeError):
        return str(value)


def _meta(name: str, m: dict, configs: dict[str, dict], target_acc: float | None) -> dict:
    """Machine, versions and commit: from sweep.json (`m`) and the first experiment's config.json meta."""
    metas = [doc.get("meta", {}) for doc in configs.values() if doc.get("meta", {}).get("torch")]
    first = metas[0] if metas else {}
    devices = sorted({r.get("device", "?") for x in metas for r in x.get("ranks", []) if isinstance(r, dict)})
    hosts = sorted({r.get("host", "?") for x in metas for r in x.get("ranks", []) if isinstance(r, dict)})
    cores = (first.get("cpu_plan") or {}).get("machine_cores")
    backends = ", ".join(sorted({str(x.get("dist_backend")) for x in metas}))
    return {"sweep": name, "backend": m.get("backend", "?"), "created": m.get("created", "?"),
            "updated": m.get("updated", "?"), "git commit": m.get("git_commit") or first.get("git_commit") or "?",
            "hosts": ", ".join(hosts) or m.get("host", "?"), "devices": ", ".join(devices) or "?",
            "CPU cores": cores if cores is not None else "?", "torch": first.get("torch", "?"),
            "python": first.get("python", "?"), "distributed backend": backends or "?",
            "target accuracy": f"{target_acc:.3f}" if target_acc is not None else "–",
            "report written": datetime.datetime.now().isoformat(timespec="seconds")}


def _embed(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


# -1 in the grid means "not set": say what is used instead
_DEFAULTS = {"latency_us": "link preset", "bandwidth_gbps": "link preset", "memory_fraction": "even split"}


def _grid_value(key: str, value):
    return _DEFAULTS[key] if key in _DEFAULTS and value in (-1, -1.0) else value


def _grid(m: dict) -> dict:
    return {k: _grid_value(k, v) for k, v in (m.get("grid") or {}).items()
            if v not in ("", None, False) and k not in ("sweep", "backend")}  # both are in the meta block


def _render(path: str, **context) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("report.html.j2").render(**context)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(path + ".tmp", path)
    return path


def not_reproducible(summary: pd.DataFrame) -> list[str]:
    """The labels (advise's names) of the sweep's runs that cannot repeat bit for bit (registry:
    Strategy.reproducible; asyncps with staleness > 0), skipped points left out."""
    out = []
    for _, r in summary.iterrows():
        if r.get("state") != SKIPPED and not registry.get(str(r["strategy"])).reproducible(settings_of(r)):
            dp = r.get("dp_size")
            dp = int(dp) if isinstance(dp, int | float) and dp == dp else None
            out.append(layouts.label(str(r["strategy"]), settings_of(r), dp) or str(r["strategy"]))
    return list(dict.fromkeys(out))


def write_report(a: Analysis, plots: list, not_applicable: list, path: str, svg: bool = False,
                 answer: dict | None = None) -> str:
    """`svg`: the answer's figure as SVG too, as `make plots SVG=1` draws every other one.
    `answer`: its section (`report_section`) when the caller made it already."""
    rows = []
    for _, r in a.summary.iterrows():
        rows.append({"cells": [fmt(r.get(col), how) for col, _, how in TABLE], "state": r["state"],
                     "oversubscribed": bool(r.get("oversubscribed"))})
    base = os.path.dirname(path)
    figures = [{"name": p.spec.name, "title": p.spec.title, "caption": p.spec.caption, "src": _embed(p.png),
                "png": os.path.relpath(p.png, base), "svg": os.path.relpath(p.svg, base) if p.svg else None}
               for p in plots]
    answer = dict(answer or report_section(a, base, svg))  # the first section: the answer (analysis/advise.py)
    answer["src"] = _embed(answer["png"]) if answer["png"] else None
    if answer["png"]:
        answer["svg"] = os.path.relpath(os.path.splitext(answer["png"])[0] + ".svg", base) if svg else None
        answer["png"] = os.path.relpath(answer["png"], base)
    return _render(
        path, answer=answer, meta=_meta(a.data.name, a.data.meta, a.data.configs, a.target_acc),
        grid=_grid(a.data.meta), headers=[h for _, h, _ in TABLE], rows=rows, experiments=len(rows), figures=figures,
        not_applicable=[(s.title, why) for s, why in not_applicable],
        problems=a.problems.fillna("").to_dict("records"), skipped=a.skipped.fillna("").to_dict("records"),
        any_oversubscribed=any(r["oversubscribed"] for r in rows), not_reproducible=not_reproducible(a.summary))


def write_problems_report(state: SweepState, path: str) -> str:
    """report.html of a sweep without a COMPLETED experiment: its meta and grid, and why each
    experiment has no result (state, reason, logs); no summary, no plots."""
    meta = rundir.read_json(os.path.join(state.path, "sweep.json"))
    configs = {e.id: rundir.read_json(os.path.join(e.logs, "config.json")) for e in state.experiments}
    problems = [{"experiment": e.id, "rank": "", "kind": e.state, "detail": e.reason, "file": e.logs}
                for e in state.problems if e.state != SKIPPED]
    skipped = [{"experiment": e.id, "reason": e.reason} for e in state.problems if e.state == SKIPPED]
    return _render(path, no_results=f"No experiment COMPLETED ({state.tally()}): nothing to summarise or plot.",
                   meta=_meta(state.name, meta, configs, None), grid=_grid(meta), experiments=len(state.experiments),
                   problems=problems, skipped=skipped)
