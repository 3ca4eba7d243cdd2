"""`python -m analysis.projection` (`make project`): the command line of analysis/projection/cli.py."""

import sys

from analysis.projection.cli import main

sys.exit(main())
