"""`python tools/prune.py` = `mxprune prune` (mxprune/commands/prune.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.prune import main

if __name__ == '__main__':
    cli.run(main)
