"""Compare two sweeps experiment by experiment: `make compare A=<sweep> B=<sweep>`.

    python -m analysis.cli compare A B [--tolerances FILE] [--logs DIR]

Prints a table of changes (B against A) per experiment and metric. Exit status: 0 when nothing
regressed beyond its tolerance, 1 when something did (including an experiment that completed
in A and is missing from B or did not complete there, or when A or B has no COMPLETED experiment
at all: then one line, nothing compared), 2 on bad input (unknown sweep, unreadable tolerances file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import pandas as pd

from analysis import AnalysisError
from analysis.load import find_sweep, load_sweep
from analysis.metrics import analyse
from analysis.sweepstate import refuse
from contract.paths import LOGS

DEFAULT_TOLERANCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tolerances.json")
# metric -> True when higher is better
METRICS = {"samples_per_s": True, "median_step_s": False, "efficiency": True, "peak_mem_bytes_per_rank": False,
           "comm_bytes_per_step": False, "final_loss": False}


def load_tolerances(path: str) -> tuple[float, dict[str, float]]:
    try:
        with open(path) as f:
            doc = json.load(f)
        default = float(doc.get("default", 0.10))
        per = {str(k): float(v) for k, v in (doc.get("metrics") or {}).items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise AnalysisError(f"invalid tolerances file {path!r}: {type(e).__name__}: {e}") from None
    unknown = sorted(set(per) - set(METRICS))
    if unknown:
        raise AnalysisError(f"invalid tolerances file {path!r}: unknown metric {unknown[0]!r} "
                            f"(known: {', '.join(METRICS)})")
    if default < 0 or any(v < 0 for v in per.values()):
        raise AnalysisError(f"invalid tolerances file {path!r}: tolerances must be >= 0")
    return default, per


def compare(a: pd.DataFrame, b: pd.DataFrame, default: float, per: dict[str, float]) -> pd.DataFrame:
    """One row per (experiment, metric) present in both, and one `state` row per experiment whose
    state differs or that only one sweep has; `verdict` is ok / better / REGRESSED / changed / only
    in A / only in B. An experiment COMPLETED in A and missing or not COMPLETED in B is REGRESSED."""
    rows = []
    ia, ib = a.set_index("experiment"), b.set_index("experiment")
    for exp in [e for e in ia.index if e in ib.index] + [e for e in ib.index if e not in ia.index]:
        if exp not in ia.index:
            rows.append({"experiment": exp, "metric": "state", "A": None, "B": ib.at[exp, "state"],
                         "change": None, "verdict": "only in B"})
            continue
        ra, rb = ia.loc[exp], ib.loc[exp]
        if ra["state"] == "SKIPPED" and rb["state"] == "SKIPPED":
            continue
        if ra["state"] != rb["state"]:
            worse = ra["state"] == "COMPLETED"
            rows.append({"experiment": exp, "metric": "state", "A": ra["state"], "B": rb["state"], "change": None,
                         "verdict": "REGRESSED" if worse else "better" if rb["state"] == "COMPLETED" else "changed"})
        for metric, higher_better in METRICS.items():
            va, vb = ra.get(metric), rb.get(metric)
            if not _finite(va) or not _finite(vb):
                continue
            change = (vb - va) / abs(va) if va else (0.0 if vb == va else math.inf)
            worse = -change if higher_better else change
            tol = per.get(metric, default)
            verdict = "REGRESSED" if worse > tol + 1e-12 else "better" if -worse > tol else "ok"
            rows.append({"experiment": exp, "metric": metric, "A": va, "B": vb, "change": change,
                         "tolerance": tol, "verdict": verdict})
    for exp in ia.index.difference(ib.index):  # a completed experiment B lost is a regression
        state = ia.at[exp, "state"]
        rows.append({"experiment": exp, "metric": "state", "A": state, "B": "missing", "change": None,
                     "verdict": "REGRESSED" if state == "COMPLETED" else "only in A"})
    return pd.DataFrame(rows, columns=["experiment", "metric", "A", "B", "change", "tolerance", "verdict"])


def _finite(v) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="analysis.cli compare", description=__doc__.split("\n")[0])
    p.add_argument("a", metavar="A", help="the reference sweep")
    p.add_argument("b", metavar="B", help="the sweep to check against A")
    p.add_argument("--tolerances", default=DEFAULT_TOLERANCES, help="JSON file: default and per-metric tolerances")
    p.add_argument("--logs", default=LOGS, help="logs directory (default: logs/)")
    p.add_argument("--all", action="store_true", help="print every metric, not only the changed ones")
    p.error = lambda message: (_ for _ in ()).throw(AnalysisError(message))
    try:
        args = p.parse_args(argv)
        default, per = load_tolerances(args.tolerances)
        sa, sb = find_sweep(args.logs, args.a), find_sweep(args.logs, args.b)
        if (code := refuse("compare", sa, sb)) is not None:
            return code
        table = compare(analyse(load_sweep(sa)).summary, analyse(load_sweep(sb)).summary, default, per)
        if not (table["verdict"].isin(["ok", "better", "REGRESSED"])).any():  # REGRESSED: also a lost experiment
            raise AnalysisError(f"sweeps {args.a!r} and {args.b!r} have no measured experiment in common")
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    regressed = table[table["verdict"] == "REGRESSED"]
    shown = table if args.all else table[table["verdict"] != "ok"]
    print(f"compare {args.b} against {args.a}: {table['experiment'].nunique()} experiment(s), "
          f"{len(table)} check(s), {len(regressed)} regression(s) beyond tolerance (default {default:.0%})")
    if not shown.empty:
        out = shown.assign(A=shown["A"].map(_fmt), B=shown["B"].map(_fmt),
                           change=shown["change"].map(lambda c: "-" if c is None or pd.isna(c) else f"{c:+.1%}"),
                           tolerance=shown["tolerance"].map(lambda t: "-" if pd.isna(t) else f"{t:.0%}"))
        print(out.to_string(index=False))
    else:
        print("no metric changed beyond its tolerance")
    return 1 if not regressed.empty else 0
