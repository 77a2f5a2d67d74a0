"""`python tools/robustness.py` = `mxprune robustness` (mxprune/commands/robustness.py)."""
import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

from mxprune import cli
from mxprune.commands.robustness import load_model, main  # noqa: F401  (the script's names, for `import robustness`)

if __name__ == '__main__':
    cli.run(main)
