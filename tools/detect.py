"""`python tools/detect.py` = `mxprune detect` (mxprune/commands/detect.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.detect import check, main, summary  # noqa: F401  (the script's names, for `import detect`)

if __name__ == '__main__':
    cli.run(main)
