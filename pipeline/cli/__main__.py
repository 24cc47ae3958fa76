"""`python -m pipeline.cli` runs the `vigil` command."""

from pipeline.cli import main

main()
