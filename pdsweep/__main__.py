"""``python -m pdsweep``: the same command as ``pdsweep`` (what a Ray job's entrypoint runs)."""

import sys

from pdsweep.cli import main

sys.exit(main())
