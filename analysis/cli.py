"""The analysis commands' one entry point: load -> metrics -> exports, plots, report.html; and compare.

    python -m analysis.cli plots   [--sweep NAME] [--logs DIR] [--target-acc X] [--svg]  # `make plots`
    python -m analysis.cli report  [--sweep NAME] [--logs DIR] [--target-acc X] [--svg]  # `make report`
    python -m analysis.cli compare A B [--tolerances FILE] [--logs DIR]           # `make compare`
    python -m analysis.cli tensorboard [--sweep NAME] [--logs DIR] [--target-acc X]  # `make tensorboard`

plots and report run the same pipeline (summary.csv/json, plots/, report.html) and differ in
what they print; on a sweep without a COMPLETED experiment both write a report.html of its problems
alone, print one line and exit 1 (analysis/sweepstate.py), as every other command refuses it.
plots.py, report.py and compare.py are libraries: they never import this module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from analysis import AnalysisError
from analysis.load import find_sweep, load_sweep, prefetch
from analysis.sweepstate import NO_RESULTS, SweepState, refuse
from analysis.sweepstate import read as read_state
from contract.paths import LOGS

if TYPE_CHECKING:  # pandas, metrics (pandas), plots (matplotlib): imported once the rank files are being parsed
    import pandas as pd

    from analysis.metrics import Analysis

SUMMARY_COLUMNS = [
    "experiment", "strategy", "nodes", "procs_per_node", "world_size", "global_batch", "chunks", "schedule",
    "stages", "dp_size", "model", "dataset", "data_size", "precision", "link", "optimizer", "repeat", "state",
    "reason", "error", "attempts", "earlier_attempts",
    "oversubscribed", "timed_steps", "samples_per_s", "samples_per_s_per_rank", "median_step_s", "step_s_p10",
    "step_s_p90", "speedup", "efficiency", "speedup_vs_single", "base_nodes", "repeats", "repeat_spread",
    "compute_s", "comm_s", "bubble_s", "other_s", "comm_bytes_per_step", "staleness_mean", "peak_mem_bytes_per_rank",
    "state_bytes_per_rank", "skew", "slowest_rank", "final_loss", "final_val_acc", "best_val_acc",
    "epochs_done", "mean_epoch_s", "epochs_to_target", "time_to_target_s"]


@dataclass
class Outputs:
    sweep_dir: str
    summary_csv: str
    summary_json: str
    plots: list  # PlotFile
    not_applicable: list  # (PlotSpec, reason)
    report_html: str
    analysis: Analysis


def _clean(value):
    """JSON-safe scalars: NaN -> null, numpy -> Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(df: pd.DataFrame, columns: list[str] | None = None) -> list[dict]:
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    return [{c: _clean(v) for c, v in zip(cols, row, strict=True)} for row in df[cols].itertuples(index=False)]


def write_exports(a: Analysis, out_dir: str) -> tuple[str, str]:
    csv_path, json_path = os.path.join(out_dir, "summary.csv"), os.path.join(out_dir, "summary.json")
    cols = [c for c in SUMMARY_COLUMNS if c in a.summary.columns]
    a.summary[cols].to_csv(csv_path, index=False)
    doc = {"sweep": a.data.name, "target_acc": a.target_acc, "experiments": records(a.summary, cols),
           "configurations": records(a.groups), "problems": records(a.problems), "skipped": records(a.skipped)}
    with open(json_path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    return csv_path, json_path


def generate(sweep_dir: str, target_acc: float | None = None, svg: bool = False) -> Outputs:
    """`svg`: every figure as SVG too (`--svg`, `SVG=1`); PNG alone by default (what the report embeds).
    The sweep's rank files are handed to a pool of parsers first (`prefetch`), which works while
    this process imports pandas and matplotlib."""
    prefetch(sweep_dir)
    from analysis.advise import report_section
    from analysis.metrics import analyse
    from analysis.plots import make_plots
    from analysis.report import write_report

    a = analyse(load_sweep(sweep_dir), target_acc)
    csv_path, json_path = write_exports(a, sweep_dir)
    answer: dict = {}  # the report's first section, drawn here while the pool draws the plots
    written, skipped = make_plots(a, os.path.join(sweep_dir, "plots"), svg=svg,
                                  meanwhile=lambda: answer.update(report_section(a, sweep_dir, svg)))
    html = write_report(a, written, skipped, os.path.join(sweep_dir, "report.html"), svg, answer)
    return Outputs(sweep_dir, csv_path, json_path, written, skipped, html, a)


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Summaries, scaling plots and the HTML report of a sweep.")
    p.add_argument("--sweep", default="", help="sweep name under the logs directory (default: the latest)")
    p.add_argument("--logs", default=LOGS, help="logs directory (default: logs/)")
    p.add_argument("--target-acc", type=float, default=None,
                   help="validation accuracy for time-to-accuracy (default: 0.9 x the best reached)")
    if prog.endswith(("plots", "report")):
        p.add_argument("--svg", action="store_true", help="every figure as SVG too (default: PNG only)")
    return p


def _show(path: str) -> str:
    """Relative to the current directory when under it (what `make` users type), else absolute."""
    r = os.path.relpath(path)
    return path if r.startswith("..") else r


def parse(argv: list[str], prog: str) -> argparse.Namespace:
    """The arguments, checked; bad ones raise AnalysisError (one line, exit 2)."""
    p = parser(prog)
    p.error = lambda message: (_ for _ in ()).throw(AnalysisError(message))
    args = p.parse_args(argv)
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        raise AnalysisError(f"invalid --target-acc {args.target_acc!r}: must be in (0, 1]")
    return args


def problems_only(state: SweepState, command: str) -> int:
    """A sweep without a COMPLETED experiment: report.html of its problems, one line, NO_RESULTS."""
    from analysis.report import write_problems_report

    html = write_problems_report(state, os.path.join(state.path, "report.html"))
    print(state.line(command, report=_show(html)), file=sys.stderr)
    return NO_RESULTS


def main(argv: list[str], prog: str, focus: str) -> int:
    try:
        args = parse(argv, prog)
        state = read_state(find_sweep(args.logs, args.sweep or None))
        if not state.has_results:
            return problems_only(state, focus)
        out = generate(state.path, args.target_acc, args.svg)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = out.analysis
    n_ok = int((a.summary["state"] == "COMPLETED").sum()) if not a.summary.empty else 0
    rel = _show
    print(f"sweep {a.data.name}: {len(a.summary)} experiment(s), {n_ok} completed, {len(a.skipped)} skipped, "
          f"{len(a.problems)} problem(s)")
    if focus == "plots":
        print(f"  summary: {rel(out.summary_csv)}, {rel(out.summary_json)}")
        print(f"  plots:   {rel(os.path.join(out.sweep_dir, 'plots'))}/ ({len(out.plots)} figures, "
              f"{'PNG + SVG' if args.svg else 'PNG'}: "
              f"{', '.join(p.spec.name for p in out.plots)})")
        for spec, why in out.not_applicable:
            print(f"           not drawn: {spec.name} ({why})")
    for _, row in a.problems.head(10).iterrows():
        print(f"  problem: {row['experiment'] or '-'}: {row['kind']}: {row['detail']}")
    print(f"  report:  {rel(out.report_html)}")
    return 0


def tensorboard_main(argv: list[str]) -> int:
    """`make tensorboard`: logs/<sweep>/tensorboard/, one run per experiment that has steps."""
    try:
        args = parse(argv, "analysis.cli tensorboard")
        sweep_dir = find_sweep(args.logs, args.sweep or None)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (code := refuse("tensorboard", sweep_dir)) is not None:
        return code
    from analysis.metrics import analyse
    from analysis.tensorboard import write_tensorboard  # tensorboard: a slow import, only here

    folder, runs = write_tensorboard(analyse(load_sweep(sweep_dir), args.target_acc), sweep_dir)
    print(f"sweep {os.path.basename(sweep_dir)}: {len(runs)} TensorBoard run(s) in {_show(folder)}/")
    print(f"  view: tensorboard --logdir {_show(folder)}")
    return 0


COMMANDS = ("plots", "report", "compare", "tensorboard")


def run(argv: list[str]) -> int:
    """`python -m analysis.cli COMMAND ...`: the subcommand, then its own arguments."""
    if not argv or argv[0] not in COMMANDS:
        got = repr(argv[0]) if argv else "none"
        print(f"error: give a command: {', '.join(COMMANDS)} (got {got})", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "compare":
        from analysis.compare import main as compare_main

        return compare_main(rest)
    if command == "tensorboard":
        return tensorboard_main(rest)
    return main(rest, f"analysis.cli {command}", focus=command)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
