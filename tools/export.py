"""`python tools/export.py` = `mxprune export` (mxprune/commands/export.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.export import main

if __name__ == '__main__':
    cli.run(main)
