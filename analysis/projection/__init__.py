"""Scaling projection: fit a step-time model per strategy on a sweep's runs, predict 1..1024 nodes.

    python -m analysis.projection --sweep NAME [--logs DIR] [--link 10gbe] [--max-nodes 1024]

One module per job: `points` reduces a sweep's COMPLETED runs (analysis.load: each rank file's
last attempt) to measured points, `model` is the step-time model and its predictions, `fit`
fits it to the points, `sweep` projects a whole sweep (and hands it to analysis.advise),
`output` writes logs/<sweep>/projection.csv and plots/projection.png, `cli` reads the flags.
The model itself: model.py's docstring and docs/projection.md.
"""
