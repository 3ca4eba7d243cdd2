"""The answer's outputs: the terminal table, plots/advice.png and advice.json."""

from __future__ import annotations

import json
import math
import os

from analysis.layouts import describe


def table(rows: list[dict], check: str) -> str:
    lines = [f"{'nodes':>5} {'source':<9} {'best':<9} {'runner-up':<9} {'margin':>8}  {'':<11} time-to-target"]
    for r in rows:
        margin = "-" if r["margin"] is None else f"{r['margin']:+.1%}"
        verdict = ("tie" if r["tie"] else "") if r["confirmed"] else ("unconfirmed" if r["runner_up"] else "")
        flag = " (oversubscribed)" if r["oversubscribed"] else ""
        lines.append(f"{r['nodes']:>5} {r['source']:<9} {r['best'] or '-':<9} {r['runner_up'] or '-':<9} "
                     f"{margin:>8}  {verdict:<11} {r['best_time_to_target'] or '-'}{flag}")
        if (lay := (r.get("layout") or {}).get(r["best"])):
            lines.append(f"{'':>16}best layout: {describe(lay)}")
        if r.get("ranked_by") == "time_to_target":
            lines.append(f"{'':>16}ranked by time to the target accuracy (the maths differs from single's)"
                         + (f"; {r['best']} {r['best_why']}" if r.get("best_why") else ""))
        for s, why in r["why"].items():
            lines.append(f"{'':>16}{s}: {why}")
        for s, err in (r.get("projection_error") or {}).items():
            lines.append(f"{'':>16}{s}: the projection fitted without this node count was off by {err:+.1%}")
    lines.append("tie: margin within the spread between repeats (measured) or the projection's held-out error; "
                 "unconfirmed: one repeat, or no held-out check")
    if check:
        lines.append(check)
    return "\n".join(lines)


def plot(rows: list[dict], path: str, svg: bool = True) -> str:
    """The winner over node counts, with the margin over the runner-up (hatched: projected); `svg`:
    an SVG beside the PNG (`make advise` always; `make plots` when asked, like its other figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["best"] for r in rows if r["best"]})
    colors = {s: f"C{i}" for i, s in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8, 3.8))
    shown = rows
    for i, r in enumerate(shown):
        if not r["best"]:
            ax.annotate("none\nruns", (i, 0), ha="center", va="bottom", fontsize=8, color="grey")
            continue
        margin = 0.0 if r["margin"] is None or not math.isfinite(r["margin"]) else r["margin"] * 100
        ax.bar(i, margin, color=colors[r["best"]], hatch="//" if r["source"] == "projected" else None,
               edgecolor="black", linewidth=0.5)
        tag = "tie" if r["tie"] else ("?" if not r["confirmed"] and r["runner_up"] else "")
        ax.annotate(f"{r['best']}\n{tag}".strip(), (i, margin), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(shown)), [f"{r['nodes']}\n{'meas.' if r['source'] == 'measured' else 'proj.'}"
                                      for r in shown], fontsize=8)
    ax.set_xlabel("nodes (meas.: measured; proj.: projected, hatched)")
    ax.set_ylabel("margin over the runner-up (%)")
    ax.set_title("best strategy for throughput per node count")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, max([ax.get_ylim()[1], 1.0]) * 1.25)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    if svg:
        fig.savefig(os.path.splitext(path)[0] + ".svg")
    elif os.path.exists(stale := os.path.splitext(path)[0] + ".svg"):
        os.remove(stale)  # an earlier run's SVG would no longer match the PNG
    plt.close(fig)
    return path


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    return x


def write(sweep_dir: str, doc: dict) -> str:
    path = os.path.join(sweep_dir, "advice.json")
    with open(path + ".tmp", "w") as f:
        json.dump(_clean(doc), f, indent=1)
    os.replace(path + ".tmp", path)
    return path
