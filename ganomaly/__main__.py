"""`python -m ganomaly ...` (also what `torchrun -m ganomaly` runs)."""

from ganomaly.cli import entry_point

entry_point()
