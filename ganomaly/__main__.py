"""`python -m ganomaly ...` (also what `torchrun -m ganomaly` runs)."""

import sys

from ganomaly.cli import main

sys.exit(main())
