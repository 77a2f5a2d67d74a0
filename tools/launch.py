"""`python tools/launch.py` = `mxprune launch` (mxprune/commands/launch.py)."""
import sys

import _path  # noqa: F401  (first: the checkout, when mxprune is not installed)

# the script's names, for `import launch` (tests build plans with it)
from mxprune.commands.launch import LOOPBACK, LaunchError, Node, main, plan, remote_command, supervise  # noqa: F401

if __name__ == '__main__':
    sys.exit(main())
