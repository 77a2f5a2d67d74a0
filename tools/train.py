"""`python tools/train.py` = `mxprune train` (mxprune/commands/train.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.train import add_run_args, main  # noqa: F401  (the script's names, for `import train`)

if __name__ == '__main__':
    cli.run(main)
