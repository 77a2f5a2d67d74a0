"""`python tools/detect.py` = `mxprune detect` (mxprune/commands/detect.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.detect import main

if __name__ == '__main__':
    cli.run(main)
