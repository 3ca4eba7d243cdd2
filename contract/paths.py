"""Where the repository and its logs are: the one place that finds the root.

Every launch path (simulate, srun, submitit, torchrun, the tests) runs the project's Python
with the repository importable through the `.venv`'s editable install (`make venv`), so no
module builds the root from its own location but this one.
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(ROOT, "logs")  # the default sweeps folder
SWEEP_FILES = os.path.join(ROOT, "sweeps")  # the ready sweep files (sweeps/*.yaml)
