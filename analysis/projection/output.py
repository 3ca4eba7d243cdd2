"""What `python -m analysis.projection` writes: projection.csv, a summary on stdout, the plot."""

from __future__ import annotations

import csv
import os

from analysis.projection.model import Fit, predict_here
from analysis.projection.points import Point
from analysis.projection.sweep import Projection


def plot(rows: list[dict], points: list[Point], fits: dict[str, Fit], path: str, link: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, series in enumerate(sorted(fits)):  # a series: a strategy at its own settings
        color = f"C{i}"
        mine = [r for r in rows if r["series"] == series and not r["note"]]
        ax1.plot([r["nodes"] for r in mine], [r["throughput"] for r in mine], "-", color=color,
                 label=f"{series}: projected, {link}")
        ax2.plot([r["nodes"] for r in mine], [r["efficiency"] for r in mine], "-", color=color, label=series)
        pts = sorted((p for p in points if p.series == series), key=lambda p: p.nodes)
        if pts:
            f = fits[series]
            here = [predict_here(f, p.nodes, p.procs, p.cores, p.global_batch, p.latency_s, p.bandwidth)
                    for p in pts]
            ax1.plot([p.nodes for p in pts], [p.global_batch / p.step_s for p in pts], "o", color=color,
                     label=f"{series}: measured here")
            modelled = [p.global_batch / t for p, t in zip(pts, here, strict=True)]
            ax1.plot([p.nodes for p in pts], modelled, ":", color=color, label=f"{series}: model on this machine")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("samples / s")
    ax1.set_title("throughput (points: measured, oversubscribed CPU included)")
    ax2.set_ylabel("efficiency = throughput / (nodes x 1-node compute throughput)")
    ax2.set_title(f"projected scaling efficiency on {link}")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def print_summary(proj: Projection, sweep_dir: str, out_csv: str) -> None:
    """The link, each fit's constants and its efficiency at 64 and 1024 nodes, the held-out check."""
    rows, fits = proj.rows, proj.fits
    print(f"projection of {os.path.basename(sweep_dir)} on {proj.link} ({proj.latency_s * 1e6:g} us, "
          f"{proj.bandwidth * 8 / 1e9:g} Gbit/s), {proj.scaling} scaling: {out_csv}")
    for series, f in sorted(fits.items()):
        print(f"  {series}: c0 {f.c0 * 1e3:.3f} ms, {f.s * 1e6:.2f} us/sample, kappa {f.kappa * 1e9:.3f} ns/byte, "
              f"P {f.param_bytes / 1e6:.2f} MB; measured at nodes {sorted({q.nodes for q in f.points})}")
        for n in (64, 1024):
            row = next((r for r in rows if r["series"] == series and r["nodes"] == n), None)
            if row:
                print(f"    {n} nodes: efficiency {row['efficiency']:.3f}, step {row['step_s'] * 1e3:.2f} ms"
                      + (f" ({row['note']})" if row["note"] else ""))
    for series, n, measured, pred in proj.checks:
        print(f"  check {series}: fitted without {n} nodes, predicts {pred * 1e3:.2f} ms, measured "
              f"{measured * 1e3:.2f} ms ({(pred - measured) / measured:+.1%})")
    if proj.check_note:
        print(f"  {proj.check_note}")


def write_outputs(proj: Projection, sweep_dir: str, with_plot: bool = True) -> None:
    """projection.csv and plots/projection.png under the sweep directory, and the summary."""
    out_csv = os.path.join(sweep_dir, "projection.csv")
    write_csv(out_csv, proj.rows)
    print_summary(proj, sweep_dir, out_csv)
    if with_plot:
        os.makedirs(os.path.join(sweep_dir, "plots"), exist_ok=True)
        path = os.path.join(sweep_dir, "plots", "projection.png")
        plot(proj.rows, proj.points, proj.fits, path, proj.link)
        print(f"  plot: {path}")
