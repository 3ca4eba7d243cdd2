"""torchswitch analysis: sweep logs -> pandas DataFrames -> metrics -> plots, CSV/JSON, HTML report, comparisons.

Reads files only (never the trainers' runtime or torch), so it runs anywhere the logs are.

    python -m analysis.cli plots   [--sweep NAME] [--logs DIR]   # summary.csv/json, plots/, report.html
    python -m analysis.cli report  [--sweep NAME] [--logs DIR]   # the same, points at report.html
    python -m analysis.cli compare A B [--tolerances FILE]       # exit 1 when B regressed against A
    python -m analysis.cli tensorboard [--sweep NAME]            # logs/<sweep>/tensorboard/, a run per experiment
"""


class AnalysisError(Exception):
    """Bad input to an analysis command (unknown sweep, unreadable tolerances). One line; callers exit 2."""
