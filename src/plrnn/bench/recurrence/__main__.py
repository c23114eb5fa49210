"""`python -m plrnn.bench.recurrence`: runs the benchmark (cli.main)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
