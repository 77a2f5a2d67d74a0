"""`python tools/compare.py` = `mxprune compare` (mxprune/commands/compare.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.compare import main

if __name__ == '__main__':
    cli.run(main)
