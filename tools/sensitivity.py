"""`python tools/sensitivity.py` = `mxprune sensitivity` (mxprune/commands/sensitivity.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.sensitivity import main

if __name__ == '__main__':
    cli.run(main)
