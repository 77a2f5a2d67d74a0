"""`python tools/benchmark.py` = `mxprune benchmark` (mxprune/commands/benchmark.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.benchmark import main

if __name__ == '__main__':
    cli.run(main)
